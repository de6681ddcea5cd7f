//! Time as the model sees it: Unix seconds, passed in by the caller (the
//! model and engine never read a clock), and the UTC calendar periods that
//! usage counters roll over on.

use serde::{Deserialize, Serialize};
use std::fmt;

const SECONDS_PER_DAY: i64 = 86_400;

/// An instant, in whole seconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixSeconds(pub i64);

impl UnixSeconds {
    /// `self + seconds`, saturating instead of overflowing.
    pub fn plus_seconds(self, seconds: u64) -> UnixSeconds {
        UnixSeconds(
            self.0
                .saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX)),
        )
    }

    /// Whole seconds from `earlier` to `self`; zero if `earlier` is later.
    pub fn seconds_since(self, earlier: UnixSeconds) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0)
    }
}

impl fmt::Debug for UnixSeconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnixSeconds({})", self.0)
    }
}

impl fmt::Display for UnixSeconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(self.0.div_euclid(SECONDS_PER_DAY));
        let s = self.0.rem_euclid(SECONDS_PER_DAY);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            s / 3600,
            (s / 60) % 60,
            s % 60
        )
    }
}

/// The period over which a metered feature's usage is counted and capped.
/// Periods roll over at UTC boundaries.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsagePeriod {
    Day,
    Month,
    Lifetime,
}

/// Identifies one period of a [`UsagePeriod`]: the counter key. Two instants
/// in the same UTC day (or month) have the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeriodKey {
    pub period: UsagePeriodTag,
    /// Days since the epoch (day), `year * 12 + month - 1` (month), 0 (lifetime).
    pub index: i64,
}

impl PeriodKey {
    /// The key of the same kind of period containing `now` (for telling
    /// whether this one is over).
    pub fn current(self, now: UnixSeconds) -> PeriodKey {
        let period = match self.period {
            UsagePeriodTag::Day => UsagePeriod::Day,
            UsagePeriodTag::Month => UsagePeriod::Month,
            UsagePeriodTag::Lifetime => UsagePeriod::Lifetime,
        };
        period.key_at(now)
    }
}

/// `day-20500`, `month-24322`, `lifetime-0`: the spelling used in keys, on
/// the wire and in reports.
impl std::fmt::Display for PeriodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = match self.period {
            UsagePeriodTag::Day => "day",
            UsagePeriodTag::Month => "month",
            UsagePeriodTag::Lifetime => "lifetime",
        };
        write!(f, "{tag}-{}", self.index)
    }
}

impl std::str::FromStr for PeriodKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (tag, index) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?} is not a period such as month-24322"))?;
        let period = match tag {
            "day" => UsagePeriodTag::Day,
            "month" => UsagePeriodTag::Month,
            "lifetime" => UsagePeriodTag::Lifetime,
            _ => return Err(format!("{tag:?} is not day, month or lifetime")),
        };
        let index = index
            .parse()
            .map_err(|_| format!("{index:?} is not a period number"))?;
        Ok(PeriodKey { period, index })
    }
}

/// One usage counter: an account's use of a feature in one period.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UsageCounter {
    pub account: crate::AccountId,
    pub feature: crate::FeatureId,
    pub period: PeriodKey,
}

impl std::fmt::Display for UsageCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.account, self.feature, self.period)
    }
}

/// [`UsagePeriod`] in a form that orders, for use inside keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsagePeriodTag {
    Day,
    Month,
    Lifetime,
}

impl UsagePeriod {
    fn tag(self) -> UsagePeriodTag {
        match self {
            UsagePeriod::Day => UsagePeriodTag::Day,
            UsagePeriod::Month => UsagePeriodTag::Month,
            UsagePeriod::Lifetime => UsagePeriodTag::Lifetime,
        }
    }

    /// The period containing `now`.
    pub fn key_at(self, now: UnixSeconds) -> PeriodKey {
        let days = now.0.div_euclid(SECONDS_PER_DAY);
        let index = match self {
            UsagePeriod::Day => days,
            UsagePeriod::Month => {
                let (y, m, _) = civil_from_days(days);
                y * 12 + i64::from(m) - 1
            }
            UsagePeriod::Lifetime => 0,
        };
        PeriodKey {
            period: self.tag(),
            index,
        }
    }

    /// When the period containing `now` ends (the next one starts); `None`
    /// for lifetime.
    pub fn resets_at(self, now: UnixSeconds) -> Option<UnixSeconds> {
        let days = now.0.div_euclid(SECONDS_PER_DAY);
        match self {
            UsagePeriod::Day => Some(UnixSeconds((days + 1) * SECONDS_PER_DAY)),
            UsagePeriod::Month => {
                let (y, m, _) = civil_from_days(days);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                Some(UnixSeconds(days_from_civil(ny, nm, 1) * SECONDS_PER_DAY))
            }
            UsagePeriod::Lifetime => None,
        }
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Day count since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // 2026-11-27T23:21:02Z
    const NOW: UnixSeconds = UnixSeconds(1_795_821_662);

    #[test]
    fn displays_as_rfc3339_utc() {
        assert_eq!(UnixSeconds(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(NOW.to_string(), "2026-11-27T23:21:02Z");
    }

    #[test]
    fn periods_roll_over_at_utc_boundaries() {
        let dec_1 = UnixSeconds(days_from_civil(2026, 12, 1) * SECONDS_PER_DAY);
        assert_eq!(UsagePeriod::Month.resets_at(NOW), Some(dec_1));
        assert_ne!(
            UsagePeriod::Month.key_at(UnixSeconds(dec_1.0 - 1)),
            UsagePeriod::Month.key_at(dec_1)
        );
        assert_eq!(
            UsagePeriod::Month.key_at(NOW),
            UsagePeriod::Month.key_at(UnixSeconds(dec_1.0 - 1))
        );
        let next_day = UsagePeriod::Day.resets_at(NOW).unwrap();
        assert_eq!(next_day.to_string(), "2026-11-28T00:00:00Z");
        assert_eq!(UsagePeriod::Lifetime.resets_at(NOW), None);
        let jan = UnixSeconds(days_from_civil(2027, 1, 1) * SECONDS_PER_DAY);
        assert_eq!(
            UsagePeriod::Month.resets_at(UnixSeconds(jan.0 - 1)),
            Some(jan)
        );
    }

    proptest! {
        #[test]
        fn civil_round_trips(days in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn an_instant_lies_inside_its_period(t in 0i64..4_000_000_000) {
            let now = UnixSeconds(t);
            for p in [UsagePeriod::Day, UsagePeriod::Month] {
                let end = p.resets_at(now).unwrap();
                prop_assert!(end > now);
                prop_assert_eq!(p.key_at(UnixSeconds(end.0 - 1)), p.key_at(now));
                prop_assert_ne!(p.key_at(end), p.key_at(now));
            }
        }
    }
}
