//! License tokens and the origin's signing keys.
//!
//! - `license issue` asks the origin to sign a token (REST).
//! - `license inspect` decodes a token without verifying it, labelled so.
//! - `license verify` verifies offline with `tollgate_license::Verifier` and
//!   the origin's public key set (a file, or fetched from the origin): the
//!   signature, the key, times, audience and device binding. Offline it
//!   cannot know revocations; `--endpoint` asks a node instead, which checks
//!   the revocations it has replicated too.
//! - `keys` lists, rotates and retires the origin's keys (REST).

use super::check::{connect, grpc_error};
use super::origin::{read_bounded, read_json_file, seg, Origin};
use super::table::{cell, print_fields, time_cell, Table};
use super::{exit, format_time, now_seconds, print_json, CtlError, CtlResult, Format, Global};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use tollgate_model::UnixSeconds;
use tollgate_signing::PublicKeySet;

/// Largest token accepted (the token format's own limit), plus a newline.
const TOKEN_FILE_BYTES_MAX: u64 = 64 * 1024 + 2;
/// Largest key set file read: a set holds a handful of keys.
const KEYS_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Length of an Ed25519 signature, the tail of a `v4.public` payload.
const SIGNATURE_BYTES: usize = 64;
/// The one header Tollgate tokens have (see `tollgate-token`).
const TOKEN_HEADER: &str = "v4.public.";
/// Where an origin publishes its key set.
const WELL_KNOWN_KEYS: &str = "/.well-known/tollgate-keys.json";

#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Ask the origin to sign a license token for an account (or one of its
    /// users or devices). Prints the token (the whole answer with
    /// --output json); the token is shown once.
    Issue(IssueArgs),
    /// The license tokens issued for an account (records, not tokens).
    List {
        #[arg(long)]
        account: String,
    },
    /// Decode a token WITHOUT verifying it: header, footer and claims, for
    /// a look. Nothing it shows is to be trusted.
    Inspect {
        /// The token, `@file` to read it from a file, or `-` for stdin.
        token: String,
    },
    /// Verify a token: offline with the origin's public keys (--keys), or
    /// at a node (--endpoint), which also knows revocations. Exits 0 when
    /// valid, 10 when refused (with the refusal's code).
    Verify(VerifyArgs),
    /// Revoke a token: every region and SDK replica refuses it once the
    /// revocation reaches them.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    #[arg(long)]
    account: String,
    /// For one user or device of the account (default: the whole account).
    #[arg(long)]
    subject: Option<String>,
    /// The product the token is for (its `aud`, which verifiers check).
    #[arg(long)]
    audience: String,
    /// How long the token is valid (origin default: 30 days).
    #[arg(long)]
    ttl_seconds: Option<u64>,
    /// Bind the token to this device fingerprint.
    #[arg(long)]
    device_fingerprint: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The token, `@file` to read it from a file, or `-` for stdin.
    token: String,
    /// The origin's public key set: a JSON file, or the origin's URL
    /// (`https://host:port`, fetched from /.well-known/tollgate-keys.json
    /// with --ca, --cert and --key).
    #[arg(
        long,
        required_unless_present = "endpoint",
        conflicts_with = "endpoint"
    )]
    keys: Option<String>,
    /// Verify at a region node (or the origin's feed port) over gRPC
    /// instead: revocations are checked too.
    #[arg(long)]
    endpoint: Option<String>,
    /// The audience this verifier expects.
    #[arg(long)]
    audience: String,
    /// This device's fingerprint (needed for a token bound to a device).
    #[arg(long)]
    device_fingerprint: Option<String>,
    /// Verify as of this instant (Unix seconds) instead of now; offline only.
    #[arg(long, conflicts_with = "endpoint")]
    at: Option<i64>,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[arg(long)]
    account: String,
    /// The token's id (`jti`, the `id` `license issue` printed).
    #[arg(long)]
    id: String,
    /// Only for a token a region issued (the origin has no record of it):
    /// its expiry (Unix seconds), after which the revocation is forgotten.
    #[arg(long)]
    expires_at: Option<i64>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// The origin's public signing keys and their status (no API key needed).
    List,
    /// Make a new key active; the old one keeps verifying for the overlap.
    Rotate {
        /// How long the old key keeps verifying (origin default: 7 days).
        #[arg(long)]
        overlap_seconds: Option<u64>,
    },
    /// Retire a key that no longer signs: nothing it signed verifies any more.
    Retire { kid: String },
    /// Write a new seal key (64 hex digits, owner-only) for the origin's
    /// signing keys, `[signing] seal_key_path`: give every origin node the
    /// same file. Local; asks no origin.
    NewSealKey {
        /// The file to create (never overwritten).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Write a new region license key (a key ring file, owner-only),
    /// `[licenses] key_path`, and print its public key to certify at the
    /// origin (`POST /v1/regions/<region>/certificates`). Local.
    NewLicenseKey {
        /// The file to create (never overwritten).
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

/// Creates a key file at `out` with `write`, refusing to replace one.
fn new_key_file(
    out: &std::path::Path,
    write: impl FnOnce(&std::path::Path) -> Result<(), tollgate_signing::SigningError>,
) -> CtlResult<()> {
    if out.exists() {
        return Err(CtlError::usage(format!(
            "{} exists; a key file is never overwritten",
            out.display()
        )));
    }
    write(out).map_err(|e| CtlError::new(exit::FAILURE, "KEY_FILE", e.to_string()))
}

fn new_local_key(global: &Global, command: KeysCommand) -> CtlResult<u8> {
    let (what, out) = match command {
        KeysCommand::NewSealKey { out } => {
            let mut fingerprint = String::new();
            new_key_file(&out, |path| {
                let (seal, _) = tollgate_signing::SealKey::load_or_create(path)?;
                fingerprint = seal.fingerprint().to_string();
                Ok(())
            })?;
            (json!({"seal": fingerprint}), out)
        }
        KeysCommand::NewLicenseKey { out } => {
            let mut public = Value::Null;
            new_key_file(&out, |path| {
                let now = tollgate_model::UnixSeconds(tollgate_clock::Clock::system().now_secs());
                let ring = tollgate_signing::KeyRing::load_or_create(path, now)?;
                let set = ring.public_set();
                public = json!({"kid": ring.active_kid(), "public_key": set.keys[0].public_key});
                Ok(())
            })?;
            (public, out)
        }
        _ => unreachable!("only local key commands come here"),
    };
    match global.output {
        Format::Json => print_json(&json!({"file": out, "key": what})),
        Format::Table => {
            println!("wrote {}", out.display());
            if let Some(map) = what.as_object() {
                for (k, v) in map {
                    println!("{k}: {}", cell(v));
                }
            }
        }
    }
    Ok(exit::OK)
}

pub async fn license(global: &Global, command: LicenseCommand) -> CtlResult<u8> {
    match command {
        LicenseCommand::Issue(args) => issue(global, args).await,
        LicenseCommand::List { account } => {
            let origin = Origin::new(global)?;
            let page = origin
                .get(&format!(
                    "/v1/accounts/{}/licenses?limit={}",
                    seg(&account),
                    tollgate_api::PAGE_LIMIT_MAX
                ))
                .await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            match global.output {
                Format::Json => print_json(&Value::Array(items)),
                Format::Table => {
                    let mut table = Table::new(&[
                        "ID",
                        "SUBJECT",
                        "AUDIENCE",
                        "ISSUED",
                        "EXPIRES",
                        "REVOKED_AT",
                    ]);
                    for l in &items {
                        table.row(vec![
                            cell(&l["id"]),
                            cell(&l["subject"]),
                            cell(&l["audience"]),
                            time_cell(&l["issued_at"]),
                            time_cell(&l["expires_at"]),
                            time_cell(&l["revoked_at"]),
                        ]);
                    }
                    table.print();
                }
            }
            Ok(exit::OK)
        }
        LicenseCommand::Inspect { token } => inspect(global, &read_token(&token)?),
        LicenseCommand::Verify(args) => verify(global, args).await,
        LicenseCommand::Revoke(args) => {
            let origin = Origin::new(global)?;
            let body = args.expires_at.map(|t| json!({"expires_at": t}));
            let result = origin
                .post(
                    &format!(
                        "/v1/accounts/{}/licenses/{}/revoke",
                        seg(&args.account),
                        seg(&args.id)
                    ),
                    body.as_ref(),
                )
                .await?;
            match global.output {
                Format::Json => print_json(&result),
                Format::Table => println!(
                    "license {} revoked at revision {}",
                    args.id,
                    cell(&result["revision"])
                ),
            }
            Ok(exit::OK)
        }
    }
}

async fn issue(global: &Global, args: IssueArgs) -> CtlResult<u8> {
    let origin = Origin::new(global)?;
    let mut body = json!({"audience": args.audience});
    if let Some(s) = args.subject {
        body["subject"] = json!(s);
    }
    if let Some(t) = args.ttl_seconds {
        body["ttl_seconds"] = json!(t);
    }
    if let Some(d) = args.device_fingerprint {
        body["device_fingerprint"] = json!(d);
    }
    let issued = origin
        .post(
            &format!("/v1/accounts/{}/licenses", seg(&args.account)),
            Some(&body),
        )
        .await?;
    match global.output {
        Format::Json => print_json(&issued),
        Format::Table => {
            // The token alone on stdout, so `> license.token` keeps it; the
            // rest for people on stderr.
            println!("{}", cell(&issued["token"]));
            eprintln!(
                "license {} (key {}), valid {} .. {}, entitlements at revision {}",
                cell(&issued["id"]),
                cell(&issued["kid"]),
                time_cell(&issued["not_before"]),
                time_cell(&issued["expires_at"]),
                cell(&issued["entitlements_revision"]),
            );
        }
    }
    Ok(exit::OK)
}

/// The token argument: the token itself, `@file`, or `-` for stdin.
fn read_token(arg: &str) -> CtlResult<String> {
    let text = if arg == "-" {
        use std::io::Read;
        let mut text = String::new();
        std::io::stdin()
            .take(TOKEN_FILE_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .map_err(|e| CtlError::usage(format!("stdin: {e}")))?;
        text
    } else if let Some(path) = arg.strip_prefix('@') {
        read_bounded(std::path::Path::new(path), TOKEN_FILE_BYTES_MAX)
            .map_err(|e| CtlError::usage(format!("{path}: {e}")))?
    } else {
        arg.to_string()
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(CtlError::usage("the token is empty"));
    }
    if token.len() as u64 > TOKEN_FILE_BYTES_MAX {
        return Err(CtlError::usage(format!(
            "the token is longer than {} bytes",
            TOKEN_FILE_BYTES_MAX - 2
        )));
    }
    Ok(token.to_string())
}

/// A token's parts, decoded and not verified.
struct Unverified {
    header: &'static str,
    message: Vec<u8>,
    footer: Vec<u8>,
}

fn decode_unverified(token: &str) -> Result<Unverified, String> {
    let header = TOKEN_HEADER;
    let body = token
        .strip_prefix(header)
        .ok_or_else(|| format!("not a {header} token"))?;
    let (payload, footer) = match body.split_once('.') {
        Some((p, f)) => (p, Some(f)),
        None => (body, None),
    };
    let payload = B64
        .decode(payload)
        .map_err(|e| format!("the payload is not base64url: {e}"))?;
    if payload.len() < SIGNATURE_BYTES {
        return Err("the payload is shorter than a signature".into());
    }
    let footer = match footer {
        Some(f) => B64
            .decode(f)
            .map_err(|e| format!("the footer is not base64url: {e}"))?,
        None => Vec::new(),
    };
    Ok(Unverified {
        header,
        message: payload[..payload.len() - SIGNATURE_BYTES].to_vec(),
        footer,
    })
}

fn json_or_text(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

fn inspect(global: &Global, token: &str) -> CtlResult<u8> {
    let parts = decode_unverified(token)
        .map_err(|e| CtlError::new(exit::INVALID_INPUT, "MALFORMED_TOKEN", e))?;
    let claims = json_or_text(&parts.message);
    let footer = json_or_text(&parts.footer);
    match global.output {
        Format::Json => print_json(&json!({
            "verified": false,
            "warning": "UNVERIFIED: decoded without checking the signature",
            "header": parts.header.trim_end_matches('.'),
            "footer": footer,
            "claims": claims,
        })),
        Format::Table => {
            println!("UNVERIFIED: decoded without checking the signature; nothing below is to be trusted.");
            println!("Use `tollgate ctl license verify` to verify it.");
            let mut fields = vec![("header", parts.header.trim_end_matches('.').to_string())];
            if let Some(kid) = footer["kid"].as_str() {
                fields.push(("key id (footer)", kid.to_string()));
            }
            if footer["cert"].is_object() {
                fields.push((
                    "signed by",
                    "a region key (certificate in the footer)".into(),
                ));
            }
            for (label, key) in [
                ("issuer", "iss"),
                ("subject", "sub"),
                ("audience", "aud"),
                ("token id", "jti"),
                ("issued at", "iat"),
                ("not before", "nbf"),
                ("expires", "exp"),
                ("revision", "revision"),
                ("device bound", "device_bound"),
            ] {
                fields.push((label, cell(&claims[key])));
            }
            print_fields(&fields);
            println!("claims (UNVERIFIED):");
            print_json(&claims);
        }
    }
    Ok(exit::OK)
}

async fn verify(global: &Global, args: VerifyArgs) -> CtlResult<u8> {
    let token = read_token(&args.token)?;
    if let Some(endpoint) = &args.endpoint {
        return verify_at_node(global, &args, endpoint, &token).await;
    }
    let source = args
        .keys
        .as_deref()
        .expect("clap requires --keys or --endpoint");
    let keys = load_keys(global, source).await?;
    let verifier = tollgate_license::Verifier::new(&keys, args.audience.clone())
        .map_err(|e| CtlError::new(exit::INVALID_INPUT, e.code(), format!("{source}: {e}")))?;
    let now = UnixSeconds(args.at.unwrap_or_else(now_seconds));
    let outcome = verifier.verify(
        &token,
        now,
        args.device_fingerprint.as_deref().map(str::as_bytes),
        &(),
    );
    match outcome {
        Ok(license) => {
            let signer = match license.signer() {
                tollgate_license::LicenseSigner::Origin { kid } => {
                    json!({"origin": {"kid": kid.to_string()}})
                }
                tollgate_license::LicenseSigner::Region {
                    region,
                    serial,
                    kid,
                    certified_by,
                } => json!({"region": {
                    "region": region,
                    "serial": serial.as_str(),
                    "kid": kid.to_string(),
                    "certified_by": certified_by.to_string(),
                }}),
            };
            let claims = serde_json::to_value(license.claims())
                .map_err(|e| CtlError::failure(format!("the claims do not serialise: {e}")))?;
            print_valid(
                global,
                &claims,
                signer,
                "offline: revocations are not checked (verify with --endpoint for those)",
            );
            Ok(exit::OK)
        }
        Err(e) => {
            print_refused(global, e.code(), &e.to_string());
            Ok(exit::DENIED)
        }
    }
}

async fn verify_at_node(
    global: &Global,
    args: &VerifyArgs,
    endpoint: &str,
    token: &str,
) -> CtlResult<u8> {
    use tollgate_license::VerifyRequest;
    use tollgate_proto::license::v1 as pb;
    let channel = connect(endpoint, global).await?;
    let reply = pb::licenses_client::LicensesClient::new(channel)
        .verify_license(pb::VerifyLicenseRequest::from(VerifyRequest {
            token: token.to_string(),
            audience: args.audience.clone(),
            device_fingerprint: args.device_fingerprint.clone(),
        }))
        .await
        .map_err(|status| grpc_error(endpoint, &status))?
        .into_inner();
    if reply.valid {
        let claims: Value = serde_json::from_str(&reply.claims_json)
            .unwrap_or(Value::String(reply.claims_json.clone()));
        print_valid(
            global,
            &claims,
            Value::Null,
            &format!(
                "at {endpoint}, revocations as of origin revision {}",
                reply.revision
            ),
        );
        Ok(exit::OK)
    } else {
        print_refused(global, &reply.error_code, &reply.error_message);
        Ok(exit::DENIED)
    }
}

fn print_valid(global: &Global, claims: &Value, signer: Value, checked: &str) {
    match global.output {
        Format::Json => print_json(&json!({
            "valid": true,
            "checked": checked,
            "signer": signer,
            "claims": claims,
        })),
        Format::Table => {
            println!(
                "VALID  license {} for {}",
                cell(&claims["jti"]),
                cell(&claims["sub"])
            );
            let entitlements: Vec<String> = claims["entitlements"]
                .as_array()
                .map(|a| a.iter().map(|e| cell(&e["id"])).collect())
                .unwrap_or_default();
            let mut fields = vec![
                ("issuer", cell(&claims["iss"])),
                ("audience", cell(&claims["aud"])),
                (
                    "valid",
                    format!("{} .. {}", cell(&claims["nbf"]), cell(&claims["exp"])),
                ),
                ("device bound", cell(&claims["device_bound"])),
                ("revision", cell(&claims["revision"])),
                ("entitlements", entitlements.join(", ")),
                ("checked", checked.to_string()),
            ];
            if let Some(kid) = signer["origin"]["kid"].as_str() {
                fields.insert(1, ("signed by", format!("origin key {kid}")));
            } else if let Some(r) = signer.get("region") {
                fields.insert(
                    1,
                    (
                        "signed by",
                        format!(
                            "region {} key {} (certificate {}, certified by origin key {})",
                            cell(&r["region"]),
                            cell(&r["kid"]),
                            cell(&r["serial"]),
                            cell(&r["certified_by"])
                        ),
                    ),
                );
            }
            print_fields(&fields);
        }
    }
}

fn print_refused(global: &Global, code: &str, message: &str) {
    match global.output {
        Format::Json => print_json(&json!({"valid": false, "code": code, "message": message})),
        Format::Table => println!("REFUSED  {code}: {message}"),
    }
}

/// The origin's public key set from a file or from the origin.
async fn load_keys(global: &Global, source: &str) -> CtlResult<PublicKeySet> {
    let value = if source.starts_with("http://") || source.starts_with("https://") {
        let trimmed = source.trim_end_matches('/');
        let rest = trimmed.split_once("://").map_or("", |(_, r)| r);
        let (base, path) = match rest.find('/') {
            Some(i) => {
                let split = trimmed.len() - rest.len() + i;
                (&trimmed[..split], &trimmed[split..])
            }
            None => (trimmed, WELL_KNOWN_KEYS),
        };
        let origin = Origin::new(&Global {
            origin: base.to_string(),
            api_key: None,
            api_key_file: None,
            ..global.clone()
        })?;
        origin.get_public(path).await?
    } else {
        read_json_file(&PathBuf::from(source), KEYS_FILE_BYTES_MAX)?
    };
    // A key set, or the answer of a rotation ({active_kid, keys: {keys}}).
    let set = if value["keys"].is_array() {
        value
    } else {
        value["keys"].clone()
    };
    serde_json::from_value(set).map_err(|e| {
        CtlError::usage(format!(
            "--keys {source}: not an origin public key set: {e}"
        ))
    })
}

pub async fn keys(global: &Global, command: KeysCommand) -> CtlResult<u8> {
    if matches!(
        command,
        KeysCommand::NewSealKey { .. } | KeysCommand::NewLicenseKey { .. }
    ) {
        return new_local_key(global, command);
    }
    let origin = Origin::new(global)?;
    let (set, active) = match command {
        KeysCommand::List => (origin.get_public("/v1/keys").await?, None),
        KeysCommand::Rotate { overlap_seconds } => {
            let body = overlap_seconds.map(|s| json!({"overlap_seconds": s}));
            let changed = origin.post("/v1/keys/rotate", body.as_ref()).await?;
            (changed["keys"].clone(), Some(changed["active_kid"].clone()))
        }
        KeysCommand::Retire { kid } => {
            let changed = origin
                .post(&format!("/v1/keys/{}/retire", seg(&kid)), None)
                .await?;
            (changed["keys"].clone(), Some(changed["active_kid"].clone()))
        }
        KeysCommand::NewSealKey { .. } | KeysCommand::NewLicenseKey { .. } => {
            unreachable!("answered above, without an origin")
        }
    };
    match global.output {
        Format::Json => print_json(&match &active {
            Some(kid) => json!({"active_kid": kid, "keys": set}),
            None => set,
        }),
        Format::Table => {
            if let Some(kid) = &active {
                println!("active key: {}", cell(kid));
            }
            let mut table = Table::new(&["KID", "STATUS", "CREATED"]);
            for k in set["keys"].as_array().cloned().unwrap_or_default() {
                let status = match &k["status"] {
                    Value::Object(o) => match o.get("overlap") {
                        Some(overlap) => format!(
                            "overlap until {}",
                            overlap["until"]
                                .as_i64()
                                .map(format_time)
                                .unwrap_or_default()
                        ),
                        None => Value::Object(o.clone()).to_string(),
                    },
                    other => cell(other),
                };
                table.row(vec![cell(&k["kid"]), status, time_cell(&k["created_at"])]);
            }
            table.print();
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_decode_without_verification() {
        let message = br#"{"sub":"acme"}"#;
        let mut payload = message.to_vec();
        payload.extend_from_slice(&[0u8; SIGNATURE_BYTES]);
        let token = format!(
            "v4.public.{}.{}",
            B64.encode(&payload),
            B64.encode(br#"{"kid":"k"}"#)
        );
        let parts = decode_unverified(&token).unwrap();
        assert_eq!(parts.message, message);
        assert_eq!(json_or_text(&parts.footer)["kid"], "k");
        assert!(decode_unverified("v4.local.xx").is_err());
        assert!(decode_unverified("v4.public.AAAA").is_err());
    }
}
