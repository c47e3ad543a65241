"""The corpus of bad inputs: annotation folders and specs broken one way each, with the
class each must get (``python -m tests.bad_inputs DIR`` writes it; the suite runs it in
``tests/test_bad_inputs.py``).

A case is a small valid folder (FashionIQ, CIRR or CIRCO; or a tiny spec) with one edit,
and its expected outcome: ``error`` (``cirbench data stats`` reports an error naming the
file, and the record and field where there is one; ``cirbench train`` exits 2 naming the
file and the key), ``warning`` (a finding of severity warning, no error: a quirk the
official files have) or ``accepted`` (no finding at all). No case may end in a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.test_circo import make_circo
from tests.test_data_readers import make_cirr, make_fashioniq

Edit = Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    """One broken input and what must come of it."""

    name: str
    kind: str  #: a format name, or "spec"
    edit: Edit
    expected: str  #: error | warning | accepted
    file: str = ""  #: the file the finding must name (its name)
    record: int | str | None = None
    field: str | None = None
    says: str = ""  #: a phrase the message must contain
    env: tuple[tuple[str, str], ...] = ()  #: environment of the read


FIQ_CAP = "captions/cap.dress.val.json"
FIQ_SPLIT = "image_splits/split.dress.val.json"
CIRR_CAP = "captions/cap.rc2.val.json"
CIRR_SPLIT = "image_splits/split.rc2.val.json"
CIRCO_VAL = "annotations/val.json"


def _json(relative: str, edit: Callable[[Any], Any]) -> Edit:
    def apply(root: Path) -> None:
        path = root / relative
        data = json.loads(path.read_text())
        result = edit(data)
        path.write_text(json.dumps(data if result is None else result))

    return apply


def _text(relative: str, text: str | bytes) -> Edit:
    def apply(root: Path) -> None:
        path = root / relative
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)

    return apply


def _replace_with_folder(relative: str) -> Edit:
    def apply(root: Path) -> None:
        (root / relative).unlink()
        (root / relative).mkdir()

    return apply


def _symlink_loop(relative: str) -> Edit:
    def apply(root: Path) -> None:
        path = root / relative
        path.unlink()
        os.symlink(path.name, path)  # a link to itself

    return apply


def _unreadable(relative: str) -> Edit:
    def apply(root: Path) -> None:
        (root / relative).chmod(0)

    return apply


def _delete(relative: str) -> Edit:
    def apply(root: Path) -> None:
        (root / relative).unlink()

    return apply


def _set(index: int, key: str, value: Any) -> Callable[[Any], None]:
    def apply(data: Any) -> None:
        node = data[index]
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value

    return apply


def _append_copy(index: int) -> Callable[[Any], None]:
    return lambda data: data.append(dict(data[index]))


def _file_cases(fmt: str, relative: str) -> list[Case]:
    """The OS and decoding errors, each one a file-level error of ``relative``."""
    name = Path(relative).name
    deep = "[" * 100_000 + "]" * 100_000
    return [
        Case(f"{fmt}-folder", fmt, _replace_with_folder(relative), "error", name, says="directory"),
        Case(f"{fmt}-symlink-loop", fmt, _symlink_loop(relative), "error", name, says="symlink"),
        Case(f"{fmt}-unreadable", fmt, _unreadable(relative), "error", name, says="permission"),
        Case(f"{fmt}-deep-json", fmt, _text(relative, deep), "error", name, says="nested"),
        Case(f"{fmt}-not-utf8", fmt, _text(relative, b"\xff\xfe[]"), "error", name, says="UTF-8"),
        Case(f"{fmt}-truncated", fmt, _text(relative, '[{"a": '), "error", name, says="malformed"),
        Case(f"{fmt}-nan", fmt, _text(relative, "[NaN]"), "error", name, says="NaN"),
        Case(f"{fmt}-null", fmt, _text(relative, "null"), "error", name, says="null"),
        Case(f"{fmt}-empty-list", fmt, _text(relative, "[]"), "error", name, says="no records"),
        Case(f"{fmt}-empty-file", fmt, _text(relative, ""), "error", name, says="malformed"),
    ]


def cases() -> list[Case]:
    """Every case of the corpus."""
    out = [
        *_file_cases("fashioniq", FIQ_CAP),
        *_file_cases("cirr", CIRR_CAP),
        *_file_cases("circo", CIRCO_VAL),
        Case(
            "fashioniq-huge",
            "fashioniq",
            _text(FIQ_CAP, "[" + " " * 2_000_000 + "]"),
            "error",
            "cap.dress.val.json",
            says="limit",
            env=(("CIRBENCH_MAX_FILE_MB", "1"),),
        ),
        # FashionIQ records
        Case(
            "fiq-duplicate-triplet",
            "fashioniq",
            _json(FIQ_CAP, _append_copy(0)),
            "error",
            "cap.dress.val.json",
            2,
            says="repeats record 0",
        ),
        Case(
            "fiq-blank-caption",
            "fashioniq",
            _json(FIQ_CAP, _set(0, "captions", ["  ", "x"])),
            "warning",
            "cap.dress.val.json",
            field="captions",
            says="blank",
        ),
        Case(
            "fiq-empty-caption",
            "fashioniq",
            _json(FIQ_CAP, _set(0, "captions", ["", "x"])),
            "warning",
            "cap.dress.val.json",
            field="captions",
            says="quirk",
        ),
        Case(
            "fiq-caption-number",
            "fashioniq",
            _json(FIQ_CAP, _set(1, "captions", [1, "x"])),
            "error",
            "cap.dress.val.json",
            1,
            "captions",
        ),
        Case(
            "fiq-target-outside",
            "fashioniq",
            _json(FIQ_CAP, _set(0, "target", "zz")),
            "error",
            "cap.dress.val.json",
            0,
            "target",
        ),
        Case(
            "fiq-bool-candidate",
            "fashioniq",
            _json(FIQ_CAP, _set(0, "candidate", True)),
            "error",
            "cap.dress.val.json",
            0,
            "candidate",
        ),
        Case(
            "fiq-split-empty",
            "fashioniq",
            _text(FIQ_SPLIT, "[]"),
            "error",
            "split.dress.val.json",
            says="no images",
        ),
        Case(
            "fiq-split-null",
            "fashioniq",
            _text(FIQ_SPLIT, "null"),
            "error",
            "split.dress.val.json",
            says="null",
        ),
        Case(
            "fiq-captions-deleted",
            "fashioniq",
            _delete(FIQ_CAP),
            "error",
            "cap.dress.val.json",
            says="not found",
        ),
        Case(
            "fiq-reordered-keys",
            "fashioniq",
            _json(FIQ_CAP, lambda d: [dict(reversed(list(r.items()))) for r in d]),
            "accepted",
        ),
        # CIRR records
        Case(
            "cirr-duplicate-query",
            "cirr",
            _json(CIRR_CAP, lambda d: d.append({**d[0], "pairid": 8})),
            "error",
            "cap.rc2.val.json",
            1,
            says="repeats record 0",
        ),
        Case(
            "cirr-duplicate-pairid",
            "cirr",
            _json(CIRR_CAP, lambda d: d.append({**d[0], "caption": "other"})),
            "error",
            "cap.rc2.val.json",
            1,
            "pairid",
        ),
        Case(
            "cirr-empty-caption",
            "cirr",
            _json(CIRR_CAP, _set(0, "caption", "")),
            "warning",
            "cap.rc2.val.json",
            field="caption",
            says="blank",
        ),
        Case(
            "cirr-soft-outside-split",
            "cirr",
            _json(CIRR_CAP, _set(0, "target_soft", {"dev-1-img0": 1.0, "elsewhere": 0.5})),
            "error",
            "cap.rc2.val.json",
            0,
            "target_soft",
        ),
        Case(
            "cirr-members-without-target",
            "cirr",
            _json(CIRR_CAP, lambda d: d[0]["img_set"]["members"].remove("dev-1-img0")),
            "error",
            "cap.rc2.val.json",
            0,
            "img_set.members",
        ),
        Case(
            "cirr-soft-disagrees",
            "cirr",
            _json(CIRR_CAP, _set(0, "target_soft", {"dev-2-img0": 1.0})),
            "warning",
            "cap.rc2.val.json",
            field="target_soft",
            says="quirk",
        ),
        Case(
            "cirr-soft-bool-weight",
            "cirr",
            _json(CIRR_CAP, _set(0, "target_soft", {"dev-1-img0": True})),
            "error",
            "cap.rc2.val.json",
            0,
            "target_soft",
        ),
        Case(
            "cirr-absolute-path",
            "cirr",
            _json(CIRR_SPLIT, lambda d: d.update({"dev-5-img0": "/etc/passwd"})),
            "error",
            "split.rc2.val.json",
            "dev-5-img0",
            says="leaves the dataset root",
        ),
        Case(
            "cirr-path-escapes",
            "cirr",
            _json(CIRR_SPLIT, lambda d: d.update({"dev-5-img0": "../../x.png"})),
            "error",
            "split.rc2.val.json",
            "dev-5-img0",
            says="leaves the dataset root",
        ),
        Case(
            "cirr-val-captions-deleted",
            "cirr",
            _delete(CIRR_CAP),
            "error",
            "cap.rc2.val.json",
            says="not found",
        ),
        Case(
            "cirr-split-empty",
            "cirr",
            _text(CIRR_SPLIT, "{}"),
            "error",
            "split.rc2.val.json",
            says="no images",
        ),
        Case(
            "cirr-pairid-string",
            "cirr",
            _json(CIRR_CAP, _set(0, "pairid", "7")),
            "error",
            "cap.rc2.val.json",
            0,
            "pairid",
        ),
        # CIRCO records
        Case(
            "circo-image-path-escapes",
            "circo",
            _json(
                "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json",
                lambda d: d["images"][0].update(file_name="../../etc/passwd"),
            ),
            "error",
            "image_info_unlabeled2017.json",
            0,
            "images.file_name",
        ),
        Case(
            "circo-gt-string",
            "circo",
            _json(CIRCO_VAL, _set(0, "gt_img_ids", ["202"])),
            "error",
            "val.json",
            0,
        ),
    ]
    return out


# ----------------------------------------------------------------------------- specs

SPEC = {
    "name": "bad",
    "experiment": "cirbench-bad-inputs",
    "dataset": {"format": "fashioniq", "synthetic_size": "tiny", "categories": ["dress"]},
    "backbone": {"pretrained": "random"},
    "train": {"epochs": 1, "batch_size": 16},
}


@dataclass(frozen=True)
class SpecCase:
    """A spec text and what ``cirbench train`` must say about it (``None``: valid)."""

    name: str
    text: str
    says: str | None  #: the key (or phrase) the error names


def _spec_text(**blocks: Any) -> str:
    import yaml

    data = json.loads(json.dumps(SPEC))
    for key, value in blocks.items():
        node = data
        *parents, last = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return yaml.safe_dump(data, sort_keys=False)


def spec_cases() -> list[SpecCase]:
    """Specs broken one way each (and two valid ones)."""
    base = _spec_text()
    return [
        SpecCase("valid", base, None),
        SpecCase(
            "float-exponent", base.replace("batch_size: 16", "batch_size: 16\n  lr: 1e-4"), None
        ),
        SpecCase(
            "phase-typo",
            _spec_text(train__phases={"combinr": {"epochs": 1}}),
            "train.phases.combinr",
        ),
        SpecCase("duplicate-key", base + "train:\n  epochs: 2\n", "given twice"),
        SpecCase("bool-epochs", _spec_text(train__epochs=True), "train.epochs"),
        SpecCase(
            "string-lr", base.replace("batch_size: 16", "batch_size: 16\n  lr: '1e-4'"), "train.lr"
        ),
        SpecCase("float-batch", _spec_text(train__batch_size=16.5), "train.batch_size"),
        SpecCase("metric-typo", _spec_text(eval__select_metric="R@999"), "eval.select_metric"),
        SpecCase(
            "captioner-typo",
            _spec_text(spn__positives={"captioner": "gpt"}),
            "spn.positives.captioner",
        ),
        SpecCase(
            "captioner-option",
            _spec_text(spn__positives={"captioner_options": {"nope": 1}}),
            "spn.positives.captioner_options",
        ),
        SpecCase("no-categories", _spec_text(dataset__categories=[]), "dataset.categories"),
        SpecCase("method-typo", _spec_text(method__name="clip4cirr"), "did you mean 'clip4cir'"),
        SpecCase(
            "backbone-typo",
            _spec_text(backbone__arch="cirbench-tinny"),
            "did you mean 'cirbench-tiny'",
        ),
        SpecCase(
            "bad-param", _spec_text(method__params={"combiner_hidden": "big"}), "method.params"
        ),
        SpecCase("unknown-key", _spec_text(train__epoch=2), "train.epoch"),
        SpecCase("not-a-mapping", "- a\n- b\n", "mapping"),
        SpecCase("deep-yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
        SpecCase("not-utf8", "name: \udcff\n", "UTF-8"),
    ]


def write(out: Path) -> list[tuple[Case, Path]]:
    """Every folder case under ``out`` (one folder per case); returns (case, root)."""
    made = []
    for case in cases():
        root = out / case.name
        make = {"fashioniq": make_fashioniq, "cirr": make_cirr, "circo": make_circo}[case.kind]
        if case.kind == "circo":
            make(root)
        else:
            make(root, with_images=False)
        case.edit(root)
        made.append((case, root))
    return made


def write_specs(out: Path) -> list[tuple[SpecCase, Path]]:
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for case in spec_cases():
        path = out / f"{case.name}.yaml"
        data = case.text.encode("utf-8", "surrogateescape")
        path.write_bytes(data)
        made.append((case, path))
    return made


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "bad-inputs")
    print(f"{len(write(target / 'data'))} folders, {len(write_specs(target / 'specs'))} specs")
