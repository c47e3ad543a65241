"""The import-layers contract (tests/import_layers.py) holds, and it rejects the import
edges that closed the four cycles of the flat layout."""

from __future__ import annotations

import copy

from tests.import_layers import LAYERS, cycles, edge_violation, import_graph, violations


def test_the_code_keeps_the_import_layers():
    graph = import_graph()
    assert len(graph) > 100 and "bench.train.engine" in graph and "methods.clip4cir" in graph
    assert violations(graph) == []


def test_every_module_is_in_a_layer_and_function_level_imports_count():
    graph = import_graph()
    # bench.cli imports its handlers' libraries inside functions: they are edges too
    assert "bench.runner.ablate" in graph["bench.cli.suites"]
    assert {name for name, _ in LAYERS}  # the table is not empty


def test_the_old_cycles_are_rejected():
    # engine <-> pretrain: the synthetic pre-training took the engine's optimiser
    assert "higher layer 'train'" in edge_violation("bench.backbones.pretrain", "bench.train.loop")
    # evaluation -> data/experiment (eval_text) closed experiment -> positives -> evaluation
    assert "higher layer 'train'" in edge_violation("bench.evaluation.encode", "bench.train.data")
    # report <-> sweep: the report took the study's storage helpers, the sweep the report
    assert "share layer" in edge_violation("bench.report.collect", "bench.runner.study")
    assert "share layer" in edge_violation("bench.report.build", "bench.runner.grid")
    # the methods package __init__ imported by its own method files
    assert "own package's __init__" in edge_violation("methods.clip4cir", "methods")
    # synthetic <-> synthetic_circo: two modules of one package importing each other
    graph = copy.deepcopy(import_graph())
    graph["bench.synthetic.write"].add("bench.synthetic.circo")
    graph["bench.synthetic.circo"].add("bench.synthetic.write")
    assert ["bench.synthetic.circo", "bench.synthetic.write"] in cycles(graph)


def test_allowed_edges_pass():
    assert edge_violation("bench.train.engine", "bench.spn.modifiers") is None
    assert edge_violation("bench.runner.study", "bench.runner.grid") is None  # one package
    assert edge_violation("bench.config.spn", "bench.spn.compositions") is None  # vocabulary
