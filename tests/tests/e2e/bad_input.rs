//! Bad input, one table: every row is a request a careless or hostile
//! client could send, to the origin's REST API or a region node's check
//! port, with the refusal it must get (HTTP status or gRPC code, and the
//! stable error code; REST errors as `application/problem+json`) and proof
//! that nothing was half-applied: the origin's head revision and audit log
//! and the region's revision are where they were.

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use tollgate_origin_node::OriginConfig;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_region_node::RegionNode;
use tollgate_tests::{init_tracing, start_region, wait_until, AppChannel, TestOrigin};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(30);
const CHECK_PATH: &str = "/tollgate.check.v1.CheckService/Check";

/// Which API key a REST row presents.
#[derive(Debug, Clone, Copy)]
enum Key {
    Admin,
    /// Scope `read` only.
    Read,
}

/// What a row sends.
enum Request {
    Rest {
        method: Method,
        /// Sent as written: percent-encodings stay.
        path: String,
        key: Key,
        content_type: Option<&'static str>,
        body: Vec<u8>,
        /// Extra headers (name, value).
        headers: Vec<(String, String)>,
    },
    /// A check, as any client builds it.
    Check(Box<pb::CheckRequest>),
    /// A check whose message bytes are these (tonic frames them).
    CheckBytes(Vec<u8>),
    /// The HTTP/2 body of a check call, the gRPC frame header included.
    CheckBody(Vec<u8>),
}

/// The answer a row must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// An HTTP error as problem+json with this `code`.
    Problem(u16, &'static str),
    /// A gRPC error with this `tollgate-error-code`.
    Grpc(tonic::Code, &'static str),
    /// Answered (a decision), nothing written.
    GrpcOk,
}

struct Row {
    name: &'static str,
    request: Request,
    expect: Expect,
}

/// What a row got.
#[derive(Debug)]
enum Answer {
    Http {
        status: u16,
        content_type: String,
        body: String,
    },
    Grpc {
        code: tonic::Code,
        error_code: Option<String>,
        message: String,
    },
    GrpcOk,
    /// No answer at all (the connection failed).
    Transport(String),
}

/// What must not move.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Marks {
    origin_head: u64,
    audit_records: usize,
    region_revision: u64,
}

struct World {
    origin: TestOrigin,
    region: Vec<RegionNode>,
    read_token: String,
    check: CheckServiceClient<AppChannel>,
    channel: AppChannel,
}

impl World {
    async fn marks(&self) -> Marks {
        let (status, audit) = self
            .origin
            .rest(Method::GET, "/v1/audit?limit=500", json!(null))
            .await;
        assert_eq!(status, StatusCode::OK, "{audit}");
        assert!(audit["next_after"].is_null(), "the audit log fits a page");
        Marks {
            origin_head: self.origin.node.head_revision(),
            audit_records: audit["items"].as_array().map_or(0, Vec::len),
            region_revision: self.region[0].applied_revision(),
        }
    }

    async fn send(&mut self, request: &Request) -> Answer {
        match request {
            Request::Rest {
                method,
                path,
                key,
                content_type,
                body,
                headers,
            } => {
                let token = match key {
                    Key::Admin => self.origin.token.clone(),
                    Key::Read => self.read_token.clone(),
                };
                let url = format!("{}{path}", self.origin.base());
                let mut builder = self
                    .origin
                    .http()
                    .request(method.clone(), url)
                    .bearer_auth(token)
                    .body(body.clone());
                if let Some(content_type) = content_type {
                    builder = builder.header("content-type", *content_type);
                }
                for (name, value) in headers {
                    builder = builder.header(name.as_str(), value.as_str());
                }
                match builder.send().await {
                    Ok(response) => Answer::Http {
                        status: response.status().as_u16(),
                        content_type: response
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string(),
                        body: response.text().await.unwrap_or_default(),
                    },
                    Err(error) => Answer::Transport(format!("{error:?}")),
                }
            }
            Request::Check(check) => grpc_answer(self.check.check(*check.clone()).await.map(drop)),
            Request::CheckBytes(bytes) => {
                let mut grpc = tonic::client::Grpc::new(self.channel.clone());
                if let Err(error) = grpc.ready().await {
                    return Answer::Transport(error.to_string());
                }
                let answer = grpc
                    .unary(
                        tonic::Request::new(bytes.clone()),
                        tonic::codegen::http::uri::PathAndQuery::from_static(CHECK_PATH),
                        RawCodec,
                    )
                    .await;
                grpc_answer(answer.map(drop))
            }
            Request::CheckBody(body) => raw_call(self.channel.clone(), body.clone()).await,
        }
    }
}

fn grpc_answer(result: Result<(), tonic::Status>) -> Answer {
    match result {
        Ok(()) => Answer::GrpcOk,
        Err(status) => Answer::Grpc {
            code: status.code(),
            error_code: status
                .metadata()
                .get("tollgate-error-code")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            message: status.message().chars().take(300).collect(),
        },
    }
}

/// Message bytes as they are: what a client with a broken encoder, or an
/// attacker, sends.
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// One check call whose whole HTTP/2 body is `body` (frame headers
/// included), read as far as its status in the response headers (where a
/// refusal before any message travels).
async fn raw_call(mut channel: AppChannel, body: Vec<u8>) -> Answer {
    use tonic::codegen::http;
    use tonic::codegen::Service;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost{CHECK_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(axum::body::Body::from(body)))
        .expect("a request");
    if let Err(error) = std::future::poll_fn(|cx| channel.poll_ready(cx)).await {
        return Answer::Transport(error.to_string());
    }
    let response = match channel.call(request).await {
        Ok(response) => response,
        Err(error) => return Answer::Transport(error.to_string()),
    };
    let headers = response.headers();
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return Answer::Transport(format!(
            "no status in the response headers: the server read on ({:?})",
            response.status()
        ));
    };
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if code == 0 {
        return Answer::GrpcOk;
    }
    Answer::Grpc {
        code: tonic::Code::from_i32(code),
        error_code: text("tollgate-error-code"),
        message: text("grpc-message").unwrap_or_default(),
    }
}

fn rest(method: Method, path: impl Into<String>, body: impl Into<Vec<u8>>) -> Request {
    Request::Rest {
        method,
        path: path.into(),
        key: Key::Admin,
        content_type: Some("application/json"),
        body: body.into(),
        headers: Vec::new(),
    }
}

fn rest_as(key: Key, method: Method, path: &str, body: impl Into<Vec<u8>>) -> Request {
    match rest(method, path, body) {
        Request::Rest {
            method,
            path,
            content_type,
            body,
            headers,
            ..
        } => Request::Rest {
            method,
            path,
            key,
            content_type,
            body,
            headers,
        },
        other => other,
    }
}

fn json_bytes(value: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&value).expect("JSON")
}

/// An order for `acme` of the starter SKU, with its fields overridden by
/// `changes` (a JSON object).
fn order_with(changes: serde_json::Value) -> Vec<u8> {
    let mut order = json!({"id": "ord-new", "account": "acme", "sku": "STU-STARTER",
        "kind": "new", "quantity": 1, "term_start": 1_795_000_000});
    for (k, v) in changes.as_object().expect("an object") {
        order[k] = v.clone();
    }
    json_bytes(order)
}

/// A check of `acme`'s `cad` with `change` applied.
fn check(change: impl FnOnce(&mut pb::CheckRequest)) -> Request {
    let mut request = pb::CheckRequest {
        account_id: "acme".into(),
        feature_id: "cad".into(),
        ..Default::default()
    };
    change(&mut request);
    Request::Check(Box::new(request))
}

/// A gRPC frame: uncompressed, `len` as its length prefix, then `body`.
fn frame(flag: u8, len: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![flag];
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

fn rows() -> Vec<Row> {
    use tonic::Code;
    let account = |body: &str| rest(Method::PUT, "/v1/accounts/acme", body.as_bytes().to_vec());
    let long_id = "a".repeat(10_000);
    let valid_check = {
        use prost::Message;
        pb::CheckRequest {
            account_id: "acme".into(),
            feature_id: "cad".into(),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let mut with_unknown_field = valid_check.clone();
    // Field 99, varint 7: what a newer client's unknown enum value in a
    // field this server does not know looks like on the wire.
    with_unknown_field.extend_from_slice(&[0x98, 0x06, 0x07]);
    let big = |bytes: usize| {
        check(move |c| {
            c.account_id = "a".repeat(bytes);
        })
    };
    vec![
        // ---- REST: bodies ----
        Row {
            name: "REST: malformed JSON",
            request: account(r#"{"id": "acme", "name": "#),
            expect: Expect::Problem(400, "MALFORMED_BODY"),
        },
        Row {
            name: "REST: a field of the wrong type",
            request: account(r#"{"id": "acme", "name": 42}"#),
            expect: Expect::Problem(422, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: an unknown field",
            request: account(r#"{"id": "acme", "name": "Acme", "is_admin": true}"#),
            expect: Expect::Problem(422, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: an unknown enum value",
            request: rest(
                Method::PUT,
                "/v1/features/quantum",
                json_bytes(json!({"id": "quantum", "product": "studio", "name": "Q",
                    "kind": "quantum"})),
            ),
            expect: Expect::Problem(422, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: a body over 1 MiB",
            request: rest(
                Method::PUT,
                "/v1/accounts/acme",
                json_bytes(json!({"id": "acme", "name": "n".repeat(1024 * 1024 + 512)})),
            ),
            expect: Expect::Problem(413, "PAYLOAD_TOO_LARGE"),
        },
        // Typed bodies: the first array where an object or a string is
        // expected is a type error, so the depth is never descended (no
        // recursion, no stack to exhaust) and the answer is 422.
        Row {
            name: "REST: JSON nested 10,000 deep",
            request: account(&format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
            expect: Expect::Problem(422, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: JSON nested 10,000 deep inside a field",
            request: account(&format!(
                r#"{{"id": "acme", "name": {}{}}}"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            )),
            expect: Expect::Problem(422, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: JSON nested 10,000 deep, never closed",
            request: account(&"[".repeat(10_000)),
            expect: Expect::Problem(422, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: non-UTF-8 bytes in a body string",
            request: rest(
                Method::PUT,
                "/v1/accounts/acme",
                [
                    &br#"{"id": "acme", "name": ""#[..],
                    &[0xff, 0xfe],
                    &br#""}"#[..],
                ]
                .concat(),
            ),
            expect: Expect::Problem(400, "MALFORMED_BODY"),
        },
        Row {
            name: "REST: no JSON content type",
            request: Request::Rest {
                method: Method::PUT,
                path: "/v1/accounts/acme".into(),
                key: Key::Admin,
                content_type: Some("text/plain"),
                body: json_bytes(json!({"id": "acme", "name": "Acme"})),
                headers: Vec::new(),
            },
            expect: Expect::Problem(415, "UNSUPPORTED_MEDIA_TYPE"),
        },
        // ---- REST: ids ----
        Row {
            name: "REST: a 10,000-byte id in the path",
            request: rest(
                Method::PUT,
                format!("/v1/accounts/{long_id}"),
                json_bytes(json!({"id": "acme", "name": "Long"})),
            ),
            expect: Expect::Problem(400, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: a 10,000-byte id in the body",
            request: rest(
                Method::POST,
                "/v1/entitlements",
                json_bytes(json!({"id": long_id, "account": "acme",
                    "grant": {"feature": {"feature": "cad"}}, "valid_from": 1_700_000_000})),
            ),
            expect: Expect::Problem(422, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: non-UTF-8 bytes in a path id",
            request: rest(
                Method::PUT,
                "/v1/accounts/%FF%FE",
                json_bytes(json!({"id": "acme", "name": "Acme"})),
            ),
            expect: Expect::Problem(400, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: path traversal in a path id (write)",
            request: rest(
                Method::PUT,
                "/v1/accounts/..%2F..%2Fapi-keys%2Fx",
                json_bytes(json!({"id": "acme", "name": "Acme"})),
            ),
            expect: Expect::Problem(400, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: path traversal in a path id (read)",
            request: rest(Method::GET, "/v1/entitlements/..%2F..%2Fapi-key%2Fx", ""),
            expect: Expect::Problem(400, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: path traversal in a body id",
            request: rest(
                Method::POST,
                "/v1/entitlements",
                json_bytes(json!({"id": "../../api-key/x", "account": "acme",
                    "grant": {"feature": {"feature": "cad"}}, "valid_from": 1_700_000_000})),
            ),
            expect: Expect::Problem(422, "INVALID_ARGUMENT"),
        },
        // ---- REST: numbers ----
        Row {
            name: "REST: a negative quantity",
            request: rest(
                Method::POST,
                "/v1/orders",
                order_with(json!({"quantity": -1})),
            ),
            expect: Expect::Problem(422, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: a quantity over u32",
            request: rest(
                Method::POST,
                "/v1/orders",
                order_with(json!({"quantity": 4_294_967_296u64})),
            ),
            expect: Expect::Problem(422, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: a time over i64",
            request: rest(
                Method::POST,
                "/v1/orders",
                order_with(json!({"term_start": u64::MAX})),
            ),
            expect: Expect::Problem(422, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: a number beyond f64 (1e999)",
            request: rest(
                Method::POST,
                "/v1/orders",
                String::from_utf8(order_with(json!({"quantity": 0})))
                    .unwrap()
                    .replace(r#""quantity":0"#, r#""quantity":1e999"#),
            ),
            expect: Expect::Problem(400, "MALFORMED_BODY"),
        },
        Row {
            name: "REST: NaN",
            request: rest(
                Method::POST,
                "/v1/orders",
                String::from_utf8(order_with(json!({"quantity": 0})))
                    .unwrap()
                    .replace(r#""quantity":0"#, r#""quantity":NaN"#),
            ),
            expect: Expect::Problem(400, "MALFORMED_BODY"),
        },
        Row {
            name: "REST: Infinity as a string",
            request: rest(
                Method::POST,
                "/v1/orders",
                order_with(json!({"term_start": "Infinity"})),
            ),
            expect: Expect::Problem(422, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: a fractional quantity",
            request: rest(
                Method::POST,
                "/v1/orders",
                order_with(json!({"quantity": 1.5})),
            ),
            expect: Expect::Problem(422, "INVALID_ARGUMENT"),
        },
        // ---- REST: idempotency ----
        Row {
            name: "REST: a replayed order id with a different body",
            request: rest(
                Method::POST,
                "/v1/orders",
                order_with(json!({"id": "ord-1", "quantity": 7})),
            ),
            expect: Expect::Problem(409, "CONFLICT"),
        },
        // ---- REST: query strings ----
        Row {
            name: "REST: limit not a number",
            request: rest(Method::GET, "/v1/accounts?limit=abc", ""),
            expect: Expect::Problem(400, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: limit 0",
            request: rest(Method::GET, "/v1/accounts?limit=0", ""),
            expect: Expect::Problem(400, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: limit negative",
            request: rest(Method::GET, "/v1/accounts?limit=-1", ""),
            expect: Expect::Problem(400, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: limit overflowing",
            request: rest(
                Method::GET,
                "/v1/accounts?limit=99999999999999999999999999",
                "",
            ),
            expect: Expect::Problem(400, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: limit over the page maximum",
            request: rest(Method::GET, "/v1/audit?limit=100000", ""),
            expect: Expect::Problem(400, "INVALID_ARGUMENT"),
        },
        Row {
            name: "REST: an unknown query parameter",
            request: rest(Method::GET, "/v1/accounts?bogus=1", ""),
            expect: Expect::Problem(400, "INVALID_ARGUMENT"),
        },
        // ---- REST: headers ----
        Row {
            name: "REST: a reason header over its limit",
            request: Request::Rest {
                method: Method::PUT,
                path: "/v1/accounts/acme".into(),
                key: Key::Admin,
                content_type: Some("application/json"),
                body: json_bytes(json!({"id": "acme", "name": "Acme Renamed"})),
                headers: vec![("x-tollgate-reason".into(), "r".repeat(10_000))],
            },
            expect: Expect::Problem(400, "INVALID_ARGUMENT"),
        },
        // hyper answers this itself (tollgate-tls `http.rs` serves REST),
        // before axum's problem layer sees it.
        Row {
            name: "REST: 200 headers",
            request: Request::Rest {
                method: Method::PUT,
                path: "/v1/accounts/acme".into(),
                key: Key::Admin,
                content_type: Some("application/json"),
                body: json_bytes(json!({"id": "acme", "name": "Acme Renamed"})),
                headers: (0..200)
                    .map(|i| (format!("x-pad-{i}"), "v".into()))
                    .collect(),
            },
            expect: Expect::Problem(431, "HEADERS_TOO_LARGE"),
        },
        // ---- REST: scope before body ----
        Row {
            name: "REST: a read key writing malformed JSON",
            request: rest_as(Key::Read, Method::PUT, "/v1/accounts/acme", "{\"id\": "),
            expect: Expect::Problem(403, "FORBIDDEN"),
        },
        Row {
            name: "REST: a read key writing a body of the wrong shape",
            request: rest_as(
                Key::Read,
                Method::PUT,
                "/v1/accounts/acme",
                json_bytes(json!({"id": 5, "evil": true})),
            ),
            expect: Expect::Problem(403, "FORBIDDEN"),
        },
        Row {
            name: "REST: a read key placing an order with a bad quantity",
            request: rest_as(
                Key::Read,
                Method::POST,
                "/v1/orders",
                order_with(json!({"quantity": -1})),
            ),
            expect: Expect::Problem(403, "FORBIDDEN"),
        },
        // ---- gRPC check port ----
        Row {
            name: "gRPC: an account id of 129 bytes",
            request: big(129),
            expect: Expect::Grpc(Code::InvalidArgument, "INVALID_ARGUMENT"),
        },
        Row {
            name: "gRPC: a 60 KiB string, under the message limit",
            request: big(60 * 1024),
            expect: Expect::Grpc(Code::InvalidArgument, "INVALID_ARGUMENT"),
        },
        Row {
            name: "gRPC: a 10 KiB subject id",
            request: check(|c| c.subject_id = Some("s".repeat(10 * 1024))),
            expect: Expect::Grpc(Code::InvalidArgument, "INVALID_ARGUMENT"),
        },
        Row {
            name: "gRPC: a message of 65 KiB",
            request: big(65 * 1024),
            expect: Expect::Grpc(Code::ResourceExhausted, "MESSAGE_TOO_LARGE"),
        },
        Row {
            name: "gRPC: a message of 100 MB",
            request: big(100 * 1024 * 1024),
            expect: Expect::Grpc(Code::ResourceExhausted, "MESSAGE_TOO_LARGE"),
        },
        Row {
            // Refused from the frame's length prefix: nothing of the
            // claimed 100 MB is awaited or buffered.
            name: "gRPC: a frame claiming 100 MB that sends 1 KiB",
            request: Request::CheckBody(frame(0, 100 * 1024 * 1024, &[0u8; 1024])),
            expect: Expect::Grpc(Code::ResourceExhausted, "MESSAGE_TOO_LARGE"),
        },
        Row {
            name: "gRPC: an invalid IP",
            request: check(|c| {
                c.location = Some(pb::check_request::Location::Ip("999.1.1.1".into()))
            }),
            expect: Expect::Grpc(Code::InvalidArgument, "INVALID_ARGUMENT"),
        },
        Row {
            name: "gRPC: an IP of 10 KiB",
            request: check(|c| {
                c.location = Some(pb::check_request::Location::Ip("1".repeat(10 * 1024)))
            }),
            expect: Expect::Grpc(Code::InvalidArgument, "INVALID_ARGUMENT"),
        },
        Row {
            name: "gRPC: consume over its maximum",
            request: check(|c| c.consume = u64::MAX),
            expect: Expect::Grpc(Code::InvalidArgument, "INVALID_ARGUMENT"),
        },
        Row {
            name: "gRPC: an idempotency key with forbidden bytes",
            request: check(|c| {
                c.consume = 1;
                c.idempotency_key = Some("../\u{0}key".into());
            }),
            expect: Expect::Grpc(Code::InvalidArgument, "INVALID_ARGUMENT"),
        },
        Row {
            // No check-port request carries an enum: an unknown value of a
            // newer client's field is an unknown field, which proto3 skips.
            name: "gRPC: an unknown field (a newer client's enum value)",
            request: Request::CheckBytes(with_unknown_field),
            expect: Expect::GrpcOk,
        },
        Row {
            name: "gRPC: malformed protobuf bytes",
            request: Request::CheckBytes(vec![0xff, 0xff, 0xff, 0xff, 0xff]),
            expect: Expect::Grpc(Code::InvalidArgument, "MALFORMED_MESSAGE"),
        },
        Row {
            name: "gRPC: a string field that is not UTF-8",
            request: Request::CheckBytes(vec![0x0a, 0x02, 0xff, 0xfe]),
            expect: Expect::Grpc(Code::InvalidArgument, "MALFORMED_MESSAGE"),
        },
        Row {
            name: "gRPC: a length-delimited field longer than the message",
            request: Request::CheckBytes(vec![0x0a, 0x40, b'a']),
            expect: Expect::Grpc(Code::InvalidArgument, "MALFORMED_MESSAGE"),
        },
        Row {
            name: "gRPC: a frame with an invalid compression flag",
            request: Request::CheckBody(frame(7, valid_check.len() as u32, &valid_check)),
            expect: Expect::Grpc(Code::InvalidArgument, "MALFORMED_MESSAGE"),
        },
        Row {
            name: "gRPC: a body that ends inside its frame",
            request: Request::CheckBody(frame(0, 64, &valid_check[..2])),
            expect: Expect::Grpc(Code::InvalidArgument, "MALFORMED_MESSAGE"),
        },
    ]
}

/// Why `answer` is not what `expect` says, if it is not.
fn mismatch(expect: Expect, answer: &Answer) -> Option<String> {
    match (expect, answer) {
        (
            Expect::Problem(status, code),
            Answer::Http {
                status: got,
                content_type,
                body,
            },
        ) => {
            let mut wrong = Vec::new();
            if *got != status {
                wrong.push(format!("status {got}, expected {status}"));
            }
            if !content_type.starts_with("application/problem+json") {
                wrong.push(format!(
                    "content type {content_type:?}, expected application/problem+json"
                ));
            }
            let got_code = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_string));
            if got_code.as_deref() != Some(code) {
                wrong.push(format!("code {got_code:?}, expected {code:?}"));
            }
            (!wrong.is_empty()).then(|| {
                let body: String = body.chars().take(200).collect();
                format!("{} (body {body:?})", wrong.join("; "))
            })
        }
        (
            Expect::Grpc(code, error_code),
            Answer::Grpc {
                code: got,
                error_code: got_error_code,
                message,
            },
        ) => (*got != code || got_error_code.as_deref() != Some(error_code)).then(|| {
            format!("{got:?} {got_error_code:?}, expected {code:?} {error_code:?} ({message:?})")
        }),
        (Expect::GrpcOk, Answer::GrpcOk) => None,
        (expect, Answer::Transport(why)) => Some(format!("no answer ({why}), expected {expect:?}")),
        (expect, answer) => Some(format!("got {answer:?}, expected {expect:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_stable_code_and_changes_nothing() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut config = OriginConfig::new(1, dir.path().join("origin"));
    config.feed.heartbeat_interval = Duration::from_millis(100);
    let origin = TestOrigin::start(config, dir.path()).await;

    info!("Seeding the origin: a catalog with a SKU, account acme, an order, a read-only key.");
    origin.seed(&["cad"]).await;
    origin
        .ok(
            Method::PUT,
            "/v1/plans/starter",
            json!({"id": "starter", "product": "studio", "name": "Starter",
                "tier": 1, "features": [{"feature": "cad"}]}),
        )
        .await;
    origin
        .ok(
            Method::PUT,
            "/v1/skus/STU-STARTER",
            json!({"id": "STU-STARTER", "name": "Starter", "target": {"plan": "starter"}}),
        )
        .await;
    origin
        .ok(
            Method::POST,
            "/v1/orders",
            json!({"id": "ord-1", "account": "acme", "sku": "STU-STARTER", "kind": "new",
                "quantity": 1, "term_start": 1_795_000_000}),
        )
        .await;
    let read_key = origin
        .ok(
            Method::POST,
            "/v1/api-keys",
            json!({"name": "reader", "scopes": ["read"]}),
        )
        .await;
    let read_token = read_key["token"].as_str().expect("a token").to_string();

    info!("Starting a one-node region and waiting until it has the origin's head.");
    let region = start_region(1, dir.path(), &origin.node, origin.feed_url(), None, |c| {
        c.geo_required = false
    })
    .await;
    let head = origin.node.head_revision();
    wait_until("the region at the origin's head", DEADLINE, || async {
        let applied = region[0].applied_revision();
        if applied == head {
            Ok(())
        } else {
            Err(format!("revision {applied} of {head}"))
        }
    })
    .await
    .unwrap();
    let channel = tollgate_tests::channel(region[0].grpc_addr()).await;
    let mut world = World {
        check: CheckServiceClient::new(channel.clone()),
        channel,
        origin,
        region,
        read_token,
    };

    info!("Proving a good check is answered, so the refusals below are about their input.");
    let answer = world.send(&check(|_| {})).await;
    assert!(matches!(answer, Answer::GrpcOk), "{answer:?}");

    info!("Sending every row; each must be refused as its row says, moving nothing.");
    let mut seen = Vec::new();
    for row in rows() {
        let before = world.marks().await;
        let answer = world.send(&row.request).await;
        let after = world.marks().await;
        seen.push((row, answer, before, after));
    }
    tollgate_testkit::check_rows(
        &seen,
        |(row, ..)| row.name,
        |(row, answer, before, after)| {
            let mut wrong = Vec::new();
            if let Some(why) = mismatch(row.expect, answer) {
                wrong.push(why);
            }
            if before != after {
                wrong.push(format!("state moved: {before:?} -> {after:?}"));
            }
            (!wrong.is_empty()).then(|| wrong.join("; "))
        },
    );

    for node in world.region {
        node.shutdown().await.unwrap();
    }
    world.origin.node.shutdown().await.unwrap();
}
