//! Property tests: what is signed verifies back unchanged; any single changed
//! byte of a token is refused; no input makes the verifier panic.
//!
//! A failure prints the minimal failing input; proptest also saves its seed
//! under `proptest-regressions/`, so rerunning `cargo test -p tollgate-token
//! --test roundtrip` replays it.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use tollgate_token::{footer_unverified, sign, verify, Verified};

fn bytes(len_max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=len_max)
}

proptest! {
    #[test]
    fn sign_then_verify_gives_back_what_was_signed(
        seed in any::<[u8; 32]>(),
        message in bytes(512),
        footer in bytes(64),
        implicit in bytes(64),
    ) {
        let secret = SigningKey::from_bytes(&seed);
        let public = secret.verifying_key();
        let token = sign(&secret, &message, &footer, &implicit).expect("small inputs fit");
        let want = Verified { message, footer: footer.clone() };

        prop_assert_eq!(verify(&public, &token, Some(&footer), &implicit), Ok(want.clone()));
        prop_assert_eq!(verify(&public, &token, None, &implicit), Ok(want));
        prop_assert_eq!(footer_unverified(&token), Ok(footer));
    }

    /// Every position, header and dot included. The mask keeps the byte
    /// ASCII (the token is a `&str`); canonical decoding means even a change
    /// confined to unused trailing bits is refused, so the only acceptable
    /// outcome is an error.
    #[test]
    fn any_changed_byte_is_refused(
        seed in any::<[u8; 32]>(),
        message in bytes(256),
        footer in bytes(32),
        implicit in bytes(32),
        position in any::<prop::sample::Index>(),
        mask in 1u8..=0x7f,
    ) {
        let secret = SigningKey::from_bytes(&seed);
        let public = secret.verifying_key();
        let token = sign(&secret, &message, &footer, &implicit).expect("small inputs fit");

        let mut tampered = token.into_bytes();
        let at = position.index(tampered.len());
        tampered[at] ^= mask;
        let tampered = String::from_utf8(tampered).expect("ASCII stays UTF-8");

        let any_footer = verify(&public, &tampered, None, &implicit);
        prop_assert!(any_footer.is_err(), "byte {} ^ {:#04x} accepted: {:?}", at, mask, any_footer);
        let this_footer = verify(&public, &tampered, Some(&footer), &implicit);
        prop_assert!(this_footer.is_err(), "byte {} ^ {:#04x} accepted: {:?}", at, mask, this_footer);
    }

    /// Arbitrary text, and text that gets past the header check: never a
    /// panic, and (with overwhelming probability, for a random key) never Ok.
    #[test]
    fn arbitrary_input_never_panics(
        seed in any::<[u8; 32]>(),
        garbage in any::<String>(),
        body in "[A-Za-z0-9_=+/.-]{0,200}",
    ) {
        let public = SigningKey::from_bytes(&seed).verifying_key();
        for token in [garbage, format!("v4.public.{body}")] {
            prop_assert!(verify(&public, &token, None, b"").is_err());
            let _ = footer_unverified(&token);
        }
    }
}
