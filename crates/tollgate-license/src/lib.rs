//! Signed license tokens: what an SDK or an edge node checks, offline, to
//! know what an account (or one of its users or devices) may use, without
//! asking a region.
//!
//! The crate is sans-IO: no clock (`now` is a parameter), no randomness (a
//! token id or a certificate serial is built from bytes the caller drew), no
//! network, no files. It never panics on any input; every refusal is a
//! [`LicenseError`] with a stable [`LicenseError::code`].
//!
//! # The token
//! A PASETO `v4.public` token ([`tollgate_token`]: Ed25519, `verify_strict`,
//! canonical encoding only, at most 64 KiB).
//!
//! - **Message**: the JSON [`LicenseClaims`]. The registered claims `iat`,
//!   `nbf` and `exp` are RFC 3339 UTC strings, as the PASETO spec requires,
//!   in exactly one spelling (`2026-11-28T07:00:00Z`: no fraction, no offset,
//!   no lower-case `t`/`z`), so one instant has one encoding. `iss` is
//!   `tollgate-origin` or `tollgate-region:<region>`; `sub` is the account,
//!   or `<account>/<subject>`; `aud` is the product or audience; `jti` is 128
//!   random bits in lower-case hex. The entitlements are resolved against the
//!   catalog at issue time ([`LicenseEntitlement::resolve`]) so a verifier
//!   needs no catalog; at most [`ENTITLEMENTS_PER_LICENSE_MAX`] of them.
//!   Other times in the claims (`valid_from`, ...) are the model's integer
//!   Unix seconds.
//! - **Footer** (authenticated, readable before verification):
//!   `{"kid":"ed25519-…"}` for a token the origin signed, and
//!   `{"kid":"ed25519-…","cert":<Signed region certificate>}` for one a
//!   region signed.
//! - **Implicit assertion** (signed, not sent): empty, or for a token bound
//!   to a device `tollgate.device.v1\0` followed by the device fingerprint
//!   ([`DEVICE_IMPLICIT_PREFIX`]). A copied token then fails on any other
//!   device, and the fingerprint never travels inside the token.
//!
//! # Region certificates
//! A region signs tokens with its own key so it can issue while cut off from
//! the origin. The origin vouches for that key with a [`RegionCertificate`]
//! (serial, region, public key and its key id, validity window, what the key
//! may sign, the longest token it may issue), JSON-encoded and signed by the
//! origin's [`KeyRing`](tollgate_signing::KeyRing) under
//! [`CONTEXT_REGION_CERTIFICATE`](tollgate_signing::CONTEXT_REGION_CERTIFICATE)
//! ([`certify`]). A region token carries its certificate in the footer, so a
//! verifier only ever needs the origin's public keys.
//!
//! # Check order ([`Verifier::verify`]) and why
//! 1. **Format** (size, exactly `v4.public.`, canonical base64url): garbage is
//!    refused before any parsing or curve arithmetic.
//! 2. **Footer**, parsed unverified: it only *selects* a key among keys we
//!    already trust; nothing in it is believed until step 4.
//! 3. **Key**: an origin key by `kid` (not retired, overlap not over); else the
//!    footer's certificate, verified against the origin keys (signature,
//!    window, key not weak, key id matches its key), whose `kid` must equal
//!    the footer's and which must allow signing licenses. Verified
//!    certificates are cached (see [`Verifier`]).
//! 4. **Signature** (`verify_strict`, over header, message, footer and
//!    implicit assertion). Only if it fails is the unverified message peeked
//!    at, to say "device fingerprint required" instead of "bad signature";
//!    such a peek never leads to acceptance.
//! 5. **Claims** parsed strictly (unknown fields refused, bounds checked).
//! 6. **Issuer** consistent with the signer: an origin key signs only
//!    `tollgate-origin` tokens, a region key only `tollgate-region:<its
//!    region>` tokens, so a region cannot pass its tokens off as the origin's
//!    or another region's.
//! 7. **Time**: `nbf` and `exp` with a leeway for clock skew; for a region
//!    token, `iat..exp` inside the certificate's window and `exp - iat` within
//!    its `token_ttl_max_seconds`.
//! 8. **Audience**: a token for one product is not a token for another.
//! 9. **Revocation**: the token's `jti`, then the certificate's serial. Last,
//!    because only then are the ids authentic: before the signature a `jti`
//!    could be anyone's, and "revoked" must never be reported for a forgery.
//!
//! Cheap structural checks come first and the one expensive step (the
//! signature, some 60 µs) runs only on a token whose key is known and
//! usable; everything after it is parsing and comparisons.

mod certificate;
mod claims;
mod error;
mod footer;
mod id;
mod issue;
mod keys;
mod limits;
mod requests;
mod time;
mod verify;

pub use certificate::{
    certify, verify_certificate, RegionCertificate, MAY_SIGN_ENTRIES_MAX, MAY_SIGN_LICENSE,
};
pub use claims::{
    license_entitlements, region_issuer, valid_region_name, LicenseClaims, LicenseEntitlement,
    LicenseFeature, LicenseGrant, LicenseSeatMode, LicenseSeats, AUDIENCE_BYTES_MAX,
    ENTITLEMENTS_PER_LICENSE_MAX, ISSUER_ORIGIN, ISSUER_REGION_PREFIX, REGION_NAME_BYTES_MAX,
};
pub use error::LicenseError;
pub use id::{InvalidRandomId, RandomId};
pub use issue::{Issuer, DEVICE_FINGERPRINT_BYTES_MAX, DEVICE_IMPLICIT_PREFIX};
pub use requests::{IssueRequest, IssuedToken, Verification, VerifyRequest};
pub use time::{format_rfc3339, parse_rfc3339};
/// The longest token accepted anywhere, in bytes.
pub use tollgate_token::TOKEN_BYTES_MAX;
pub use verify::{
    License, LicenseSigner, RevocationList, Revocations, Verifier, CERTIFICATE_CACHE_ENTRIES_MAX,
    DEFAULT_LEEWAY_SECONDS, LEEWAY_SECONDS_MAX,
};
