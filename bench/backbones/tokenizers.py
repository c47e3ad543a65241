"""BERT-style tokenizers for the BLIP / BLIP-2 methods, online or offline.

* ``bert_tokenizer("bert-base-uncased")`` (or a local folder with ``vocab.txt``) loads the
  tokenizer BLIP and BLIP-2 use, through transformers, as the real configurations do;
* ``bert_tokenizer("cirbench-bert-tiny")`` builds a WordPiece tokenizer from a vocabulary
  generated here: BERT's special tokens, BLIP's ``[DEC]`` / ``[ENC]``, every word of the
  synthetic world and the SPN templates, and single characters (so any text encodes
  without ``[UNK]``). It needs no download, which is what the tiny configurations use.

The returned :class:`BertTokenize` maps a list of strings to a padded ``(B, L)`` id tensor;
the attention mask is ``ids != pad_id``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from bench import synthetic as syn
from bench.backbones.base import BackboneError
from bench.core.atomic import write_text_atomic
from bench.core.paths import cache_dir
from bench.spn.positives import templates

TINY = "cirbench-bert-tiny"
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: BLIP adds a decoder bos token and an encoder token (``[ENC]`` replaces ``[CLS]`` when the
#: text encoder cross-attends to the image).
BLIP_EXTRA = ("[DEC]", "[ENC]")
#: Words of modification texts beyond the attribute values.
COMMON_WORDS = (
    "a an the is are be with without and or but not no more less larger smaller longer "
    "shorter bigger lighter darker change make it its to of in on at one two three "
    "has have add remove replace instead unlike i want background object objects "
    "color colour shape pattern size length same different other image picture "
    "left right middle top bottom dress shirt top tee"
)


def tiny_vocabulary() -> list[str]:
    """The deterministic vocabulary of ``cirbench-bert-tiny``."""

    words: set[str] = set()
    for group in (
        *syn.FIQ_SHAPES.values(),
        syn.FIQ_COLORS,
        syn.FIQ_PATTERNS,
        syn.FIQ_SIZES,
        syn.FIQ_LENGTHS,
        syn.FIQ_CATEGORIES,
        syn.CIRR_SHAPES,
        syn.CIRR_COLORS,
        syn.CIRR_BACKGROUNDS,
        syn.CIRR_SLOTS,
        tuple(syn.PATTERN_ADJ.values()),
        tuple(syn.POSITION.values()),
        templates.PAPER_TEMPLATES,
    ):
        for phrase in group:
            words.update(w.strip(string.punctuation).lower() for w in phrase.split())
    words.update(COMMON_WORDS.split())
    words.discard("")
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    return [
        *SPECIAL,
        *BLIP_EXTRA,
        *chars,
        *(f"##{c}" for c in chars),
        *sorted(w for w in words if w not in chars and "{" not in w),
    ]


@cache
def _tiny_tokenizer() -> Any:
    import hashlib

    from transformers import BertTokenizerFast

    text = "\n".join(tiny_vocabulary()) + "\n"
    folder = cache_dir() / "tokenizers" / hashlib.sha256(text.encode()).hexdigest()[:12]
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(vocab, text)
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tokenizer


def load_hf_tokenizer(source: str) -> Any:
    """The transformers tokenizer of ``source`` (``cirbench-bert-tiny``, an id or a folder)
    with BLIP's ``[DEC]`` and ``[ENC]`` tokens."""
    if source == TINY:
        return _tiny_tokenizer()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # network and file errors come in many types
        raise BackboneError(
            f"cannot load tokenizer {source!r} ({type(exc).__name__}: {exc}); offline, pass "
            f"a local folder with the tokenizer files, or use {TINY!r}"
        ) from exc
    if "[DEC]" not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tokenizer


@dataclass
class BertTokenize:
    """Callable: texts -> ``(B, context_length)`` int64 ids, padded with ``pad_id``."""

    tokenizer: Any
    context_length: int

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def token_id(self, token: str) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(token))

    def __call__(self, texts: list[str]) -> torch.Tensor:
        encoded = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return encoded["input_ids"]


def bert_tokenizer(source: str = TINY, context_length: int = 35) -> BertTokenize:
    """A :class:`BertTokenize` (BLIP's text length for CIR is 35 tokens in BLIP4CIR/SPRC)."""
    return BertTokenize(load_hf_tokenizer(source), context_length)
