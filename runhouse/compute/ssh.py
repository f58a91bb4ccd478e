"""SSH to cluster hosts: credentials, commands, file upload and port forwarding (asyncssh).

asyncssh runs on an event loop in one background thread (started on first use); the sync
methods here submit coroutines to it. Connections are cached per (user, host, port, credentials)
and shared by every cluster object in the process, so the tunnel to a daemon is opened once and
reused; all of them are closed at interpreter exit. The tunnel itself is an OpenSSH process
(:mod:`runhouse.compute.forward`): asyncssh's forwarder passes every byte through Python.

Host keys are checked against ``$RH_HOME/known_hosts`` in the key exchange, before any credential
is sent (see :mod:`runhouse.compute.hostkeys` for the file and the policies).

Files go up over SFTP; a host whose sshd offers no SFTP subsystem gets them through the exec
channel (``cat > file`` fed the bytes on stdin). Long commands (installers) can be streamed: each
output line is handed over as it comes, and a silence is reported while it lasts.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import hashlib
import os
import shlex
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from runhouse.compute.forward import Listener, OpenSSHTunnel, openssh_usable
from runhouse.compute.hostkeys import ACCEPT_NEW, STRICT, HostKeyCheck, KnownHosts
from runhouse.exceptions import ConfigError, SSHError

T = TypeVar("T")
CONNECT_TIMEOUT_S = 15.0
UPLOAD_TIMEOUT_S = 600.0
_PID_MARK = "@@runhouse-pid "
_TUNNELS_LOCK = threading.Lock()


_KEY_FILES: set[Path] = set()


def memory_key_file(data: str) -> Path:
    """A 0600 file holding an in-memory key, for OpenSSH tools (ssh, rsync) that need a path.

    It lives in RAM-backed ``/dev/shm`` where there is one (never the user's disk) and is removed
    when this process exits."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    folder = base / f"rh-keys-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{hashlib.sha256(data.encode()).hexdigest()[:24]}-{os.getpid()}.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(data if data.endswith("\n") else data + "\n")
        if not _KEY_FILES:
            atexit.register(_remove_key_files)
        _KEY_FILES.add(path)
    return path


def _remove_key_files() -> None:
    for path in _KEY_FILES:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class SSHCreds:
    """How to log in: ``ssh_user`` and ``ssh_private_key`` (a path) or ``password``; with neither,
    the ssh agent and the default keys in ``~/.ssh`` are tried."""

    ssh_user: str
    ssh_private_key: str | None = None
    password: str | None = None
    ssh_port: int = 22
    ssh_proxy_command: str | None = None
    # a key held in memory (from a Den secret): never written to a config, used without a key file
    private_key_data: str | None = field(default=None, repr=False)

    @classmethod
    def from_dict(cls, creds: dict[str, Any]) -> SSHCreds:
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(creds) - valid)
        if unknown:
            raise ConfigError(
                f"unknown ssh_creds key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(valid))}"
            )
        creds = dict(creds)
        data = creds.pop("private_key_data", None)
        if not creds.get("ssh_user"):
            raise ConfigError("ssh_creds needs ssh_user")
        key = creds.get("ssh_private_key")
        if key is not None:
            path = Path(str(key)).expanduser()
            if not path.is_file():
                raise ConfigError(f"ssh_private_key {path} does not exist")
            key = str(path)
        try:
            port = int(creds.get("ssh_port") or 22)
        except (TypeError, ValueError):
            raise ConfigError(f"ssh_port must be a number, got {creds.get('ssh_port')!r}") from None
        return cls(
            str(creds["ssh_user"]), key, creds.get("password"), port, creds.get("ssh_proxy_command"), data
        )

    def public(self) -> dict[str, Any]:
        """The creds without secrets (for configs): the key's path stays, a password does not."""
        return {
            "ssh_user": self.ssh_user,
            "ssh_private_key": self.ssh_private_key,
            "ssh_port": self.ssh_port,
            "ssh_proxy_command": self.ssh_proxy_command,
        }

    def cache_key(self, host: str) -> tuple[str, ...]:
        secret = hashlib.sha256(((self.password or "") + (self.private_key_data or "")).encode()).hexdigest()[
            :16
        ]
        return (
            host,
            str(self.ssh_port),
            self.ssh_user,
            self.ssh_private_key or "",
            secret,
            self.ssh_proxy_command or "",
        )


@dataclass(frozen=True)
class Streamed:
    """How a streamed command ended: its exit code (None: stopped at its timeout) and last lines."""

    exit_code: int | None
    tail: str


class _LoopThread:
    """An asyncio loop in a daemon thread, for asyncssh's connections."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="runhouse-ssh", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class SSHSession:
    """One logged-in connection to a host."""

    def __init__(
        self,
        host: str,
        creds: SSHCreds,
        conn: asyncssh.SSHClientConnection,
        runner: _LoopThread,
        known_hosts: Path | None = None,
        tunnels: dict[int, OpenSSHTunnel] | None = None,
        reconnect: Callable[[], SSHSession] | None = None,
    ) -> None:
        self.host = host
        self.creds = creds
        self._conn = conn
        self._runner = runner
        self._known_hosts = known_hosts or Path(os.devnull)
        # tunnels by remote port; the pool gives every connection to this host the same dict
        self._tunnels: dict[int, OpenSSHTunnel] = {} if tunnels is None else tunnels
        self._reconnect: Callable[[], SSHSession] = reconnect or (lambda: self)
        self.cache: dict[tuple[int, str], str] = {}  # small files read from the host, per connection
        self._home: str | None = None
        self._sftp: bool | None = None  # None: not tried yet on this connection

    @property
    def where(self) -> str:
        return f"{self.creds.ssh_user}@{self.host}:{self.creds.ssh_port}"

    def run(self, command: str, timeout: float = 600.0, step: str = "run") -> tuple[int, str, str]:
        """Run a shell command; ``(exit code, stdout, stderr)``."""

        async def go() -> tuple[int, str, str]:
            result = await self._conn.run(command, check=False, timeout=timeout)
            return (
                int(result.exit_status if result.exit_status is not None else -1),
                str(result.stdout or ""),
                str(result.stderr or ""),
            )

        try:
            return self._runner.run(go(), timeout + 5)
        except (asyncssh.Error, OSError, TimeoutError) as e:
            raise SSHError(f"{step} on {self.where} failed: {type(e).__name__}: {e}") from e

    def home(self) -> str:
        """The login's home folder on the host (``$HOME``), asked once per connection."""
        if self._home is None:
            rc, out, err = self.run('printf %s "$HOME"', timeout=30, step="find home")
            if rc != 0 or not out.startswith("/"):
                raise SSHError(f"cannot find the home folder on {self.where}: {(out + err).strip()[-500:]}")
            self._home = out
        return self._home

    def remember_home(self, home: str) -> None:
        """Record ``$HOME`` learnt by another command (saves :meth:`home` a round trip)."""
        self._home = home

    def upload(self, local: Path, remote: str, step: str = "upload") -> None:
        """Copy ``local`` to ``remote`` on the host (a ``~/`` path starts at the login's ``$HOME``).

        SFTP when the host offers it, else ``cat`` over the exec channel; the SSH server's
        starting folder plays no part."""
        if remote.startswith("~/"):
            remote = f"{self.home()}/{remote[2:]}"
        if self._sftp is not False:
            try:
                self._runner.run(self._sftp_put(local, remote), UPLOAD_TIMEOUT_S)
                self._sftp = True
                return
            except asyncssh.ChannelOpenError as e:
                if self._sftp:  # it worked on this connection before: this is another failure
                    raise SSHError(f"{step} on {self.where} failed over SFTP: {e}") from e
                self._sftp = False  # no SFTP subsystem on this host ("Session request failed")
                sftp_error = str(e)
            except (asyncssh.Error, OSError, TimeoutError) as e:
                raise SSHError(f"{step} on {self.where} failed over SFTP: {e}") from e
        else:
            sftp_error = "not offered"
        try:
            rc, err = self._runner.run(self._exec_put(local, remote), UPLOAD_TIMEOUT_S)
        except (asyncssh.Error, OSError, TimeoutError) as e:
            rc, err = -1, f"{type(e).__name__}: {e}"
        if rc != 0:
            raise SSHError(
                f"{step} on {self.where} failed: the host has no SFTP subsystem ({sftp_error}) and "
                f"copying through the exec channel (cat > {remote}) failed too: {err.strip()[-500:]}"
            )

    async def _sftp_put(self, local: Path, remote: str) -> None:
        async with self._conn.start_sftp_client() as sftp:
            await sftp.put(str(local), remote)

    async def _exec_put(self, local: Path, remote: str) -> tuple[int, str]:
        result = await self._conn.run(f"cat > {shlex.quote(remote)}", stdin=local, encoding=None, check=False)
        err = result.stderr or b""
        message = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
        return int(result.exit_status if result.exit_status is not None else -1), message

    def stream(
        self,
        command: str,
        on_line: Callable[[str], None],
        *,
        timeout: float,
        quiet_s: float,
        on_quiet: Callable[[float], None],
    ) -> Streamed:
        """Run ``command``, handing each line of its output (stdout and stderr merged) to
        ``on_line`` as it comes; while no line has come for ``quiet_s`` seconds (and every
        ``quiet_s`` after), call ``on_quiet`` with the seconds of silence. Past ``timeout`` the
        command's process group is stopped and the result says so."""
        tail: collections.deque[str] = collections.deque(maxlen=60)

        async def go() -> int | None:
            # sshd makes each session's shell a process group leader: its pid names the group
            proc = await self._conn.create_process(
                f'echo "{_PID_MARK}$$"; {command}', stderr=asyncssh.STDOUT, encoding="utf-8", errors="replace"
            )
            lines: asyncio.Queue[str | None] = asyncio.Queue()
            group = ""

            async def pump() -> None:
                async for line in proc.stdout:
                    await lines.put(line.rstrip("\r\n"))
                await lines.put(None)

            reader = asyncio.ensure_future(pump())
            deadline = last = time.monotonic()
            deadline += timeout
            try:
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        line = await asyncio.wait_for(lines.get(), min(quiet_s, left))
                    except (asyncio.TimeoutError, TimeoutError):
                        if time.monotonic() < deadline:
                            on_quiet(time.monotonic() - last)
                        continue
                    if line is None:
                        await proc.wait(check=False)
                        return int(proc.exit_status if proc.exit_status is not None else -1)
                    if line.startswith(_PID_MARK) and not group:
                        group = line[len(_PID_MARK) :]
                        continue
                    last = time.monotonic()
                    tail.append(line)
                    on_line(line)
                await self._stop_group(group, proc)
                return None
            finally:
                reader.cancel()
                proc.close()

        try:
            rc = self._runner.run(go(), timeout + 30)
        except (asyncssh.Error, OSError, concurrent.futures.TimeoutError) as e:
            raise SSHError(
                f"running {command.split()[0]} on {self.where} failed: {type(e).__name__}: {e}"
            ) from e
        return Streamed(rc, "\n".join(tail))

    async def _stop_group(self, group: str, proc: asyncssh.SSHClientProcess[str]) -> None:
        """Stop a streamed command's process group (TERM, then KILL after a grace period).

        Closing the channel is not enough: sshd keeps a session open until its command exits."""
        if not group.isdigit():
            return
        await self._conn.run(f"kill -TERM -- -{group} 2>/dev/null", check=False)
        try:
            await asyncio.wait_for(proc.wait_closed(), 5)
        except (asyncio.TimeoutError, TimeoutError):
            await self._conn.run(f"kill -KILL -- -{group} 2>/dev/null", check=False)

    def forward(self, remote_port: int) -> int:
        """A local port (on 127.0.0.1) tunnelled to 127.0.0.1:``remote_port`` on the host.

        OpenSSH carries it where it can (:mod:`runhouse.compute.forward`); the tunnel outlives this
        connection (the pool hands it to the next one to this host) and is reopened here, on the
        same port, if it went down."""
        with _TUNNELS_LOCK:  # two threads asking at once get one tunnel
            tunnel = self._tunnels.get(remote_port)
            if tunnel is None:
                tunnel = self._tunnels[remote_port] = self._new_tunnel(remote_port)
        return tunnel.open()

    def tunnel(self, remote_port: int) -> OpenSSHTunnel | None:
        """The tunnel to ``remote_port``, if one was opened (tests and benchmarks look at its pid)."""
        return self._tunnels.get(remote_port)

    def _new_tunnel(self, remote_port: int) -> OpenSSHTunnel:
        why_not = openssh_usable(self.creds.password)
        login: list[str] | None = None
        if not why_not:
            # the key was checked (and recorded) by asyncssh before this: OpenSSH must find it as is
            strict = KnownHosts(self._known_hosts, STRICT)
            login = openssh_argv(self.host, self.creds, strict)
            # a password goes to sshpass through a pipe; a key never needs a prompt
            only = "PubkeyAuthentication=no" if self.creds.password else "BatchMode=yes"
            login = [*login[:-1], "-o", only, login[-1]]

        def fallback(local_port: int) -> tuple[int, Listener]:
            return self._reconnect()._asyncssh_forward(local_port, remote_port)

        return OpenSSHTunnel(self.where, remote_port, login, self.creds.password, fallback, why_not)

    def _asyncssh_forward(self, local_port: int, remote_port: int) -> tuple[int, Listener]:
        """asyncssh's forward from 127.0.0.1:``local_port`` (0: any free port); bytes pass through
        Python on our loop thread, so this is the slower way."""

        async def go() -> asyncssh.SSHListener:
            return await self._conn.forward_local_port("127.0.0.1", local_port, "127.0.0.1", remote_port)

        try:
            listener = self._runner.run(go(), 30)
        except (asyncssh.Error, OSError) as e:
            raise SSHError(f"opening a tunnel to port {remote_port} on {self.where} failed: {e}") from e

        conn, loop = self._conn, self._runner.loop

        class Forwarding:
            def alive(self) -> bool:
                return not conn.is_closed()

            def close(self) -> None:
                loop.call_soon_threadsafe(listener.close)  # asyncssh's objects belong to its loop

        return int(listener.get_port()), Forwarding()

    def close_forward(self, remote_port: int) -> None:
        """Stop the tunnel to ``remote_port`` (its ssh process, by pid)."""
        tunnel = self._tunnels.pop(remote_port, None)
        if tunnel is not None:
            tunnel.close()

    def close(self) -> None:
        for port in list(self._tunnels):
            self.close_forward(port)
        self._runner.loop.call_soon_threadsafe(self._conn.close)


def openssh_argv(host: str, creds: SSHCreds, known: KnownHosts) -> list[str]:
    """An ``ssh`` command line logging into ``host`` (``user@host`` last, no remote command), its
    host key checked against ``known``; a key held in memory goes as its 0600 RAM copy."""
    argv = ["ssh", "-p", str(creds.ssh_port), *known.openssh_options()]
    key_file = creds.ssh_private_key
    if creds.private_key_data:
        key_file = str(memory_key_file(creds.private_key_data))
    if key_file:
        argv += ["-i", key_file, "-o", "IdentitiesOnly=yes"]
    if creds.ssh_proxy_command:
        argv += ["-o", f"ProxyCommand={creds.ssh_proxy_command}"]
    argv.append(f"{creds.ssh_user}@{host}")
    return argv


class SSHPool:
    """Cached sessions, one per (host, credentials); created on first use."""

    def __init__(self, known_hosts: Path) -> None:
        self._known_hosts = known_hosts
        self._runner: _LoopThread | None = None
        self._sessions: dict[tuple[str, ...], SSHSession] = {}
        self._tunnels: dict[tuple[str, ...], dict[int, OpenSSHTunnel]] = {}
        self._lock = threading.Lock()
        atexit.register(self.close_all)

    def session(
        self,
        host: str,
        creds: SSHCreds,
        timeout: float = CONNECT_TIMEOUT_S,
        host_key_policy: str = ACCEPT_NEW,
    ) -> SSHSession:
        """A logged-in session, the cached one while it is open; a new connection checks the host's
        key by ``host_key_policy`` before logging in."""
        known = KnownHosts(self._known_hosts, host_key_policy)
        key = creds.cache_key(host)
        with self._lock:
            cached = self._sessions.get(key)
            if cached is not None and not cached._conn.is_closed():
                return cached
            if self._runner is None:
                self._runner = _LoopThread()
            runner = self._runner
        conn = runner.run(self._connect(host, creds, timeout, known.check()), timeout + 10)

        def reconnect() -> SSHSession:
            return self.session(host, creds, timeout, host_key_policy)

        with self._lock:
            tunnels = self._tunnels.setdefault(key, {})  # they outlive a lost connection
            session = SSHSession(host, creds, conn, runner, self._known_hosts, tunnels, reconnect)
            self._sessions[key] = session
        return session

    async def _connect(
        self, host: str, creds: SSHCreds, timeout: float, check: HostKeyCheck
    ) -> asyncssh.SSHClientConnection:
        where = f"{creds.ssh_user}@{host}:{creds.ssh_port}"
        options: dict[str, Any] = {
            "username": creds.ssh_user,
            "port": creds.ssh_port,
            "connect_timeout": timeout,
            "login_timeout": timeout,
            "keepalive_interval": 30,
            **check.connect_options(),
        }
        if creds.private_key_data:
            try:
                options["client_keys"] = [asyncssh.import_private_key(creds.private_key_data)]
            except (asyncssh.KeyImportError, ValueError) as e:
                raise SSHError(f"the private key in the ssh secret for {where} cannot be read: {e}") from None
        elif creds.ssh_private_key:
            options["client_keys"] = [creds.ssh_private_key]
        elif creds.password:
            options["client_keys"] = None  # password only
        # else: asyncssh's defaults, the ssh agent and ~/.ssh/id_* keys
        if creds.password:
            options["password"] = creds.password
        if creds.ssh_proxy_command:
            options["proxy_command"] = creds.ssh_proxy_command
        try:
            conn = await asyncio.wait_for(asyncssh.connect(host, **options), timeout + 5)
        except asyncssh.PermissionDenied as e:
            how = (
                "key"
                if creds.ssh_private_key or creds.private_key_data
                else ("password" if creds.password else "default keys or agent")
            )
            raise SSHError(
                f"{where} refused the login (step: connect): wrong {how} for {creds.ssh_user} ({e})"
            ) from None
        except asyncssh.HostKeyNotVerifiable as e:
            reason = check.refusal or f"its host key is not trusted by {check.known.path}: {e}"
            raise SSHError(f"{where} (step: connect): {reason}") from None
        except (asyncio.TimeoutError, TimeoutError):
            raise SSHError(f"{where} did not answer within {timeout:.0f}s (step: connect)") from None
        except (OSError, asyncssh.Error) as e:
            raise SSHError(f"cannot reach {where} (step: connect): {e}") from None
        return conn

    def close_all(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
            tunnels, self._tunnels = [t for by_port in self._tunnels.values() for t in by_port.values()], {}
        for session in sessions:
            session.close()
        for tunnel in tunnels:  # those whose connection was lost and not made again
            tunnel.close()


_POOLS: dict[Path, SSHPool] = {}


def pool_for(home: Path) -> SSHPool:
    """The process's session pool for this RH_HOME (made on first use, not at import)."""
    pool = _POOLS.get(home)
    if pool is None:
        pool = _POOLS[home] = SSHPool(home / "known_hosts")
    return pool
