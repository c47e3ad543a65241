"""SPRC and the hf-blip2 backbone family on the tiny random BLIP-2 (real transformers code)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from bench.backbones import BackboneError, load_backbone
from bench.backbones.blip2 import CONTEXT_LENGTH, EXTRAS_ATTR, TINY_EMBED_DIM
from bench.backbones.lavis_keys import hf_key_to_lavis, hf_to_lavis, lavis_key_to_hf, lavis_to_hf
from bench.train.engine import plan_phases
from bench.train.loop import set_trainable
from methods import create_method
from methods.base import TrainBatch
from methods.sprc import Sprc, contrastive_loss, prompt_alignment_loss
from tests.conftest import cirbench_home

ARCH = "hf-blip2:tiny"
TEXTS = ["is red and longer", "has stripes", "is blue instead of green", "a bigger circle"]


@pytest.fixture(scope="module", autouse=True)
def isolated_home(tmp_path_factory):
    yield from cirbench_home(tmp_path_factory)


def make(seed: int = 0, pretrained=None, **params) -> Sprc:
    method = create_method("sprc", load_backbone(ARCH, pretrained, seed=seed), params)
    assert isinstance(method, Sprc)
    return method.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def outputs(method: Sprc, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        reference, target = method.encode_images(images)
        query = method.encode_query(reference, method.tokenize(TEXTS))
    return reference, target, query


def batch_of(method: Sprc, images: torch.Tensor) -> TrainBatch:
    both = torch.cat([images, images.flip(0)])
    reference, target = method.encode_images(both)
    n = len(images)
    return TrainBatch(
        reference[:n], target[n:], reference[n:], target[:n], method.tokenize(TEXTS), TEXTS
    )


# ----------------------------------------------------------------------------- backbone


def test_tiny_backbone():
    backbone = load_backbone(ARCH, "random", seed=0)
    model = backbone.model
    assert backbone.embed_dim == TINY_EMBED_DIM and backbone.context_length == CONTEXT_LENGTH == 32
    assert model.config.qformer_config.vocab_size == backbone.tokenizer.vocab_size
    assert backbone.tokenizer(["a red dress"]).shape == (1, 32)
    assert backbone.transform.size == 64
    # LAVIS-style query tokens: random, not transformers' zeros (identical tokens stay so)
    assert model.query_tokens.std() > 0.01
    assert getattr(model, EXTRAS_ATTR) == {}
    assert backbone.weights == "hf-blip2:tiny:random:seed=0"


def test_backbone_errors(monkeypatch, tmp_path):
    import huggingface_hub.constants

    with pytest.raises(BackboneError, match="no published weights"):
        load_backbone(ARCH, "hf")
    with pytest.raises(BackboneError, match="checkpoint file not found"):
        load_backbone(ARCH, str(tmp_path / "missing.pth"))
    with pytest.raises(BackboneError, match="no such model folder"):
        load_backbone("hf-blip2:/nonexistent/blip2-folder", "hf")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BackboneError, match="local folder"):
        load_backbone("hf-blip2:Salesforce/blip2-itm-vit-g", "hf")
    with pytest.raises(BackboneError, match="needs a BLIP-2 backbone"):
        create_method("sprc", load_backbone("cirbench-tiny", "random"), {})


# ----------------------------------------------------------------------------- forward


def test_forward_backward_shapes_and_groups(images):
    method = make()
    reference, target, query = outputs(method, images)
    assert reference.shape == (4, 65, 128)  # ln_vision(ViT): class token + 8 x 8 patches
    n = method.blip2.config.num_query_tokens
    assert target.shape == (4, n, TINY_EMBED_DIM)  # a token set per image, scored by its best
    assert query.shape == (4, TINY_EMBED_DIM)
    assert torch.allclose(target.norm(dim=-1), torch.ones(4, n), atol=1e-5)
    assert torch.allclose(query.norm(dim=-1), torch.ones(4), atol=1e-5)
    # stage 1 trains the shared Q-Former, the text projection and the prompt; not the ViT
    # and not the query offset (so both Q-Former passes share their weights)
    set_trainable(method, method.phases[0])
    method.train()
    loss = method.training_loss(batch_of(method, images))
    loss.backward()
    groups = method.parameter_groups()
    for name in ("qformer", "text_projection", "prompt"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups[name]), name
    assert all(p.grad is None for p in groups["query_offset"])
    assert all(p.grad is None for p in method._vit_parameters())
    assert method.blip2.vision_model.encoder.training is False  # frozen ViT stays in eval
    # every trainable parameter in exactly one group
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids))


def test_encode_matches_the_sprc_passes(images):
    """The reference is the ViT output; the query is SPRC's two Q-Former passes."""
    method = make()
    model = method.blip2
    tokens = method.tokenize(TEXTS)
    reference, target, query = outputs(method, images)
    with torch.no_grad():
        assert torch.allclose(reference, model.vision_model(pixel_values=images)[0], atol=1e-6)
        n = model.config.num_query_tokens
        queries = model.query_tokens.expand(4, -1, -1)
        mask = torch.cat([torch.ones(4, n, dtype=torch.long), (tokens != 0).long()], 1)
        fused = model.qformer(
            query_embeds=model.embeddings(input_ids=tokens, query_embeds=queries),
            query_length=n,
            attention_mask=mask,
            encoder_hidden_states=reference,
        ).last_hidden_state[:, :n]
        second = model.qformer(
            query_embeds=model.embeddings(input_ids=tokens, query_embeds=fused),
            query_length=0,
            attention_mask=mask,
        ).last_hidden_state
        expected = F.normalize(model.text_projection(second[:, n]), dim=-1)
        assert torch.allclose(query, expected, atol=1e-5)
        states = model.qformer(query_embeds=queries, encoder_hidden_states=reference)
        tokens_out = F.normalize(model.vision_projection(states.last_hidden_state), dim=-1)
        assert torch.allclose(target, tokens_out, atol=1e-5)


def test_prompt_sequence_layout():
    method = make()
    tokens = method.tokenize(TEXTS)
    emb = method.blip2.embeddings
    with torch.no_grad():
        sequence = method.prompt_sequence(tokens)
        p = method.prompt_tokens.shape[1]
        assert sequence.shape == (4, 32 + p, 128)
        positions = emb.position_embeddings.weight[: 32 + p]
        words = emb.word_embeddings(tokens)
        assert torch.allclose(sequence[:, 0], words[:, 0] + positions[0])  # [CLS]
        assert torch.allclose(sequence[:, 1 : 1 + p], method.prompt_tokens + positions[1 : 1 + p])
        assert torch.allclose(sequence[:, 1 + p :], words[:, 1:] + positions[1 + p :])


def test_trimming_padding_changes_nothing(images):
    method = make()
    reference, _, query = outputs(method, images)
    tokens = method.tokenize(TEXTS)
    assert method.trim(tokens).shape[1] < tokens.shape[1]
    with torch.no_grad():
        full = method.query_features(method.fuse(reference, tokens), tokens)
    assert torch.allclose(query, full, atol=1e-5)


# ----------------------------------------------------------------------------- losses


def test_contrastive_loss_hand_checked():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # temp 1: logits [[1, 0], [0, 1]] -> each row -log(e / (e + 1)) = log(1 + 1/e)
    assert contrastive_loss(features, features, torch.tensor(1.0)).item() == pytest.approx(
        math.log(1 + math.exp(-1)), rel=1e-6
    )
    # temp 0.5 and a wrong pair in row 2: logits [[2, 0], [2, 0]] (label 1 in row 2)
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    query = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))) / 2
    assert contrastive_loss(query, targets, torch.tensor(0.5)).item() == pytest.approx(expected)
    # token sets: each target scores by its best token ([1, 0] of target 0, [0, 1] of 1)
    sets = torch.tensor([[[1.0, 0.0], [0.0, -1.0]], [[-1.0, 0.0], [0.0, 1.0]]])
    assert contrastive_loss(features, sets, torch.tensor(1.0)).item() == pytest.approx(
        math.log(1 + math.exp(-1)), rel=1e-6
    )


def test_prompt_alignment_loss_hand_checked():
    fused = torch.tensor([[[1.0, 3.0], [3.0, 1.0]], [[0.0, 0.0], [2.0, 2.0]]], requires_grad=True)
    prompt = torch.tensor([[[1.0, 1.0], [1.0, 3.0], [1.0, 2.0]]], requires_grad=True)
    # token means: fused rows [2, 2] and [1, 1]; prompt [1, 2] -> squared errors 1, 0, 0, 1
    loss = prompt_alignment_loss(fused, prompt)
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    assert prompt.grad is None and fused.grad is not None  # the prompts are detached


def test_loss_terms_and_weights(images):
    method = make(rtc_weight=0.4, align_weight=0.4, temperature=0.05)
    batch = batch_of(method, images)
    with torch.no_grad():
        terms = method.loss_terms(batch)
        query = method.encode_query(batch.reference, batch.tokens)
        prompt = method.prompt_features(method.trim(batch.tokens))
        fused = method.fuse(batch.reference, method.trim(batch.tokens))
        labels = torch.arange(4)

        # SPRC: sim_t2q.max(-1), the best of each target's query tokens
        def best(features):
            return torch.einsum("bd,ntd->bnt", features, batch.target).max(-1).values

        itc = F.cross_entropy(best(query) / 0.05, labels)
        rtc = F.cross_entropy(best(prompt) / 0.05, labels)
        align = ((fused.mean(1) - method.prompt_tokens.mean(1)) ** 2).mean()
        assert terms["itc"].item() == pytest.approx(itc.item(), rel=1e-5)
        assert terms["rtc"].item() == pytest.approx(rtc.item(), rel=1e-5)
        assert terms["align"].item() == pytest.approx(align.item(), rel=1e-5)
        total = method.training_loss(batch).item()
    assert total == pytest.approx(itc.item() + 0.4 * rtc.item() + 0.4 * align.item(), rel=1e-5)


# ----------------------------------------------------------------------------- SPN stage 2


def test_query_offset_is_the_stage2_copy(images):
    """Bank stage: only the Q-Former's query copy and the text projection train (SPN's
    init_stage2: Qformer_query + text_proj_q; the prompt tokens stay frozen); the text pass
    runs shared + offset weights, i.e. a trainable copy of the Q-Former that starts equal."""
    from bench.config import parse_spec

    method = make()
    spec = parse_spec(
        {
            "name": "sprc-plan",
            "dataset": {"format": "fashioniq", "synthetic_size": "tiny"},
            "backbone": {"arch": ARCH, "pretrained": "random"},
            "method": {"name": "sprc"},
            "spn": {"negatives": {}},
        }
    )
    [planned] = plan_phases(spec, method)
    phase, cfg = planned.phase, planned.settings
    assert set(phase.trains) == {"query_offset", "text_projection"}
    assert phase.image_frozen(method)
    # the synthetic FashionIQ bank stage of experiments/methods/sprc.yaml: the batch is the
    # reference's, epochs and lr come from its calibration study (the real recipe keeps
    # init_stage2's 3 epochs at 1e-5, checked against the README command in test_recipe)
    assert (cfg.batch_size, cfg.epochs, cfg.lr) == (32, 4, 1.79e-4)
    reference, target, _ = outputs(method, images)
    fingerprint = method.image_fingerprint()
    with torch.no_grad():
        for p in method.query_offset.parameters():
            p.add_(0.05 * torch.randn_like(p))
    _, target_after, query = outputs(method, images)
    assert torch.equal(target, target_after) and method.image_fingerprint() == fingerprint
    # the same query from an explicit copy with weights shared + offset
    copy_model = copy.deepcopy(method.blip2)
    with torch.no_grad():
        for part in ("embeddings", "qformer"):
            weights = dict(getattr(copy_model, part).named_parameters())
            for name, offset in method.query_offset[part].named_parameters():
                weights[name].add_(offset)
        tokens = method.trim(method.tokenize(TEXTS))
        fused = method.fuse(reference, tokens)
        n = fused.shape[1]
        mask = torch.cat([torch.ones(4, n, dtype=torch.long), (tokens != 0).long()], 1)
        states = copy_model.qformer(
            query_embeds=copy_model.embeddings(input_ids=tokens, query_embeds=fused),
            query_length=0,
            attention_mask=mask,
        ).last_hidden_state
        expected = F.normalize(method.blip2.text_projection(states[:, n]), dim=-1)
    assert torch.allclose(query, expected, atol=1e-5)


def test_state_dict_round_trip(images):
    trained = make(seed=0)
    with torch.no_grad():
        for p in trained.query_offset.parameters():
            p.add_(0.01)
        trained.prompt_tokens.add_(1.0)
    fresh = make(seed=1)
    assert not torch.equal(outputs(fresh, images)[2], outputs(trained, images)[2])
    fresh.load_state_dict(trained.state_dict())
    for a, b in zip(outputs(fresh, images), outputs(trained, images), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(fresh.prompt_tokens, trained.prompt_tokens)


# ----------------------------------------------------------------------------- LAVIS keys


def lavis_checkpoint(method: Sprc) -> dict[str, torch.Tensor]:
    extras = {"prompt_tokens": method.prompt_tokens.detach(), "temp": torch.tensor(0.03)}
    state = hf_to_lavis(method.blip2.state_dict(), extras)
    # what a LAVIS / SPRC checkpoint also carries and the retrieval model does not use
    state["Qformer.bert.embeddings.position_ids"] = torch.arange(128)[None]
    state["Qformer.cls.predictions.bias"] = torch.zeros(4)
    return state


def test_lavis_names():
    assert lavis_key_to_hf("visual_encoder.blocks.3.attn.qkv.weight") == (
        "vision_model.encoder.layers.3.self_attn.qkv.weight"
    )
    assert lavis_key_to_hf("Qformer.bert.encoder.layer.1.crossattention.self.key.bias") == (
        "qformer.encoder.layer.1.crossattention.attention.key.bias"
    )
    assert lavis_key_to_hf("Qformer.bert.encoder.layer.0.output_query.LayerNorm.weight") == (
        "qformer.encoder.layer.0.output_query.LayerNorm.weight"
    )
    assert lavis_key_to_hf("Qformer.bert.embeddings.LayerNorm.bias") == "qformer.layernorm.bias"
    assert lavis_key_to_hf("ln_vision.weight") == "vision_model.post_layernorm.weight"
    assert lavis_key_to_hf("vision_proj.weight") == "vision_projection.weight"
    assert hf_key_to_lavis("vision_model.encoder.layers.2.self_attn.qkv.bias") == [
        "visual_encoder.blocks.2.attn.q_bias",
        "visual_encoder.blocks.2.attn.v_bias",
    ]
    # the fused bias: q, zeros for k, v
    mapped = lavis_to_hf(
        {
            "visual_encoder.blocks.0.attn.q_bias": torch.ones(2),
            "visual_encoder.blocks.0.attn.v_bias": 2 * torch.ones(2),
        }
    )
    fused = mapped.model["vision_model.encoder.layers.0.self_attn.qkv.bias"]
    assert fused.tolist() == [1.0, 1.0, 0.0, 0.0, 2.0, 2.0]


def test_lavis_checkpoint_loads_identically(images, tmp_path):
    source = make(seed=3)
    with torch.no_grad():  # non-zero ViT biases, so the q/v split is exercised
        for layer in source.blip2.vision_model.encoder.layers:
            bias = layer.self_attn.qkv.bias
            bias.copy_(torch.randn_like(bias))
            bias[128:256] = 0
    state = lavis_checkpoint(source)
    assert "visual_encoder.blocks.0.attn.q_bias" in state
    assert "Qformer.bert.encoder.layer.0.attention.self.query.weight" in state
    path = tmp_path / "sprc_fiq.pt"
    torch.save({"epoch": 3, "Blip2QformerCirAlignPrompt": state}, path)  # SPRC's save_model
    loaded = make(seed=0, pretrained=str(path))
    assert loaded.temperature.item() == pytest.approx(0.03)
    assert torch.equal(loaded.prompt_tokens, source.prompt_tokens)
    for a, b in zip(outputs(loaded, images), outputs(source, images), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # LAVIS's own container, and a transformers-layout file, load the same weights
    torch.save({"model": state}, tmp_path / "lavis.pth")
    again = load_backbone(ARCH, str(tmp_path / "lavis.pth")).model.state_dict()
    torch.save(source.blip2.state_dict(), tmp_path / "hf.pt")
    hf = load_backbone(ARCH, str(tmp_path / "hf.pt")).model.state_dict()
    for key, value in source.blip2.state_dict().items():
        assert torch.equal(again[key], value) and torch.equal(hf[key], value)


def test_spn_stage2_checkpoint_sets_the_query_copy(images, tmp_path):
    source = make(seed=3)
    state = lavis_checkpoint(source)
    for key in [k for k in state if k.startswith("Qformer.bert.") and "crossattention" not in k]:
        if "position_ids" not in key:
            state["Qformer_query." + key[len("Qformer.") :]] = state[key] + 0.01
    state["text_proj_q.weight"] = state["text_proj.weight"] * 2
    state["text_proj_q.bias"] = state["text_proj.bias"]
    path = tmp_path / "spn_best.pt"
    torch.save({"epoch": 1, "state_dict": {"blip_model." + k: v for k, v in state.items()}}, path)
    loaded = make(seed=0, pretrained=str(path))
    for p in loaded.query_offset.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.01), atol=1e-6)
    assert torch.equal(loaded.blip2.text_projection.weight, source.blip2.text_projection.weight * 2)
    assert torch.equal(outputs(loaded, images)[1], outputs(source, images)[1])  # same targets


def test_mismatching_checkpoint_names_the_keys(tmp_path):
    state = lavis_checkpoint(make())
    del state["Qformer.bert.encoder.layer.0.attention.self.query.weight"]
    del state["visual_encoder.blocks.1.attn.v_bias"]
    state["visual_encoder.blocks.0.attn.relative_position_bias_table"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(BackboneError, match="v_bias is missing"):
        load_backbone(ARCH, str(path))
    state["visual_encoder.blocks.1.attn.v_bias"] = torch.zeros(128)
    torch.save(state, path)
    with pytest.raises(BackboneError) as info:
        load_backbone(ARCH, str(path))
    message = str(info.value)
    assert str(path) in message and "1 missing keys" in message and "1 unexpected keys" in message
    assert "Qformer.bert.encoder.layer.0.attention.self.query.weight" in message
    assert "visual_encoder.blocks.0.attn.relative_position_bias_table" in message
    state = lavis_checkpoint(make())
    state["vision_proj.weight"] = torch.zeros(32, 128)
    torch.save(state, path)
    with pytest.raises(BackboneError, match=r"vision_proj.weight: \(32, 128\) vs \(64, 128\)"):
        load_backbone(ARCH, str(path))
    torch.save({"something": torch.zeros(2)}, path)
    with pytest.raises(BackboneError, match="neither a LAVIS"):
        load_backbone(ARCH, str(path))
