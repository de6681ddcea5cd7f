//! The OpenAPI document, generated from the same route table that builds
//! the router (so a route cannot exist without its documentation, or the
//! other way round) and from the model's types (so a schema cannot drift
//! from what the code accepts). `openapi.json` at the crate root is the
//! checked-in copy; a test fails when it differs from the generated one.

use crate::problem::Problem;
use crate::wire::WriteResult;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ComponentsBuilder, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    Content, HttpMethod, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr, Required,
    Schema,
};
use utoipa::{PartialSchema, ToSchema};

pub type Schemas = Vec<(String, RefOr<Schema>)>;

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Post,
    Delete,
}

/// A schema for the OpenAPI document: how to reference it, and how to
/// collect it (and what it refers to) into the components.
pub struct SchemaRef {
    pub reference: utoipa::openapi::RefOr<utoipa::openapi::Schema>,
    pub collect: fn(&mut Schemas),
}

/// How a route treats a customer account's API key (a tenant key is
/// treated by its scopes alone). The route table says it once per route;
/// the router enforces it before the handler runs and the document shows
/// it as `x-tollgate-account-keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKeys {
    /// 403: the tenant's own route (catalog writes, orders, audit, keys,
    /// webhooks, status, anything listing many accounts). The default, so a
    /// route nobody marked is closed to account keys.
    Refused,
    /// Allowed only when the `{account}` path parameter is the key's own
    /// account (403 otherwise); objects under it are looked up within it.
    OwnAccount,
    /// Allowed; the answer holds only the key's own account.
    Filtered,
    /// Allowed: the answer holds no account's data.
    Any,
}

impl AccountKeys {
    /// The value of `x-tollgate-account-keys`.
    pub fn name(self) -> &'static str {
        match self {
            AccountKeys::Refused => "refused",
            AccountKeys::OwnAccount => "own-account",
            AccountKeys::Filtered => "filtered",
            AccountKeys::Any => "any",
        }
    }

    fn sentence(self) -> &'static str {
        match self {
            AccountKeys::Refused => "A customer account's key is refused (403).",
            AccountKeys::OwnAccount => {
                "A customer account's key may call it only for its own account (403 otherwise)."
            }
            AccountKeys::Filtered => "A customer account's key sees only its own account.",
            AccountKeys::Any => "A customer account's key may call it.",
        }
    }
}

/// The path parameter that names an account; an
/// [`AccountKeys::OwnAccount`] route must have it.
pub const ACCOUNT_PARAM: &str = "account";

/// What the OpenAPI document says about a route.
pub struct Doc {
    pub summary: String,
    pub tag: &'static str,
    /// The scope needed; `None` for public routes.
    pub scope: Option<tollgate_origin::Scope>,
    /// Query parameters and what they mean.
    pub query: &'static [(&'static str, &'static str)],
    pub body: Option<SchemaRef>,
    /// `None`: a plain-text body.
    pub ok: Option<SchemaRef>,
    pub ok_status: u16,
    /// How a customer account's key is treated (only for routes with a
    /// scope).
    pub account_keys: AccountKeys,
}

impl Doc {
    pub fn new(
        tag: &'static str,
        summary: impl Into<String>,
        scope: Option<tollgate_origin::Scope>,
    ) -> Doc {
        Doc {
            summary: summary.into(),
            tag,
            scope,
            query: &[],
            body: None,
            ok: Some(SchemaRef::of::<WriteResult>()),
            ok_status: 200,
            account_keys: AccountKeys::Refused,
        }
    }
    pub fn account_keys(mut self, account_keys: AccountKeys) -> Doc {
        self.account_keys = account_keys;
        self
    }
    pub fn body(mut self, body: SchemaRef) -> Doc {
        self.body = Some(body);
        self
    }
    pub fn ok(mut self, ok: SchemaRef) -> Doc {
        self.ok = Some(ok);
        self
    }
    pub fn query(mut self, query: &'static [(&'static str, &'static str)]) -> Doc {
        self.query = query;
        self
    }
}

impl SchemaRef {
    /// A named schema, referenced from the components.
    pub fn of<T: ToSchema>() -> SchemaRef {
        SchemaRef {
            reference: Ref::from_schema_name(T::name()).into(),
            collect: |schemas| {
                schemas.push((T::name().into(), T::schema()));
                T::schemas(schemas);
            },
        }
    }

    /// One page of a list of `T`.
    pub fn page_of<T: ToSchema>() -> SchemaRef {
        SchemaRef {
            reference: ObjectBuilder::new()
                .property(
                    "items",
                    ArrayBuilder::new().items(Ref::from_schema_name(T::name())),
                )
                .required("items")
                .property(
                    "next_after",
                    ObjectBuilder::new()
                        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                        .description(Some(
                            "Pass as `after` for the next page; absent on the last page.",
                        )),
                )
                .into(),
            collect: |schemas| {
                schemas.push((T::name().into(), T::schema()));
                T::schemas(schemas);
            },
        }
    }

    /// A JSON array of `T`.
    pub fn array_of<T: ToSchema>() -> SchemaRef {
        SchemaRef {
            reference: ArrayBuilder::new()
                .items(Ref::from_schema_name(T::name()))
                .into(),
            collect: |schemas| {
                schemas.push((T::name().into(), T::schema()));
                T::schemas(schemas);
            },
        }
    }
}

fn json(schema: RefOr<Schema>) -> Content {
    Content::new(Some(schema))
}

/// `PUT /v1/products/{id}` -> `put_products_id`.
fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<&str> = path
        .split(['/', '.', '-', '{', '}'])
        .filter(|w| !w.is_empty() && *w != "v1")
        .collect();
    format!("{}_{}", method, words.join("_"))
}

fn operation(
    method: &str,
    path: &str,
    doc: &Doc,
    schemas: &mut Schemas,
) -> utoipa::openapi::path::Operation {
    let mut op = OperationBuilder::new()
        .summary(Some(doc.summary.clone()))
        .tag(doc.tag)
        .operation_id(Some(operation_id(method, path)));
    for segment in path.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(SchemaType::Type(Type::String))
                            .max_length(Some(tollgate_model::ID_LEN_MAX)),
                    )),
            );
        }
    }
    for (name, description) in doc.query {
        op = op.parameter(
            ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(*description))
                .schema(Some(
                    ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)),
                )),
        );
    }
    if let Some(body) = &doc.body {
        (body.collect)(schemas);
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content("application/json", json(body.reference.clone()))
                .required(Some(Required::True))
                .build(),
        ));
    }
    let ok = match &doc.ok {
        Some(schema) => {
            (schema.collect)(schemas);
            ResponseBuilder::new()
                .description("Success.")
                .content("application/json", json(schema.reference.clone()))
        }
        None => ResponseBuilder::new().description("Success.").content(
            "text/plain",
            Content::new(Some(
                ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)),
            )),
        ),
    };
    op = op.response(doc.ok_status.to_string(), ok.build());
    let problem = ResponseBuilder::new()
        .description("A problem document with a stable `code`.")
        .content(
            "application/problem+json",
            json(Ref::from_schema_name("Problem").into()),
        )
        .build();
    op = op.response("default", problem);
    if let Some(scope) = doc.scope {
        op = op
            .security(SecurityRequirement::new("api_key", Vec::<String>::new()))
            .description(Some(format!(
                "Requires an API key with the scope `{}` (or `admin`). {}",
                scope.name(),
                doc.account_keys.sentence()
            )))
            .extensions(Some(
                ExtensionsBuilder::new()
                    .add("x-tollgate-account-keys", doc.account_keys.name())
                    .build(),
            ));
    }
    op.build()
}

/// The document for a route table's docs.
pub fn document<'a>(routes: impl IntoIterator<Item = (&'a str, Method, &'a Doc)>) -> OpenApi {
    let mut schemas: Schemas = vec![("Problem".into(), Problem::schema())];
    let mut paths = PathsBuilder::new();
    for (path, method, doc) in routes {
        let (method, name) = match method {
            Method::Get => (HttpMethod::Get, "get"),
            Method::Put => (HttpMethod::Put, "put"),
            Method::Post => (HttpMethod::Post, "post"),
            Method::Delete => (HttpMethod::Delete, "delete"),
        };
        let op = operation(name, path, doc, &mut schemas);
        paths = paths.path(path, PathItem::new(method, op));
    }
    schemas.sort_by(|a, b| a.0.cmp(&b.0));
    schemas.dedup_by(|a, b| a.0 == b.0);
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tg_<key id>.<secret>")
                    .build(),
            ),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Tollgate origin API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Catalog, accounts, entitlements, orders, access requests, audit and API keys. \
                     Every write commits under the next origin revision, returned in the body and the \
                     X-Tollgate-Revision header; X-Tollgate-Reason (at most 1024 bytes) is recorded in \
                     the audit log. Errors are application/problem+json with a stable code. An API key \
                     belongs to the tenant or to one customer account; x-tollgate-account-keys on each \
                     operation says how an account's key is treated (refused, own-account: only with its \
                     own account in the path, filtered: sees only its own account, any).",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .build()
}
