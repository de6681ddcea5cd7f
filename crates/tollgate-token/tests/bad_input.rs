//! Hostile and broken tokens: each must be refused, for the right reason,
//! without a panic.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{Signature, SigningKey, Verifier as _, VerifyingKey};
use tollgate_token::{
    footer_unverified, sign, verify, Malformed, TokenError, Verified, HEADER, TOKEN_BYTES_MAX,
};

const MESSAGE: &[u8] = br#"{"sub":"acct_1","plan":"pro","exp":"2027-01-01T00:00:00+00:00"}"#;
const FOOTER: &[u8] = br#"{"kid":"origin-1"}"#;
const IMPLICIT: &[u8] = b"tollgate-licence";

fn secret() -> SigningKey {
    SigningKey::from_bytes(&[42u8; 32])
}

fn public() -> VerifyingKey {
    secret().verifying_key()
}

fn token_for(message: &[u8], footer: &[u8]) -> String {
    sign(&secret(), message, footer, IMPLICIT).expect("fixture signs")
}

fn token() -> String {
    token_for(MESSAGE, FOOTER)
}

/// Verifies with the fixture key, the fixture implicit assertion and any footer.
fn check(token: &str) -> Result<Verified, TokenError> {
    verify(&public(), token, None, IMPLICIT)
}

fn malformed(reason: Malformed) -> Result<Verified, TokenError> {
    Err(TokenError::Malformed(reason))
}

/// Splits a token into its decoded payload (message || signature) and footer.
fn split(token: &str) -> (Vec<u8>, Vec<u8>) {
    let body = token.strip_prefix(HEADER).expect("fixture header");
    let (payload, footer) = body.split_once('.').unwrap_or((body, ""));
    let payload = URL_SAFE_NO_PAD.decode(payload).expect("fixture payload");
    let footer = URL_SAFE_NO_PAD.decode(footer).expect("fixture footer");
    (payload, footer)
}

/// The inverse of [`split`]: canonical encoding, so only the bytes differ.
fn join(payload: &[u8], footer: &[u8]) -> String {
    let mut token = format!("{HEADER}{}", URL_SAFE_NO_PAD.encode(payload));
    if !footer.is_empty() {
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(footer));
    }
    token
}

#[test]
fn the_fixture_token_verifies() {
    let want = Ok(Verified {
        message: MESSAGE.to_vec(),
        footer: FOOTER.to_vec(),
    });
    assert_eq!(check(&token()), want);
    assert_eq!(verify(&public(), &token(), Some(FOOTER), IMPLICIT), want);
}

#[test]
fn flipped_bit_in_message_is_bad_signature() {
    let (mut payload, footer) = split(&token());
    payload[3] ^= 0x01;
    assert_eq!(
        check(&join(&payload, &footer)),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn flipped_bit_in_signature_is_bad_signature() {
    let (mut payload, footer) = split(&token());
    let last = payload.len() - 1;
    payload[last - 10] ^= 0x80;
    assert_eq!(
        check(&join(&payload, &footer)),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn flipped_bit_in_footer_is_bad_signature_or_mismatch() {
    let (payload, mut footer) = split(&token());
    footer[2] ^= 0x04;
    let tampered = join(&payload, &footer);
    // Accepting any footer: the signature catches it.
    assert_eq!(check(&tampered), Err(TokenError::BadSignature));
    // Expecting the real footer: caught before the signature.
    assert_eq!(
        verify(&public(), &tampered, Some(FOOTER), IMPLICIT),
        Err(TokenError::FooterMismatch)
    );
}

#[test]
fn truncated_signature_by_one_byte_is_bad_signature() {
    // The last 64 bytes are taken as the signature, so the message loses its
    // last byte to the signature: nothing lines up any more.
    let (payload, footer) = split(&token());
    let truncated = join(&payload[..payload.len() - 1], &footer);
    assert_eq!(check(&truncated), Err(TokenError::BadSignature));
}

#[test]
fn payload_shorter_than_a_signature_is_too_short() {
    let (payload, footer) = split(&token());
    let signature_only = &payload[payload.len() - 64..];
    // Exactly a signature and no message: well-formed, but not our signature.
    assert_eq!(
        check(&join(signature_only, &footer)),
        Err(TokenError::BadSignature)
    );
    let short = &signature_only[1..];
    assert_eq!(
        check(&join(short, &footer)),
        malformed(Malformed::PayloadTooShort { len: 63 })
    );
}

#[test]
fn truncated_token_string_is_rejected() {
    let token = token_for(MESSAGE, b"");
    // One character fewer is either an impossible base64 length, a payload
    // with non-zero trailing bits, or a shorter signature: never valid.
    for cut in 1..=4 {
        let truncated = &token[..token.len() - cut];
        assert!(
            check(truncated).is_err(),
            "cut {cut}: {:?}",
            check(truncated)
        );
    }
}

#[test]
fn header_v4_local_is_wrong_header() {
    let token = token().replacen("v4.public.", "v4.local.", 1);
    let error = check(&token).expect_err("v4.local refused");
    assert_eq!(
        error,
        TokenError::WrongHeader {
            found: "v4.local.".into()
        }
    );
    assert!(
        error
            .to_string()
            .contains("only \"v4.public.\" is accepted"),
        "{error}"
    );
}

#[test]
fn header_v3_public_is_wrong_header() {
    let token = token().replacen("v4.public.", "v3.public.", 1);
    let want = TokenError::WrongHeader {
        found: "v3.public.".into(),
    };
    assert_eq!(check(&token), Err(want));
}

#[test]
fn header_v2_public_is_wrong_header() {
    let token = token().replacen("v4.public.", "v2.public.", 1);
    let want = TokenError::WrongHeader {
        found: "v2.public.".into(),
    };
    assert_eq!(check(&token), Err(want));
}

#[test]
fn header_upper_case_is_wrong_header() {
    let token = token().replacen("v4.public.", "V4.PUBLIC.", 1);
    let want = TokenError::WrongHeader {
        found: "V4.PUBLIC.".into(),
    };
    assert_eq!(check(&token), Err(want));
}

#[test]
fn header_mixed_case_is_wrong_header() {
    let token = token().replacen("v4.public.", "v4.Public.", 1);
    let want = TokenError::WrongHeader {
        found: "v4.Public.".into(),
    };
    assert_eq!(check(&token), Err(want));
}

#[test]
fn header_with_leading_space_is_wrong_header() {
    let token = format!(" {}", token());
    assert!(matches!(check(&token), Err(TokenError::WrongHeader { .. })));
}

#[test]
fn header_without_its_dot_is_wrong_header() {
    let want = TokenError::WrongHeader {
        found: "v4.public".into(),
    };
    assert_eq!(check("v4.public"), Err(want));
}

#[test]
fn wrong_header_echo_is_short() {
    let long = "x".repeat(1000);
    let Err(TokenError::WrongHeader { found }) = check(&long) else {
        panic!("garbage must be a wrong header");
    };
    assert_eq!(found.chars().count(), 16);
}

/// A message whose token needs base64 padding in the payload and the footer
/// (`(len + 64) % 3 == 1` gives `==`).
#[test]
fn padded_payload_is_malformed() {
    let message = b"mmm".to_vec(); // 3 + 64 = 67 bytes.
    assert_eq!((message.len() + 64) % 3, 1);
    let token = token_for(&message, b"");
    assert_eq!(check(&token).map(|v| v.message), Ok(message));
    assert_eq!(
        check(&format!("{token}==")),
        malformed(Malformed::PayloadEncoding)
    );
    assert_eq!(
        check(&format!("{token}=")),
        malformed(Malformed::PayloadEncoding)
    );
}

#[test]
fn padded_footer_is_malformed() {
    let footer = b"kid:1"; // 5 bytes: padded base64 ends in `=`.
    let token = token_for(MESSAGE, footer);
    assert_eq!(check(&token).map(|v| v.footer), Ok(footer.to_vec()));
    assert_eq!(
        check(&format!("{token}=")),
        malformed(Malformed::FooterEncoding)
    );
}

/// The standard alphabet spells 62 and 63 as `+` and `/` where base64url has
/// `-` and `_`; the same bytes in the standard alphabet must be refused.
#[test]
fn standard_alphabet_is_malformed() {
    // Find a message whose token uses both `-` and `_` in its payload.
    let (token, message) = (0u32..)
        .map(|n| {
            let message = format!("{{\"n\":{n}}}").into_bytes();
            (token_for(&message, b""), message)
        })
        .find(|(token, _)| token[HEADER.len()..].contains('-') && token.contains('_'))
        .expect("some small message encodes with both - and _");
    assert_eq!(check(&token).map(|v| v.message), Ok(message));

    let plus = token.replacen('-', "+", 1);
    assert_eq!(check(&plus), malformed(Malformed::PayloadEncoding));
    let slash = token.replacen('_', "/", 1);
    assert_eq!(check(&slash), malformed(Malformed::PayloadEncoding));

    // The whole payload in standard base64, unpadded: still refused.
    let (payload, _) = split(&token);
    let standard = format!(
        "{HEADER}{}",
        STANDARD.encode(&payload).trim_end_matches('=')
    );
    assert_ne!(standard, token);
    assert_eq!(check(&standard), malformed(Malformed::PayloadEncoding));
}

#[test]
fn non_alphabet_characters_are_malformed() {
    let token = token_for(MESSAGE, b"");
    let at = HEADER.len() + 5;
    for bad in ["*", " ", "\n", "\0", "é", "%", "~", "!"] {
        let mut corrupted = token.clone();
        corrupted.replace_range(at..at + 1, bad);
        assert_eq!(
            check(&corrupted),
            malformed(Malformed::PayloadEncoding),
            "{bad:?}"
        );
    }
}

/// When the payload length is not a multiple of 3, the last character
/// carries unused low bits. Setting them decodes to the same bytes under a
/// lax decoder; a second spelling of the token must be refused.
#[test]
fn non_zero_trailing_bits_are_malformed() {
    let message = b"mmm".to_vec(); // 67-byte payload, % 3 == 1: 4 unused bits.
    assert_eq!((message.len() + 64) % 3, 1);
    let token = token_for(&message, b"");
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = token.as_bytes()[token.len() - 1];
    let index = ALPHABET.iter().position(|&c| c == last).expect("base64url");
    assert_eq!(
        index & 0x0f,
        0,
        "canonical encoding leaves the low bits zero"
    );
    let sloppy = char::from(ALPHABET[index | 0x01]);
    let non_canonical = format!("{}{sloppy}", &token[..token.len() - 1]);
    assert_eq!(check(&non_canonical), malformed(Malformed::PayloadEncoding));
}

#[test]
fn wrong_implicit_assertion_is_bad_signature() {
    let token = token();
    for implicit in [
        &b""[..],
        b"tollgate-licencf",
        b"tollgate-licence\0",
        b"other",
    ] {
        assert_eq!(
            verify(&public(), &token, Some(FOOTER), implicit),
            Err(TokenError::BadSignature),
            "{implicit:?}"
        );
    }
}

#[test]
fn expected_footer_absent_from_token_is_mismatch() {
    let token = token_for(MESSAGE, b"");
    assert_eq!(
        verify(&public(), &token, Some(FOOTER), IMPLICIT),
        Err(TokenError::FooterMismatch)
    );
}

#[test]
fn unexpected_footer_in_token_is_mismatch() {
    // `Some(b"")` means "this token must have no footer".
    assert_eq!(
        verify(&public(), &token(), Some(b""), IMPLICIT),
        Err(TokenError::FooterMismatch)
    );
}

#[test]
fn different_footer_is_mismatch() {
    assert_eq!(
        verify(
            &public(),
            &token(),
            Some(br#"{"kid":"origin-2"}"#),
            IMPLICIT
        ),
        Err(TokenError::FooterMismatch)
    );
}

#[test]
fn token_over_the_limit_is_too_long() {
    let long = format!("{HEADER}{}", "A".repeat(TOKEN_BYTES_MAX));
    let error = check(&long).expect_err("over the limit");
    assert_eq!(
        error,
        TokenError::TooLong {
            len: TOKEN_BYTES_MAX + HEADER.len(),
            max: TOKEN_BYTES_MAX
        }
    );
    assert!(error.to_string().contains("65536"), "{error}");
    assert_eq!(footer_unverified(&long), Err(error));
}

/// The limit is exact on both sides: the largest message that fits signs and
/// verifies, one byte more is refused by `sign` itself.
#[test]
fn limit_is_exact_for_sign_and_verify() {
    // 10 (header) + base64(49_080 + 64 bytes) = 10 + 65_526 = 65_536.
    let fits = vec![b'x'; 49_080];
    let token = sign(&secret(), &fits, b"", IMPLICIT).expect("fits exactly");
    assert_eq!(token.len(), TOKEN_BYTES_MAX);
    assert_eq!(check(&token).map(|v| v.message), Ok(fits));

    let too_big = vec![b'x'; 49_081];
    assert_eq!(
        sign(&secret(), &too_big, b"", IMPLICIT),
        Err(TokenError::TooLong {
            len: TOKEN_BYTES_MAX + 1,
            max: TOKEN_BYTES_MAX
        })
    );
}

#[test]
fn empty_token_is_empty() {
    assert_eq!(check(""), Err(TokenError::Empty));
    assert_eq!(footer_unverified(""), Err(TokenError::Empty));
}

#[test]
fn header_only_is_too_short() {
    assert_eq!(
        check(HEADER),
        malformed(Malformed::PayloadTooShort { len: 0 })
    );
}

#[test]
fn header_and_dot_only_is_empty_footer() {
    assert_eq!(check("v4.public.."), malformed(Malformed::EmptyFooter));
}

#[test]
fn too_many_sections_are_malformed() {
    let with_footer = token();
    assert_eq!(
        check(&format!("{with_footer}.e30")),
        malformed(Malformed::TooManySections)
    );
    assert_eq!(
        check(&format!("{with_footer}.")),
        malformed(Malformed::TooManySections)
    );
    assert_eq!(
        check("v4.public.a.b.c"),
        malformed(Malformed::TooManySections)
    );
}

#[test]
fn five_dotted_parts_is_wrong_header() {
    let want = TokenError::WrongHeader {
        found: "a.b.".into(),
    };
    assert_eq!(check("a.b.c.d.e"), Err(want));
}

#[test]
fn trailing_dot_without_footer_is_empty_footer() {
    // `sign` writes no section for an empty footer, so `.` would be a second
    // spelling of the same token.
    let token = token_for(MESSAGE, b"");
    assert_eq!(
        check(&format!("{token}.")),
        malformed(Malformed::EmptyFooter)
    );
}

#[test]
fn trailing_garbage_is_rejected() {
    let token = token();
    let cases: [(&str, Result<Verified, TokenError>); 5] = [
        ("=", malformed(Malformed::FooterEncoding)),
        ("\n", malformed(Malformed::FooterEncoding)),
        (" ", malformed(Malformed::FooterEncoding)),
        ("%00", malformed(Malformed::FooterEncoding)),
        // Valid base64 that adds three bytes to the footer.
        ("AAAA", Err(TokenError::BadSignature)),
    ];
    for (garbage, want) in cases {
        assert_eq!(check(&format!("{token}{garbage}")), want, "{garbage:?}");
    }
    // Without a footer the garbage lands in the payload instead.
    let bare = token_for(MESSAGE, b"");
    assert_eq!(check(&format!("{bare}AAAA")), Err(TokenError::BadSignature));
    assert_eq!(
        check(&format!("{bare}\r\n")),
        malformed(Malformed::PayloadEncoding)
    );
}

#[test]
fn other_key_is_bad_signature() {
    let other = SigningKey::from_bytes(&[43u8; 32]).verifying_key();
    assert_eq!(
        verify(&other, &token(), Some(FOOTER), IMPLICIT),
        Err(TokenError::BadSignature)
    );
}

/// Why `verify_strict`: with the identity point as public key, the signature
/// (R = identity, s = 0) satisfies plain Ed25519 verification for every
/// message. A forger needs no secret at all; strict verification refuses it.
#[test]
fn weak_key_forgery_is_bad_signature() {
    let mut identity = [0u8; 32];
    identity[0] = 1; // Compressed Edwards encoding of the neutral point.
    let weak = VerifyingKey::from_bytes(&identity).expect("decodes");
    let mut forged = [0u8; 64];
    forged[0] = 1; // R = identity, s = 0.

    let message = br#"{"sub":"attacker","plan":"everything"}"#;
    let mut payload = message.to_vec();
    payload.extend_from_slice(&forged);
    let token = join(&payload, b"");

    // The pre-authentication encoding of this token, as the spec defines it.
    let mut m2 = 4u64.to_le_bytes().to_vec();
    for piece in [HEADER.as_bytes(), message, b"", b""] {
        m2.extend_from_slice(&(piece.len() as u64).to_le_bytes());
        m2.extend_from_slice(piece);
    }
    // The forgery is real: lax verification accepts it...
    assert!(weak.verify(&m2, &Signature::from_bytes(&forged)).is_ok());
    // ...and this crate does not.
    assert_eq!(
        verify(&weak, &token, None, b""),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn footer_unverified_reads_but_does_not_trust() {
    assert_eq!(footer_unverified(&token()), Ok(FOOTER.to_vec()));
    assert_eq!(footer_unverified(&token_for(MESSAGE, b"")), Ok(Vec::new()));

    // A footer swapped in by an attacker is returned as-is (that is what
    // "unverified" means) and then fails verification.
    let (payload, _) = split(&token());
    let forged = join(&payload, br#"{"kid":"attacker"}"#);
    assert_eq!(
        footer_unverified(&forged),
        Ok(br#"{"kid":"attacker"}"#.to_vec())
    );
    assert_eq!(check(&forged), Err(TokenError::BadSignature));

    // Structure is still checked.
    assert_eq!(
        footer_unverified(&format!("{}=", token())),
        Err(TokenError::Malformed(Malformed::FooterEncoding))
    );
    assert!(matches!(
        footer_unverified("v4.local.abc.def"),
        Err(TokenError::WrongHeader { .. })
    ));
}

#[test]
fn error_codes_are_distinct_and_stable() {
    let errors = [
        TokenError::Empty,
        TokenError::TooLong { len: 1, max: 0 },
        TokenError::WrongHeader { found: "x".into() },
        TokenError::Malformed(Malformed::PayloadEncoding),
        TokenError::Malformed(Malformed::PayloadTooShort { len: 0 }),
        TokenError::Malformed(Malformed::EmptyFooter),
        TokenError::Malformed(Malformed::FooterEncoding),
        TokenError::Malformed(Malformed::TooManySections),
        TokenError::FooterMismatch,
        TokenError::BadSignature,
    ];
    let codes: std::collections::BTreeSet<&str> = errors.iter().map(TokenError::code).collect();
    assert_eq!(codes.len(), errors.len(), "{codes:?}");
    assert!(codes.iter().all(|code| code.starts_with("token_")));
    assert_eq!(TokenError::BadSignature.code(), "token_bad_signature");
}
