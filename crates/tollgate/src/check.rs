//! `tollgate check`: one check against a running region node, explained.

use crate::ctl::tls::{status_cause, ClientTlsArgs, ConnectError};
use crate::{exit, Output};
use clap::Args;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The region node's check endpoint, `https://host:port` (`http://`
    /// for a node running with tls.insecure_plaintext).
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
    #[arg(long)]
    subject: Option<String>,
    /// The caller's IP, resolved by the node's geography databases.
    #[arg(long)]
    ip: Option<String>,
    /// Wait until the node has applied this origin revision (the revision an
    /// origin write returned).
    #[arg(long)]
    at_least_revision: Option<u64>,
    /// Give up after this long (connecting and answering).
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

pub fn run(args: CheckArgs) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: {error}");
            return exit::FAILURE;
        }
    };
    runtime.block_on(check(args))
}

/// The check the flags ask, with its ids and IP checked here as the node
/// would check them; the error says which flag.
fn check_request(args: &CheckArgs) -> Result<tollgate_engine::CheckRequest, String> {
    use tollgate_engine::{Check, CheckRequest, Consistency, Location};
    use tollgate_model::{AccountId, FeatureId, SubjectId};
    Ok(CheckRequest {
        check: Check {
            account: AccountId::new(args.account.as_str())
                .map_err(|e| format!("--account: {e}"))?,
            subject: args
                .subject
                .as_deref()
                .map(SubjectId::new)
                .transpose()
                .map_err(|e| format!("--subject: {e}"))?,
            feature: FeatureId::new(args.feature.as_str())
                .map_err(|e| format!("--feature: {e}"))?,
            consume: 0,
        },
        location: match &args.ip {
            None => Location::Unknown,
            Some(ip) => Location::Ip(
                ip.parse()
                    .map_err(|_| format!("--ip {ip:?}: not an IPv4 or IPv6 address"))?,
            ),
        },
        consistency: args
            .at_least_revision
            .map_or(Consistency::Local, Consistency::AtLeastRevision),
        idempotency_key: None,
    })
}

async fn check(args: CheckArgs) -> u8 {
    use tollgate_proto::check::v1 as pb;
    use tollgate_proto::convert::Explained;
    let request = match check_request(&args) {
        // A tool shows the node's explanation.
        Ok(request) => pb::CheckRequest::from(Explained(request)),
        Err(error) => {
            eprintln!("error: {error}");
            return exit::INVALID_INPUT;
        }
    };
    let timeout = std::time::Duration::from_millis(args.timeout_ms.max(1));
    let mut client = match args.tls.app_channel(&args.endpoint, timeout).await {
        Ok(channel) => pb::check_service_client::CheckServiceClient::new(channel),
        Err(ConnectError::Usage(error)) => {
            eprintln!("error: {}: {error}", args.endpoint);
            return exit::INVALID_INPUT;
        }
        Err(ConnectError::Unreachable(error)) => {
            eprintln!("error: {error}");
            return exit::FAILURE;
        }
    };
    // The deadline travels with the request (grpc-timeout), so a node
    // waiting for --at-least-revision answers before the client gives up.
    let mut request = tonic::Request::new(request);
    request.set_timeout(timeout);
    let reply = match client.check(request).await {
        Ok(reply) => reply.into_inner(),
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            eprintln!("error: {}", status.message());
            return exit::INVALID_INPUT;
        }
        Err(status) => {
            eprintln!(
                "error: {:?}: {}{}",
                status.code(),
                status.message(),
                status_cause(&status)
            );
            return exit::FAILURE;
        }
    };
    let Some(decision) = reply.decision else {
        eprintln!("error: the node answered without a decision");
        return exit::FAILURE;
    };
    let reason = decision
        .reason()
        .as_str_name()
        .trim_start_matches("REASON_")
        .to_string();
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "allowed": decision.allowed,
                "reason": reason,
                "entitlement": decision.entitlement_id,
                "explanation": decision.explanation,
                "revision": reply.revision,
                "staleness_seconds": reply.staleness_seconds,
                "answered_by": reply.answered_by,
            })
        ),
        Output::Text => {
            println!(
                "{reason}  {} / {} / {}",
                args.account,
                args.subject.as_deref().unwrap_or("-"),
                args.feature
            );
            println!("  {}", decision.explanation);
            println!(
                "  answered by {} at revision {}, {} s since the region heard from the origin",
                reply.answered_by,
                reply.revision,
                reply
                    .staleness_seconds
                    .map_or("never".into(), |s| s.to_string())
            );
        }
    }
    if decision.allowed {
        exit::OK
    } else {
        exit::DENIED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches as _;

    #[test]
    fn tls_options_parse() {
        let command = CheckArgs::augment_args(clap::Command::new("check"));
        command.clone().debug_assert();
        let matches = command
            .try_get_matches_from([
                "check",
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
            ])
            .unwrap();
        let args = CheckArgs::from_arg_matches(&matches).unwrap();
        assert_eq!(args.endpoint, "https://127.0.0.1:7300");
        assert_eq!(args.tls.ca, Some("ca.pem".into()));
        assert_eq!(args.tls.key, Some("c.key".into()));
    }

    #[test]
    fn a_bad_tls_option_is_a_usage_error() {
        let command = CheckArgs::augment_args(clap::Command::new("check"));
        let matches = command
            .try_get_matches_from([
                "check",
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
        let args = CheckArgs::from_arg_matches(&matches).unwrap();
        assert_eq!(run(args), exit::INVALID_INPUT);
    }
}
