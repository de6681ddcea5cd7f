"""Offline license verification: a port of crates/tollgate-license's
``Verifier`` (same checks, same order, same refusal codes).

Check order (``Verifier::verify``):

1. Format (size, exactly ``v4.public.``, canonical base64url).
2. Footer, parsed unverified: it only selects a key among trusted ones.
3. Key: an origin key by ``kid`` (not retired, overlap not over); else the
   footer's region certificate, verified against the origin keys
   (signature, fields, window, key not weak, key id), whose ``kid`` must
   equal the footer's and which must allow signing licenses.
4. Signature (over header, message, footer and implicit assertion).
5. Claims, parsed strictly.
6. Issuer consistent with the signer.
7. Time (``nbf``, ``exp`` with leeway; a region token inside its
   certificate's window and ``token_ttl_max_seconds``).
8. Audience.
9. Revocation: the token's ``jti``, then the certificate's serial.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Protocol, Union

from . import paseto
from .errors import LicenseError

__all__ = [
    "OfflineVerifier",
    "License",
    "Revocations",
    "RevocationList",
    "DEFAULT_LEEWAY_SECONDS",
    "KEY_SET_PATH",
    "parse_rfc3339",
    "format_rfc3339",
]

KEY_SET_PATH = "/.well-known/tollgate-keys.json"
DEFAULT_LEEWAY_SECONDS = 60
LEEWAY_SECONDS_MAX = 3600
CERTIFICATE_CACHE_ENTRIES_MAX = 16
KEYS_MAX = 64
AUDIENCE_BYTES_MAX = 256
ENTITLEMENTS_PER_LICENSE_MAX = 256
GRANTS_PER_BUNDLE_MAX = 1024
DEVICE_FINGERPRINT_BYTES_MAX = 256
DEVICE_IMPLICIT_PREFIX = b"tollgate.device.v1\0"
ISSUER_ORIGIN = "tollgate-origin"
ISSUER_REGION_PREFIX = "tollgate-region:"
CONTEXT_REGION_CERTIFICATE = "tollgate.region-certificate.v1"
MAY_SIGN_LICENSE = "license"
REASON_CHARS_MAX = 200

U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
RFC3339_SECONDS_MIN = -62_167_219_200
RFC3339_SECONDS_MAX = 253_402_300_799


class Revocations(Protocol):
    """Which revoked token ids and certificate serials to refuse
    (a :class:`tollgate.Replica` is one)."""

    def license_revoked(self, jti: str) -> bool: ...

    def certificate_revoked(self, serial: str) -> bool: ...


class RevocationList:
    """Revoked token ids and certificate serials, in memory."""

    def __init__(self, licenses: Iterable[str] = (), certificates: Iterable[str] = ()) -> None:
        self.licenses = set(licenses)
        self.certificates = set(certificates)

    @classmethod
    def from_json(cls, value: Optional[Mapping[str, Any]]) -> "RevocationList":
        """From ``{"licenses": [RevokedLicense], "certificates": [RevokedCertificate]}``."""
        value = value or {}
        return cls(
            (r["id"] for r in value.get("licenses") or ()),
            (r["serial"] for r in value.get("certificates") or ()),
        )

    def license_revoked(self, jti: str) -> bool:
        return jti in self.licenses

    def certificate_revoked(self, serial: str) -> bool:
        return serial in self.certificates


class _NothingRevoked:
    def license_revoked(self, jti: str) -> bool:
        return False

    def certificate_revoked(self, serial: str) -> bool:
        return False


@dataclass(frozen=True)
class License:
    """A license token that verified.

    ``claims`` is the claims JSON (as the Rust verifier serializes
    ``LicenseClaims``); ``kid`` the footer's key id; ``signer`` ``"origin"``
    or ``"region:<region>"``; for a region token ``region``, ``serial``
    (its certificate) and ``certified_by`` (the origin key) are set.
    """

    claims: Mapping[str, Any]
    kid: str
    signer: str
    region: Optional[str] = None
    serial: Optional[str] = None
    certified_by: Optional[str] = None

    @property
    def account(self) -> str:
        return str(self.claims["account"])

    @property
    def subject(self) -> Optional[str]:
        s = self.claims.get("subject")
        return None if s is None else str(s)

    @property
    def expires_at(self) -> int:
        t = parse_rfc3339(str(self.claims["exp"]))
        assert t is not None
        return t

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])

    def allows(self, feature: str, now: Optional[int] = None) -> Optional[Mapping[str, Any]]:
        """An entitlement of the license that lets the holder use ``feature``
        at ``now`` (the license in force, the entitlement active and granting
        the feature), else ``None``. Status, time and feature only."""
        if now is None:
            now = int(time.time())
        nbf = parse_rfc3339(str(self.claims["nbf"]))
        exp = parse_rfc3339(str(self.claims["exp"]))
        if nbf is None or exp is None or now < nbf or now >= exp:
            return None
        for e in self.claims.get("entitlements", ()):
            until = e.get("valid_until")
            usable = None if until is None else min(until + e.get("grace_period_seconds", 0), I64_MAX)
            active = e["status"] == "active" and e["valid_from"] <= now and (usable is None or now < usable)
            if active and any(f["feature"] == feature for f in e["features"]):
                found: Mapping[str, Any] = e
                return found
        return None


# ----------------------------------------------------------------- time


def _days_from_civil(y: int, m: int, d: int) -> int:
    y = y - 1 if m <= 2 else y
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 28
    return 30 if m in (4, 6, 9, 11) else 31


_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z\Z", re.ASCII)


def parse_rfc3339(text: str) -> Optional[int]:
    """``YYYY-MM-DDTHH:MM:SSZ`` (the one spelling accepted) to Unix seconds."""
    m = _RFC3339.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups())
    if not (1 <= month <= 12) or day < 1 or day > _days_in_month(year, month) or hour > 23 or minute > 59 or second > 59:
        return None
    return _days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second


def format_rfc3339(t: int) -> Optional[str]:
    if not (RFC3339_SECONDS_MIN <= t <= RFC3339_SECONDS_MAX):
        return None
    days, secs = divmod(t, 86_400)
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    mo = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (1 if mo <= 2 else 0)
    return f"{y:04d}-{mo:02d}-{d:02d}T{secs // 3600:02d}:{(secs // 60) % 60:02d}:{secs % 60:02d}Z"


# ----------------------------------------------------------- strict JSON


class _Invalid(ValueError):
    pass


def _strict_json(data: bytes) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise _Invalid(f"duplicate field `{k}`")
            out[k] = v
        return out

    def no_constant(name: str) -> Any:
        raise _Invalid(f"{name} is not JSON")

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Invalid(f"not UTF-8: {e}") from None
    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=no_constant)
    except _Invalid:
        raise
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _obj(v: Any, what: str, required: Iterable[str], optional: Iterable[str] = ()) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _Invalid(f"{what}: expected an object")
    required = tuple(required)
    allowed = set(required) | set(optional)
    for k in v:
        if k not in allowed:
            raise _Invalid(f"{what}: unknown field `{k}`")
    for k in required:
        if k not in v:
            raise _Invalid(f"{what}: missing field `{k}`")
    return v


def _uint(v: Any, what: str, maximum: int = U64_MAX) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not (0 <= v <= maximum):
        raise _Invalid(f"{what}: expected an unsigned integer")
    return v


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not (I64_MIN <= v <= I64_MAX):
        raise _Invalid(f"{what}: expected an integer")
    return v


def _bool(v: Any, what: str) -> bool:
    if not isinstance(v, bool):
        raise _Invalid(f"{what}: expected a boolean")
    return v


def _string(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise _Invalid(f"{what}: expected a string")
    return v


_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}\Z", re.ASCII)
_RANDOM_ID = re.compile(r"[0-9a-f]{32}\Z")
_KEY_ID = re.compile(r"ed25519-[0-9a-f]{16}\Z")
_COUNTRY = re.compile(r"[A-Z]{2}\Z")
_SUBDIVISION = re.compile(r"[A-Z]{2}-[A-Z0-9]{1,3}\Z")
_CONTINENTS = ("AF", "AN", "AS", "EU", "NA", "OC", "SA")
_REGION = re.compile(r"[a-z0-9-]{1,64}\Z")


def _id(v: Any, what: str) -> str:
    s = _string(v, what)
    if not _ID.match(s):
        raise _Invalid(f"{what}: invalid id")
    return s


def _id_list(v: Any, what: str, pattern: "re.Pattern[str]") -> list[str]:
    if not isinstance(v, list):
        raise _Invalid(f"{what}: expected a list")
    out = []
    for item in v:
        s = _string(item, what)
        if not pattern.match(s):
            raise _Invalid(f"{what}: invalid code")
        out.append(s)
    return sorted(set(out))


def _geo_rule(v: Any, what: str) -> dict[str, Any]:
    """Reads a GeoRule and writes it back in the compact form licenses use."""
    lists = ("allow_countries", "deny_countries", "allow_continents", "deny_continents", "allow_subdivisions", "deny_subdivisions")
    r = _obj(v, what, (), lists + ("block_anonymous", "unknown_location", "deny_unknown_location"))
    out: dict[str, Any] = {}
    for name in lists:
        if name not in r:
            continue
        if "countries" in name:
            values = _id_list(r[name], f"{what}.{name}", _COUNTRY)
        elif "subdivisions" in name:
            values = _id_list(r[name], f"{what}.{name}", _SUBDIVISION)
        else:
            values = _id_list(r[name], f"{what}.{name}", re.compile("|".join(_CONTINENTS) + r"\Z"))
        if values:
            out[name] = values
    if _bool(r.get("block_anonymous", False), f"{what}.block_anonymous"):
        out["block_anonymous"] = True
    unknown = r.get("unknown_location")
    legacy = r.get("deny_unknown_location")
    if unknown is not None and legacy is not None:
        raise _Invalid(f"{what}.unknown_location: set together with the older deny_unknown_location")
    if unknown is not None and unknown not in ("deny", "allow"):
        raise _Invalid(f"{what}.unknown_location: unknown variant")
    if legacy is not None:
        _bool(legacy, f"{what}.deny_unknown_location")
        if legacy:
            unknown = "deny"
    if unknown == "deny":
        out["deny_unknown_location"] = True
    elif unknown == "allow":
        out["unknown_location"] = "allow"
    return out


def _offline(v: Any, what: str) -> dict[str, Any]:
    p = _obj(v, what, ("offline_grace_seconds", "after_grace"))
    if p["after_grace"] not in ("allow", "deny"):
        raise _Invalid(f"{what}.after_grace: unknown variant")
    return {"offline_grace_seconds": _uint(p["offline_grace_seconds"], what), "after_grace": p["after_grace"]}


def _cap(v: Any, what: str) -> dict[str, Any]:
    c = _obj(v, what, ("limit",), ("enforcement", "additive"))
    enforcement = c.get("enforcement", "hard")
    if enforcement not in ("hard", "soft"):
        raise _Invalid(f"{what}.enforcement: unknown variant")
    return {
        "limit": _uint(c["limit"], f"{what}.limit"),
        "enforcement": enforcement,
        "additive": _bool(c.get("additive", False), f"{what}.additive"),
    }


def _feature(v: Any, what: str) -> dict[str, Any]:
    f = _obj(v, what, ("feature",), ("usage_cap", "config", "geo_rule", "offline_policy"))
    out: dict[str, Any] = {"feature": _id(f["feature"], f"{what}.feature")}
    if f.get("usage_cap") is not None:
        out["usage_cap"] = _cap(f["usage_cap"], f"{what}.usage_cap")
    config = f.get("config", {})
    if not isinstance(config, dict):
        raise _Invalid(f"{what}.config: expected an object")
    for k, val in config.items():
        _id(k, f"{what}.config key")
        _string(val, f"{what}.config value")
    if config:
        out["config"] = dict(sorted(config.items()))
    if f.get("geo_rule") is not None:
        out["geo_rule"] = _geo_rule(f["geo_rule"], f"{what}.geo_rule")
    if f.get("offline_policy") is not None:
        out["offline_policy"] = _offline(f["offline_policy"], f"{what}.offline_policy")
    return out


def _entitlement(v: Any, what: str) -> dict[str, Any]:
    e = _obj(
        v,
        what,
        ("id", "grant", "features", "valid_from", "status", "offline_policy"),
        ("valid_until", "grace_period_seconds", "geo_rules", "seats", "trial"),
    )
    out: dict[str, Any] = {"id": _id(e["id"], f"{what}.id")}
    grant = e["grant"]
    if not isinstance(grant, dict) or len(grant) != 1:
        raise _Invalid(f"{what}.grant: expected one of plan, addon, feature")
    ((kind, target),) = grant.items()
    if kind not in ("plan", "addon", "feature"):
        raise _Invalid(f"{what}.grant: unknown variant `{kind}`")
    out["grant"] = {kind: _id(target, f"{what}.grant.{kind}")}
    features = e["features"]
    if not isinstance(features, list):
        raise _Invalid(f"{what}.features: expected a list")
    out["features"] = [_feature(f, f"{what}.features") for f in features]
    out["valid_from"] = _int(e["valid_from"], f"{what}.valid_from")
    if e.get("valid_until") is not None:
        out["valid_until"] = _int(e["valid_until"], f"{what}.valid_until")
    grace = _uint(e.get("grace_period_seconds", 0), f"{what}.grace_period_seconds")
    if grace:
        out["grace_period_seconds"] = grace
    if e["status"] not in ("active", "suspended", "revoked"):
        raise _Invalid(f"{what}.status: unknown variant")
    out["status"] = e["status"]
    rules = e.get("geo_rules", [])
    if not isinstance(rules, list):
        raise _Invalid(f"{what}.geo_rules: expected a list")
    if rules:
        out["geo_rules"] = [_geo_rule(r, f"{what}.geo_rules") for r in rules]
    out["offline_policy"] = _offline(e["offline_policy"], f"{what}.offline_policy")
    if e.get("seats") is not None:
        s = _obj(e["seats"], f"{what}.seats", ("count", "mode"))
        mode = s["mode"]
        if mode == "named":
            mode_out: Any = "named"
        elif isinstance(mode, dict) and list(mode) == ["floating"]:
            fl = _obj(mode["floating"], f"{what}.seats.mode.floating", ("lease_ttl_seconds",))
            mode_out = {"floating": {"lease_ttl_seconds": _uint(fl["lease_ttl_seconds"], "lease_ttl_seconds", U32_MAX)}}
        else:
            raise _Invalid(f"{what}.seats.mode: unknown variant")
        out["seats"] = {"count": _uint(s["count"], f"{what}.seats.count", U32_MAX), "mode": mode_out}
    if _bool(e.get("trial", False), f"{what}.trial"):
        out["trial"] = True
    return out


_CLAIM_FIELDS = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti", "account", "revision", "device_bound", "entitlements")


def parse_claims(message: bytes) -> tuple[dict[str, Any], dict[str, int]]:
    """``LicenseClaims::from_json``: the claims in their canonical JSON form,
    and ``iat``/``nbf``/``exp`` as Unix seconds. Raises ``license_claims_invalid``."""
    try:
        raw = _strict_json(message)
        c = _obj(raw, "claims", _CLAIM_FIELDS, ("subject",))
        out: dict[str, Any] = {}
        for name in ("iss", "sub", "aud"):
            out[name] = _string(c[name], name)
        times: dict[str, int] = {}
        for name in ("iat", "nbf", "exp"):
            text = _string(c[name], name)
            t = parse_rfc3339(text)
            if t is None:
                raise _Invalid(f"{name}: a timestamp in another form")
            out[name] = text
            times[name] = t
        jti = _string(c["jti"], "jti")
        if not _RANDOM_ID.match(jti):
            raise _Invalid("jti: not 32 lower-case hex digits (128 bits)")
        out["jti"] = jti
        out["account"] = _id(c["account"], "account")
        if c.get("subject") is not None:
            out["subject"] = _id(c["subject"], "subject")
        out["revision"] = _uint(c["revision"], "revision")
        out["device_bound"] = _bool(c["device_bound"], "device_bound")
        ents = c["entitlements"]
        if not isinstance(ents, list):
            raise _Invalid("entitlements: expected a list")
        out["entitlements"] = [_entitlement(e, "entitlements") for e in ents]
    except _Invalid as e:
        raise LicenseError("license_claims_invalid", f"license claims are invalid: {str(e)[:REASON_CHARS_MAX]}") from None

    def invalid(reason: str) -> LicenseError:
        return LicenseError("license_claims_invalid", f"license claims are invalid: {reason}")

    iss = out["iss"]
    if iss != ISSUER_ORIGIN:
        region = iss[len(ISSUER_REGION_PREFIX) :] if iss.startswith(ISSUER_REGION_PREFIX) else None
        if region is None or not _REGION.match(region):
            raise invalid(f'iss must be "{ISSUER_ORIGIN}" or "{ISSUER_REGION_PREFIX}<region>"')
    account = out["account"]
    subject = out.get("subject")
    expected_sub = account if subject is None else f"{account}/{subject}"
    if out["sub"] != expected_sub:
        raise invalid("sub must be the account, or <account>/<subject>")
    aud_len = len(out["aud"].encode("utf-8"))
    if aud_len == 0 or aud_len > AUDIENCE_BYTES_MAX:
        raise invalid(f"aud must be 1..={AUDIENCE_BYTES_MAX} bytes")
    for name in ("iat", "nbf", "exp"):
        if not (RFC3339_SECONDS_MIN <= times[name] <= RFC3339_SECONDS_MAX):
            raise invalid(f"{name} is outside the years 0000..=9999")
    if not (times["iat"] <= times["nbf"] < times["exp"]):
        raise invalid("times must satisfy iat <= nbf < exp")
    if len(out["entitlements"]) > ENTITLEMENTS_PER_LICENSE_MAX:
        raise invalid(f"over the limit of {ENTITLEMENTS_PER_LICENSE_MAX} entitlements")
    for ent in out["entitlements"]:
        if len(ent["features"]) > GRANTS_PER_BUNDLE_MAX:
            raise invalid(f"entitlement {ent['id']} lists too many features")
    return out, times


# ------------------------------------------------------------------ keys


def _key_id_of(public_key: bytes) -> str:
    return "ed25519-" + public_key[:8].hex()


def _parse_public_key(text: Any) -> tuple[Optional[bytes], str]:
    """32 bytes of unpadded base64url that decompress to a curve point."""
    raw = paseto.b64decode_canonical(text) if isinstance(text, str) else None
    if raw is None or len(raw) != 32:
        return None, "public key is not 32 bytes of unpadded base64url"
    if paseto.point_decompress(raw) is None:
        return None, "public key is not an Ed25519 curve point"
    return raw, ""


def _is_weak(key: bytes) -> bool:
    point = paseto.point_decompress(key)
    return point is None or paseto.is_small_order(point)


@dataclass(frozen=True)
class _OriginKey:
    kid: str
    status: str  # active | overlap | retired
    until: Optional[int]
    key: bytes

    def check_usable(self, now: int) -> None:
        if self.status == "retired":
            raise LicenseError("license_key_retired", f"signed with retired origin key {self.kid}")
        if self.status == "overlap" and self.until is not None and now > self.until:
            raise LicenseError(
                "license_key_overlap_expired",
                f"signed with origin key {self.kid}, whose overlap window ended at {self.until}",
            )

    def verify_signed(self, context: str, payload: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        return paseto.verify_strict(self.key, context.encode() + b"\0" + payload, signature)


def _key_set_invalid(kid: str, reason: str) -> LicenseError:
    return LicenseError("license_key_set_invalid", f"origin public key set is invalid: key {kid!r}: {reason}")


def _parse_origin_key(value: Any) -> _OriginKey:
    if not isinstance(value, Mapping):
        raise _key_set_invalid("", "a key is not an object")
    kid = value.get("kid")
    if not isinstance(kid, str) or not _KEY_ID.match(kid):
        raise _key_set_invalid(str(kid), "the key id is not ed25519-<16 lower-case hex digits>")
    if value.get("algorithm") != "Ed25519":
        raise _key_set_invalid(kid, "algorithm is not Ed25519")
    key, reason = _parse_public_key(value.get("public_key"))
    if key is None:
        raise _key_set_invalid(kid, reason)
    if _is_weak(key):
        raise LicenseError("license_weak_public_key", f"public key {kid} is weak (a small-order point) and is refused")
    if _key_id_of(key) != kid:
        raise _key_set_invalid(kid, "the key id does not match the public key")
    status = value.get("status")
    until: Optional[int] = None
    if status in ("active", "retired"):
        name = str(status)
    elif isinstance(status, Mapping) and isinstance(status.get("overlap"), Mapping):
        name = "overlap"
        until = int(status["overlap"]["until"])
    else:
        raise _key_set_invalid(kid, f"unknown status {status!r}")
    return _OriginKey(kid, name, until, key)


# ----------------------------------------------------------- certificates


@dataclass(frozen=True)
class _Certificate:
    signed_kid: str
    payload: bytes
    signature: bytes
    serial: str
    region: str
    kid: str
    key: bytes
    not_before: int
    not_after: int
    may_sign: tuple[str, ...]
    token_ttl_max_seconds: int

    def check_window(self, now: int, leeway: int) -> None:
        if now + leeway < self.not_before:
            raise LicenseError(
                "license_certificate_not_yet_valid",
                f"region certificate {self.serial} is not valid before {self.not_before}",
            )
        if now >= min(self.not_after + leeway, I64_MAX):
            raise LicenseError(
                "license_certificate_expired", f"region certificate {self.serial} expired at {self.not_after}"
            )

    def check_token_times(self, iat: int, exp: int) -> None:
        if iat < self.not_before or exp > self.not_after:
            raise LicenseError(
                "license_outside_certificate_validity",
                f"token validity is outside the window of region certificate {self.serial}",
            )
        ttl = max(exp - iat, 0)
        if ttl > self.token_ttl_max_seconds:
            raise LicenseError(
                "license_ttl_over_certificate_max",
                f"token lifetime of {ttl} s exceeds the certificate's maximum of {self.token_ttl_max_seconds} s",
            )


def _certificate_invalid(reason: str) -> LicenseError:
    return LicenseError("license_certificate_invalid", f"region certificate is invalid: {reason[:REASON_CHARS_MAX]}")


def _parse_certificate(signed_kid: str, payload: bytes, signature: bytes) -> _Certificate:
    """``RegionCertificate::from_payload``: strict JSON, then ``check``."""
    try:
        c = _obj(
            _strict_json(payload),
            "certificate",
            ("serial", "region", "public_key", "kid", "not_before", "not_after", "may_sign", "token_ttl_max_seconds"),
        )
        serial = _string(c["serial"], "serial")
        if not _RANDOM_ID.match(serial):
            raise _Invalid("serial: not 32 lower-case hex digits (128 bits)")
        region = _string(c["region"], "region")
        public_key = _string(c["public_key"], "public_key")
        kid = _string(c["kid"], "kid")
        if not _KEY_ID.match(kid):
            raise _Invalid("kid: not of the form ed25519-<16 lower-case hex digits>")
        not_before = _int(c["not_before"], "not_before")
        not_after = _int(c["not_after"], "not_after")
        may_sign_raw = c["may_sign"]
        if not isinstance(may_sign_raw, list):
            raise _Invalid("may_sign: expected a list")
        may_sign = tuple(_string(s, "may_sign") for s in may_sign_raw)
        ttl_max = _uint(c["token_ttl_max_seconds"], "token_ttl_max_seconds")
    except _Invalid as e:
        raise _certificate_invalid(str(e)) from None
    if not _REGION.match(region):
        raise _certificate_invalid("region must be 1..=64 bytes of [a-z0-9-]")
    if len(may_sign) > 8 or any(not s or len(s.encode()) > 32 for s in may_sign):
        raise _certificate_invalid("may_sign must hold at most 8 entries of 1..=32 bytes")
    if not_before >= not_after:
        raise _certificate_invalid("not_before must be before not_after")
    key, reason = _parse_public_key(public_key)
    if key is None:
        raise _certificate_invalid(reason)
    if _is_weak(key):
        raise LicenseError("license_weak_public_key", f"public key {kid} is weak (a small-order point) and is refused")
    if _key_id_of(key) != kid:
        raise _certificate_invalid("kid does not match public_key")
    return _Certificate(
        signed_kid, payload, signature, serial, region, kid, key, not_before, not_after, may_sign, ttl_max
    )


# --------------------------------------------------------------- verifier


def _footer(data: bytes) -> tuple[str, Optional[tuple[str, bytes, bytes]]]:
    """``{"kid": ..., "cert": Signed?}``: the key id and the certificate envelope."""
    if not data:
        raise LicenseError(
            "license_footer_invalid", "license footer is invalid: missing: a license token carries its key id in the footer"
        )
    try:
        f = _obj(_strict_json(data), "footer", ("kid",), ("cert",))
        kid = _string(f["kid"], "kid")
        if not _KEY_ID.match(kid):
            raise _Invalid(f"key id {kid[:64]!r} is not of the form ed25519-<16 lower-case hex digits>")
        cert = f.get("cert")
        if cert is None:
            return kid, None
        if not isinstance(cert, dict):
            raise _Invalid("cert: expected an object")
        for name in ("kid", "payload", "signature"):
            if name not in cert:
                raise _Invalid(f"cert: missing field `{name}`")
        signed_kid = _string(cert["kid"], "cert.kid")
        payload = paseto.b64decode_canonical(_string(cert["payload"], "cert.payload"))
        signature = paseto.b64decode_canonical(_string(cert["signature"], "cert.signature"))
        if payload is None or signature is None:
            raise _Invalid("cert: not canonical unpadded base64url")
        return kid, (signed_kid, payload, signature)
    except _Invalid as e:
        raise LicenseError("license_footer_invalid", f"license footer is invalid: {str(e)[:REASON_CHARS_MAX]}") from None


def _peek_device_bound(token: str) -> Optional[bool]:
    if not token.startswith(paseto.HEADER):
        return None
    payload = paseto.b64decode_canonical(token[len(paseto.HEADER) :].split(".")[0])
    if payload is None or len(payload) < 64:
        return None
    try:
        value = json.loads(payload[:-64])
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    bound = value.get("device_bound", False)
    return bound if isinstance(bound, bool) else None


class OfflineVerifier:
    """Verifies license tokens for one ``audience`` with the origin's public
    key set alone (the JSON served at ``/.well-known/tollgate-keys.json``).

    Raises :class:`~tollgate.errors.LicenseError` (``license_key_set_invalid``,
    ``license_weak_public_key``, ``license_audience_invalid``) for a set or an
    audience that cannot be used.
    """

    def __init__(
        self, key_set: Union[Mapping[str, Any], str, bytes], audience: str, *, leeway_seconds: int = DEFAULT_LEEWAY_SECONDS
    ) -> None:
        if isinstance(key_set, (str, bytes)):
            key_set = json.loads(key_set)
        if not isinstance(key_set, Mapping):
            raise _key_set_invalid("", "the key set is not an object")
        aud_len = len(audience.encode("utf-8"))
        if aud_len == 0 or aud_len > AUDIENCE_BYTES_MAX:
            raise LicenseError("license_audience_invalid", f"the verifier's audience must be 1..={AUDIENCE_BYTES_MAX} bytes")
        keys = key_set.get("keys")
        if not isinstance(keys, list) or not keys or len(keys) > KEYS_MAX:
            count = len(keys) if isinstance(keys, list) else 0
            raise _key_set_invalid("", f"holds {count} keys; 1..={KEYS_MAX} expected")
        self._origin: dict[str, _OriginKey] = {}
        for value in keys:
            key = _parse_origin_key(value)
            if key.kid in self._origin:
                raise _key_set_invalid(key.kid, "listed twice")
            self._origin[key.kid] = key
        self.audience = audience
        self.leeway_seconds = min(max(int(leeway_seconds), 0), LEEWAY_SECONDS_MAX)
        self._certificates: deque[_Certificate] = deque()
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str, audience: str, **kwargs: Any) -> "OfflineVerifier":
        with open(path, "rb") as f:
            data = f.read(1024 * 1024 + 1)
        if len(data) > 1024 * 1024:
            raise _key_set_invalid("", f"{path} is larger than a key set")
        return cls(data, audience, **kwargs)

    @classmethod
    def fetch(
        cls, origin: str, audience: str, *, ca_file: Optional[str] = None, timeout: float = 5.0, **kwargs: Any
    ) -> "OfflineVerifier":
        """Fetches the key set from ``origin`` (``https://host:port``, or the
        full URL of the key set) over verified TLS."""
        import httpx

        from ._http import ssl_context

        url = origin if origin.endswith(".json") else origin.rstrip("/") + KEY_SET_PATH
        if not url.startswith("https://"):
            raise ValueError("the key set is fetched over https:// only")
        response = httpx.get(url, verify=ssl_context(ca_file, True), timeout=timeout)
        response.raise_for_status()
        return cls(response.content, audience, **kwargs)

    # --------------------------------------------------------------- cache

    def _cached(self, signed_kid: str, payload: bytes, signature: bytes) -> Optional[_Certificate]:
        with self._lock:
            for c in self._certificates:
                if c.signature == signature and c.payload == payload and c.signed_kid == signed_kid:
                    return c
        return None

    def _cache(self, cert: _Certificate) -> None:
        with self._lock:
            if any(c.signature == cert.signature and c.payload == cert.payload for c in self._certificates):
                return
            if len(self._certificates) >= CERTIFICATE_CACHE_ENTRIES_MAX:
                self._certificates.popleft()
            self._certificates.append(cert)

    # -------------------------------------------------------------- verify

    def verify(
        self,
        token: str,
        *,
        now: Optional[int] = None,
        device_fingerprint: Optional[bytes] = None,
        revocations: Optional[Revocations] = None,
    ) -> License:
        """Verifies ``token`` at ``now`` (Unix seconds; the clock by default),
        in the order of the module docs. ``revocations``: a
        :class:`RevocationList` or a :class:`~tollgate.Replica` (whose
        replicated revocations are then refused)."""
        if now is None:
            now = int(time.time())
        revoked: Revocations = revocations if revocations is not None else _NothingRevoked()
        implicit: Optional[bytes] = None
        if device_fingerprint is not None:
            if isinstance(device_fingerprint, str):
                device_fingerprint = device_fingerprint.encode("utf-8")
            if not device_fingerprint or len(device_fingerprint) > DEVICE_FINGERPRINT_BYTES_MAX:
                raise LicenseError(
                    "license_device_fingerprint_invalid",
                    f"device fingerprint is {len(device_fingerprint)} bytes; 1..={DEVICE_FINGERPRINT_BYTES_MAX} expected",
                )
            implicit = DEVICE_IMPLICIT_PREFIX + device_fingerprint

        # 1-2. Format, then the footer, unverified: it only picks a key.
        try:
            footer_bytes = paseto.footer_unverified(token)
        except paseto.TokenError as e:
            raise LicenseError(e.code, f"license token format: {e}") from None
        kid, cert_envelope = _footer(footer_bytes)

        # 3. The key.
        origin = self._origin.get(kid)
        certificate: Optional[_Certificate] = None
        certified_by: Optional[_OriginKey] = None
        if origin is not None:
            if cert_envelope is not None:
                raise LicenseError(
                    "license_footer_invalid", "license footer is invalid: an origin key id with a region certificate"
                )
            origin.check_usable(now)
            key = origin.key
        else:
            if cert_envelope is None:
                raise LicenseError("license_unknown_key_id", f"license signed with unknown key {kid}")
            signed_kid, payload, signature = cert_envelope
            certified_by = self._origin.get(signed_kid)
            if certified_by is None:
                raise LicenseError(
                    "license_certificate_signature_invalid", "region certificate is not signed by a known origin key"
                )
            certified_by.check_usable(now)
            certificate = self._cached(signed_kid, payload, signature)
            if certificate is None:
                if not certified_by.verify_signed(CONTEXT_REGION_CERTIFICATE, payload, signature):
                    raise LicenseError(
                        "license_certificate_signature_invalid",
                        "region certificate is not signed by a known origin key",
                    )
                certificate = _parse_certificate(signed_kid, payload, signature)
                self._cache(certificate)
            certificate.check_window(now, self.leeway_seconds)
            if certificate.kid != kid:
                raise LicenseError(
                    "license_certificate_key_mismatch",
                    f"the footer names key {kid} but its certificate is for key {certificate.kid}",
                )
            if MAY_SIGN_LICENSE not in certificate.may_sign:
                raise LicenseError(
                    "license_certificate_not_for_licenses",
                    f"region certificate {certificate.serial} does not allow signing licenses",
                )
            key = certificate.key

        # 4. The signature.
        message, device_bound = self._check_signature(key, token, implicit)

        # 5. The claims.
        claims, times = parse_claims(message)
        if claims["device_bound"] != device_bound:
            if claims["device_bound"]:
                raise LicenseError(
                    "license_device_fingerprint_required",
                    "license is bound to a device; a device fingerprint is required",
                )
            raise LicenseError(
                "license_claims_invalid",
                "license claims are invalid: device_bound is false in a token bound to a device",
            )

        # 6. The issuer must be the signer.
        if certificate is None:
            expected = ISSUER_ORIGIN
        else:
            expected = ISSUER_REGION_PREFIX + certificate.region
        if claims["iss"] != expected:
            raise LicenseError(
                "license_issuer_mismatch", f"token issuer is {claims['iss']!r} but it was signed by {expected!r}"
            )

        # 7. Time.
        leeway = self.leeway_seconds
        if min(now + leeway, I64_MAX) < times["nbf"]:
            raise LicenseError("license_not_yet_valid", f"license is not valid before {claims['nbf']}")
        if now >= min(times["exp"] + leeway, I64_MAX):
            raise LicenseError("license_expired", f"license expired at {claims['exp']}")
        if certificate is not None:
            certificate.check_token_times(times["iat"], times["exp"])

        # 8. Audience.
        if claims["aud"] != self.audience:
            raise LicenseError("license_wrong_audience", "license is for another audience")

        # 9. Revocation.
        if revoked.license_revoked(claims["jti"]):
            raise LicenseError("license_revoked", f"license {claims['jti']} is revoked")
        if certificate is not None:
            assert certified_by is not None
            if revoked.certificate_revoked(certificate.serial):
                raise LicenseError(
                    "license_certificate_revoked", f"region certificate {certificate.serial} is revoked"
                )
            return License(
                claims=claims,
                kid=kid,
                signer=f"region:{certificate.region}",
                region=certificate.region,
                serial=certificate.serial,
                certified_by=certified_by.kid,
            )
        return License(claims=claims, kid=kid, signer="origin")

    @staticmethod
    def _check_signature(key: bytes, token: str, implicit: Optional[bytes]) -> tuple[bytes, bool]:
        try:
            message, _ = paseto.verify(key, token, None, implicit or b"")
            return message, implicit is not None
        except paseto.TokenError as e:
            if e.code != "token_bad_signature":
                raise LicenseError(e.code, f"license token format: {e}") from None
        peek = _peek_device_bound(token)
        if implicit is None and peek is True:
            raise LicenseError(
                "license_device_fingerprint_required", "license is bound to a device; a device fingerprint is required"
            )
        if implicit is not None and peek is False:
            try:
                message, _ = paseto.verify(key, token, None, b"")
            except paseto.TokenError as e:
                code = "license_bad_signature" if e.code == "token_bad_signature" else e.code
                raise LicenseError(code, "license signature does not verify") from None
            return message, False
        raise LicenseError("license_bad_signature", "license signature does not verify")
