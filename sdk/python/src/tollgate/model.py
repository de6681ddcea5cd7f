"""The vocabulary of a check: requests, locations and decisions."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

__all__ = [
    "REASONS",
    "AnonymousNetwork",
    "GeoFacts",
    "CheckRequest",
    "Seats",
    "UpgradeHint",
    "Decision",
    "BatchResult",
    "BatchItemError",
    "Staleness",
]

#: Every reason a decision can carry (stable strings).
REASONS = (
    "ALLOW",
    "IN_GRACE",
    "NOT_ENTITLED",
    "UNKNOWN_ACCOUNT",
    "UNKNOWN_SUBJECT",
    "NOT_YET_VALID",
    "EXPIRED",
    "SUSPENDED",
    "REVOKED",
    "ROLE_REQUIRED",
    "GEO_BLOCKED",
    "ANONYMOUS_NETWORK_BLOCKED",
    "SEAT_LIMIT",
    "USAGE_CAP_REACHED",
    "STALE_DATA",
)


@dataclass(frozen=True, slots=True)
class AnonymousNetwork:
    """Which kinds of anonymous network an address belongs to."""

    vpn: bool = False
    tor_exit_node: bool = False
    public_proxy: bool = False
    residential_proxy: bool = False
    hosting_provider: bool = False

    @property
    def is_anonymous(self) -> bool:
        return (
            self.vpn
            or self.tor_exit_node
            or self.public_proxy
            or self.residential_proxy
            or self.hosting_provider
        )

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "AnonymousNetwork":
        return cls(
            vpn=bool(value.get("vpn", False)),
            tor_exit_node=bool(value.get("tor_exit_node", False)),
            public_proxy=bool(value.get("public_proxy", False)),
            residential_proxy=bool(value.get("residential_proxy", False)),
            hosting_provider=bool(value.get("hosting_provider", False)),
        )


@dataclass(frozen=True, slots=True)
class GeoFacts:
    """Where a caller is, already resolved (a country, a continent, ...).

    ``anonymous`` is ``None`` when no anonymous-network data exists for the
    caller (then the caller is not known to be anonymous).
    """

    country: Optional[str] = None
    continent: Optional[str] = None
    subdivisions: tuple[str, ...] = ()
    anonymous: Optional[AnonymousNetwork] = None

    @property
    def is_location_known(self) -> bool:
        return self.country is not None or self.continent is not None or bool(self.subdivisions)

    @classmethod
    def from_json(cls, value: Optional[Mapping[str, Any]]) -> "GeoFacts":
        """Reads the GeoFacts JSON of the conformance file (every field optional)."""
        if value is None:
            return UNKNOWN_LOCATION
        anonymous = value.get("anonymous")
        return cls(
            country=value.get("country"),
            continent=value.get("continent"),
            subdivisions=tuple(value.get("subdivisions") or ()),
            anonymous=AnonymousNetwork.from_json(anonymous) if anonymous is not None else None,
        )

    def to_wire(self) -> dict[str, Any]:
        """The ``location`` object of an HTTP check."""
        out: dict[str, Any] = {}
        if self.country is not None:
            out["country"] = self.country
        if self.continent is not None:
            out["continent"] = self.continent
        if self.subdivisions:
            out["subdivisions"] = list(self.subdivisions)
        if self.anonymous is not None:
            out["anonymous_network"] = self.anonymous.is_anonymous
        return out


UNKNOWN_LOCATION = GeoFacts()


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """One check, for :meth:`Client.check_batch` (``Client.check`` takes the same fields)."""

    account: str
    feature: str
    subject: Optional[str] = None
    consume: int = 0
    ip: Optional[str] = None
    location: Optional[GeoFacts] = None
    idempotency_key: Optional[str] = None
    explain: bool = False

    def to_wire(self) -> dict[str, Any]:
        if self.ip is not None and self.location is not None:
            raise ValueError("ip and location are exclusive")
        body: dict[str, Any] = {"account": self.account, "feature": self.feature}
        if self.subject is not None:
            body["subject"] = self.subject
        if self.consume:
            body["consume"] = self.consume
        if self.ip is not None:
            body["ip"] = self.ip
        if self.location is not None:
            body["location"] = self.location.to_wire()
        if self.idempotency_key is not None:
            body["idempotency_key"] = self.idempotency_key
        if self.explain:
            body["explain"] = True
        return body


@dataclass(frozen=True, slots=True)
class Seats:
    """Seat occupancy of the deciding entitlement."""

    used: int
    total: int
    holders: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UpgradeHint:
    """What would change a NOT_ENTITLED or USAGE_CAP_REACHED answer.

    Exactly one of ``plan`` and ``addon`` is set; ``limit`` is the cap the
    feature would get (``None``: unlimited).
    """

    plan: Optional[str] = None
    addon: Optional[str] = None
    limit: Optional[int] = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"plan": self.plan} if self.plan is not None else {"addon": self.addon}
        out["limit"] = self.limit
        return out


@dataclass(frozen=True, slots=True)
class Staleness:
    """How stale a local answer may be.

    ``origin_seconds``: seconds since the region last heard from the origin,
    as far as the replica knows (``None`` when unknown). ``since_region``:
    seconds since the replica last heard from a region node (``None`` for a
    replica built from data).
    """

    origin_seconds: Optional[int]
    since_region: Optional[float]


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to a check. A denial is a decision, not an error.

    ``allowed`` is true exactly for ``ALLOW`` and ``IN_GRACE``. For a local
    (replica) answer ``answered_by`` is ``"local"``, ``approximate`` says
    whether it read state only the region has (usage counters under a cap,
    floating-seat leases), and ``staleness`` has the details.
    """

    allowed: bool
    reason: str
    explanation: str = ""
    entitlement: Optional[str] = None
    limit: Optional[int] = None
    remaining: Optional[int] = None
    overage: bool = False
    valid_until: Optional[int] = None
    trial: bool = False
    seats: Optional[Seats] = None
    upgrade_hint: Optional[UpgradeHint] = None
    config: Mapping[str, str] = field(default_factory=dict)
    revision: Optional[int] = None
    staleness_seconds: Optional[int] = None
    answered_by: Optional[str] = None
    node: Optional[str] = None
    approximate: bool = False
    staleness: Optional[Staleness] = None
    #: The key a consuming check was sent with (retry with it to consume once).
    idempotency_key: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        """The decision fields as the protocol spells them."""
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "explanation": self.explanation,
            "entitlement": self.entitlement,
            "limit": self.limit,
            "remaining": self.remaining,
            "overage": self.overage,
            "valid_until": self.valid_until,
            "trial": self.trial,
            "seats": None
            if self.seats is None
            else {"used": self.seats.used, "total": self.seats.total, "holders": list(self.seats.holders)},
            "upgrade_hint": None if self.upgrade_hint is None else self.upgrade_hint.to_json(),
            "config": dict(self.config),
            "revision": self.revision,
            "staleness_seconds": self.staleness_seconds,
            "answered_by": self.answered_by,
        }

    @classmethod
    def from_wire(
        cls,
        value: Mapping[str, Any],
        *,
        node: Optional[str] = None,
        revision: Optional[int] = None,
        staleness_seconds: Optional[int] = None,
        answered_by: Optional[str] = None,
    ) -> "Decision":
        """Reads a decision object of the HTTP API; raises ``KeyError``/``TypeError``/``ValueError`` on a malformed one."""
        reason = value["reason"]
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        allowed = value["allowed"]
        if not isinstance(allowed, bool) or allowed != (reason in ("ALLOW", "IN_GRACE")):
            raise ValueError(f"allowed {allowed!r} does not go with reason {reason}")
        seats_json = value.get("seats")
        seats = (
            None
            if seats_json is None
            else Seats(
                used=int(seats_json["used"]),
                total=int(seats_json["total"]),
                holders=tuple(seats_json.get("holders") or ()),
            )
        )
        hint_json = value.get("upgrade_hint")
        hint = (
            None
            if hint_json is None
            else UpgradeHint(plan=hint_json.get("plan"), addon=hint_json.get("addon"), limit=hint_json.get("limit"))
        )
        config = value.get("config") or {}
        if not isinstance(config, dict):
            raise ValueError("config is not an object")
        return cls(
            allowed=allowed,
            reason=reason,
            explanation=value.get("explanation") or "",
            entitlement=value.get("entitlement"),
            limit=value.get("limit"),
            remaining=value.get("remaining"),
            overage=bool(value.get("overage", False)),
            valid_until=value.get("valid_until"),
            trial=bool(value.get("trial", False)),
            seats=seats,
            upgrade_hint=hint,
            config=config,
            revision=value.get("revision", revision),
            staleness_seconds=value.get("staleness_seconds", staleness_seconds),
            answered_by=value.get("answered_by", answered_by),
            node=node,
        )


@dataclass(frozen=True, slots=True)
class BatchItemError:
    """One check of a batch that was refused (the others may have been decided)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The answer to a batch: one :class:`Decision` or :class:`BatchItemError` per check, in order."""

    results: tuple[Union[Decision, BatchItemError], ...]
    revision: Optional[int]
    staleness_seconds: Optional[int]
    answered_by: Optional[str]
    node: Optional[str]

    def decisions(self) -> Sequence[Optional[Decision]]:
        return [r if isinstance(r, Decision) else None for r in self.results]


def format_unix(seconds: int) -> str:
    """``2026-11-27T23:21:02Z`` (the model's display of Unix seconds)."""
    try:
        return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(seconds)
