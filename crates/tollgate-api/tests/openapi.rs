//! The OpenAPI document: generated from the route table, checked in, served,
//! and complete (every route documented, every reference resolvable).

use serde_json::Value;
use std::collections::BTreeSet;

const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

fn generated() -> Value {
    serde_json::to_value(tollgate_api::openapi_document()).unwrap()
}

#[test]
fn the_checked_in_document_is_the_generated_one() {
    let text = serde_json::to_string_pretty(&generated()).unwrap() + "\n";
    if std::env::var_os("TOLLGATE_UPDATE_OPENAPI").is_some() {
        std::fs::write(CHECKED_IN, &text).unwrap();
    }
    let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
    assert!(
        checked_in == text,
        "crates/tollgate-api/openapi.json is out of date; regenerate it with\n  \
         TOLLGATE_UPDATE_OPENAPI=1 cargo test -p tollgate-api --test openapi"
    );
}

#[test]
fn every_route_is_documented_with_its_method() {
    let doc = generated();
    let paths = doc["paths"].as_object().unwrap();
    let routes = tollgate_api::route_list();
    for (path, method) in &routes {
        assert!(
            paths[path.as_str()][*method].is_object(),
            "{method} {path} is not documented"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        routes.len(),
        "the document has no route the router lacks"
    );
    let secured = paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .iter()
                .map(move |(m, op)| (path, m, op))
        })
        .filter(|(_, _, op)| op["security"].is_array())
        .count();
    assert_eq!(
        secured,
        routes.len() - 4,
        "all but health, metrics and the two key-set paths need a key"
    );
}

fn refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.insert(r.trim_start_matches("#/components/schemas/").to_string());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_schema_reference_resolves() {
    let doc = generated();
    let mut used = BTreeSet::new();
    refs(&doc, &mut used);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in &used {
        assert!(
            schemas.contains_key(name),
            "{name} is referenced but not defined"
        );
    }
    for expected in [
        "Entitlement",
        "Order",
        "GeoRule",
        "AccountId",
        "Problem",
        "AuditRecord",
    ] {
        assert!(schemas.contains_key(expected), "{expected} is missing");
    }
    let id = &schemas["AccountId"];
    assert_eq!(id["maxLength"], 128, "limits are in the document: {id}");
}
