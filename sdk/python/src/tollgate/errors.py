"""Errors raised by the SDK.

A denial is never an error: it is a :class:`tollgate.Decision` with a reason.
Errors are what keeps an answer from being given at all.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

__all__ = [
    "TollgateError",
    "ProblemError",
    "InvalidRequestError",
    "CredentialError",
    "NotFoundError",
    "RateLimitedError",
    "UnavailableError",
    "RevisionNotAppliedError",
    "ProtocolError",
    "NeedsRegionError",
    "LicenseError",
]


class TollgateError(Exception):
    """Base class of every SDK error.

    ``code`` is the stable machine-readable code (the problem+json ``code``,
    e.g. ``CREDENTIAL_REQUIRED``), ``status`` the HTTP status when a node
    answered, ``detail`` the human text, ``node`` the endpoint that
    answered (or last failed).
    """

    def __init__(
        self,
        detail: str,
        *,
        code: str = "ERROR",
        status: Optional[int] = None,
        node: Optional[str] = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.status = status
        self.detail = detail
        self.node = node

    def __str__(self) -> str:
        where = f" (from {self.node})" if self.node else ""
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.detail}{where}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, "
            f"detail={self.detail!r}, node={self.node!r})"
        )


class ProblemError(TollgateError):
    """A node answered with an ``application/problem+json`` error."""

    def __init__(
        self,
        detail: str,
        *,
        code: str,
        status: int,
        node: Optional[str] = None,
        title: str = "",
        problem: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(detail, code=code, status=status, node=node)
        self.title = title
        self.problem: Mapping[str, Any] = problem or {}


class InvalidRequestError(ProblemError):
    """400, 404, 405, 413, 415: the request is wrong; no node would take it."""


class CredentialError(ProblemError):
    """401 (missing or bad credential) or 403 (outside the credential's scope)."""


class NotFoundError(ProblemError):
    """404: the route (or object) does not exist on the node."""


class RateLimitedError(ProblemError):
    """429: the caller is over its rate; ``retry_after`` seconds if the node said."""

    def __init__(self, *args: Any, retry_after: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class UnavailableError(TollgateError):
    """No node of the region answered (connection errors, timeouts, 502/503/504).

    ``attempts`` lists ``(node, reason)`` for every node tried.
    """

    def __init__(
        self,
        detail: str,
        *,
        code: str = "UNAVAILABLE",
        status: Optional[int] = None,
        node: Optional[str] = None,
        attempts: Optional[list[tuple[str, str]]] = None,
    ) -> None:
        super().__init__(detail, code=code, status=status, node=node)
        self.attempts: list[tuple[str, str]] = attempts or []


class RevisionNotAppliedError(TollgateError):
    """The origin revision asked for (``at_least_revision``) is not applied yet."""

    def __init__(
        self,
        detail: str,
        *,
        wanted: Optional[int] = None,
        applied: Optional[int] = None,
        status: Optional[int] = None,
        node: Optional[str] = None,
    ) -> None:
        super().__init__(detail, code="REVISION_NOT_APPLIED", status=status, node=node)
        self.wanted = wanted
        self.applied = applied


class ProtocolError(TollgateError):
    """A node's answer does not follow the protocol (bad JSON, missing fields)."""

    def __init__(self, detail: str, *, node: Optional[str] = None, status: Optional[int] = None) -> None:
        super().__init__(detail, code="PROTOCOL", status=status, node=node)


class NeedsRegionError(TollgateError):
    """The local replica cannot answer this; ask the region (:class:`tollgate.Client`)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, code="NEEDS_REGION")


class LicenseError(TollgateError):
    """A license token (or the key set) was refused.

    ``code`` is the Rust verifier's stable code (``LicenseError::code``):
    ``license_expired``, ``license_bad_signature``, ``token_wrong_header``, ...
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail, code=code)

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"
