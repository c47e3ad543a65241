"""The SPN reference recipe (issue 12), on tiny configs of the real code: what each SPN stage
trains and how it scores, what the bank holds, the positives recipe's rules, and the
dry-run of every suite on a folder in the reference layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.config import PositivesSpec, parse_spec
from bench.config.bases import method_base, methods_with_bases
from bench.core.paths import cache_dir
from bench.evaluation.encode import encode_pixels, query_features
from bench.evaluation.evaluate import evaluate_split
from bench.formats import EvalOptions
from bench.images.dedup import duplicate_groups, pixel_digests
from bench.metrics import cirr_metrics, fashioniq_metrics_for_protocol
from bench.runner.dryrun import dry_run
from bench.runner.suites import SuiteRun, list_suites, resolve_data_roots
from bench.spn.positives.pipeline import build_positives
from bench.spn.positives.templates import clip_token_count, resolve_template, text_limit
from bench.synthetic import generate
from bench.train.engine import plan_phases
from bench.train.loop import PhaseTraining, train_epoch
from bench.train.session import build_session
from tests.conftest import SHARED_DATA, cirbench_home

TINY = {"format": "fashioniq", "synthetic_size": "tiny", "categories": ["dress"]}


@pytest.fixture(scope="module", autouse=True)
def isolated_home(tmp_path_factory):
    yield from cirbench_home(tmp_path_factory)


def tiny_spec(method: str, **spn) -> dict:
    base = method_base(method, "synthetic", "fashioniq")
    return {
        "name": f"recipe-{method}",
        "dataset": {**TINY, "max_train_queries": 48},
        "backbone": {**base["backbone"], "pretrained": "random"},
        "method": base["method"],
        "train": {"epochs": 1, "batch_size": 16},
        "spn": spn,
    }


# ----------------------------------------------------------------------------- point 1


def test_clip4cir_bank_stage_trains_the_text_tower_only_and_fuses_by_sum():
    """The reference's CLIP4CIR stage 2: the stage-1 CLIP, element-wise sum, the text tower
    the only thing that trains; the Combiner is neither called nor changed."""
    spec = parse_spec(tiny_spec("clip4cir", negatives={"epochs": 1, "batch_size": 16}))
    assert spec.spn.negatives.trains == ("text_encoder",)  # from the recipe
    assert spec.spn.negatives.phase == "finetune"
    session = build_session(spec, progress=False)
    method = session.method
    [planned] = plan_phases(spec, method)
    assert planned.method_phase == "finetune" and planned.phase.trains == ("text_encoder",)
    method.set_phase(planned.method_phase)
    before = {k: v.clone() for k, v in method.state_dict().items()}

    def refuse(*_):
        raise AssertionError("the bank stage must not run the Combiner")

    hook = method.combiner.register_forward_hook(refuse)
    try:
        training = PhaseTraining.create(session, planned.phase, 0, planned.settings, None)
        training.objective = planned.objective.to(session.device)
        train_epoch(session, training, 0)
    finally:
        hook.remove()
    after = method.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(not k.startswith(("combiner.", "clip.visual.")) for k in changed)
    # the query is normalize(reference + text), the fine-tuning phase's fusion
    tokens = method.tokenize(["is red"])
    ref = torch.randn(1, session.method.clip.text_projection.shape[1])
    expected = torch.nn.functional.normalize(ref + method.clip.encode_text(tokens), dim=-1)
    torch.testing.assert_close(method.encode_query(ref, tokens), expected)


# ----------------------------------------------------------------------------- point 2


def test_sprc_retrieval_is_the_best_of_the_target_tokens():
    """SPRC's gallery holds each image's query tokens; a query scores an image by its best
    token, exactly as an explicit max over tokens (the metrics from those scores)."""
    spec = parse_spec({**tiny_spec("sprc"), "name": "recipe-sprc-eval"})
    session = build_session(spec, progress=False)
    images = session.eval_images[0]
    method, device = session.method, session.device
    metrics = evaluate_split(method, images, device, batch_size=32, options=EvalOptions())
    method.eval()
    encoded = encode_pixels(method, images.pixels, device, 32)
    assert encoded.target.ndim == 3  # (gallery, query tokens, dim)
    queries = torch.from_numpy(query_features(method, images, encoded, device, 32))
    scores = torch.stack(
        [(queries @ encoded.target[g].t()).max(dim=1).values for g in range(len(encoded.target))],
        dim=1,
    ).numpy()
    split = images.split
    refs = [q.reference for q in split.queries]
    targets = [q.target for q in split.queries]
    expected = fashioniq_metrics_for_protocol("full_gallery", scores, split.gallery, refs, targets)
    assert metrics == pytest.approx(expected)


def test_cirr_token_sets_are_scored_exactly():
    from bench.formats import get_format
    from bench.formats.records import CIRSplit, Query

    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(6, 3, 4)).astype(np.float32)
    queries = rng.normal(size=(2, 4)).astype(np.float32)
    names = [f"g{i}" for i in range(6)]
    split = CIRSplit(
        "cirr",
        "val",
        None,
        [
            Query("1", 0, "g0", "g2", ("x",), group=("g0", "g1", "g2")),
            Query("2", 1, "g3", "g5", ("y",), group=("g3", "g4", "g5")),
        ],
        names,
        {},
    )
    got = get_format("cirr").split_metrics(split, queries, gallery, EvalOptions(), None)
    scores = np.einsum("qd,gtd->qgt", queries, gallery).max(axis=2)
    assert got == pytest.approx(
        cirr_metrics(
            scores, names, ["g0", "g3"], ["g2", "g5"], [list(q.group) for q in split.queries]
        )
    )


# ----------------------------------------------------------------------------- point 3


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, size="tiny", progress=False)
    return root


def positives(**kw) -> PositivesSpec:
    base = {"backbone": {"pretrained": "random"}, "categories": ["dress", "shirt"]}
    return PositivesSpec.model_validate({**base, **kw})


def test_merged_pool_pairs_across_categories_and_keeps_each_reference_category(synth):
    spec = positives(name="merged", merge_categories=True, mode="random", k=1, seed=3)
    built = build_positives(synth / "fashioniq", "fashioniq", spec, progress=False)
    assert list(built.provenance["counts"]["groups"]) == ["None"]  # one pool
    meta = json.loads((synth / "fashioniq" / "metadata" / "images.json").read_text())
    cross = [
        t for t in built.triplets if meta[t.reference]["category"] != meta[t.target]["category"]
    ]
    assert cross  # a random target of a merged pool may be of another category
    for t in built.triplets:  # ... and the triplet takes its reference's category
        assert t.source == f"{meta[t.reference]['category']}/extend_merged"
    per_category = build_positives(
        synth / "fashioniq", "fashioniq", positives(name="split", mode="random"), progress=False
    )
    assert sorted(per_category.provenance["counts"]["groups"]) == ["dress", "shirt"]
    assert all(
        meta[t.reference]["category"] == meta[t.target]["category"] for t in per_category.triplets
    )


def test_refer_and_K_share_and_random_targets(synth):
    root = synth / "fashioniq"
    human_refs = {
        r["candidate"]
        for c in ("dress", "shirt")
        for r in json.loads((root / "captions" / f"cap.{c}.train.json").read_text())
    }
    refer = build_positives(
        root,
        "fashioniq",
        positives(name="refer", mode="random", only_train_references=True),
        progress=False,
    )
    assert {t.reference for t in refer.triplets} <= human_refs  # --refer
    assert len(refer.triplets) == len({t.reference for t in refer.triplets})  # k = 1
    capped = build_positives(
        root, "fashioniq", positives(name="capped", mode="random", K=0.25), progress=False
    )
    pairs = capped.provenance["counts"]["pairs_before_cap"]
    assert len(capped.triplets) == round(0.25 * pairs)  # --K as a share of the pairs


def test_texts_over_the_token_limit_fall_back_to_the_target_caption(synth):
    assert clip_token_count("a red dress") == 5  # start, three words, end
    fit = text_limit(6)
    assert fit("a red dress", "a blue shirt.") == "a red dress"
    assert fit("a long red dress instead of a blue shirt", "a blue shirt.") == "a blue shirt"
    assert text_limit(None)("x " * 100, "t") == "x " * 100
    built = build_positives(
        synth / "fashioniq",
        "fashioniq",
        positives(name="short", mode="random", templates=["instead"], max_text_tokens=6),
        progress=False,
    )
    assert built.triplets and all(
        t.text == t.target_caption.rstrip(" .,;:") or clip_token_count(t.text) <= 6
        for t in built.triplets
    )
    assert any(t.text == t.target_caption.rstrip(" .,;:") for t in built.triplets)


# ----------------------------------------------------------------------------- point 4


def test_dedup_merges_pixel_identical_images_and_keeps_near_identical_apart(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    paths = {"a": tmp_path / "a.png", "b": tmp_path / "b.png", "c": tmp_path / "c.jpg"}
    Image.fromarray(pixels).save(paths["a"])
    Image.fromarray(pixels).save(paths["b"])  # the same pixels under another name
    near = pixels.copy()
    near[0, 0, 0] ^= 1  # one value off
    Image.fromarray(near).save(tmp_path / "d.png")
    paths["d"] = tmp_path / "d.png"
    Image.fromarray(pixels).save(paths["c"], quality=100)  # JPEG: not pixel-identical
    digests = pixel_digests(list(paths), paths, tmp_path, progress=False)
    groups = duplicate_groups(digests)
    assert groups["b"] == "a" and groups["a"] == "a"
    assert groups["d"] == "d" and groups["c"] == "c"


def test_data_stats_counts_the_pixel_identical_images_of_each_split(synth, tmp_path, capsys):
    root = tmp_path / "cirr"
    shutil.copytree(synth / "cirr", root)
    dev = sorted((root / "dev").glob("*.png"))
    shutil.copyfile(dev[0], dev[1])  # a twin under another name
    Image.open(dev[0]).convert("RGB").save(dev[2].with_suffix(".png"))  # re-encoded twin
    assert main(["data", "stats", "--format", "cirr", "--root", str(root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["splits"]["val"]["duplicates"] == {"merged_images": 2, "groups": 1}
    assert stats["splits"]["train"]["duplicates"] == {"merged_images": 0, "groups": 0}


def test_the_bank_holds_the_triplet_images_with_duplicates_merged():
    spec = parse_spec(tiny_spec("clip4cir", negatives={"epochs": 1, "batch_size": 16}))
    session = build_session(spec, progress=False, pretrained=False)
    used = {n for t in session.data.train for n in (t.reference, t.target)}
    assert set(session.pool_names) <= used  # not the split's other images
    assert len(session.pool_names) + len(session.same_as) == len(used)
    split = parse_spec(
        tiny_spec("clip4cir", negatives={"epochs": 1, "batch_size": 16, "bank": "split"})
    )
    unlabeled = build_session(split, progress=False, pretrained=False)
    assert len(unlabeled.pool_names) > len(session.pool_names)  # "unlabeled negatives"
    assert (cache_dir() / "dedup").is_dir()


# ----------------------------------------------------------------------------- dry run


@pytest.fixture(scope="module")
def reference_layout(tmp_path_factory, shared_data) -> Path:
    """A data root in the reference layout from the real annotation files: a rehearsal
    folder without images (``limit=0``: the dry run reads none)."""
    from bench.images.rehearse import rehearse_data_root

    root = tmp_path_factory.mktemp("data-root")
    for name in ("fashioniq", "cirr", "circo"):
        rehearse_data_root(root, [name], annotations=shared_data / name, limit=0, progress=False)
    return root


def agrees(got, want) -> bool:
    """``got`` carries ``want``: lists compare as tuples, a dict only on the keys ``want``
    names (the spec fills the others with defaults)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(agrees(got.get(k), v) for k, v in want.items())
    if isinstance(want, (list, tuple)):
        return isinstance(got, (list, tuple)) and tuple(got) == tuple(want)
    return got == want


@pytest.mark.parametrize("suite", ["table2_fashioniq", "table3_cirr", "ablation_spn", "zero_shot"])
def test_dry_run_on_a_reference_layout_prints_the_recipe(reference_layout, suite):
    records = dry_run(SuiteRun.open(suite, "default", str(reference_layout)))
    assert records
    for record in records:
        spec, plan = record["spec"], record["plan"]
        method, dataset = spec["method"]["name"], spec["dataset"]["format"]
        recipe = method_base(method, "real", dataset)
        assert spec["dataset"]["root"].endswith(("fashionIQ_dataset", "cirr_dataset"))
        if suite != "zero_shot":
            assert agrees(spec["backbone"], recipe["backbone"]), (method, dataset)
        negatives = spec["spn"].get("negatives")
        if negatives and suite != "zero_shot":
            for key, value in recipe["spn"]["negatives"].items():
                assert agrees(negatives[key], value), (method, dataset, key)
            assert plan["trains"] == recipe["spn"]["negatives"]["trains"]
        if spec["spn"].get("positives") and suite != "zero_shot":
            for key, value in recipe["spn"]["positives"].items():
                if key in ("name", "templates"):
                    continue
                assert agrees(spec["spn"]["positives"][key], value), (method, dataset, key)
        if suite == "zero_shot":
            assert spec["backbone"]["arch"] == "ViT-L-14"
            assert spec["method"]["params"]["use_combiner"] is False
            stage2 = (negatives["batch_size"], negatives["epochs"], negatives["lr"])
            assert stage2 == (128, 5, 2e-6)
        protocol = (recipe.get("dataset") or {}).get("protocol", "full_gallery")
        assert spec["dataset"]["protocol"] == protocol


def test_data_roots_name_the_missing_folder(tmp_path, reference_layout):
    roots = resolve_data_roots(str(reference_layout), ["fashioniq", "cirr"])
    assert roots["cirr"].name == "cirr_dataset" and roots["fashioniq"].name == "fashionIQ_dataset"
    given = [f"cirr={reference_layout / 'cirr_dataset'}", f"fashioniq={reference_layout}"]
    with pytest.raises(Exception, match=r"no FashionIQ folder .*fashioniq=DIR"):
        resolve_data_roots(given, ["fashioniq"])
    with pytest.raises(Exception, match=r"no CIRR folder"):
        resolve_data_roots(str(tmp_path), ["cirr"])


def test_dry_run_cli_prints_one_json_object_per_point(reference_layout, capsys):
    assert (
        main(["sweep", "table3_cirr", "--data-root", str(reference_layout), "--dry-run", "--json"])
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    records = [json.loads(line) for line in lines]
    points = {(r["spec"]["method"]["name"], r["composition"]) for r in records}
    assert points == {(m, c) for m in methods_with_bases() for c in ("none", "P+N")}
    assert len(records) % len(points) == 0  # every point at every seed
    assert {r["spec"]["dataset"]["format"] for r in records} == {"cirr"}
    assert all(r["spec"]["dataset"]["eval_split"] == "val" for r in records)
    assert set(list_suites()) >= {"table3_cirr"}
    assert SHARED_DATA.is_dir()


# ----------------------------------------------------------------------------- reports


def test_paper_tables_say_split_and_protocol_and_flag_what_differs(reference_layout):
    """Measured numbers (given here, as a finished sweep would have tracked them) beside
    the published ones: every row names its split and protocol; CIRR's published test1
    against a val run and TG-CIR's triplet-gallery baseline are marked, CLIP4CIR's
    drop_reference rows carry their full_gallery twin."""
    from bench.report.collect import TrackedPoint
    from bench.report.paper import load_published, paper_table
    from bench.runner.profiles import get_profile
    from bench.runner.suites import SuiteRun, load_suite

    published = load_published()
    assert published[("cirr", "SPRC", "P+N", "Rmean")].split == "test1"
    assert published[("fashioniq", "TG-CIR", "none", "Rmean")].protocol == "triplet_gallery"
    for name, dataset in (("table2_fashioniq", "fashioniq"), ("table3_cirr", "cirr")):
        run = SuiteRun(
            load_suite(name),
            get_profile("default"),
            resolve_data_roots(str(reference_layout), [dataset]),
            methods_override=("clip4cir", "tgcir"),
            seeds_override=(0, 1),  # two seeds: the cells carry a std
        )
        points = []
        for point in run.points():
            metrics = {c: 50.0 for c in get_format_columns(dataset)}
            if point.method == "clip4cir" and dataset == "fashioniq":
                metrics |= {f"full_gallery.{c}": 40.0 for c in get_format_columns(dataset)}
            points.append(TrackedPoint(point, run.spec(point).digest(), "run", metrics))
        table, *others = paper_table(run, points)
        # real data: the paper table and the methods compared (no synthetic published-gain)
        assert [t.name.endswith("_methods") for t in others] == [True]
        split, protocol = table.header.index("split"), table.header.index("protocol")
        rows = {(r[0], r[1]): r for r in table.rows}
        if dataset == "cirr":
            assert rows[("CLIP4CIR", "–")][split] == "val"
            assert rows[("CLIP4CIR", "– (published)")][split] == "test1 ≠ val"
            assert "published on test1, measured on val" in table.note
            continue
        assert rows[("CLIP4CIR", "–")][protocol] == "drop_reference"
        twin = rows[("CLIP4CIR", "– (full_gallery)")]
        assert twin[protocol] == "full_gallery" and twin[split + 2] == "40.00 ± 0.00"
        # the published CLIP4CIR baseline is full_gallery: the twin row is its match
        assert rows[("CLIP4CIR", "– (published)")][protocol] == "full_gallery"
        assert rows[("CLIP4CIR", "+P+N (published)")][protocol] == "drop_reference"
        assert rows[("TG-CIR", "– (published)")][protocol] == "triplet_gallery ≠ full_gallery"
        assert rows[("TG-CIR", "+P+N (published)")][protocol] == "full_gallery"
        assert "TG-CIR – published under triplet_gallery" in table.note


def get_format_columns(dataset: str) -> tuple[str, ...]:
    from bench.formats import get_format

    return get_format(dataset).report_columns


# ----------------------------------------------------------------------------- the recipe table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_recipe_table_is_the_generated_one():
    """The README's table is `cirbench recipes` output (regenerate it when a base file
    changes: the markers stay, the table between them is replaced)."""
    from bench.runner.recipes import recipe_markdown

    text = README.read_text()
    begin, end = "<!-- recipes:begin -->\n", "<!-- recipes:end -->"
    assert begin in text and end in text
    table = text[text.index(begin) + len(begin) : text.index(end)]
    assert table == recipe_markdown("real")


def _flags(command: str) -> dict[str, str | bool]:
    words, out = command.replace(";", " ").split(), {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            value = (
                words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else True
            )
            out[word[2:]] = value
    return out


@pytest.mark.parametrize("method", methods_with_bases())
def test_the_real_recipe_equals_the_reference_command_it_cites(method):
    """Each base file cites the SPN4CIR README commands of its `real` recipe; the values
    the suite resolves are the commands' flags (stage 2 and the positives builder)."""
    from bench.config.bases import method_references
    from bench.runner.recipes import recipe_spec
    from bench.spn.negatives import negatives_settings

    for dataset, command in method_references(method).items():
        builder, stage2 = command.split(";")[:2]
        flags, spec = _flags(stage2), recipe_spec(method, dataset, "real")
        loop, negatives = negatives_settings(spec), spec.spn.negatives
        assert (loop.batch_size, loop.epochs) == (
            int(flags["batch-size"]),
            int(flags["num-epochs"]),
        )
        assert loop.lr == pytest.approx(float(flags["learning-rate"]))
        assert negatives.tau == pytest.approx(float(flags["tau"]))
        assert flags["dataset"] == {"fashioniq": "fiq", "cirr": "cirr"}[dataset]
        gen, positives = _flags(builder), spec.spn.positives
        assert positives.only_train_references == ("refer" in gen), (dataset, "refer")
        assert (int(gen["K"]) if "K" in gen else None) == positives.K, (dataset, "K")
        if "i2i_rank" in gen:
            assert positives.mode == "window"
            assert (positives.rank_lo, positives.rank_hi) == (
                int(gen["i2i_rank"]),
                int(gen["i2i_rank_max"]),
            )
        else:
            assert positives.mode == "random"
        templates = {"2": ("target",), "0,1": ("instead", "unlike")}[str(gen.get("p_list", "0,1"))]
        assert positives.templates == tuple(resolve_template(t) for t in templates)
        if "word_num" in gen:
            assert positives.captioner_options["words"] == int(gen["word_num"])


def test_a_synthetic_size_block_applies_over_the_profile_and_its_dataset(tmp_path):
    """``synthetic.sizes.<size>`` (and its ``datasets`` entry) wins over the profile's block
    and its dataset entry, only for that size; a wrong size name or a size block on the
    real profile is an error naming the file."""
    from bench.config.base import SpecError

    (tmp_path / "m.yaml").write_text(
        "method: m\n"
        "synthetic:\n"
        "  train: {lr: 1.0e-3, epochs: 2}\n"
        "  datasets: {cirr: {train: {epochs: 4}}}\n"
        "  sizes:\n"
        "    compact:\n"
        "      train: {lr: 2.0e-4}\n"
        "      datasets: {cirr: {train: {epochs: 6}}}\n"
        "real: {train: {lr: 1.0e-5}}\n"
    )

    def train(dataset: str, size: str | None) -> dict:
        return method_base("m", "synthetic", dataset, tmp_path, synthetic_size=size)["train"]

    assert train("fashioniq", None) == {"lr": 1.0e-3, "epochs": 2}
    assert train("fashioniq", "small") == {"lr": 1.0e-3, "epochs": 2}
    assert train("cirr", "small") == {"lr": 1.0e-3, "epochs": 4}
    assert train("fashioniq", "compact") == {"lr": 2.0e-4, "epochs": 2}
    assert train("cirr", "compact") == {"lr": 2.0e-4, "epochs": 6}
    assert method_base("m", "real", "cirr", tmp_path)["train"] == {"lr": 1.0e-5}

    (tmp_path / "m.yaml").write_text("method: m\nsynthetic:\n  sizes: {medium: {}}\n")
    with pytest.raises(SpecError, match=r"m\.yaml: synthetic\.sizes: unknown sizes \['medium'\]"):
        method_base("m", "synthetic", "cirr", tmp_path)
    (tmp_path / "m.yaml").write_text("method: m\nreal:\n  sizes: {compact: {}}\n")
    with pytest.raises(SpecError, match="synthetic profile only"):
        method_base("m", "real", "cirr", tmp_path)
    (tmp_path / "m.yaml").write_text("method: m\nsynthetic:\n  sizes: {compact: {trian: {}}}\n")
    with pytest.raises(SpecError, match=r"synthetic\.sizes\.compact: unknown sections"):
        method_base("m", "synthetic", "cirr", tmp_path, synthetic_size="compact")
