"""PASETO v4.public: the official test vectors (when present) and canonical decoding."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tollgate import paseto

VECTORS = Path(os.environ.get("PASETO_VECTORS", "/work/shared/paseto"))


def _public_vectors() -> list[dict[str, object]]:
    path = VECTORS / "v4.json"
    if not path.exists():
        return []
    return [t for t in json.loads(path.read_text())["tests"] if "public-key" in t]


@pytest.mark.skipif(not (VECTORS / "v4.json").exists(), reason=f"the PASETO test vectors are not in {VECTORS}")
@pytest.mark.parametrize("vector", _public_vectors(), ids=lambda v: str(v["name"]))
def test_official_v4_public_vectors(vector: dict[str, object]) -> None:
    public = bytes.fromhex(str(vector["public-key"]))
    token = str(vector["token"])
    footer = str(vector["footer"]).encode()
    implicit = str(vector["implicit-assertion"]).encode()
    if vector["expect-fail"]:
        with pytest.raises(paseto.TokenError):
            message, got_footer = paseto.verify(public, token, None, implicit)
            assert got_footer == footer
        return
    message, got_footer = paseto.verify(public, token, None, implicit)
    assert message.decode() == vector["payload"]
    assert got_footer == footer
    # Signing is deterministic (Ed25519): the same token comes out.
    seed = bytes.fromhex(str(vector["secret-key-seed"]))
    assert paseto.sign(seed, message, footer, implicit) == token


def test_pae_matches_the_spec_examples() -> None:
    assert paseto.pae() == b"\x00" * 8
    assert paseto.pae(b"") == b"\x01" + b"\x00" * 7 + b"\x00" * 8
    assert paseto.pae(b"test") == b"\x01" + b"\x00" * 7 + b"\x04" + b"\x00" * 7 + b"test"


def test_base64url_is_canonical_only() -> None:
    assert paseto.b64decode_canonical("AAEC") == b"\x00\x01\x02"
    assert paseto.b64decode_canonical("AQ") == b"\x01"
    for bad in ["AQ==", "AR", "A", "+/8", "a b", "é"]:
        assert paseto.b64decode_canonical(bad) is None, bad


def test_small_order_points_are_recognised() -> None:
    identity = bytes([1] + [0] * 31)
    point = paseto.point_decompress(identity)
    assert point is not None and paseto.is_small_order(point)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pk = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    point = paseto.point_decompress(pk)
    assert point is not None and not paseto.is_small_order(point)


@pytest.mark.skipif(not (VECTORS / "v4.json").exists(), reason=f"the PASETO test vectors are not in {VECTORS}")
def test_every_other_version_or_purpose_of_the_vectors_is_refused_by_its_header() -> None:
    others = [t for t in json.loads((VECTORS / "v4.json").read_text())["tests"] if not str(t["token"]).startswith("v4.public.")]
    assert others
    for vector in others:
        with pytest.raises(paseto.TokenError) as info:
            paseto.decode(str(vector["token"]))
        assert info.value.code == "token_wrong_header", vector["name"]
