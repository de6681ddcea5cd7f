//! The crypto provider every TLS config here is built with.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The one crypto provider every config uses: ring. rustls 0.23.48 marks
/// it deprecated for lacking post-quantum key exchange; aws-lc-rs has it but
/// needs cmake (and more) to build, which the static `FROM scratch` image
/// build does not have. Revisit when ring gains ML-KEM.
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
