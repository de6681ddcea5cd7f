//! What a node reads from its config file and its check port's HTTP/JSON
//! bodies. Both live in crates with no library to call (the `tollgate`
//! binary's `config.rs`; `tollgate-region-node`'s private `http_api`), so
//! their source files are compiled in here, unchanged.

use crate::input::Input;
use prost::Message as _;
use tollgate_engine::CheckRequest;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::convert::batch_from_proto;

#[allow(dead_code, clippy::all)]
#[path = "../../tollgate/src/config.rs"]
mod config;

#[allow(dead_code, clippy::all)]
#[path = "../../tollgate-region-node/src/http_api/wire.rs"]
mod wire;

/// A config file (TOML) with `TOLLGATE_*` environment overrides (the first
/// field: `NAME=value` lines), parsed and validated as `serve` does before
/// binding a port: never a panic, and a file that validates gives its
/// limits, identity and reload interval.
pub fn node_config(data: &[u8]) {
    let mut input = Input::new(data);
    let env = String::from_utf8_lossy(input.field()).into_owned();
    let Ok(text) = std::str::from_utf8(input.rest()) else {
        return;
    };
    let Ok(mut table) = toml::from_str::<toml::Table>(text) else {
        return;
    };
    let vars = env.lines().filter_map(|line| {
        let (name, value) = line.split_once('=')?;
        Some((name.to_owned(), value.to_owned()))
    });
    if config::apply_env(&mut table, vars).is_err() {
        return;
    }
    let Ok(file) = table.try_into::<config::NodeFile>() else {
        return;
    };
    if file.validate().is_ok() {
        let _ = file.limits.to_limits();
        let _ = file.subject();
        let _ = file.tls_reload_interval();
    }
}

/// Mode 0: any JSON as a `POST /v1/check` body, mode 1 as `POST
/// /v1/checks`: a body converts to the gRPC request the same service
/// answers or is refused with a message; the request round-trips through
/// protobuf, and the service's own conversion accepts it or names a field.
pub fn http_check_body(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let Ok(body) = serde_json::from_slice::<wire::CheckBody>(body) else {
            return;
        };
        let request = match body.into_proto() {
            Ok(request) => request,
            Err(message) => {
                assert!(!message.is_empty());
                return;
            }
        };
        let again = pb::CheckRequest::decode(request.encode_to_vec().as_slice())
            .expect("an encoded request decodes");
        assert_eq!(again, request);
        let _ = CheckRequest::try_from(request);
    } else {
        let Ok(body) = serde_json::from_slice::<wire::BatchBody>(body) else {
            return;
        };
        let request = match body.into_proto() {
            Ok(request) => request,
            Err(message) => {
                assert!(!message.is_empty());
                return;
            }
        };
        let again = pb::BatchCheckRequest::decode(request.encode_to_vec().as_slice())
            .expect("an encoded request decodes");
        assert_eq!(again, request);
        let _ = batch_from_proto(request);
    }
}
