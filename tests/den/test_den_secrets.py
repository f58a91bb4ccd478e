"""The secrets vault through the real service: values round-trip, stay encrypted at rest and out of
configs and history, and shared read lets another user read them."""

from __future__ import annotations

import uuid
from pathlib import Path

import psutil
from cryptography.fernet import Fernet
from denserver import DenServer, start_den


def _values() -> dict[str, str]:
    marker = uuid.uuid4().hex
    return {"api_key": f"AKIA-{marker}", "password": f"pw-{marker}-Zq9"}


def test_values_round_trip_by_version(people) -> None:
    alice = people("alice")
    first, second = _values(), _values()
    saved = alice.http.put(f"/v1/secrets/{alice.name}/aws", json={"values": first, "provider": "aws"})
    assert saved.status_code == 200
    assert saved.json()["resource_type"] == "secret" and saved.json()["version"] == 1
    assert alice.http.get(f"/v1/secrets/{alice.name}/aws").json() == {
        "values": first, "provider": "aws", "version": 1,
    }  # fmt: skip
    alice.http.put(f"/v1/secrets/{alice.name}/aws", json={"values": second, "provider": "aws"})
    assert alice.http.get(f"/v1/secrets/{alice.name}/aws").json()["values"] == second


def test_plaintext_is_absent_from_database_config_and_history(people, den: DenServer) -> None:
    alice = people("alice")
    values = _values()
    alice.http.put(f"/v1/secrets/{alice.name}/db", json={"values": values, "provider": "postgres"})
    alice.http.put(f"/v1/secrets/{alice.name}/db", json={"values": values, "provider": "postgres"})
    config = alice.http.get(f"/v1/resources/{alice.name}/db").json()["config"]
    assert config == {
        "resource_type": "secret", "name": f"/{alice.name}/db", "provider": "postgres", "keys": ["api_key", "password"],
    }  # fmt: skip
    history = alice.http.get(f"/v1/resources/{alice.name}/db/history").text
    listed = alice.http.get("/v1/resources", params={"owner": alice.name}).text
    stored = den.stored_text()
    log = (den.data_dir / "den.log").read_text(errors="replace")
    for value in values.values():
        for where in (str(config), history, listed, stored, log):
            assert value not in where


def test_shared_read_reads_values_and_others_are_refused(people) -> None:
    alice, bob, carol = people("alice"), people("bob"), people("carol")
    values = _values()
    alice.http.put(f"/v1/secrets/{alice.name}/gcp", json={"values": values, "provider": None})
    refused = bob.http.get(f"/v1/secrets/{alice.name}/gcp")
    assert refused.status_code == 403 and bob.name in refused.json()["detail"]
    alice.http.put(f"/v1/resources/{alice.name}/gcp/access/{bob.name}", json={"access_level": "read"})
    assert bob.http.get(f"/v1/secrets/{alice.name}/gcp").json()["values"] == values
    assert bob.http.put(f"/v1/secrets/{alice.name}/gcp", json={"values": {"a": "b"}}).status_code == 403
    assert carol.http.get(f"/v1/secrets/{alice.name}/gcp").status_code == 403


def test_delete_removes_values_and_non_secrets_are_not_secrets(people) -> None:
    alice = people("alice")
    alice.http.put(f"/v1/secrets/{alice.name}/gone", json={"values": _values()})
    alice.http.delete(f"/v1/resources/{alice.name}/gone")
    assert alice.http.get(f"/v1/secrets/{alice.name}/gone").status_code == 404
    alice.http.put(f"/v1/resources/{alice.name}/fn", json={"config": {"resource_type": "function"}})
    not_secret = alice.http.get(f"/v1/secrets/{alice.name}/fn")
    assert not_secret.status_code == 404 and "not a secret" in not_secret.json()["detail"]
    clash = alice.http.put(f"/v1/secrets/{alice.name}/fn", json={"values": {"k": "v"}})
    assert (
        clash.status_code == 400 and alice.http.get(f"/v1/resources/{alice.name}/fn").json()["version"] == 1
    )


def test_key_from_environment_and_key_file_mode(tmp_path: Path, den_sqlite: DenServer) -> None:
    key_file = den_sqlite.data_dir / "secret.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = Fernet.generate_key().decode()
    den = start_den(tmp_path / "den", env={"RH_DEN_SECRET_KEY": key})
    try:
        assert not (tmp_path / "den" / "secret.key").exists()
        pid = int((den.data_dir / "pid").read_text())
        assert key not in " ".join(psutil.Process(pid).cmdline())
        token = den.add_user("keyed")
        with den.client(token) as http:
            http.put("/v1/secrets/keyed/s", json={"values": {"k": "v-env-key"}})
            assert http.get("/v1/secrets/keyed/s").json()["values"] == {"k": "v-env-key"}
    finally:
        den.stop()
    ciphertext = den.stored_text()
    assert "v-env-key" not in ciphertext
