//! PASETO `v4.public` tokens: Ed25519 signatures over a message, an optional
//! footer and an optional implicit assertion, exactly as the PASETO version 4
//! specification defines them
//! (<https://github.com/paseto-standard/paseto-spec/blob/master/docs/01-Protocol-Versions/Version4.md>).
//!
//! - [`sign`] mints a token; [`verify`] checks one and returns its message
//!   and footer; [`footer_unverified`] reads the footer *before* verification,
//!   so a verifier can pick a key by key id.
//! - There is no algorithm negotiation: the only header accepted is exactly
//!   `v4.public.`. A token that names anything else (`v4.local.`, `v3.public.`,
//!   `V4.PUBLIC.`, ...) is rejected before any other work, because letting the
//!   token choose how it is checked is the classic JWT `alg` confusion bug.
//! - Decoding is canonical: unpadded base64url only, no `=`, no `+`/`/`, no
//!   non-zero trailing bits, no empty footer section, no extra sections. One
//!   (message, footer) pair therefore has exactly one token string, so a cache
//!   or a revocation list keyed by the token string cannot be dodged by
//!   re-encoding it.
//! - Signatures are checked with `verify_strict`, which rejects malleable
//!   signatures and small-order (weak) public keys.
//! - Every token is at most [`TOKEN_BYTES_MAX`] bytes, on the way in and on the
//!   way out.
//!
//! The crate is sans-IO and has no clock: claims such as `exp` live inside the
//! message and are the caller's business. It never panics on any input.
//!
//! A `v4.public` message is signed, **not encrypted**: anyone holding the
//! token can read it. Put nothing secret in a message or a footer.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// The one header this crate signs and accepts, including its trailing dot.
pub const HEADER: &str = "v4.public.";

/// The largest token, in bytes, that [`sign`] produces and [`verify`] accepts.
///
/// Why a limit at all: a token arrives from outside the process, and decoding
/// and hashing it costs memory and time proportional to its length. A licence
/// token is a few hundred bytes; 64 KiB leaves room for large entitlement sets
/// while keeping the worst case small.
pub const TOKEN_BYTES_MAX: usize = 64 * 1024;

/// Length of an Ed25519 signature, the tail of every decoded payload.
const SIGNATURE_BYTES: usize = 64;

/// How much of an unrecognised header [`TokenError::WrongHeader`] echoes:
/// enough to tell `v4.local.` from `v3.public.`, too little to copy a whole
/// token into a log line.
const HEADER_ECHO_CHARS_MAX: usize = 16;

/// A token that verified: its message and its footer, both now authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed message (for Tollgate licences, the JSON claims).
    pub message: Vec<u8>,
    /// The footer; empty when the token has none. Covered by the signature.
    pub footer: Vec<u8>,
}

/// Why a token was refused (or, for [`sign`], could not be made).
///
/// Each variant has a stable machine-readable code, [`TokenError::code`], for
/// the API edge; the `Display` text is for humans and may change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is the empty string.
    #[error("token is empty")]
    Empty,
    /// The token (or the token [`sign`] would produce) is over the size limit.
    #[error("token is {len} bytes, over the limit of {max} bytes (TOKEN_BYTES_MAX)")]
    TooLong {
        /// Length of the token in bytes.
        len: usize,
        /// The limit, [`TOKEN_BYTES_MAX`].
        max: usize,
    },
    /// The token does not start with exactly `v4.public.`.
    #[error("token header is {found:?}, but only \"v4.public.\" is accepted (no other version or purpose, no other case)")]
    WrongHeader {
        /// The start of the token, up to its second `.` and at most 16
        /// characters. Attacker-controlled: log it with `{:?}` only.
        found: String,
    },
    /// The token has the right header but its body is not a canonical
    /// `v4.public` body.
    #[error("malformed token: {0}")]
    Malformed(Malformed),
    /// The caller expected a particular footer and the token carries another
    /// (or none, or one when none was expected).
    #[error("token footer does not match the expected footer")]
    FooterMismatch,
    /// The signature does not verify under this public key for this message,
    /// footer and implicit assertion. Deliberately carries no detail: the
    /// cause (tampering, wrong key, wrong implicit assertion, weak key) is not
    /// something a token holder should learn from us.
    #[error("token signature does not verify")]
    BadSignature,
}

/// What exactly is wrong with a [`TokenError::Malformed`] token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// The payload section is not canonical unpadded base64url.
    #[error("payload is not canonical unpadded base64url (no '=', no '+' or '/', no other characters, no non-zero trailing bits)")]
    PayloadEncoding,
    /// The decoded payload is too short to hold the 64-byte signature.
    #[error("payload is {len} bytes, shorter than the 64-byte Ed25519 signature it must end with")]
    PayloadTooShort {
        /// Decoded payload length in bytes.
        len: usize,
    },
    /// There is a `.` after the header but nothing after it. [`sign`] omits
    /// the footer section for an empty footer, so accepting `.` would give one
    /// token two spellings.
    #[error("footer section is present but empty")]
    EmptyFooter,
    /// The footer section is not canonical unpadded base64url.
    #[error("footer is not canonical unpadded base64url (no '=', no '+' or '/', no other characters, no non-zero trailing bits)")]
    FooterEncoding,
    /// More than one `.` after the header (`v4.public.a.b.c`).
    #[error("too many '.'-separated sections: expected v4.public.<payload>[.<footer>]")]
    TooManySections,
}

impl TokenError {
    /// A stable, machine-readable reason code (`token_*`), for clients to
    /// switch on and for bounded metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Empty => "token_empty",
            TokenError::TooLong { .. } => "token_too_long",
            TokenError::WrongHeader { .. } => "token_wrong_header",
            TokenError::Malformed(reason) => match reason {
                Malformed::PayloadEncoding => "token_malformed_payload_encoding",
                Malformed::PayloadTooShort { .. } => "token_malformed_payload_too_short",
                Malformed::EmptyFooter => "token_malformed_empty_footer",
                Malformed::FooterEncoding => "token_malformed_footer_encoding",
                Malformed::TooManySections => "token_malformed_too_many_sections",
            },
            TokenError::FooterMismatch => "token_footer_mismatch",
            TokenError::BadSignature => "token_bad_signature",
        }
    }
}

impl From<Malformed> for TokenError {
    fn from(reason: Malformed) -> Self {
        TokenError::Malformed(reason)
    }
}

/// Signs `message` into a `v4.public` token.
///
/// - `footer` travels in the token, in clear, and is covered by the signature;
///   typically a key id (`{"kid":...}`) so verifiers know which key to use.
///   An empty footer means no footer section at all.
/// - `implicit` (the spec's "implicit assertion") is covered by the signature
///   but *not* written into the token: the verifier must supply the same bytes.
///   Use it to bind a token to its context (for example an audience or a
///   tenant) without making the token longer.
///
/// Ed25519 is deterministic, so the same inputs always give the same token.
///
/// # Errors
/// [`TokenError::TooLong`] if the token would exceed [`TOKEN_BYTES_MAX`]:
/// failing here is better than minting a token that every verifier refuses.
pub fn sign(
    secret: &SigningKey,
    message: &[u8],
    footer: &[u8],
    implicit: &[u8],
) -> Result<String, TokenError> {
    let len = token_len(message.len(), footer.len());
    if len > TOKEN_BYTES_MAX {
        return Err(TokenError::TooLong {
            len,
            max: TOKEN_BYTES_MAX,
        });
    }

    // Spec, Sign step 2: m2 = PAE(h, m, f, i); sig = crypto_sign_detached(m2, sk).
    let m2 = pae(&[HEADER.as_bytes(), message, footer, implicit]);
    let signature = secret.sign(&m2);

    let mut body = Vec::with_capacity(message.len() + SIGNATURE_BYTES);
    body.extend_from_slice(message);
    body.extend_from_slice(&signature.to_bytes());

    let mut token = String::with_capacity(len);
    token.push_str(HEADER);
    URL_SAFE_NO_PAD.encode_string(&body, &mut token);
    if !footer.is_empty() {
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(footer, &mut token);
    }
    debug_assert_eq!(token.len(), len, "token_len must predict the encoding");
    Ok(token)
}

/// Verifies a `v4.public` token and returns its message and footer.
///
/// - `expected_footer`: `Some(f)` requires the token's footer to be exactly
///   `f` (`Some(b"")` requires no footer), compared in constant time as the
///   spec asks; `None` accepts any footer. Either way the footer is covered
///   by the signature, so what comes back in [`Verified::footer`] is
///   authentic.
/// - `implicit`: the implicit assertion the token was signed with (empty if
///   none). It is not in the token; a different value fails as
///   [`TokenError::BadSignature`].
///
/// Checks run cheapest first (size, header, structure, encoding, footer) so
/// garbage is rejected before any curve arithmetic.
///
/// # Errors
/// Every malformed, foreign, oversized, tampered or mis-keyed token is a
/// [`TokenError`], never a panic; [`TokenError::code`] says which kind.
pub fn verify(
    public: &VerifyingKey,
    token: &str,
    expected_footer: Option<&[u8]>,
    implicit: &[u8],
) -> Result<Verified, TokenError> {
    let Decoded {
        message,
        signature,
        footer,
    } = decode(token)?;

    // Spec, Verify step 1. The footer is not secret (it is in the token), but
    // the spec asks for a constant-time compare and it costs nothing.
    if let Some(expected) = expected_footer {
        if !constant_time_eq(&footer, expected) {
            return Err(TokenError::FooterMismatch);
        }
    }

    // Spec, Verify steps 4-5: m2 = PAE(h, m, f, i); crypto_sign_verify_detached.
    // verify_strict, not verify: it refuses small-order keys and non-canonical
    // signature encodings, which plain Ed25519 verification lets through.
    let m2 = pae(&[HEADER.as_bytes(), &message, &footer, implicit]);
    let signature = Signature::from_bytes(&signature);
    public
        .verify_strict(&m2, &signature)
        .map_err(|_| TokenError::BadSignature)?;

    Ok(Verified { message, footer })
}

/// Reads a token's footer **without verifying anything**.
///
/// This exists so a verifier can read a key id from the footer and choose the
/// public key to call [`verify`] with. The bytes returned are **untrusted**:
/// anyone can write any footer. Use them only to select among keys you already
/// trust, never to decide access, and parse them defensively (the PASETO spec
/// advises limits on JSON depth and key count before parsing a footer).
/// After [`verify`] succeeds, [`Verified::footer`] holds the same bytes,
/// authenticated.
///
/// The token gets the same structural checks as in [`verify`] (size, header,
/// canonical encoding), so garbage is refused here too.
///
/// # Errors
/// Every [`TokenError`] except [`TokenError::FooterMismatch`] and
/// [`TokenError::BadSignature`], which need verification.
pub fn footer_unverified(token: &str) -> Result<Vec<u8>, TokenError> {
    decode(token).map(|decoded| decoded.footer)
}

/// A structurally valid token, split into its parts; nothing is verified yet.
struct Decoded {
    message: Vec<u8>,
    signature: [u8; SIGNATURE_BYTES],
    footer: Vec<u8>,
}

/// Checks size, header and structure and decodes the sections (spec, Verify
/// steps 2-3).
fn decode(token: &str) -> Result<Decoded, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    // Before anything else, so nothing below ever works on a huge input.
    if token.len() > TOKEN_BYTES_MAX {
        return Err(TokenError::TooLong {
            len: token.len(),
            max: TOKEN_BYTES_MAX,
        });
    }
    // Byte-exact and case-sensitive: there is no negotiation.
    let Some(body) = token.strip_prefix(HEADER) else {
        return Err(TokenError::WrongHeader {
            found: header_prefix(token),
        });
    };

    let (payload_b64, footer_b64) = match body.split_once('.') {
        None => (body, None),
        Some((_, footer)) if footer.contains('.') => return Err(Malformed::TooManySections.into()),
        Some((_, "")) => return Err(Malformed::EmptyFooter.into()),
        Some((payload, footer)) => (payload, Some(footer)),
    };

    // URL_SAFE_NO_PAD rejects padding, the standard alphabet, any other
    // character, impossible lengths and non-zero trailing bits: canonical only.
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| Malformed::PayloadEncoding)?;
    let Some(message_len) = payload.len().checked_sub(SIGNATURE_BYTES) else {
        return Err(Malformed::PayloadTooShort { len: payload.len() }.into());
    };
    let (message, signature) = payload.split_at(message_len);
    let signature = <[u8; SIGNATURE_BYTES]>::try_from(signature)
        .map_err(|_| Malformed::PayloadTooShort { len: payload.len() })?;

    let footer = match footer_b64 {
        None => Vec::new(),
        Some(footer_b64) => URL_SAFE_NO_PAD
            .decode(footer_b64)
            .map_err(|_| Malformed::FooterEncoding)?,
    };

    Ok(Decoded {
        message: message.to_vec(),
        signature,
        footer,
    })
}

/// The start of a token that failed the header check, for the error message:
/// up to and including its second `.`, at most [`HEADER_ECHO_CHARS_MAX`] chars.
fn header_prefix(token: &str) -> String {
    let mut found = String::new();
    let mut dots = 0;
    for c in token.chars().take(HEADER_ECHO_CHARS_MAX) {
        found.push(c);
        if c == '.' {
            dots += 1;
            if dots == 2 {
                break;
            }
        }
    }
    found
}

/// PASETO pre-authentication encoding (spec, Common.md, "PAE"): the number of
/// pieces, then each piece's length and bytes, counts and lengths as LE64.
///
/// Why it exists: signing the plain concatenation of header, message, footer
/// and implicit assertion would let bytes slide from one to the next with the
/// same signature; length-prefixing every piece makes the split unambiguous.
fn pae(pieces: &[&[u8]]) -> Vec<u8> {
    let len = 8 + pieces.iter().map(|piece| 8 + piece.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&le64(pieces.len()));
    for piece in pieces {
        out.extend_from_slice(&le64(piece.len()));
        out.extend_from_slice(piece);
    }
    out
}

/// LE64 from the spec: a little-endian u64 with the most significant bit
/// cleared, so that languages without unsigned 64-bit integers agree.
fn le64(n: usize) -> [u8; 8] {
    // usize is at most 64 bits on every target Rust supports, so `as` is
    // lossless; the mask is the spec's MSB clearing.
    ((n as u64) & (u64::MAX >> 1)).to_le_bytes()
}

/// Length in bytes of unpadded base64 for `n` input bytes.
fn base64_len(n: usize) -> usize {
    (n / 3).saturating_mul(4) + [0, 2, 3][n % 3]
}

/// Length in bytes of the token [`sign`] makes for these input lengths,
/// computed before encoding so an oversized token is refused without work.
fn token_len(message_len: usize, footer_len: usize) -> usize {
    let body = base64_len(message_len.saturating_add(SIGNATURE_BYTES));
    let footer = if footer_len == 0 {
        0
    } else {
        1 + base64_len(footer_len)
    };
    HEADER.len().saturating_add(body).saturating_add(footer)
}

/// Equality whose running time depends only on the lengths, not the contents.
/// Lengths are public (the footer is visible in the token), so an early
/// return on a length difference leaks nothing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three worked examples in the spec's Common.md, "PAE Definition".
    #[test]
    fn pae_matches_spec_examples() {
        assert_eq!(pae(&[]), b"\x00\x00\x00\x00\x00\x00\x00\x00");
        assert_eq!(
            pae(&[b""]),
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        );
        assert_eq!(
            pae(&[b"test"]),
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00test"
        );
    }

    #[test]
    fn le64_clears_the_most_significant_bit() {
        assert_eq!(le64(0), [0; 8]);
        assert_eq!(le64(1), [1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(le64(0x0102), [2, 1, 0, 0, 0, 0, 0, 0]);
        if let Ok(max) = usize::try_from(u64::MAX) {
            assert_eq!(le64(max), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        }
    }

    #[test]
    fn base64_len_matches_the_encoder() {
        for n in 0..200 {
            let encoded = URL_SAFE_NO_PAD.encode(vec![0xa5u8; n]);
            assert_eq!(base64_len(n), encoded.len(), "n = {n}");
        }
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"kid", b"kid"));
        assert!(!constant_time_eq(b"kid", b"kie"));
        assert!(!constant_time_eq(b"kid", b"ki"));
        assert!(!constant_time_eq(b"", b"k"));
    }

    #[test]
    fn header_prefix_stops_at_second_dot_and_length_cap() {
        assert_eq!(header_prefix("v4.local.abcdef"), "v4.local.");
        assert_eq!(header_prefix("V4.PUBLIC.abc"), "V4.PUBLIC.");
        assert_eq!(
            header_prefix("abcdefghijklmnopqrstuvwxyz"),
            "abcdefghijklmnop"
        );
        assert_eq!(header_prefix("é"), "é");
    }
}
