"""Against a real region: a session-wide ``tollgate dev`` (see conftest.py).

Skipped, with the reason, when the region nodes do not serve the HTTP/JSON
API yet (``POST /v1/check`` answers 404)."""

from __future__ import annotations

import ssl
import struct
from typing import Any, Iterator

import httpx
import pytest

from tollgate import (
    AsyncClient,
    AsyncReplica,
    CheckRequest,
    Client,
    CredentialError,
    Decision,
    GeoFacts,
    LicenseError,
    NeedsRegionError,
    OfflineVerifier,
    Replica,
)

from conftest import Deployment
from fakenode import dead_endpoint

pytestmark = pytest.mark.integration

GERMANY = "192.0.2.10"
UNITED_STATES = "198.51.100.10"
DE = GeoFacts(country="DE", continent="EU")


@pytest.fixture(scope="session")
def region(dev: Deployment) -> Deployment:
    response = httpx.post(dev.eu[0] + "/v1/check", json={"account": "acme", "feature": "export"}, verify=ssl.create_default_context(cafile=dev.ca))
    if response.status_code == 404:
        pytest.skip(
            "the region node answers 404 on POST /v1/check: its HTTP/JSON API "
            "(crates/tollgate-region-node http_api) is not in this build of tollgate"
        )
    return dev


@pytest.fixture()
def client(region: Deployment) -> Iterator[Client]:
    with Client(region.eu, credential=region.credential, ca_file=region.ca) as c:
        yield c


def tls(region: Deployment) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=region.ca)


def admin(region: Deployment) -> dict[str, str]:
    return {"Authorization": f"Bearer {region.admin_key}"}


def test_allow_and_geo_blocked(client: Client) -> None:
    allowed = client.check("acme", "export", "alice", ip=GERMANY, explain=True)
    assert allowed.allowed and allowed.reason == "ALLOW", allowed
    assert allowed.entitlement == "acme-pro" and allowed.config.get("max_resolution") == "4k"
    assert allowed.answered_by is not None and allowed.answered_by.startswith("eu-")
    assert allowed.revision and allowed.explanation
    blocked = client.check("acme", "export", "alice", ip=UNITED_STATES)
    assert not blocked.allowed and blocked.reason == "GEO_BLOCKED"


def test_a_batch(client: Client) -> None:
    result = client.check_batch(
        [
            CheckRequest("acme", "export", "alice", ip=GERMANY),
            CheckRequest("acme", "export", "alice", ip=UNITED_STATES),
            CheckRequest("acme", "ai-assist", "alice", ip=GERMANY),
            CheckRequest("umbrella", "export"),
        ]
    )
    reasons = [r.reason if isinstance(r, Decision) else r.code for r in result.results]
    assert reasons == ["ALLOW", "GEO_BLOCKED", "NOT_ENTITLED", "SUSPENDED"]
    hint = result.results[2]
    assert isinstance(hint, Decision) and hint.upgrade_hint is not None and hint.upgrade_hint.plan == "enterprise"


async def test_the_async_client(region: Deployment) -> None:
    async with AsyncClient(region.eu, credential=region.credential, ca_file=region.ca) as client:
        d = await client.check("acme", "export", "alice", ip=GERMANY)
        assert d.reason == "ALLOW"
        batch = await client.check_batch([CheckRequest("acme", "export", "alice", ip=UNITED_STATES)])
        assert isinstance(batch.results[0], Decision) and batch.results[0].reason == "GEO_BLOCKED"


def test_failover_past_a_dead_node(region: Deployment) -> None:
    dead = dead_endpoint().replace("http://", "https://")
    with Client([dead, *region.eu], credential=region.credential, ca_file=region.ca) as client:
        d = client.check("acme", "export", "alice", ip=GERMANY)
        assert d.allowed and d.node == region.eu[0]
        assert client.preferred == 1, "the next call starts with the node that answered"


def test_no_credential_is_a_401_problem(region: Deployment) -> None:
    with Client(region.eu, ca_file=region.ca) as client:
        with pytest.raises(CredentialError) as info:
            client.check("acme", "export", "alice")
    assert info.value.status == 401 and info.value.code == "CREDENTIAL_REQUIRED"
    assert info.value.node == region.eu[0]


def _put_account(region: Deployment, status: str) -> int:
    body = {"id": "initech", "name": "Initech", "status": status}
    response = httpx.put(f"{region.origin}/v1/accounts/initech", json=body, headers=admin(region), verify=tls(region))
    assert response.status_code in (200, 201), response.text
    return int(response.headers["x-tollgate-revision"])


def test_a_replica_receives_a_change_made_at_the_origin(region: Deployment) -> None:
    with Replica(region.eu, account="initech", credential=region.credential, ca_file=region.ca) as replica:
        replica.wait_ready(30)
        assert replica.check("initech", "sso", "peter").reason == "ALLOW"
        with pytest.raises(NeedsRegionError):
            replica.check("acme", "export", "alice")
        revision = _put_account(region, "suspended")
        try:
            replica.wait_for_revision(revision, 30)
            d = replica.check("initech", "sso", "peter")
            assert d.reason == "SUSPENDED" and d.revision is not None and d.revision >= revision
            with Client(region.eu, credential=region.credential, ca_file=region.ca) as client:
                remote = client.check("initech", "sso", "peter", at_least_revision=revision)
            assert remote.reason == "SUSPENDED"
        finally:
            resumed = _put_account(region, "active")
        replica.wait_for_revision(resumed, 30)
        assert replica.check("initech", "sso", "peter").reason == "ALLOW"


async def test_the_async_replica(region: Deployment) -> None:
    dead = dead_endpoint().replace("http://", "https://")
    async with AsyncReplica(
        [dead, *region.eu], account="acme", credential=region.credential, ca_file=region.ca, reconnect_backoff=(0.01, 0.1)
    ) as replica:
        await replica.wait_ready(30)
        assert replica.endpoint == region.eu[0], "followed the next node after the dead one"
        assert replica.check("acme", "export", "alice", location=DE).reason == "ALLOW"
        assert replica.check("acme", "export", "alice", location=GeoFacts(country="US", continent="NA")).reason == "GEO_BLOCKED"
        assert replica.staleness().origin_seconds is not None


def _key_set(region: Deployment) -> dict[str, Any]:
    response = httpx.get(region.public_keys, verify=tls(region))
    response.raise_for_status()
    keys: dict[str, Any] = response.json()
    return keys


def test_an_origin_license_verifies_offline_and_its_revocation_reaches_the_replica(region: Deployment) -> None:
    issued = httpx.post(
        f"{region.origin}/v1/accounts/acme/licenses",
        json={"audience": "studio", "subject": "alice"},
        headers=admin(region),
        verify=tls(region),
    )
    assert issued.status_code == 201, issued.text
    token = issued.json()["token"]
    verifier = OfflineVerifier(_key_set(region), "studio")
    license = verifier.verify(token)
    assert license.signer == "origin" and license.subject == "alice" and license.jti == issued.json()["id"]
    assert license.allows("export") is not None
    with pytest.raises(LicenseError) as info:
        OfflineVerifier(_key_set(region), "another-product").verify(token)
    assert info.value.code == "license_wrong_audience"
    with Replica(region.eu, account="acme", credential=region.credential, ca_file=region.ca) as replica:
        replica.wait_ready(30)
        assert verifier.verify(token, revocations=replica).signer == "origin"
        revoked = httpx.post(
            f"{region.origin}/v1/accounts/acme/licenses/{license.jti}/revoke", headers=admin(region), verify=tls(region)
        )
        assert revoked.status_code in (200, 201, 204), revoked.text
        revision = int(revoked.headers.get("x-tollgate-revision", "0"))
        replica.wait_for_revision(revision, 30)
        with pytest.raises(LicenseError) as info:
            verifier.verify(token, revocations=replica)
        assert info.value.code == "license_revoked"


def _grpc_issue_at_region(region: Deployment) -> dict[int, Any]:
    """``Licenses.IssueLicense`` at a region node: gRPC only, so spoken by hand
    (HTTP/2, one length-prefixed protobuf message)."""
    pytest.importorskip("h2", reason="HTTP/2 (h2) is needed to ask a region node for a license over gRPC")

    def field(number: int, text: str) -> bytes:
        data = text.encode()
        return bytes([number << 3 | 2, len(data)]) + data

    message = field(1, "acme") + field(3, "studio")
    body = b"\0" + struct.pack(">I", len(message)) + message
    with httpx.Client(http2=True, verify=tls(region)) as http:
        response = http.post(
            region.eu[0] + "/tollgate.license.v1.Licenses/IssueLicense",
            content=body,
            headers={"content-type": "application/grpc", "te": "trailers", "authorization": f"Bearer {region.credential}"},
        )
    assert response.status_code == 200 and len(response.content) > 5, response.headers
    data, i = response.content[5:], 0
    out: dict[int, Any] = {}
    while i < len(data):
        key = data[i]
        i += 1

        def varint() -> int:
            nonlocal i
            value, shift = 0, 0
            while True:
                b = data[i]
                i += 1
                value |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    return value

        if key & 7 == 2:
            length = varint()
            out[key >> 3] = data[i : i + length].decode()
            i += length
        else:
            out[key >> 3] = varint()
    return out


def test_a_region_license_verifies_offline_through_its_certificate(region: Deployment) -> None:
    issued = _grpc_issue_at_region(region)
    assert issued[4] == "tollgate-region:eu"
    license = OfflineVerifier(_key_set(region), "studio").verify(issued[2])
    assert license.signer == "region:eu"
    assert license.certified_by is not None and license.serial is not None
    assert license.kid == issued[3]


def test_the_readme_examples_run(region: Deployment) -> None:
    """The sync and asyncio examples of README.md, against this deployment."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)[:2]
    assert len(blocks) == 2
    endpoints = str(region.data_dir / "endpoints.json")
    outputs = []
    for block in blocks:
        code = block.replace("/tmp/tg/endpoints.json", endpoints)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    sync_lines = outputs[0].splitlines()
    assert "reason='ALLOW'" in sync_lines[0] and sync_lines[1:] == ["GEO_BLOCKED", "ALLOW"]
    assert outputs[1].splitlines()[-1] == "['ALLOW', 'SUSPENDED']"
