"""PASETO ``v4.public`` tokens (Ed25519), as crates/tollgate-token implements
them and the PASETO version 4 specification defines them.

- The only header accepted is exactly ``v4.public.`` (no negotiation).
- Decoding is canonical: unpadded base64url only (no ``=``, no ``+``/``/``,
  no non-zero trailing bits), no empty footer section, no extra sections.
- Signatures are checked strictly, like ``ed25519_dalek::verify_strict``:
  small-order public keys and small-order ``R`` are refused, and
  ``S`` must be canonical (OpenSSL checks it).
- Every token is at most :data:`TOKEN_BYTES_MAX` bytes.

Errors are :class:`TokenError` with the Rust crate's stable codes
(``token_wrong_header``, ``token_bad_signature``, ...).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import struct
from typing import Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "HEADER",
    "TOKEN_BYTES_MAX",
    "TokenError",
    "pae",
    "b64decode_canonical",
    "b64encode",
    "decode",
    "footer_unverified",
    "verify",
    "sign",
    "point_decompress",
    "is_small_order",
    "verify_strict",
]

HEADER = "v4.public."
TOKEN_BYTES_MAX = 64 * 1024
SIGNATURE_BYTES = 64
_HEADER_ECHO_CHARS_MAX = 16
_B64URL = re.compile(r"[A-Za-z0-9_-]*\Z")


class TokenError(ValueError):
    """A token refused for its format or signature; ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def pae(*pieces: bytes) -> bytes:
    """Pre-Authentication Encoding: LE64(count) then LE64(len) || piece for each piece."""
    out = [struct.pack("<Q", len(pieces) & 0x7FFFFFFFFFFFFFFF)]
    for piece in pieces:
        out.append(struct.pack("<Q", len(piece) & 0x7FFFFFFFFFFFFFFF))
        out.append(piece)
    return b"".join(out)


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode_canonical(text: str) -> Optional[bytes]:
    """Unpadded base64url in its one canonical spelling, else ``None``."""
    if not _B64URL.match(text) or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    # Non-zero trailing bits would decode to the same bytes: refuse them.
    if b64encode(data) != text:
        return None
    return data


def _header_prefix(token: str) -> str:
    found = []
    dots = 0
    for c in token[:_HEADER_ECHO_CHARS_MAX]:
        found.append(c)
        if c == ".":
            dots += 1
            if dots == 2:
                break
    return "".join(found)


def decode(token: str) -> tuple[bytes, bytes, bytes]:
    """``(message, signature, footer)`` of a well-formed token, unverified."""
    if not token:
        raise TokenError("token_empty", "token is empty")
    size = len(token.encode("utf-8"))
    if size > TOKEN_BYTES_MAX:
        raise TokenError(
            "token_too_long", f"token is {size} bytes, over the limit of {TOKEN_BYTES_MAX} bytes (TOKEN_BYTES_MAX)"
        )
    if not token.startswith(HEADER):
        raise TokenError(
            "token_wrong_header",
            f'token header is {_header_prefix(token)!r}, but only "v4.public." is accepted',
        )
    body = token[len(HEADER) :]
    payload_b64, sep, footer_b64 = body.partition(".")
    if sep:
        if "." in footer_b64:
            raise TokenError(
                "token_malformed_too_many_sections",
                "malformed token: too many '.'-separated sections: expected v4.public.<payload>[.<footer>]",
            )
        if footer_b64 == "":
            raise TokenError("token_malformed_empty_footer", "malformed token: footer section is present but empty")
    payload = b64decode_canonical(payload_b64)
    if payload is None:
        raise TokenError(
            "token_malformed_payload_encoding", "malformed token: payload is not canonical unpadded base64url"
        )
    if len(payload) < SIGNATURE_BYTES:
        raise TokenError(
            "token_malformed_payload_too_short",
            f"malformed token: payload is {len(payload)} bytes, shorter than the 64-byte Ed25519 signature",
        )
    footer = b""
    if sep:
        decoded = b64decode_canonical(footer_b64)
        if decoded is None:
            raise TokenError(
                "token_malformed_footer_encoding", "malformed token: footer is not canonical unpadded base64url"
            )
        footer = decoded
    return payload[:-SIGNATURE_BYTES], payload[-SIGNATURE_BYTES:], footer


def footer_unverified(token: str) -> bytes:
    """The footer, read before verification (to pick a key)."""
    return decode(token)[2]


# ------------------------------------------------------------ Ed25519 strictness

_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def point_decompress(encoded: bytes) -> Optional[tuple[int, int]]:
    """The point a 32-byte encoding names, as curve25519-dalek decompresses
    it (``y`` reduced mod p), or ``None`` when it is not on the curve."""
    if len(encoded) != 32:
        return None
    n = int.from_bytes(encoded, "little")
    sign = n >> 255
    y = (n & ((1 << 255) - 1)) % _P
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    v3 = v * v * v % _P
    x = u * v3 * pow(u * v3 * v3 * v % _P, (_P - 5) // 8, _P) % _P
    vx2 = v * x * x % _P
    if vx2 == u:
        pass
    elif vx2 == (-u) % _P:
        x = x * _SQRT_M1 % _P
    else:
        return None
    if (x & 1) != sign:
        x = (-x) % _P
    return x, y


def _add(p1: tuple[int, int], p2: tuple[int, int]) -> tuple[int, int]:
    x1, y1 = p1
    x2, y2 = p2
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, _P - 2, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P
    return x3, y3


def is_small_order(point: tuple[int, int]) -> bool:
    """Whether ``[8]point`` is the identity (the point is of small order)."""
    q = point
    for _ in range(3):
        q = _add(q, q)
    return q == (0, 1)


def verify_strict(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 verification as ``ed25519_dalek::VerifyingKey::verify_strict``:
    besides the signature equation, refuses small-order ``A`` and ``R``."""
    if len(signature) != SIGNATURE_BYTES or len(public_key) != 32:
        return False
    a = point_decompress(public_key)
    r = point_decompress(signature[:32])
    if a is None or r is None or is_small_order(a) or is_small_order(r):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify(public_key: bytes, token: str, expected_footer: Optional[bytes] = None, implicit: bytes = b"") -> tuple[bytes, bytes]:
    """Verifies ``token`` with a 32-byte Ed25519 public key; ``(message, footer)``."""
    message, signature, footer = decode(token)
    if expected_footer is not None and not hmac.compare_digest(footer, expected_footer):
        raise TokenError("token_footer_mismatch", "token footer does not match the expected footer")
    m2 = pae(HEADER.encode(), message, footer, implicit)
    if not verify_strict(public_key, m2, signature):
        raise TokenError("token_bad_signature", "token signature does not verify")
    return message, footer


def sign(secret_seed: bytes, message: bytes, footer: bytes = b"", implicit: bytes = b"") -> str:
    """Mints a token with a 32-byte Ed25519 seed (for tests and tools)."""
    key = Ed25519PrivateKey.from_private_bytes(secret_seed)
    m2 = pae(HEADER.encode(), message, footer, implicit)
    token = HEADER + b64encode(message + key.sign(m2))
    if footer:
        token += "." + b64encode(footer)
    if len(token) > TOKEN_BYTES_MAX:
        raise TokenError("token_too_long", f"token is {len(token)} bytes, over the limit of {TOKEN_BYTES_MAX} bytes")
    return token
