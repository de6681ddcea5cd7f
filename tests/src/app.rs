//! The application credential every test client presents on region check
//! ports, as applications do in production: one per test process, made
//! with the origin's own generator, committed by [`crate::TestOrigin`] at
//! start (through its Raft log, as the REST route would) and added to every
//! call of a [`crate::channel`].

use std::sync::OnceLock;
use tollgate_api::app_credentials::{issue_credential, NewCredential};
use tollgate_model::{AppCredential, UnixSeconds};
use tonic::service::interceptor::InterceptedService;

/// The tests' credential: its token and the record origins hold.
fn issued() -> &'static (String, AppCredential) {
    static ISSUED: OnceLock<(String, AppCredential)> = OnceLock::new();
    ISSUED.get_or_init(|| {
        issue_credential(NewCredential::everything("tests"), UnixSeconds(0))
            .expect("a credential for the tests")
    })
}

/// The token test clients present (`tgc_<id>.<secret>`): every account,
/// product and verb.
pub fn test_credential() -> &'static str {
    &issued().0
}

/// The record a test origin commits so its regions accept the token.
pub fn test_credential_record() -> AppCredential {
    issued().1.clone()
}

/// The SDK's interceptor, made from the tests' credential or any token.
pub use tollgate_sdk::WithCredential;

/// An interceptor adding the tests' credential.
pub fn with_test_credential() -> WithCredential {
    with_credential(Some(test_credential()))
}

/// An interceptor adding `token` as it is (malformed ones included), or
/// nothing.
pub fn with_credential(token: Option<&str>) -> WithCredential {
    match token {
        None => WithCredential::none(),
        Some(token) => WithCredential::new(token).expect("a token that fits a header"),
    }
}

/// A channel whose calls carry a credential.
pub type AppChannel = InterceptedService<tonic::transport::Channel, WithCredential>;
