//! The conformance cases every SDK runs (`sdk/conformance/cases.json`, the
//! format is in `sdk/PROTOCOL.md` section 2).
//!
//! The Rust side owns the file: [`generate`] builds it from model values,
//! with each expected outcome computed by the engine
//! (`tollgate_engine::decide`) and the license verifier. This test fails when
//! the checked-in file is not what the generator makes; rewrite it with
//!
//! ```text
//! TOLLGATE_UPDATE_CONFORMANCE=1 cargo test -p tollgate-sdk --test conformance
//! ```
//!
//! It then runs the checked-in file through the SDK as an application uses
//! it, as the JavaScript and Python suites do: each data set's mutations are
//! applied by a [`Replica`] (`Replica::from_mutations`), each check decided
//! with `Replica::check_at` at the case's `now` and origin contact, each
//! token verified by an [`OfflineVerifier`] at the case's `now` with its
//! revocations. Every mismatch is reported by case name.
//!
//! Nothing reads the clock: every instant is in the cases.

#[path = "conformance/checks.rs"]
mod checks;
#[path = "conformance/tokens.rs"]
mod tokens;

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use tollgate_license::{License, LicenseError, LicenseSigner, RevocationList, Verifier};
use tollgate_model::{GeoFacts, Mutation, RevokedCertificate, RevokedLicense, UnixSeconds};
use tollgate_sdk::{check_request, Location, OfflineVerifier, Reason, Replica};
use tollgate_signing::PublicKeySet;

/// Set to `1` to rewrite the file instead of comparing with it.
const UPDATE_VAR: &str = "TOLLGATE_UPDATE_CONFORMANCE";
const UPDATE_COMMAND: &str =
    "TOLLGATE_UPDATE_CONFORMANCE=1 cargo test -p tollgate-sdk --test conformance";
/// The version of the file's format.
const VERSION: u64 = 1;

fn cases_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sdk/conformance/cases.json")
}

fn updating() -> bool {
    std::env::var(UPDATE_VAR).is_ok_and(|v| v == "1")
}

// ---- The generator ----

/// The verifier's answer, in the shape of a token case's `expected`.
fn license_outcome(outcome: &Result<License, LicenseError>) -> Value {
    match outcome {
        Ok(license) => json!({
            "valid": true,
            "claims": serde_json::to_value(license.claims()).expect("claims serialise"),
            "signer": match license.signer() {
                LicenseSigner::Origin { .. } => "origin".to_owned(),
                LicenseSigner::Region { region, .. } => format!("region:{region}"),
            },
        }),
        Err(error) => json!({"valid": false, "code": error.code()}),
    }
}

/// The whole file, as a JSON value.
fn generate() -> Value {
    let datasets = checks::datasets();
    let by_name: BTreeMap<&str, &checks::NamedDataset> =
        datasets.iter().map(|d| (d.name, d)).collect();
    assert_eq!(by_name.len(), datasets.len(), "data set names are unique");

    let datasets_json: Map<String, Value> = datasets
        .iter()
        .map(|d| {
            (
                d.name.to_owned(),
                json!({
                    "revision": d.revision,
                    "mutations": d.mutations.iter()
                        .map(|m| serde_json::to_value(m).expect("a mutation serialises"))
                        .collect::<Vec<_>>(),
                }),
            )
        })
        .collect();

    let checks_json: Vec<Value> = checks::check_cases()
        .iter()
        .map(|case| {
            let dataset = by_name
                .get(case.dataset)
                .unwrap_or_else(|| panic!("{}: no data set {}", case.name, case.dataset));
            let decision = checks::decide_case(case, dataset);
            json!({
                "name": case.name,
                "dataset": case.dataset,
                "now": case.now,
                "last_origin_contact": case.last_origin_contact,
                "check": checks::check_json(case),
                "location": case.location.as_ref().map(|p| {
                    serde_json::to_value(p.facts()).expect("geo facts serialise")
                }),
                "expected": checks::decision_json(&decision),
            })
        })
        .collect();

    let tokens = tokens::tokens(
        by_name["studio"],
        &[by_name["geo"], by_name["offline"], by_name["seats"]],
    );
    let verifier = Verifier::new(&tokens.key_set, tokens::AUDIENCE).expect("the key set is valid");
    let token_cases: Vec<Value> = tokens
        .cases
        .iter()
        .map(|case| {
            let mut revoked = RevocationList::new();
            for r in &case.revoked_licenses {
                revoked.insert_license(r.id.clone());
            }
            for r in &case.revoked_certificates {
                revoked.insert_certificate(r.serial.clone());
            }
            let outcome = verifier.verify(
                &case.token,
                UnixSeconds(case.now),
                case.device_fingerprint.as_deref().map(str::as_bytes),
                &revoked,
            );
            json!({
                "name": case.name,
                "token": case.token,
                "now": case.now,
                "revocations": {
                    "licenses": case.revoked_licenses,
                    "certificates": case.revoked_certificates,
                },
                "device_fingerprint": case.device_fingerprint,
                "expected": license_outcome(&outcome),
            })
        })
        .collect();

    json!({
        "version": VERSION,
        "datasets": datasets_json,
        "checks": checks_json,
        "tokens": {
            "audience": tokens::AUDIENCE,
            "key_set": tokens.key_set,
            "cases": token_cases,
        },
    })
}

/// `value` with every object's keys in sorted order, whatever map type
/// serde_json was built with.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let keys: BTreeSet<&String> = map.keys().collect();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The file's text: sorted keys, two-space indentation, a final newline.
fn render(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(value)).expect("the cases serialise");
    text.push('\n');
    text
}

/// The cases to run: the checked-in file, or while it is being rewritten,
/// what the generator makes.
fn load() -> Value {
    let text = if updating() {
        render(&generate())
    } else {
        std::fs::read_to_string(cases_path()).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; generate it with `{UPDATE_COMMAND}`",
                cases_path().display()
            )
        })
    };
    serde_json::from_str(&text).expect("the cases file is JSON")
}

#[test]
fn the_checked_in_file_is_what_the_generator_makes() {
    let text = render(&generate());
    let path = cases_path();
    if updating() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    if on_disk != text {
        let first = on_disk
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| on_disk.lines().count().min(text.lines().count()));
        panic!(
            "{} is not what the generator makes (first difference at line {}: {:?} in the \
             file, {:?} generated). Regenerate it with\n\n    {UPDATE_COMMAND}\n\nand check \
             in the result.",
            path.display(),
            first + 1,
            on_disk.lines().nth(first).unwrap_or("<end of file>"),
            text.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

#[test]
fn the_generator_is_deterministic() {
    assert_eq!(render(&generate()), render(&generate()));
}

// ---- The runner ----

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string: {value}"))
}

/// Fields of `expected` that `actual` does not match.
fn mismatches(expected: &Value, actual: &Value) -> Option<String> {
    let expected = expected.as_object()?;
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(field, want)| actual.get(field.as_str()) != Some(*want))
        .map(|(field, want)| {
            format!(
                "{field}: expected {want}, got {}",
                actual.get(field.as_str()).unwrap_or(&Value::Null)
            )
        })
        .collect();
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

#[test]
fn every_check_case_decides_as_expected_through_the_replica() {
    let file = load();
    let replicas: BTreeMap<String, Replica> = file["datasets"]
        .as_object()
        .expect("datasets is an object")
        .iter()
        .map(|(name, dataset)| {
            let mutations: Vec<Mutation> = serde_json::from_value(dataset["mutations"].clone())
                .unwrap_or_else(|e| panic!("data set {name}: mutations: {e}"));
            let revision = dataset["revision"].as_u64().expect("a revision");
            let replica = Replica::from_mutations(mutations, revision)
                .unwrap_or_else(|e| panic!("data set {name}: {e}"));
            (name.clone(), replica)
        })
        .collect();
    let cases = file["checks"].as_array().expect("checks is an array");
    assert!(cases.len() >= 50, "only {} check cases", cases.len());
    tollgate_testkit::check_rows(
        cases,
        |case| text(case, "name"),
        |case| {
            let replica = &replicas[text(case, "dataset")];
            let check = &case["check"];
            let mut request = check_request(
                text(check, "account").parse().ok()?,
                check["subject"].as_str().map(|s| s.parse().unwrap()),
                text(check, "feature").parse().ok()?,
            );
            request.check.consume = check["consume"].as_u64().unwrap_or(0);
            request.location = match &case["location"] {
                Value::Null => Location::Unknown,
                facts => Location::Resolved(
                    serde_json::from_value::<GeoFacts>(facts.clone()).expect("geo facts"),
                ),
            };
            let now = UnixSeconds(case["now"].as_i64().expect("now"));
            let contact = case["last_origin_contact"].as_i64().map(UnixSeconds);
            let local = match replica.check_at(&request, now, contact) {
                Ok(local) => local,
                Err(error) => return Some(format!("refused: {error}")),
            };
            if local.revision != replica.revision() {
                return Some(format!("decided at revision {}", local.revision));
            }
            let expected = &case["expected"];
            if expected.get("allowed").is_none() || expected.get("reason").is_none() {
                return Some("expected lacks allowed or reason".into());
            }
            mismatches(expected, &checks::decision_json(&local.decision))
        },
    );
}

#[test]
fn every_token_case_verifies_as_expected_through_the_offline_verifier() {
    let file = load();
    let tokens = &file["tokens"];
    let key_set: PublicKeySet =
        serde_json::from_value(tokens["key_set"].clone()).expect("the key set parses");
    let offline = OfflineVerifier::new(&key_set, text(tokens, "audience")).expect("a verifier");
    // The verifier of the key set in use, which takes the case's clock.
    let verifier = offline.verifier();
    let cases = tokens["cases"]
        .as_array()
        .expect("token cases are an array");
    assert!(cases.len() >= 15, "only {} token cases", cases.len());
    tollgate_testkit::check_rows(
        cases,
        |case| text(case, "name"),
        |case| {
            let licenses: Vec<RevokedLicense> =
                serde_json::from_value(case["revocations"]["licenses"].clone()).ok()?;
            let certificates: Vec<RevokedCertificate> =
                serde_json::from_value(case["revocations"]["certificates"].clone()).ok()?;
            let mut revoked = RevocationList::new();
            for r in licenses {
                revoked.insert_license(r.id);
            }
            for r in certificates {
                revoked.insert_certificate(r.serial);
            }
            let outcome = verifier.verify(
                text(case, "token"),
                UnixSeconds(case["now"].as_i64().expect("now")),
                case["device_fingerprint"].as_str().map(str::as_bytes),
                &revoked,
            );
            mismatches(&case["expected"], &license_outcome(&outcome))
        },
    );
}

/// Reasons a client-side replica never decides, so no case can expect
/// them: USAGE_CAP_REACHED needs units consumed past the cap, and only the
/// region meters consumption (a replica counts nothing consumed and refuses
/// checks that consume; with nothing consumed even a cap of 0 allows).
const REGION_ONLY: [Reason; 1] = [Reason::UsageCapReached];

#[test]
fn the_cases_cover_every_reason_and_refusal() {
    let file = generate();
    let reasons: BTreeSet<&str> = file["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| text(&c["expected"], "reason"))
        .collect();
    let missing: Vec<&str> = Reason::ALL
        .iter()
        .filter(|r| !REGION_ONLY.contains(r))
        .map(|r| r.code())
        .filter(|code| !reasons.contains(code))
        .collect();
    assert!(
        missing.is_empty(),
        "no check case is decided {missing:?}: add one to tests/conformance/checks.rs"
    );
    let reached: Vec<&str> = REGION_ONLY
        .iter()
        .map(|r| r.code())
        .filter(|code| reasons.contains(code))
        .collect();
    assert!(
        reached.is_empty(),
        "{reached:?} is decided by a replica after all: take it out of REGION_ONLY"
    );

    let codes: BTreeSet<&str> = file["tokens"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["expected"]["code"].as_str())
        .collect();
    let wanted = [
        "license_bad_signature",
        "license_footer_invalid",
        "license_unknown_key_id",
        "license_key_retired",
        "license_key_overlap_expired",
        "license_certificate_signature_invalid",
        "license_certificate_expired",
        "license_certificate_not_yet_valid",
        "license_certificate_revoked",
        "license_certificate_key_mismatch",
        "license_certificate_not_for_licenses",
        "license_issuer_mismatch",
        "license_ttl_over_certificate_max",
        "license_claims_invalid",
        "license_expired",
        "license_not_yet_valid",
        "license_wrong_audience",
        "license_revoked",
        "license_device_fingerprint_required",
        "license_device_fingerprint_invalid",
        "token_empty",
        "token_too_long",
        "token_wrong_header",
        "token_malformed_payload_encoding",
        "token_malformed_payload_too_short",
        "token_malformed_empty_footer",
        "token_malformed_footer_encoding",
        "token_malformed_too_many_sections",
    ];
    let missing: Vec<&str> = wanted
        .into_iter()
        .filter(|code| !codes.contains(code))
        .collect();
    assert!(
        missing.is_empty(),
        "no token case is refused with {missing:?}: add one to tests/conformance/tokens.rs"
    );
    let signers: BTreeSet<&str> = file["tokens"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["expected"]["signer"].as_str())
        .collect();
    assert!(
        signers.contains("origin") && signers.iter().any(|s| s.starts_with("region:")),
        "valid tokens of both signers: {signers:?}"
    );
}
