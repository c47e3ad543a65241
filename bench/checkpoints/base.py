"""The registry of released checkpoint formats and the one door in: :func:`import_checkpoint`.

A *format* is the layout one piece of released code writes with ``torch.save``: which
files, which container key holds the state dict, which key names (prefixes, nesting),
which dtypes. Each format is a :class:`CheckpointFormat` registered by name in one module
of this package (one per method family), with

* ``to_method(payloads, method)``: the released files' contents (``torch.load``-ed, in the
  order of :attr:`CheckpointFormat.parts`) -> a state dict in the method's own key names;
* ``from_method(method)`` (where cheap): the inverse, the files the original code would
  have written for the method's weights (used by the round-trip tests and to hand a
  cirbench model back to the original code).

:func:`import_checkpoint` loads the files, maps them and checks the result against the
method's own state dict: every key present, none unexpected, every shape equal, or a
:class:`CheckpointFormatError` that names the format tried, the files and the first
missing / unexpected keys. A file is never partially loaded. Keys a released layout does
not carry by design are listed by the format (:attr:`CheckpointFormat.not_carried`) and get
the value the format documents (e.g. TG-CIR's text heads = copies of the shared heads).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.core.errors import CirbenchError, UnknownNameError
from bench.core.hashing import file_digest
from methods.base import CIRMethod

State = dict[str, torch.Tensor]
#: (payloads, method) -> state dict in the method's key names.
Importer = Callable[[list[Any], CIRMethod], State]
#: method -> one payload per part (what torch.save would write for each file).
Exporter = Callable[[CIRMethod], list[Any]]


class CheckpointFormatError(CirbenchError, ValueError):
    """A checkpoint file does not match the format it was read as."""


@dataclass(frozen=True)
class CheckpointFormat:
    """One released layout (see the module docstring)."""

    name: str
    method: str  #: the registry name of the method it loads into
    stage: str  #: "stage1" (the original authors' release) or "stage2" (SPN's release)
    source: str  #: the code that writes it (repository, file, call)
    parts: tuple[str, ...]  #: the files, in the order given (optional ones in ``optional``)
    to_method: Importer
    from_method: Exporter | None = None
    optional: tuple[str, ...] = ()
    #: method keys (prefixes) the layout does not carry, and what they are set to
    not_carried: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.name} ({self.stage} of {self.method}: {self.source})"


_FORMATS: dict[str, CheckpointFormat] = {}


def register_format(fmt: CheckpointFormat) -> CheckpointFormat:
    if fmt.name in _FORMATS:
        raise ValueError(f"checkpoint format {fmt.name!r} is registered twice")
    _FORMATS[fmt.name] = fmt
    return fmt


def checkpoint_format_names() -> list[str]:
    return sorted(_FORMATS)


def get_checkpoint_format(name: str) -> CheckpointFormat:
    if name not in _FORMATS:
        raise UnknownNameError("checkpoint format", name, list(_FORMATS))
    return _FORMATS[name]


def read_payload(path: Path) -> Any:
    """A released file as ``torch.load`` reads it (tensors only, on the CPU)."""
    if not path.is_file():
        raise CheckpointFormatError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointFormatError(
            f"{path}: cannot read as a state-dict checkpoint ({type(exc).__name__}: {exc}); a "
            "pickled whole model (torch.save(model)) must be re-saved as "
            "{'state_dict': model.state_dict()} by the code that defines it"
        ) from exc


def container(payload: Any, key: str, where: str) -> State:
    """``payload[key]``, which must be a dict of tensors (the released files' nesting)."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get(key), Mapping):
        keys = list(payload)[:6] if isinstance(payload, Mapping) else type(payload).__name__
        raise CheckpointFormatError(f"{where}: expected a dict with key {key!r}, got {keys}")
    state = payload[key]
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointFormatError(f"{where}: {key!r} holds non-tensor entries, e.g. {bad[:3]}")
    return dict(state)


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str, where: str) -> State:
    """Keys below ``prefix`` with it removed; any other key is an error naming it."""
    other = [k for k in state if not k.startswith(prefix)]
    if other:
        raise CheckpointFormatError(
            f"{where}: expected every key under {prefix!r}; {len(other)} are not, e.g. {other[:3]}"
        )
    return {k[len(prefix) :]: v for k, v in state.items()}


def add_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> State:
    return {prefix + k: v for k, v in state.items()}


@dataclass
class ImportedCheckpoint:
    """What :func:`import_checkpoint` loaded: the format, the files and their digests."""

    format: str
    files: list[Path]
    digests: list[str]

    @property
    def digest(self) -> str:
        """One digest of all files (sha256, 16 hex digits each, joined by ``+``)."""
        return "+".join(self.digests)


def _problem_list(keys: Sequence[str], limit: int = 5) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_against(mapped: Mapping[str, torch.Tensor], method: CIRMethod, what: str) -> State:
    """``mapped`` cast to the method's dtypes, after checking that it has exactly the
    method's keys and shapes (an error naming ``what`` and the first offending keys)."""
    expected = method.state_dict()
    missing = [k for k in expected if k not in mapped]
    unexpected = [k for k in mapped if k not in expected]
    wrong = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in mapped.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys ({_problem_list(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys ({_problem_list(unexpected)})")
        if wrong:
            problems.append(f"{len(wrong)} shape mismatches ({_problem_list(wrong, 3)})")
        raise CheckpointFormatError(
            f"{what} does not match the {type(method).__name__} model: " + "; ".join(problems)
        )
    return {k: v.to(expected[k].dtype) for k, v in mapped.items()}


def import_checkpoint(
    method: CIRMethod, files: Sequence[str | Path], format_name: str
) -> ImportedCheckpoint:
    """Load released ``files`` (one per part of format ``format_name``, in its order;
    optional parts may be left out) into ``method``; see the module docstring."""
    fmt = get_checkpoint_format(format_name)
    paths = [Path(f).expanduser() for f in files]
    least = len(fmt.parts) - len(fmt.optional)
    if not least <= len(paths) <= len(fmt.parts):
        raise CheckpointFormatError(
            f"checkpoint format {fmt.name} takes {'/'.join(fmt.parts)} "
            f"({least} to {len(fmt.parts)} files), got {len(paths)}: {[str(p) for p in paths]}"
        )
    payloads = [read_payload(p) for p in paths]
    what = f"checkpoint {', '.join(map(str, paths))} read as format {fmt.describe()}"
    try:
        mapped = fmt.to_method(payloads, method)
    except CheckpointFormatError as exc:
        raise CheckpointFormatError(f"{what}: {exc}") from None
    state = check_against(mapped, method, what)
    method.load_state_dict(state, strict=True)
    return ImportedCheckpoint(fmt.name, paths, [file_digest(p) for p in paths])


def export_checkpoint(method: CIRMethod, format_name: str, out: Sequence[str | Path]) -> None:
    """Write ``method``'s weights as format ``format_name``'s files (one path per part)."""
    fmt = get_checkpoint_format(format_name)
    if fmt.from_method is None:
        raise CheckpointFormatError(f"checkpoint format {fmt.name} has no exporter")
    payloads = fmt.from_method(method)
    if len(out) != len(payloads):
        raise CheckpointFormatError(
            f"checkpoint format {fmt.name} writes {len(payloads)} files ({'/'.join(fmt.parts)})"
        )
    for payload, path in zip(payloads, out, strict=True):
        torch.save(payload, Path(path))
