"""SPN modifiers on tiny configs of the real code: compositions, bank, neg_num, zero-shot."""

from __future__ import annotations

import mlflow
import pytest
import torch

from bench.config import ExperimentSpec, parse_spec
from bench.engine import BankObjective, build_session, plan_phases, run_dir_for, train
from bench.method_bases import method_base, methods_with_bases
from methods import list_methods
from tests.conftest import cirbench_home

BASE = {
    "name": "spn-tiny",
    "experiment": "cirbench-spn-tests",
    "dataset": {
        "format": "fashioniq",
        "synthetic_size": "tiny",
        "categories": ["dress"],
        "max_train_queries": 64,
    },
    "backbone": {"pretrained": "random"},
    "train": {"epochs": 1, "batch_size": 16, "lr": 1e-4, "phases": {"combiner": {"epochs": 1}}},
}
NEGATIVES = {"epochs": 1, "batch_size": 16, "lr": 1e-4, "neg_num": 20}


def spec_with(**spn):
    return parse_spec({**BASE, "spn": spn})


@pytest.fixture(scope="module", autouse=True)
def isolated_home(tmp_path_factory):
    yield from cirbench_home(tmp_path_factory)


def test_bank_objective_full_bank_and_neg_num():
    torch.manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(50, 8), dim=-1)
    query = bank[:4] + 0.01
    positives = torch.arange(4)
    gen = torch.Generator().manual_seed(0)
    full = BankObjective(tau=0.02, learnable=False, neg_num=None)
    logits = query @ bank.t() / 0.02
    expected = torch.nn.functional.cross_entropy(logits, positives)
    assert torch.allclose(full(query, bank, positives, gen), expected)
    # with neg_num: the positive and exactly neg_num other rows of the bank
    sampled = BankObjective(tau=0.02, learnable=False, neg_num=5)
    loss = sampled(query, bank, positives, torch.Generator().manual_seed(3))
    draws = torch.randint(0, 49, (4, 5), generator=torch.Generator().manual_seed(3))
    negatives = draws + (draws >= positives[:, None]).long()
    assert not (negatives == positives[:, None]).any()
    rows = torch.cat([positives[:, None], negatives], dim=1)
    logits = torch.einsum("bd,bkd->bk", query, bank[rows]) / 0.02
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(loss, expected)
    assert BankObjective(tau=0.05, learnable=True, neg_num=None).log_scale.requires_grad


def test_plan_uses_paper_defaults_and_freezes_the_image_side():
    spec = spec_with(negatives={"neg_num": 20})
    session = build_session(spec, progress=False)
    [(phase, cfg)] = plan_phases(spec, session.method)
    assert phase.name == "spn_negatives" and phase.objective == "bank"
    assert phase.image_frozen(session.method)
    assert set(phase.trains) == {"text_encoder", "combiner"}
    assert (cfg.batch_size, cfg.epochs, cfg.lr, cfg.schedule) == (256, 3, 2e-5, "constant")


def test_negative_scaling_reuses_stage1_and_the_bank_cache():
    none = train(parse_spec(BASE), progress=False)
    spec = spec_with(negatives=NEGATIVES)
    result = train(spec, progress=False)
    assert [h["phase"] for h in result.history] == ["spn_negatives"]
    assert result.history[0]["tau"] == pytest.approx(0.02)
    # stage 1 was the composition "none" run itself: trained once, not again
    assert (run_dir_for(spec.stage1_spec()) / "result.json").is_file()
    assert run_dir_for(spec.stage1_spec()) == none.run_dir
    run = mlflow.MlflowClient().get_run(result.mlflow_run_id)
    assert run.data.tags["cirbench.composition"] == "N"
    assert run.data.tags["cirbench.stage1_checkpoint"] == str(none.best_checkpoint)
    # the bank and the eval galleries were encoded once; later reads hit the cache
    assert result.cache["cache_hits"] >= 1
    again = train(spec, resume=True, progress=False)  # finished: returned as it is
    assert again.metrics == result.metrics


POSITIVES = {
    "name": "oracle-test",
    "captioner": "oracle",
    "backbone": {"pretrained": "random"},
    "rank_lo": 1,
    "rank_hi": 30,
    "k": 1,
    "templates": ["instead", "unlike", "target"],
}


@pytest.mark.parametrize(
    ("spn", "composition", "phases"),
    [
        ({}, "none", ["finetune", "combiner"]),
        ({"positives": POSITIVES, "positives_train": {"epochs": 1}}, "P", ["spn_positives"]),
        ({"negatives": NEGATIVES}, "N", ["spn_negatives"]),
        ({"positives": POSITIVES, "negatives": NEGATIVES}, "P+N", ["spn_negatives"]),
    ],
)
def test_all_four_compositions_run(spn, composition, phases):
    spec = spec_with(**spn)
    assert spec.spn.composition == composition
    result = train(spec, resume=True, progress=False)
    assert [h["phase"] for h in result.history] == phases
    assert 0 <= result.metrics["Rmean"] <= 100
    session = build_session(spec, progress=False, pretrained=False)
    human = len(session.data.train)
    epoch = session.epoch_triplets(0)
    if composition in ("P", "P+N"):  # human + as many generated (mix_ratio 1.0)
        assert len(epoch) == human + min(human, len(session.generated)) > human
        assert {t.source for t in epoch} >= {"generated/oracle-test", "dress/train"}
    else:
        assert len(epoch) == human and session.generated == []


def test_zero_shot_trains_on_generated_triplets_only():
    spec = spec_with(positives={**POSITIVES, "pool": "pool", "name": "zs"}, zero_shot=True)
    assert spec.spn.composition == "ZS"
    session = build_session(spec, progress=False, pretrained=False)
    epoch = session.epoch_triplets(0)
    assert epoch and all(t.source == "generated/zs" for t in epoch)
    # the out-of-domain pool images are the training images: no human train image is used
    human_images = {t.reference for t in session.data.train} | {
        t.target for t in session.data.train
    }
    assert human_images.isdisjoint(session.pool_names)
    result = train(spec, progress=False)
    assert [h["phase"] for h in result.history] == ["finetune", "combiner"]
    with_bank = spec_with(
        positives={**POSITIVES, "pool": "pool", "name": "zs"}, zero_shot=True, negatives=NEGATIVES
    )
    assert with_bank.spn.composition == "ZS+N"
    assert train(with_bank, progress=False).history[0]["phase"] == "spn_negatives"


# ----------------------------------------------------------------------------- every method
# The same four compositions for every method that has experiments/methods/<name>.yaml,
# on its synthetic base settings shrunk to the tiny data set (random weights, 1 epoch).


def tiny_method_spec(method: str, **spn) -> ExperimentSpec:
    base = method_base(method, "synthetic", "fashioniq")
    base["backbone"] = {**base.get("backbone", {}), "pretrained": "random"}
    phases = {name: {"epochs": 1} for name in base.get("train", {}).get("phases", {})}
    base["train"] = {**base.get("train", {}), "epochs": 1, "batch_size": 16, "phases": phases}
    data = {
        "name": f"spn-tiny-{method}",
        "experiment": "cirbench-spn-tests",
        "dataset": BASE["dataset"],
        **base,
        "spn": {**base.get("spn", {}), **spn},
    }
    return parse_spec(data)


@pytest.mark.parametrize("method", methods_with_bases())
def test_every_method_runs_all_four_compositions(method):
    assert method in list_methods()
    results = {}
    for composition, spn in {
        "none": {},
        "P": {"positives": POSITIVES, "positives_train": {"epochs": 1}},
        "N": {"negatives": NEGATIVES},
        "P+N": {"positives": POSITIVES, "negatives": NEGATIVES},
    }.items():
        spec = tiny_method_spec(method, **spn)
        assert spec.spn.composition == composition
        results[composition] = train(spec, resume=True, progress=False)
        assert 0 <= results[composition].metrics["Rmean"] <= 100
    none_phases = [h["phase"] for h in results["none"].history]
    assert none_phases == [
        p.name
        for p in build_session(
            tiny_method_spec(method), progress=False, pretrained=False
        ).method.phases
    ]
    assert [h["phase"] for h in results["P"].history] == ["spn_positives"]
    assert [h["phase"] for h in results["N"].history] == ["spn_negatives"]
    assert [h["phase"] for h in results["P+N"].history] == ["spn_negatives"]
