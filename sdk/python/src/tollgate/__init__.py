"""Tollgate's Python SDK.

- :class:`Client` / :class:`AsyncClient`: checks against a region's nodes
  over HTTP/JSON, with failover.
- :class:`Replica` / :class:`AsyncReplica`: a local copy of the data, kept
  current by the region's watch stream, answering checks in-process.
- :class:`OfflineVerifier`: license tokens checked with the origin's public
  keys alone.
"""

from .client import AsyncClient, Client
from .errors import (
    CredentialError,
    InvalidRequestError,
    LicenseError,
    NeedsRegionError,
    NotFoundError,
    ProblemError,
    ProtocolError,
    RateLimitedError,
    RevisionNotAppliedError,
    TollgateError,
    UnavailableError,
)
from .license import License, OfflineVerifier, RevocationList, Revocations
from .replica import AsyncReplica, Replica, ReplicaCore
from .model import (
    REASONS,
    AnonymousNetwork,
    BatchItemError,
    BatchResult,
    CheckRequest,
    Decision,
    GeoFacts,
    Seats,
    Staleness,
    UpgradeHint,
)

__version__ = "0.1.0"

__all__ = [
    "Client",
    "AsyncClient",
    "Replica",
    "AsyncReplica",
    "ReplicaCore",
    "OfflineVerifier",
    "License",
    "RevocationList",
    "Revocations",
    "Decision",
    "CheckRequest",
    "GeoFacts",
    "AnonymousNetwork",
    "Seats",
    "UpgradeHint",
    "Staleness",
    "BatchResult",
    "BatchItemError",
    "REASONS",
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
