//! The check port's OpenAPI document: generated from the handlers and the
//! wire types, checked in, and complete (every route documented with its
//! method, nothing documented that the router lacks, every reference
//! resolvable).

use serde_json::Value;
use std::collections::BTreeSet;

const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

fn generated() -> Value {
    serde_json::to_value(tollgate_region_node::openapi_document()).unwrap()
}

#[test]
fn the_checked_in_document_is_the_generated_one() {
    let text = tollgate_region_node::openapi_document()
        .to_pretty_json()
        .unwrap()
        + "\n";
    if std::env::var_os("TOLLGATE_UPDATE_OPENAPI").is_some() {
        std::fs::write(CHECKED_IN, &text).unwrap();
    }
    let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
    assert!(
        checked_in == text,
        "crates/tollgate-region-node/openapi.json is out of date; regenerate it with\n  \
         TOLLGATE_UPDATE_OPENAPI=1 cargo test -p tollgate-region-node --test openapi"
    );
}

#[test]
fn every_route_is_documented_with_its_method_and_nothing_else() {
    let doc = generated();
    let paths = doc["paths"].as_object().unwrap();
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |method| (path.clone(), method.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = tollgate_region_node::HTTP_ROUTES
        .iter()
        .map(|(path, method)| (path.to_string(), method.to_string()))
        .collect();
    assert_eq!(documented, routed);
    for (path, method) in &routed {
        let op = &paths[path.as_str()][method.as_str()];
        let public = path == "/v1/openapi.json";
        assert_eq!(
            op["security"] == serde_json::json!([{}]),
            public,
            "{method} {path}: only the document itself is public: {op}"
        );
        assert!(op["responses"]["200"].is_object(), "{method} {path}");
        if !public {
            assert!(
                op["responses"]["401"]["content"]["application/problem+json"].is_object(),
                "{method} {path}: refusals are problem documents"
            );
        }
    }
    assert_eq!(
        doc["security"],
        serde_json::json!([{"application_credential": []}])
    );
}

fn refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        out.insert(r.clone());
                    }
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    let doc = generated();
    let mut found = BTreeSet::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for reference in found {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{reference} is not a schema reference"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{reference} does not resolve"
        );
    }
}
