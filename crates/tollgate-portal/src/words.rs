//! Entitlements in words a customer understands: "Europe only", "works
//! offline for 3 days", "1,000 exports a month".

use tollgate_model::{
    AfterGrace, Continent, EntitlementStatus, GeoRule, OfflinePolicy, SeatMode, Seats, UnixSeconds,
    UnknownLocation, UsageCap, UsagePeriod,
};

/// `2026-12-05` for a Unix time (UTC).
pub fn date(at: UnixSeconds) -> String {
    let (y, m, d) = civil_from_days(at.0.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `2026-12-05 14:03 UTC`.
pub fn date_time(at: UnixSeconds) -> String {
    let seconds = at.0.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02} UTC",
        date(at),
        seconds / 3600,
        (seconds % 3600) / 60
    )
}

/// Year, month, day of a day number (days since 1970-01-01), by Howard
/// Hinnant's civil-from-days.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The day number of a civil date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `1,234,567`.
pub fn number(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "3 days", "12 hours", "45 minutes".
pub fn duration(seconds: u64) -> String {
    let plural = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{} {unit}s", number(n))
        }
    };
    match seconds {
        s if s >= 86_400 && s.is_multiple_of(86_400) => plural(s / 86_400, "day"),
        s if s >= 3_600 && s.is_multiple_of(3_600) => plural(s / 3_600, "hour"),
        s if s >= 60 && s.is_multiple_of(60) => plural(s / 60, "minute"),
        s if s >= 86_400 => format!("about {}", plural(s / 86_400, "day")),
        s if s >= 3_600 => format!("about {}", plural(s / 3_600, "hour")),
        s => plural(s, "second"),
    }
}

pub fn status(status: EntitlementStatus) -> (&'static str, &'static str) {
    match status {
        EntitlementStatus::Active => ("Active", "status-active"),
        EntitlementStatus::Suspended => ("Suspended", "status-suspended"),
        EntitlementStatus::Revoked => ("Revoked", "status-revoked"),
    }
}

/// "From 2026-01-01 until 2027-01-01, then 14 days' grace" / "From
/// 2026-01-01, with no end".
pub fn validity(from: UnixSeconds, until: Option<UnixSeconds>, grace_seconds: u64) -> String {
    match until {
        None => format!("From {}, with no end date", date(from)),
        Some(until) if grace_seconds > 0 => format!(
            "From {} until {}, then {} of grace",
            date(from),
            date(until),
            duration(grace_seconds)
        ),
        Some(until) => format!("From {} until {}", date(from), date(until)),
    }
}

pub fn seats(seats: Option<&Seats>) -> String {
    match seats {
        None => "No seat limit".to_string(),
        Some(Seats {
            count,
            mode: SeatMode::Named { assigned },
        }) => format!(
            "{} named seat{} ({} assigned)",
            number(u64::from(*count)),
            if *count == 1 { "" } else { "s" },
            assigned.len()
        ),
        Some(Seats {
            count,
            mode: SeatMode::Floating { lease_ttl_seconds },
        }) => format!(
            "{} floating seat{}, shared by anyone in your team; a seat is freed {} after its last use",
            number(u64::from(*count)),
            if *count == 1 { "" } else { "s" },
            duration(u64::from(*lease_ttl_seconds))
        ),
    }
}

fn period_word(period: UsagePeriod) -> &'static str {
    match period {
        UsagePeriod::Day => "a day",
        UsagePeriod::Month => "a month",
        UsagePeriod::Lifetime => "in all",
    }
}

/// "1,000 exports a month (hard limit)".
pub fn cap(cap: Option<&UsageCap>, unit: &str, period: UsagePeriod) -> String {
    match cap {
        None => format!("Unlimited {unit}"),
        Some(c) => {
            let how = match c.enforcement {
                tollgate_model::CapEnforcement::Hard => "stops at the limit",
                tollgate_model::CapEnforcement::Soft => "use past it is billed as overage",
            };
            let top_up = if c.additive {
                ", added to your other limits"
            } else {
                ""
            };
            format!(
                "{} {unit} {}{top_up} ({how})",
                number(c.limit),
                period_word(period)
            )
        }
    }
}

fn continent_name(c: &Continent) -> &'static str {
    match c {
        Continent::Africa => "Africa",
        Continent::Antarctica => "Antarctica",
        Continent::Asia => "Asia",
        Continent::Europe => "Europe",
        Continent::NorthAmerica => "North America",
        Continent::Oceania => "Oceania",
        Continent::SouthAmerica => "South America",
    }
}

fn join<I: IntoIterator<Item = String>>(items: I) -> String {
    items.into_iter().collect::<Vec<_>>().join(", ")
}

/// Where it may be used, in words; `None` for a rule that limits nothing.
pub fn geography(rule: &GeoRule) -> Option<String> {
    let mut parts = Vec::new();
    let allowed: Vec<String> = rule
        .allow_continents
        .iter()
        .map(|c| continent_name(c).to_string())
        .chain(rule.allow_countries.iter().map(|c| c.to_string()))
        .chain(
            rule.allow_subdivisions
                .iter()
                .map(|s| s.as_str().to_string()),
        )
        .collect();
    if !allowed.is_empty() {
        parts.push(format!("Only in {}", join(allowed)));
    }
    let denied: Vec<String> = rule
        .deny_continents
        .iter()
        .map(|c| continent_name(c).to_string())
        .chain(rule.deny_countries.iter().map(|c| c.to_string()))
        .chain(
            rule.deny_subdivisions
                .iter()
                .map(|s| s.as_str().to_string()),
        )
        .collect();
    if !denied.is_empty() {
        parts.push(format!("Not in {}", join(denied)));
    }
    if rule.block_anonymous {
        parts.push("not through VPNs, Tor or anonymous proxies".to_string());
    }
    let has_lists = !rule.allow_continents.is_empty()
        || !rule.allow_countries.is_empty()
        || !rule.allow_subdivisions.is_empty()
        || !rule.deny_continents.is_empty()
        || !rule.deny_countries.is_empty()
        || !rule.deny_subdivisions.is_empty();
    match rule.unknown_location {
        Some(UnknownLocation::Deny) => {
            parts.push("only where your location can be determined".to_string())
        }
        None if has_lists => parts.push("only where your location can be determined".to_string()),
        Some(UnknownLocation::Allow) if has_lists => {
            parts.push("also where your location cannot be determined".to_string())
        }
        _ => {}
    }
    if parts.is_empty() {
        None
    } else {
        let mut text = parts.join("; ");
        if let Some(first) = text.get(0..1) {
            let upper = first.to_uppercase();
            text.replace_range(0..1, &upper);
        }
        Some(text)
    }
}

/// How it behaves while cut off, in words.
pub fn offline(policy: &OfflinePolicy) -> String {
    let grace = duration(policy.offline_grace_seconds);
    match policy.after_grace {
        AfterGrace::Allow => {
            format!("Keeps working offline; checks may use data older than {grace} after that")
        }
        AfterGrace::Deny => {
            format!("Works offline for up to {grace}, then stops until back online")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_match_known_days() {
        assert_eq!(date(UnixSeconds(0)), "1970-01-01");
        assert_eq!(date(UnixSeconds(1_796_515_200)), "2026-12-06");
        for day in [-800_000i64, -1, 0, 59, 60, 10_957, 20_793, 2_000_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day, "day {day}");
        }
    }

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(number(0), "0");
        assert_eq!(number(1_000), "1,000");
        assert_eq!(number(1_234_567), "1,234,567");
        assert_eq!(duration(3 * 86_400), "3 days");
        assert_eq!(duration(3_600), "1 hour");
        assert_eq!(duration(90), "90 seconds");
    }

    #[test]
    fn a_europe_only_rule_says_so_and_fails_closed_on_unknown_location() {
        let rule: GeoRule = serde_json::from_str(r#"{"allow_continents":["EU"]}"#).unwrap();
        let words = geography(&rule).unwrap();
        assert!(words.starts_with("Only in Europe"), "{words}");
        assert!(words.contains("location can be determined"), "{words}");
        assert_eq!(geography(&GeoRule::default()), None);
    }
}
