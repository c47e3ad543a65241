"""kill -9 of ``cirbench train`` and ``cirbench sweep`` at recorded progress points, then
resume: nothing finished is lost, nothing is duplicated (``tests/fault_injection.py``).

Marked ``fault``: CI runs this bounded campaign (``CIRBENCH_FAULT_KILLS`` train kills,
default 8, and a third as many sweep kills); ``python -m tests.fault_injection --kills N``
runs a longer one.
"""

from __future__ import annotations

import os

import pytest

from tests.fault_injection import sweep_campaign, train_campaign

KILLS = int(os.environ.get("CIRBENCH_FAULT_KILLS", "8"))

pytestmark = [pytest.mark.fault, pytest.mark.slow]


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    return root / "reference", root / "killed"


def test_killed_training_resumes_to_the_same_result(homes):
    reference, killed = homes
    campaign = train_campaign(reference, killed / "train", KILLS)
    print("\n".join(campaign.kills + campaign.notes))
    assert len(campaign.kills) >= KILLS, campaign
    # the draw reached the interesting moments
    kinds = {k.split(":")[1] for k in campaign.kills}
    assert kinds & {"train.step", "write.pt"}, kinds


def test_killed_sweep_keeps_anchors_budget_and_report(homes):
    reference, killed = homes
    campaign = sweep_campaign(reference, killed / "sweep", max(1, KILLS // 3))
    print("\n".join(campaign.kills + campaign.notes))
    assert campaign.kills, campaign
