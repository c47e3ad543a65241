"""Real-size data: rehearsal folders, the streamed parallel pixel cache, bounded caches.

Small rehearsal folders of the real annotation files (a few hundred to a few thousand
shrunken placeholder images) stand in for the real images.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.core.arrays import ArrayCache
from bench.images.pixels import StreamedPixels, block_rows, load_pixels, pixel_batches
from bench.images.rehearse import rehearse
from bench.images.transforms import TargetPadTransform
from tests.conftest import cirbench_home

REPO = Path(__file__).resolve().parents[1]


def image_list(root: Path) -> tuple[list[str], dict[str, Path]]:
    files = sorted(p for p in root.rglob("*") if p.suffix in (".png", ".jpg"))
    return [p.stem for p in files], {p.stem: p for p in files}


@pytest.fixture(scope="module")
def fiq(tmp_path_factory, shared_data) -> Path:
    """A FashionIQ rehearsal folder of 240 images at a third of their real size."""
    out = tmp_path_factory.mktemp("fiq")
    rehearse(
        "fashioniq", out, annotations=shared_data / "fashioniq", limit=240, scale=0.3,
        progress=False,
    )  # fmt: skip
    return out


def test_rehearsal_is_the_official_layout_and_the_same_for_any_workers(tmp_path, shared_data):
    for workers in (1, 2):
        code = main(
            ["data", "rehearse", "--format", "cirr", "--out", str(tmp_path / f"w{workers}"),
             "--annotations", str(shared_data / "cirr"), "--limit", "30", "--scale", "0.2",
             "--workers", str(workers), "--quiet"]
        )  # fmt: skip
        assert code == 0
    one, two = (sorted((tmp_path / f"w{w}").rglob("*.png")) for w in (1, 2))
    assert len(one) == 30 and [p.read_bytes() for p in one] == [p.read_bytes() for p in two]
    assert (tmp_path / "w1" / "cirr" / "image_splits" / "split.rc2.val.json").is_file()
    from PIL import Image

    with Image.open(one[0]) as image:
        assert image.format == "JPEG"  # JPEG bytes under the official .png name
    # the readers take the folder: the written images are found, the others reported
    from bench.formats import get_format

    split = get_format("cirr").load_split(tmp_path / "w1", "val", strict=False)
    written = {p.stem for p in one}
    assert set(split.gallery) == written & set(split.image_paths) != set()
    # an interrupted rehearsal resumes: existing images are kept
    again = rehearse(
        "cirr", tmp_path / "w1", annotations=shared_data / "cirr", limit=30, scale=0.2,
        progress=False,
    )  # fmt: skip
    assert (again.images, again.written) == (30, 0)


def test_two_workers_fill_the_same_bytes_as_one(tmp_path, fiq):
    names, paths = image_list(fiq / "images")
    transform = TargetPadTransform(224)
    assert len(names) > 2 * block_rows(transform)  # several blocks, so both workers work
    arrays = []
    for w in (1, 2):
        cache = ArrayCache(tmp_path / f"c{w}")
        filled = load_pixels(
            cache, names, paths, transform, workers=w, progress=False, stream=False
        )
        arrays.append(np.array(filled))
    assert arrays[0].tobytes() == arrays[1].tobytes()
    streamed = StreamedPixels([paths[n] for n in names], transform, 2)
    assert np.array_equal(streamed[[5, 3, 200]], arrays[0][[5, 3, 200]])
    batches = list(pixel_batches(streamed, 64))
    assert np.array_equal(np.concatenate(batches), arrays[0])
    streamed.close()


FILL = """
import sys, time
from pathlib import Path
from bench.core.arrays import ArrayCache
from bench.images.pixels import load_pixels
from bench.images.transforms import TargetPadTransform
root, cache = Path(sys.argv[1]), Path(sys.argv[2])
files = sorted(p for p in root.rglob("*") if p.suffix in (".png", ".jpg"))
names, paths = [p.stem for p in files], {p.stem: p for p in files}
size, workers = int(sys.argv[3]), int(sys.argv[4])
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
before = hwm()
array = load_pixels(ArrayCache(cache), names, paths, TargetPadTransform(size), workers=workers,
                    progress=False, stream=False)
print(before, hwm(), array.nbytes, flush=True)
"""


def run_fill(*args: object, **kwargs: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", FILL, *map(str, args)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, **kwargs,
    )  # fmt: skip


def test_an_interrupted_fill_resumes_to_the_same_array(tmp_path, fiq):
    cache = tmp_path / "cache"
    proc = run_fill(fiq / "images", cache, 224, 1)
    progress = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((cache / "pixels").glob("*.partial.json"))
        if found and json.loads(found[0].read_text())["rows_done"] > 0:
            progress = found[0]
            break
        time.sleep(0.02)
    assert progress is not None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(progress.read_text())["rows_done"]
    assert 0 < done < 240  # killed between blocks
    proc = run_fill(fiq / "images", cache, 224, 2)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    [entry] = [p for p in (cache / "pixels").glob("*.json") if "partial" not in p.name]
    assert json.loads(entry.read_text())["resumed_at"] == done
    assert not list((cache / "pixels").glob("*.partial.*"))
    names, paths = image_list(fiq / "images")
    fresh = load_pixels(
        ArrayCache(tmp_path / "fresh"), names, paths, TargetPadTransform(224), workers=1,
        progress=False, stream=False,
    )  # fmt: skip
    resumed = np.load(entry.with_suffix(".npy"))
    assert resumed.tobytes() == np.asarray(fresh).tobytes()


def test_filling_thousands_of_images_holds_blocks_not_the_array(tmp_path, shared_data):
    """The peak memory (VmHWM) of a fill of 2500 small rehearsal images grows by less
    than half the array it writes (reading them all into RAM first would cost it all)."""
    out = tmp_path / "fiq"
    rehearse(
        "fashioniq", out, annotations=shared_data / "fashioniq", limit=2500, scale=0.08,
        progress=False,
    )  # fmt: skip
    proc = run_fill(out / "images", tmp_path / "cache", 128, 2)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    before, peak, nbytes = map(int, stdout.split())
    assert nbytes == 2500 * 3 * 128 * 128
    print(f"fill of {nbytes} bytes: VmHWM +{peak - before} bytes")
    assert peak - before < nbytes / 2, (before, peak, nbytes)


# ----------------------------------------------------------------------------- bounded caches


@pytest.mark.parametrize("name", ["clip4cir", "tgcir", "blip4cir_bi", "sprc"])
def test_each_method_declares_the_shapes_it_caches(name):
    """What a method declares it caches (and the engine sizes caches by) is what its
    image side returns, on its tiny synthetic configuration."""
    import torch

    from bench.backbones import load_backbone
    from bench.config.bases import method_base
    from methods import create_method

    base = method_base(name, "synthetic", "fashioniq")
    backbone = load_backbone(base["backbone"]["arch"], "random")
    method = create_method(name, backbone, base["method"].get("params", {})).eval()
    size = backbone.transform.size
    with torch.no_grad():
        reference, target = method.encode_images(torch.zeros(2, 3, size, size))
    declared = {a.role: a.shape for a in method.cached_arrays()}
    assert declared == {"reference": reference.shape[1:], "target": target.shape[1:]}


TINY_RUN = {
    "name": "budget",
    "dataset": {"format": "fashioniq", "synthetic_size": "tiny", "categories": ["dress"]},
    "backbone": {"pretrained": "random"},
    "train": {"epochs": 1, "batch_size": 16},
    "spn": {"negatives": {"epochs": 1, "batch_size": 16, "lr": 1e-4, "neg_num": 20}},
}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One CIRBENCH_HOME for the module (the tiny synthetic data generated once); the
    tests below run in order: nothing cached, then caches filled."""
    yield from cirbench_home(tmp_path_factory)


def test_a_bank_beyond_the_free_disk_is_refused_before_any_work(home, monkeypatch):
    from bench.config import parse_spec
    from bench.core.disk import DiskSpaceError, free_bytes
    from bench.train.session import build_session

    spec = parse_spec(TINY_RUN)
    free = free_bytes(home)
    # the bank of a few hundred tiny images fits any disk: ask to keep more than is free
    # (1 GB above the free space, beyond what other writers on a shared disk change)
    monkeypatch.setenv("CIRBENCH_KEEP_FREE", str(free + (1 << 30)))
    with pytest.raises(DiskSpaceError, match=r"CIRBENCH_KEEP_FREE keeps .* free") as err:
        build_session(spec, progress=False)
    message = str(err.value)
    assert "spn_negatives: train targets" in message and "pixels" in message
    assert not (home / "cache" / "pixels").exists()  # refused before any image was read
    assert not (home / "cache" / "features").exists()


def test_pixels_beyond_the_disk_are_decoded_on_the_fly(home, monkeypatch):
    from bench.config import parse_spec
    from bench.core.disk import free_bytes
    from bench.train.session import build_session

    spec = parse_spec({**TINY_RUN, "spn": {}, "train": {"epochs": 1, "num_workers": 1}})
    monkeypatch.setenv("CIRBENCH_PIXEL_CACHE", "off")
    session = build_session(spec, progress=False)
    assert isinstance(session.pool_pixels, StreamedPixels)
    assert not (home / "cache" / "pixels").exists()
    assert spec.digest() == parse_spec({**TINY_RUN, "spn": {}, "train": {"epochs": 1}}).digest()
    # auto: streamed only when the disk cannot hold the cache
    monkeypatch.setenv("CIRBENCH_PIXEL_CACHE", "auto")
    monkeypatch.setenv("CIRBENCH_KEEP_FREE", str(free_bytes(home) + (1 << 30)))
    with pytest.raises(Exception, match="CIRBENCH_KEEP_FREE"):
        build_session(spec, progress=False)  # the Combiner's features must be cached


def test_with_room_a_run_reports_its_caches_and_fills_them(home, monkeypatch, capsys):
    from bench.config import parse_spec
    from bench.train.session import build_session

    monkeypatch.setenv("CIRBENCH_KEEP_FREE", "0")
    session = build_session(parse_spec(TINY_RUN), progress=True)
    report = capsys.readouterr().err
    assert "caches of this run" in report and "spn_negatives: train targets" in report
    assert len(session.pool_pixels) == len(session.pool_names)
    assert list((home / "cache" / "pixels").glob("*.npy"))


def test_sprc_bank_stage_reads_fused_states_equal_to_its_query():
    """SPRC's cached query state (the fused Q-Former states, the reference's refer_bank)
    gives the query its own encode_query gives, in eval mode (how the state is cached)."""
    import torch

    from bench.backbones import load_backbone
    from bench.config.bases import method_base
    from methods import create_method

    base = method_base("sprc", "synthetic", "fashioniq")
    backbone = load_backbone(base["backbone"]["arch"], "random")
    method = create_method("sprc", backbone, base["method"].get("params", {})).eval()
    size = backbone.transform.size
    images = torch.rand(3, 3, size, size)
    tokens = method.tokenize(["is red", "has longer sleeves and a collar", "is blue"])
    with torch.no_grad():
        reference = method.encode_reference(images)
        state = method.query_state(reference, tokens[:, :20])  # any padding length
        query = method.encode_query_from_state(state, tokens)
        assert torch.allclose(query, method.encode_query(reference, tokens), atol=1e-5)
    declared = method.query_state_array()
    assert declared is not None and tuple(state.shape[1:]) == declared.shape
    assert declared.shape[0] == method.num_query  # 32 x 768 for BLIP-2
