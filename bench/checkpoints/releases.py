"""Where each released file is expected under ``cirbench reproduce --checkpoints DIR``: the
SPN4CIR README's own layout (``data/<method>/<data>_stage1.pt`` for the original authors'
stage 1, ``checkpoints/<data>_<model>/best.pt`` for SPN's stage 2), plus CLIP4Cir's
Combiner file beside its CLIP. SPN's generated triplets are read from the dataset folders
(``cap.extend_<model>.train.json``, ``cap.rc2.train.extend_<model>.json``), where its
README puts them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: cirbench format name -> the short name SPN4CIR's files use.
DATASET_TAGS = {"fashioniq": "fiq", "cirr": "cirr"}


@dataclass(frozen=True)
class Release:
    """The released files of one method (``{data}``: ``fiq`` or ``cirr``)."""

    method: str
    stage1_format: str
    stage1: str  #: relative path template of the stage-1 file
    stage2_format: str
    stage2: tuple[str, ...]  #: candidate relative paths of SPN's stage-2 file
    triplets: str  #: the ``<model>`` of SPN's generated-triplet files
    extra: tuple[str, ...] = ()  #: further stage-1 files (CLIP4Cir's Combiner)
    #: spec overrides for a run from the stage-1 file alone (no extra file) and for SPN's
    #: stage-2 file (CLIP4CIR without a Combiner: SPN scores with the element-wise sum)
    without_extra: tuple[str, ...] = ()
    stage2_overrides: tuple[str, ...] = ()

    def paths(self, root: Path, templates: tuple[str, ...], dataset: str) -> list[Path]:
        tag = DATASET_TAGS[dataset]
        return [root / t.format(data=tag) for t in templates]


RELEASES: dict[str, Release] = {
    r.method: r
    for r in (
        Release(
            "clip4cir",
            "clip4cir",
            "data/clip4cir/{data}_stage1.pt",
            "spn_clip4cir",
            ("checkpoints/{data}_clip/best.pt",),
            "clip",
            extra=("data/clip4cir/{data}_combiner.pt",),
            without_extra=("method.params.use_combiner=false",),
            stage2_overrides=("method.params.use_combiner=false",),
        ),
        Release(
            "tgcir",
            "tgcir",
            "data/tgcir/{data}_stage1.pt",
            "spn_tgcir",
            ("checkpoints/{data}_tg/best.pt", "checkpoints/{data}_tgcir/best.pt"),
            "tgcir",
        ),
        Release(
            "blip4cir_bi",
            "blip4cir",
            "data/blip4cir/{data}_stage1.pt",
            "spn_blip4cir",
            ("checkpoints/{data}_blip/best.pt",),
            "blip",
        ),
        Release(
            "sprc",
            "sprc",
            "data/blip24cir/{data}_stage1.pt",
            "spn_sprc",
            ("checkpoints/{data}_blip2/best.pt",),
            "blip2",
        ),
    )
}
