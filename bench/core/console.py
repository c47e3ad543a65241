"""What cirbench writes to the terminal besides progress bars: :func:`announce`, the one
home of the line that says a one-off step is starting (torch-free, so any layer may use it)."""

from __future__ import annotations

import sys


def announce(what: str, why: str = "") -> None:
    """One line on stderr for a one-off step: what it does and why (e.g. a pre-training
    that the first run of a profile needs, cached afterwards). Written above any live
    progress bar (``tqdm.write``), so bars are not torn."""
    from tqdm import tqdm

    tqdm.write(f"cirbench: {what}" + (f" ({why})" if why else ""), file=sys.stderr)
