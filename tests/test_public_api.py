"""The public surface and the import layering that keeps the package maintainable."""

from __future__ import annotations

import ast
from pathlib import Path

import runhouse as rh

PACKAGE = Path(rh.__file__).parent
# Den's server libraries: the `den` extra (pyproject.toml), not installed by `pip install runhouse`.
DEN_STACK = ("fastapi", "pydantic", "sqlalchemy", "alembic", "psycopg")
# The Den modules every `runhouse` command loads (runhouse/cli/den.py); they must work without the extra.
DEN_CORE_MODULES = {"den/__init__.py", "den/service.py", "den/limits.py", "den/names.py", "den/errors.py"}


def test_all_lists_exactly_the_public_api():
    assert set(rh.__all__) == {
        "AuthError",
        "BadRequest",
        "Cluster",
        "CondaEnv",
        "ConfigError",
        "ConnectionError_",
        "Env",
        "EnvSetupError",
        "Folder",
        "Function",
        "Module",
        "ObjectNotFound",
        "OnDemandCluster",
        "Package",
        "RemoteException",
        "RemoteModule",
        "RemoteResult",
        "Resource",
        "RunhouseError",
        "SSHError",
        "Secret",
        "ServerError",
        "WorkerDied",
        "__version__",
        "cluster",
        "conda_env",
        "env",
        "exists",
        "folder",
        "function",
        "here",
        "login",
        "logout",
        "module",
        "ondemand_cluster",
        "package",
        "provider_secret",
        "secret",
    }
    for name in rh.__all__:
        assert getattr(rh, name) is not None


def test_errors_share_one_root():
    for name in (
        "AuthError",
        "BadRequest",
        "ConfigError",
        "ConnectionError_",
        "EnvSetupError",
        "ObjectNotFound",
        "RemoteException",
        "ServerError",
        "WorkerDied",
    ):
        assert issubclass(getattr(rh, name), rh.RunhouseError)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {name for name in found if name.startswith("runhouse")}


def _layer_imports(layer: str) -> dict[str, set[str]]:
    return {str(p.relative_to(PACKAGE)): _imports(p) for p in (PACKAGE / layer).rglob("*.py")}


def test_protocol_imports_nothing_else_of_ours():
    for path, names in _layer_imports("protocol").items():
        outside = {n for n in names if not n.startswith("runhouse.protocol")}
        assert not outside, f"{path} imports {outside}"


def test_server_does_not_import_client_side_resources():
    for path, names in _layer_imports("server").items():
        bad = {n for n in names if n.startswith(("runhouse.resources", "runhouse.client", "runhouse.cli"))}
        assert not bad, f"{path} imports {bad}"


def test_only_settings_reads_the_environment():
    for path in PACKAGE.rglob("*.py"):
        if path.name == "settings.py":
            continue
        source = path.read_text()
        assert "os.environ.get(" not in source and "os.getenv(" not in source, path


def test_daemon_start_does_not_load_client_or_den_libraries():
    """The daemon's start-up time is part of `runhouse start` to first call: keep heavy imports out."""
    import subprocess
    import sys

    code = (
        "import sys, runhouse.server.daemon, runhouse.server.fastpath\n"
        f"print(sorted(m for m in {('httpx', 'cryptography', 'asyncssh', *DEN_STACK)} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _third_party_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_only_den_server_code_imports_the_den_extra():
    for path in PACKAGE.rglob("*.py"):
        name = str(path.relative_to(PACKAGE))
        stack = _third_party_imports(path) & set(DEN_STACK)
        if stack:
            assert name.startswith("den/") and name not in DEN_CORE_MODULES, (
                f"{name} imports {sorted(stack)}, which `pip install runhouse` does not install "
                '(they come with `pip install "runhouse[den]"`)'
            )


def test_import_runhouse_and_the_cli_load_no_den_server_library():
    """`import runhouse` and every `runhouse` command work with the core install only."""
    import subprocess
    import sys

    code = (
        "import sys, runhouse, runhouse.cli, runhouse.client.den, runhouse.den.service\n"
        f"print(sorted(m for m in {DEN_STACK} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
