"""``python -m bench.cli`` (what ``torchrun -m bench.cli train SPEC`` runs)."""

import sys

from bench.cli import main

sys.exit(main())
