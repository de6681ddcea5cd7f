"""Remote checks against a region's nodes over HTTP/JSON, with failover.

Failover (every Tollgate SDK): a call starts with the node that answered
last, then tries the others in order; it moves to the next node on a
connection error, a timeout, or a 502/503/504 answer, and never on a 4xx or a
decision. The whole call, failover included, has one deadline (``timeout``);
each node gets an equal share of the time left among the nodes not yet tried
(at least 250 ms), except a check waiting for a revision, which gets all of
it.
"""

from __future__ import annotations

import dataclasses
import secrets
import ssl
import threading
import time
from typing import Any, Mapping, Optional, Sequence, Union

import httpx

from . import _http
from ._http import DEFAULT_TIMEOUT, Failed
from .errors import ProtocolError, RevisionNotAppliedError, TollgateError, UnavailableError
from .model import BatchItemError, BatchResult, CheckRequest, Decision, GeoFacts

__all__ = ["Client", "AsyncClient", "new_idempotency_key", "BATCH_CHECKS_MAX"]

#: Most checks in one batch (the gRPC ``BatchCheck`` limit).
BATCH_CHECKS_MAX = 128


def new_idempotency_key() -> str:
    """``sdk-`` and 128 random bits in hex, as the Rust SDK makes them."""
    return "sdk-" + secrets.token_hex(16)


class _Base:
    def __init__(
        self,
        endpoints: Union[str, Sequence[str]],
        *,
        credential: Optional[str] = None,
        credential_file: Optional[str] = None,
        ca_file: Optional[str] = None,
        verify: Union[bool, ssl.SSLContext] = True,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: Optional[float] = None,
    ) -> None:
        self.endpoints = _http.normalize_endpoints(endpoints)
        self._credential = _http.read_credential(credential, credential_file)
        self._verify = _http.ssl_context(ca_file, verify)
        self.timeout = float(timeout)
        self.connect_timeout = connect_timeout
        self._preferred = 0
        self._lock = threading.Lock()

    @property
    def preferred(self) -> int:
        """Index of the node the next call starts with (the last that answered)."""
        return self._preferred

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        start = self._preferred
        return [(start + i) % n for i in range(n)]

    def _answered(self, index: int) -> None:
        with self._lock:
            self._preferred = index

    def _httpx_timeout(self, seconds: float) -> httpx.Timeout:
        connect = seconds if self.connect_timeout is None else min(self.connect_timeout, seconds)
        return httpx.Timeout(seconds, connect=connect)

    @staticmethod
    def _check_body(request: CheckRequest, at_least_revision: Optional[int]) -> dict[str, Any]:
        body = request.to_wire()
        if at_least_revision is not None:
            body["at_least_revision"] = at_least_revision
        return body

    @staticmethod
    def _request(
        account: str,
        feature: str,
        subject: Optional[str],
        consume: int,
        ip: Optional[str],
        location: Optional[GeoFacts],
        idempotency_key: Optional[str],
        explain: bool,
    ) -> CheckRequest:
        if consume and idempotency_key is None:
            # Every node tried gets the same key, so a failover never
            # consumes twice (the Rust SDK does the same).
            idempotency_key = new_idempotency_key()
        return CheckRequest(
            account=account,
            feature=feature,
            subject=subject,
            consume=consume,
            ip=ip,
            location=location,
            idempotency_key=idempotency_key,
            explain=explain,
        )

    @staticmethod
    def _batch_body(checks: Sequence[CheckRequest], at_least_revision: Optional[int]) -> dict[str, Any]:
        if not checks:
            raise ValueError("a batch holds at least one check")
        if len(checks) > BATCH_CHECKS_MAX:
            raise ValueError(f"a batch holds at most {BATCH_CHECKS_MAX} checks")
        keyed = [
            dataclasses.replace(c, idempotency_key=new_idempotency_key()) if c.consume and c.idempotency_key is None else c
            for c in checks
        ]
        body: dict[str, Any] = {"checks": [c.to_wire() for c in keyed]}
        if at_least_revision is not None:
            body["at_least_revision"] = at_least_revision
        return body

    @staticmethod
    def _decision(answer: Mapping[str, Any], node: str, idempotency_key: Optional[str] = None) -> Decision:
        try:
            decision = Decision.from_wire(answer, node=node)
            if idempotency_key is not None:
                decision = dataclasses.replace(decision, idempotency_key=idempotency_key)
            return decision
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"a decision that does not read: {e!r}", node=node) from None

    @staticmethod
    def _batch(answer: Mapping[str, Any], node: str, count: int) -> BatchResult:
        try:
            items = answer["results"]
            if not isinstance(items, list) or len(items) != count:
                raise ValueError(f"{len(items) if isinstance(items, list) else 'no'} results for {count} checks")
            revision = answer.get("revision")
            staleness = answer.get("staleness_seconds")
            answered_by = answer.get("answered_by")
            results: list[Union[Decision, BatchItemError]] = []
            for item in items:
                if "decision" in item and item["decision"] is not None:
                    results.append(
                        Decision.from_wire(
                            item["decision"],
                            node=node,
                            revision=revision,
                            staleness_seconds=staleness,
                            answered_by=answered_by,
                        )
                    )
                else:
                    error = item["error"]
                    results.append(BatchItemError(code=str(error["code"]), message=str(error.get("message", ""))))
            return BatchResult(
                results=tuple(results),
                revision=revision,
                staleness_seconds=staleness,
                answered_by=answered_by,
                node=node,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"a batch answer that does not read: {e!r}", node=node) from None

    @staticmethod
    def _unavailable(failures: list[Failed], deadline_hit: bool) -> TollgateError:
        attempts = [(f.node, f.reason) for f in failures]
        last = failures[-1] if failures else None
        if last is not None and last.error is not None and isinstance(last.error, RevisionNotAppliedError):
            return last.error
        summary = "; ".join(f"{node}: {reason}" for node, reason in attempts) or "no node was tried"
        return UnavailableError(
            f"no node of the region answered{' before the deadline' if deadline_hit else ''}: {summary}",
            code=(last.code if last is not None and last.code else ("DEADLINE_EXCEEDED" if deadline_hit else "UNAVAILABLE")),
            status=last.status if last is not None else None,
            node=last.node if last is not None else None,
            attempts=attempts,
        )


class Client(_Base):
    """A synchronous client of one region's nodes (thread-safe; keeps connections alive).

    ``endpoints``: the nodes' check URLs (``https://host:port``), tried in
    order from the one that answered last. ``credential`` (or
    ``credential_file``): the application credential ``tgc_<id>.<secret>``.
    ``ca_file``: the CA that signed the nodes' certificates. ``timeout``: the
    default deadline of a call, failover included (seconds).
    """

    def __init__(
        self,
        endpoints: Union[str, Sequence[str]],
        *,
        credential: Optional[str] = None,
        credential_file: Optional[str] = None,
        ca_file: Optional[str] = None,
        verify: Union[bool, ssl.SSLContext] = True,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: Optional[float] = None,
    ) -> None:
        super().__init__(
            endpoints,
            credential=credential,
            credential_file=credential_file,
            ca_file=ca_file,
            verify=verify,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )
        self._http = httpx.Client(
            verify=self._verify,
            headers=_http.headers(self._credential),
            timeout=self._httpx_timeout(self.timeout),
        )

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def check(
        self,
        account: str,
        feature: str,
        subject: Optional[str] = None,
        *,
        consume: int = 0,
        ip: Optional[str] = None,
        location: Optional[GeoFacts] = None,
        at_least_revision: Optional[int] = None,
        idempotency_key: Optional[str] = None,
        explain: bool = False,
        timeout: Optional[float] = None,
    ) -> Decision:
        """``POST /v1/check``: may ``subject`` of ``account`` use ``feature``?

        A denial is a :class:`Decision` (``allowed`` false), not an error.
        """
        request = self._request(account, feature, subject, consume, ip, location, idempotency_key, explain)
        body = self._check_body(request, at_least_revision)
        answer, node = self._call("/v1/check", body, timeout, at_least_revision is not None)
        return self._decision(answer, node, request.idempotency_key)

    def check_batch(
        self,
        checks: Sequence[CheckRequest],
        *,
        at_least_revision: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> BatchResult:
        """``POST /v1/checks``: up to 128 checks answered together, in order."""
        body = self._batch_body(checks, at_least_revision)
        answer, node = self._call("/v1/checks", body, timeout, at_least_revision is not None)
        return self._batch(answer, node, len(checks))

    def _call(
        self, path: str, body: Mapping[str, Any], timeout: Optional[float], wait: bool
    ) -> tuple[Mapping[str, Any], str]:
        total = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + total
        order = self._order()
        failures: list[Failed] = []
        for tried, index in enumerate(order):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._unavailable(failures, True)
            node = self.endpoints[index]
            seconds = _http.attempt_timeout(remaining, len(order) - tried, wait)
            try:
                response = self._http.post(node + path, json=body, timeout=self._httpx_timeout(seconds))
            except httpx.TimeoutException as e:
                failures.append(Failed(node, f"timed out ({type(e).__name__})", code="DEADLINE_EXCEEDED"))
                continue
            except httpx.TransportError as e:
                failures.append(Failed(node, f"connection error: {e!r}"))
                continue
            if response.status_code in _http.FAILOVER_STATUSES:
                error = _http.problem_error(response, node)
                failures.append(Failed(node, str(error), response.status_code, error.code, error))
                continue
            self._answered(index)
            if response.status_code != 200:
                raise _http.problem_error(response, node)
            return _http.json_body(response, node), node
        raise self._unavailable(failures, False)


class AsyncClient(_Base):
    """The asyncio twin of :class:`Client` (same arguments, ``await`` the calls)."""

    def __init__(
        self,
        endpoints: Union[str, Sequence[str]],
        *,
        credential: Optional[str] = None,
        credential_file: Optional[str] = None,
        ca_file: Optional[str] = None,
        verify: Union[bool, ssl.SSLContext] = True,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: Optional[float] = None,
    ) -> None:
        super().__init__(
            endpoints,
            credential=credential,
            credential_file=credential_file,
            ca_file=ca_file,
            verify=verify,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )
        self._http = httpx.AsyncClient(
            verify=self._verify,
            headers=_http.headers(self._credential),
            timeout=self._httpx_timeout(self.timeout),
        )

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def check(
        self,
        account: str,
        feature: str,
        subject: Optional[str] = None,
        *,
        consume: int = 0,
        ip: Optional[str] = None,
        location: Optional[GeoFacts] = None,
        at_least_revision: Optional[int] = None,
        idempotency_key: Optional[str] = None,
        explain: bool = False,
        timeout: Optional[float] = None,
    ) -> Decision:
        """``POST /v1/check`` (see :meth:`Client.check`)."""
        request = self._request(account, feature, subject, consume, ip, location, idempotency_key, explain)
        body = self._check_body(request, at_least_revision)
        answer, node = await self._call("/v1/check", body, timeout, at_least_revision is not None)
        return self._decision(answer, node, request.idempotency_key)

    async def check_batch(
        self,
        checks: Sequence[CheckRequest],
        *,
        at_least_revision: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> BatchResult:
        """``POST /v1/checks`` (see :meth:`Client.check_batch`)."""
        body = self._batch_body(checks, at_least_revision)
        answer, node = await self._call("/v1/checks", body, timeout, at_least_revision is not None)
        return self._batch(answer, node, len(checks))

    async def _call(
        self, path: str, body: Mapping[str, Any], timeout: Optional[float], wait: bool
    ) -> tuple[Mapping[str, Any], str]:
        total = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + total
        order = self._order()
        failures: list[Failed] = []
        for tried, index in enumerate(order):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._unavailable(failures, True)
            node = self.endpoints[index]
            seconds = _http.attempt_timeout(remaining, len(order) - tried, wait)
            try:
                response = await self._http.post(node + path, json=body, timeout=self._httpx_timeout(seconds))
            except httpx.TimeoutException as e:
                failures.append(Failed(node, f"timed out ({type(e).__name__})", code="DEADLINE_EXCEEDED"))
                continue
            except httpx.TransportError as e:
                failures.append(Failed(node, f"connection error: {e!r}"))
                continue
            if response.status_code in _http.FAILOVER_STATUSES:
                error = _http.problem_error(response, node)
                failures.append(Failed(node, str(error), response.status_code, error.code, error))
                continue
            self._answered(index)
            if response.status_code != 200:
                raise _http.problem_error(response, node)
            return _http.json_body(response, node), node
        raise self._unavailable(failures, False)
