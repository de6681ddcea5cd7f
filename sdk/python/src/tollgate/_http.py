"""What the sync and asyncio clients share: endpoints, TLS, headers, failover
rules and how an answer is read."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import httpx

from .errors import (
    CredentialError,
    InvalidRequestError,
    NotFoundError,
    ProblemError,
    ProtocolError,
    RateLimitedError,
    RevisionNotAppliedError,
    TollgateError,
)

#: The whole call's deadline when none is given, failover included (seconds).
DEFAULT_TIMEOUT = 2.0
#: The least time one node is given before the next is tried (seconds).
ATTEMPT_TIMEOUT_MIN = 0.25
#: Most nodes one client talks to.
ENDPOINTS_MAX = 64
#: Largest answer read (bytes).
RESPONSE_BYTES_MAX = 4 * 1024 * 1024
#: Statuses after which the next node is tried.
FAILOVER_STATUSES = frozenset({502, 503, 504})

CredentialSource = Union[str, None]


def normalize_endpoints(endpoints: Union[str, Sequence[str]]) -> list[str]:
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    out: list[str] = []
    for e in endpoints:
        if not isinstance(e, str) or not e.startswith(("http://", "https://")):
            raise ValueError(f"an endpoint is an http:// or https:// URL, not {e!r}")
        out.append(e.rstrip("/"))
    if not out:
        raise ValueError("at least one endpoint is needed")
    if len(out) > ENDPOINTS_MAX:
        raise ValueError(f"at most {ENDPOINTS_MAX} endpoints")
    schemes = {e.split(":", 1)[0] for e in out}
    if len(schemes) != 1:
        raise ValueError("all endpoints use the same scheme (https:// or http://)")
    return out


def read_credential(credential: Optional[str], credential_file: Optional[str]) -> Optional[str]:
    if credential is not None and credential_file is not None:
        raise ValueError("give credential or credential_file, not both")
    if credential_file is not None:
        with open(credential_file, encoding="utf-8") as f:
            credential = f.read().strip()
    if credential is not None and not credential.startswith("tgc_"):
        raise ValueError("an application credential looks like tgc_<id>.<secret>")
    return credential


def ssl_context(ca_file: Optional[str], verify: Union[bool, ssl.SSLContext]) -> Union[bool, ssl.SSLContext]:
    """A context trusting ``ca_file`` (the cluster's private CA), else ``verify``."""
    if isinstance(verify, ssl.SSLContext):
        if ca_file is not None:
            verify.load_verify_locations(cafile=ca_file)
        return verify
    if ca_file is not None:
        if not verify:
            raise ValueError("ca_file with verify=False makes no sense")
        return ssl.create_default_context(cafile=ca_file)
    return verify


def headers(credential: Optional[str]) -> dict[str, str]:
    h = {"Accept": "application/json", "User-Agent": "tollgate-python/0.1"}
    if credential is not None:
        h["Authorization"] = f"Bearer {credential}"
    return h


@dataclass
class Failed:
    """An attempt that moves the call to the next node."""

    node: str
    reason: str
    status: Optional[int] = None
    code: Optional[str] = None
    error: Optional[TollgateError] = None


def attempt_timeout(remaining: float, untried: int, wait_for_revision: bool) -> float:
    """An equal share of the time left among the nodes not yet tried, at least
    :data:`ATTEMPT_TIMEOUT_MIN`; all of it for a check waiting for a revision."""
    if wait_for_revision or untried <= 1:
        return max(remaining, 0.001)
    return max(min(remaining, max(remaining / untried, ATTEMPT_TIMEOUT_MIN)), 0.001)


def problem_error(response: httpx.Response, node: str) -> TollgateError:
    """The exception for a non-2xx answer (a problem+json document, or not)."""
    status = response.status_code
    problem: Mapping[str, Any] = {}
    try:
        parsed = json.loads(response.content) if response.content else {}
        if isinstance(parsed, dict):
            problem = parsed
    except ValueError:
        pass
    code = str(problem.get("code") or _default_code(status))
    detail = str(problem.get("detail") or problem.get("title") or response.reason_phrase or f"HTTP {status}")
    title = str(problem.get("title") or "")
    kwargs: dict[str, Any] = dict(code=code, status=status, node=node, title=title, problem=problem)
    if code == "REVISION_NOT_APPLIED":
        return RevisionNotAppliedError(detail, status=status, node=node)
    if status in (401, 403):
        return CredentialError(detail, **kwargs)
    if status == 404:
        return NotFoundError(detail, **kwargs)
    if status == 429:
        retry_after: Optional[float] = None
        try:
            retry_after = float(response.headers.get("retry-after", ""))
        except ValueError:
            pass
        return RateLimitedError(detail, retry_after=retry_after, **kwargs)
    if 400 <= status < 500:
        return InvalidRequestError(detail, **kwargs)
    return ProblemError(detail, **kwargs)


def _default_code(status: int) -> str:
    return {
        400: "INVALID_ARGUMENT",
        401: "CREDENTIAL_REQUIRED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        405: "METHOD_NOT_ALLOWED",
        413: "MESSAGE_TOO_LARGE",
        415: "UNSUPPORTED_MEDIA_TYPE",
        429: "RATE_LIMITED",
        502: "UNAVAILABLE",
        503: "UNAVAILABLE",
        504: "TIMEOUT",
    }.get(status, "UNKNOWN")


def json_body(response: httpx.Response, node: str) -> Mapping[str, Any]:
    if len(response.content) > RESPONSE_BYTES_MAX:
        raise ProtocolError(f"an answer of {len(response.content)} bytes", node=node, status=response.status_code)
    try:
        value = json.loads(response.content)
    except ValueError as e:
        raise ProtocolError(f"the answer is not JSON: {e}", node=node, status=response.status_code) from None
    if not isinstance(value, dict):
        raise ProtocolError("the answer is not a JSON object", node=node, status=response.status_code)
    return value


#: Largest event kept (its data lines together), as the JavaScript SDK's
#: parser: a guard against a runaway stream, far above any real state part.
EVENT_BYTES_MAX = 16 * 1024 * 1024


class SseParser:
    """Server-Sent Events, line by line (the WHATWG event-stream rules)."""

    __slots__ = ("_event", "_data", "_size", "last_id", "event_bytes_max")

    def __init__(self, event_bytes_max: int = EVENT_BYTES_MAX) -> None:
        self._event = ""
        self._data: list[str] = []
        self._size = 0
        self.last_id: Optional[str] = None
        self.event_bytes_max = event_bytes_max

    def feed(self, line: str) -> Optional[tuple[str, str, Optional[str]]]:
        """One line (without its end); an ``(event, data, id)`` when a blank line ends one."""
        if line == "":
            if not self._data:
                self._event = ""
                return None
            event = (self._event or "message", "\n".join(self._data), self.last_id)
            self._event = ""
            self._data = []
            self._size = 0
            return event
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._size += len(value) + 1
            if self._size > self.event_bytes_max:
                raise ProtocolError(f"an event of the stream is larger than {self.event_bytes_max} bytes")
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_id = value
        return None
