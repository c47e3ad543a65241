"""The report's plots, as PNG and SVG: figure helpers and the plots themselves (grouped
bars of the compositions, the headline metric against an extra axis, recall against bank
size, the Optuna optimisation history)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.formats import get_format
from bench.report.collect import TrackedPoint
from bench.report.tables import Cell, aggregate
from bench.runner.suites import SuiteRun
from methods.registry import display_name


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, folder: Path, name: str) -> list[str]:
    files = []
    for ext in ("png", "svg"):
        path = folder / f"{name}.{ext}"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        files.append(path.name)
    _figure().close(fig)
    return files


def bars_plot(run: SuiteRun, points: list[TrackedPoint], folder: Path) -> list[str]:
    """Grouped bars: the compositions per method, one panel per dataset (headline metric)."""
    plt = _figure()
    datasets = run.suite.datasets
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
    methods = run.methods
    comps = run.suite.compositions
    width = 0.8 / len(comps)
    # error bars only with a spread over seeds (one seed: no zero-height caps)
    spread = len({p.point.seed for p in points}) > 1
    for ax, dataset in zip(axes[0], datasets, strict=True):
        headline = get_format(dataset).headline_metric
        groups = aggregate(
            [p for p in points if p.point.dataset == dataset], ("method", "composition"), [headline]
        )
        for j, comp in enumerate(comps):
            cells = [groups.get((m, comp), {headline: Cell([])})[headline] for m in methods]
            xs = [i + (j - (len(comps) - 1) / 2) * width for i in range(len(methods))]
            ax.bar(
                xs,
                [c.mean for c in cells],
                width,
                yerr=[c.std for c in cells] if spread else None,
                label=comp,
                capsize=3 if spread else 0,
            )
        ax.set_xticks(range(len(methods)), [display_name(m) for m in methods], rotation=15)
        ax.set_ylabel(f"val {headline}")
        ax.set_title(dataset)
    # the legend beside the panels, never over a bar
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="SPN")
    fig.suptitle(run.suite.title + ("" if run.real else " (synthetic)"), fontsize=10)
    return save_figure(fig, folder, f"{run.suite.suite}_bars")


def axis_plot(run: SuiteRun, points: list[TrackedPoint], folder: Path) -> list[str]:
    """The headline metric against the suite's extra axis, mean ± std over seeds."""
    plt = _figure()
    [axis] = list(run.suite.axes)
    short = axis.rsplit(".", 1)[-1]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for dataset in run.suite.datasets:
        headline = get_format(dataset).headline_metric
        groups = aggregate(
            [p for p in points if p.point.dataset == dataset], ("method", axis), [headline]
        )
        for method in run.methods:
            items = sorted(
                (v, c[headline])
                for (m, v), c in groups.items()
                if m == method and c[headline].values
            )
            if not items:
                continue
            xs = [v for v, _ in items]
            means = [c.mean for _, c in items]
            stds = [c.std for _, c in items]
            ax.errorbar(
                xs,
                means,
                yerr=stds if any(stds) else None,
                marker="o",
                capsize=3,
                label=f"{display_name(method)} {dataset}",
            )
    ax.set_xscale("log")
    ax.set_xlabel(short)
    ax.set_ylabel("val Rmean")
    ax.legend(fontsize=8)
    ax.set_title(run.suite.title + ("" if run.real else " (synthetic)"), fontsize=9)
    return save_figure(fig, folder, f"{run.suite.suite}_{short}")


def bank_size_plot(
    run: SuiteRun, records: list[dict[str, Any]], study: Any, folder: Path
) -> list[str]:
    """Recall against bank size (negatives per query), spread over seeds; the Optuna
    optimisation history beside it."""
    files = recall_vs_bank_plot(run, records, study, folder)
    if study is not None and any(t.state.name == "COMPLETE" for t in study.trials):
        files += optuna_history_plot(study, folder, f"{run.suite.suite}_optuna_history")
    return files


def recall_vs_bank_plot(
    run: SuiteRun, records: list[dict[str, Any]], study: Any, folder: Path
) -> list[str]:
    """The study's objective against the negatives per query, mean ± std and each seed."""
    plt = _figure()
    spec = run.suite.study
    assert spec is not None
    dataset = run.suite.datasets[0]
    by_value: dict[int, list[float]] = defaultdict(list)
    for r in records:
        if r["status"] == "FINISHED" and r["value"] is not None and spec.objective in r["metrics"]:
            by_value[r["value"]].append(r["metrics"][spec.objective])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if by_value:
        xs = sorted(by_value)
        cells = [Cell(by_value[x]) for x in xs]
        ax.errorbar(xs, [c.mean for c in cells], yerr=[c.std for c in cells], marker="o", capsize=3)
        for x in xs:
            ax.scatter([x] * len(by_value[x]), by_value[x], s=8, color="grey", alpha=0.6)
    bank = study.user_attrs.get("bank_size") if study is not None else None
    if bank:
        ax.axvline(bank - 1, color="black", linestyle=":", label=f"whole bank ({bank - 1})")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("negatives per query (neg_num)")
    ax.set_ylabel(f"val {spec.objective} ({dataset})")
    ax.set_title(run.suite.title + ("" if run.real else " (synthetic)"), fontsize=9)
    return save_figure(fig, folder, f"{run.suite.suite}_recall_vs_bank")


def optuna_history_plot(study: Any, folder: Path, name: str) -> list[str]:
    """Optuna's optimisation history of ``study`` (needs at least one complete trial)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_optimization_history(study)
    from matplotlib.ticker import MaxNLocator

    objective = (study.metric_names or ["objective"])[0]
    ax.set_title(f"Optuna optimisation history: {study.study_name}")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"val {objective} (mean over seeds)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(ax.figure, folder, name)
