"""``cirbench data stats`` on the real annotation files and on broken folders."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.cli import main
from tests.test_data_readers import FIQ_CAP, corrupt, make_fashioniq


def run_stats(capsys, *args: str) -> tuple[int, dict]:
    code = main(["data", "stats", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_stats_real_fashioniq(shared_data, capsys):
    code, stats = run_stats(
        capsys, "--format", "fashioniq", "--root", str(shared_data / "fashioniq"), "--no-images"
    )
    assert code == 0 and stats["errors"] == 0
    dress_val = stats["splits"]["dress"]["val"]
    assert (dress_val["queries"], dress_val["images"]) == (2017, 3817)
    assert stats["splits"]["shirt"]["test"]["images"] == 6346
    # the files holding the 16 empty captions; the dress and shirt test files repeat 6
    # queries each (same candidate and captions, no target)
    assert stats["warnings"] == 4 + 2
    shirt_test = stats["splits"]["shirt"]["test"]["findings"]
    assert sorted(f["count"] for f in shirt_test) == [1, 6]


def test_stats_real_cirr(shared_data, capsys):
    code, stats = run_stats(
        capsys, "--format", "cirr", "--root", str(shared_data / "cirr"), "--no-images"
    )
    assert code == 0
    assert (stats["splits"]["val"]["queries"], stats["splits"]["val"]["images"]) == (4181, 2297)
    train = stats["splits"]["train"]
    assert (train["queries"], train["images"], train["errors"]) == (None, 16939, 0)
    # the train captions are not among the shared files: a warning, not an error
    [absent] = train["findings"]
    assert absent["severity"] == "warning" and "caption file not found" in absent["message"]
    assert stats["splits"]["test1"]["warnings"] == 2  # a blank caption, 4 repeated queries


def test_stats_reports_missing_images_and_strict_exit(shared_data, capsys):
    code, stats = run_stats(
        capsys, "--format", "cirr", "--root", str(shared_data / "cirr"), "--strict"
    )
    assert code == 1
    [missing] = [f for f in stats["splits"]["val"]["findings"] if f["severity"] == "error"]
    assert missing["count"] == 2297 and "missing on disk" in missing["message"]


def test_stats_table_names_record_and_field(tmp_path, capsys):
    root = make_fashioniq(tmp_path)
    corrupt(root / FIQ_CAP, lambda d: d[1].pop("captions"))
    assert main(["data", "stats", "--format", "fashioniq", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "cap.dress.val.json: record 1: field 'captions': missing field" in out
    assert "dress/val" in out


def test_stats_console_script_missing_root(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cli",
            "data",
            "stats",
            "--format",
            "cirr",
            "--root",
            str(tmp_path / "nope"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "dataset root folder not found" in result.stderr
