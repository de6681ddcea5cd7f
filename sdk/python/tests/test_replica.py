"""The replica: applying a watch stream, deciding locally, refusing what
only the region can answer, following nodes with failover."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from tollgate import (
    AsyncReplica,
    GeoFacts,
    NeedsRegionError,
    Replica,
    ReplicaCore,
    RevisionNotAppliedError,
)
from tollgate._http import SseParser
from tollgate.errors import ProtocolError
from tollgate.replica import StreamError

from fakenode import FakeNode, dead_endpoint
from helpers import demo_mutations

NOW = 1_780_000_000
DE = GeoFacts(country="DE", continent="EU")
US = GeoFacts(country="US", continent="NA")


def core(**kwargs: Any) -> ReplicaCore:
    return ReplicaCore.from_mutations(demo_mutations(), 7, clock=lambda: NOW, **kwargs)


def test_the_demo_decides_as_the_region_does() -> None:
    r = core()
    assert r.check("acme", "export", "alice", location=DE).reason == "ALLOW"
    assert r.check("acme", "export", "alice", location=US).reason == "GEO_BLOCKED"
    assert r.check("acme", "export", "alice").reason == "GEO_BLOCKED", "an unknown location fails a rule with lists"
    carol = r.check("acme", "export", "carol", location=DE)
    assert carol.reason == "SEAT_LIMIT" and carol.seats is not None and carol.seats.holders == ("alice", "bob")
    assert r.check("umbrella", "sso").reason == "SUSPENDED"
    assert r.check("nobody", "export").reason == "UNKNOWN_ACCOUNT"
    assert r.check("acme", "export", "mallory").reason == "UNKNOWN_SUBJECT"
    hint = r.check("acme", "ai-assist", "alice", location=DE)
    assert hint.reason == "NOT_ENTITLED" and hint.upgrade_hint is not None and hint.upgrade_hint.plan == "enterprise"
    assert r.check("globex", "export", "hank").reason == "EXPIRED"
    d = r.check("acme", "export", "alice", location=DE, explain=True)
    assert d.explanation == "Allowed by entitlement acme-pro." and d.config == {"max_resolution": "4k"}
    assert d.answered_by == "local" and d.revision == 7 and d.staleness_seconds == 0


def test_approximate_flags_region_state() -> None:
    r = core()
    capped = r.check("hooli", "render")
    assert capped.allowed and capped.remaining == capped.limit == 1_000_000_000 and capped.approximate
    floating = r.check("initech", "sso", "peter")
    assert floating.allowed and floating.approximate
    assert not r.check("acme", "export", "alice", location=DE).approximate


def test_what_only_the_region_answers_is_refused() -> None:
    r = ReplicaCore.from_mutations(demo_mutations(), 7, account="acme", clock=lambda: NOW)
    with pytest.raises(NeedsRegionError, match="consume"):
        r.check("acme", "render", "alice", consume=1)
    with pytest.raises(NeedsRegionError, match="IP address"):
        r.check("acme", "export", "alice", ip="192.0.2.10")
    with pytest.raises(NeedsRegionError, match="scope"):
        r.check("globex", "export", "hank")
    with pytest.raises(RevisionNotAppliedError) as info:
        r.check("acme", "export", "alice", at_least_revision=8)
    assert (info.value.wanted, info.value.applied) == (8, 7)
    assert r.check("acme", "export", "alice", location=DE, at_least_revision=7).allowed


def test_staleness_follows_the_origin_contact_and_offline_policy() -> None:
    never = core(last_origin_contact=None)
    d = never.check("acme", "export", "alice", location=DE)
    assert d.reason == "STALE_DATA" and d.staleness_seconds is None
    # initech's entitlement allows after its grace.
    assert never.check("initech", "sso", "peter").allowed
    recent = core(last_origin_contact=NOW - 30)
    assert recent.check("acme", "export", "alice", location=DE).staleness_seconds == 30


def state_events(revision: int, parts: int = 2) -> list[dict[str, Any]]:
    muts = demo_mutations()
    size = (len(muts) + parts - 1) // parts
    return [
        {"revision": revision, "index": i, "last": i == parts - 1, "mutations": muts[i * size : (i + 1) * size]}
        for i in range(parts)
    ]


def suspended_acme() -> dict[str, Any]:
    return {"put_account": {"id": "acme", "name": "Acme Corporation", "status": "suspended"}}


def test_a_state_in_parts_then_changes_and_heartbeats() -> None:
    now = [NOW]
    r = ReplicaCore(clock=lambda: now[0])
    first, second = state_events(10)
    r.apply_event("state", json.dumps(first))
    assert r.revision == 0, "published only when whole"
    r.apply_event("state", second)
    assert r.revision == 10
    assert r.check("acme", "export", "alice", location=DE).reason == "STALE_DATA", "never heard from the origin"
    r.apply_event("heartbeat", {"applied_revision": 10, "staleness_seconds": 3})
    assert r.staleness().origin_seconds == 3
    assert r.check("acme", "export", "alice", location=DE).allowed
    r.apply_event("changes", {"changes": [{"revision": 11, "committed_at": NOW - 1, "mutations": [suspended_acme(), {"put_credential": {"x": 1}}, {"some_future_kind": {}}]}], "through_revision": 12})
    assert r.revision == 12, "through_revision, not the last record"
    assert r.check("acme", "export", "alice", location=DE).reason == "SUSPENDED"
    assert r.staleness().origin_seconds == 1, "no earlier than the commit"
    r.apply_event("changes", {"changes": [{"revision": 13, "committed_at": NOW, "mutations": [
        {"revoke_license": {"id": "a" * 32, "account": "acme", "expires_at": NOW + 10, "revoked_at": NOW}},
        {"revoke_certificate": {"serial": "b" * 32, "region": "eu", "not_after": NOW + 10, "revoked_at": NOW}},
        {"delete_subject": {"account": "acme", "subject": "bob"}},
    ]}], "through_revision": 13})
    assert r.license_revoked("a" * 32) and r.certificate_revoked("b" * 32) and not r.license_revoked("c" * 32)
    assert r.check("acme", "export", "bob", location=DE).reason in ("UNKNOWN_SUBJECT", "SUSPENDED")
    r.apply_event("unknown-event", "{}")
    # A new state replaces the data whole.
    for part in state_events(20, parts=3):
        r.apply_event("state", part)
    assert r.revision == 20 and r.check("acme", "export", "alice", location=DE).allowed
    assert not r.license_revoked("a" * 32)


def test_a_stream_out_of_order_is_refused() -> None:
    r = ReplicaCore(clock=lambda: NOW)
    first, second = state_events(3)
    with pytest.raises(StreamError):
        r.apply_event("state", second)
    r.apply_event("state", first)
    with pytest.raises(StreamError):
        r.apply_event("changes", {"changes": [], "through_revision": 4})
    with pytest.raises(StreamError):
        r.apply_event("state", "not json")
    small = ReplicaCore(clock=lambda: NOW, objects_max=2)
    with pytest.raises(StreamError, match="more than 2 objects"):
        small.apply_event("state", {"revision": 1, "index": 0, "last": True, "mutations": demo_mutations()})
    assert small.revision == 0


def test_the_sse_parser() -> None:
    p = SseParser()
    lines = [": comment", "event: changes", "id: 44", "data: {\"a\":", "data: 1}", "", "data:x", "", "", "retry: 5"]
    events = [e for e in (p.feed(line) for line in lines) if e is not None]
    assert events == [("changes", '{"a":\n1}', "44"), ("message", "x", "44")]
    assert p.last_id == "44"


def test_the_sse_parser_refuses_an_event_past_its_bound() -> None:
    p = SseParser(event_bytes_max=16)
    assert p.feed("data: 0123456789") is None
    with pytest.raises(ProtocolError, match="larger than 16 bytes"):
        p.feed("data: 0123456789")
    # Within the bound, an event after a delivered one starts from zero.
    q = SseParser(event_bytes_max=16)
    for _ in range(3):
        assert q.feed("data: 0123456789") is None
        assert q.feed("") == ("message", "0123456789", None)


@pytest.fixture()
def nodes() -> Iterator[list[FakeNode]]:
    ns = [FakeNode("eu-1"), FakeNode("eu-2")]
    yield ns
    for n in ns:
        n.close()


def test_a_replica_follows_resumes_on_the_next_node_with_its_revision(nodes: list[FakeNode]) -> None:
    a, b = nodes
    b.watch_status = 503
    with Replica([dead_endpoint(), a.url, b.url], account="acme", credential="tgc_x.y", reconnect_backoff=(0.01, 0.05)) as replica:
        a.send("heartbeat", {"applied_revision": 10, "staleness_seconds": 2})
        for part in state_events(10):
            a.send("state", part, id=10 if part["last"] else None)
        assert replica.wait_ready(5) == 10
        assert replica.check("acme", "export", "alice", location=DE).allowed
        assert replica.endpoint == a.url
        b.watch_status = 200
        a.end_stream()  # the node goes away: the replica moves to b, from revision 10
        b.send("changes", {"changes": [{"revision": 11, "committed_at": NOW, "mutations": [suspended_acme()]}], "through_revision": 11}, id=11)
        replica.wait_for_revision(11, 5)
        assert replica.check("acme", "export", "alice", location=DE).reason == "SUSPENDED"
        with pytest.raises(NeedsRegionError):
            replica.check("globex", "export")
    watch = [r for r in b.requests if r[0] == "GET"][-1]
    assert "from_revision=10" in watch[1] and "account=acme" in watch[1]
    assert watch[2]["Last-Event-ID"] == "10" and watch[2]["Authorization"] == "Bearer tgc_x.y"


async def test_the_async_replica_follows_too(nodes: list[FakeNode]) -> None:
    a, _ = nodes
    async with AsyncReplica([a.url], credential="tgc_x.y") as replica:
        for part in state_events(5):
            a.send("state", part)
        assert await replica.wait_ready(5) == 5
        a.send("changes", {"changes": [{"revision": 6, "committed_at": NOW, "mutations": [suspended_acme()]}], "through_revision": 6})
        await replica.wait_for_revision(6, 5)
        assert replica.check("acme", "export", "alice", location=DE).reason == "SUSPENDED"
        assert replica.check("globex", "export", "hank").reason == "EXPIRED"


def test_a_silent_node_is_left_after_the_idle_timeout(nodes: list[FakeNode]) -> None:
    silent, talking = nodes
    for part in state_events(4):
        talking.send("state", part)
    with Replica([silent.url, talking.url], idle_timeout=0.3, reconnect_backoff=(0.01, 0.05)) as replica:
        assert replica.wait_ready(5) == 4
        assert replica.endpoint == talking.url


def test_an_error_event_ends_the_stream_and_the_next_node_is_followed(nodes: list[FakeNode]) -> None:
    failing, good = nodes
    failing.send("error", {"status": 503, "code": "UNAVAILABLE", "detail": "shutting down"})
    for part in state_events(9):
        good.send("state", part)
    with Replica([failing.url, good.url], reconnect_backoff=(0.01, 0.05)) as replica:
        assert replica.wait_ready(5) == 9
