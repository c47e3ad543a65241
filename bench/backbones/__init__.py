"""Vision-language backbones: open_clip (:mod:`~bench.backbones.clip`), BLIP
(:mod:`~bench.backbones.blip`) and BLIP-2 (:mod:`~bench.backbones.blip2`) families behind
one door (:func:`~bench.backbones.base.load_backbone`), their tokenizers, checkpoint key
mappings, the synthetic world's pre-training (:mod:`~bench.backbones.pretrain`) and the
one resolver of ``pretrained`` sources (:mod:`~bench.backbones.resolve`)."""

from bench.backbones.base import Backbone, BackboneError, load_backbone, split_family

__all__ = ["Backbone", "BackboneError", "load_backbone", "split_family"]
