"""The README's main job: the hello-world example runs end to end on a fresh daemon."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import free_port

EXAMPLE = Path(__file__).parents[1] / "examples" / "hello_world.py"


def test_hello_world_example_runs(rh_home):
    env = dict(os.environ, HELLO_PORT=str(free_port()))
    out = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "hello from worker pid" in out.stdout
    assert "word counts: {'a': 2, 'hot': 2, 'dog': 2}" in out.stdout
    assert "tokens: ['runhouse', 'sends', 'code']" in out.stdout
    assert "calls so far: 1" in out.stdout
    assert "remote error came back as AttributeError" in out.stdout
    assert "saved as /hello-user/word_counts" in out.stdout
    assert "loaded by name: {'matcha': 2}" in out.stdout
    assert "versions in Den: [1]" in out.stdout
    assert out.stdout.strip().endswith("done")
