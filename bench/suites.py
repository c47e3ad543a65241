"""Experiment suites: one YAML file per paper table or study in ``experiments/``.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bench.config import ExperimentSpec, SpecError, apply_overrides, parse_spec
from bench.method_bases import method_base, methods_with_bases

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"
PROFILES_FILE = EXPERIMENTS_DIR / "profiles.yaml"
PUBLISHED_FILE = EXPERIMENTS_DIR / "published" / "spn_tables.csv"

DatasetFormat = Literal["fashioniq", "cirr", "circo"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- compositions


def positives_recipe(dataset: str, real: bool, pool: str = "train") -> dict[str, Any]:
    """The SPN released recipe for generated triplets: one target per reference from a
    similarity-rank window (FashionIQ: the "{target}" template; CIRR: the first two).
    On the synthetic benchmark the captioner is the oracle with 10% attribute noise and the
    window is scaled to its pool; on real data the captions come from a file the user
    provides (``--set`` ``spn.positives.captioner_options.path=...``)."""
    templates = ["target"] if dataset == "fashioniq" else ["instead", "unlike"]
    recipe: dict[str, Any] = {
        "name": f"spn-{pool}",
        "captioner": "oracle",
        "captioner_options": {"noise": 0.1},
        "pool": pool,
        "rank_lo": 5,
        "rank_hi": 50,
        "k": 1,
        "templates": templates,
    }
    if real:
        recipe |= {
            "captioner": "file",
            "captioner_options": {},
            "backbone": {"arch": "ViT-L-14", "pretrained": "openai"},
            "rank_lo": 10000 if dataset == "fashioniq" else 100,
            "rank_hi": 20000 if dataset == "fashioniq" else 1000,
        }
    return recipe


def composition_spn(
    composition: str, dataset: str, real: bool, method_spn: dict[str, Any]
) -> dict[str, Any]:
    """The ``spn`` block of a composition; the method's own ``spn`` settings (e.g. its
    CIRR temperature) apply to the modifiers the composition switches on."""
    out: dict[str, Any] = {}
    pool = "pool" if composition.startswith("ZS-ood") else "train"
    if composition in ("P", "P+N", "P-control") or composition.startswith("ZS"):
        out["positives"] = positives_recipe(dataset, real, pool)
        if "positives_train" in method_spn and composition in ("P", "P-control"):
            out["positives_train"] = dict(method_spn["positives_train"])
    if composition == "P-control":  # P's continuation with (practically) no generated triplet
        out.setdefault("positives_train", {})["mix_ratio"] = 1e-9
    if composition.endswith("N") and composition != "none":
        out["negatives"] = dict(method_spn.get("negatives", {}) or {})
    if composition.startswith("ZS"):
        out["zero_shot"] = True
    if composition not in COMPOSITIONS:
        raise SpecError(f"unknown composition {composition!r}; known: {', '.join(COMPOSITIONS)}")
    return out


#: Composition name -> what it means (the suites' ``compositions`` list these names).
COMPOSITIONS: dict[str, str] = {
    "none": "stage 1 only (the baseline as published)",
    "P": "continue on human + generated triplets, in-batch negatives",
    "P-control": "P's continuation (same epochs, lr) on human triplets only: what P buys "
    "beyond training longer",
    "N": "stage 2 against the static negative bank, human triplets",
    "P+N": "stage 2 against the bank on human + generated triplets",
    "ZS": "zero-shot: generated triplets from the dataset's train images only",
    "ZS+N": "zero-shot in-domain, then stage 2 against the bank",
    "ZS-ood": "zero-shot: generated triplets from the unlabeled pool (out of domain)",
    "ZS-ood+N": "zero-shot out of domain, then stage 2 against the bank",
}


# ----------------------------------------------------------------------------- profiles


class Profile(_Strict):
    """How big a suite run is: data size, seeds, epoch caps, study trials."""

    name: str
    description: str = ""
    synthetic_size: Literal["tiny", "small", "default"] = "small"
    seeds: tuple[int, ...] = (0,)
    max_epochs: int | None = Field(default=None, ge=1, description="cap on every phase")
    max_train_queries: int | None = Field(default=None, gt=0)
    categories: tuple[Literal["dress", "shirt", "toptee"], ...] | None = None
    pretrained: str | None = Field(default=None, description="override the synthetic backbone")
    n_trials: int = Field(default=8, ge=1)
    #: per-suite seeds (e.g. one seed for the secondary studies of a time-boxed profile)
    suite_seeds: dict[str, tuple[int, ...]] = Field(default_factory=dict)
    overrides: tuple[str, ...] = Field(default=(), description="--set KEY=VALUE for every spec")


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, Profile]:
    data = _read_yaml(path)
    out: dict[str, Profile] = {}
    for name, block in data.items():
        try:
            out[name] = Profile.model_validate({"name": name, **(block or {})})
        except ValidationError as exc:
            raise SpecError(f"{path}: profile {name!r}: {_errors(exc)}") from None
    return out


def get_profile(name: str) -> Profile:
    profiles = load_profiles()
    if name not in profiles:
        raise SpecError(f"{PROFILES_FILE}: no profile {name!r}; known: {', '.join(profiles)}")
    return profiles[name]


# ----------------------------------------------------------------------------- suites


class StudySpec(_Strict):
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
    sampler_seed: int = 0


class ReportSpec(_Strict):
    """What ``cirbench report`` draws from a suite."""

    table: Literal["paper", "compositions", "axis", "study"] = "compositions"
    paper_table: int | None = None
    plot: Literal["bars", "axis", "bank_size", "none"] = "bars"


class SuiteSpec(_Strict):
    suite: str
    title: str
    kind: Literal["grid", "study"] = "grid"
    datasets: tuple[DatasetFormat, ...]
    methods: tuple[str, ...] | Literal["all"] = "all"
    compositions: tuple[str, ...] = ("none",)
    seeds: tuple[int, ...] | None = None
    #: extra grid axes: dotted spec key -> values (e.g. spn.positives.K: [100, 200])
    axes: dict[str, tuple[Any, ...]] = Field(default_factory=dict)
    #: dotted KEY=VALUE overrides for every spec of the suite (e.g. a tuned stage-2 lr)
    overrides: tuple[str, ...] = ()
    #: dataset format -> dotted overrides for that dataset's specs
    dataset_overrides: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    study: StudySpec | None = None
    report: ReportSpec = Field(default_factory=ReportSpec)

    @field_validator("compositions")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in value if c not in COMPOSITIONS]
        if unknown:
            raise ValueError(f"unknown compositions {unknown}; known: {list(COMPOSITIONS)}")
        return value

    def method_names(self) -> list[str]:
        return methods_with_bases() if self.methods == "all" else list(self.methods)


def suite_file(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    return EXPERIMENTS_DIR / f"{name}.yaml"


def list_suites() -> list[str]:
    return sorted(
        p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if "suite" in (_read_yaml(p) or {})
    )


def load_suite(name: str) -> SuiteSpec:
    path = suite_file(name)
    if not path.is_file():
        raise SpecError(f"{path}: suite not found; known suites: {', '.join(list_suites())}")
    data = _read_yaml(path)
    try:
        suite = SuiteSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{path}: {_errors(exc)}") from None
    if suite.kind == "study" and suite.study is None:
        raise SpecError(f"{path}: field 'study': a study suite needs a study block")
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


@dataclass
class SuiteRun:
    """A suite resolved against a profile (and real data, when given)."""

    suite: SuiteSpec
    profile: Profile
    data_root: Path | None = None
    seeds_override: tuple[int, ...] | None = None
    extra_overrides: tuple[str, ...] = field(default_factory=tuple)
    #: Optuna storage URL of a study suite (None: the default journal file)
    storage: str | None = None
    methods_override: tuple[str, ...] | None = None

    @property
    def methods(self) -> list[str]:
        return list(self.methods_override or self.suite.method_names())

    @property
    def real(self) -> bool:
        return self.data_root is not None

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
        base = method_base(point.method, "real" if self.real else "synthetic", point.dataset)
        method_spn = base.pop("spn", {}) or {}
        dataset: dict[str, Any] = {"format": point.dataset}
        if self.real:
            dataset["root"] = str(self.data_root)
        else:
            dataset["root"] = "synthetic"
            dataset["synthetic_size"] = self.profile.synthetic_size
            if self.profile.max_train_queries:
                dataset["max_train_queries"] = self.profile.max_train_queries
            if self.profile.categories and point.dataset == "fashioniq":
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
            "spn": composition_spn(point.composition, point.dataset, self.real, method_spn),
        }
        if self.profile.max_epochs:
            data = cap_epochs(data, self.profile.max_epochs)
        all_overrides = [
            *self.profile.overrides,
            *self.suite.overrides,
            *self.suite.dataset_overrides.get(point.dataset, ()),
            *(f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in point.extra),
            *self.extra_overrides,
            *overrides,
        ]
        source = f"suite {self.suite.suite} point [{point.label()}]"
        data = apply_overrides(data, [o for o in all_overrides if _applies(o, data)], source)
        return parse_spec(data, source=source)


def cap_epochs(data: dict[str, Any], cap: int) -> dict[str, Any]:
    """Every phase's epochs (stage 1, its phases, the P continuation, stage 2) at most ``cap``."""
    data = copy.deepcopy(data)
    train = data.setdefault("train", {})
    train["epochs"] = min(train.get("epochs", 3), cap)
    for phase in (train.get("phases") or {}).values():
        phase["epochs"] = min(phase.get("epochs") or cap, cap)
    spn = data.get("spn", {})
    if "positives" in spn:
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


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: malformed YAML: {exc}") from None


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"field '{'.'.join(map(str, e['loc']))}': "
        + ("unknown key" if e["type"] == "extra_forbidden" else e["msg"])
        for e in exc.errors()
    )
