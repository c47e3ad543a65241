"""The bad-input corpus (``tests/bad_inputs.py``): every broken annotation folder and
spec gets its expected class through the real CLI, never a traceback."""

from __future__ import annotations

import json
import os

import pytest

from bench.cli import main
from bench.config import load_spec
from bench.core.errors import CirbenchError
from bench.train.preflight import preflight
from tests import bad_inputs
from tests.conftest import cirbench_home


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory):
    yield from cirbench_home(tmp_path_factory)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad-inputs")
    folders = bad_inputs.write(out / "data")
    yield {case.name: (case, root) for case, root in folders}
    for _, root in folders:  # let the clean-up delete the unreadable files
        for path in root.rglob("*"):
            if not path.is_symlink():
                path.chmod(0o755)


def _matches(finding: dict, case: bad_inputs.Case) -> bool:
    return (
        os.path.basename(finding["file"]) == case.file
        and (case.record is None or finding["record"] == case.record)
        and (case.field is None or finding["field"] == case.field)
        and case.says.lower() in finding["message"].lower()
    )


@pytest.mark.parametrize("name", [c.name for c in bad_inputs.cases()])
def test_bad_annotation_file(corpus, name, capsys, monkeypatch):
    case, root = corpus[name]
    for key, value in case.env:
        monkeypatch.setenv(key, value)
    if case.name.endswith("unreadable") and os.geteuid() == 0:
        pytest.skip("root reads a file without read permission")
    args = ["data", "stats", "--format", case.kind, "--root", str(root), "--no-images"]
    code = main([*args, "--json"])  # a traceback would raise here
    out, err = capsys.readouterr()
    if code == 2:  # nothing readable at all: one error line naming the file
        assert case.expected == "error" and case.file in err and case.says.lower() in err.lower()
        return
    stats = json.loads(out)
    findings = [
        f
        for v in stats["splits"].values()
        for e in (v.values() if case.kind == "fashioniq" else [v])
        for f in e["findings"]
    ]
    errors = [f for f in findings if f["severity"] == "error"]
    warnings = [f for f in findings if f["severity"] == "warning"]
    if case.expected == "accepted":
        assert findings == []
    elif case.expected == "warning":
        assert errors == [] and any(_matches(f, case) for f in warnings), findings
    else:
        assert any(_matches(f, case) for f in errors), findings
        assert main([*args, "--strict"]) == 1  # and --strict fails
        capsys.readouterr()


@pytest.mark.parametrize("name", [c.name for c in bad_inputs.spec_cases()])
def test_bad_spec(tmp_path, name):
    """Each spec through what ``cirbench train`` runs before any work."""
    [(case, path)] = [(c, p) for c, p in bad_inputs.write_specs(tmp_path) if c.name == name]
    if case.says is None:  # valid: loads and passes every check
        preflight(load_spec(path), str(path))
        return
    with pytest.raises(CirbenchError) as caught:
        preflight(load_spec(path), str(path))
    assert str(caught.value).startswith(str(path)), caught.value
    assert case.says in str(caught.value), caught.value


def test_train_checks_every_spec_before_training_any(tmp_path, capsys):
    specs = dict(bad_inputs.write_specs(tmp_path / "specs"))
    good = next(p for c, p in specs.items() if c.name == "valid")
    bad = next(p for c, p in specs.items() if c.name == "phase-typo")
    code = main(["train", str(good), str(bad), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"cirbench: error: {bad}: train.phases.combinr")
    assert "did you mean 'combiner'" in err
    assert not (tmp_path / "runs").exists() and not any(tmp_path.glob("**/mlflow.db"))
