"""The local replica: a copy of one account's (or every account's)
entitlements and the catalog, kept current by a region node's
``GET /v1/watch`` stream (Server-Sent Events), answering checks in-process
with a port of the engine the nodes use.

:class:`Replica` follows in a background thread, :class:`AsyncReplica` in an
asyncio task; both share :class:`ReplicaCore`, which holds the data, applies
events and decides. What only the region can answer (a check that consumes,
a location given as an IP address, an account outside the replica's scope)
is refused with :class:`~tollgate.errors.NeedsRegionError`; a decision that
read state only the region has (usage counters under a cap, floating-seat
leases) is flagged ``approximate``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import httpx

from . import _http
from ._engine import decide
from ._store import Dirty, ModelError, Store, Views
from .errors import NeedsRegionError, ProtocolError, RevisionNotAppliedError, TollgateError
from .model import Decision, GeoFacts, Staleness, UNKNOWN_LOCATION

__all__ = ["ReplicaCore", "Replica", "AsyncReplica"]

log = logging.getLogger("tollgate.replica")

RECONNECT_BACKOFF_MIN = 0.05
RECONNECT_BACKOFF_MAX = 5.0
#: Six of a node's default heartbeat intervals (5 s).
IDLE_TIMEOUT = 30.0
OBJECTS_MAX = 1_000_000

Clock = Callable[[], float]


class _Snapshot:
    __slots__ = ("revision", "views")

    def __init__(self, revision: int, views: Views) -> None:
        self.revision = revision
        self.views = views


class _Staging:
    __slots__ = ("revision", "next_index", "store")

    def __init__(self, revision: int) -> None:
        self.revision = revision
        self.next_index = 0
        self.store = Store()


class StreamError(Exception):
    """The watch stream said something that cannot be applied."""


_FIXED: Any = object()


class ReplicaCore:
    """The data, the freshness and the decisions of a replica, without I/O.

    ``clock`` returns Unix seconds (``time.time`` by default); inject one to
    decide at a chosen ``now``.
    """

    def __init__(
        self,
        *,
        account: Optional[str] = None,
        clock: Clock = time.time,
        objects_max: int = OBJECTS_MAX,
        fixed: bool = False,
    ) -> None:
        self.scope = account
        self.clock = clock
        self.objects_max = objects_max
        self._store = Store()
        self._snapshot = _Snapshot(0, self._store.views())
        self._staging: Optional[_Staging] = None
        self._fixed = fixed
        self._origin_contact: Optional[int] = None
        self._heard_at: Optional[float] = None
        self._listeners: list[Callable[[int], None]] = []
        self.endpoint: Optional[str] = None

    # ---------------------------------------------------------- building

    @classmethod
    def from_mutations(
        cls,
        mutations: Iterable[Any],
        revision: int,
        *,
        account: Optional[str] = None,
        clock: Clock = time.time,
        last_origin_contact: Optional[int] = _FIXED,
    ) -> "ReplicaCore":
        """A replica of fixed data. Without ``last_origin_contact`` the data is
        as current as it gets (staleness 0); with it (``None``: never heard
        from the origin), staleness is ``now - last_origin_contact``."""
        fixed = last_origin_contact is _FIXED
        core = cls(account=account, clock=clock, fixed=fixed)
        store = Store()
        dirty = Dirty()
        for m in mutations:
            store.apply(m, dirty)
        core._store = store
        core._snapshot = _Snapshot(revision, store.views())
        if not fixed:
            core._origin_contact = last_origin_contact
        return core

    # -------------------------------------------------------- freshness

    @property
    def revision(self) -> int:
        """The origin revision applied."""
        return self._snapshot.revision

    def contact_at_least(self, at: int) -> None:
        """The region heard from the origin at ``at`` or later."""
        if self._origin_contact is None or at > self._origin_contact:
            self._origin_contact = at

    def set_origin_contact(self, at: Optional[int]) -> None:
        """Sets when the region last heard from the origin (``None``: never)."""
        self._origin_contact = at

    def staleness(self, now: Optional[int] = None) -> Staleness:
        if now is None:
            now = int(self.clock())
        if self._fixed:
            return Staleness(origin_seconds=0, since_region=None)
        contact = self._origin_contact
        heard = self._heard_at
        return Staleness(
            origin_seconds=None if contact is None else max(now - contact, 0),
            since_region=None if heard is None else max(time.monotonic() - heard, 0.0),
        )

    # ------------------------------------------------------------ events

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """``listener(revision)`` is called after each publication."""
        self._listeners.append(listener)

    def _publish(self, revision: int, views: Views) -> None:
        revision = max(revision, self._snapshot.revision)
        self._snapshot = _Snapshot(revision, views)
        for listener in self._listeners:
            listener(revision)

    def heard(self) -> None:
        self._heard_at = time.monotonic()

    def reset_stream(self) -> None:
        """A new stream begins: a state half received is dropped."""
        self._staging = None

    def apply_event(self, event: str, data: Union[str, Mapping[str, Any]]) -> None:
        """Applies one event of the watch stream (``state``, ``changes``,
        ``heartbeat``; others are ignored). Raises :class:`StreamError`."""
        if isinstance(data, str):
            try:
                payload = json.loads(data)
            except ValueError as e:
                raise StreamError(f"a {event} event whose data is not JSON: {e}") from None
        else:
            payload = data
        if not isinstance(payload, Mapping):
            raise StreamError(f"a {event} event whose data is not an object")
        try:
            if event == "state":
                self._apply_state(payload)
            elif event == "changes":
                self._apply_changes(payload)
            elif event == "error":
                raise StreamError(
                    f"the node ended the stream: {payload.get('code', 'ERROR')}: {payload.get('detail', '')}"
                )
            elif event == "heartbeat":
                stale = payload.get("staleness_seconds")
                if stale is not None:
                    self.contact_at_least(int(self.clock()) - int(stale))
        except (ModelError, KeyError, TypeError, ValueError) as e:
            raise StreamError(f"a {event} event that does not apply: {e!r}") from None

    def _apply_state(self, p: Mapping[str, Any]) -> None:
        revision = int(p["revision"])
        index = int(p["index"])
        last = bool(p["last"])
        if index == 0:
            self._staging = _Staging(revision)
        state = self._staging
        if state is None:
            raise StreamError(f"state chunk {index} without chunk 0")
        if state.next_index != index or state.revision != revision:
            raise StreamError(
                f"state chunk {index} at revision {revision} after chunk {state.next_index - 1} "
                f"at revision {state.revision}"
            )
        dirty = Dirty()
        for m in p.get("mutations") or ():
            state.store.apply(m, dirty)
        if state.store.objects > self.objects_max:
            self._staging = None
            raise StreamError(f"the state holds more than {self.objects_max} objects (the replica's limit)")
        state.next_index += 1
        if last:
            self._staging = None
            views = state.store.views()
            self._store = state.store
            self._publish(state.revision, views)
            log.info("Replaced the replica's data with a state at revision %d.", state.revision)

    def _apply_changes(self, p: Mapping[str, Any]) -> None:
        if self._staging is not None:
            raise StreamError("changes in the middle of a state")
        through = int(p["through_revision"])
        store = self._store
        dirty = Dirty()
        committed: Optional[int] = None
        for record in p.get("changes") or ():
            at = record.get("committed_at")
            if at is not None and (committed is None or int(at) > committed):
                committed = int(at)
            for m in record.get("mutations") or ():
                store.apply(m, dirty)
        if store.objects > self.objects_max:
            raise StreamError(f"the data holds more than {self.objects_max} objects (the replica's limit)")
        views = store.update_views(self._snapshot.views, dirty)
        if committed is not None:
            self.contact_at_least(committed)
        self._publish(through, views)

    # --------------------------------------------------------- decisions

    def check(
        self,
        account: str,
        feature: str,
        subject: Optional[str] = None,
        *,
        location: Optional[GeoFacts] = None,
        ip: Optional[str] = None,
        consume: int = 0,
        at_least_revision: Optional[int] = None,
        explain: bool = False,
        now: Optional[int] = None,
        last_origin_contact: Optional[int] = _FIXED,
    ) -> Decision:
        """Decides in-process, without the network.

        ``now`` (Unix seconds) replaces the clock, and ``last_origin_contact``
        (``None``: never) the replica's own estimate of when the region last
        heard from the origin, as the Rust SDK's ``Replica::check_at``: for
        applications keeping their own trusted time, replays and the
        conformance cases.

        Raises :class:`NeedsRegionError` for a check that consumes, a location
        given as an IP address, or an account outside the replica's scope;
        :class:`RevisionNotAppliedError` when ``at_least_revision`` is ahead.
        """
        if consume:
            raise NeedsRegionError(
                "a check that consumes units is metered by the region: use Client.check(consume=...)"
            )
        if ip is not None:
            raise NeedsRegionError(
                f"the location is an IP address ({ip}) and the replica resolves none: "
                "pass a resolved location (GeoFacts), or ask the region with Client.check"
            )
        scope = self.scope
        if scope is not None and scope != account:
            raise NeedsRegionError(f"account {account} is outside this replica's scope ({scope})")
        stale: Optional[int]
        snapshot = self._snapshot
        if at_least_revision is not None and at_least_revision > snapshot.revision:
            raise RevisionNotAppliedError(
                f"revision {at_least_revision} is not applied yet (the replica is at {snapshot.revision})",
                wanted=at_least_revision,
                applied=snapshot.revision,
            )
        if now is None:
            now = int(self.clock())
        if last_origin_contact is not _FIXED:
            stale = None if last_origin_contact is None else max(now - last_origin_contact, 0)
            heard = self._heard_at
            staleness = Staleness(stale, None if heard is None else time.monotonic() - heard)
        elif self._fixed:
            stale = 0
            staleness = _FRESH
        else:
            contact = self._origin_contact
            stale = None if contact is None else (now - contact if now > contact else 0)
            heard = self._heard_at
            staleness = Staleness(stale, None if heard is None else time.monotonic() - heard)
        views = snapshot.views
        return decide(
            account,
            subject,
            feature,
            views.accounts.get(account),
            UNKNOWN_LOCATION if location is None else location,
            views.catalog,
            now=now,
            revision=snapshot.revision,
            staleness_seconds=stale,
            explain=explain,
            answered_by="local",
            staleness=staleness,
        )

    # ------------------------------------------------------ revocations

    def license_revoked(self, jti: str) -> bool:
        """Whether the license token with this ``jti`` was revoked (as replicated)."""
        return jti in self._store.revoked_licenses

    def certificate_revoked(self, serial: str) -> bool:
        """Whether the region certificate with this serial was revoked (as replicated)."""
        return serial in self._store.revoked_certificates


_FRESH = Staleness(origin_seconds=0, since_region=None)


class _Follower:
    """What the sync and async followers share: where to connect, and how."""

    def __init__(
        self,
        endpoints: Union[str, Sequence[str]],
        credential: Optional[str],
        credential_file: Optional[str],
        ca_file: Optional[str],
        verify: Union[bool, ssl.SSLContext],
        idle_timeout: float,
        connect_timeout: float,
        backoff: tuple[float, float],
    ) -> None:
        self.endpoints = _http.normalize_endpoints(endpoints)
        self.credential = _http.read_credential(credential, credential_file)
        self.verify = _http.ssl_context(ca_file, verify)
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.backoff_min, self.backoff_max = backoff
        self.next = 0
        self.last_error: Optional[str] = None

    def request(self, core: ReplicaCore, node: str) -> tuple[str, dict[str, str], dict[str, str]]:
        params = {"from_revision": str(core.revision)}
        if core.scope is not None:
            params["account"] = core.scope
        headers = _http.headers(self.credential)
        headers["Accept"] = "text/event-stream"
        if core.revision > 0:
            headers["Last-Event-ID"] = str(core.revision)
        return node + "/v1/watch", params, headers

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.idle_timeout, connect=self.connect_timeout)


class Replica:
    """A replica following a region in a background thread.

    ``endpoints``: the region's nodes (check URLs); ``account``: follow one
    account (plus the catalog), or every account when ``None`` (needs the
    ``watch_all`` verb). Call :meth:`start` (or use it as a context manager),
    then :meth:`wait_ready`.
    """

    def __init__(
        self,
        endpoints: Union[str, Sequence[str]],
        *,
        account: Optional[str] = None,
        credential: Optional[str] = None,
        credential_file: Optional[str] = None,
        ca_file: Optional[str] = None,
        verify: Union[bool, ssl.SSLContext] = True,
        clock: Clock = time.time,
        idle_timeout: float = IDLE_TIMEOUT,
        connect_timeout: float = 2.0,
        reconnect_backoff: tuple[float, float] = (RECONNECT_BACKOFF_MIN, RECONNECT_BACKOFF_MAX),
        objects_max: int = OBJECTS_MAX,
    ) -> None:
        self.core = ReplicaCore(account=account, clock=clock, objects_max=objects_max)
        self._follower = _Follower(
            endpoints, credential, credential_file, ca_file, verify, idle_timeout, connect_timeout, reconnect_backoff
        )
        self._changed = threading.Condition()
        self._ready = False
        self.core.add_listener(self._on_publish)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._response: Optional[httpx.Response] = None
        self._http: Optional[httpx.Client] = None

    # lifecycle
    def __enter__(self) -> "Replica":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._http = httpx.Client(verify=self._follower.verify, timeout=self._follower.timeout())
        self._thread = threading.Thread(target=self._run, name="tollgate-replica", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stops following (the data stays and can still answer)."""
        self._stop.set()
        response = self._response
        if response is not None:
            # A read blocked in the follower thread is not woken by closing
            # the response: shut the socket down under it.
            stream = response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            try:
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        if self._http is not None:
            self._http.close()

    def _on_publish(self, revision: int) -> None:
        with self._changed:
            self._ready = True
            self._changed.notify_all()

    # following
    def _run(self) -> None:
        f = self._follower
        backoff = f.backoff_min
        n = len(f.endpoints)
        while not self._stop.is_set():
            index = f.next
            f.next = (index + 1) % n
            node = f.endpoints[index]
            delivered = [False]
            try:
                self._session(node, delivered)
                log.info("The watch stream of %s ended; resuming on the next node.", node)
            except Exception as e:  # noqa: BLE001 - any failure moves to the next node
                if self._stop.is_set():
                    break
                f.last_error = f"{node}: {e!r}"
                log.warning("The watch stream of %s failed (%r); resuming on the next node.", node, e)
            self.core.endpoint = None
            if delivered[0]:
                backoff = f.backoff_min
            else:
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, f.backoff_max)

    def _session(self, node: str, delivered: list[bool]) -> None:
        assert self._http is not None
        url, params, headers = self._follower.request(self.core, node)
        self.core.reset_stream()
        with self._http.stream("GET", url, params=params, headers=headers) as response:
            self._response = response
            try:
                if response.status_code != 200:
                    response.read()
                    raise _http.problem_error(response, node)
                self.core.endpoint = node
                parser = _http.SseParser()
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    event = parser.feed(line)
                    if event is None:
                        continue
                    self.core.heard()
                    self.core.apply_event(event[0], event[1])
                    delivered[0] = True
            finally:
                self._response = None

    # waiting
    def wait_ready(self, timeout: float = 10.0) -> int:
        """Waits until a whole state has been received; returns the revision."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._ready:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TollgateError(
                        f"the replica received no state within {timeout} s"
                        + (f" (last error: {self._follower.last_error})" if self._follower.last_error else ""),
                        code="DEADLINE_EXCEEDED",
                    )
                self._changed.wait(left)
        return self.core.revision

    def wait_for_revision(self, revision: int, timeout: float = 10.0) -> int:
        """Waits until ``revision`` is applied; returns the revision reached."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.core.revision < revision:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TollgateError(
                        f"the replica is at revision {self.core.revision}, waiting for {revision}",
                        code="DEADLINE_EXCEEDED",
                    )
                self._changed.wait(left)
        return self.core.revision

    # answering
    @property
    def revision(self) -> int:
        return self.core.revision

    @property
    def endpoint(self) -> Optional[str]:
        """The node followed right now, if any."""
        return self.core.endpoint

    def staleness(self) -> Staleness:
        return self.core.staleness()

    def check(
        self,
        account: str,
        feature: str,
        subject: Optional[str] = None,
        *,
        location: Optional[GeoFacts] = None,
        ip: Optional[str] = None,
        consume: int = 0,
        at_least_revision: Optional[int] = None,
        explain: bool = False,
        now: Optional[int] = None,
    ) -> Decision:
        """Decides in-process (see :meth:`ReplicaCore.check`)."""
        return self.core.check(
            account,
            feature,
            subject,
            location=location,
            ip=ip,
            consume=consume,
            at_least_revision=at_least_revision,
            explain=explain,
            now=now,
        )

    def license_revoked(self, jti: str) -> bool:
        return self.core.license_revoked(jti)

    def certificate_revoked(self, serial: str) -> bool:
        return self.core.certificate_revoked(serial)


class AsyncReplica:
    """The asyncio twin of :class:`Replica`: it follows in a task.

    ``await replica.start()`` (or ``async with``), then
    ``await replica.wait_ready()``; :meth:`check` is synchronous (it never
    waits: the data is in memory).
    """

    def __init__(
        self,
        endpoints: Union[str, Sequence[str]],
        *,
        account: Optional[str] = None,
        credential: Optional[str] = None,
        credential_file: Optional[str] = None,
        ca_file: Optional[str] = None,
        verify: Union[bool, ssl.SSLContext] = True,
        clock: Clock = time.time,
        idle_timeout: float = IDLE_TIMEOUT,
        connect_timeout: float = 2.0,
        reconnect_backoff: tuple[float, float] = (RECONNECT_BACKOFF_MIN, RECONNECT_BACKOFF_MAX),
        objects_max: int = OBJECTS_MAX,
    ) -> None:
        self.core = ReplicaCore(account=account, clock=clock, objects_max=objects_max)
        self._follower = _Follower(
            endpoints, credential, credential_file, ca_file, verify, idle_timeout, connect_timeout, reconnect_backoff
        )
        self._task: Optional[asyncio.Task[None]] = None
        self._http: Optional[httpx.AsyncClient] = None
        self._changed: Optional[asyncio.Event] = None
        self._ready = False
        self.core.add_listener(self._on_publish)

    async def __aenter__(self) -> "AsyncReplica":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._task is not None:
            return
        self._changed = asyncio.Event()
        self._http = httpx.AsyncClient(verify=self._follower.verify, timeout=self._follower.timeout())
        self._task = asyncio.create_task(self._run(), name="tollgate-replica")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _on_publish(self, revision: int) -> None:
        self._ready = True
        if self._changed is not None:
            self._changed.set()

    async def _run(self) -> None:
        f = self._follower
        backoff = f.backoff_min
        n = len(f.endpoints)
        while True:
            index = f.next
            f.next = (index + 1) % n
            node = f.endpoints[index]
            delivered = [False]
            try:
                await self._session(node, delivered)
                log.info("The watch stream of %s ended; resuming on the next node.", node)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure moves to the next node
                f.last_error = f"{node}: {e!r}"
                log.warning("The watch stream of %s failed (%r); resuming on the next node.", node, e)
            self.core.endpoint = None
            if delivered[0]:
                backoff = f.backoff_min
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, f.backoff_max)

    async def _session(self, node: str, delivered: list[bool]) -> None:
        assert self._http is not None
        url, params, headers = self._follower.request(self.core, node)
        self.core.reset_stream()
        async with self._http.stream("GET", url, params=params, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                raise _http.problem_error(response, node)
            self.core.endpoint = node
            parser = _http.SseParser()
            async for line in response.aiter_lines():
                event = parser.feed(line)
                if event is None:
                    continue
                self.core.heard()
                self.core.apply_event(event[0], event[1])
                delivered[0] = True

    async def _wait(self, done: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
        assert self._changed is not None, "start() the replica first"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            left = deadline - loop.time()
            if left <= 0:
                raise TollgateError(what(), code="DEADLINE_EXCEEDED")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def wait_ready(self, timeout: float = 10.0) -> int:
        """Waits until a whole state has been received; returns the revision."""
        await self._wait(
            lambda: self._ready,
            timeout,
            lambda: f"the replica received no state within {timeout} s"
            + (f" (last error: {self._follower.last_error})" if self._follower.last_error else ""),
        )
        return self.core.revision

    async def wait_for_revision(self, revision: int, timeout: float = 10.0) -> int:
        """Waits until ``revision`` is applied; returns the revision reached."""
        await self._wait(
            lambda: self.core.revision >= revision,
            timeout,
            lambda: f"the replica is at revision {self.core.revision}, waiting for {revision}",
        )
        return self.core.revision

    @property
    def revision(self) -> int:
        return self.core.revision

    @property
    def endpoint(self) -> Optional[str]:
        return self.core.endpoint

    def staleness(self) -> Staleness:
        return self.core.staleness()

    def check(
        self,
        account: str,
        feature: str,
        subject: Optional[str] = None,
        *,
        location: Optional[GeoFacts] = None,
        ip: Optional[str] = None,
        consume: int = 0,
        at_least_revision: Optional[int] = None,
        explain: bool = False,
        now: Optional[int] = None,
    ) -> Decision:
        """Decides in-process (see :meth:`ReplicaCore.check`)."""
        return self.core.check(
            account,
            feature,
            subject,
            location=location,
            ip=ip,
            consume=consume,
            at_least_revision=at_least_revision,
            explain=explain,
            now=now,
        )

    def license_revoked(self, jti: str) -> bool:
        return self.core.license_revoked(jti)

    def certificate_revoked(self, serial: str) -> bool:
        return self.core.certificate_revoked(serial)
