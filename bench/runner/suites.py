"""Experiment suites: one YAML file per paper table or study in ``experiments/suites/``.

A suite is a grid (methods x compositions x seeds x optional extra axes) or an Optuna
study over one spec key, on one or more datasets. Each grid point (and each study trial
and seed) resolves to a full :class:`~bench.config.ExperimentSpec` built from

1. the method's base settings (``experiments/methods/<name>.yaml``, profile ``synthetic``
   on the embedded benchmark, ``real`` with ``--data-root``),
2. the run profile (``experiments/profiles.yaml``: ``quick`` for CI, ``default``,
   ``full``): data size, seeds, epoch caps,
3. the SPN composition (:data:`COMPOSITIONS`) with the released recipe per dataset,
4. the suite's own overrides (``overrides``, then ``dataset_overrides``),
5. the point's extra axis values (dotted spec keys).

Point names do not depend on the composition, so every composition of one (method,
dataset, seed) shares the stage-1 run (the engine trains it once), and a point that two
suites share (Table 2's "none" and the ablation's "none") is one run.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from bench.config import (
    ExperimentSpec,
    SpecError,
    Strict,
    apply_overrides,
    parse_spec,
    read_yaml,
    validation_problems,
)
from bench.config.base import validate_strict
from bench.config.bases import method_base, methods_with_bases
from bench.config.paths import SUITES_DIR
from bench.core.errors import UnknownNameError
from bench.formats import format_names, get_format
from bench.runner.profiles import Profile, get_profile
from bench.runner.recipes import composition_spn
from bench.spn.compositions import COMPOSITIONS

# ----------------------------------------------------------------------------- suites


class StudySpec(Strict):
    """An Optuna study over one integer spec key (the negative-bank size by default)."""

    parameter: str = "spn.negatives.neg_num"
    low: int = Field(default=4, ge=1)
    #: "bank": up to the whole bank (every training image but the positive)
    high: int | Literal["bank"] = "bank"
    log: bool = True
    objective: str = "Rmean"
    direction: Literal["maximize", "minimize"] = "maximize"
    composition: str = "N"
    pruner: Literal["median", "none"] = "median"
    #: TPE (random for its first 10 trials) or random search; each trial's sampler is
    #: seeded from ``sampler_seed`` and the trial's slot (:func:`bench.runner.study.sampler_for`)
    sampler: Literal["tpe", "random"] = "tpe"
    sampler_seed: int = 0
    #: anchor values always measured (``bank``: the whole bank, also implied by
    #: ``high: bank``); a study that ends without one of them is an error
    enqueue: tuple[int | Literal["bank"], ...] = ()


class SearchRange(Strict):
    """The range one calibrated spec key is searched over (``integer``: an integer key)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if not self.low < self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


class CalibrationStage(Strict):
    """One study of a calibration: the composition whose val metric it maximises and the
    dotted spec keys it searches."""

    composition: str
    parameters: dict[str, SearchRange]

    @field_validator("composition")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in COMPOSITIONS:
            raise ValueError(f"unknown composition {value!r}; known: {list(COMPOSITIONS)}")
        return value


class CalibrationSpec(Strict):
    """Optuna studies that find a method's scale-dependent numbers per dataset: first
    ``stage1`` (its keys searched on the stage-1 run), then ``stage2`` starting from the
    best stage 1. They run in the synthetic world of ``synthetic_seed`` (its own images,
    splits and pre-trained backbones), never the world the tables report (seed 0), so no
    table is tuned on what it reports."""

    synthetic_seed: int = Field(default=1, ge=1, description="not 0: the tables' world")
    #: trials per study (per method, dataset and stage); a profile's n_trials caps it
    n_trials: int = Field(default=12, ge=1)
    objective: str = "Rmean"
    #: each trial's TPE sampler is seeded from this, the study's name and the trial's slot
    #: (:func:`bench.runner.calibration.calibration_sampler`)
    sampler_seed: int = 0
    stage1: CalibrationStage
    stage2: CalibrationStage

    def trials(self, profile: Profile, given: int | None = None) -> int:
        """Trials per study: ``given`` (``--trials``), else the budget capped by the
        profile's ``n_trials``."""
        return given or min(self.n_trials, profile.n_trials)


class ReportSpec(Strict):
    """What ``cirbench report`` draws from a suite."""

    table: Literal["paper", "compositions", "axis", "study", "calibration"] = "compositions"
    paper_table: int | None = None
    plot: Literal["bars", "axis", "bank_size", "none"] = "bars"


class SuiteSpec(Strict):
    suite: str
    title: str
    kind: Literal["grid", "study", "calibration"] = "grid"
    datasets: tuple[str, ...]
    methods: tuple[str, ...] | Literal["all"] = "all"
    compositions: tuple[str, ...] = ("none",)
    seeds: tuple[int, ...] | None = None
    #: extra grid axes: dotted spec key -> values (e.g. spn.positives.K: [100, 200])
    axes: dict[str, tuple[Any, ...]] = Field(default_factory=dict)
    #: dotted KEY=VALUE overrides for every spec of the suite (e.g. a tuned stage-2 lr)
    overrides: tuple[str, ...] = ()
    #: "synthetic" / "real" -> dotted overrides for that profile's specs (a recipe of the
    #: suite's own, e.g. the zero-shot CLIP of the reference on real data)
    profile_overrides: dict[Literal["synthetic", "real"], tuple[str, ...]] = Field(
        default_factory=dict
    )
    #: dataset format -> dotted overrides for that dataset's specs
    dataset_overrides: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    study: StudySpec | None = None
    calibration: CalibrationSpec | None = None
    #: splits whose test-server files every finished point writes (CIRR: [test1])
    submissions: tuple[str, ...] = ()
    #: the points start from released checkpoints: run by ``cirbench reproduce`` (or
    #: ``cirbench ablate --checkpoints DIR``), not by a plain sweep
    released: bool = False
    report: ReportSpec = Field(default_factory=ReportSpec)

    @field_validator("compositions")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in value if c not in COMPOSITIONS]
        if unknown:
            raise ValueError(f"unknown compositions {unknown}; known: {list(COMPOSITIONS)}")
        return value

    @field_validator("datasets")
    @classmethod
    def _known_formats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            get_format(name)
        return value

    @model_validator(mode="after")
    def _submissions_exist(self) -> SuiteSpec:
        for name in self.datasets if self.submissions else ():
            if not get_format(name).has_submission:
                raise ValueError(f"submissions: {name} has no test-server submission format")
        return self

    def method_names(self) -> list[str]:
        return methods_with_bases() if self.methods == "all" else list(self.methods)


def suite_file(name: str) -> Path:
    """A suite's file: a path to a YAML file, or a name in ``experiments/suites/``."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    return SUITES_DIR / f"{name}.yaml"


def list_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name: str) -> SuiteSpec:
    """A suite file by name (``experiments/suites/<name>.yaml``) or path; an unknown name
    raises :class:`UnknownNameError` ("did you mean")."""
    path = suite_file(name)
    if not path.is_file():
        if Path(name).suffix in (".yaml", ".yml"):
            raise SpecError(f"{path}: suite file not found")
        raise UnknownNameError("suite", name, list_suites())
    data = read_yaml(path)
    try:
        suite = validate_strict(SuiteSpec, data)
    except ValidationError as exc:
        raise SpecError(f"{path}: {'; '.join(validation_problems(exc))}") from None
    if suite.kind == "study" and suite.study is None:
        raise SpecError(f"{path}: field 'study': a study suite needs a study block")
    if suite.kind == "calibration" and suite.calibration is None:
        raise SpecError(f"{path}: field 'calibration': a calibration suite needs its block")
    return suite


# ----------------------------------------------------------------------------- points


@dataclass(frozen=True)
class Point:
    """One grid point: everything that identifies a run of a suite."""

    method: str
    dataset: str
    composition: str
    seed: int
    extra: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        """Run name; independent of the composition so compositions share stage 1."""
        return f"{self.method}-{self.dataset}-s{self.seed}"

    def label(self) -> str:
        extra = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in self.extra)
        return f"{self.method} {self.dataset} {self.composition} seed {self.seed} {extra}".strip()


DataRoots = str | Path | Sequence[str | Path] | None


def resolve_data_roots(given: DataRoots, datasets: Iterable[str]) -> dict[str, Path] | None:
    """The folder of each dataset format of a suite on real data (``None``: synthetic).

    ``given`` holds ``FORMAT=DIR`` entries (that format's folder) and plain folders: a
    parent in the reference layout (``fashionIQ_dataset/``, ``cirr_dataset/`` with its
    ``cirr/`` annotations, ``CIRCO/``; the names each format lists in
    ``reference_folders``) or a format's own folder. A format that no entry provides is an
    error naming the folders looked for, before any work.
    """
    if given is None or (not isinstance(given, str | Path) and not given):
        return None
    items = [given] if isinstance(given, str | Path) else list(given)
    explicit: dict[str, Path] = {}
    parents: list[Path] = []
    for item in map(str, items):
        name, sep, folder = item.partition("=")
        if sep and name in format_names():
            explicit[name] = Path(folder).expanduser().resolve()
        elif sep and name.isidentifier() and not Path(item).exists():
            raise UnknownNameError("format", name, format_names())
        else:
            parents.append(Path(item).expanduser().resolve())
    return {name: _data_root(name, explicit, parents) for name in dict.fromkeys(datasets)}


def _data_root(name: str, explicit: dict[str, Path], parents: list[Path]) -> Path:
    fmt = get_format(name)
    if name in explicit:
        candidates = [explicit[name]]
    else:
        candidates = [p / f for p in parents for f in fmt.reference_folders] + parents
    for folder in candidates:
        if folder.is_dir() and fmt.looks_like(folder):
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise SpecError(
        f"--data-root: no {fmt.title} folder with its annotation files found (looked at "
        f"{looked}); pass the parent of {fmt.reference_folders[0]}/ or {name}=DIR"
    )


@dataclass
class SuiteRun:
    """A suite resolved against a profile (and real data, when given: ``data_roots`` maps
    each format of the suite to its folder, see :func:`resolve_data_roots`)."""

    suite: SuiteSpec
    profile: Profile
    data_roots: dict[str, Path] | None = None
    seeds_override: tuple[int, ...] | None = None
    extra_overrides: tuple[str, ...] = field(default_factory=tuple)
    #: Optuna storage URL of a study suite (None: the default journal file)
    storage: str | None = None
    methods_override: tuple[str, ...] | None = None

    @classmethod
    def open(
        cls,
        suite_name: str,
        profile: str = "default",
        data_root: DataRoots = None,
        *,
        seeds: tuple[int, ...] | None = None,
        methods: tuple[str, ...] | None = None,
        overrides: tuple[str, ...] = (),
        storage: str | None = None,
    ) -> SuiteRun:
        """The suite file ``suite_name`` under profile ``profile`` on the given data."""
        suite = load_suite(suite_name)
        profile_ = get_profile(profile)
        known = methods_with_bases()
        for method in methods or ():
            if method not in known:
                raise UnknownNameError("method", method, known)
        return cls(
            suite,
            profile_,
            resolve_data_roots(data_root, suite.datasets),
            seeds_override=seeds,
            extra_overrides=overrides,
            storage=storage,
            methods_override=methods,
        )

    def command(self, verb: str = "sweep") -> str:
        """The ``cirbench`` command line that runs this suite as it was opened (the
        user's profile, methods, seeds, data roots and storage kept), for hints."""
        parts = ["cirbench", verb, self.suite.suite, "--profile", self.profile.name]
        if self.methods_override:
            parts += ["--methods", *self.methods_override]
        if self.seeds_override:
            parts += ["--seeds", *map(str, self.seeds_override)]
        for name, folder in (self.data_roots or {}).items():
            parts += ["--data-root", f"{name}={folder}"]
        if self.storage:
            parts += ["--storage", self.storage]
        return " ".join(parts)

    def check(self) -> None:
        """Resolve every point's spec and check the names in it that only a later stage
        would look up (the method class, the backbone), so a mistyped name fails before any work and
        before an MLflow run exists."""
        from methods import list_methods

        specs = [self.spec(point) for point in self.points()]
        registered = list_methods()
        for name in sorted({spec.method.name for spec in specs}):
            if name not in registered:
                raise UnknownNameError("method", name, registered)
        for arch in sorted({spec.backbone.arch for spec in specs}):
            check_backbone(arch)

    @property
    def methods(self) -> list[str]:
        return list(self.methods_override or self.suite.method_names())

    @property
    def real(self) -> bool:
        return self.data_roots is not None

    @property
    def experiment(self) -> str:
        """One MLflow experiment per profile (all suites' runs side by side)."""
        return f"cirbench-ablate-{'real' if self.real else self.profile.name}"

    @property
    def seeds(self) -> tuple[int, ...]:
        return (
            self.seeds_override
            or self.profile.suite_seeds.get(self.suite.suite)
            or self.suite.seeds
            or self.profile.seeds
        )

    def points(self) -> list[Point]:
        axes = list(self.suite.axes.items())
        combos = list(itertools.product(*(values for _, values in axes))) or [()]
        return [
            Point(m, d, c, s, tuple(zip([k for k, _ in axes], combo, strict=True)))
            for d in self.suite.datasets
            for m in self.methods
            for c in self.suite.compositions
            for s in self.seeds
            for combo in combos
        ]

    def spec(self, point: Point, overrides: tuple[str, ...] = ()) -> ExperimentSpec:
        """The resolved spec of ``point`` (see the module docstring)."""
        base = method_base(
            point.method,
            "real" if self.real else "synthetic",
            point.dataset,
            synthetic_size=None if self.real else self.profile.synthetic_size,
        )
        method_spn = base.pop("spn", {}) or {}
        dataset: dict[str, Any] = {**(base.pop("dataset", None) or {}), "format": point.dataset}
        if self.data_roots is not None:
            dataset["root"] = str(self.data_roots[point.dataset])
        else:
            dataset["root"] = "synthetic"
            dataset["synthetic_size"] = self.profile.synthetic_size
            if self.profile.max_train_queries:
                dataset["max_train_queries"] = self.profile.max_train_queries
            if self.profile.categories and get_format(point.dataset).categories:
                dataset["categories"] = list(self.profile.categories)
            if self.profile.pretrained:
                base["backbone"] = {
                    **base.get("backbone", {}),
                    "pretrained": self.profile.pretrained,
                }
        data: dict[str, Any] = {
            "name": point.name,
            "experiment": self.experiment,
            "seed": point.seed,
            "dataset": dataset,
            **base,
            "spn": composition_spn(point.composition, method_spn, f"suite {self.suite.suite}"),
        }
        if self.profile.pretrained and self.data_roots is None and "positives" in data["spn"]:
            # the matching backbone too: a profile of random weights pre-trains nothing
            positives = data["spn"]["positives"]
            positives["backbone"] = {
                **(positives.get("backbone") or {}),
                "pretrained": self.profile.pretrained,
            }
        if self.profile.max_epochs:
            data = cap_epochs(data, self.profile.max_epochs)
        world = (  # a calibration runs in its own synthetic world, never the tables'
            [f"dataset.synthetic_seed={self.suite.calibration.synthetic_seed}"]
            if self.suite.calibration is not None and not self.real
            else []
        )
        all_overrides = [
            *world,
            *self.profile.overrides,
            *self.suite.overrides,
            *self.suite.profile_overrides.get("real" if self.real else "synthetic", ()),
            *self.suite.dataset_overrides.get(point.dataset, ()),
            *(f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in point.extra),
            *self.extra_overrides,
            *overrides,
        ]
        source = f"suite {self.suite.suite} point [{point.label()}]"
        data = apply_overrides(data, [o for o in all_overrides if _applies(o, data)], source)
        return parse_spec(data, source=source)


def check_backbone(arch: str) -> None:
    """Raise :class:`UnknownNameError` unless ``arch`` names a backbone (an open_clip
    architecture, or ``hf-blip:NAME`` / ``hf-blip2:NAME``, checked by their loaders)."""
    from bench.backbones.base import split_family
    from bench.backbones.clip import list_architectures

    family, _ = split_family(arch)
    if family is None and arch not in (known := list_architectures()):
        raise UnknownNameError("backbone", arch, known)


def cap_epochs(data: dict[str, Any], cap: int) -> dict[str, Any]:
    """Every phase's epochs (stage 1, its phases, the P continuation, stage 2) at most ``cap``."""
    data = copy.deepcopy(data)
    train = data.setdefault("train", {})
    train["epochs"] = min(train.get("epochs", 3), cap)
    for phase in (train.get("phases") or {}).values():
        phase["epochs"] = min(phase.get("epochs") or cap, cap)
    spn = data.get("spn", {})
    if "positives" in spn or "positives_train" in spn:
        pt = spn.setdefault("positives_train", {})
        pt["epochs"] = min(pt.get("epochs", 2), cap)
    if "negatives" in spn:
        neg = spn["negatives"]
        neg["epochs"] = min(neg.get("epochs") or cap, cap)
    return data


def _applies(override: str, data: dict[str, Any]) -> bool:
    """Overrides of ``spn.negatives.*`` / ``spn.positives.*`` apply only to compositions
    that switch that modifier on (so a profile's stage-2 settings don't turn N on)."""
    key = override.split("=", 1)[0]
    for block in ("spn.negatives.", "spn.positives.", "spn.positives_train."):
        if key.startswith(block):
            return block.split(".")[1] in data.get("spn", {})
    return True
