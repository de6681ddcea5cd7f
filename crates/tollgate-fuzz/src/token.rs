//! PASETO `v4.public` tokens (`tollgate-token`).

use crate::fixtures::{mutate, origin_secret};
use crate::input::Input;
use tollgate_token::{footer_unverified, sign, verify, TokenError, TOKEN_BYTES_MAX};

/// Mode 0: any text as a token. Whatever verifies under the fixed key is
/// exactly the token `sign` makes of its message and footer (one spelling
/// per token), and its footer is what `footer_unverified` read.
///
/// Mode 1: a token signed over fuzzed message, footer and implicit
/// assertion verifies to them; with another implicit assertion or another
/// expected footer it is refused; altered in any way, it is refused.
pub fn token(data: &[u8]) {
    let mut input = Input::new(data);
    match input.u8() % 2 {
        0 => raw(&String::from_utf8_lossy(input.rest())),
        _ => {
            let op = input.u8();
            let position = input.u16();
            let byte = input.u8();
            let message = input.field();
            let footer = input.field();
            let implicit = input.field();
            signed(message, footer, implicit, op, position, byte);
        }
    }
}

fn raw(text: &str) {
    let key = origin_secret().verifying_key();
    let footer = footer_unverified(text);
    match verify(&key, text, None, b"") {
        Ok(verified) => {
            assert_eq!(footer.as_ref(), Ok(&verified.footer));
            let again = sign(origin_secret(), &verified.message, &verified.footer, b"")
                .expect("a verified token re-signs");
            assert_eq!(again, text, "a verified token has exactly one spelling");
        }
        Err(error) => {
            assert!(error.code().starts_with("token_"));
            if text.len() > TOKEN_BYTES_MAX {
                assert!(matches!(error, TokenError::TooLong { .. }), "{error:?}");
            }
        }
    }
}

fn signed(message: &[u8], footer: &[u8], implicit: &[u8], op: u8, position: u16, byte: u8) {
    let key = origin_secret().verifying_key();
    let token = match sign(origin_secret(), message, footer, implicit) {
        Ok(token) => token,
        Err(TokenError::TooLong { len, max }) => {
            assert!(len > max);
            return;
        }
        Err(error) => panic!("sign refused a token within the limit: {error:?}"),
    };
    assert!(token.len() <= TOKEN_BYTES_MAX);
    let verified = verify(&key, &token, Some(footer), implicit).expect("a signed token verifies");
    assert_eq!(verified.message, message);
    assert_eq!(verified.footer, footer);
    assert_eq!(footer_unverified(&token).as_deref(), Ok(footer));

    let mut other_implicit = implicit.to_vec();
    other_implicit.push(byte);
    assert_eq!(
        verify(&key, &token, None, &other_implicit),
        Err(TokenError::BadSignature)
    );
    let mut other_footer = footer.to_vec();
    other_footer.push(byte);
    assert_eq!(
        verify(&key, &token, Some(&other_footer), implicit),
        Err(TokenError::FooterMismatch)
    );

    let altered = mutate(token.as_bytes(), op, position, byte);
    if altered != token.as_bytes() {
        let altered = String::from_utf8_lossy(&altered);
        if let Ok(v) = verify(&key, &altered, None, implicit) {
            panic!("an altered token verified: {altered:?} -> {v:?}");
        }
    }
}
