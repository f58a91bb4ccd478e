"""The tunnel to a daemon: OpenSSH's own port forwarding, ours by pid, asyncssh's as a fallback.

A call through asyncssh's forwarder costs ~0.9 ms more than a direct one, and 100 MB move at a
fraction of the link's speed: every byte passes through Python (our SSH loop thread) twice. An
``ssh -N -L 127.0.0.1:<local>:127.0.0.1:<port>`` process does the same job in C (measured in
``bench/tunnel.py``, written up in docs/benchmarks.md). The process keeps our rules:

* **Host key.** It runs with ``StrictHostKeyChecking=yes`` against our one ``known_hosts``: the
  forward is opened only after asyncssh has connected to the host, which checked (and, under
  ``accept-new``, recorded) the key, so OpenSSH refuses a key that differs before logging in.
* **Credentials.** A key file is passed with ``IdentitiesOnly``; a key from a Den secret as the
  0600 ``/dev/shm`` copy OpenSSH tools get; a password through ``sshpass -d`` (a pipe: in no argv
  and no environment). ``BatchMode`` keeps ssh from ever prompting, so a forward cannot hang on a question.
* **Listening.** On ``127.0.0.1`` only, the address the asyncssh forward used; a port rather than a
  Unix socket, because cluster and function endpoints are URLs (curl, other HTTP clients).
* **Ours by pid.** The process is started from this tunnel's own thread; on Linux it is tied to
  that thread's life (``PR_SET_PDEATHSIG``), so it goes when this process dies, even by SIGKILL.
  ``close()`` (cluster teardown, the pool closing, interpreter exit) stops it by pid.
* **A dead forward** (killed, its connection lost) is restarted on the same local port, so a
  client's kept address stays good; calls in the gap fail at once rather than hang. Before it
  connects, the client asks :meth:`OpenSSHTunnel.gate` whether our forward serves the port right
  now: in the gap another local user could have bound it, and would get the request's token. After three failed starts in a row, and wherever OpenSSH cannot be used (no
  ``ssh``, a password without ``sshpass``), the asyncssh forward takes the port, with a one-line
  warning saying why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import IO, Protocol

import psutil

from runhouse.exceptions import ConnectionError_, SSHError

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0  # connect + log in + bind; ConnectTimeout is 15 s of it
RESTART_BACKOFF_S = (0.1, 1.0, 3.0)  # waits before the 1st, 2nd, 3rd restart in a row
HEALTHY_S = 10.0  # a forward that ran this long resets the count of failed restarts

# OpenSSH's default ciphers, AES-GCM first: with AES instructions (x86-64 since ~2010, Apple and
# other ARMv8 chips) it moves bulk data ~1.5x faster than chacha20-poly1305, OpenSSH's first choice
# (bench/tunnel.py's notes in docs/benchmarks.md). The same set, so no host is refused.
CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr"

# Run by the Python we run on, then replaced by ssh (exec keeps the pid): the kernel sends ssh
# SIGTERM when the thread that started it ends, and the process it belongs to with it.
_TIED = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 15)\n"  # PR_SET_PDEATHSIG, SIGTERM
    "if os.getppid() != int(sys.argv[1]): os._exit(70)\n"  # the parent died before prctl
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


class Listener(Protocol):
    """What the asyncssh fallback hands back."""

    def alive(self) -> bool:
        """Whether it still forwards (its SSH connection is open)."""
        ...

    def close(self) -> None: ...


def forward_options(remote_port: int, local_port: int) -> list[str]:
    """ssh options for a forward-only connection with fixed, non-interactive behaviour."""
    return [
        "-N",
        "-T",
        "-o", "ExitOnForwardFailure=yes",
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=3",
        "-o", "ConnectTimeout=15",
        "-o", "ControlMaster=no",
        "-o", "ControlPath=none",
        "-o", "ForwardAgent=no",
        "-o", "ForwardX11=no",
        "-o", "PermitLocalCommand=no",
        "-o", "LogLevel=ERROR",
        "-o", f"Ciphers={CIPHERS}",
        "-L", f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}",
    ]  # fmt: skip


class OpenSSHTunnel:
    """127.0.0.1:``local_port`` forwarded to 127.0.0.1:``remote_port`` on a host.

    ``login`` is the ``ssh`` command line that logs into the host (options, ``user@host`` last);
    None when OpenSSH cannot be used here, with ``why_not`` saying why. A ``password`` is handed to
    ``sshpass`` through a pipe (``-d``), so it is in no argv and no environment. ``fallback(port)`` opens
    asyncssh's forward on that local port (0: any)."""

    def __init__(
        self,
        where: str,
        remote_port: int,
        login: list[str] | None,
        password: str | None,
        fallback: Callable[[int], tuple[int, Listener]],
        why_not: str = "",
    ) -> None:
        self.where = where
        self.remote_port = remote_port
        self._login = login
        self._password = password
        self._fallback = fallback
        self._why_not = why_not
        self.local_port = 0
        self.restarts = 0  # how many times the forward came back after dying (for tests, status)
        self._proc: subprocess.Popen[bytes] | None = None  # the ssh process, from its start
        self._serving: subprocess.Popen[bytes] | None = None  # the same once it listens
        self._listener: Listener | None = None  # the asyncssh forward, when that is what serves
        self._closed = False
        self._gave_up = False
        self._lock = threading.Lock()  # one open() or close() at a time
        self._proc_lock = threading.Lock()  # the process being swapped (the tunnel's thread takes it)
        self._thread: threading.Thread | None = None

    # -- what callers use ---------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The ssh process serving the forward now (None: the asyncssh fallback, or none)."""
        proc = self._serving
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def kind(self) -> str:
        return "openssh" if self.pid is not None else ("asyncssh" if self._listener else "none")

    def alive(self) -> bool:
        """Whether something serves the port (or is bringing it back)."""
        if self._closed:
            return False
        if self._listener is not None:
            return self._listener.alive()
        return not self._gave_up and self._thread is not None and self._thread.is_alive()

    def gate(self) -> None:
        """Before a client opens a connection to the local port: it must be served by this
        forward right now (our ssh process alive, which holds the port while it lives, or our
        asyncssh listener). Between an ssh dying and its restart the port is free: another local
        user who bound it would receive the request and its token, so the client is refused here
        instead and nothing is sent. (What is left is the moment between this check and the
        connect: the ssh would have to die and the port be taken inside it.)"""
        listener = self._listener
        if listener is not None and listener.alive():
            return
        proc = self._serving
        if not self._closed and proc is not None and listener is None and _running(proc):
            return
        raise ConnectionError_(
            f"the SSH tunnel to {self.where} (127.0.0.1:{self.local_port}) is down: its ssh process "
            "ended and is being restarted, so nothing was sent; retry in a moment"
            + (" (the tunnel was closed)" if self._closed else "")
        )

    def open(self) -> int:
        """Start the forward (on the port it had, if it had one) and return the local port."""
        with self._lock:
            if self._closed:
                raise SSHError(f"the tunnel to port {self.remote_port} on {self.where} was closed")
            if self.alive():
                return self.local_port
            if self._listener is not None:  # asyncssh's, on a connection since lost
                self._listener.close()
                self._listener = None
            self._gave_up = False
            if self._login is None:
                return self._use_fallback(f"OpenSSH cannot be used: {self._why_not}")
            started = threading.Event()
            failure: list[str] = []
            self._thread = threading.Thread(
                target=self._run, args=(started, failure), name=f"runhouse-tunnel-{self.where}", daemon=True
            )
            self._thread.start()
            started.wait()
            if self._closed:
                raise SSHError(f"the tunnel to port {self.remote_port} on {self.where} was closed")
            if failure:
                self._thread.join()
                return self._use_fallback(failure[0])
            return self.local_port

    def close(self) -> None:
        """Stop the forward: the ssh process by its pid, or the asyncssh listener."""
        self._closed = True
        with self._proc_lock:
            proc, self._proc = self._proc, None
            listener, self._listener = self._listener, None
        if proc is not None:
            _stop(proc)
        if listener is not None:
            listener.close()

    # -- the tunnel's thread ------------------------------------------------------------------------
    def _run(self, started: threading.Event, failure: list[str]) -> None:
        """Start ssh, and start it again while it dies and the tunnel is not closed."""
        try:
            reason = self._start(again=False)
            for _ in range(2):  # a first port someone took between our pick and ssh's bind: another
                if not (reason and "Address already in use" in reason):
                    break
                reason = self._start(again=False)
            if reason is not None:
                failure.append(reason)
                return
        finally:
            started.set()  # whatever happened, open() stops waiting
        self._keep_up()

    def _keep_up(self) -> None:
        """Wait on the running ssh; when it dies, start another on the same port (backing off)."""
        failed = 0
        began = time.monotonic()
        reason: str | None = None
        while not self._closed:
            if reason is None:
                reason = self._wait()
            if self._closed:
                return
            failed = 1 if time.monotonic() - began > HEALTHY_S else failed + 1
            if failed > len(RESTART_BACKOFF_S):
                self._give_up(reason)
                return
            time.sleep(RESTART_BACKOFF_S[failed - 1])
            began = time.monotonic()
            reason = self._start(again=True)

    def _wait(self) -> str:
        """Wait for the running ssh to end; how it ended."""
        proc = self._proc
        if proc is None:
            return "stopped"
        code = proc.wait()
        return f"ssh exited with code {code}: {_tail(proc)}"

    def _give_up(self, reason: str) -> None:
        """After failed restarts: asyncssh's forward on the same port, or down until the next open()."""
        with self._lock:
            if self._closed or self._thread is not threading.current_thread():
                return
            log.warning(
                "the ssh forward to %s port %d keeps failing (%s); using the slower asyncssh forward",
                self.where,
                self.remote_port,
                reason,
            )
            try:
                self._use_fallback(None)
            except SSHError as e:
                log.warning("the tunnel to %s port %d is down: %s", self.where, self.remote_port, e)
            self._gave_up = self._listener is None

    def _start(self, again: bool) -> str | None:
        """One ssh process, ready to forward: None, or why it could not be started."""
        assert self._login is not None
        port = self.local_port or _free_port()
        argv = [*self._login[:-1], *forward_options(self.remote_port, port), self._login[-1]]
        if self._closed:
            return "closed"
        fds: tuple[int, ...] = ()
        if self._password is not None:
            fds = (_password_pipe(self._password),)
            argv = ["sshpass", "-d", str(fds[0]), *argv]
        if sys.platform.startswith("linux") and sys.executable:
            argv = [sys.executable, "-I", "-S", "-c", _TIED, str(os.getpid()), *argv]
        err = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process, closed by _stop
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, pass_fds=fds
            )
        except OSError as e:
            err.close()
            return f"cannot run {argv[0]}: {e}"
        finally:
            for fd in fds:
                os.close(fd)
        proc.rh_err = err  # type: ignore[attr-defined]
        with self._proc_lock:
            if self._closed:
                _stop(proc)
                return "closed"
            self._proc = proc
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return f"ssh exited with code {proc.returncode}: {_tail(proc)}"
            if _listens(proc.pid, port):
                self.local_port = port
                self.restarts += again
                self._serving = proc
                return None
            time.sleep(0.01)
        _stop(proc)
        return f"ssh did not open the forward within {READY_TIMEOUT_S:.0f}s: {_tail(proc)}"

    def _use_fallback(self, why: str | None) -> int:
        """Serve the port with asyncssh's forward (caller holds the lock)."""
        if why is not None:
            log.warning(
                "using the slower asyncssh forward to %s port %d: %s", self.where, self.remote_port, why
            )
        port, listener = self._fallback(self.local_port)
        with self._proc_lock:
            self._listener = listener
        self.local_port = port
        return port


def openssh_usable(password: str | None) -> str:
    """Why OpenSSH cannot carry a forward here ('' when it can)."""
    if shutil.which("ssh") is None:
        return "no ssh command on this machine"
    if password and shutil.which("sshpass") is None:
        return "a password login needs sshpass for OpenSSH (install it, or use a key)"
    return ""


def _password_pipe(password: str) -> int:
    """The read end of a pipe holding ``password`` and a newline (far below a pipe's buffer)."""
    read, write = os.pipe()
    try:
        os.write(write, password.encode() + b"\n")
    finally:
        os.close(write)
    return read


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` (ssh, or sshpass and the ssh it runs) listens on 127.0.0.1:``port``,
    so the port is ours and not a stranger's."""
    try:
        root = psutil.Process(pid)
        for process in (root, *root.children(recursive=True)):
            conns = (
                process.net_connections("tcp4")
                if hasattr(process, "net_connections")
                else process.connections("tcp4")
            )
            if any(c.status == psutil.CONN_LISTEN and c.laddr[:2] == ("127.0.0.1", port) for c in conns):
                return True
    except psutil.Error:
        return False
    return False


def _running(proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` has not exited, without reaping it (the tunnel's thread waits on it, and
    ``poll()`` answers "running" while that wait holds its lock): a dead ssh's port is free at
    once, before anyone has reaped it."""
    if proc.returncode is not None:
        return False
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:  # reaped already
        return False
    except AttributeError:  # no waitid on this system
        return proc.poll() is None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(proc: subprocess.Popen[bytes]) -> str:
    err: IO[bytes] | None = getattr(proc, "rh_err", None)
    if err is None:
        return "(no output)"
    try:
        err.seek(0)
        text = err.read()[-2000:].decode(errors="replace").strip()
    except (OSError, ValueError):
        return "(no output)"
    return text.replace("\r", "").replace("\n", " | ") or "(no output)"


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 3.0) -> None:
    """Stop one process by its pid (and the ssh that sshpass runs): SIGTERM, then SIGKILL after
    ``grace_s``."""
    if proc.poll() is None:
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        proc.terminate()
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _, alive = psutil.wait_procs(children, timeout=grace_s)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
    err = getattr(proc, "rh_err", None)
    if err is not None:
        err.close()
