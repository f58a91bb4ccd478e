"""Throwaway SSH hosts for tests: one Linux network namespace per host, each with its own sshd.

Design
------
``TestHosts`` builds N small "machines" on the test runner itself, so tests can exercise real SSH
(key and password logins, unreachable hosts, several distinct addresses) without containers or VMs:

* Every run draws a random 6-hex-digit *tag*. Namespace names (``rhssh-<tag>-<i>``) and interface
  names (``rh<tag>h<i>`` in the root namespace, ``rh<tag>n<i>`` in the host's namespace, at most
  15 characters) include it, so parallel runs on one machine do not collide.
* The run owns one ``10.X.Y.0/24`` block, drawn at random and checked against the addresses, routes
  and nameservers the root namespace already uses. Host ``i`` gets the ``/30`` at ``4*i``: the root
  end of its veth pair is ``.4i+1`` and the host's address (inside the namespace) is ``.4i+2``. The
  namespace's default route points back at ``.4i+1``, so a host can reach the root namespace too.
  The first address after the hosts gets an ``unreachable`` route in the root namespace:
  connecting to it fails at once with "No route to host" (see ``unreachable_address``).
* Each namespace runs ``ip netns exec <ns> /usr/sbin/sshd -D -e -f <config>``. Config, host keys,
  the authorized keys file and the sshd log live in a private temp dir. ``ip netns exec`` execs
  sshd, so the child's pid *is* sshd's pid; teardown stops it by that pid (terminate, wait, kill),
  then does the same for any process still left in the namespace (sessions, daemons that tests
  started over SSH), and never looks processes up by name.
* Each host has its own home folder (``<tmpdir>/host<i>/home``): sshd sets ``HOME`` to it for
  ``root`` logins (``SetEnv``), so what a test does on a host as root (``~/.rh``, caches, pip and
  uv settings) stays in that host's folder, never in this machine's real home. ``root_env`` adds
  variables to those logins (e.g. a shared ``XDG_CACHE_HOME``). sshd still starts sessions in
  ``/root`` (the passwd entry): tools that take paths should be given absolute ones.
* ``sftp=False`` starts sshd without an SFTP subsystem, as some hardened hosts run.
* One ed25519 client key per run logs in as ``root`` (its public key is the authorized key for
  every user). For password tests a dedicated Unix user is created if missing and given a fresh
  random password with ``chpasswd``; ``root`` may not log in with a password. By default the user
  is the run's own (``rht<tag>``), deleted again at teardown, so concurrent runs never reset each
  other's password; a fixed ``password_user`` (e.g. ``"rhtest"``) is kept and merely re-passworded.
* Setup records every resource as soon as it exists; ``close()`` removes exactly those, tolerates a
  half-finished setup, is idempotent, and also runs from ``atexit`` if the owner never calls it.

Typical use::

    reason = sshhosts.skip_reason()
    if reason:
        pytest.skip(reason)
    with sshhosts.TestHosts(n=2) as hosts:
        hosts.ssh(hosts.hosts[0], "echo ok")

Needs root, iproute2 (``ip``), openssh-server (``/usr/sbin/sshd``), openssh-client (``ssh``,
``ssh-keygen``), ``useradd``/``userdel``/``chpasswd`` (passwd) and, for password logins, ``sshpass``.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType

import pytest

SSHD = "/usr/sbin/sshd"
SSH_PORT = 22
SSHD_START_TIMEOUT_S = 10.0
STOP_GRACE_S = 5.0

# Second octets of 10.X.Y.0/24 we draw from: clear of the ranges container platforms like
# (10.0/16 VPCs, 10.42-43 k3s, 10.96/12 Kubernetes services, 10.244 flannel, 10.255 resolvers).
_SECOND_OCTETS = range(128, 240)
_IPV4 = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3})(/\d{1,2})?\b")

_SSH_COMMON_OPTIONS = (
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "ConnectTimeout=5",
    "-o", "LogLevel=ERROR",
)  # fmt: skip


@dataclass(frozen=True)
class Host:
    """One SSH host: a network namespace with an sshd listening on ``address:port``."""

    name: str  # short label, "host0", "host1", ...
    address: str  # the host's IPv4 address (inside its namespace), where sshd listens
    port: int
    netns: str  # network namespace name, for ``ip netns exec``
    gateway: str  # root-namespace end of the veth pair, reachable from inside the host
    root_link: str  # veth name in the root namespace (deleting it deletes the pair)
    ns_link: str  # veth name inside the namespace
    sshd_config: Path
    sshd_log: Path
    home: Path  # HOME of root logins on this host


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a local command, capturing text output; raise with its stderr when ``check`` fails."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


# Debian/Ubuntu packages of the tools the hosts need, for the messages that ask for them.
INSTALL_HINTS = {
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "useradd": "passwd",
    "userdel": "passwd",
    "chpasswd": "passwd",
    "sshpass": "sshpass",
    "rsync": "rsync",
}


def in_ci() -> bool:
    """Whether this is a CI run (``CI=true``), where a missing prerequisite is a failure."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(extra_tools: Sequence[str] = ()) -> None:
    """Skip the calling test (fail it under ``CI=true``) when this machine cannot host ``TestHosts``.

    A CI run that silently skipped every SSH test would pass while testing nothing."""
    reason = skip_reason(extra_tools)
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI=true and SSH tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def skip_reason(extra_tools: Sequence[str] = ()) -> str | None:
    """Why this machine cannot host ``TestHosts`` (a message for ``pytest.skip``), or None if it can.

    Checks for root, the ``ip``, ``ssh``, ``ssh-keygen``, ``useradd``, ``userdel``, ``chpasswd`` tools, sshd, any
    ``extra_tools`` (e.g. ``("sshpass",)``), and that a network namespace can really be created.
    """
    if os.name != "posix" or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "SSH test hosts need root (network namespaces, sshd, useradd)"
    for tool in ("ip", "ssh", "ssh-keygen", "useradd", "userdel", "chpasswd", *extra_tools):
        if shutil.which(tool) is None:
            package = INSTALL_HINTS.get(tool, tool)
            return f"SSH test hosts need {tool!r} on PATH (apt-get install {package})"
    if not os.access(SSHD, os.X_OK):
        return f"SSH test hosts need {SSHD} (apt-get install openssh-server)"
    probe = f"rhssh-probe-{os.getpid()}-{secrets.token_hex(2)}"
    try:
        made = _run(["ip", "netns", "add", probe], check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot create a network namespace: {e}"
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    _run(["ip", "netns", "del", probe], check=False)
    return None


def _occupied_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks already in use in the root namespace: addresses, routes and nameservers.

    Routes broader than /16 (a default or 10.0.0.0/8 via a gateway) are ignored: our /30 routes
    are more specific and win, and counting them would rule out the whole 10/8 block.
    """
    text = _run(["ip", "-4", "-o", "addr", "show"]).stdout
    text += _run(["ip", "-4", "route", "show", "table", "all"]).stdout
    with contextlib.suppress(OSError):
        text += Path("/etc/resolv.conf").read_text()
    networks = []
    for address, prefix in _IPV4.findall(text):
        with contextlib.suppress(ValueError):
            net = ipaddress.IPv4Network(address + (prefix or "/32"), strict=False)
            if net.prefixlen >= 16:
                networks.append(net)
            networks.append(ipaddress.IPv4Network(address))  # the address itself, always
    return networks


def _pick_block(rng: random.Random) -> ipaddress.IPv4Network:
    """A random 10.X.Y.0/24 that overlaps nothing the root namespace already uses."""
    occupied = _occupied_networks()
    for _ in range(200):
        block = ipaddress.IPv4Network(f"10.{rng.choice(_SECOND_OCTETS)}.{rng.randrange(256)}.0/24")
        if not any(block.overlaps(net) for net in occupied):
            return block
    raise RuntimeError("no free 10.X.Y.0/24 block found for SSH test hosts")


def _ensure_user(name: str) -> bool:
    """Create Unix user ``name`` (home dir, bash) if missing and make sure its home dir exists.

    Returns whether this call created the user.
    """
    created = False
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        _run(["useradd", "--create-home", "--shell", "/bin/bash", name])
        entry, created = pwd.getpwnam(name), True
    home = Path(entry.pw_dir)
    if not home.is_dir():
        home.mkdir(parents=True, mode=0o755)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    return created


def _delete_user(name: str) -> None:
    """Delete Unix user ``name`` with its home dir (and its group, when useradd made one)."""
    _run(["userdel", "--remove", name])


def _set_password(user: str, password: str) -> None:
    """Set ``user``'s password with chpasswd (password on stdin, never in argv)."""
    proc = subprocess.run(
        ["chpasswd"], input=f"{user}:{password}\n", capture_output=True, text=True, timeout=30
    )
    if proc.returncode != 0:
        raise RuntimeError(f"chpasswd for {user} failed: {proc.stderr.strip()}")


def _keygen(path: Path, comment: str) -> None:
    """Write an ed25519 key pair without passphrase to ``path`` and ``path.pub``."""
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _sshd_config(
    host_key: Path,
    address: str,
    port: int,
    authorized_keys: Path,
    root_env: dict[str, str],
    sftp: bool = True,
) -> str:
    """The text of one host's sshd_config."""
    subsystem = "Subsystem sftp internal-sftp" if sftp else "# no SFTP subsystem"
    setenv = " ".join(f'{name}="{value}"' for name, value in root_env.items())
    return f"""\
ListenAddress {address}
Port {port}
HostKey {host_key}
PidFile none
UsePAM no
UseDNS no
StrictModes no
PermitRootLogin yes
PubkeyAuthentication yes
AuthorizedKeysFile {authorized_keys}
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitEmptyPasswords no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
X11Forwarding no
PrintMotd no
MaxStartups 200:30:400
MaxSessions 200
LoginGraceTime 30
LogLevel VERBOSE
{subsystem}

Match User root
    PasswordAuthentication no
    SetEnv {setenv}
"""


def _tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or a note that it could not be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (a zombie is gone for our purposes)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _stop_pids(pids: Sequence[int], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every pid (none is our child), wait up to ``grace_s`` for all to go, SIGKILL the rest."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    """Terminate our child ``proc`` by pid, wait for it, and kill it if it will not exit."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_GRACE_S)


def _netns_pids(netns: str) -> list[int]:
    """Pids of the processes that live in network namespace ``netns``."""
    out = _run(["ip", "netns", "pids", netns], check=False).stdout
    return [int(word) for word in out.split() if word.isdigit()]


def _wait_for_port(address: str, port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Poll until ``address:port`` accepts TCP; False if ``proc`` exits or time runs out first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class TestHosts:
    """N SSH hosts, each a network namespace with its own sshd; a context manager.

    After ``start()`` (or entering ``with``): ``hosts`` (list of ``Host``), ``private_key`` and
    ``public_key`` (client key pair, authorized for every user), ``password_user`` and
    ``password`` (a non-root account that can log in with that password), ``tmpdir``.
    """

    __test__ = False  # the name starts with "Test"; keep pytest from collecting it

    def __init__(
        self,
        n: int = 2,
        *,
        password_user: str | None = None,
        port: int = SSH_PORT,
        sftp: bool = True,
        root_env: dict[str, str] | None = None,
    ) -> None:
        """Describe ``n`` hosts (1-63); nothing is created until ``start()``.

        ``password_user=None`` makes a user of this run's own (``rht<tag>``), removed at teardown.
        A named user is created if missing and kept; concurrent runs naming the same user reset
        each other's password, so only name one when runs do not overlap. ``sftp=False`` leaves
        out the SFTP subsystem; ``root_env`` is set in root logins, besides ``HOME``.
        """
        if not 1 <= n <= 63:
            raise ValueError("n must be between 1 and 63")
        self.n = n
        self.port = port
        self.sftp = sftp
        self.root_env = dict(root_env or {})
        self.tag = secrets.token_hex(3)
        self.password_user = password_user or f"rht{self.tag}"
        self.password = secrets.token_urlsafe(18)
        self._per_run_user = password_user is None
        self.hosts: list[Host] = []
        self.tmpdir: Path | None = None
        self.private_key = Path()
        self.public_key = Path()
        self._block: ipaddress.IPv4Network | None = None
        self._sshds: list[subprocess.Popen[bytes]] = []
        self._netns: list[str] = []
        self._links: list[str] = []
        self._routes: list[str] = []
        self._remove_user = False  # set once this run has created its own user
        self._started = False
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> TestHosts:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> TestHosts:
        """Create the temp dir, keys, user, namespaces, veths and sshds; clean up if any step fails."""
        if self._started:
            raise RuntimeError("TestHosts.start() called twice")
        self._started = True
        atexit.register(self.close)
        try:
            self._make_tmpdir_and_client_key()
            self._remove_user = _ensure_user(self.password_user) and self._per_run_user
            _set_password(self.password_user, self.password)
            self._block = _pick_block(random.SystemRandom())
            for i in range(self.n):
                self.hosts.append(self._make_host(i))
            self._add_unreachable_route()
            for host, proc in zip(self.hosts, self._sshds, strict=True):
                self._wait_for_sshd(host, proc)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop sshds and namespace processes by pid; delete own user, veths, netns, route, temp dir.

        Safe to call more than once and after a failed ``start()``; problems are reported as one
        warning instead of stopping the cleanup halfway.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        problems: list[str] = []
        steps: list[tuple[str, Callable[[], object]]] = []
        steps += [(f"stop sshd {p.pid}", partial(_stop_child, p)) for p in self._sshds]
        steps += [(f"stop processes in {ns}", partial(self._stop_netns_processes, ns)) for ns in self._netns]
        if self._remove_user:
            steps.append((f"delete user {self.password_user}", partial(_delete_user, self.password_user)))
        steps += [(f"delete link {link}", partial(_run, ["ip", "link", "del", link])) for link in self._links]
        steps += [(f"delete netns {ns}", partial(_run, ["ip", "netns", "del", ns])) for ns in self._netns]
        steps += [
            (f"delete route {r}", partial(_run, ["ip", "route", "del", "unreachable", r]))
            for r in self._routes
        ]
        if self.tmpdir is not None:
            steps.append((f"remove {self.tmpdir}", partial(shutil.rmtree, self.tmpdir)))
        for what, action in steps:
            try:
                action()
            except Exception as e:  # cleanup goes on; all problems are reported together
                problems.append(f"{what}: {e}")
        if problems:
            warnings.warn("SSH test hosts cleanup: " + "; ".join(problems), RuntimeWarning, stacklevel=2)

    # -- setup steps -------------------------------------------------------------------------

    def _make_tmpdir_and_client_key(self) -> None:
        """The run's temp dir (world-readable, so non-root users can read authorized_keys) and key."""
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"rhssh-{self.tag}-"))
        self.tmpdir.chmod(0o755)
        self.private_key = self.tmpdir / "id_ed25519"
        self.public_key = self.tmpdir / "id_ed25519.pub"
        _keygen(self.private_key, f"rhssh-{self.tag}")
        authorized = self.tmpdir / "authorized_keys"
        authorized.write_text(self.public_key.read_text())
        authorized.chmod(0o644)

    def _host_addresses(self, i: int) -> tuple[str, str]:
        """(root-side address, host address) of host ``i`` in the run's /24."""
        assert self._block is not None
        base = self._block.network_address + 4 * i
        return str(base + 1), str(base + 2)

    def _make_host(self, i: int) -> Host:
        """Create host ``i``: namespace, veth pair with addresses and routes, config, running sshd."""
        assert self.tmpdir is not None
        netns, root_link, ns_link = f"rhssh-{self.tag}-{i}", f"rh{self.tag}h{i}", f"rh{self.tag}n{i}"
        gateway, address = self._host_addresses(i)
        _run(["ip", "netns", "add", netns])
        self._netns.append(netns)
        _run(["ip", "link", "add", root_link, "type", "veth", "peer", "name", ns_link, "netns", netns])
        self._links.append(root_link)
        _run(["ip", "addr", "add", f"{gateway}/30", "dev", root_link])
        _run(["ip", "link", "set", root_link, "up"])
        in_ns = ["ip", "-n", netns]
        _run([*in_ns, "link", "set", "lo", "up"])
        _run([*in_ns, "addr", "add", f"{address}/30", "dev", ns_link])
        _run([*in_ns, "link", "set", ns_link, "up"])
        _run([*in_ns, "route", "add", "default", "via", gateway])
        host = self._write_host_files(i, netns, address, gateway, root_link, ns_link)
        self._sshds.append(self._start_sshd(host))
        return host

    def _write_host_files(
        self, i: int, netns: str, address: str, gateway: str, root_link: str, ns_link: str
    ) -> Host:
        """Host ``i``'s directory with its host key and sshd_config; returns its ``Host``."""
        assert self.tmpdir is not None
        hostdir = self.tmpdir / f"host{i}"
        hostdir.mkdir(mode=0o755)
        home = hostdir / "home"
        home.mkdir(mode=0o700)
        host_key = hostdir / "ssh_host_ed25519_key"
        _keygen(host_key, f"host{i}")
        config = hostdir / "sshd_config"
        root_env = {"HOME": str(home), **self.root_env}
        authorized = self.tmpdir / "authorized_keys"
        config.write_text(_sshd_config(host_key, address, self.port, authorized, root_env, self.sftp))
        return Host(
            name=f"host{i}",
            address=address,
            port=self.port,
            netns=netns,
            gateway=gateway,
            root_link=root_link,
            ns_link=ns_link,
            sshd_config=config,
            sshd_log=hostdir / "sshd.log",
            home=home,
        )

    def _start_sshd(self, host: Host) -> subprocess.Popen[bytes]:
        """Start sshd in the host's namespace (``ip netns exec`` execs it: same pid), log to file."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        _run([SSHD, "-t", "-f", str(host.sshd_config)])  # config errors surface here, clearly
        with open(host.sshd_log, "ab") as log:
            return subprocess.Popen(
                ["ip", "netns", "exec", host.netns, SSHD, "-D", "-e", "-f", str(host.sshd_config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal goes to pytest, not to sshd
            )

    def _add_unreachable_route(self) -> None:
        """Route the first address after the hosts nowhere, for ``unreachable_address()``."""
        target = f"{self._host_addresses(self.n)[1]}/32"
        _run(["ip", "route", "add", "unreachable", target])
        self._routes.append(target)

    def _wait_for_sshd(self, host: Host, proc: subprocess.Popen[bytes]) -> None:
        """Block until the host's sshd accepts TCP; raise with the end of its log otherwise."""
        if not _wait_for_port(host.address, host.port, proc, SSHD_START_TIMEOUT_S):
            state = f"exited with {proc.returncode}" if proc.poll() is not None else "not listening"
            raise RuntimeError(
                f"sshd for {host.name} ({host.address}:{host.port} in {host.netns}) {state} after "
                f"{SSHD_START_TIMEOUT_S:.0f} s; log {host.sshd_log}:\n{_tail(host.sshd_log)}"
            )

    def _stop_netns_processes(self, netns: str) -> None:
        """Stop, by pid, what still runs in ``netns`` (SSH sessions, daemons tests left behind)."""
        _stop_pids([pid for pid in _netns_pids(netns) if pid != os.getpid()])

    # -- for tests ---------------------------------------------------------------------------

    def unreachable_address(self) -> str:
        """An address in this run's block that no host has: connecting fails fast (no route to host)."""
        if not self._routes:
            raise RuntimeError("TestHosts not started")
        return self._routes[0].split("/")[0]

    def ssh_argv(self, host: Host, user: str = "root", *, password: str | None = None) -> list[str]:
        """The ``ssh`` argv (without the remote command) for a non-interactive login to ``host``.

        With ``password`` the argv starts with ``sshpass -e`` (the caller puts the password in
        the ``SSHPASS`` environment variable, see ``ssh``) and allows password auth only.
        """
        argv = ["ssh", *_SSH_COMMON_OPTIONS, "-p", str(host.port)]
        if password is None:
            argv += ["-i", str(self.private_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
        else:
            argv = ["sshpass", "-e", *argv]
            argv += ["-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no"]
            argv += ["-o", "NumberOfPasswordPrompts=1"]
        return [*argv, f"{user}@{host.address}"]

    def ssh(
        self,
        host: Host,
        command: str,
        *,
        user: str = "root",
        password: str | None = None,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on ``host`` with the system ssh client (key login unless ``password``)."""
        env = dict(os.environ)
        if password is not None:
            env["SSHPASS"] = password
        argv = [*self.ssh_argv(host, user, password=password), command]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
        )

    def host_key_path(self, host: Host) -> Path:
        """The private host key file of ``host``'s sshd (its public key is this path + ``.pub``)."""
        return host.sshd_config.parent / "ssh_host_ed25519_key"

    def replace_host_key(self, host: Host) -> None:
        """Give ``host`` a new host key, as a rebuilt machine (or an impostor at its address) has.

        Its sshd is restarted with the new key; sessions already open keep running.
        """
        i = self.hosts.index(host)
        key = self.host_key_path(host)
        key.unlink()
        Path(f"{key}.pub").unlink()
        _keygen(key, f"{host.name}-replaced")
        _stop_child(self._sshds[i])
        self._sshds[i] = self._start_sshd(host)
        self._wait_for_sshd(host, self._sshds[i])

    def netns_exec(
        self, host: Host, argv: Sequence[str], *, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` locally inside ``host``'s network namespace (``ip netns exec``)."""
        return _run(["ip", "netns", "exec", host.netns, *argv], check=False, timeout=timeout)

    def route_between_hosts(self) -> None:
        """Let the hosts reach each other (multi-node tests: Ray's nodes talk host to host).

        Each host's traffic leaves through its veth to the root namespace; forwarding is turned on
        for the root ends of this run's veths only (``net.ipv4.conf.<link>.forwarding``, which
        governs packets received on that link), never for the machine as a whole. The setting
        goes with the links at teardown."""
        for host in self.hosts:
            Path(f"/proc/sys/net/ipv4/conf/{host.root_link}/forwarding").write_text("1\n")
