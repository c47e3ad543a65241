"""Released checkpoint formats (the original authors' stage-1 files and SPN4CIR's stage-2
files), one registry (:mod:`~bench.checkpoints.base`), one module per method family;
:func:`import_checkpoint` is the one door in."""

from bench.checkpoints import blip, clip4cir, tgcir  # noqa: F401  (register the formats)
from bench.checkpoints.base import (
    CheckpointFormat,
    CheckpointFormatError,
    ImportedCheckpoint,
    checkpoint_format_names,
    export_checkpoint,
    get_checkpoint_format,
    import_checkpoint,
)

__all__ = [
    "CheckpointFormat",
    "CheckpointFormatError",
    "ImportedCheckpoint",
    "checkpoint_format_names",
    "export_checkpoint",
    "get_checkpoint_format",
    "import_checkpoint",
]
