"""An env with ``venv=True`` on a daemon that itself runs in a venv (the usual install, and always
the case on SSH hosts): the env's worker sees runhouse and its own packages, nothing else of the
daemon's environment. Client and daemon run from a venv, outside the repo folder."""

from __future__ import annotations

import json

from conftest import free_port
from venvs import make_venv, run_outside


def test_an_isolated_env_sees_runhouse_but_not_the_daemons_other_packages(tmp_path):
    python = make_venv(tmp_path / "venv")
    port = free_port()
    proc = run_outside(
        python,
        f"""
        import json
        import runhouse as rh

        def probe():
            import importlib.util, os, sys
            import runhouse, six
            return {{
                "prefix": sys.prefix,
                "runhouse": os.path.realpath(runhouse.__file__),
                "six": six.__version__,
                "visible": [m for m in ("httpx", "uvicorn", "starlette", "yaml")
                            if importlib.util.find_spec(m) is not None],
            }}

        cluster = rh.cluster(name="iso", host="localhost", server_connection_type="none",
                             server_port={port}).up()
        try:
            env = rh.env(reqs=["six==1.16.0"], name="iso_env", venv=True)
            print("RESULT", json.dumps(rh.function(probe).to(cluster, env=env)()))
        finally:
            cluster.teardown()
        """,
        home=tmp_path / "home",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert result["prefix"].endswith("iso_env")
    assert result["six"] == "1.16.0"
    assert result["runhouse"].startswith(str(tmp_path / "venv"))  # the daemon's installed copy, not the repo
    assert result["visible"] == []  # the daemon's own dependencies stay out of the env


def test_a_worker_that_cannot_start_shows_the_end_of_its_log(cluster):
    import pytest
    import user_funcs as uf

    import runhouse as rh

    broken = rh.env(env_vars={"PYTHONHOME": "/nonexistent-python-home"}, name="cannot_start")
    with pytest.raises(rh.WorkerDied) as died:
        rh.function(uf.add).to(cluster, env=broken)
    message = str(died.value)
    assert "before it started" in message and "the end of its log" in message
    assert "Fatal Python error" in message or "encodings" in message  # what Python itself printed
    assert rh.function(uf.add).to(cluster)(1, 2) == 3  # the cluster serves on


def test_env_installs_follow_the_hosts_pip_index_settings(monkeypatch):
    """uv reads none of pip's settings; a host set up for its own index through pip alone (here: an
    index nobody serves) must have its env installs go there, not to PyPI."""
    import pytest
    import user_funcs as uf
    from conftest import start_cluster

    import runhouse as rh

    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # the daemon inherits these
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    cluster = start_cluster("pip-index")
    try:
        env = rh.env(reqs=["six==1.16.0"], name="from_private_index", venv=True)
        with pytest.raises(rh.EnvSetupError, match="127.0.0.1:9"):
            rh.function(uf.add).to(cluster, env=env)
    finally:
        cluster.teardown()  # type: ignore[attr-defined]
