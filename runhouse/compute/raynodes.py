"""A Ray cluster across SSH hosts: install Ray, start the head and join the others, list the nodes,
and stop exactly what we started.

Multi-node clusters stand on Ray for membership, resource accounting and placement (DESIGN.md
section 2). This module is the bring-up under them, driven over the SSH sessions of
:mod:`runhouse.compute.ssh`; nothing here imports Ray on the client::

    creds = SSHCreds("me", "~/.ssh/id_ed25519")
    nodes = RayNodes([RayHost("10.0.0.5", creds), RayHost("10.0.0.6", creds)], pool_for(settings.home))
    nodes.up()        # Ray into each host's venv (in parallel), head on the first host, the others join
    nodes.nodes()     # [RayNode(address="10.0.0.5", cpus=8.0, ..., alive=True), ...]
    nodes.stop()      # what up() started, on every host; never `ray stop`

* **Install**: ``ray`` (:data:`RAY_REQUIREMENT`) goes into the host's runhouse venv
  (``~/.rh/venvs/py-<hash>``, made if missing) with the bootstrap's installer: the host's uv, or
  uv brought in with its pip, and the host's package index settings. Every host at once, each
  progress line prefixed with the host's name.
* **Start**: each host runs ``ray start --block`` as the leader of a session of its own
  (``setsid``); Ray's processes stay in that session, so the session id names everything we
  started. The leader's pid and start time are recorded in ``~/.rh/ray/<port>/record.json`` on the
  host, with its log. Ray's temporary folder is one per host and port (under ``/tmp``, short enough
  for Ray's socket paths), so several nodes on one machine, and other users' Ray, never share it.
* **Join, not a second cluster**: when a GCS already answers at the head's ``address:port``
  (ours from an earlier ``up()``, or one the host's owner started), it is joined; a host that is
  already an alive node of it is left as it is.
* **Stop**: SIGTERM to the recorded leader (``ray start --block`` drains its node and stops its
  children), then SIGKILL to whatever of its session is left after a grace period; its temporary
  folder goes with it (the ``ray start`` log stays in ``~/.rh/ray/<port>/``). Processes
  outside our recorded sessions (a Ray cluster we joined, another user's Ray) are never touched.
  A leader pid now held by another process (start time differs) means ours are gone.

The host-side work is :data:`_HOST_SCRIPT` (standard library only, or ``ray`` for ``nodes``), sent
as ``python -c``. A failure raises :class:`~runhouse.exceptions.SSHError` naming the host and the
step (``find python``, ``venv``, ``install ray``, ``start ray head``, ``join ray``, ``stop ray``,
``ray nodes``) with the remote output.
"""

from __future__ import annotations

import concurrent.futures
import json
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from runhouse.compute import bootstrap
from runhouse.compute.hostkeys import ACCEPT_NEW
from runhouse.compute.ssh import SSHCreds, SSHPool, SSHSession
from runhouse.exceptions import SSHError

RAY_REQUIREMENT = "ray>=2.56,<3"  # keep in step with the `ray` extra in pyproject.toml
DEFAULT_PORT = 6379  # Ray's own default GCS port, so a cluster started by hand is found there
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 20.0
_RESULT = "@@rh-ray "  # marks the host script's one JSON result line among Ray's own output

Progress = Callable[[str], None]
T = TypeVar("T")

_HOST_SCRIPT = r'''
import hashlib, json, os, shutil, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path

def say(result):
    print("@@rh-ray " + json.dumps(result), flush=True)

def stat(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None

def session(sid):
    """Pids of live (not zombie) processes in session ``sid``."""
    found = []
    for entry in os.listdir("/proc"):
        fields = stat(entry) if entry.isdigit() else None
        if fields and fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(entry))
    return sorted(found)

def load(folder):
    try:
        return json.loads((folder / "record.json").read_text())
    except (OSError, ValueError):
        return None

def ours(record):
    """What of a recorded start still runs: the leader's session, unless its pid is another's now."""
    if not record:
        return []
    fields = stat(record["pid"])
    if fields and fields[19] != record["start"]:
        return []
    return session(record["pid"])

def stop(folder, grace):
    record = load(folder)
    pids = ours(record)
    if pids:
        leader = stat(record["pid"])
        try:
            if leader and leader[0] != "Z":
                os.kill(record["pid"], signal.SIGTERM)  # drains its node, then stops its children
            else:
                for pid in pids:
                    os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while session(record["pid"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in session(record["pid"]):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while session(record["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
    left = session(record["pid"]) if pids else []
    if record and not left:
        (folder / "record.json").unlink()
        shutil.rmtree(record["temp_dir"], ignore_errors=True)  # Ray's sockets and session logs
    return {"stopped": pids, "left": left}

def reachable(address, port):
    try:
        socket.create_connection((address, port), timeout=3).close()
        return True
    except OSError:
        return False

def start(folder, ray, args, env, timeout, grace):
    previous = stop(folder, grace)["stopped"]
    if previous:
        print(f"stopped the previous start of ours (pids {previous})", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    port = args[args.index("--port") + 1] if "--port" in args else args[args.index("--address") + 1]
    tag = hashlib.sha256(f"{Path.home()}:{port}".encode()).hexdigest()[:10]
    temp = os.path.join(tempfile.gettempdir(), f"rh-ray-{tag}")
    log = folder / "ray.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [ray, "start", "--block", *args, "--temp-dir", temp],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=folder, env={**os.environ, **env},
        )
    record = {"pid": proc.pid, "start": stat(proc.pid)[19], "args": args, "temp_dir": temp}
    (folder / "record.json.part").write_text(json.dumps(record))
    (folder / "record.json.part").rename(folder / "record.json")
    shown, deadline = 0, time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        lines = text.splitlines()
        complete = len(lines) if text.endswith("\n") else len(lines) - 1
        for line in lines[shown:complete]:
            print(line, flush=True)
        shown = max(shown, complete)
        if "Ray runtime started" in text:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exited with {proc.returncode}" if proc.poll() is not None else f"not up after {timeout:.0f} s"
            stop(folder, grace)
            say({"error": f"ray start {why}; its log: {log}"})
            sys.exit(1)
        time.sleep(0.2)
    record["pids"] = session(proc.pid)
    (folder / "record.json").write_text(json.dumps(record))
    say({"pids": record["pids"]})

def nodes(address):
    import ray
    ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
    try:
        say(ray.nodes())
    finally:
        ray.shutdown()

action, folder, rest = sys.argv[1], Path(sys.argv[2]).expanduser(), json.loads(sys.argv[3])
if action == "probe":
    say({"gcs": reachable(rest["address"], rest["port"]), "ours": ours(load(folder))})
elif action == "pids":
    record = load(folder)
    say({"ours": ours(record), "recorded": record is not None})
elif action == "stop":
    say(stop(folder, rest["grace"]))
elif action == "start":
    start(folder, rest["ray"], rest["args"], rest["env"], rest["timeout"], rest["grace"])
elif action == "nodes":
    nodes(rest["address"])
'''


@dataclass(frozen=True)
class RayOptions:
    """How Ray runs on every host: the head's GCS ``port`` and what each node offers
    (``None``: Ray detects it). ``env_vars`` are set for ``ray start``."""

    port: int = DEFAULT_PORT
    num_cpus: int | None = None
    num_gpus: int | None = None
    memory: int | None = None  # bytes
    object_store_memory: int | None = None  # bytes
    resources: tuple[tuple[str, float], ...] = ()  # custom resources, e.g. (("tpu_slice", 1.0),)
    requirement: str = RAY_REQUIREMENT
    env_vars: tuple[tuple[str, str], ...] = ()

    def node_args(self, extra_resources: dict[str, float] | None = None) -> list[str]:
        """``ray start`` flags for a node; ``extra_resources``: custom resources of that node alone."""
        args = ["--disable-usage-stats"]
        for flag, value in (
            ("--num-cpus", self.num_cpus),
            ("--num-gpus", self.num_gpus),
            ("--memory", self.memory),
            ("--object-store-memory", self.object_store_memory),
        ):
            if value is not None:
                args += [flag, str(value)]
        resources = {**dict(self.resources), **(extra_resources or {})}
        if resources:
            args += ["--resources", json.dumps(resources)]
        return args


@dataclass(frozen=True)
class RayHost:
    """One host: where SSH reaches it and with which credentials, the address the other hosts reach
    it at (Ray's node IP; ``None``: the SSH address), the Python its venv is made from (``None``:
    the newest 3.10+ on its PATH) and a name for messages (``None``: its address)."""

    address: str
    creds: SSHCreds
    node_ip: str | None = None
    python: str | None = None
    name: str | None = None
    resources: tuple[tuple[str, float], ...] = ()  # custom resources of this host only, with the options'

    @property
    def label(self) -> str:
        return self.name or self.address

    @property
    def ip(self) -> str:
        return self.node_ip or self.address


@dataclass(frozen=True)
class RayNode:
    """A node of the Ray cluster, as ``ray.nodes()`` on the head reports it."""

    node_id: str
    address: str
    alive: bool
    is_head: bool
    cpus: float
    gpus: float
    memory: int  # bytes Ray may schedule
    resources: dict[str, float]

    @classmethod
    def parse(cls, info: dict[str, Any]) -> RayNode:
        resources = {str(k): float(v) for k, v in (info.get("Resources") or {}).items()}
        return cls(
            node_id=str(info.get("NodeID", "")),
            address=str(info.get("NodeManagerAddress", "")),
            alive=bool(info.get("Alive")),
            is_head="node:__internal_head__" in resources,
            cpus=resources.get("CPU", 0.0),
            gpus=resources.get("GPU", 0.0),
            memory=int(resources.get("memory", 0.0)),
            resources=resources,
        )


@dataclass(frozen=True)
class UpReport:
    """What :meth:`RayNodes.up` did: the GCS address, whether the head's cluster was ours (started
    now or by an earlier ``up``) or one we joined, and per host: "started head", "joined",
    "already a node" or "joined existing head"."""

    gcs_address: str
    head_is_ours: bool
    actions: dict[str, str]


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")  # one write: hosts report from parallel threads
    sys.stderr.flush()


class RayNodes:
    """Ray across ``hosts``: the first is the head. See the module docstring for what each step does."""

    def __init__(
        self,
        hosts: Sequence[RayHost],
        pool: SSHPool,
        options: RayOptions | None = None,
        progress: Progress = _say,
        host_key_policy: str = ACCEPT_NEW,
    ) -> None:
        if not hosts:
            raise ValueError("RayNodes needs at least one host")
        self.hosts = list(hosts)
        self.options = options or RayOptions()
        self._pool = pool
        self._policy = host_key_policy
        self._progress = progress
        self._venvs: dict[str, str] = {}  # host label -> absolute venv path on the host

    @property
    def head(self) -> RayHost:
        return self.hosts[0]

    @property
    def gcs_address(self) -> str:
        return f"{self.head.ip}:{self.options.port}"

    @property
    def _folder(self) -> str:
        return f"{bootstrap.REMOTE_HOME}/ray/{self.options.port}"

    # -- steps ------------------------------------------------------------------------------------
    def install(self) -> None:
        """Install Ray into every host's venv, all hosts at once."""
        self._each(self.hosts, self._install, "install ray")

    def up(self) -> UpReport:
        """Install Ray, then start the head (or find the cluster already at the head's address) and
        join every host that is not an alive node of it yet."""
        self.install()
        head = self.head
        probe = self._script(head, "probe", {"address": head.ip, "port": self.options.port}, "probe ray")
        actions: dict[str, str] = {}
        if probe["gcs"]:
            head_is_ours = bool(probe["ours"])
            how = "ours, from an earlier start" if head_is_ours else "not started by runhouse: left running"
            self._tell(head, f"a Ray cluster already answers at {self.gcs_address} ({how}); joining it")
        else:
            args = ["--head", "--port", str(self.options.port), "--node-ip-address", head.ip]
            self._start(head, [*args, "--include-dashboard=false"], "start ray head")
            actions[head.label], head_is_ours = "started head", True
        present = {n.address for n in self.nodes() if n.alive}
        present -= self._gone(h for h in self.hosts if h.ip in present)
        joining = [h for h in self.hosts if h.ip not in present]
        for host in self.hosts:
            if host.ip in present:
                actions.setdefault(host.label, "already a node")
                self._tell(host, f"already a node of the Ray cluster at {self.gcs_address}")
        self._each(
            joining,
            lambda h: self._start(h, ["--address", self.gcs_address, "--node-ip-address", h.ip], "join ray"),
            "join ray",
        )
        actions.update({h.label: "joined" for h in joining})
        return UpReport(self.gcs_address, head_is_ours, actions)

    def _gone(self, hosts: Iterable[RayHost]) -> set[str]:
        """Of hosts the GCS still lists as alive, those whose Ray we started and which no longer
        runs (killed, or told by the GCS that it was declared dead): the GCS notices a dead node
        only after its health checks time out, and such a node must be started again, not skipped."""
        listed = list(hosts)
        found = self._each(listed, lambda h: self._script(h, "pids", {}, "ray pids"), "ray pids")
        return {h.ip for h, got in zip(listed, found, strict=True) if got["recorded"] and not got["ours"]}

    def nodes(self) -> list[RayNode]:
        """Every node the cluster knows (dead ones too, ``alive=False``), from ``ray.nodes()`` run
        in the head's venv."""
        found = self._script(self.head, "nodes", {"address": self.gcs_address}, "ray nodes", venv=True)
        return [RayNode.parse(info) for info in found]

    def started(self) -> dict[str, list[int]]:
        """Per host label, the pids of the Ray processes we started there and that still run."""
        found = self._each(self.hosts, lambda h: self._script(h, "pids", {}, "ray pids")["ours"], "ray pids")
        return {h.label: [int(p) for p in pids] for h, pids in zip(self.hosts, found, strict=True)}

    def stop(self) -> dict[str, list[int]]:
        """Stop what we started on every host (workers first, then the head) and only that; returns
        per host label the pids that were stopped."""
        stopped: dict[str, list[int]] = {}

        def one(host: RayHost) -> None:
            done = self._script(host, "stop", {"grace": STOP_GRACE_S}, "stop ray", timeout=STOP_GRACE_S + 60)
            if done["left"]:
                raise SSHError(
                    f"step 'stop ray' failed on {self._session(host).where}: pids {done['left']} still run"
                )
            stopped[host.label] = [int(p) for p in done["stopped"]]
            if done["stopped"]:
                self._tell(host, f"stopped Ray (pids {done['stopped']})")

        self._each(self.hosts[1:], one, "stop ray")
        one(self.head)
        return stopped

    # -- per host ---------------------------------------------------------------------------------
    def _tell(self, host: RayHost, message: str) -> None:
        self._progress(f"[{host.label}] {message}")

    def _session(self, host: RayHost) -> SSHSession:
        """The pool's session to ``host`` (connecting on first use, checking its host key)."""
        return self._pool.session(host.address, host.creds, host_key_policy=self._policy)

    def _python(self, host: RayHost) -> str:
        return bootstrap.find_python(self._session(host), host.python)

    def _venv(self, host: RayHost) -> str:
        """The host's venv, absolute (found, not made, when :meth:`install` has not run here)."""
        if host.label not in self._venvs:
            venv = bootstrap.venv_for(self._python(host))
            self._venvs[host.label] = self._session(host).home() + venv[1:]
        return self._venvs[host.label]

    def _install(self, host: RayHost) -> None:
        def say(message: str) -> None:
            self._tell(host, message)

        python = self._python(host)
        venv = bootstrap.venv_for(python)
        facts = bootstrap.prepare(self._session(host), python, venv, "-")
        self._session(host).remember_home(facts.home)
        home_venv = facts.home + venv[1:]
        uv = facts.uv or bootstrap._bring_uv(self._session(host), home_venv, facts, say)
        variables = " ".join(f"{k}={shlex.quote(v)}" for k, v in facts.uv_env)
        say(f"installing {self.options.requirement} into {venv} with uv ({uv}) from {facts.index}")
        bootstrap._stream(
            self._session(host),
            "install ray",
            f"env {variables} {shlex.quote(uv)} pip install --python {home_venv}/bin/python "
            f"{shlex.join(facts.uv_args)} {shlex.quote(self.options.requirement)}",
            "uv",
            facts.index,
            say,
        )
        self._venvs[host.label] = home_venv

    def _start(self, host: RayHost, args: list[str], step: str) -> None:
        venv = self._venv(host)
        env = {"RAY_USAGE_STATS_ENABLED": "0", **dict(self.options.env_vars)}
        args = [*args, *self.options.node_args(dict(host.resources))]
        payload: dict[str, Any] = {
            "ray": f"{venv}/bin/ray",
            "args": args,
            "env": env,
            "timeout": START_TIMEOUT_S,
            "grace": STOP_GRACE_S,
        }
        self._tell(host, f"{step}: ray start {shlex.join(args)}")
        result: list[Any] = []

        def line(text: str) -> None:
            if text.startswith(_RESULT):
                result.append(json.loads(text[len(_RESULT) :]))
            elif text.strip():
                self._tell(host, f"ray: {text}")

        done = self._session(host).stream(
            self._command(host, "start", payload, venv=True),
            line,
            timeout=START_TIMEOUT_S + STOP_GRACE_S + 30,
            quiet_s=15.0,
            on_quiet=lambda s: self._tell(host, f"still starting Ray ({s:.0f} s without output)"),
        )
        if done.exit_code != 0 or not result or "error" in result[-1]:
            why = result[-1]["error"] if result and "error" in result[-1] else f"exit code {done.exit_code}"
            raise SSHError(
                f"step '{step}' failed on {self._session(host).where} ({why}):\n{done.tail[-3000:]}"
            )
        self._tell(host, f"Ray is up (pids {result[-1]['pids']})")

    def _command(self, host: RayHost, action: str, payload: dict[str, Any], venv: bool) -> str:
        python = f"{self._venv(host)}/bin/python" if venv else self._python(host)
        return shlex.join([python, "-c", _HOST_SCRIPT, action, self._folder, json.dumps(payload)])

    def _script(
        self,
        host: RayHost,
        action: str,
        payload: dict[str, Any],
        step: str,
        venv: bool = False,
        timeout: float = 120.0,
    ) -> Any:
        """Run one action of the host script and return its JSON result."""
        rc, out, err = self._session(host).run(self._command(host, action, payload, venv), timeout, step)
        results = [line[len(_RESULT) :] for line in out.splitlines() if line.startswith(_RESULT)]
        if rc != 0 or not results:
            output = (out + err).strip()[-3000:] or "(no output)"
            raise SSHError(f"step '{step}' failed on {self._session(host).where} (exit code {rc}):\n{output}")
        return json.loads(results[-1])

    def _each(self, hosts: Sequence[RayHost], work: Callable[[RayHost], T], step: str) -> list[T]:
        """``work`` on every host at once; every failure is reported, each naming its host."""
        return on_every_host(hosts, work, step, lambda h: h.label, lambda h: self._session(h).where)


H = TypeVar("H")


def on_every_host(
    hosts: Sequence[H],
    work: Callable[[H], T],
    step: str,
    label: Callable[[H], str] = str,
    where: Callable[[H], str] | None = None,
) -> list[T]:
    """``work(host)`` for every host at once, in threads; the results in order. Every host that
    failed is reported in one :class:`SSHError`, each line naming the host (``label``), the step
    and, with ``where``, the login it failed on."""
    if not hosts:
        return []
    with concurrent.futures.ThreadPoolExecutor(len(hosts), thread_name_prefix="rh-hosts") as pool:
        futures = [pool.submit(work, host) for host in hosts]
        concurrent.futures.wait(futures)
    failures = []
    for host, future in zip(hosts, futures, strict=True):
        error = future.exception()
        if isinstance(error, SSHError):
            failures.append(f"[{label(host)}] {error}")
        elif error is not None:
            on = f" on {where(host)}" if where is not None else ""
            failures.append(f"[{label(host)}] step '{step}' failed{on}: {type(error).__name__}: {error}")
    if failures:
        raise SSHError("\n".join(failures))
    return [future.result() for future in futures]
