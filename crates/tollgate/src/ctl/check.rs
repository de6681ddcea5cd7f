//! `ctl check`: one check against a region node, with the decision
//! explained: the reason code, the deciding entitlement, what remains of a
//! cap, seats, the upgrade hint, how stale the node's data is and which
//! node answered. A table for people or `--output json`, like every `ctl`
//! command. Exit 0 when allowed, 10 when denied (a decision, with its
//! reason), 1 when no answer came, 2 for invalid input.
//!
//! The one check command: `tollgate check`, the client of the same call
//! before `ctl` had it, is a hidden alias ([`CheckAlias`]) that parses the
//! same flags and runs this code, so it prints nothing different.

use super::table::print_fields;
use super::tls::ConnectError;
use super::{exit, format_time, CtlError, CtlResult, Format, Global};
use clap::Args;
use serde_json::json;
use tollgate_engine::{Check, CheckRequest, Consistency, Location};
use tollgate_model::{
    AccountId, Continent, CountryCode, FeatureId, GeoFacts, ModelError, SubjectId,
};
use tollgate_proto::check::v1 as pb;
use tollgate_proto::convert::Explained;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The region node's check endpoint (gRPC), `https://host:port`
    /// (`http://` for a node running with tls.insecure_plaintext).
    #[arg(
        long,
        env = "TOLLGATE_CHECK_ENDPOINT",
        default_value = "https://127.0.0.1:7300"
    )]
    endpoint: String,
    #[arg(long)]
    account: String,
    #[arg(long)]
    feature: String,
    /// The user or device checking (needed by seats and roles).
    #[arg(long)]
    subject: Option<String>,
    /// The caller's IP, resolved by the node's geo databases.
    #[arg(long, conflicts_with_all = ["country", "continent"])]
    ip: Option<String>,
    /// The caller's country (ISO 3166-1 alpha-2), as a trusted proxy
    /// resolved it; the node ignores it unless configured to trust proxies.
    #[arg(long)]
    country: Option<String>,
    /// The caller's continent (AF, AN, AS, EU, NA, OC, SA), with --country.
    #[arg(long)]
    continent: Option<String>,
    /// Units of a metered feature to consume with the check.
    #[arg(long, default_value_t = 0)]
    consume: u64,
    /// With --consume: a retried check with the same key consumes once.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Wait (bounded by --timeout-seconds) until the node has applied this
    /// origin revision (the revision an origin write returned).
    #[arg(long)]
    at_least_revision: Option<u64>,
}

/// `tollgate check`: `tollgate ctl check` under its old name, hidden from
/// the help. The same flags (`ctl`'s global ones included), output and
/// exit codes.
#[derive(Debug, Args)]
pub struct CheckAlias {
    #[command(flatten)]
    global: Global,
    #[command(flatten)]
    check: CheckArgs,
}

/// Runs `tollgate check` as `tollgate ctl check`.
pub fn run_alias(alias: CheckAlias) -> u8 {
    super::run(super::CtlArgs {
        global: alias.global,
        command: super::CtlCommand::Check(alias.check),
    })
}

/// The check the flags ask, with its ids and location checked here as the
/// node would check them.
fn check_request(args: &CheckArgs) -> CtlResult<CheckRequest> {
    fn invalid(flag: &str) -> impl Fn(ModelError) -> CtlError + '_ {
        move |e| CtlError::usage(format!("--{flag}: {e}"))
    }
    let location =
        match (&args.ip, &args.country, &args.continent) {
            (Some(ip), _, _) => Location::Ip(ip.parse().map_err(|_| {
                CtlError::usage(format!("--ip {ip:?}: not an IPv4 or IPv6 address"))
            })?),
            (None, None, None) => Location::Unknown,
            (None, country, continent) => Location::Resolved(GeoFacts {
                country: country
                    .as_deref()
                    .map(|c| CountryCode::new(&c.to_uppercase()))
                    .transpose()
                    .map_err(invalid("country"))?,
                continent: continent
                    .as_deref()
                    .map(|c| Continent::from_code(&c.to_uppercase()))
                    .transpose()
                    .map_err(invalid("continent"))?,
                ..GeoFacts::default()
            }),
        };
    Ok(CheckRequest {
        check: Check {
            account: AccountId::new(args.account.as_str()).map_err(invalid("account"))?,
            subject: args
                .subject
                .as_deref()
                .map(SubjectId::new)
                .transpose()
                .map_err(invalid("subject"))?,
            feature: FeatureId::new(args.feature.as_str()).map_err(invalid("feature"))?,
            consume: args.consume,
        },
        location,
        consistency: args
            .at_least_revision
            .map_or(Consistency::Local, Consistency::AtLeastRevision),
        idempotency_key: args.idempotency_key.clone(),
    })
}

pub async fn run(global: &Global, args: CheckArgs) -> CtlResult<u8> {
    // A tool shows the node's explanation.
    let mut request = tonic::Request::new(pb::CheckRequest::from(Explained(check_request(&args)?)));
    // The deadline travels with the request (grpc-timeout), so a node
    // waiting for --at-least-revision answers before the client gives up.
    request.set_timeout(global.timeout());
    let channel = connect(&args.endpoint, global).await?;
    let reply = pb::check_service_client::CheckServiceClient::new(channel)
        .check(request)
        .await
        .map_err(|status| grpc_error(&args.endpoint, &status))?
        .into_inner();
    let Some(decision) = reply.decision else {
        return Err(CtlError::failure(format!(
            "{}: the node answered without a decision",
            args.endpoint
        )));
    };
    let reason = decision
        .reason()
        .as_str_name()
        .trim_start_matches("REASON_")
        .to_string();
    let hint = decision.upgrade_hint.as_ref().and_then(|h| {
        let (kind, id) = match h.target.as_ref()? {
            pb::upgrade_hint::Target::PlanId(id) => ("plan", id),
            pb::upgrade_hint::Target::AddonId(id) => ("addon", id),
        };
        Some(json!({kind: id, "limit": h.limit}))
    });
    let seats = decision
        .seats
        .as_ref()
        .map(|s| json!({"used": s.used, "total": s.total, "holders": s.holders}));
    let entitlement = (!decision.entitlement_id.is_empty()).then_some(&decision.entitlement_id);
    match global.output {
        Format::Json => super::print_json(&json!({
            "allowed": decision.allowed,
            "reason": reason,
            "explanation": decision.explanation,
            "entitlement": entitlement,
            "limit": decision.limit,
            "remaining": decision.remaining,
            "overage": decision.overage,
            "valid_until": decision.valid_until,
            "trial": decision.trial,
            "seats": seats,
            "upgrade_hint": hint,
            "config": decision.config,
            "revision": reply.revision,
            "staleness_seconds": reply.staleness_seconds,
            "answered_by": reply.answered_by,
        })),
        Format::Table => {
            println!(
                "{}  {reason}  {} / {} / {}",
                if decision.allowed {
                    "ALLOWED"
                } else {
                    "DENIED"
                },
                args.account,
                args.subject.as_deref().unwrap_or("-"),
                args.feature
            );
            let mut fields = vec![
                ("explanation", decision.explanation.clone()),
                (
                    "entitlement",
                    entitlement.cloned().unwrap_or_else(|| "-".into()),
                ),
            ];
            if decision.limit.is_some() || decision.remaining.is_some() {
                fields.push((
                    "remaining",
                    format!(
                        "{} of {}{}",
                        decision.remaining.map_or("-".into(), |r| r.to_string()),
                        decision.limit.map_or("unlimited".into(), |l| l.to_string()),
                        if decision.overage { " (overage)" } else { "" }
                    ),
                ));
            }
            if let Some(until) = decision.valid_until {
                fields.push(("valid until", format_time(until)));
            }
            if let Some(s) = &decision.seats {
                let holders = if s.holders.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", s.holders.join(", "))
                };
                fields.push(("seats", format!("{} of {} used{holders}", s.used, s.total)));
            }
            if let Some(h) = decision.upgrade_hint.as_ref() {
                if let Some(target) = &h.target {
                    let target = match target {
                        pb::upgrade_hint::Target::PlanId(id) => format!("plan {id}"),
                        pb::upgrade_hint::Target::AddonId(id) => format!("add-on {id}"),
                    };
                    let cap = h.limit.map_or(String::new(), |l| format!(" (cap {l})"));
                    fields.push(("upgrade hint", format!("{target}{cap}")));
                }
            }
            if decision.trial {
                fields.push(("trial", "yes".into()));
            }
            if !decision.config.is_empty() {
                let config: Vec<String> = decision
                    .config
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                fields.push(("config", config.join(", ")));
            }
            fields.push(("answered by", reply.answered_by.clone()));
            fields.push(("revision", reply.revision.to_string()));
            fields.push((
                "staleness",
                reply
                    .staleness_seconds
                    .map_or("the region has never heard from the origin".into(), |s| {
                        format!("{s} s since the region heard from the origin")
                    }),
            ));
            print_fields(&fields);
        }
    }
    Ok(if decision.allowed {
        exit::OK
    } else {
        exit::DENIED
    })
}

/// A channel to a gRPC endpoint (`https://` with the `--ca`, `--cert` and
/// `--key` of `global`; `http://` in plaintext), with the global timeout on
/// connecting and on every call. A failed connection shows its whole cause
/// chain, and what to do when TLS is the cause.
pub async fn connect(endpoint: &str, global: &Global) -> CtlResult<super::tls::AppChannel> {
    let credential = global.tls.credential().map_err(CtlError::usage)?;
    let channel = connect_channel(endpoint, global).await?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel, credential,
    ))
}

/// [`connect`] without the application credential: for ports other than a
/// region's check port.
pub async fn connect_channel(
    endpoint: &str,
    global: &Global,
) -> CtlResult<tonic::transport::Channel> {
    global
        .tls
        .grpc_channel(endpoint, global.timeout())
        .await
        .map_err(|e| match e {
            ConnectError::Usage(message) => CtlError::usage(format!("{endpoint}: {message}")),
            ConnectError::Unreachable(message) => CtlError::unreachable(message),
        })
}

/// A gRPC status as an error: its `tollgate-error-code` when the server sent
/// one, and an exit code by the status code.
pub fn grpc_error(endpoint: &str, status: &tonic::Status) -> CtlError {
    if super::tls::is_transport_failure(status) {
        // No answer: the connection failed (a refused handshake, a reset).
        return CtlError::unreachable(format!(
            "{endpoint}: {}{}",
            status.message(),
            super::tls::status_cause(status)
        ));
    }
    let code = status
        .metadata()
        .get("tollgate-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:?}", status.code()).to_uppercase());
    let exit = match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => exit::INVALID_INPUT,
        tonic::Code::NotFound => super::exit::NOT_FOUND,
        tonic::Code::AlreadyExists | tonic::Code::Aborted => super::exit::CONFLICT,
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => super::exit::UNAUTHORIZED,
        _ => exit::FAILURE,
    };
    CtlError::new(exit, code, format!("{endpoint}: {}", status.message()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches as _;

    fn alias(args: &[&str]) -> Result<CheckAlias, clap::Error> {
        let command = CheckAlias::augment_args(clap::Command::new("check"));
        let matches =
            command.try_get_matches_from(std::iter::once("check").chain(args.iter().copied()))?;
        CheckAlias::from_arg_matches(&matches)
    }

    #[test]
    fn the_alias_takes_the_flags_of_ctl_check() {
        CheckAlias::augment_args(clap::Command::new("check")).debug_assert();
        let args = alias(&[
            "--account",
            "a",
            "--feature",
            "f",
            "--ca",
            "ca.pem",
            "--cert",
            "c.pem",
            "--key",
            "c.key",
            "--output",
            "json",
            "--timeout-seconds",
            "3",
        ])
        .unwrap();
        assert_eq!(args.check.endpoint, "https://127.0.0.1:7300");
        assert_eq!(args.global.tls.ca, Some("ca.pem".into()));
        assert_eq!(args.global.tls.key, Some("c.key".into()));
        assert_eq!(args.global.output, Format::Json);
        assert!(alias(&["--account", "a", "--feature", "f", "--output", "text"]).is_err());
    }

    #[test]
    fn a_bad_tls_option_is_a_usage_error() {
        let args = alias(&[
            "--account",
            "a",
            "--feature",
            "f",
            "--endpoint",
            "https://127.0.0.1:1",
            "--ca",
            "/nonexistent/ca.pem",
        ])
        .unwrap();
        assert_eq!(run_alias(args), exit::INVALID_INPUT);
    }
}
