"""The seed's first line for real, on a cloud (costs money: about a minute of an A10G).

    RH_LIVE_CLOUD=aws .venv/bin/python -m pytest tests/live -q

Needs ``pip install "runhouse[sky]" "skypilot[aws]"`` and AWS credentials that ``sky check aws``
accepts. Launches ``rh-a10x`` (A10G:1), calls a function on it and tears it down, even on failure.
"""

from __future__ import annotations

import os

import pytest
import user_funcs as uf

import runhouse as rh

pytestmark = pytest.mark.live_cloud


def test_seed_first_line_on_a_real_cloud():
    provider = os.environ.get("RH_LIVE_CLOUD", "aws")
    gpu = rh.cluster(name="rh-a10x", instance_type="A10G:1", provider=provider, autostop_mins=30)
    try:
        gpu.up_if_not()
        assert gpu.status()["sky"]["status"] == "UP"
        assert rh.function(uf.add).to(gpu)(1, 2) == 3
    finally:
        gpu.teardown()
    assert gpu.status()["sky"] is None
