"""The HTTP client against stand-in nodes: decisions, problems, failover."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from tollgate import (
    AsyncClient,
    CheckRequest,
    Client,
    CredentialError,
    Decision,
    GeoFacts,
    InvalidRequestError,
    UnavailableError,
)

from fakenode import FakeNode, dead_endpoint

CRED = "tgc_test.secret"


@pytest.fixture()
def nodes() -> Iterator[list[FakeNode]]:
    ns = [FakeNode("eu-1"), FakeNode("eu-2")]
    yield ns
    for n in ns:
        n.close()


def test_a_check_reads_the_decision_and_sends_the_fields(nodes: list[FakeNode]) -> None:
    with Client([nodes[0].url], credential=CRED) as client:
        d = client.check("acme", "export", "alice", ip="192.0.2.10", at_least_revision=5, explain=True)
    assert isinstance(d, Decision)
    assert d.allowed and d.reason == "ALLOW" and d.entitlement == "acme-pro"
    assert d.config == {"max_resolution": "4k"} and d.seats is not None and d.seats.total == 2
    assert (d.revision, d.staleness_seconds, d.answered_by, d.node) == (7, 3, "eu-1", nodes[0].url)
    method, path, headers, body = nodes[0].requests[-1]
    assert (method, path) == ("POST", "/v1/check")
    assert headers["Authorization"] == f"Bearer {CRED}"
    assert body == {"account": "acme", "feature": "export", "subject": "alice", "ip": "192.0.2.10",
                    "at_least_revision": 5, "explain": True}


def test_a_location_is_sent_resolved(nodes: list[FakeNode]) -> None:
    with Client(nodes[0].url, credential=CRED) as client:
        client.check("acme", "export", location=GeoFacts(country="DE", continent="EU", subdivisions=("DE-BE",)))
    assert nodes[0].requests[-1][3]["location"] == {"country": "DE", "continent": "EU", "subdivisions": ["DE-BE"]}
    with pytest.raises(ValueError):
        CheckRequest("acme", "export", ip="1.2.3.4", location=GeoFacts(country="DE")).to_wire()


def test_a_denial_is_an_answer(nodes: list[FakeNode]) -> None:
    denial = dict(
        allowed=False, reason="GEO_BLOCKED", explanation="", entitlement="acme-pro", limit=None, remaining=None,
        overage=False, valid_until=None, trial=False, seats=None, upgrade_hint={"plan": "pro", "limit": 1000},
        config={}, revision=7, staleness_seconds=None, answered_by="eu-1",
    )
    nodes[0].check = lambda body: (200, denial)
    with Client(nodes[0].url, credential=CRED) as client:
        d = client.check("acme", "export", "alice")
    assert not d.allowed and d.reason == "GEO_BLOCKED"
    assert d.upgrade_hint is not None and d.upgrade_hint.plan == "pro" and d.upgrade_hint.limit == 1000
    assert d.staleness_seconds is None


def test_no_credential_is_a_401_problem_with_its_code(nodes: list[FakeNode]) -> None:
    with Client([nodes[0].url, nodes[1].url]) as client:
        with pytest.raises(CredentialError) as info:
            client.check("acme", "export")
    e = info.value
    assert (e.status, e.code, e.node) == (401, "CREDENTIAL_REQUIRED", nodes[0].url)
    assert "credential" in e.detail
    assert not nodes[1].requests, "a 4xx is never failed over"


def test_failover_moves_past_a_dead_node_and_sticks_to_the_one_that_answered(nodes: list[FakeNode]) -> None:
    with Client([dead_endpoint(), nodes[0].url], credential=CRED) as client:
        assert client.check("acme", "export").node == nodes[0].url
        assert client.preferred == 1
        client.check("acme", "export")
    assert len(nodes[0].requests) == 2


def test_failover_on_503_and_504_but_not_on_400(nodes: list[FakeNode]) -> None:
    nodes[0].check = lambda body: (503, {"status": 503, "code": "OVERLOADED", "detail": "busy"})
    with Client([nodes[0].url, nodes[1].url], credential=CRED) as client:
        assert client.check("acme", "export").answered_by == "eu-2"
    nodes[0].check = lambda body: (504, {"status": 504, "code": "TIMEOUT", "detail": "slow"})
    with Client([nodes[0].url, nodes[1].url], credential=CRED) as client:
        assert client.check("acme", "export").answered_by == "eu-2"
    nodes[0].check = lambda body: (400, {"status": 400, "code": "INVALID_ARGUMENT", "detail": "feature: bad id"})
    before = len(nodes[1].requests)
    with Client([nodes[0].url, nodes[1].url], credential=CRED) as client:
        with pytest.raises(InvalidRequestError) as info:
            client.check("acme", "bad id")
    assert info.value.code == "INVALID_ARGUMENT" and info.value.status == 400
    assert len(nodes[1].requests) == before


def test_every_node_down_is_unavailable_naming_each() -> None:
    dead = [dead_endpoint(), dead_endpoint()]
    with Client(dead, credential=CRED, timeout=1.0) as client:
        with pytest.raises(UnavailableError) as info:
            client.check("acme", "export")
    assert [node for node, _ in info.value.attempts] == dead


def test_a_batch_keeps_order_and_per_check_errors(nodes: list[FakeNode]) -> None:
    def answer(body: Any) -> tuple[int, Any]:
        if body["feature"] == "bad":
            return 400, {"status": 400, "code": "INVALID_ARGUMENT", "detail": "no"}
        return 200, dict(
            allowed=True, reason="ALLOW", explanation="", entitlement="e", limit=None, remaining=None, overage=False,
            valid_until=None, trial=False, seats=None, upgrade_hint=None, config={},
        )

    nodes[0].check = answer
    with Client(nodes[0].url, credential=CRED) as client:
        result = client.check_batch(
            [CheckRequest("acme", "export", "alice"), CheckRequest("acme", "bad")], at_least_revision=3
        )
    assert result.answered_by == "eu-1" and result.revision == 7
    first, second = result.results
    assert isinstance(first, Decision) and first.allowed and first.revision == 7
    assert not isinstance(second, Decision) and second.code == "INVALID_ARGUMENT"
    assert nodes[0].requests[-1][3]["at_least_revision"] == 3


async def test_the_async_client_behaves_the_same(nodes: list[FakeNode]) -> None:
    async with AsyncClient([dead_endpoint(), nodes[1].url], credential=CRED) as client:
        d = await client.check("acme", "export", "alice")
        assert d.allowed and d.answered_by == "eu-2" and client.preferred == 1
        batch = await client.check_batch([CheckRequest("acme", "export")])
        assert isinstance(batch.results[0], Decision)
    async with AsyncClient(nodes[0].url) as anonymous:
        with pytest.raises(CredentialError) as info:
            await anonymous.check("acme", "export")
    assert info.value.code == "CREDENTIAL_REQUIRED"


def test_a_consuming_check_carries_one_idempotency_key_to_every_node(nodes: list[FakeNode]) -> None:
    nodes[0].check = lambda body: (503, {"status": 503, "code": "UNAVAILABLE", "detail": "not ready"})
    with Client([nodes[0].url, nodes[1].url], credential=CRED) as client:
        d = client.check("acme", "render", "alice", consume=3)
        batch = client.check_batch([CheckRequest("acme", "render", consume=1), CheckRequest("acme", "export")])
    key = nodes[0].requests[-1][3]["idempotency_key"]
    assert key.startswith("sdk-") and nodes[1].requests[-2][3]["idempotency_key"] == key == d.idempotency_key
    first, second = nodes[1].requests[-1][3]["checks"]
    assert first["idempotency_key"].startswith("sdk-") and "idempotency_key" not in second
    assert len(batch.results) == 2
