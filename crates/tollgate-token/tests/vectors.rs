//! The official PASETO v4 test vectors (`tests/vectors/v4.json`, ISC licence,
//! see `tests/vectors/README.md`).
//!
//! - `4-S-*` (public, expected to pass): signing gives exactly the expected
//!   token, and the token verifies back to the payload and footer.
//! - `4-F-*` (expected to fail): each is rejected, with the reason we expect
//!   for it. The local-token cases are rejected for their header; they are
//!   also re-headed as `v4.public.` to show they would fail even then.
//! - `4-E-*` (local tokens, expected to pass for a local implementation):
//!   this crate has no local tokens, so each must be refused for its header.

use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Deserialize;
use tollgate_token::{footer_unverified, sign, verify, Malformed, TokenError, HEADER};

const VECTORS_JSON: &str = include_str!("vectors/v4.json");

#[derive(Debug, Deserialize)]
struct Suite {
    name: String,
    tests: Vec<Vector>,
}

#[derive(Debug, Deserialize)]
struct Vector {
    name: String,
    #[serde(rename = "expect-fail")]
    expect_fail: bool,
    #[serde(rename = "public-key")]
    public_key: Option<String>,
    #[serde(rename = "secret-key")]
    secret_key: Option<String>,
    #[serde(rename = "secret-key-seed")]
    secret_key_seed: Option<String>,
    token: String,
    payload: Option<String>,
    footer: String,
    #[serde(rename = "implicit-assertion")]
    implicit_assertion: String,
}

fn suite() -> Suite {
    let suite: Suite = serde_json::from_str(VECTORS_JSON).expect("v4.json parses");
    assert_eq!(suite.name, "PASETO v4 Test Vectors");
    suite
}

fn vectors_with_prefix(prefix: &str) -> Vec<Vector> {
    suite()
        .tests
        .into_iter()
        .filter(|v| v.name.starts_with(prefix))
        .collect()
}

/// Hex to bytes, by hand: the only hex in the crate is in these vectors.
fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd-length hex {s:?}");
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("hex is ASCII");
            u8::from_str_radix(text, 16).unwrap_or_else(|_| panic!("bad hex {text:?}"))
        })
        .collect()
}

/// The key pair of a `4-S`/`4-F` vector. `secret-key` is libsodium's 64-byte
/// form, seed || public key; ed25519-dalek takes the 32-byte seed, so the
/// second half must equal `public-key` (and the seed `secret-key-seed`).
fn keys(v: &Vector) -> (SigningKey, VerifyingKey) {
    let secret = hex(v.secret_key.as_deref().expect("vector has secret-key"));
    let public = hex(v.public_key.as_deref().expect("vector has public-key"));
    assert_eq!(secret.len(), 64, "{}: secret-key is seed || public", v.name);
    assert_eq!(&secret[32..], &public[..], "{}: secret-key tail", v.name);
    if let Some(seed) = &v.secret_key_seed {
        assert_eq!(&secret[..32], &hex(seed)[..], "{}: secret-key-seed", v.name);
    }
    let seed: [u8; 32] = secret[..32].try_into().expect("32-byte seed");
    let signing = SigningKey::from_bytes(&seed);
    let public: [u8; 32] = public.try_into().expect("32-byte public key");
    let verifying = VerifyingKey::from_bytes(&public).expect("valid public key");
    assert_eq!(signing.verifying_key(), verifying, "{}: key pair", v.name);
    (signing, verifying)
}

/// The public key of the suite: every `4-S` vector uses the same one.
fn suite_public_key() -> VerifyingKey {
    let signing = vectors_with_prefix("4-S-");
    keys(signing.first().expect("there are 4-S vectors")).1
}

#[test]
fn every_4_s_vector_signs_to_the_expected_token_and_verifies() {
    let vectors = vectors_with_prefix("4-S-");
    assert_eq!(vectors.len(), 3, "v4.json has 4-S-1..3");
    for v in &vectors {
        assert!(!v.expect_fail, "{}", v.name);
        let (secret, public) = keys(v);
        let payload = v.payload.as_deref().expect("4-S vectors have a payload");
        let (footer, implicit) = (v.footer.as_bytes(), v.implicit_assertion.as_bytes());

        let token = sign(&secret, payload.as_bytes(), footer, implicit).expect("signs");
        assert_eq!(token, v.token, "{}: signed token", v.name);

        let expected = tollgate_token::Verified {
            message: payload.as_bytes().to_vec(),
            footer: footer.to_vec(),
        };
        let verified = verify(&public, &v.token, Some(footer), implicit);
        assert_eq!(verified, Ok(expected.clone()), "{}: verify", v.name);
        let verified = verify(&public, &v.token, None, implicit);
        assert_eq!(verified, Ok(expected), "{}: verify, any footer", v.name);
        assert_eq!(
            footer_unverified(&v.token),
            Ok(footer.to_vec()),
            "{}",
            v.name
        );

        // The implicit assertion is not in the token: leaving it out must fail.
        if !implicit.is_empty() {
            let verified = verify(&public, &v.token, Some(footer), b"");
            assert_eq!(verified, Err(TokenError::BadSignature), "{}: no i", v.name);
        }
        println!("{}: ok", v.name);
    }
}

#[test]
fn every_4_f_vector_is_rejected_for_the_expected_reason() {
    let vectors = vectors_with_prefix("4-F-");
    let suite_key = suite_public_key();
    // What each case is and how we must refuse it; a new case in the file
    // fails here until someone reads it and adds a row.
    let expected = |name: &str| -> TokenError {
        let wrong_header = |found: &str| TokenError::WrongHeader {
            found: found.to_owned(),
        };
        match name {
            // A v4.local token handed to a public verifier.
            "4-F-1" => wrong_header("v4.local."),
            // A v4.public token (meant to be fed to a local decrypter). Under
            // the suite's public key its signature does not verify.
            "4-F-2" => TokenError::BadSignature,
            // A v3.local token: wrong version and wrong purpose.
            "4-F-3" => wrong_header("v3.local."),
            // v4.local, 4-E-1 with non-zero trailing bits in the last char.
            "4-F-4" => wrong_header("v4.local."),
            // v4.local with `==` padding.
            "4-F-5" => wrong_header("v4.local."),
            other => panic!("unreviewed failure vector {other}: add a row"),
        }
    };
    assert_eq!(vectors.len(), 5, "v4.json has 4-F-1..5");
    for v in &vectors {
        assert!(v.expect_fail, "{}", v.name);
        assert!(
            v.payload.is_none(),
            "{}: failure vectors have no payload",
            v.name
        );
        // Local-key cases have no key pair: try them under the suite's key.
        let public = match v.public_key {
            Some(_) => keys(v).1,
            None => suite_key,
        };
        let (footer, implicit) = (v.footer.as_bytes(), v.implicit_assertion.as_bytes());
        let want = expected(&v.name);
        assert_eq!(
            verify(&public, &v.token, Some(footer), implicit),
            Err(want.clone()),
            "{}: verify with the expected footer",
            v.name
        );
        assert_eq!(
            verify(&public, &v.token, None, implicit),
            Err(want),
            "{}: verify with any footer",
            v.name
        );
        println!("{}: rejected", v.name);
    }
}

/// The local-token failure cases would fail even if an attacker rewrote
/// their header to ours: local bodies are not signed by our key, 4-F-5's
/// padding is not canonical base64url, and neither are 4-F-4's trailing bits.
#[test]
fn local_failure_vectors_stay_rejected_when_reheaded_as_public() {
    let public = suite_public_key();
    let mut checked = 0;
    for v in vectors_with_prefix("4-F-") {
        let Some(rest) = v
            .token
            .strip_prefix("v4.local.")
            .or(v.token.strip_prefix("v3.local."))
        else {
            continue;
        };
        let token = format!("{HEADER}{rest}");
        let want = match v.name.as_str() {
            // `==` padding.
            "4-F-5" => TokenError::Malformed(Malformed::PayloadEncoding),
            // 4-E-1 with its last character changed from `g` to `h`: only
            // unused trailing bits differ, so a lax base64 decoder yields
            // 4-E-1's exact bytes. Canonical decoding is what refuses it.
            "4-F-4" => TokenError::Malformed(Malformed::PayloadEncoding),
            _ => TokenError::BadSignature,
        };
        let (footer, implicit) = (v.footer.as_bytes(), v.implicit_assertion.as_bytes());
        assert_eq!(
            verify(&public, &token, Some(footer), implicit),
            Err(want),
            "{} re-headed",
            v.name
        );
        checked += 1;
    }
    assert_eq!(checked, 4, "4-F-1, 3, 4, 5 are local tokens");
}

/// `4-E-*` are valid *local* tokens; a public verifier must refuse them all
/// on the header, whatever the key.
#[test]
fn every_4_e_local_vector_is_refused_by_the_public_verifier() {
    let public = suite_public_key();
    let vectors = vectors_with_prefix("4-E-");
    assert_eq!(vectors.len(), 9, "v4.json has 4-E-1..9");
    for v in &vectors {
        let (footer, implicit) = (v.footer.as_bytes(), v.implicit_assertion.as_bytes());
        let want = Err(TokenError::WrongHeader {
            found: "v4.local.".to_owned(),
        });
        assert_eq!(
            verify(&public, &v.token, Some(footer), implicit),
            want,
            "{}",
            v.name
        );
        assert_eq!(
            footer_unverified(&v.token),
            want.map(|_| Vec::new()),
            "{}",
            v.name
        );
    }
}

/// `shared/paseto/` if it exists: `$TOLLGATE_SHARED_DIR/paseto`, else the
/// `shared/` beside the repository checkout (as tollgate-geo resolves it).
fn shared_paseto_dir() -> Option<PathBuf> {
    let shared = match std::env::var_os("TOLLGATE_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    let paseto = shared.join("paseto");
    paseto.is_dir().then_some(paseto)
}

/// The checked-in copy must not drift from the shared original.
#[test]
fn vectors_match_shared_copy() {
    let Some(shared) = shared_paseto_dir() else {
        println!(
            "SKIPPED vectors_match_shared_copy: shared/paseto not found (set TOLLGATE_SHARED_DIR to run it)"
        );
        return;
    };
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    for file in ["v4.json", "LICENSE"] {
        let theirs = std::fs::read(shared.join(file))
            .unwrap_or_else(|e| panic!("read {}: {e}", shared.join(file).display()));
        let mine = std::fs::read(ours.join(file))
            .unwrap_or_else(|e| panic!("read {}: {e}", ours.join(file).display()));
        assert!(
            theirs == mine,
            "tests/vectors/{file} differs from {}; copy it again",
            shared.join(file).display()
        );
    }
    println!("tests/vectors matches {}", shared.display());
}
