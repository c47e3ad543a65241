"""A run's per-query values: every group (FashionIQ category) under every scoring protocol
it reports, saved beside its ``metrics.json`` as ``per_query.npz``.

The file reproduces the run's metrics exactly (:meth:`RunQueryValues.metrics`) and lets any
two runs on the same queries be compared query by query (:mod:`bench.stats.bootstrap`,
``cirbench compare``). Layout of the ``.npz`` (plain arrays, no pickles): ``meta`` (a JSON
string: format, primary protocol, protocols, groups, metric names), ``ids/<protocol>/<group>``
(query ids, query order) and ``values/<protocol>/<group>/<metric>`` (bool hits or float
scores in [0, 1]); a format without groups has the one group ``all``.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.atomic import write_bytes_atomic
from bench.core.errors import CirbenchError
from bench.core.hashing import digest
from bench.formats import get_format
from bench.formats.records import Query
from bench.metrics import QueryValues

#: File name of a run's per-query values, in its run folder and as its MLflow artifact.
PER_QUERY_FILE = "per_query.npz"
_SCHEMA = 1
_NO_GROUP = "all"


class PerQueryError(CirbenchError):
    """A per-query file that cannot be read, or two runs that cannot be paired."""


@dataclass(frozen=True)
class RunQueryValues:
    """Per-query values of one run: ``protocols[protocol][group]`` (group ``None``: the
    format has no groups). ``primary`` is the protocol of the run's unprefixed metrics;
    the others' metrics carry their protocol's name as prefix (``full_gallery.Rmean``)."""

    format: str
    primary: str
    protocols: Mapping[str, Mapping[str | None, QueryValues]]
    #: group -> :func:`queries_digest` of its queries (what the ids stand for: two runs
    #: whose ids agree but whose queries differ, e.g. another synthetic seed, never pair)
    digests: Mapping[str | None, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.primary not in self.protocols:
            raise PerQueryError(
                f"primary protocol {self.primary!r} not among {sorted(self.protocols)}"
            )

    def groups(self, protocol: str | None = None) -> Mapping[str | None, QueryValues]:
        """The groups' values under ``protocol`` (default: the primary one)."""
        name = protocol or self.primary
        if name not in self.protocols:
            raise PerQueryError(
                f"no per-query values under protocol {name!r}; have {sorted(self.protocols)}"
            )
        return self.protocols[name]

    def metrics(self) -> dict[str, float]:
        """The run's metrics, as evaluation reports them (same keys, same numbers)."""
        fmt = get_format(self.format)
        out = fmt.run_metrics(self.protocols[self.primary])
        for name, groups in self.protocols.items():
            if name != self.primary:
                out.update({f"{name}.{k}": v for k, v in fmt.run_metrics(groups).items()})
        return out

    def split_metric(self, metric: str) -> tuple[str, str]:
        """(protocol, metric name within it) of a metric key (``full_gallery.Rmean``)."""
        head, _, rest = metric.partition(".")
        if rest and head in self.protocols:
            return head, rest
        return self.primary, metric

    def sizes(self, protocol: str | None = None) -> dict[str | None, int]:
        """Queries per group."""
        return {g: len(v) for g, v in self.groups(protocol).items()}

    # ------------------------------------------------------------------ files
    def to_bytes(self) -> bytes:
        meta: dict[str, Any] = {
            "schema": _SCHEMA,
            "format": self.format,
            "primary": self.primary,
            "digests": {_group_key(g): d for g, d in self.digests.items()},
            "protocols": {
                name: {_group_key(g): list(v.values) for g, v in groups.items()}
                for name, groups in self.protocols.items()
            },
        }
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
        for name, groups in self.protocols.items():
            for group, values in groups.items():
                key = f"{name}/{_group_key(group)}"
                arrays[f"ids/{key}"] = np.array(values.query_ids, dtype=str)
                for metric, v in values.values.items():
                    arrays[f"values/{key}/{metric}"] = v
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write the ``.npz`` atomically; returns the path."""
        write_bytes_atomic(path, self.to_bytes())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> RunQueryValues:
        """Read a ``per_query.npz`` (errors name the file and what is wrong)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("schema") != _SCHEMA:
                    raise PerQueryError(
                        f"{path}: per-query schema {meta.get('schema')!r}, expected {_SCHEMA}"
                    )
                protocols: dict[str, dict[str | None, QueryValues]] = {}
                for name, groups in meta["protocols"].items():
                    protocols[name] = {}
                    for group, metrics in groups.items():
                        key = f"{name}/{group}"
                        values = {m: data[f"values/{key}/{m}"] for m in metrics}
                        ids = tuple(str(q) for q in data[f"ids/{key}"])
                        protocols[name][None if group == _NO_GROUP else group] = QueryValues(
                            ids, values
                        )
                digests = {
                    None if g == _NO_GROUP else g: d for g, d in meta.get("digests", {}).items()
                }
                return cls(meta["format"], meta["primary"], protocols, digests)
        except PerQueryError:
            raise
        except FileNotFoundError:
            raise PerQueryError(f"{path}: no per-query values (file not found)") from None
        except (KeyError, ValueError, OSError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise PerQueryError(f"{path}: not a readable per-query file ({exc})") from None


def queries_digest(queries: Sequence[Query]) -> str:
    """A digest of a split's queries (id, reference, target(s), captions), in query order."""
    return digest(
        [(q.query_id, q.reference, q.target, list(q.targets), list(q.captions)) for q in queries]
    )


def _group_key(group: str | None) -> str:
    return _NO_GROUP if group is None else group
