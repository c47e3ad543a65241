"""Named progress points where the fault-injection test (``tests/fault_injection.py``)
kills a process, and where it records how far a run got.

Production code calls :func:`reached` at a few points (a cache file filled, a training
step, a checkpoint or JSON file written but not yet renamed into place, a study trial
started, a report staged). Without the variables below it does nothing but one dict
look-up. ``CIRBENCH_FAULT_RECORD=FILE`` appends each point's name to ``FILE``, one a line;
``CIRBENCH_FAULT_KILL=NAME:N`` kills this process with SIGKILL (no clean-up, as a crash or
the OOM killer does) the ``N``-th time it reaches ``NAME`` (``*:N``: the ``N``-th point of
any name).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

RECORD_ENV = "CIRBENCH_FAULT_RECORD"
KILL_ENV = "CIRBENCH_FAULT_KILL"

_counts: Counter[str] = Counter()


def reached(name: str) -> None:
    """Progress point ``name`` (see the module docstring)."""
    record, kill = os.environ.get(RECORD_ENV), os.environ.get(KILL_ENV)
    if record is None and kill is None:
        return
    _counts[name] += 1
    _counts["*"] += 1
    if record:
        with open(record, "a", encoding="utf-8") as handle:
            handle.write(name + "\n")
    if kill:
        target, _, count = kill.rpartition(":")
        if target in (name, "*") and _counts[target] == int(count):
            os.kill(os.getpid(), signal.SIGKILL)
