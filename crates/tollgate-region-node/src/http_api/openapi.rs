//! The HTTP/JSON check API's OpenAPI document, generated from the handlers'
//! annotations and the wire types (so a schema cannot drift from what the
//! code accepts). `openapi.json` at the crate root is the checked-in copy;
//! a test fails when it differs from the generated one, or when a route in
//! [`super::ROUTES`] is not documented.

use super::wire;
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// An RFC 9457 problem document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    /// Always `about:blank`.
    #[schema(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    /// Stable, as a gRPC error's `tollgate-error-code`: e.g.
    /// `CREDENTIAL_REQUIRED`, `CREDENTIAL_INVALID`, `CREDENTIAL_SCOPE`,
    /// `INVALID_ARGUMENT`, `MESSAGE_TOO_LARGE`, `UNSUPPORTED_MEDIA_TYPE`,
    /// `RATE_LIMITED`, `RESOURCE_EXHAUSTED`, `OVERLOADED`, `TIMEOUT`,
    /// `REVISION_NOT_APPLIED`, `UNAVAILABLE`, `NOT_FOUND`,
    /// `METHOD_NOT_ALLOWED`.
    code: String,
    detail: String,
}

/// The refusals both check routes share, each a problem document.
struct Refusals;

const REFUSALS: &[(&str, &str)] = &[
    ("400", "Malformed JSON, unknown fields or invalid values (`INVALID_ARGUMENT`)"),
    ("401", "No or a wrong credential (`CREDENTIAL_REQUIRED`, `CREDENTIAL_INVALID`, `CREDENTIAL_REVOKED`)"),
    ("403", "The credential does not cover it (`CREDENTIAL_SCOPE`)"),
    ("413", "A body over 256 KiB (`MESSAGE_TOO_LARGE`)"),
    ("415", "Not `application/json` (`UNSUPPORTED_MEDIA_TYPE`)"),
    ("429", "Over the caller's rate (`RATE_LIMITED`, with `Retry-After`)"),
    ("503", "Overloaded, timed out or not ready: try another node (`OVERLOADED`, `TIMEOUT`, `UNAVAILABLE`; with `Retry-After`)"),
    ("504", "`at_least_revision` not applied in time (`REVISION_NOT_APPLIED`)"),
];

impl Modify for Refusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        for path in ["/v1/check", "/v1/checks"] {
            let Some(operation) = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.post.as_mut())
            else {
                continue;
            };
            for (status, description) in REFUSALS {
                let content = ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build();
                operation.responses.responses.insert(
                    status.to_string(),
                    ResponseBuilder::new()
                        .description(*description)
                        .content("application/problem+json", content)
                        .build()
                        .into(),
                );
            }
        }
    }
}

struct Credential;

impl Modify for Credential {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "application_credential",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tgc_<id>.<secret>")
                    .description(Some(
                        "An application credential (POST /v1/credentials at the origin).",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate region check API",
        description = "Entitlement checks over HTTP/JSON, on every region node's check port \
            beside gRPC and answered by the same code (sdk/PROTOCOL.md). A denial is a \
            decision (200); errors are problem documents.",
        version = "1"
    ),
    paths(super::check, super::batch_check, super::watch, super::document),
    components(schemas(
        wire::CheckBody,
        wire::LocationBody,
        wire::BatchBody,
        wire::DecisionBody,
        wire::SeatsBody,
        wire::UpgradeHintBody,
        wire::CheckAnswerBody,
        wire::BatchResult,
        wire::ItemError,
        wire::BatchAnswerBody,
        wire::StateEvent,
        wire::ChangesEvent,
        wire::HeartbeatEvent,
        Problem,
    )),
    modifiers(&Credential, &Refusals),
    security(("application_credential" = []))
)]
struct Document;

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    Document::openapi()
}

/// The document as served: pretty JSON with a final newline, as checked in.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut text = document()
            .to_pretty_json()
            .expect("the OpenAPI document serialises");
        text.push('\n');
        text
    })
}
