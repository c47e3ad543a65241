"""The CIRR planner: scene families per split, img_sets, queries drawn among the pairs
of each img_set, caption records and modification records."""

from __future__ import annotations

import itertools
import random
from typing import Any

from bench.synthetic.cirr_scenes import Scene, cirr_families, img_sets, scene_diff
from bench.synthetic.cirr_text import cirr_caption
from bench.synthetic.world import (
    CIRR_ATTRIBUTES,
    CIRR_FOLDERS,
    CIRR_SPLITS,
    AttributeIndex,
    PlannedImage,
    SizeSpec,
    aspect,
    enough_confusers,
    seeded_rng,
)

# Edits per query: their relative weights and the most one query has.
CIRR_EDIT_COUNT_WEIGHTS = {1: 0.35, 2: 1.0, 3: 0.25}
CIRR_MAX_EDITS = 3

#: A candidate query: (sampling key, img_set id, reference, target, edits).
_Candidate = tuple[float, int, Scene, Scene, list[dict]]
#: A chosen query: (img_set id, reference, target, edits, caption, requirements).
_Chosen = tuple[int, Scene, Scene, list[dict], str, list[dict]]


def plan_cirr(
    seed: int, spec: SizeSpec, first_pairid: int = 1
) -> tuple[
    list[PlannedImage], dict[str, dict[str, str]], dict[str, list[dict]], dict[str, list[dict]]
]:
    """Images, split files, caption records and modification records of every CIRR split."""
    images: list[PlannedImage] = []
    split_files: dict[str, dict[str, str]] = {}
    captions: dict[str, list[dict]] = {}
    mods: dict[str, list[dict]] = {}
    pairid = first_pairid
    for split in CIRR_SPLITS:
        rng = seeded_rng(seed, "cirr", split)
        families = cirr_families(rng, spec.cirr_images[split], spec.cirr_family, set())
        scenes = [s for fam in families for s in fam]
        name_of, mapping, split_images = _name_scenes(scenes, split, rng)
        images += split_images
        split_files[split] = dict(sorted(mapping.items(), key=lambda kv: kv[1]))
        # img_sets: each family cut into groups of 6 similar scenes.
        sets: list[list[Scene]] = []
        for fam in families:
            sets += img_sets(fam, rng)
        chosen = _choose_queries(
            _candidates(sets, rng), scenes, spec.cirr_queries[split], split, rng
        )
        rng.shuffle(chosen)
        captions[split], mods[split] = _records(chosen, sets, name_of, split, pairid)
        pairid += len(chosen)
    return images, split_files, captions, mods


def _name_scenes(
    scenes: list[Scene], split: str, rng: random.Random
) -> tuple[dict[Scene, str], dict[str, str], list[PlannedImage]]:
    """Name the split's scenes in a shuffled order (the gallery order does not reveal the
    families): scene -> name, name -> path, and the images to render."""
    folder = CIRR_FOLDERS[split]
    images: list[PlannedImage] = []
    order = list(range(len(scenes)))
    rng.shuffle(order)
    name_of: dict[Scene, str] = {}
    mapping: dict[str, str] = {}
    for k, j in enumerate(order):
        name = f"cirr-{folder}-{k:06d}"
        sub = f"{folder}/{k // 100}" if split == "train" else folder
        name_of[scenes[j]] = name
        mapping[name] = f"./{sub}/{name}.png"
    for j in range(len(scenes)):
        name = name_of[scenes[j]]
        w, h = aspect(rng, 96, 132)
        attrs = dict(zip(CIRR_ATTRIBUTES, scenes[j], strict=True))
        images.append(PlannedImage(name, "cirr", attrs, w, h, mapping[name][2:], split))
    return name_of, mapping, images


def _candidates(sets: list[list[Scene]], rng: random.Random) -> list[_Candidate]:
    """Every ordered pair of an img_set with 1..CIRR_MAX_EDITS clean edits, in the order of
    a weighted sampling without replacement (by edit count)."""
    candidates: list[_Candidate] = []
    for set_id, members in enumerate(sets):
        for ref, tgt in itertools.permutations(members, 2):
            edits = scene_diff(ref, tgt)
            if edits is None or not 1 <= len(edits) <= CIRR_MAX_EDITS:
                continue
            weight = CIRR_EDIT_COUNT_WEIGHTS[len(edits)]
            key = rng.random() ** (1.0 / weight)  # weighted sampling without replacement
            candidates.append((key, set_id, ref, tgt, edits))
    candidates.sort(key=lambda c: -c[0])
    return candidates


def _choose_queries(
    candidates: list[_Candidate],
    scenes: list[Scene],
    n_queries: int,
    split: str,
    rng: random.Random,
) -> list[_Chosen]:
    """The first ``n_queries`` candidates whose caption leaves enough confusers."""
    index = AttributeIndex([dict(zip(CIRR_ATTRIBUTES, sc, strict=True)) for sc in scenes])
    row_of = {sc: k for k, sc in enumerate(scenes)}
    chosen: list[_Chosen] = []
    for _, set_id, ref, tgt, edits in candidates:
        caption, requirements = cirr_caption(edits, ref, tgt, rng)
        if enough_confusers(index, row_of[ref], row_of[tgt], requirements):
            chosen.append((set_id, ref, tgt, edits, caption, requirements))
            if len(chosen) == n_queries:
                break
    else:
        raise RuntimeError(f"CIRR {split}: only {len(chosen)} of {n_queries} queries placed")
    return chosen


def _records(
    chosen: list[_Chosen],
    sets: list[list[Scene]],
    name_of: dict[Scene, str],
    split: str,
    first_pairid: int,
) -> tuple[list[dict], list[dict]]:
    """The official caption records and the modification records of the chosen queries."""
    records: list[dict] = []
    sidecar: list[dict] = []
    for pairid, (set_id, ref, tgt, edits, caption, requirements) in enumerate(
        chosen, start=first_pairid
    ):
        members = [name_of[s] for s in sets[set_id]]
        ref_name, tgt_name = name_of[ref], name_of[tgt]
        record: dict[str, Any] = {
            "pairid": pairid,
            "reference": ref_name,
            "target_hard": tgt_name,
            "target_soft": {tgt_name: 1.0},
            "caption": caption,
            "img_set": {
                "id": set_id,
                "members": members,
                "reference_rank": members.index(ref_name),
                "target_rank": members.index(tgt_name),
            },
        }
        if split == "test1":
            del record["target_hard"], record["target_soft"], record["img_set"]["target_rank"]
        records.append(record)
        sidecar.append(
            {
                "pairid": pairid,
                "reference": ref_name,
                "target": tgt_name,
                "edits": edits,
                "changes": {a: tgt[i] for i, a in enumerate(CIRR_ATTRIBUTES) if ref[i] != tgt[i]},
                "requirements": requirements,
            }
        )
    return records, sidecar
