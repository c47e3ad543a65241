"""``cirbench reproduce``: the paper's Tables 2 and 3 from the released checkpoints.

For every method and dataset of the ``reproduce`` suite (``experiments/suites/reproduce.yaml``)
three measurements, each one run of the engine (resumable, tracked in MLflow):

* **released stage 1**: the original authors' stage-1 file imported as the stage-1 run
  (``stage1: {checkpoint, format}``) and evaluated; compared with the published baseline;
* **SPN's released stage 2**: SPN4CIR's stage-2 file imported the same way and evaluated;
  compared with the published +SPN row;
* **stage 2 trained here**: P+N trained from the released stage 1 on SPN's released
  generated triplets (``spn.positives.source: released``); compared with the published
  +SPN row: does SPN's stage 2, run here, give its published gain?

The files are expected under ``--checkpoints`` as :mod:`bench.checkpoints.releases` names
them; a missing one is a row naming the file it expected. A file that does not match its
format is a row with the error (and a non-zero exit of the CLI), never a partial load.
Each table row is one (method, measurement, metric): published value, measured value,
difference, split and protocol. CIRR is published on test1, which only the CIRR server
scores: a CIRR row writes its test1 submission files (their paths in the row) and shows
the val number beside them. The tables go to ``<out>/reproduce/`` (Markdown and CSV).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.checkpoints.releases import RELEASES, Release
from bench.config import SpecError
from bench.core.atomic import write_text_atomic
from bench.core.errors import CirbenchError
from bench.formats import get_format
from bench.report.paper import Published, load_published, measured_setting, paper_names
from bench.report.tables import Table
from bench.runner.grid import point_submissions
from bench.runner.profiles import get_profile
from bench.runner.suites import DataRoots, Point, SuiteRun, load_suite, resolve_data_roots
from bench.train.engine import train

SUITE = "reproduce"
#: The suites whose paper-table numbers name the reproduced tables.
PAPER_SUITES = ("table2_fashioniq", "table3_cirr")
HEADER = [
    "method",
    "SPN",
    "weights",
    "metric",
    "split",
    "protocol",
    "published",
    "measured",
    "difference",
    "measured on val",
    "files",
]


@dataclass
class Measurement:
    """One row group: what was run (or why not) and what it gave."""

    method: str
    dataset: str
    weights: str  #: "released stage 1", "SPN's released stage 2", "stage 2 trained here"
    composition: str  #: the published row it compares with ("none" or "P+N")
    missing: list[Path] = field(default_factory=list)
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    submissions: list[Path] = field(default_factory=list)
    run_dir: Path | None = None


@dataclass
class ReproduceResult:
    tables: list[Table]
    measurements: list[Measurement]
    folder: Path

    @property
    def errors(self) -> list[Measurement]:
        return [m for m in self.measurements if m.error]


def _json(value: Any) -> str:
    return json.dumps(value)


def _stage1_override(files: list[Path], fmt: str) -> str:
    return "stage1=" + _json({"checkpoint": [str(f) for f in files], "format": fmt})


def _point(run: SuiteRun, method: str, dataset: str, composition: str) -> Point:
    return next(
        p
        for p in run.points()
        if (p.method, p.dataset, p.composition) == (method, dataset, composition)
    )


def _stage1_plan(release: Release, checkpoints: Path, dataset: str) -> tuple[list[Path], list[str]]:
    """The released stage-1 files to pass and the overrides they need (CLIP4Cir without its
    Combiner file: a method without a Combiner)."""
    main = release.paths(checkpoints, (release.stage1,), dataset)
    extra = release.paths(checkpoints, release.extra, dataset)
    if extra and all(p.is_file() for p in extra):
        return main + extra, []
    return main, list(release.without_extra)


def _run(run: SuiteRun, m: Measurement, point: Point, overrides: list[str], progress: bool) -> None:
    """Train / import the point with ``overrides``; its metrics and CIRR test1 files."""
    if m.missing:
        return
    try:
        spec = run.spec(point, tuple(overrides))
        result = train(
            spec,
            resume=True,
            progress=progress,
            tags={"cirbench.suite": SUITE, "cirbench.reproduce.weights": m.weights},
        )
        m.metrics, m.run_dir = dict(result.metrics), result.run_dir
        if get_format(m.dataset).has_submission:
            files = point_submissions(_with_submissions(run), spec, result, progress)
            m.submissions = [f for split in files.values() for f in split]
    except CirbenchError as exc:
        m.error = str(exc).splitlines()[0]


def _with_submissions(run: SuiteRun) -> SuiteRun:
    suite = run.suite.model_copy(update={"submissions": ("test1",)})
    return dataclasses.replace(run, suite=suite)


def measure(
    run: SuiteRun, checkpoints: Path, method: str, dataset: str, progress: bool
) -> list[Measurement]:
    """The three measurements of one method on one dataset (see the module docstring)."""
    release = RELEASES.get(method)
    if release is None:
        return [Measurement(method, dataset, "no released files known", "none")]
    baseline = Measurement(method, dataset, "released stage 1", "none")
    files, extra = _stage1_plan(release, checkpoints, dataset)
    baseline.missing = [p for p in files if not p.is_file()]
    if extra and not baseline.missing:  # the published baseline needs the Combiner
        baseline.missing = [p for p in release.paths(checkpoints, release.extra, dataset)]
    _run(
        run,
        baseline,
        _point(run, method, dataset, "none"),
        [_stage1_override(files, release.stage1_format)],
        progress,
    )

    released = Measurement(method, dataset, "SPN's released stage 2", "P+N")
    candidates = release.paths(checkpoints, release.stage2, dataset)
    found = [p for p in candidates if p.is_file()]
    released.missing = [] if found else candidates[:1]
    _run(
        run,
        released,
        _point(run, method, dataset, "none"),
        [_stage1_override(found[:1], release.stage2_format), *release.stage2_overrides],
        progress,
    )

    here = Measurement(method, dataset, "stage 2 trained here", "P+N")
    fmt = get_format(dataset)
    root = run.data_roots[dataset] if run.data_roots else Path()
    triplets = fmt.generated_captions_dir(root) / fmt.generated_caption_name(release.triplets)
    here.missing = [p for p in files if not p.is_file()] + (
        [] if triplets.is_file() else [triplets]
    )
    _run(
        run,
        here,
        _point(run, method, dataset, "P+N"),
        [
            _stage1_override(files, release.stage1_format),
            *extra,
            "spn.positives.source=released",
            f"spn.positives.name={release.triplets}",
        ],
        progress,
    )
    return [baseline, released, here]


def _where(path: Path, roots: list[Path]) -> str:
    for root in roots:
        if path.is_relative_to(root):
            return str(path.relative_to(root))
    return str(path)


def table_rows(
    run: SuiteRun,
    measurements: list[Measurement],
    dataset: str,
    published: dict[tuple[str, str, str, str], Published],
    checkpoints: Path,
) -> tuple[list[list[str]], list[dict[str, Any]], list[str]]:
    """The rows of one dataset's table (see the module docstring), their raw records and
    the notes on what is not the same measurement."""
    names = paper_names()
    fmt = get_format(dataset)
    rows: list[list[str]] = []
    raw: list[dict[str, Any]] = []
    notes: list[str] = []
    roots = [checkpoints, *(run.data_roots or {}).values()]
    for m in (x for x in measurements if x.dataset == dataset):
        name = names.get(m.method, m.method)
        label = "–" if m.composition == "none" else f"+{m.composition}"
        setting = measured_setting(
            run, m.method, dataset, "none" if m.composition == "none" else "P+N"
        )
        files = ", ".join(_where(f, roots) for f in m.submissions)
        for metric in fmt.report_columns:
            pub = published.get((dataset, name, m.composition, metric))
            split = pub.split if pub else setting.split
            protocol = pub.protocol if pub else setting.protocol
            key = metric
            if pub and pub.protocol != setting.protocol and pub.protocol in setting.also:
                key = f"{pub.protocol}.{metric}"  # the measured twin under the same protocol
            elif pub and pub.protocol != setting.protocol:
                protocol = f"{pub.protocol} ≠ {setting.protocol}"
                notes.append(f"{name} {m.weights}: published under {pub.protocol}")
            value = m.metrics.get(key)
            same = pub is not None and split == setting.split and "≠" not in protocol
            if m.missing:
                measured = "missing " + ", ".join(_where(p, roots) for p in m.missing)
            elif m.error:
                measured = f"error: {m.error}"
            elif value is None:
                measured = "–"
            elif split != setting.split:
                measured = f"{split} on the server"
            else:
                measured = f"{value:.2f}"
            diff = (
                f"{value - pub.value:+.2f}"
                if same and value is not None and not m.missing and not m.error
                else "–"
            )
            on_val = f"{value:.2f}" if value is not None and split != setting.split else "–"
            rows.append(
                [
                    name,
                    label,
                    m.weights,
                    metric,
                    split,
                    protocol,
                    "–" if pub is None else f"{pub.value:.2f}",
                    measured,
                    diff,
                    on_val,
                    files if split != setting.split else "",
                ]
            )
            raw.append(
                {
                    "method": m.method,
                    "spn": m.composition,
                    "weights": m.weights,
                    "metric": metric,
                    "split": split,
                    "protocol": protocol,
                    "published": None if pub is None else pub.value,
                    "measured": value if same or split == setting.split else None,
                    "difference": (value - pub.value) if same and value is not None else None,
                    "measured_split": setting.split,
                    "measured_on_val": value,
                    "missing": ";".join(str(p) for p in m.missing),
                    "error": m.error or "",
                    "files": ";".join(str(f) for f in m.submissions),
                }
            )
    return rows, raw, list(dict.fromkeys(notes))


def reproduce(
    data_root: DataRoots,
    checkpoints: str | Path,
    *,
    methods: tuple[str, ...] | None = None,
    datasets: tuple[str, ...] | None = None,
    seeds: tuple[int, ...] | None = None,
    overrides: tuple[str, ...] = (),
    out: str | Path = "reports",
    progress: bool = True,
) -> ReproduceResult:
    """Every released checkpoint found evaluated, SPN's stage 2 run from every released
    stage 1, one table per paper table (see the module docstring)."""
    if data_root is None:
        raise SpecError("reproduce needs the real datasets: --data-root DIR")
    checkpoints = Path(checkpoints).expanduser().resolve()
    if not checkpoints.is_dir():
        raise SpecError(f"--checkpoints {checkpoints}: not a folder")
    suite = load_suite(SUITE)
    if datasets:
        unknown = sorted(set(datasets) - set(suite.datasets))
        if unknown:
            raise SpecError(f"--datasets {unknown}: the paper tables are {list(suite.datasets)}")
        suite = suite.model_copy(update={"datasets": tuple(datasets)})
    run = SuiteRun(
        suite,
        get_profile("default"),
        resolve_data_roots(data_root, suite.datasets),
        seeds_override=seeds,
        extra_overrides=overrides,
        methods_override=methods,
    )
    measurements = [
        m
        for dataset in run.suite.datasets
        for method in run.methods
        for m in measure(run, checkpoints, method, dataset, progress)
    ]
    numbers = {load_suite(s).datasets[0]: load_suite(s).report.paper_table for s in PAPER_SUITES}
    published = load_published()
    folder = Path(out) / SUITE
    folder.mkdir(parents=True, exist_ok=True)
    tables = []
    for dataset in run.suite.datasets:
        rows, raw, notes = table_rows(run, measurements, dataset, published, checkpoints)
        note = (
            "published: the SPN paper (experiments/published/spn_tables.csv); measured: this "
            "run; difference = measured - published, where both are on the same split and "
            "protocol."
        )
        if get_format(dataset).has_submission:
            note += (
                " test1 is scored by the CIRR server only: upload the files listed per row "
                "(https://cirr.cecs.anu.edu.au/test_process); the val numbers stand beside."
            )
        if notes:
            note += " Not the same measurement (≠): " + "; ".join(notes) + "."
        number = numbers.get(dataset)
        table = Table(
            f"table{number or ''}_{dataset}",
            f"Table {number or '?'}: {get_format(dataset).title} from the released checkpoints",
            HEADER,
            rows,
            raw,
            note=note,
        )
        write_text_atomic(folder / f"{table.name}.md", table.markdown())
        write_text_atomic(folder / f"{table.name}.csv", table.csv())
        tables.append(table)
    index = ["# Reproducing the paper from the released checkpoints", ""]
    index += [t.markdown() for t in tables]
    write_text_atomic(folder / "index.md", "\n".join(index))
    return ReproduceResult(tables, measurements, folder)
