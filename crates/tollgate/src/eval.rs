//! `tollgate eval`: decide one check against a data set, offline.

use crate::{exit, Output};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use tollgate_engine::{
    decide, AccountView, Check, Decision, Environment, Freshness, LiveState, SeatLease,
};
use tollgate_model::{
    AccountId, AnonymousNetwork, Continent, CountryCode, Dataset, EntitlementId, FeatureId,
    GeoFacts, PeriodKey, SubdivisionCode, SubjectId, UnixSeconds,
};

/// The demo data set `tollgate dev` will also seed: a product with plans,
/// add-ons, a metered and a geo-fenced feature, and four accounts.
pub const DEMO_DATA: &str = include_str!("../data/demo.json");

/// Largest data file read, in bytes.
const DATA_FILE_LEN_MAX: u64 = 64 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A data set (JSON: catalog, accounts, subjects, entitlements). Without
    /// it, the built-in demo data is used.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The account checked.
    #[arg(long)]
    account: String,
    /// The feature checked.
    #[arg(long)]
    feature: String,
    /// The user or device checking.
    #[arg(long)]
    subject: Option<String>,
    /// Units of a metered feature to consume.
    #[arg(long, default_value_t = 0)]
    consume: u64,
    /// Units of the feature already consumed this period.
    #[arg(long, default_value_t = 0)]
    consumed: u64,
    /// Subjects holding a floating seat of any entitlement (repeatable).
    #[arg(long = "seat-held-by")]
    seat_held_by: Vec<String>,
    /// Caller's country (ISO 3166-1 alpha-2).
    #[arg(long)]
    country: Option<String>,
    /// Caller's continent (AF, AN, AS, EU, NA, OC, SA).
    #[arg(long)]
    continent: Option<String>,
    /// Caller's subdivision (ISO 3166-2, e.g. US-CA; repeatable).
    #[arg(long)]
    subdivision: Vec<String>,
    /// The caller is on an anonymous network (VPN, Tor, proxy, hosting).
    #[arg(long)]
    anonymous: bool,
    /// Decide as of this instant (Unix seconds) instead of now.
    #[arg(long)]
    now: Option<i64>,
    /// Pretend the region last heard from the origin this many seconds ago.
    #[arg(long, default_value_t = 0)]
    stale_seconds: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

/// Usage and leases as given on the command line.
struct CliLive {
    consumed: u64,
    leases: Vec<SeatLease>,
}

impl LiveState for CliLive {
    fn usage_consumed(&self, _: &AccountId, _: &FeatureId, _: PeriodKey) -> u64 {
        self.consumed
    }
    fn floating_leases(&self, _: &EntitlementId) -> &[SeatLease] {
        &self.leases
    }
}

pub fn run(args: EvalArgs) -> u8 {
    let parsed = match parse(&args) {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("error: {error:#}");
            return exit::INVALID_INPUT;
        }
    };
    let (dataset, check, geo, live, now) = parsed;
    let freshness = Freshness {
        applied_revision: 0,
        last_origin_contact: Some(UnixSeconds(now.0.saturating_sub(args.stale_seconds as i64))),
    };
    let view = dataset
        .accounts
        .iter()
        .find(|a| a.id == check.account)
        .map(|account| {
            let (subjects, entitlements) = dataset.of_account(&account.id);
            AccountView::build(
                account.clone(),
                subjects.cloned(),
                entitlements.cloned(),
                &dataset.catalog,
            )
        });
    let env = Environment {
        catalog: &dataset.catalog,
        live: &live,
        freshness,
        now,
    };
    let decision = decide(&check, view.as_ref(), &geo, &env);
    if let Err(error) = print(&check, &decision, args.output) {
        eprintln!("error: {error:#}");
        return exit::FAILURE;
    }
    if decision.allowed() {
        exit::OK
    } else {
        exit::DENIED
    }
}

type Parsed = (Dataset, Check, GeoFacts, CliLive, UnixSeconds);

fn parse(args: &EvalArgs) -> anyhow::Result<Parsed> {
    let dataset: Dataset = match &args.data {
        None => serde_json::from_str(DEMO_DATA).context("the built-in demo data")?,
        Some(path) => {
            let len = std::fs::metadata(path)
                .with_context(|| format!("reading {}", path.display()))?
                .len();
            anyhow::ensure!(
                len <= DATA_FILE_LEN_MAX,
                "{} is {len} bytes; at most {DATA_FILE_LEN_MAX} are read",
                path.display()
            );
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid data set", path.display()))?
        }
    };
    dataset.validate().context("the data set is invalid")?;

    let check = Check {
        account: AccountId::new(args.account.as_str()).context("--account")?,
        subject: args
            .subject
            .as_deref()
            .map(SubjectId::new)
            .transpose()
            .context("--subject")?,
        feature: FeatureId::new(args.feature.as_str()).context("--feature")?,
        consume: args.consume,
    };
    let country = args
        .country
        .as_deref()
        .map(CountryCode::new)
        .transpose()
        .context("--country")?;
    let geo = GeoFacts {
        country,
        continent: args
            .continent
            .as_deref()
            .map(Continent::from_code)
            .transpose()
            .context("--continent")?,
        subdivisions: args
            .subdivision
            .iter()
            .map(|s| SubdivisionCode::new(s))
            .collect::<Result<_, _>>()
            .context("--subdivision")?,
        anonymous: Some(AnonymousNetwork {
            vpn: args.anonymous,
            ..Default::default()
        }),
    };
    let now = match args.now {
        Some(t) => UnixSeconds(t),
        None => {
            let since = tollgate_clock::Clock::system()
                .since_epoch()
                .context("the system clock is before 1970")?;
            UnixSeconds(i64::try_from(since.as_secs()).context("the system clock is past 2^63 s")?)
        }
    };
    let leases = args
        .seat_held_by
        .iter()
        .map(|holder| {
            Ok(SeatLease {
                holder: SubjectId::new(holder.as_str()).context("--seat-held-by")?,
                expires_at: now.plus_seconds(60),
                acquired_at: None,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((
        dataset,
        check,
        geo,
        CliLive {
            consumed: args.consumed,
            leases,
        },
        now,
    ))
}

fn print(check: &Check, d: &Decision, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            let mut value = serde_json::to_value(d)?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("allowed".into(), d.allowed().into());
                obj.insert("explanation".into(), d.explain().into());
            }
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Output::Text => {
            let subject = check.subject.as_ref().map_or("-", |s| s.as_str());
            println!(
                "{}  {} / {} / {}",
                d.reason, check.account, subject, check.feature
            );
            println!("  {}", d.explain());
            if let Some(e) = &d.entitlement {
                println!("  entitlement: {e}");
            }
            if let Some(until) = d.valid_until {
                println!("  valid until: {until}");
            }
            if let Some(limit) = d.limit {
                println!(
                    "  usage: limit {limit}, remaining {}",
                    d.remaining.map_or("-".to_string(), |r| r.to_string())
                );
            }
            if let Some(seats) = &d.seats {
                println!("  seats: {} of {} in use", seats.used, seats.total);
            }
            if !d.config.is_empty() {
                let pairs: Vec<String> = d.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("  config: {}", pairs.join(" "));
            }
        }
    }
    Ok(())
}
