"""Positive scaling (P): captioners, dedup, matching, templates, writer, cached pipeline, CLI."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.backbones import load_backbone
from bench.cli.positives import register as register_cli
from bench.config import PositivesSpec
from bench.core.arrays import ArrayCache
from bench.core.errors import DataFormatError
from bench.formats.cirr import load_cirr_split
from bench.formats.fashioniq import load_fashioniq_split
from bench.formats.generated import read_generated
from bench.spn.positives.captioners import CaptionerError, make_captioner, read_journal
from bench.spn.positives.dedup import deduplicate
from bench.spn.positives.matching import match_pairs, window_targets
from bench.spn.positives.pipeline import build_positives
from bench.spn.positives.templates import TemplateComposer, compose, resolve_template
from bench.synthetic import describe, generate


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, size="tiny", progress=False)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> ArrayCache:
    return ArrayCache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("cirbench-tiny", None)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and do not stall when other processes load
    the CPU: two OpenMP threads then wait for each other on every small op)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _meta(synth: Path, dataset: str) -> dict:
    return json.loads((synth / dataset / "metadata" / "images.json").read_text())


def _fiq_paths(synth: Path, names: list[str]) -> dict[str, Path]:
    return {n: synth / "fashioniq" / "images" / f"{n}.png" for n in names}


def _cirr_paths(synth: Path) -> dict[str, Path]:
    mapping = {}
    for split in ("train", "val"):
        split_map = json.loads(
            (synth / "cirr/image_splits" / f"split.rc2.{split}.json").read_text()
        )
        mapping.update({n: (synth / "cirr" / p).resolve() for n, p in split_map.items()})
    return mapping


def _spec(**kw) -> PositivesSpec:
    base = {"backbone": {"pretrained": "random"}, "rank_lo": 5, "rank_hi": 60}
    return PositivesSpec.model_validate({**base, **kw})


# --------------------------------------------------------------------------- captioners


def test_oracle_without_noise_gives_the_ground_truth_descriptions(synth):
    fiq = _meta(synth, "fashioniq")
    names = sorted(fiq)[:60]
    captions = make_captioner("oracle", progress=False).caption(names, _fiq_paths(synth, names))
    assert captions == {n: fiq[n]["description"] for n in names}
    cirr = _meta(synth, "cirr")
    paths = _cirr_paths(synth)
    names = sorted(paths)[:60]  # train/<k>/ and dev/ folders: metadata found by walking up
    captions = make_captioner("oracle", progress=False).caption(names, paths)
    assert captions == {n: cirr[n]["description"] for n in names}
    assert all(c == describe(cirr[n]["attributes"]) for n, c in captions.items())


def test_oracle_noise_changes_some_captions_reproducibly(synth):
    fiq, cirr = _meta(synth, "fashioniq"), _meta(synth, "cirr")
    fiq_names = sorted(fiq)[:300]
    paths = {**_fiq_paths(synth, fiq_names), **_cirr_paths(synth)}
    cirr_names = sorted(_cirr_paths(synth))[:300]
    names = fiq_names + cirr_names
    truth = {n: (fiq.get(n) or cirr[n])["description"] for n in names}
    noisy = make_captioner("oracle", noise=0.4, seed=1, progress=False).caption(names, paths)
    changed = [n for n in names if noisy[n] != truth[n]]
    assert 0.28 < len(changed) / len(names) < 0.52
    assert any(n in changed for n in fiq_names) and any(n in changed for n in cirr_names)
    again = make_captioner("oracle", noise=0.4, seed=1, progress=False).caption(names[::-1], paths)
    assert again == noisy  # seeded per image: order and batch do not matter
    other = make_captioner("oracle", noise=0.4, seed=2, progress=False).caption(names, paths)
    assert other != noisy
    with pytest.raises(CaptionerError, match="noise"):
        make_captioner("oracle", noise=1.5)


def test_file_captioner_reads_spn_records_and_names_bad_records(synth, tmp_path):
    names = ["fiq-dress-000000", "fiq-dress-000001"]
    paths = _fiq_paths(synth, names)
    spn = tmp_path / "fashioniq_it_llava_5.json"  # the SPN authors' released layout
    spn.write_text(
        json.dumps(
            [
                {"image_id": n, "caption": f"a dress number {i}", "image_path": str(paths[n])}
                for i, n in enumerate(names)
            ]
        )
    )
    captioner = make_captioner("file", path=spn, words=3, progress=False)
    assert captioner.caption(names, paths) == {
        names[0]: "a dress number",
        names[1]: "a dress number",
    }
    mapping = tmp_path / "captions.json"
    mapping.write_text(json.dumps({names[0]: "red.", names[1]: "blue"}))
    assert make_captioner("file", path=mapping, progress=False).caption(names, paths) == {
        names[0]: "red",
        names[1]: "blue",
    }
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps([{"image_id": names[0], "caption": "x"}, {"image_id": names[1], "caption": 3}])
    )
    with pytest.raises(
        DataFormatError, match=r"bad\.json: record 1: field 'caption': expected a string"
    ):
        make_captioner("file", path=bad)
    bad.write_text(json.dumps([{"caption": "x"}]))
    with pytest.raises(DataFormatError, match=r"record 0: field 'image_id': missing field"):
        make_captioner("file", path=bad)
    short = tmp_path / "short.json"
    short.write_text(json.dumps({names[0]: "red"}))
    with pytest.raises(DataFormatError, match=r"short\.json.*no 'caption' for 1 of the 2"):
        make_captioner("file", path=short, progress=False).caption(names, paths)
    with pytest.raises(CaptionerError, match="bad options"):
        make_captioner("file", path=short, colour="red")


def _tiny_blip(folder: Path) -> Path:
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    words = ["a", "the", "red", "blue", "green", "dress", "shirt", "small", "large"]
    words += ["circle", "square", "striped", "on", "left", "of"]
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizer(str(vocab))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    small = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    config = BlipConfig(
        vision_config={**small, "image_size": 32, "patch_size": 8},
        text_config={
            **small,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.bos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "sep_token_id": tokenizer.sep_token_id,
        },
        projection_dim=32,
    )
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_hf_captioner_with_a_tiny_random_blip_resumes_after_an_interruption(
    synth, tmp_path, one_thread
):
    model = _tiny_blip(tmp_path / "tiny-blip")
    names = [f"fiq-dress-{i:06d}" for i in range(6)]
    paths = _fiq_paths(synth, names)
    journal = tmp_path / "captions.jsonl"
    options = {
        "model": str(model),
        "words": 3,
        "batch_size": 2,
        "prompt_style": "none",
        "progress": False,
    }
    first = make_captioner("hf", **options)
    real_generate = first.model.generate
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run dies during its second batch
        return real_generate(*args, **kwargs)

    first.model.generate = interrupted
    with pytest.raises(KeyboardInterrupt):
        first.caption(names, paths, category="dress", journal=journal)
    done = read_journal(journal)
    assert sorted(done) == names[:2]
    resumed = make_captioner("hf", **options)
    captions = resumed.caption(names, paths, category="dress", journal=journal)
    assert resumed.calls == 2  # the 4 remaining images, 2 per batch; batch 1 not redone
    assert {n: captions[n] for n in names[:2]} == {n: done[n][1] for n in names[:2]}
    assert all(isinstance(c, str) and 0 < len(c.split()) <= 3 for c in captions.values())
    assert sorted(read_journal(journal)) == names
    again = make_captioner("hf", **options)
    assert again.caption(names, paths, category="dress", journal=journal) == captions
    assert again.calls == 0 and again._model is None  # nothing to do: the model is not loaded
    prefixed = make_captioner("hf", **{**options, "prompt_style": "prefix", "prompt": "a red"})
    assert prefixed.caption(names[:2], paths)  # the prompt is a prefix the model continues
    assert make_captioner("hf", model=str(model)).prompt_template("dress") == (
        "please briefly describe the dress in 10 words"
    )
    assert make_captioner("hf", model=str(model), words=4).prompt_template(None) == (
        "please briefly describe the image in 4 words"
    )


def _tiny_llava(folder: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    folder.mkdir(parents=True, exist_ok=True)
    words = "<pad> <unk> <s> </s> <image> USER: ASSISTANT: please briefly describe the image"
    words += " dress in 5 words a red blue"
    vocab = {w: i for i, w in enumerate(words.split())}
    model = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=model,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    chat = (
        "{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
        "<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=chat,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        ),
        image_token_index=vocab["<image>"],
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_hf_captioner_chat_path_with_a_tiny_random_llava(synth, tmp_path, one_thread):
    model = _tiny_llava(tmp_path / "tiny-llava")
    names = [f"fiq-dress-{i:06d}" for i in range(3)]
    captioner = make_captioner(
        "hf", model=str(model), words=None, max_new_tokens=3, batch_size=2, progress=False
    )
    captions = captioner.caption(names, _fiq_paths(synth, names), category="dress")
    assert captioner._style == "chat"  # the processor's chat template was found
    assert captioner.prompt_template("dress") == "please briefly describe the dress"
    # the prompt (13 words) is cut off: only the <= 3 generated tokens remain
    assert all(len(c.split()) <= 3 for c in captions.values()) and captioner.calls == 2


# --------------------------------------------------------------------------- dedup


def test_dedup_removes_planted_duplicates_and_keeps_the_first():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 32)).astype(np.float32)
    x[10] = x[3] + 1e-3 * rng.standard_normal(32)
    x[50] = x[3]
    x[70] = x[20] + 1e-3 * rng.standard_normal(32)
    x[90] = x[70]  # a duplicate of a removed image whose first look-alike is kept
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    names = [f"img{i:03d}" for i in range(120)]
    result = deduplicate(names, x, 0.999, block=16)
    assert result.removed == {
        "img010": "img003",
        "img050": "img003",
        "img070": "img020",
        "img090": "img020",
    }
    assert result.kept == [n for n in names if n not in result.removed]
    assert deduplicate(names, x, 0.999).as_dict() == result.as_dict()
    assert deduplicate(names, x, 1.0).removed == {}
    with pytest.raises(ValueError, match="names but"):
        deduplicate(names[:3], x, 0.9)


# --------------------------------------------------------------------------- matching


def _brute_ranks(x: np.ndarray) -> np.ndarray:
    scores = x @ x.T
    np.fill_diagonal(scores, np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(len(x))[None, :].repeat(len(x), 0), axis=1)
    return ranks


@pytest.mark.parametrize(("lo", "hi", "k"), [(10, 80, 3), (1, 2, 1), (250, None, 4), (40, 41, 2)])
def test_window_targets_lie_in_the_rank_window_of_a_full_sort(lo, hi, k):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ranks = _brute_ranks(x)
    queries = np.arange(300)
    targets = window_targets(x, queries, rank_lo=lo, rank_hi=hi, k=k, seed=3, block=64)
    width = (hi or 300) - lo
    assert targets.shape == (300, min(k, width))
    got = np.take_along_axis(ranks, targets, axis=1)
    assert ((got >= lo) & (got < (hi or 300))).all()
    assert all(len(set(row)) == targets.shape[1] for row in targets)
    same = window_targets(x, queries, rank_lo=lo, rank_hi=hi, k=k, seed=3, block=300)
    assert (same == targets).all()  # the draw does not depend on the block size
    if width > 10:  # uniform over the window: the mean rank is near the middle
        assert abs(got.mean() - (lo + (hi or 300) - 1) / 2) < 0.1 * width
        other = window_targets(x, queries, rank_lo=lo, rank_hi=hi, k=k, seed=4)
        assert (other != targets).mean() > 0.5


def test_matching_options_and_errors():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    refs = np.array([5, 17, 99])
    pairs = match_pairs(
        200, mode="window", k=2, seed=0, embeddings=x, rank_lo=3, rank_hi=30, references=refs
    )
    assert pairs.shape == (6, 2) and sorted(set(pairs[:, 0])) == [5, 17, 99]
    random_pairs = match_pairs(200, mode="random", k=3, seed=0)
    assert random_pairs.shape == (600, 2) and (random_pairs[:, 0] != random_pairs[:, 1]).all()
    assert (match_pairs(200, mode="random", k=3, seed=0) == random_pairs).all()
    assert len({tuple(p) for p in random_pairs}) == 600
    with pytest.raises(ValueError, match="beyond a pool of 200 images"):
        match_pairs(200, mode="window", k=1, seed=0, embeddings=x, rank_lo=200, rank_hi=300)
    with pytest.raises(ValueError, match="rank 0 is the reference"):
        match_pairs(200, mode="window", k=1, seed=0, embeddings=x, rank_lo=0)


# --------------------------------------------------------------------------- templates


def test_templates_render_the_paper_texts_reproducibly():
    assert compose("{target} instead of {reference}", "a red dress.", "a blue dress") == (
        "a blue dress instead of a red dress"
    )
    assert compose(resolve_template("unlike"), "a red dress", "a blue dress") == (
        "Unlike a red dress, I want a blue dress"
    )
    assert compose(resolve_template("target"), "a red dress", "a blue dress") == "a blue dress"
    pairs = [(f"ref {i}", f"tgt {i}") for i in range(200)]
    composer = TemplateComposer(["instead", "unlike", "target"], seed=5)
    out = composer.compose_all(pairs)
    assert out == TemplateComposer(["instead", "unlike", "target"], seed=5).compose_all(pairs)
    assert {c.template for c in out} == {0, 1, 2}
    assert all(c.alternative != c.text for c in out)
    assert out != TemplateComposer(["instead", "unlike", "target"], seed=6).compose_all(pairs)
    single = TemplateComposer(["target"]).compose_all(pairs[:3])
    assert [(c.text, c.alternative) for c in single] == [(f"tgt {i}", f"tgt {i}") for i in range(3)]
    with pytest.raises(ValueError, match="must contain"):
        resolve_template("{reference} only")
    with pytest.raises(ValueError, match="unknown fields"):
        resolve_template("{target} with {colour}")


# --------------------------------------------------------------------------- pipeline


def _descriptions(synth: Path) -> dict[str, str]:
    out = {}
    for dataset in ("fashioniq", "cirr", "pool"):
        out.update({n: m["description"] for n, m in _meta(synth, dataset).items()})
    return out


def test_build_fashioniq_in_domain_files_read_by_the_official_reader(synth, cache, backbone):
    spec = _spec(name="fiq_in", k=2, K=100, only_train_references=True, seed=3)
    result = build_positives(
        synth / "fashioniq", "fashioniq", spec, cache=cache, backbone=backbone, progress=False
    )
    assert len(result.triplets) == 100  # K caps the 2 x references pairs
    desc = _descriptions(synth)
    for category in ("dress", "shirt", "toptee"):
        human = load_fashioniq_split(synth / "fashioniq", category, "train")
        train_refs = {q.reference for q in human.queries}
        split = load_fashioniq_split(
            synth / "fashioniq",
            category,
            "train",
            captions_file=f"cap.{category}.extend_fiq_in.train.json",
        )
        mine = [t for t in result.triplets if t.category == category]
        assert len(split.queries) == len(mine) > 0 and not split.findings
        assert {q.reference for q in split.queries} <= train_refs  # only_train_references
        for query, t in zip(split.queries, mine, strict=True):
            assert (query.reference, query.target) == (t.reference, t.target)
            ref, tgt = desc[t.reference], desc[t.target]
            assert set(query.captions) == {f"{tgt} instead of {ref}", f"Unlike {ref}, I want {tgt}"}
            assert t.text == query.captions[0] and t.source == f"{category}/extend_fiq_in"
    records = json.loads((synth / "fashioniq/captions/cap.extend_fiq_in.train.json").read_text())
    assert len(records) == 100 and set(records[0]) == {
        "candidate",
        "target",
        "captions",
        "caption1",
        "caption2",
        "category",
    }
    prov = json.loads(
        (synth / "fashioniq/captions/cap.extend_fiq_in.train.provenance.json").read_text()
    )
    assert prov["captioner"] == {
        "kind": "oracle",
        "words": None,
        "noise": 0.0,
        "seed": 0,
        "metadata": [],
    }
    assert prov["backbone"]["weights"] == "cirbench-tiny:random:seed=0"
    assert prov["matching"] == {
        "mode": "window",
        "rank_lo": 5,
        "rank_hi": 60,
        "k": 2,
        "K": 100,
        "only_train_references": True,
    }
    assert prov["templates"] == [
        "{target} instead of {reference}",
        "Unlike {reference}, I want {target}",
    ]
    assert prov["seed"] == 3 and prov["pool"]["kind"] == "train"
    groups = prov["counts"]["groups"]
    assert prov["counts"]["pairs_before_cap"] == sum(g["pairs"] for g in groups.values())
    assert all(g["pairs"] == 2 * g["references"] for g in groups.values())
    assert sum(g["triplets"] for g in groups.values()) == prov["counts"]["triplets"] == 100
    triplets, paths = read_generated(synth / "fashioniq", "fashioniq", "fiq_in")
    assert triplets == result.triplets and all(p.is_file() for p in paths.values())


def test_build_cirr_in_domain_read_by_the_official_reader(synth, cache, backbone):
    spec = _spec(name="cirr_in", templates=["instead"])
    result = build_positives(
        synth / "cirr", "cirr", spec, cache=cache, backbone=backbone, progress=False
    )
    split = load_cirr_split(
        synth / "cirr", "train", captions_file="cap.rc2.train.extend_cirr_in.json"
    )
    assert len(split.queries) == len(result.triplets) == 216 and not split.findings
    human = load_cirr_split(synth / "cirr", "train")
    max_human = max(int(q.query_id) for q in human.queries)
    assert min(int(q.query_id) for q in split.queries) > max_human
    desc = _descriptions(synth)
    t = result.triplets[0]
    assert t.text == f"{desc[t.target]} instead of {desc[t.reference]}"
    assert set(result.image_paths) == {n for t in result.triplets for n in (t.reference, t.target)}


def test_build_out_of_domain_pool_places_images_and_writes_split_files(synth, cache, backbone):
    for fmt in ("fashioniq", "cirr"):
        spec = _spec(name="ood", pool="pool", rank_lo=2, rank_hi=20, templates=["target"])
        result = build_positives(
            synth / fmt, fmt, spec, cache=cache, backbone=backbone, progress=False
        )
        assert result.triplets and all(t.reference.startswith("pool-") for t in result.triplets)
        assert "image_split" in result.files
        assert all(p.is_file() and synth / fmt in p.parents for p in result.image_paths.values())
        if fmt == "fashioniq":
            for category in ("dress", "shirt", "toptee"):
                split = load_fashioniq_split(synth / fmt, category, "extend_ood.train")
                assert len(split.queries) == sum(
                    1 for t in result.triplets if t.category == category
                )
                assert split.queries[0].captions[0] == _descriptions(synth)[split.queries[0].target]
            names = json.loads(
                (synth / fmt / "image_splits/split.extend_ood.train.json").read_text()
            )
            assert set(names) == set(result.image_paths)
        else:
            split = load_cirr_split(synth / fmt, "train.extend_ood")
            assert len(split.queries) == len(result.triplets) and not split.findings
            mapping = json.loads(
                (synth / fmt / "image_splits/split.rc2.train.extend_ood.json").read_text()
            )
            assert all(p.startswith("./extend_ood/") for p in mapping.values())
        prov = result.provenance
        assert prov["pool"] == {"kind": "pool", "path": str((synth / "pool").resolve())}
        assert prov["images_placed"] == len(result.image_paths)


def test_folder_pool_with_explicit_oracle_metadata(synth, cache, backbone, tmp_path):
    folder = tmp_path / "my-images"
    folder.mkdir()
    for source in sorted((synth / "pool/images").glob("pool-cirr-*.png"))[:30]:
        shutil.copy(source, folder / source.name)
    spec = _spec(
        name="folder",
        pool=str(folder),
        mode="random",
        captioner_options={"metadata": [str(synth / "pool/metadata/images.json")]},
    )
    result = build_positives(
        synth / "cirr", "cirr", spec, cache=cache, backbone=backbone, progress=False
    )
    assert len(result.triplets) == 30 and result.provenance["backbone"] is None  # no embeddings
    assert result.provenance["pool"]["kind"] == "folder"
    assert all(t.reference != t.target for t in result.triplets)
    with pytest.raises(ValueError, match="only_train_references needs pool: train"):
        _spec(pool=str(folder), only_train_references=True)


def test_second_build_does_no_work_and_a_new_window_recomputes_from_matching(
    synth, backbone, tmp_path, capsys
):
    cache = ArrayCache(tmp_path / "cache")
    spec = _spec(name="cached", dedup_threshold=0.9999)
    kwargs = {"cache": cache, "backbone": backbone, "progress": False}
    first = build_positives(synth / "cirr", "cirr", spec, **{**kwargs, "progress": True})
    assert set(first.steps.values()) == {"computed"}
    # the one-off generation is announced (what and why), never silent
    assert "cirbench: generating the positive triplets 'cached'" in capsys.readouterr().err
    caption_file = synth / "cirr/captions/cap.rc2.train.extend_cached.json"
    mtime = caption_file.stat().st_mtime_ns
    misses = cache.stats.misses
    second = build_positives(synth / "cirr", "cirr", spec, **{**kwargs, "progress": True})
    assert set(second.steps.values()) == {"cached"}
    assert "generating the positive triplets" not in capsys.readouterr().err  # nothing new
    assert cache.stats.misses == misses and caption_file.stat().st_mtime_ns == mtime
    assert second.triplets == first.triplets
    moved = build_positives(
        synth / "cirr", "cirr", spec.model_copy(update={"rank_lo": 10}), **kwargs
    )
    assert moved.steps == {
        "embeddings": "cached",
        "dedup": "cached",
        "captions": "cached",
        "match": "computed",
        "write": "computed",
    }
    assert moved.triplets != first.triplets


def test_cli_runs_each_step_alone_and_the_whole_build(synth, cache, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="cirbench")
    register_cli(parser.add_subparsers(dest="command", required=True))
    spec = tmp_path / "positives.yaml"
    spec.write_text("name: cli\nbackbone: {pretrained: random}\nrank_lo: 3\nrank_hi: 30\n")
    common = ["--spec", str(spec), "--format", "cirr", "--root", str(synth / "cirr")]
    common += ["--cache", str(cache.root), "--quiet", "--set", "captioner_options.noise=0.2"]
    for step in ("caption", "dedup", "match"):
        out = tmp_path / f"{step}.json"
        args = parser.parse_args(["positives", step, *common, "--out", str(out)])
        assert args.handler(args) == 0
        assert json.loads(out.read_text())
    captions = json.loads((tmp_path / "caption.json").read_text())
    assert {"image_id", "caption", "category"} == set(captions[0]) and len(captions) == 216
    matched = json.loads((tmp_path / "match.json").read_text())
    assert len(matched) == 216 and set(matched[0]) == {"reference", "target", "category"}
    capsys.readouterr()
    args = parser.parse_args(["positives", "build", *common])
    assert args.handler(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["triplets"] == 216 and summary["steps"]["match"] == "cached"
    prov = json.loads(
        (synth / "cirr/captions/cap.rc2.train.extend_cli.provenance.json").read_text()
    )
    assert prov["captioner"]["noise"] == 0.2
