"""SSH test hosts that install runhouse the way a user's hosts would (used by tests and bench/ssh.py).

``lab(n)`` starts ``n`` hosts (``tests/sshhosts.py``: network namespaces with their own sshd and
their own ``HOME``) and serves them a package index over HTTP from this machine: the wheels of
runhouse's dependencies and of uv, for the hosts' Python, downloaded once (``tests/venvs.py``).
Each host's ``~/.config/pip/pip.conf`` names that index, as an admin would configure a host
behind a firewall; the bootstrap finds it there and passes it on to uv. Nothing a host installs
comes from this machine's Python. All hosts of a process share one package cache folder
(``XDG_CACHE_HOME``), so after the first host, installs find their wheels cached, as on a
machine that installed before.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import sshhosts
import venvs
from sshhosts import Host, TestHosts

from runhouse.compute.bootstrap import FIND_PYTHON

PREREQUISITES = ("sshpass", "rsync")


@functools.cache
def shared_cache() -> Path:
    """The package cache folder of every test host in this process (removed at exit)."""
    path = Path(tempfile.mkdtemp(prefix="rh-host-cache-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def host_python_version(hosts: TestHosts) -> str:
    """``X.Y`` of the Python the bootstrap will find on the hosts' PATH."""
    found = hosts.ssh(hosts.hosts[0], FIND_PYTHON)
    python = found.stdout.strip().splitlines()[-1] if found.returncode == 0 and found.stdout.strip() else ""
    if not python:
        raise RuntimeError("the SSH test hosts have no Python 3.10+ on their PATH (apt-get install python3)")
    version = hosts.ssh(hosts.hosts[0], f"{python} -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'")
    return version.stdout.strip()


def point_pip_at(host: Host, url: str) -> None:
    """Write the host's ``~/.config/pip/pip.conf`` with ``url`` as its package index."""
    conf = host.home / ".config" / "pip" / "pip.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    trusted = url.split("//", 1)[1].split(":", 1)[0]  # plain HTTP: pip asks for the host to be trusted
    conf.write_text(f"[global]\nindex-url = {url}\ntrusted-host = {trusted}\n")


@contextlib.contextmanager
def lab(n: int = 1, index_extra: Sequence[str] = (), **options: object) -> Iterator[tuple[TestHosts, str]]:
    """``n`` hosts whose pip is pointed at a package index served from here; yields
    ``(hosts, index URL)``. ``index_extra`` requirements (e.g. Ray) are served too, with their
    dependencies; ``options`` go to :class:`sshhosts.TestHosts`."""
    sshhosts.require(PREREQUISITES)
    with TestHosts(n=n, root_env={"XDG_CACHE_HOME": str(shared_cache())}, **options) as hosts:  # type: ignore[arg-type]
        root = venvs.package_index(host_python_version(hosts), index_extra)
        # one server for all: every host reaches the root namespace's addresses through its gateway
        with venvs.serve_index(root, hosts.hosts[0].gateway) as url:
            for host in hosts.hosts:
                point_pip_at(host, url)
            yield hosts, url


@contextlib.contextmanager
def ray_lab(n: int = 3) -> Iterator[TestHosts]:
    """``n`` hosts for multi-node tests: Ray's requirement served by the index too, and the hosts
    routed to each other (Ray's nodes and our placed workers talk host to host)."""
    from runhouse.compute.raynodes import RAY_REQUIREMENT

    with lab(n=n, index_extra=(RAY_REQUIREMENT,)) as (hosts, _url):
        hosts.route_between_hosts()
        yield hosts
