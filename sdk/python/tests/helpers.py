"""Test helpers: the demo data as mutations, and an origin that mints tokens."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tollgate import paseto
from tollgate.license import CONTEXT_REGION_CERTIFICATE, format_rfc3339

REPO = Path(os.environ.get("TOLLGATE_REPO", Path(__file__).resolve().parents[3]))


def dataset_mutations(d: dict[str, Any]) -> list[dict[str, Any]]:
    """``Dataset::to_mutations``."""
    c = d.get("catalog", {})
    out: list[dict[str, Any]] = []
    for key, kind in [
        ("products", "put_product"),
        ("features", "put_feature"),
        ("plans", "put_plan"),
        ("addons", "put_addon"),
        ("skus", "put_sku"),
    ]:
        for v in (c.get(key) or {}).values():
            out.append({kind: v})
    if "default_offline_policy" in c:
        out.append({"set_default_offline_policy": c["default_offline_policy"]})
    for key, kind in [
        ("accounts", "put_account"),
        ("subjects", "put_subject"),
        ("entitlements", "put_entitlement"),
        ("revoked_licenses", "revoke_license"),
        ("revoked_certificates", "revoke_certificate"),
    ]:
        for v in d.get(key) or []:
            out.append({kind: v})
    return out


def demo_mutations() -> list[dict[str, Any]]:
    return dataset_mutations(json.loads((REPO / "crates/tollgate/data/demo.json").read_text()))


class Key:
    def __init__(self, seed: Optional[bytes] = None) -> None:
        self.secret = Ed25519PrivateKey.from_private_bytes(seed or os.urandom(32))
        self.seed = self.secret.private_bytes_raw()
        self.public = self.secret.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.kid = "ed25519-" + self.public[:8].hex()

    def public_json(self, status: Any = "active") -> dict[str, Any]:
        return {
            "kid": self.kid,
            "algorithm": "Ed25519",
            "public_key": paseto.b64encode(self.public),
            "created_at": 1_700_000_000,
            "status": status,
        }

    def sign_envelope(self, context: str, payload: bytes) -> dict[str, str]:
        sig = self.secret.sign(context.encode() + b"\0" + payload)
        return {"kid": self.kid, "payload": paseto.b64encode(payload), "signature": paseto.b64encode(sig)}


NOW = 1_780_000_000


def claims(
    *,
    iss: str = "tollgate-origin",
    account: str = "acme",
    subject: Optional[str] = None,
    aud: str = "studio",
    iat: int = NOW - 100,
    nbf: Optional[int] = None,
    exp: int = NOW + 3600,
    jti: str = "0123456789abcdef0123456789abcdef",
    device_bound: bool = False,
) -> dict[str, Any]:
    c: dict[str, Any] = {
        "iss": iss,
        "sub": account if subject is None else f"{account}/{subject}",
        "aud": aud,
        "iat": format_rfc3339(iat),
        "nbf": format_rfc3339(iat if nbf is None else nbf),
        "exp": format_rfc3339(exp),
        "jti": jti,
        "account": account,
        "revision": 7,
        "device_bound": device_bound,
        "entitlements": [
            {
                "id": "acme-pro",
                "grant": {"plan": "pro"},
                "features": [{"feature": "export", "config": {"max_resolution": "4k"}}],
                "valid_from": 1_767_225_600,
                "status": "active",
                "offline_policy": {"offline_grace_seconds": 259200, "after_grace": "deny"},
            }
        ],
    }
    if subject is not None:
        c["subject"] = subject
    return c


def mint(key: Key, body: dict[str, Any], *, cert: Optional[dict[str, str]] = None, implicit: bytes = b"") -> str:
    footer: dict[str, Any] = {"kid": key.kid}
    if cert is not None:
        footer["cert"] = cert
    return paseto.sign(key.seed, json.dumps(body).encode(), json.dumps(footer).encode(), implicit)


def certificate(
    origin: Key,
    region_key: Key,
    *,
    region: str = "eu",
    serial: str = "fedcba9876543210fedcba9876543210",
    not_before: int = NOW - 86400,
    not_after: int = NOW + 86400,
    may_sign: Optional[list[str]] = None,
    ttl_max: int = 7 * 86400,
) -> dict[str, str]:
    cert = {
        "serial": serial,
        "region": region,
        "public_key": paseto.b64encode(region_key.public),
        "kid": region_key.kid,
        "not_before": not_before,
        "not_after": not_after,
        "may_sign": ["license"] if may_sign is None else may_sign,
        "token_ttl_max_seconds": ttl_max,
    }
    return origin.sign_envelope(CONTEXT_REGION_CERTIFICATE, json.dumps(cert).encode())
