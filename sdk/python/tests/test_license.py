"""Offline license verification: the Rust verifier's checks, order and codes."""

from __future__ import annotations

import json

import pytest

from tollgate import LicenseError, OfflineVerifier, RevocationList, paseto
from tollgate.license import DEVICE_IMPLICIT_PREFIX, parse_rfc3339, format_rfc3339

from helpers import NOW, Key, certificate, claims, mint


@pytest.fixture()
def origin() -> Key:
    return Key()


@pytest.fixture()
def verifier(origin: Key) -> OfflineVerifier:
    return OfflineVerifier({"keys": [origin.public_json()]}, "studio")


def refused(verifier: OfflineVerifier, token: str, **kwargs: object) -> str:
    with pytest.raises(LicenseError) as info:
        verifier.verify(token, now=kwargs.pop("now", NOW), **kwargs)  # type: ignore[arg-type]
    return info.value.code


def test_an_origin_token_verifies_and_its_claims_read_back(origin: Key, verifier: OfflineVerifier) -> None:
    body = claims(subject="alice")
    license = verifier.verify(mint(origin, body), now=NOW)
    assert license.signer == "origin"
    assert license.kid == origin.kid
    assert license.account == "acme" and license.subject == "alice"
    assert license.claims["entitlements"][0]["features"][0]["config"] == {"max_resolution": "4k"}
    assert license.allows("export", NOW) is not None
    assert license.allows("render", NOW) is None


def test_a_region_token_verifies_through_its_certificate(origin: Key, verifier: OfflineVerifier) -> None:
    region = Key()
    token = mint(region, claims(iss="tollgate-region:eu"), cert=certificate(origin, region))
    license = verifier.verify(token, now=NOW)
    assert license.signer == "region:eu"
    assert license.certified_by == origin.kid
    assert license.serial == "fedcba9876543210fedcba9876543210"


@pytest.mark.parametrize(
    "mutate, code",
    [
        (lambda c: c.update(exp=format_rfc3339(NOW - 61)), "license_expired"),
        (lambda c: c.update(iat=format_rfc3339(NOW + 100), nbf=format_rfc3339(NOW + 100)), "license_not_yet_valid"),
        (lambda c: c.update(aud="other"), "license_wrong_audience"),
        (lambda c: c.update(iss="tollgate-region:eu"), "license_issuer_mismatch"),
        (lambda c: c.update(extra=1), "license_claims_invalid"),
        (lambda c: c.update(sub="globex"), "license_claims_invalid"),
        (lambda c: c.update(exp="2026-01-01T00:00:00+00:00"), "license_claims_invalid"),
        (lambda c: c.update(jti="XYZ"), "license_claims_invalid"),
    ],
)
def test_claims_are_refused_with_the_rust_codes(origin: Key, verifier: OfflineVerifier, mutate, code) -> None:  # type: ignore[no-untyped-def]
    body = claims()
    mutate(body)
    assert refused(verifier, mint(origin, body)) == code


def test_leeway_applies_to_expiry(origin: Key, verifier: OfflineVerifier) -> None:
    token = mint(origin, claims(exp=NOW - 30))
    assert verifier.verify(token, now=NOW).claims["exp"] == format_rfc3339(NOW - 30)


def test_revocations_come_last_and_cover_certificates(origin: Key, verifier: OfflineVerifier) -> None:
    token = mint(origin, claims())
    assert refused(verifier, token, revocations=RevocationList(licenses=["0123456789abcdef0123456789abcdef"])) == "license_revoked"
    region = Key()
    rtoken = mint(region, claims(iss="tollgate-region:eu", jti="1" * 32), cert=certificate(origin, region))
    revoked = RevocationList(certificates=["fedcba9876543210fedcba9876543210"])
    assert refused(verifier, rtoken, revocations=revoked) == "license_certificate_revoked"
    # A forgery is never "revoked": the signature is checked first.
    forged = mint(Key(), claims(), cert=None)
    assert refused(verifier, forged, revocations=RevocationList(licenses=["0123456789abcdef0123456789abcdef"])) in (
        "license_unknown_key_id",
    )


def test_keys_and_certificates_are_walked_in_order(origin: Key) -> None:
    region = Key()
    stranger = Key()
    v = OfflineVerifier({"keys": [origin.public_json()]}, "studio")
    body = claims(iss="tollgate-region:eu")
    assert refused(v, mint(stranger, claims())) == "license_unknown_key_id"
    assert refused(v, mint(origin, claims(), cert=certificate(origin, region))) == "license_footer_invalid"
    assert refused(v, mint(region, body, cert=certificate(stranger, region))) == "license_certificate_signature_invalid"
    assert refused(v, mint(region, body, cert=certificate(origin, stranger))) == "license_certificate_key_mismatch"
    assert refused(v, mint(region, body, cert=certificate(origin, region, may_sign=["other"]))) == "license_certificate_not_for_licenses"
    assert refused(v, mint(region, body, cert=certificate(origin, region, not_after=NOW - 100))) == "license_certificate_expired"
    assert refused(v, mint(region, body, cert=certificate(origin, region, not_before=NOW + 100))) == "license_certificate_not_yet_valid"
    assert refused(v, mint(region, claims(iss="tollgate-region:us"), cert=certificate(origin, region))) == "license_issuer_mismatch"
    assert refused(v, mint(region, body, cert=certificate(origin, region, ttl_max=60))) == "license_ttl_over_certificate_max"
    late = claims(iss="tollgate-region:eu", exp=NOW + 3 * 86400)
    assert refused(v, mint(region, late, cert=certificate(origin, region))) == "license_outside_certificate_validity"
    # A tampered certificate payload no longer verifies.
    cert = certificate(origin, region)
    cert["payload"] = paseto.b64encode(paseto.b64decode_canonical(cert["payload"]).replace(b'"eu"', b'"us"'))  # type: ignore[union-attr]
    assert refused(v, mint(region, body, cert=cert)) == "license_certificate_signature_invalid"


def test_key_status_retired_and_overlap(origin: Key) -> None:
    token = mint(origin, claims())
    retired = OfflineVerifier({"keys": [origin.public_json("retired")]}, "studio")
    assert refused(retired, token) == "license_key_retired"
    overlap = OfflineVerifier({"keys": [origin.public_json({"overlap": {"until": NOW - 1}})]}, "studio")
    assert refused(overlap, token) == "license_key_overlap_expired"
    still = OfflineVerifier({"keys": [origin.public_json({"overlap": {"until": NOW}})]}, "studio")
    assert still.verify(token, now=NOW).signer == "origin"


def test_device_binding(origin: Key, verifier: OfflineVerifier) -> None:
    bound = mint(origin, claims(device_bound=True), implicit=DEVICE_IMPLICIT_PREFIX + b"dev-1")
    assert verifier.verify(bound, now=NOW, device_fingerprint=b"dev-1").claims["device_bound"] is True
    assert refused(verifier, bound) == "license_device_fingerprint_required"
    assert refused(verifier, bound, device_fingerprint=b"dev-2") == "license_bad_signature"
    assert refused(verifier, bound, device_fingerprint=b"") == "license_device_fingerprint_invalid"
    unbound = mint(origin, claims())
    assert verifier.verify(unbound, now=NOW, device_fingerprint=b"dev-1").claims["device_bound"] is False


def test_format_errors_keep_the_token_codes(origin: Key, verifier: OfflineVerifier) -> None:
    token = mint(origin, claims())
    assert refused(verifier, "") == "token_empty"
    assert refused(verifier, "v4.local." + token[10:]) == "token_wrong_header"
    assert refused(verifier, "V4.PUBLIC." + token[10:]) == "token_wrong_header"
    assert refused(verifier, token + ".x") == "token_malformed_too_many_sections"
    assert refused(verifier, token.split(".")[0] + "." + token.split(".")[1] + "." + token.split(".")[2] + ".") == (
        "token_malformed_empty_footer"
    )
    assert refused(verifier, "v4.public." + token.split(".")[2] + "=." + token.split(".")[3]) == "token_malformed_payload_encoding"
    assert refused(verifier, "v4.public.AAAA." + token.split(".")[3]) == "token_malformed_payload_too_short"
    assert refused(verifier, "v4.public." + token.split(".")[2]) == "license_footer_invalid"
    assert refused(verifier, "x" * (64 * 1024 + 1)) == "token_too_long"
    tampered = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    assert refused(verifier, tampered) in ("license_bad_signature", "token_malformed_payload_encoding")


def test_the_key_set_is_checked_whole(origin: Key) -> None:
    with pytest.raises(LicenseError) as e:
        OfflineVerifier({"keys": []}, "studio")
    assert e.value.code == "license_key_set_invalid"
    bad = origin.public_json()
    bad["kid"] = "ed25519-0000000000000000"
    with pytest.raises(LicenseError) as e:
        OfflineVerifier({"keys": [bad]}, "studio")
    assert e.value.code == "license_key_set_invalid"
    with pytest.raises(LicenseError) as e:
        OfflineVerifier({"keys": [origin.public_json(), origin.public_json()]}, "studio")
    assert e.value.code == "license_key_set_invalid"
    with pytest.raises(LicenseError) as e:
        OfflineVerifier({"keys": [origin.public_json()]}, "")
    assert e.value.code == "license_audience_invalid"
    # The identity point (small order) is a weak key.
    weak = bytes([1] + [0] * 31)
    w = {"kid": "ed25519-" + weak[:8].hex(), "algorithm": "Ed25519", "public_key": paseto.b64encode(weak), "created_at": 0, "status": "active"}
    with pytest.raises(LicenseError) as e:
        OfflineVerifier({"keys": [w]}, "studio")
    assert e.value.code == "license_weak_public_key"


def test_rfc3339_has_one_spelling() -> None:
    assert parse_rfc3339("2026-11-27T23:21:02Z") == 1_795_821_662
    assert format_rfc3339(1_795_821_662) == "2026-11-27T23:21:02Z"
    for bad in ["2026-11-27t23:21:02Z", "2026-11-27T23:21:02.0Z", "2026-02-30T00:00:00Z", "2026-11-27T23:21:60Z", "2026-11-27T23:21:02+00:00"]:
        assert parse_rfc3339(bad) is None, bad
