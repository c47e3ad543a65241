"""Every method's stage 1 beside the synthetic benchmark's single-modality attribute
rankers (:mod:`bench.synthetic.baselines`): does a trained method compose, or could the
reference image or the text alone have found the target as often?

The rankers score the same val queries and gallery under the method's own protocol
(FashionIQ: its categories and ``dataset.protocol``), from the generator's metadata, so
they are upper bounds of what one modality says. Synthetic data only: real data has no
attribute metadata.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.formats import get_format
from bench.report.collect import TrackedPoint
from bench.report.intervals import Intervals, interval_fields, interval_text, point_arm
from bench.report.tables import Table, synthetic_note
from bench.runner.suites import SuiteRun
from bench.stats import PairedComparison, RunQueryValues
from bench.synthetic.baselines import attribute_query_values
from bench.train.data import dataset_root
from methods.registry import display_name

#: The single-modality rankers a method is held against (the oracle is an upper bound).
SINGLE_MODALITY = ("image_only", "text_only")
#: Formats whose synthetic data carries the rankers' metadata in this table's form.
FORMATS = ("fashioniq", "cirr")


def beats_both(margin: float, result: PairedComparison | None) -> str:
    """``yes`` / ``no`` when the margin's interval excludes 0 (or, without an interval, by
    its sign, marked ``no interval``); ``not resolved`` when it contains 0."""
    if result is None:
        return f"{'yes' if margin > 0 else 'no'} (no interval)"
    if not result.excludes_zero:
        return "not resolved"
    return "yes" if margin > 0 else "no"


def baselines_table(run: SuiteRun, points: list[TrackedPoint]) -> list[Table]:
    """Per dataset: each method's stage-1 (composition ``none``) headline metric, the two
    single-modality rankers' on the same queries, the margin over the stronger one with its
    paired-bootstrap interval (the method's runs against the ranker on the same queries,
    :mod:`bench.report.intervals`)."""
    if run.real or "none" not in run.suite.compositions:
        return []
    tables = []
    for dataset in (d for d in run.suite.datasets if d in FORMATS):
        headline = get_format(dataset).headline_metric
        cache: dict[tuple[Any, ...], dict[str, RunQueryValues]] = {}
        intervals = Intervals(headline)
        rows, raw = [], []
        for method in run.methods:
            mine = [
                p
                for p in points
                if p.point.dataset == dataset
                and p.point.method == method
                and p.point.composition == "none"
                and headline in p.metrics
            ]
            if not mine:
                continue
            data = run.spec(mine[0].point).dataset
            key = (data.synthetic_size, data.synthetic_seed, data.categories, data.protocol)
            if key not in cache:
                cache[key] = attribute_query_values(
                    dataset_root(data, progress=False).parent,
                    dataset,
                    data.eval_split,
                    categories=data.categories,
                    protocol=data.protocol,
                )
            rankers = cache[key]
            value = statistics.fmean(p.metrics[headline] for p in mine)
            image, text = (rankers[name].metrics()[headline] for name in SINGLE_MODALITY)
            margin = value - max(image, text)
            stronger = SINGLE_MODALITY[0] if image >= text else SINGLE_MODALITY[1]
            arm = point_arm(run, mine)
            result = intervals.compare(
                arm,
                {seed: rankers[stronger] for seed in arm},
                f"{display_name(method)} vs {stronger}",
            )
            rows.append(
                [
                    display_name(method),
                    f"{value:.2f}",
                    f"{image:.2f}",
                    f"{text:.2f}",
                    interval_text(result, margin),
                    beats_both(margin, result),
                    data.protocol if dataset == "fashioniq" else "official",
                ]
            )
            raw.append(
                {
                    "method": method,
                    f"stage1 {headline}": value,
                    f"image_only {headline}": image,
                    f"text_only {headline}": text,
                    "margin": margin,
                    "stronger": stronger,
                    **interval_fields("margin", result),
                    "beats_both": margin > 0,
                    "seeds": len(mine),
                    "protocol": data.protocol,
                }
            )
        if not rows:
            continue
        tables.append(
            Table(
                f"{run.suite.suite}_{dataset}_baselines",
                f"Stage 1 against the single-modality attribute rankers: {dataset}"
                f"{synthetic_note(run)}",
                [
                    "method",
                    f"stage 1 {headline}",
                    f"image-only {headline}",
                    f"text-only {headline}",
                    "margin over the stronger [95% CI]",
                    "beats both",
                    "protocol",
                ],
                rows,
                raw,
                note=(
                    "val; stage 1 = composition none, mean over seeds. The rankers read the "
                    "generator's attribute metadata (the reference's attributes; the text's "
                    "exact requirements), so each is an upper bound of what one modality "
                    "says; scored on the same queries and gallery under the method's "
                    "protocol. Margin: stage 1 minus the stronger ranker, its interval "
                    "pairing the method's runs with that ranker query by query. " + intervals.note()
                ),
            )
        )
    return tables
