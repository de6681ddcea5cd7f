//! `ctl geo lookup`: what a region node would make of an IP address, with
//! the same code (`tollgate-geo`) and the same validation of the files.

use super::table::print_fields;
use super::{exit, format_time, print_json, CtlError, CtlResult, Format, Global};
use clap::{Args, Subcommand};
use serde_json::json;
use std::net::IpAddr;
use std::path::PathBuf;
use tollgate_geo::{GeoConfig, GeoDatabases};

#[derive(Debug, Subcommand)]
pub enum GeoCommand {
    /// Resolve an IP address into the facts the engine decides on:
    /// country, continent, subdivisions, anonymous network.
    Lookup(LookupArgs),
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    /// A MaxMind City or Country database (GeoIP2 or GeoLite2).
    #[arg(long)]
    db: PathBuf,
    /// MaxMind's Anonymous IP database (without it, "anonymous" is unknown).
    #[arg(long)]
    anonymous_db: Option<PathBuf>,
    /// The address, IPv4 or IPv6.
    ip: String,
}

pub fn run(global: &Global, command: GeoCommand) -> CtlResult<u8> {
    let GeoCommand::Lookup(args) = command;
    let ip: IpAddr = args
        .ip
        .parse()
        .map_err(|_| CtlError::usage(format!("{:?} is not an IP address", args.ip)))?;
    let mut config = GeoConfig::new(&args.db);
    if let Some(path) = &args.anonymous_db {
        config = config.with_anonymous(path);
    }
    let databases = GeoDatabases::open(&config)
        .map_err(|e| CtlError::new(exit::INVALID_INPUT, e.reason(), e.to_string()))?;
    let facts = databases
        .resolve(ip)
        .map_err(|e| CtlError::new(exit::FAILURE, e.reason(), e.to_string()))?;
    let health = databases.health();
    match global.output {
        Format::Json => print_json(&json!({
            "ip": ip.to_string(),
            "facts": facts,
            "databases": health,
        })),
        Format::Table => {
            let anonymous = match &facts.anonymous {
                None => "unknown (no anonymous IP database)".to_string(),
                Some(a) if !a.is_anonymous() => "no".to_string(),
                Some(a) => {
                    let kinds: Vec<&str> = [
                        (a.vpn, "vpn"),
                        (a.tor_exit_node, "tor exit node"),
                        (a.public_proxy, "public proxy"),
                        (a.residential_proxy, "residential proxy"),
                        (a.hosting_provider, "hosting provider"),
                    ]
                    .into_iter()
                    .filter_map(|(set, name)| set.then_some(name))
                    .collect();
                    format!("yes: {}", kinds.join(", "))
                }
            };
            let subdivisions: Vec<String> =
                facts.subdivisions.iter().map(|s| s.to_string()).collect();
            let mut fields = vec![
                ("ip", ip.to_string()),
                (
                    "country",
                    facts
                        .country
                        .as_ref()
                        .map_or("unknown".into(), |c| c.to_string()),
                ),
                (
                    "continent",
                    facts
                        .continent
                        .as_ref()
                        .map_or("unknown".into(), |c| c.to_string()),
                ),
                (
                    "subdivisions",
                    if subdivisions.is_empty() {
                        "-".into()
                    } else {
                        subdivisions.join(", ")
                    },
                ),
                ("anonymous", anonymous),
                (
                    "location db",
                    format!(
                        "{}, built {}",
                        health.location.database_type,
                        format_time(health.location.build_epoch_seconds as i64)
                    ),
                ),
            ];
            if let Some(a) = &health.anonymous {
                fields.push((
                    "anonymous db",
                    format!(
                        "{}, built {}",
                        a.database_type,
                        format_time(a.build_epoch_seconds as i64)
                    ),
                ));
            }
            print_fields(&fields);
        }
    }
    Ok(exit::OK)
}
