"""BLIP4CIR+Bi (Candidate-Reranking-CIR stage I) on the hf-blip backbone family, tiny configs.

The SPN compositions of the method run in tests/test_spn.py (parametrised over every
method with experiments/methods/<name>.yaml).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from bench.backbones import BackboneError, load_backbone
from bench.backbones.blip import BlipCIRModel, map_blip_state_dict
from bench.backbones.tokenizers import BertTokenize
from methods import create_method
from methods.base import TrainBatch
from tests.conftest import cirbench_home

TEXTS = ["is red and has stripes", "a small blue circle instead of a square", "shorter", "dark"]


@pytest.fixture(scope="module", autouse=True)
def isolated_home(tmp_path_factory):
    yield from cirbench_home(tmp_path_factory)


def tiny_method(seed: int = 0, **params):
    backbone = load_backbone("hf-blip:tiny", "random", seed=seed)
    return create_method("blip4cir_bi", backbone, params)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def batch_of(method, n: int = 4) -> TrainBatch:
    with torch.no_grad():
        ref_tokens, ref_vecs = method.encode_images(images(n, 1))
        tgt_tokens, tgt_vecs = method.encode_images(images(n, 2))
    return TrainBatch(ref_tokens, tgt_vecs, tgt_tokens, ref_vecs, method.tokenize(TEXTS[:n]), [])


def test_encoders_shapes_groups_and_backward():
    method = tiny_method()
    assert method.paper_name == "BLIP4CIR+Bi" and method.name == "blip4cir_bi"
    ref, tgt = method.encode_images(images(3))
    assert ref.shape == (3, 1 + 8 * 8, 128)  # [CLS] + 8x8 patches, ViT width 128
    assert tgt.shape == (3, 128)
    assert torch.allclose(tgt.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(method.encode_reference(images(3)), ref)
    assert torch.allclose(method.encode_target(images(3)), tgt, atol=1e-6)
    query = method.encode_query(ref, method.tokenize(TEXTS[:3]))
    assert query.shape == (3, 128)
    assert torch.allclose(query.norm(dim=-1), torch.ones(3), atol=1e-5)
    # the text encoder cross-attends to the reference tokens
    other = method.encode_query(torch.roll(ref, 1, dims=0), method.tokenize(TEXTS[:3]))
    assert not torch.allclose(query, other)

    groups = method.parameter_groups()
    assert set(groups) == {"image_encoder", "text_encoder"}
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(method.parameters()))
    assert method.group_side("image_encoder") == "image"
    assert method.group_side("text_encoder") == "query"
    assert {id(p) for p in method.blip.vision_model.parameters()} <= {
        id(p) for p in groups["image_encoder"]
    }
    [phase] = method.phases
    assert phase.trains == ("text_encoder",) and phase.image_frozen(method)
    both = tiny_method(train_image_encoder=True)
    assert both.phases[0].trains == ("image_encoder", "text_encoder")
    assert not both.phases[0].image_frozen(both)

    loss = method.training_loss(batch_of(method))
    loss.backward()
    assert method.blip.text_encoder.encoder.layer[0].crossattention.self.key.weight.grad is not None
    assert method.blip.logit_scale.grad is not None
    assert all(p.grad is None for p in groups["image_encoder"])  # cached image features


def test_loss_hand_checked():
    method = tiny_method(reverse_loss_weight=0.5)
    with torch.no_grad():
        method.blip.logit_scale.fill_(math.log(10.0))
    # the contrastive loss itself: two queries on their own targets at scale 10
    eye = torch.eye(2)
    assert method.loss(eye, eye).item() == pytest.approx(math.log(1 + math.exp(-10)), abs=1e-6)
    # both queries on target 0: row 1 is wrong by 10 -> mean of log(1+e^-10), 10+log(1+e^-10)
    both = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    expected = 5 + math.log(1 + math.exp(-10))
    assert method.loss(both, eye).item() == pytest.approx(expected, rel=1e-5)

    # training_loss = forward InfoNCE + 0.5 * reversed InfoNCE, written out by hand
    method.eval()  # no dropout
    batch = batch_of(method, 3)
    with torch.no_grad():
        q = method.encode_query(batch.reference, batch.tokens)
        qr = method.encode_reversed_query(batch.target_reference, batch.tokens)

    def info_nce(queries: torch.Tensor, keys: torch.Tensor) -> float:
        total = 0.0
        for i in range(len(queries)):
            logits = [10.0 * float(queries[i] @ keys[j]) for j in range(len(keys))]
            total += math.log(sum(math.exp(v) for v in logits)) - logits[i]
        return total / len(queries)

    forward = info_nce(q, batch.target)
    reverse = info_nce(qr, batch.reference_target)
    assert method.training_loss(batch).item() == pytest.approx(forward + 0.5 * reverse, rel=1e-4)
    # the reversed query differs from the forward one on the same image (the prompt token)
    assert not torch.allclose(qr, method.encode_query(batch.target_reference, batch.tokens))
    # off by default: the loss is the forward term alone and no prompt parameter exists
    plain = tiny_method()
    plain.eval()
    assert plain.reverse_prompt is None
    assert "reverse_prompt" not in dict(plain.named_parameters())
    with torch.no_grad():
        plain.blip.logit_scale.fill_(math.log(10.0))
    with torch.no_grad():
        q_plain = plain.encode_query(batch.reference, batch.tokens)
    assert plain.training_loss(batch).item() == pytest.approx(
        info_nce(q_plain, batch.target), rel=1e-4
    )


def test_reverse_prompt_trains_with_the_query_side():
    method = tiny_method(reverse_loss_weight=0.4)
    assert any(p is method.reverse_prompt for p in method.parameter_groups()["text_encoder"])
    method.training_loss(batch_of(method)).backward()
    assert method.reverse_prompt.grad is not None and method.reverse_prompt.grad.abs().sum() > 0


def test_tokenizer_path_and_text_inputs():
    method = tiny_method()
    tokenizer = method.tokenizer
    assert isinstance(tokenizer, BertTokenize) and tokenizer.context_length == 35
    embeddings = method.blip.text_encoder.embeddings.word_embeddings
    assert embeddings.num_embeddings == tokenizer.vocab_size
    tokens = method.tokenize(TEXTS)
    assert tokens.shape == (4, 35) and tokens.dtype == torch.int64
    assert (tokens[:, 0] == tokenizer.token_id("[CLS]")).all()
    assert tokenizer.pad_id == 0 and (tokens[2, 5:] == 0).all()
    assert tokenizer.token_id("[UNK]") not in tokens.tolist()[0]
    ids, mask = method._text_inputs(tokens)
    lengths = (tokens != 0).sum(1)
    assert ids.shape[1] == int(lengths.max())  # cut to the longest text, as padding='longest'
    assert (ids[:, 0] == tokenizer.token_id("[ENC]")).all()
    assert mask.sum(1).tolist() == lengths.tolist()
    # the cut does not change the query (padding is masked)
    method.eval()
    ref = method.encode_reference(images(4))
    short = method.tokenize(TEXTS[2:])  # two short texts: cut to a few columns
    full = torch.cat([short, torch.zeros(2, 20, dtype=short.dtype)], dim=1)
    assert torch.allclose(
        method.encode_query(ref[2:], short), method.encode_query(ref[2:], full), atol=1e-6
    )


def test_state_dict_round_trip(tmp_path):
    method = tiny_method(seed=0, reverse_loss_weight=0.1)
    with torch.no_grad():
        method.reverse_prompt.add_(1.0)
        method.blip.logit_scale.fill_(3.3)
    torch.save({"model": method.state_dict()}, tmp_path / "m.pt")
    again = tiny_method(seed=5, reverse_loss_weight=0.1)
    again.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True)["model"])
    for (name, a), (_, b) in zip(
        method.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    method.eval()
    again.eval()
    batch = batch_of(method, 2)
    assert torch.equal(
        method.encode_query(batch.reference, batch.tokens),
        again.encode_query(batch.reference, batch.tokens),
    )
    assert torch.equal(method.encode_target(images(2)), again.encode_target(images(2)))


# ----------------------------------------------------------------------------- checkpoints

#: The inverse of the documented mapping, written out: this module's names -> BLIP / LAVIS.
TO_BLIP = (
    (r"^vision_model\.embeddings\.class_embedding$", "visual_encoder.cls_token"),
    (r"^vision_model\.embeddings\.position_embedding$", "visual_encoder.pos_embed"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual_encoder.patch_embed.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.", r"visual_encoder.blocks.\1.norm1."),
    (
        r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.",
        r"visual_encoder.blocks.\1.attn.qkv.",
    ),
    (
        r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.",
        r"visual_encoder.blocks.\1.attn.proj.",
    ),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.", r"visual_encoder.blocks.\1.norm2."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"visual_encoder.blocks.\1.mlp."),
    (r"^vision_model\.post_layernorm\.", "visual_encoder.norm."),
)


def blip_layout(model: BlipCIRModel, temp: float = 0.05) -> dict[str, torch.Tensor]:
    """The tiny model's weights renamed into the BLIP / LAVIS layout, with the extra keys a
    BLIP checkpoint carries (ITM head, momentum encoder, queues, position_ids, temp)."""
    out = {}
    for key, value in model.state_dict().items():
        if key == "logit_scale":
            continue
        for pattern, replacement in TO_BLIP:
            key = re.sub(pattern, replacement, key)
        out[key] = value.clone()
    out["temp"] = torch.tensor(temp)
    out["itm_head.weight"] = torch.zeros(2, 128)
    out["visual_encoder_m.cls_token"] = torch.zeros(1, 1, 128)
    out["text_queue"] = torch.zeros(128, 10)
    out["text_encoder.embeddings.position_ids"] = torch.arange(64)[None]
    return out


def perturbed_tiny_model(seed: int) -> BlipCIRModel:
    model = load_backbone("hf-blip:tiny", "random", seed=seed).model
    with torch.no_grad():
        for p in model.parameters():  # make every weight distinctive (LayerNorms are 1/0)
            p.add_(0.01 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("wrapper", ["candidate_reranking", "spn4cir", "blip"])
def test_blip_layout_checkpoints_load_through_the_key_mapping(tmp_path, wrapper):
    source = perturbed_tiny_model(seed=3)
    state = blip_layout(source, temp=0.05)
    if wrapper == "candidate_reranking":  # src/utils.py save_model: class name as the key
        checkpoint = {"epoch": 3, "BLIP_Retrieval": state, "optimizer_state_dict": {}}
    elif wrapper == "spn4cir":  # CIRPlus: the BLIP model under .blip, its stage-2 tau
        checkpoint = {"state_dict": {f"blip.{k}": v for k, v in state.items()}}
        checkpoint["state_dict"]["tau"] = torch.tensor(0.03)
    else:  # BLIP / LAVIS releases, DDP prefix
        checkpoint = {"model": {f"module.{k}": v for k, v in state.items()}}
    path = tmp_path / f"{wrapper}.pth"
    torch.save(checkpoint, path)
    backbone = load_backbone("hf-blip:tiny", str(path), seed=0)
    assert backbone.weights.startswith("hf-blip:tiny:file:")
    loaded = backbone.model.state_dict()
    for key, value in source.state_dict().items():
        if key == "logit_scale":
            assert loaded[key].item() == pytest.approx(math.log(1 / 0.05))
        else:
            assert torch.equal(loaded[key], value), key


def test_cirbench_layout_loads_and_position_embeddings_interpolate(tmp_path):
    source = perturbed_tiny_model(seed=4)
    torch.save({"model": source.state_dict(), "arch": "hf-blip:tiny"}, tmp_path / "pre.pt")
    loaded = load_backbone("hf-blip:tiny", str(tmp_path / "pre.pt")).model
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # a checkpoint trained on a 4x4 patch grid (32 px) meets the 8x8 grid of the model
    state = blip_layout(source)
    pos = torch.randn(1, 1 + 16, 128)
    state["visual_encoder.pos_embed"] = pos
    mapped = map_blip_state_dict(state, source)
    resized = mapped["vision_model.embeddings.position_embedding"]
    assert resized.shape == (1, 1 + 64, 128)
    assert torch.equal(resized[:, :1], pos[:, :1])  # [CLS] position kept


def test_mismatching_checkpoints_are_clear_errors(tmp_path):
    source = perturbed_tiny_model(seed=0)
    state = blip_layout(source)
    bad_shape = dict(state)
    bad_shape["vision_proj.weight"] = torch.zeros(64, 128)
    torch.save({"model": bad_shape}, tmp_path / "shape.pth")
    with pytest.raises(BackboneError, match=r"shape\.pth: checkpoint does not match.*vision_proj"):
        load_backbone("hf-blip:tiny", str(tmp_path / "shape.pth"))
    missing = {k: v for k, v in state.items() if not k.startswith("text_proj.")}
    torch.save({"model": missing}, tmp_path / "missing.pth")
    with pytest.raises(BackboneError, match=r"2 missing keys.*text_proj"):
        load_backbone("hf-blip:tiny", str(tmp_path / "missing.pth"))
    unknown = {**state, "visual_encoder.blocks.0.ls1.gamma": torch.ones(128)}
    torch.save({"model": unknown}, tmp_path / "unknown.pth")
    with pytest.raises(BackboneError, match=r"unknown meaning.*ls1\.gamma"):
        load_backbone("hf-blip:tiny", str(tmp_path / "unknown.pth"))
    torch.save({"visual.conv1.weight": torch.zeros(1)}, tmp_path / "clip.pt")
    with pytest.raises(BackboneError, match=r"clip\.pt: not a BLIP checkpoint"):
        load_backbone("hf-blip:tiny", str(tmp_path / "clip.pt"))
    with pytest.raises(BackboneError, match="not found"):
        load_backbone("hf-blip:tiny", str(tmp_path / "absent.pth"))


def test_transformers_folder_loads_with_from_pretrained(tmp_path):
    """``hf-blip:<folder>``: a BlipForImageTextRetrieval saved by transformers, with its
    tokenizer (the offline stand-in for a hub id such as Salesforce/blip-itm-base-coco)."""
    from transformers import BlipForImageTextRetrieval

    tiny = load_backbone("hf-blip:tiny", "random", seed=1)
    hf = BlipForImageTextRetrieval(tiny.model.config)
    hf.save_pretrained(tmp_path / "blip")
    tiny.tokenizer.tokenizer.save_pretrained(tmp_path / "blip")
    backbone = load_backbone(f"hf-blip:{tmp_path / 'blip'}", None)
    assert backbone.weights.endswith(":hf") and backbone.embed_dim == 128
    loaded = backbone.model.state_dict()
    for key, value in hf.state_dict().items():
        if not key.startswith("itm_head."):
            assert torch.equal(loaded[key], value), key
    assert backbone.tokenize(TEXTS).tolist() == tiny.tokenize(TEXTS).tolist()
    method = create_method("blip4cir_bi", backbone, {})
    reference = method.encode_reference(images(2))
    assert method.encode_query(reference, backbone.tokenize(TEXTS[:2])).shape == (2, 128)


def test_wrong_backbones_are_clear_errors(tmp_path):
    with pytest.raises(BackboneError, match="needs an hf-blip backbone"):
        create_method("blip4cir_bi", load_backbone("cirbench-tiny", "random"), {})
    with pytest.raises(BackboneError, match="BLIP model folder not found"):
        load_backbone(f"hf-blip:{tmp_path / 'absent'}", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="cannot load tokenizer"):
        load_backbone(f"hf-blip:{tmp_path / 'empty'}", None)


def test_pretraining_interface_matches_bench_pretrain():
    """bench/backbones/pretrain.py trains ``encode_image`` / ``encode_text`` / ``logit_scale``."""
    backbone = load_backbone("hf-blip:tiny", "random")
    model, tokens = backbone.model, backbone.tokenize(TEXTS)
    image_f = F.normalize(model.encode_image(images(4)), dim=-1)
    text_f = F.normalize(model.encode_text(tokens), dim=-1)
    logits = model.logit_scale.exp() * image_f @ text_f.t()
    assert logits.shape == (4, 4)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    logits.logsumexp(1).sum().backward()
    assert model.vision_proj.weight.grad is not None and model.text_proj.weight.grad is not None


def test_base_config_is_blip_vit_b():
    """``hf-blip:base`` has the shapes of Salesforce's model_base.pth / BLIP4CIR's model
    (built on the meta device: no memory, no download)."""
    from bench.backbones.blip import base_config
    from bench.backbones.tokenizers import bert_tokenizer

    with torch.device("meta"):
        model = BlipCIRModel(base_config(bert_tokenizer("cirbench-bert-tiny", 35)))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["vision_model.embeddings.position_embedding"] == (1, 1 + 24 * 24, 768)
    assert shapes["vision_model.embeddings.patch_embedding.weight"] == (768, 3, 16, 16)
    assert shapes["text_encoder.embeddings.word_embeddings.weight"] == (30524, 768)
    assert shapes["text_encoder.encoder.layer.11.crossattention.self.key.weight"] == (768, 768)
    assert shapes["vision_proj.weight"] == shapes["text_proj.weight"] == (256, 768)
    assert 223e6 < sum(v.numel() for v in model.state_dict().values()) < 225e6  # BLIP: 224M
