"""Released checkpoint formats (bench.checkpoints): every format's files built in the exact
released layout from a tiny model of the same family, saved with torch.save as the original
code does, imported into a fresh model: the same outputs as the exporting model."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from bench.backbones import load_backbone
from bench.checkpoints import (
    CheckpointFormatError,
    checkpoint_format_names,
    get_checkpoint_format,
    import_checkpoint,
)
from bench.checkpoints.clip4cir import export_clip4cir_half
from bench.core.errors import UnknownNameError
from methods import create_method

ARCHS = {
    "clip4cir": "cirbench-tiny",
    "tgcir": "cirbench-tiny",
    "blip4cir_bi": "hf-blip:tiny",
    "sprc": "hf-blip2:tiny",
}
PARAMS = {"tgcir": {"loss": "original"}}  # the released TG-CIR files carry its teacher
_BACKBONES: dict[str, object] = {}


def tiny(method: str, seed: int, **params):
    key = ARCHS[method]  # one backbone per family; ``seed`` draws the perturbation
    if key not in _BACKBONES:
        _BACKBONES[key] = load_backbone(key, "random", seed=0)
    params = PARAMS.get(method, {}) | params
    model = create_method(method, copy.deepcopy(_BACKBONES[key]), params)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():  # every weight distinctive (LayerNorms are 1/0, offsets 0)
        for name, p in model.named_parameters():
            if p.is_floating_point():
                p.add_(0.01 * torch.randn(p.shape, generator=gen))
            if name.endswith("self_attn.qkv.bias") and method == "sprc":
                p.view(3, -1)[1].zero_()  # the EVA ViT has no key bias (LAVIS q/v_bias)
    return model.eval()


@functools.cache
def exporting(method: str):
    """The (seed 1) model every test exports from; copy it before changing it."""
    return tiny(method, 1)


def outputs(model, phase: str | None = None) -> list[torch.Tensor]:
    size = model.transform.size
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokens = model.tokenize(["a red dress", "same but blue", "longer sleeves"])
    if phase is not None:
        model.set_phase(phase)
    with torch.no_grad():
        reference = model.encode_reference(images)
        return [model.encode_target(images), model.encode_query(reference, tokens)]


def exported(name: str, source, tmp_path) -> list:
    fmt = get_checkpoint_format(name)
    payloads = fmt.from_method(source)
    paths = []
    for part, payload in zip(fmt.parts, payloads, strict=True):
        path = tmp_path / f"{name}.{part}.pt"
        torch.save(payload, path)
        paths.append(path)
    return paths


def assert_same_outputs(a, b, phase: str | None = None) -> None:
    for x, y in zip(outputs(a, phase), outputs(b, phase), strict=True):
        assert torch.allclose(x, y, atol=1e-6), (x - y).abs().max()


@pytest.mark.parametrize("name", checkpoint_format_names())
def test_every_format_round_trips_through_its_released_layout(name, tmp_path):
    fmt = get_checkpoint_format(name)
    source, fresh = copy.deepcopy(exporting(fmt.method)), tiny(fmt.method, 2)
    if fmt.stage == "stage1" and fmt.method == "sprc":
        with torch.no_grad():  # SPRC's own files have no query copy: the offset is zero
            for p in source.query_offset.parameters():
                p.zero_()
    if name == "spn_tgcir":
        fresh.loss_scale.data.copy_(source.loss_scale)  # not carried (a fixed tau in SPN)
        source.heads_shared.fill_(False)  # SPN's stage 2 holds the text copies
    if name == "spn_clip4cir":  # SPN's CLIP4CIR has no Combiner
        source = tiny("clip4cir", 1, use_combiner=False)
        fresh = tiny("clip4cir", 2, use_combiner=False)
    assert not torch.allclose(outputs(source)[1], outputs(fresh)[1])
    paths = exported(name, source, tmp_path)
    imported = import_checkpoint(fresh, paths, name)
    assert imported.format == name and len(imported.digests) == len(paths)
    assert_same_outputs(source, fresh)
    if name == "clip4cir":
        assert_same_outputs(source, fresh, "combiner")


def test_released_layouts_have_the_original_key_names_and_nesting(tmp_path):
    """What each exporter writes is the original code's layout, key by key."""
    clip, combiner = get_checkpoint_format("clip4cir").from_method(exporting("clip4cir"))
    assert set(clip) == {"epoch", "CLIP"} and set(combiner) == {"epoch", "Combiner"}
    assert "visual.conv1.weight" in clip["CLIP"] and "ln_final.weight" in clip["CLIP"]
    assert {k.rsplit(".", 1)[0] for k in combiner["Combiner"]} == {
        "text_projection_layer",
        "image_projection_layer",
        "combiner_layer",
        "output_layer",
        "dynamic_scalar.0",
        "dynamic_scalar.3",
    }
    [tg] = get_checkpoint_format("tgcir").from_method(exporting("tgcir"))
    keys = set(tg["state_dict"])
    assert tg["state_dict"]["backbone.tokenlearn.tokenizers.0.conv.0.weight"].shape[::2] == (1, 1)
    assert {"backbone.masks.weight", "loss_T", "local_weight", "s_remain_map.0.weight"} <= keys
    assert {"t_remain_map.2.bias", "t_replace_map.0.weight", "backbone.fc.weight"} <= keys
    assert "backbone.image_backbone.conv1.weight" in keys
    assert not any("_text" in k for k in keys)  # the original shares masks / token learner
    [spn_tg] = get_checkpoint_format("spn_tgcir").from_method(exporting("tgcir"))
    assert "backbone.masks_text.weight" in spn_tg["state_dict"]
    assert "loss_T" not in spn_tg["state_dict"]
    [blip] = get_checkpoint_format("blip4cir").from_method(exporting("blip4cir_bi"))
    assert "visual_encoder.cls_token" in blip["BLIP_Retrieval"]
    assert "temp" in blip["BLIP_Retrieval"]
    [spn_blip] = get_checkpoint_format("spn_blip4cir").from_method(exporting("blip4cir_bi"))
    assert all(k.startswith("blip.") or k == "tau" for k in spn_blip["state_dict"])
    [sprc] = get_checkpoint_format("sprc").from_method(exporting("sprc"))
    inner = sprc["Blip2QformerCirAlignPrompt"]
    assert "prompt_tokens" in inner and "visual_encoder.blocks.0.attn.q_bias" in inner
    [spn_sprc] = get_checkpoint_format("spn_sprc").from_method(exporting("sprc"))
    keys = spn_sprc["state_dict"]
    assert all(k.startswith("blip_model.") for k in keys)
    assert any(k.startswith("blip_model.Qformer_query.bert.") for k in keys)
    assert "blip_model.text_proj_q.weight" in keys


def test_clip4cir_fp16_clip_file_loads_and_the_combiner_file_is_needed(tmp_path):
    """CLIP saved from clip.load's GPU model is float16; read and cast to the model's."""
    source, fresh = copy.deepcopy(exporting("clip4cir")), tiny("clip4cir", 2)
    clip, combiner = export_clip4cir_half(source)
    assert clip["CLIP"]["visual.conv1.weight"].dtype == torch.float16
    torch.save(clip, tmp_path / "tuned_clip_best.pt")
    torch.save(combiner, tmp_path / "combiner.pt")
    import_checkpoint(
        fresh, [tmp_path / "tuned_clip_best.pt", tmp_path / "combiner.pt"], "clip4cir"
    )
    assert fresh.clip.visual.conv1.weight.dtype == torch.float32
    rounded = {
        k: v.half().float() if k.startswith("clip.") and v.is_floating_point() else v
        for k, v in source.state_dict().items()
    }
    source.load_state_dict(rounded)
    assert_same_outputs(source, fresh, "combiner")
    with pytest.raises(CheckpointFormatError, match=r"format clip4cir.*missing keys \(combiner\."):
        import_checkpoint(tiny("clip4cir", 3), [tmp_path / "tuned_clip_best.pt"], "clip4cir")


def test_mismatches_are_errors_naming_the_format_and_first_keys(tmp_path):
    [payload] = get_checkpoint_format("spn_tgcir").from_method(exporting("tgcir"))
    torch.save(payload, tmp_path / "spn.pt")
    target = tiny("tgcir", 2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointFormatError, match=r"format tgcir.*spn_tgcir"):
        import_checkpoint(target, [tmp_path / "spn.pt"], "tgcir")
    del payload["state_dict"]["backbone.fc.bias"]
    payload["state_dict"]["backbone.extra.weight"] = torch.zeros(1)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(
        CheckpointFormatError, match=r"bad\.pt read as format spn_tgcir.*backbone\.extra"
    ):
        import_checkpoint(target, [tmp_path / "bad.pt"], "spn_tgcir")
    del payload["state_dict"]["backbone.extra.weight"]
    torch.save(payload, tmp_path / "missing.pt")
    with pytest.raises(
        CheckpointFormatError, match=r"1 missing keys \(image_heads\.projection\.bias\)"
    ):
        import_checkpoint(target, [tmp_path / "missing.pt"], "spn_tgcir")
    for key, value in target.state_dict().items():  # never a partial load
        assert torch.equal(value, before[key]), key
    with pytest.raises(UnknownNameError, match="did you mean 'spn_tgcir'"):
        import_checkpoint(target, [tmp_path / "spn.pt"], "spn_tgcirr")
    with pytest.raises(CheckpointFormatError, match=r"expected a dict with key 'BLIP_Retrieval'"):
        import_checkpoint(tiny("blip4cir_bi", 1), [tmp_path / "spn.pt"], "blip4cir")
