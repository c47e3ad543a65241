"""SPN modifiers on tiny configs of the real code: compositions, bank, neg_num, zero-shot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from bench.config import ExperimentSpec, parse_spec
from bench.config.bases import method_base, methods_with_bases
from bench.spn import negatives
from bench.spn.negatives import BankObjective
from bench.train.engine import plan_phases, train
from bench.train.loop import PhaseTraining, train_epoch, training_features
from bench.train.session import build_session, run_dir_for
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
    assert BankObjective(tau=0.05, learnable=True, neg_num=None).temperature.requires_grad


def test_plan_uses_paper_defaults_and_freezes_the_image_side():
    spec = spec_with(negatives={"neg_num": 20})
    session = build_session(spec, progress=False)
    [planned] = plan_phases(spec, session.method)
    phase, cfg = planned.phase, planned.settings
    assert phase.name == "spn_negatives" and phase.objective == "bank"
    assert phase.image_frozen(session.method)
    # CLIP4CIR's recipe: the text tower alone trains, scored by sum fusion (the fine-tune phase)
    assert phase.trains == ("text_encoder",) and planned.method_phase == "finetune"
    # the synthetic recipe's bank lr (5e-4: scale-calibrated, the real profile's is 2e-5)
    assert (cfg.batch_size, cfg.epochs, cfg.lr, cfg.schedule) == (256, 3, 5e-4, "constant")


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
    assert spec.spn.composition.name == composition
    result = train(spec, resume=True, progress=False)
    assert [h["phase"] for h in result.history] == phases
    assert 0 <= result.metrics["Rmean"] <= 100
    session = build_session(spec, progress=False, pretrained=False)
    human = len(session.data.train)
    epoch = session.epoch_triplets(0)
    if composition in ("P", "P+N"):  # the recipe's mix_ratio null: human + all generated
        assert spec.spn.positives_train.mix_ratio is None
        assert len(epoch) == human + len(session.generated) > human
        assert {t.source for t in epoch} >= {"generated/oracle-test", "dress/train"}
    else:
        assert len(epoch) == human and session.generated == []


def test_zero_shot_trains_on_generated_triplets_only():
    spec = spec_with(positives={**POSITIVES, "pool": "pool", "name": "zs"}, zero_shot=True)
    assert spec.spn.composition.name == "ZS-ood"
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
    assert with_bank.spn.composition.name == "ZS-ood+N"
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
        **base,
        "dataset": {**BASE["dataset"], **base.get("dataset", {})},
        "spn": spn,  # the base's spn section is the recipe the suites draw from
    }
    return parse_spec(data)


#: Metrics and per-epoch losses of these tiny runs, recorded before the package layout
#: changed (``CIRBENCH_RECORD_GOLDEN=1 python -m pytest tests/test_spn.py -k four``
#: rewrites it; say why in the commit when it changes).
GOLDEN = Path(__file__).parent / "golden" / "spn_tiny_metrics.json"


def check_golden(method: str, results: dict) -> None:
    """Compare (or, with ``CIRBENCH_RECORD_GOLDEN=1``, record) the golden metrics."""
    got = {
        c: {"metrics": r.metrics, "losses": [h["loss"] for h in r.history]}
        for c, r in results.items()
    }
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    if os.environ.get("CIRBENCH_RECORD_GOLDEN"):
        golden[method] = got
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        return
    assert method in golden, f"{GOLDEN} has no entry for {method}"
    for composition, record in golden[method].items():
        assert got[composition]["losses"] == pytest.approx(record["losses"], rel=1e-4)
        for key, value in record["metrics"].items():
            assert got[composition]["metrics"][key] == pytest.approx(value, abs=1e-6), (
                composition,
                key,
            )


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
        assert spec.spn.composition.name == composition
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
    check_golden(method, results)


# ----------------------------------------------------------------------------- half, mapped bank
# The bank stage's features live in the feature cache: float16 with half_bank, memory-
# mapped (tensors over the files), read a batch of rows at a time; the full-bank logits
# are computed chunk-wise. Results equal the float32 in-RAM computation.


def mapped_files() -> list[tuple[int, int, str]]:
    """(start, end, path) of every file mapping of this process (Linux /proc)."""
    out = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            out.append((start, end, parts[5]))
    return out


def is_mapped_from(tensor: torch.Tensor, path: Path) -> bool:
    pointer = tensor.data_ptr()
    return any(s <= pointer < e and name == str(path) for s, e, name in mapped_files())


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")
def test_half_bank_is_float16_on_disk_and_memory_mapped():
    spec = spec_with(negatives={**NEGATIVES, "half_bank": True})
    session = build_session(spec, progress=False, pretrained=False)
    [planned] = plan_phases(spec, session.method)
    phase = planned.phase
    half = training_features(session, phase.image_frozen(session.method), bank=True)
    full = training_features(session, True, bank=False)  # stage-1 phases: float32
    assert half is not None and full is not None and half.files and full.files
    assert set(half.files).isdisjoint(full.files)  # the dtype is part of the key
    for tensor, path in zip((half.reference, half.target), half.files, strict=True):
        assert np.load(path).dtype == np.float16 and tensor.dtype == torch.float16
        assert is_mapped_from(tensor, path)  # a view of the file, not a copy in RAM
    assert np.load(full.files[1]).dtype == np.float32 and is_mapped_from(full.target, full.files[1])
    rows = np.array([5, 0, 17, 5])
    got = half.target_rows(rows, session.device)
    assert got.dtype == torch.float32  # upcast on read
    torch.testing.assert_close(got, full.target_rows(rows, session.device), atol=1e-3, rtol=0)
    session.features_in_ram = True  # the previous behaviour: a float32 copy in RAM
    copy = training_features(session, True, bank=True)
    assert copy is not None and copy.files is None and copy.target.dtype == torch.float32
    assert not is_mapped_from(copy.target, half.files[1])


def mapped_bank(tmp_path: Path, bank: torch.Tensor, dtype: str) -> torch.Tensor:
    path = tmp_path / f"bank-{dtype}.npy"
    np.save(path, bank.numpy().astype(dtype))
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def in_ram_loss(query, bank, positives, neg_num, generator, scale):
    """The bank objective as it was computed on an in-RAM float32 bank (plain autograd)."""
    if neg_num is None:
        return torch.nn.functional.cross_entropy(query @ bank.t() * scale, positives)
    draws = torch.randint(0, bank.shape[0] - 1, (len(query), neg_num), generator=generator)
    rows = torch.cat([positives[:, None], draws + (draws >= positives[:, None]).long()], dim=1)
    logits = torch.einsum("bd,bkd->bk", query, bank[rows]) * scale
    return torch.nn.functional.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long))


@pytest.mark.parametrize("parametrisation", ["tau", "log_inverse"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("neg_num", [None, 20])
def test_chunked_mapped_bank_equals_the_in_ram_computation(
    tmp_path, dtype, neg_num, parametrisation
):
    torch.manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(50, 8), dim=-1)
    mapped = mapped_bank(tmp_path, bank, dtype)
    in_ram = mapped.float().clone()  # what the file holds, as float32 in RAM
    positives = torch.tensor([3, 0, 49, 3])
    start = bank[positives] + 0.1 * torch.randn(4, 8)
    # chunked: 8 chunks of 7 rows, the last one short
    objective = BankObjective(
        0.05, learnable=True, neg_num=neg_num, chunk_rows=7, parametrisation=parametrisation
    )
    query = start.clone().requires_grad_(True)
    loss = objective(query, mapped, positives, torch.Generator().manual_seed(3))
    loss.backward()
    plain_query = start.clone().requires_grad_(True)
    if parametrisation == "tau":  # the reference learns tau itself: logits / tau
        param = torch.tensor(0.05).requires_grad_(True)
        scale = 1.0 / param
    else:
        param = torch.tensor(1 / 0.05).log().requires_grad_(True)
        scale = param.exp()
    expected = in_ram_loss(
        plain_query, in_ram, positives, neg_num, torch.Generator().manual_seed(3), scale
    )
    expected.backward()
    tol = {"atol": 1e-6, "rtol": 1e-5}
    torch.testing.assert_close(loss.detach(), expected.detach(), **tol)
    torch.testing.assert_close(query.grad, plain_query.grad, **tol)
    torch.testing.assert_close(objective.temperature.grad, param.grad, **tol)


@pytest.mark.parametrize("neg_num", [None, 5])
def test_token_set_bank_scores_by_the_best_token(neg_num):
    """A bank of token sets (SPRC: query tokens per image) scores a query by its best token;
    the chunked logits and their gradient equal the explicit max over tokens."""
    torch.manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(23, 4, 8), dim=-1)  # 23 images x 4 tokens
    positives = torch.tensor([3, 0, 22])
    start = bank[positives, 0] + 0.1 * torch.randn(3, 8)
    objective = BankObjective(0.05, learnable=False, neg_num=neg_num, chunk_rows=24)  # 6 rows
    query = start.clone().requires_grad_(True)
    loss = objective(query, bank, positives, torch.Generator().manual_seed(1))
    loss.backward()
    plain = start.clone().requires_grad_(True)
    if neg_num is None:
        logits = torch.stack([(plain @ bank[n].t()).max(dim=1).values for n in range(23)], dim=1)
        expected = torch.nn.functional.cross_entropy(logits / 0.05, positives)
    else:
        draws = torch.randint(0, 22, (3, neg_num), generator=torch.Generator().manual_seed(1))
        rows = torch.cat([positives[:, None], draws + (draws >= positives[:, None]).long()], 1)
        logits = torch.stack(
            [torch.stack([(plain[b] @ bank[r].t()).max() for r in rows[b]]) for b in range(3)]
        )
        expected = torch.nn.functional.cross_entropy(logits / 0.05, torch.zeros(3).long())
    expected.backward()
    torch.testing.assert_close(loss.detach(), expected.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(query.grad, plain.grad, atol=1e-6, rtol=1e-5)


def test_neg_num_is_honoured_on_a_mapped_half_bank(tmp_path):
    torch.manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(40, 8), dim=-1)
    mapped = mapped_bank(tmp_path, bank, "float16")
    positives = torch.tensor([0, 7, 39])
    query = bank[positives].clone()
    seen = []
    original = negatives.gather_rows

    def spy(array, rows, device, dtype=torch.float32):
        seen.append(rows)
        return original(array, rows, device, dtype)

    objective = BankObjective(0.02, learnable=False, neg_num=5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(negatives, "gather_rows", spy)
        loss = objective(query, mapped, positives, torch.Generator().manual_seed(4))
    [rows] = seen  # one gather: the positive and exactly neg_num negatives per query
    assert rows.shape == (3, 6) and torch.equal(rows[:, 0], positives)
    assert not (rows[:, 1:] == positives[:, None]).any()
    draws = torch.randint(0, 39, (3, 5), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(rows[:, 1:], draws + (draws >= positives[:, None]).long())
    candidates = mapped[rows].float()
    logits = torch.einsum("bd,bkd->bk", query, candidates) / 0.02
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(loss, expected)


def test_float32_mapped_bank_stage_equals_the_in_ram_stage():
    """One bank-stage epoch from the same weights: memory-mapped float32 features (the
    default) and the previous float32-in-RAM features give the same loss and weights;
    the float16 bank trains too, to a close loss."""
    results = {}
    for name, half, in_ram in (
        ("mapped", False, False),
        ("ram", False, True),
        ("half", True, False),
    ):
        spec = spec_with(negatives={**NEGATIVES, "neg_num": None, "half_bank": half})
        session = build_session(spec, progress=False, pretrained=False)
        session.features_in_ram = in_ram
        [planned] = plan_phases(spec, session.method)
        training = PhaseTraining.create(
            session, planned.phase, 0, planned.settings, planned.objective
        )
        loss, _ = train_epoch(session, training, 0)
        results[name] = (loss, session.method.state_dict())
    assert results["mapped"][0] == pytest.approx(results["ram"][0], rel=1e-5)
    for key, value in results["ram"][1].items():
        torch.testing.assert_close(results["mapped"][1][key], value, atol=1e-6, rtol=1e-5)
    assert results["half"][0] == pytest.approx(results["ram"][0], rel=1e-2)
