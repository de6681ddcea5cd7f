//! `ctl certs`: a certificate authority and the certificates every link's
//! TLS needs, made offline (no node, no network):
//!
//! - `init` creates the CA of a trust domain (`ca.pem`, `ca.key`);
//! - `issue` signs a certificate naming one holder by its SPIFFE ID: an
//!   origin node, a region node, an operator (`tollgate ctl`), or an
//!   application;
//! - `show` prints what a certificate says: identity, names, validity,
//!   issuer.
//!
//! Keys are ECDSA P-256, written readable by their owner only, each file
//! replaced in one rename (a node reloading its files never reads half of
//! one). Renewing a certificate is issuing it again: nodes pick the new
//! files up without a restart.

use super::table::print_fields;
use super::{exit, format_time, print_json, CtlError, CtlResult, Format, Global};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use tollgate_tls::ca::{self, Pem, Request};
use tollgate_tls::{Identity, Subject, Tls, TlsFiles};

/// Longest validity of a CA, in days (100 years).
const CA_DAYS_MAX: u32 = 36_500;
/// Longest validity of a node, operator or application certificate, in days.
const LEAF_DAYS_MAX: u32 = 3_650;
/// Certificates start this long before they are made, so a peer whose clock
/// is a little behind does not find them "not valid yet".
const BACKDATE_SECONDS: i64 = 300;
/// Longest file `show` reads.
const CERT_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Longest file name (`--name`) for the certificate and its key.
const FILE_NAME_BYTES_MAX: usize = 128;
/// Longest DNS name in a certificate (RFC 1035).
const DNS_NAME_BYTES_MAX: usize = 253;
/// Longest region, operator or application name in an identity.
const NAME_BYTES_MAX: usize = tollgate_tls::identity::NAME_BYTES_MAX;
/// The names a node certificate carries unless `--no-default-names`, so
/// clients on the node's own machine can check it.
const DEFAULT_DNS: &str = "localhost";
const DEFAULT_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
/// The CA's files in its directory: `ca.pem` and `ca.key`.
const CA_NAME: &str = "ca";

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the CA of a trust domain: DIR/ca.pem (give it to every node
    /// as tls.ca and to clients as --ca) and DIR/ca.key (keep it secret and
    /// offline: it signs every certificate).
    Init(InitArgs),
    /// Issue a certificate naming one holder (exactly one of --origin-node,
    /// --region with --node, --operator, --app), signed by the CA in
    /// --ca-dir. Issuing again renews it (same files, replaced whole).
    Issue(IssueArgs),
    /// Print what a certificate (PEM or DER) says: identity (SPIFFE ID),
    /// DNS names and IP addresses, validity, issuer.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to write ca.pem and ca.key into (created if missing).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    /// The trust domain every identity this CA certifies belongs to, e.g.
    /// `acme.example` (1-63 of a-z, 0-9, '.', '-').
    #[arg(long, value_name = "DOMAIN")]
    trust_domain: String,
    /// How long the CA is valid, in days (1..=36500).
    #[arg(long, default_value_t = 3650)]
    days: u32,
    /// Replace an existing CA in --out-dir. Every certificate it signed
    /// stops being trusted once nodes load the new ca.pem.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("holder")
        .required(true)
        .args(["origin_node", "region", "operator", "app"])
))]
pub struct IssueArgs {
    /// The CA's directory (ca.pem and ca.key, from `ctl certs init`).
    #[arg(long, value_name = "DIR")]
    ca_dir: PathBuf,
    /// An origin node: its Raft node id (not 0).
    #[arg(long, value_name = "ID")]
    origin_node: Option<u64>,
    /// A region node: the region's name (1-63 of a-z, 0-9, '-'), with --node.
    #[arg(long, value_name = "NAME", requires = "node")]
    region: Option<String>,
    /// With --region: the node's Raft node id (not 0).
    #[arg(long, value_name = "ID", requires = "region")]
    node: Option<u64>,
    /// An operator (a person or tool running `tollgate ctl`): a name
    /// (1-63 of a-z, A-Z, 0-9, '.', '_', '-').
    #[arg(long, value_name = "NAME")]
    operator: Option<String>,
    /// An application that checks entitlements: a name (1-63 of a-z, A-Z,
    /// 0-9, '.', '_', '-').
    #[arg(long, value_name = "NAME")]
    app: Option<String>,
    /// A DNS name clients reach the holder by (repeatable).
    #[arg(long = "dns", value_name = "NAME")]
    dns: Vec<String>,
    /// An IP address clients reach the holder by (repeatable).
    #[arg(long = "ip", value_name = "ADDR")]
    ips: Vec<IpAddr>,
    /// Node certificates: do not add `localhost` and `127.0.0.1`.
    #[arg(long)]
    no_default_names: bool,
    /// How long the certificate is valid, in days (1..=3650; not past the
    /// CA's own expiry).
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// Directory to write the certificate and key into (default: --ca-dir).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// The files' name: NAME.pem and NAME.key (default: origin-node-<id>,
    /// region-<region>-node-<id>, operator-<name> or app-<name>).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The certificate file (PEM, the first certificate in it; or DER).
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

pub fn run(global: &Global, command: CertsCommand) -> CtlResult<u8> {
    let now = tollgate_clock::Clock::system().now_secs();
    let value = match command {
        CertsCommand::Init(args) => {
            let value = init(&args, now)?;
            if global.output == Format::Table {
                print_init(&value);
            }
            value
        }
        CertsCommand::Issue(args) => {
            let value = issue(&args, now)?;
            if global.output == Format::Table {
                print_issue(&value);
            }
            value
        }
        CertsCommand::Show(args) => {
            let value = show(&args.file, now)?;
            if global.output == Format::Table {
                print_show(&value);
            }
            value
        }
    };
    if global.output == Format::Json {
        print_json(&value);
    }
    Ok(exit::OK)
}

/// `init`: writes the CA, returns what was written.
fn init(args: &InitArgs, now: i64) -> CtlResult<Value> {
    check_trust_domain(&args.trust_domain)?;
    check_days(args.days, CA_DAYS_MAX)?;
    let cert_path = args.out_dir.join(format!("{CA_NAME}.pem"));
    let key_path = args.out_dir.join(format!("{CA_NAME}.key"));
    if !args.force {
        for existing in [&key_path, &cert_path] {
            if existing.exists() {
                return Err(CtlError::usage(format!(
                    "{} exists: a CA is already there (give --force to replace it; every \
                     certificate it signed stops being trusted)",
                    existing.display()
                )));
            }
        }
    }
    let not_before = now - BACKDATE_SECONDS;
    let not_after = now + i64::from(args.days) * 86_400;
    let pem = ca::create_ca(&args.trust_domain, not_before, not_after)
        .map_err(|e| CtlError::failure(format!("cannot create the CA: {e}")))?;
    let (cert, key) =
        ca::write(&args.out_dir, CA_NAME, &pem).map_err(|e| CtlError::failure(e.to_string()))?;
    Ok(json!({
        "trust_domain": args.trust_domain,
        "cert": cert.display().to_string(),
        "key": key.display().to_string(),
        "not_before": not_before,
        "not_after": not_after,
        "next": format!(
            "tollgate ctl certs issue --ca-dir {} --origin-node 1 --dns <the node's DNS name>",
            shell_word(&args.out_dir.display().to_string())
        ),
    }))
}

fn print_init(value: &Value) {
    println!(
        "Created the CA of trust domain {}, valid until {}.",
        value["trust_domain"].as_str().unwrap_or("-"),
        format_time(value["not_after"].as_i64().unwrap_or(0))
    );
    print_fields(&[
        (
            "certificate",
            format!(
                "{}  (every node's tls.ca; clients' --ca)",
                value["cert"].as_str().unwrap_or("-")
            ),
        ),
        (
            "key",
            format!(
                "{}  (secret: keep it offline; it signs every certificate)",
                value["key"].as_str().unwrap_or("-")
            ),
        ),
    ]);
    println!("Next, a certificate for each node and operator:");
    println!("  {}", value["next"].as_str().unwrap_or("-"));
}

/// The holder the flags name.
fn subject(args: &IssueArgs) -> CtlResult<Subject> {
    let node_id = |flag: &str, id: u64| {
        if id == 0 {
            Err(CtlError::usage(format!(
                "--{flag}: a node id is not 0 (it is the node's Raft id)"
            )))
        } else {
            Ok(id)
        }
    };
    match (&args.origin_node, &args.region, &args.operator, &args.app) {
        (Some(id), None, None, None) => Ok(Subject::OriginNode(node_id("origin-node", *id)?)),
        (None, Some(region), None, None) => {
            let node = args
                .node
                .ok_or_else(|| CtlError::usage("--region needs --node <ID>"))?;
            if !tollgate_model::valid_region_name(region) || region.len() > NAME_BYTES_MAX {
                return Err(CtlError::usage(format!(
                    "--region {region:?}: a region name is 1-{NAME_BYTES_MAX} of a-z, 0-9, '-' \
                     (as the node's `region` setting)"
                )));
            }
            Ok(Subject::RegionNode {
                region: region.clone(),
                node: node_id("node", node)?,
            })
        }
        (None, None, Some(name), None) => {
            check_name("operator", name)?;
            Ok(Subject::Operator(name.clone()))
        }
        (None, None, None, Some(name)) => {
            check_name("app", name)?;
            Ok(Subject::App(name.clone()))
        }
        _ => Err(CtlError::usage(
            "name exactly one holder: --origin-node, --region with --node, --operator or --app",
        )),
    }
}

/// The default file name for `subject`.
fn default_name(subject: &Subject) -> String {
    match subject {
        Subject::OriginNode(id) => format!("origin-node-{id}"),
        Subject::RegionNode { region, node } => format!("region-{region}-node-{node}"),
        Subject::Operator(name) => format!("operator-{name}"),
        Subject::App(name) => format!("app-{name}"),
    }
}

/// `issue`: signs and writes a certificate, returns what was written.
fn issue(args: &IssueArgs, now: i64) -> CtlResult<Value> {
    let subject = subject(args)?;
    check_days(args.days, LEAF_DAYS_MAX)?;
    let name = args.name.clone().unwrap_or_else(|| default_name(&subject));
    check_file_name(&name)?;
    let out_dir = args.out_dir.clone().unwrap_or_else(|| args.ca_dir.clone());
    if name == CA_NAME && same_dir(&out_dir, &args.ca_dir) {
        return Err(CtlError::usage(
            "--name ca: that would replace the CA's own files; pick another name or --out-dir",
        ));
    }
    let mut dns = Vec::new();
    for name in &args.dns {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        check_dns_name(&name)?;
        if !dns.contains(&name) {
            dns.push(name);
        }
    }
    let mut ips = Vec::new();
    for ip in &args.ips {
        if !ips.contains(ip) {
            ips.push(*ip);
        }
    }
    let node = matches!(subject, Subject::OriginNode(_) | Subject::RegionNode { .. });
    if node && !args.no_default_names {
        if !dns.iter().any(|d| d == DEFAULT_DNS) {
            dns.push(DEFAULT_DNS.to_string());
        }
        if !ips.contains(&DEFAULT_IP) {
            ips.push(DEFAULT_IP);
        }
    }

    let ca_pem = ca::read_ca(&args.ca_dir, CA_NAME).map_err(|e| {
        CtlError::usage(format!(
            "--ca-dir {}: {e} (create a CA with `tollgate ctl certs init`)",
            args.ca_dir.display()
        ))
    })?;
    let ca_cert_path = args.ca_dir.join(format!("{CA_NAME}.pem"));
    let trust_domain = ca::trust_domain_of(&ca_pem.cert)
        .map_err(|e| CtlError::usage(format!("{}: {e}", ca_cert_path.display())))?;
    let ca_info = describe(
        &first_certificate(ca_pem.cert.as_bytes(), &ca_cert_path)?,
        now,
    )
    .map_err(|e| CtlError::usage(format!("{}: {e}", ca_cert_path.display())))?;
    let ca_not_after = ca_info["not_after"].as_i64().unwrap_or(0);
    if ca_not_after <= now {
        return Err(CtlError::usage(format!(
            "{}: the CA expired at {}; create a new one with `tollgate ctl certs init`",
            ca_cert_path.display(),
            format_time(ca_not_after)
        )));
    }
    let not_before = now - BACKDATE_SECONDS;
    let not_after = now + i64::from(args.days) * 86_400;
    if not_after > ca_not_after {
        return Err(CtlError::usage(format!(
            "--days {}: the certificate would outlive its CA, which expires at {} (in {} days); \
             give --days {} or less, or renew the CA",
            args.days,
            format_time(ca_not_after),
            (ca_not_after - now) / 86_400,
            ((ca_not_after - now) / 86_400).max(1)
        )));
    }
    let identity = Identity::new(&trust_domain, subject.clone())
        .map_err(|e| CtlError::usage(e.to_string()))?;
    let request = Request {
        identity: identity.clone(),
        dns: dns.clone(),
        ips: ips.clone(),
        not_before,
        not_after,
    };
    let pem: Pem = ca::issue(&ca_pem, &request)
        .map_err(|e| CtlError::failure(format!("cannot issue the certificate: {e}")))?;
    let (cert, key) =
        ca::write(&out_dir, &name, &pem).map_err(|e| CtlError::failure(e.to_string()))?;
    // What the holder will do with it: a node loads it as its own (chains
    // to the CA, matches the key, names this node); a client presents it
    // (matches the key, in date; it is for client use only, so the server
    // check of a node's own certificate does not apply).
    let loaded = if node {
        Tls::load(
            TlsFiles {
                ca: ca_cert_path.clone(),
                cert: Some(cert.clone()),
                key: Some(key.clone()),
            },
            Some(subject.clone()),
            now,
        )
    } else {
        Tls::client(
            Some(ca_cert_path.clone()),
            Some(cert.clone()),
            Some(key.clone()),
            now,
        )
    };
    loaded.map_err(|e| CtlError::failure(format!("the certificate written does not load: {e}")))?;

    let (cert_s, key_s, ca_s) = (
        cert.display().to_string(),
        key.display().to_string(),
        ca_cert_path.display().to_string(),
    );
    let usage = match &subject {
        Subject::OriginNode(_) | Subject::RegionNode { .. } => format!(
            "in the node's config file: [tls] ca = {ca_s:?}, cert = {cert_s:?}, key = {key_s:?}"
        ),
        Subject::Operator(_) => format!(
            "tollgate ctl --ca {} --cert {} --key {} cluster status --endpoint <host:raft-port> \
             (or TOLLGATE_CA, TOLLGATE_CERT, TOLLGATE_KEY)",
            shell_word(&ca_s),
            shell_word(&cert_s),
            shell_word(&key_s)
        ),
        Subject::App(_) => {
            format!("the application's TLS client: CA {ca_s}, certificate {cert_s}, key {key_s}")
        }
    };
    Ok(json!({
        "identity": identity.to_string(),
        "cert": cert_s,
        "key": key_s,
        "ca": ca_s,
        "dns": dns,
        "ips": ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "not_before": not_before,
        "not_after": not_after,
        "use": usage,
    }))
}

fn print_issue(value: &Value) {
    let list = |v: &Value| {
        let items: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if items.is_empty() {
            "-".to_string()
        } else {
            items.join(", ")
        }
    };
    println!(
        "Issued a certificate for {}.",
        value["identity"].as_str().unwrap_or("-")
    );
    print_fields(&[
        ("certificate", value["cert"].as_str().unwrap_or("-").into()),
        (
            "key",
            format!(
                "{}  (secret: readable by its owner only)",
                value["key"].as_str().unwrap_or("-")
            ),
        ),
        ("signed by", value["ca"].as_str().unwrap_or("-").into()),
        ("dns names", list(&value["dns"])),
        ("ip addresses", list(&value["ips"])),
        (
            "expires",
            format!(
                "{} (renew before: issue it again)",
                format_time(value["not_after"].as_i64().unwrap_or(0))
            ),
        ),
        ("use", value["use"].as_str().unwrap_or("-").into()),
    ]);
}

/// `show`: what the certificate in `file` says.
fn show(file: &Path, now: i64) -> CtlResult<Value> {
    let bytes = read_bounded_bytes(file, CERT_FILE_BYTES_MAX)
        .map_err(|e| CtlError::usage(format!("{}: {e}", file.display())))?;
    let (der, count) = certificates(&bytes, file)?;
    let mut value =
        describe(&der, now).map_err(|e| CtlError::usage(format!("{}: {e}", file.display())))?;
    value["file"] = json!(file.display().to_string());
    value["certificates_in_file"] = json!(count);
    Ok(value)
}

fn print_show(value: &Value) {
    let strings = |v: &Value| -> String {
        let items: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if items.is_empty() {
            "-".into()
        } else {
            items.join(", ")
        }
    };
    let left = value["seconds_left"].as_i64().unwrap_or(0);
    let left_text = if left <= 0 {
        format!("EXPIRED {} s ago", -left)
    } else {
        format!("{left} s left ({} days)", left / 86_400)
    };
    let identity = match (value["identity"].as_str(), value["trust_domain"].as_str()) {
        (Some(identity), _) => identity.to_string(),
        (None, Some(domain)) if value["is_ca"] == Value::Bool(true) => {
            format!("the CA of trust domain {domain}")
        }
        _ => "none (no spiffe:// URI SAN of ours)".into(),
    };
    let mut fields = vec![
        ("file", value["file"].as_str().unwrap_or("-").to_string()),
        ("identity", identity),
        (
            "subject",
            value["subject"].as_str().unwrap_or("-").to_string(),
        ),
        ("dns names", strings(&value["dns"])),
        ("ip addresses", strings(&value["ips"])),
        (
            "not before",
            format_time(value["not_before"].as_i64().unwrap_or(0)),
        ),
        (
            "not after",
            format_time(value["not_after"].as_i64().unwrap_or(0)),
        ),
        ("expires", left_text),
        (
            "issuer",
            value["issuer"].as_str().unwrap_or("-").to_string(),
        ),
        ("ca", value["is_ca"].to_string()),
        ("usage", strings(&value["extended_key_usage"])),
        (
            "serial",
            value["serial"].as_str().unwrap_or("-").to_string(),
        ),
    ];
    let uris = strings(&value["uris"]);
    if value["uris"].as_array().is_some_and(|a| a.len() > 1) {
        fields.insert(2, ("uris", uris));
    }
    if value["certificates_in_file"].as_u64().unwrap_or(1) > 1 {
        fields.push((
            "chain",
            format!(
                "{} certificates in the file; this is the first",
                value["certificates_in_file"]
            ),
        ));
    }
    print_fields(&fields);
}

/// The first certificate in `bytes` (PEM, or DER) and how many there are.
fn certificates(bytes: &[u8], file: &Path) -> CtlResult<(Vec<u8>, usize)> {
    let bad = |why: String| CtlError::usage(format!("{}: {why}", file.display()));
    let text = String::from_utf8_lossy(bytes);
    if text.contains("-----BEGIN ") {
        let mut certs = Vec::new();
        let mut labels = Vec::new();
        for block in x509_parser::pem::Pem::iter_from_buffer(bytes) {
            let block = block.map_err(|e| bad(format!("not valid PEM: {e}")))?;
            if block.label == "CERTIFICATE" {
                certs.push(block.contents);
            } else {
                labels.push(block.label);
            }
        }
        let count = certs.len();
        return match certs.into_iter().next() {
            Some(first) => Ok((first, count)),
            None if labels.iter().any(|l| l.contains("PRIVATE KEY")) => Err(bad(
                "this is a private key, not a certificate (show the .pem next to it)".into(),
            )),
            None => Err(bad("no CERTIFICATE block in it".into())),
        };
    }
    Ok((bytes.to_vec(), 1))
}

/// The first certificate of a PEM text already read.
fn first_certificate(pem: &[u8], file: &Path) -> CtlResult<Vec<u8>> {
    certificates(pem, file).map(|(der, _)| der)
}

/// What a DER certificate says, as JSON.
fn describe(der: &[u8], now: i64) -> Result<Value, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::IPAddress(raw) => ips.push(ip_text(raw)),
                _ => {}
            }
        }
    }
    let spiffe: Vec<&String> = uris.iter().filter(|u| u.starts_with("spiffe://")).collect();
    let identity = match spiffe.as_slice() {
        [one] => Identity::parse(one).ok(),
        _ => None,
    };
    let trust_domain = identity
        .as_ref()
        .map(|i| i.trust_domain.clone())
        .or_else(|| {
            spiffe.iter().find_map(|u| {
                let domain = u.strip_prefix("spiffe://")?;
                (!domain.is_empty() && !domain.contains('/')).then(|| domain.to_string())
            })
        });
    let kind = identity.as_ref().map(|i| match i.subject {
        Subject::OriginNode(_) => "origin-node",
        Subject::RegionNode { .. } => "region-node",
        Subject::Operator(_) => "operator",
        Subject::App(_) => "app",
    });
    let mut usage = Vec::new();
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        if eku.value.server_auth {
            usage.push("server");
        }
        if eku.value.client_auth {
            usage.push("client");
        }
    }
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    Ok(json!({
        "identity": identity.as_ref().map(ToString::to_string),
        "kind": kind,
        "trust_domain": trust_domain,
        "uris": uris,
        "dns": dns,
        "ips": ips,
        "subject": cert.subject().to_string(),
        "issuer": cert.issuer().to_string(),
        "is_ca": cert.is_ca(),
        "extended_key_usage": usage,
        "serial": cert.raw_serial_as_string(),
        "not_before": not_before,
        "not_after": not_after,
        "seconds_left": not_after - now,
        "expired": not_after <= now,
        "not_yet_valid": not_before > now,
    }))
}

/// An IP address SAN (4 or 16 bytes) as text.
fn ip_text(raw: &[u8]) -> String {
    match raw.len() {
        4 => {
            let octets: [u8; 4] = raw.try_into().unwrap_or_default();
            IpAddr::from(octets).to_string()
        }
        16 => {
            let octets: [u8; 16] = raw.try_into().unwrap_or_default();
            IpAddr::from(octets).to_string()
        }
        _ => format!("{raw:02x?}"),
    }
}

fn check_days(days: u32, max: u32) -> CtlResult<()> {
    if days == 0 || days > max {
        return Err(CtlError::usage(format!("--days {days}: must be 1..={max}")));
    }
    Ok(())
}

fn check_trust_domain(domain: &str) -> CtlResult<()> {
    let ok = !domain.is_empty()
        && domain.len() <= NAME_BYTES_MAX
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !domain.starts_with(['.', '-'])
        && !domain.ends_with(['.', '-'])
        && !domain.contains("..");
    if !ok {
        return Err(CtlError::usage(format!(
            "--trust-domain {domain:?}: 1-{NAME_BYTES_MAX} of a-z, 0-9, '.', '-', e.g. \
             acme.example (it names your deployment in every identity: \
             spiffe://<trust-domain>/...)"
        )));
    }
    Ok(())
}

fn check_name(flag: &str, name: &str) -> CtlResult<()> {
    let ok = !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if !ok {
        return Err(CtlError::usage(format!(
            "--{flag} {name:?}: a name is 1-{NAME_BYTES_MAX} of a-z, A-Z, 0-9, '.', '_', '-'"
        )));
    }
    Ok(())
}

fn check_file_name(name: &str) -> CtlResult<()> {
    let ok = !name.is_empty()
        && name.len() <= FILE_NAME_BYTES_MAX
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if !ok {
        return Err(CtlError::usage(format!(
            "--name {name:?}: a file name is 1-{FILE_NAME_BYTES_MAX} of a-z, A-Z, 0-9, '.', '_', \
             '-', not starting with '.'"
        )));
    }
    Ok(())
}

/// A DNS name as certificates carry it: labels of a-z, 0-9 and '-' (not at
/// either end), at most 63 bytes each and 253 in all; `*.` first for a
/// wildcard.
fn check_dns_name(name: &str) -> CtlResult<()> {
    let labels = name.strip_prefix("*.").unwrap_or(name);
    let ok = !labels.is_empty()
        && name.len() <= DNS_NAME_BYTES_MAX
        && labels.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        && labels.parse::<IpAddr>().is_err();
    if !ok {
        let why = if labels.parse::<IpAddr>().is_ok() {
            "an IP address goes in --ip"
        } else {
            "labels of a-z, 0-9, '-' separated by '.', at most 253 bytes (`*.` first for a wildcard)"
        };
        return Err(CtlError::usage(format!("--dns {name:?}: {why}")));
    }
    Ok(())
}

/// Whether two directories are the same (by their canonical paths when
/// both exist).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `word` quoted for a POSIX shell when it needs to be.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,=@".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn read_bounded_bytes(path: &Path, len_max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(len_max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > len_max {
        return Err(std::io::Error::other(format!(
            "larger than {len_max} bytes"
        )));
    }
    Ok(bytes)
}

/// Certificates for the tests of the commands that connect: a CA for
/// `acme.example` with an origin node, an operator and an application, and
/// another CA (`other.example`) with an operator of its own.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub(crate) struct Pki {
        pub(crate) _dir: tempfile::TempDir,
        pub(crate) ca: PathBuf,
        pub(crate) node: (PathBuf, PathBuf),
        /// Origin node 2, named only `node2.acme.example`.
        pub(crate) node_no_names: (PathBuf, PathBuf),
        pub(crate) operator: (PathBuf, PathBuf),
        pub(crate) app: (PathBuf, PathBuf),
        pub(crate) other_ca: PathBuf,
        pub(crate) other_operator: (PathBuf, PathBuf),
    }

    pub(crate) fn init_args(dir: &Path, domain: &str) -> InitArgs {
        InitArgs {
            out_dir: dir.to_path_buf(),
            trust_domain: domain.into(),
            days: 30,
            force: false,
        }
    }

    pub(crate) fn issue_args(ca_dir: &Path) -> IssueArgs {
        IssueArgs {
            ca_dir: ca_dir.to_path_buf(),
            origin_node: None,
            region: None,
            node: None,
            operator: None,
            app: None,
            dns: Vec::new(),
            ips: Vec::new(),
            no_default_names: false,
            days: 7,
            out_dir: None,
            name: None,
        }
    }

    fn files(value: &Value) -> (PathBuf, PathBuf) {
        (
            PathBuf::from(value["cert"].as_str().unwrap()),
            PathBuf::from(value["key"].as_str().unwrap()),
        )
    }

    pub(crate) fn pki() -> Pki {
        let now = tollgate_clock::Clock::system().now_secs();
        let dir = tempfile::tempdir().unwrap();
        let acme = dir.path().join("acme");
        let other = dir.path().join("other");
        init(&init_args(&acme, "acme.example"), now).unwrap();
        init(&init_args(&other, "other.example"), now).unwrap();
        let node = issue(
            &IssueArgs {
                origin_node: Some(1),
                ..issue_args(&acme)
            },
            now,
        )
        .unwrap();
        let node_no_names = issue(
            &IssueArgs {
                origin_node: Some(2),
                dns: vec!["node2.acme.example".into()],
                no_default_names: true,
                ..issue_args(&acme)
            },
            now,
        )
        .unwrap();
        let operator = issue(
            &IssueArgs {
                operator: Some("alice".into()),
                ..issue_args(&acme)
            },
            now,
        )
        .unwrap();
        let app = issue(
            &IssueArgs {
                app: Some("billing".into()),
                ..issue_args(&acme)
            },
            now,
        )
        .unwrap();
        let other_operator = issue(
            &IssueArgs {
                operator: Some("mallory".into()),
                ..issue_args(&other)
            },
            now,
        )
        .unwrap();
        Pki {
            ca: acme.join("ca.pem"),
            node: files(&node),
            node_no_names: files(&node_no_names),
            operator: files(&operator),
            app: files(&app),
            other_ca: other.join("ca.pem"),
            other_operator: files(&other_operator),
            _dir: dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{init_args, issue_args};
    use super::*;

    #[test]
    fn init_issue_show_round_trip() {
        let now = tollgate_clock::Clock::system().now_secs();
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("pki");
        let made = init(&init_args(&ca_dir, "acme.example"), now).unwrap();
        assert_eq!(made["trust_domain"], "acme.example");
        assert!(ca_dir.join("ca.pem").is_file() && ca_dir.join("ca.key").is_file());
        let ca = show(&ca_dir.join("ca.pem"), now).unwrap();
        assert_eq!(ca["is_ca"], true);
        assert_eq!(ca["trust_domain"], "acme.example");
        assert_eq!(ca["identity"], Value::Null);

        let out = dir.path().join("nodes");
        let issued = issue(
            &IssueArgs {
                region: Some("eu-west".into()),
                node: Some(2),
                dns: vec!["Node2.EU.acme.example.".into(), "localhost".into()],
                ips: vec!["10.0.0.5".parse().unwrap()],
                out_dir: Some(out.clone()),
                ..issue_args(&ca_dir)
            },
            now,
        )
        .unwrap();
        let identity = "spiffe://acme.example/region/eu-west/node/2";
        assert_eq!(issued["identity"], identity);
        let cert = out.join("region-eu-west-node-2.pem");
        let key = out.join("region-eu-west-node-2.key");
        assert_eq!(issued["cert"], cert.display().to_string());
        assert_eq!(issued["key"], key.display().to_string());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is readable by its owner only");
        }

        let shown = show(&cert, now).unwrap();
        assert_eq!(shown["identity"], identity);
        assert_eq!(shown["kind"], "region-node");
        assert_eq!(shown["trust_domain"], "acme.example");
        // Lower-cased, without the trailing dot, the default added once.
        assert_eq!(shown["dns"], json!(["node2.eu.acme.example", "localhost"]));
        assert_eq!(shown["ips"], json!(["10.0.0.5", "127.0.0.1"]));
        assert_eq!(shown["is_ca"], false);
        assert_eq!(shown["extended_key_usage"], json!(["server", "client"]));
        assert!(shown["issuer"]
            .as_str()
            .unwrap()
            .contains("Tollgate CA for acme.example"));
        assert_eq!(shown["not_after"], issued["not_after"]);
        assert_eq!(shown["seconds_left"], json!(7 * 86_400));
        assert_eq!(shown["expired"], false);

        // The node loads it as its own, and only as itself.
        let files = |ca: &Path| TlsFiles {
            ca: ca.to_path_buf(),
            cert: Some(cert.clone()),
            key: Some(key.clone()),
        };
        let me = Subject::RegionNode {
            region: "eu-west".into(),
            node: 2,
        };
        let tls = Tls::load(files(&ca_dir.join("ca.pem")), Some(me), now).unwrap();
        assert_eq!(tls.identity().unwrap().to_string(), identity);
        let error = Tls::load(
            files(&ca_dir.join("ca.pem")),
            Some(Subject::OriginNode(2)),
            now,
        )
        .err()
        .unwrap();
        assert!(error.to_string().contains("this node is"), "{error}");

        // An operator certificate: client use only, no default names.
        let operator = issue(
            &IssueArgs {
                operator: Some("alice".into()),
                ..issue_args(&ca_dir)
            },
            now,
        )
        .unwrap();
        assert_eq!(operator["identity"], "spiffe://acme.example/operator/alice");
        assert_eq!(operator["dns"], json!([]));
        let shown = show(&ca_dir.join("operator-alice.pem"), now).unwrap();
        assert_eq!(shown["extended_key_usage"], json!(["client"]));
        assert_eq!(shown["kind"], "operator");

        // Issuing again renews in place.
        let again = issue(
            &IssueArgs {
                operator: Some("alice".into()),
                days: 8,
                ..issue_args(&ca_dir)
            },
            now,
        )
        .unwrap();
        assert_eq!(again["cert"], operator["cert"]);
        let shown = show(&ca_dir.join("operator-alice.pem"), now).unwrap();
        assert_eq!(shown["seconds_left"], json!(8 * 86_400));
    }

    #[test]
    fn an_existing_ca_is_not_replaced_without_force() {
        let now = tollgate_clock::Clock::system().now_secs();
        let dir = tempfile::tempdir().unwrap();
        init(&init_args(dir.path(), "acme.example"), now).unwrap();
        let before = std::fs::read(dir.path().join("ca.key")).unwrap();
        let error = init(&init_args(dir.path(), "acme.example"), now).unwrap_err();
        assert_eq!(error.exit, exit::INVALID_INPUT);
        assert!(error.message.contains("ca.key exists"), "{error}");
        assert!(error.message.contains("--force"), "{error}");
        assert_eq!(std::fs::read(dir.path().join("ca.key")).unwrap(), before);

        // A lone ca.pem is not overwritten either.
        let lone = tempfile::tempdir().unwrap();
        std::fs::write(lone.path().join("ca.pem"), "mine").unwrap();
        let error = init(&init_args(lone.path(), "acme.example"), now).unwrap_err();
        assert!(error.message.contains("ca.pem exists"), "{error}");

        let forced = InitArgs {
            force: true,
            trust_domain: "other.example".into(),
            ..init_args(dir.path(), "acme.example")
        };
        init(&forced, now).unwrap();
        assert_ne!(std::fs::read(dir.path().join("ca.key")).unwrap(), before);
        let pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        assert_eq!(ca::trust_domain_of(&pem).unwrap(), "other.example");

        // Nor does `issue` write over the CA's files.
        let error = issue(
            &IssueArgs {
                operator: Some("x".into()),
                name: Some("ca".into()),
                ..issue_args(dir.path())
            },
            now,
        )
        .unwrap_err();
        assert_eq!(error.exit, exit::INVALID_INPUT);
        assert!(error.message.contains("CA's own files"), "{error}");
    }

    #[test]
    fn bad_input_is_refused_with_the_flag_named() {
        let now = tollgate_clock::Clock::system().now_secs();
        let dir = tempfile::tempdir().unwrap();
        let init_with = |domain: &str, days: u32| {
            init(
                &InitArgs {
                    days,
                    ..init_args(&dir.path().join("x"), domain)
                },
                now,
            )
            .unwrap_err()
        };
        for (error, needle) in [
            (init_with("Acme.example", 10), "--trust-domain"),
            (init_with("acme..example", 10), "--trust-domain"),
            (init_with("", 10), "--trust-domain"),
            (init_with("acme.example", 0), "--days 0"),
            (init_with("acme.example", 36_501), "1..=36500"),
        ] {
            assert_eq!(error.exit, exit::INVALID_INPUT, "{error}");
            assert!(error.message.contains(needle), "{needle}: {error}");
        }

        init(&init_args(dir.path(), "acme.example"), now).unwrap();
        let issue_with = |args: IssueArgs| issue(&args, now).unwrap_err();
        let base = || issue_args(dir.path());
        for (error, needle) in [
            (
                issue_with(IssueArgs {
                    region: Some("EU".into()),
                    node: Some(1),
                    ..base()
                }),
                "--region \"EU\"",
            ),
            (
                issue_with(IssueArgs {
                    region: Some("eu_west".into()),
                    node: Some(1),
                    ..base()
                }),
                "a region name",
            ),
            (
                issue_with(IssueArgs {
                    region: Some("eu".into()),
                    node: Some(0),
                    ..base()
                }),
                "--node",
            ),
            (
                issue_with(IssueArgs {
                    origin_node: Some(0),
                    ..base()
                }),
                "--origin-node",
            ),
            (
                issue_with(IssueArgs {
                    operator: Some("a b".into()),
                    ..base()
                }),
                "--operator",
            ),
            (
                issue_with(IssueArgs {
                    app: Some("x".repeat(64)),
                    ..base()
                }),
                "--app",
            ),
            (
                issue_with(IssueArgs {
                    origin_node: Some(1),
                    days: 0,
                    ..base()
                }),
                "--days 0",
            ),
            (
                issue_with(IssueArgs {
                    origin_node: Some(1),
                    days: 3_651,
                    ..base()
                }),
                "1..=3650",
            ),
            (
                // The CA is valid for 30 days.
                issue_with(IssueArgs {
                    origin_node: Some(1),
                    days: 31,
                    ..base()
                }),
                "outlive its CA",
            ),
            (
                issue_with(IssueArgs {
                    origin_node: Some(1),
                    dns: vec!["-x.example".into()],
                    ..base()
                }),
                "--dns",
            ),
            (
                issue_with(IssueArgs {
                    origin_node: Some(1),
                    dns: vec!["10.0.0.1".into()],
                    ..base()
                }),
                "goes in --ip",
            ),
            (
                issue_with(IssueArgs {
                    origin_node: Some(1),
                    name: Some("../escape".into()),
                    ..base()
                }),
                "--name",
            ),
            (
                issue_with(IssueArgs {
                    origin_node: Some(1),
                    ..issue_args(&dir.path().join("missing"))
                }),
                "ctl certs init",
            ),
            (issue_with(base()), "exactly one holder"),
        ] {
            assert_eq!(error.exit, exit::INVALID_INPUT, "{error}");
            assert!(error.message.contains(needle), "{needle}: {error}");
        }

        let error = show(&dir.path().join("ca.key"), now).unwrap_err();
        assert!(error.message.contains("private key"), "{error}");
        let error = show(&dir.path().join("nothing.pem"), now).unwrap_err();
        assert_eq!(error.exit, exit::INVALID_INPUT);
    }

    #[test]
    fn without_default_names_a_node_has_only_its_own() {
        let now = tollgate_clock::Clock::system().now_secs();
        let dir = tempfile::tempdir().unwrap();
        init(&init_args(dir.path(), "acme.example"), now).unwrap();
        let issued = issue(
            &IssueArgs {
                origin_node: Some(3),
                dns: vec!["*.nodes.acme.example".into()],
                ips: vec!["::1".parse().unwrap()],
                no_default_names: true,
                name: Some("o3".into()),
                ..issue_args(dir.path())
            },
            now,
        )
        .unwrap();
        assert_eq!(issued["identity"], "spiffe://acme.example/origin/node/3");
        let shown = show(&dir.path().join("o3.pem"), now).unwrap();
        assert_eq!(shown["dns"], json!(["*.nodes.acme.example"]));
        assert_eq!(shown["ips"], json!(["::1"]));
        // DER reads as well as PEM.
        let pem = std::fs::read(dir.path().join("o3.pem")).unwrap();
        let der = first_certificate(&pem, Path::new("o3.pem")).unwrap();
        std::fs::write(dir.path().join("o3.der"), der).unwrap();
        let shown = show(&dir.path().join("o3.der"), now).unwrap();
        assert_eq!(shown["identity"], "spiffe://acme.example/origin/node/3");
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("/etc/tollgate/ca.pem"), "/etc/tollgate/ca.pem");
        assert_eq!(shell_word("my dir"), "'my dir'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
