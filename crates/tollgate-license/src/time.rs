//! RFC 3339 timestamps for the PASETO registered claims (`iat`, `nbf`,
//! `exp`), in exactly one spelling: `YYYY-MM-DDTHH:MM:SSZ`.
//!
//! Why hand-written rather than a date crate: the one format is 20 bytes of
//! fixed layout, and accepting only our own canonical spelling (no
//! fractions, no offsets, no leap seconds, no lower-case `t`) is stricter
//! than any general RFC 3339 parser, which is what a verifier wants.

use serde::{de, Deserializer, Serializer};
use std::fmt;
use tollgate_model::UnixSeconds;

const SECONDS_PER_DAY: i64 = 86_400;
/// `0000-01-01T00:00:00Z`: the first instant with a four-digit year.
const RFC3339_SECONDS_MIN: i64 = -62_167_219_200;
/// `9999-12-31T23:59:59Z`: the last instant with a four-digit year.
const RFC3339_SECONDS_MAX: i64 = 253_402_300_799;

/// `2026-11-28T07:00:00Z`; `None` outside years 0000..=9999, which RFC 3339
/// cannot spell.
pub fn format_rfc3339(t: UnixSeconds) -> Option<String> {
    // The model's Display is this format for four-digit years.
    is_rfc3339_range(t).then(|| t.to_string())
}

/// Whether `t` falls in the years 0000..=9999, which RFC 3339 can spell.
pub(crate) fn is_rfc3339_range(t: UnixSeconds) -> bool {
    (RFC3339_SECONDS_MIN..=RFC3339_SECONDS_MAX).contains(&t.0)
}

/// Parses exactly `YYYY-MM-DDTHH:MM:SSZ` (UTC, upper-case `T` and `Z`, no
/// fraction, no offset, second 00..=59, a real calendar day); `None` for
/// anything else.
pub fn parse_rfc3339(text: &str) -> Option<UnixSeconds> {
    let b = text.as_bytes();
    let layout_ok = b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z';
    if !layout_ok {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<i64> {
        b.get(from..to)?.iter().try_fold(0i64, |acc, &digit| {
            digit
                .is_ascii_digit()
                .then(|| acc * 10 + i64::from(digit - b'0'))
        })
    };
    let year = number(0, 4)?;
    let month = number(5, 7)?;
    let day = number(8, 10)?;
    let hour = number(11, 13)?;
    let minute = number(14, 16)?;
    let second = number(17, 19)?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(UnixSeconds(
        days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second,
    ))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Day count since 1970-01-01 of a proleptic Gregorian date (Howard
/// Hinnant's `days_from_civil`, as in the model).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `#[serde(with = "rfc3339")]` for a [`UnixSeconds`] claim.
pub(crate) mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(t: &UnixSeconds, s: S) -> Result<S::Ok, S::Error> {
        match format_rfc3339(*t) {
            Some(text) => s.serialize_str(&text),
            None => Err(serde::ser::Error::custom(format!(
                "{} is outside the years 0000..=9999 that RFC 3339 can spell",
                t.0
            ))),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<UnixSeconds, D::Error> {
        d.deserialize_str(Rfc3339Visitor)
    }

    struct Rfc3339Visitor;

    impl de::Visitor<'_> for Rfc3339Visitor {
        type Value = UnixSeconds;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an RFC 3339 UTC timestamp of the form 2026-11-28T07:00:00Z")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<UnixSeconds, E> {
            // The input is not echoed: it is attacker-controlled and unbounded.
            parse_rfc3339(text).ok_or_else(|| {
                E::invalid_value(de::Unexpected::Other("a timestamp in another form"), &self)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_the_canonical_spelling() {
        let t = parse_rfc3339("2026-11-28T07:00:00Z").unwrap();
        assert_eq!(format_rfc3339(t).as_deref(), Some("2026-11-28T07:00:00Z"));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(UnixSeconds(0)));
        assert_eq!(
            parse_rfc3339("0000-01-01T00:00:00Z"),
            Some(UnixSeconds(RFC3339_SECONDS_MIN))
        );
        assert_eq!(
            parse_rfc3339("9999-12-31T23:59:59Z"),
            Some(UnixSeconds(RFC3339_SECONDS_MAX))
        );
        assert_eq!(format_rfc3339(UnixSeconds(RFC3339_SECONDS_MAX + 1)), None);
        assert_eq!(format_rfc3339(UnixSeconds(RFC3339_SECONDS_MIN - 1)), None);
        assert_eq!(
            parse_rfc3339("2028-02-29T23:59:59Z")
                .and_then(format_rfc3339)
                .as_deref(),
            Some("2028-02-29T23:59:59Z")
        );
    }

    #[test]
    fn round_trips_across_the_range() {
        let mut t = RFC3339_SECONDS_MIN;
        while t <= RFC3339_SECONDS_MAX {
            let text = format_rfc3339(UnixSeconds(t)).unwrap();
            assert_eq!(parse_rfc3339(&text), Some(UnixSeconds(t)), "{text}");
            t += 7_777_777 + 13;
        }
    }

    #[test]
    fn refuses_every_other_spelling() {
        for bad in [
            "",
            "2026-11-28T07:00:00",
            "2026-11-28T07:00:00z",
            "2026-11-28t07:00:00Z",
            "2026-11-28 07:00:00Z",
            "2026-11-28T07:00:00.0Z",
            "2026-11-28T07:00:00+00:00",
            "2026-11-28T07:00:60Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T07:60:00Z",
            "2026-13-28T07:00:00Z",
            "2026-00-28T07:00:00Z",
            "2026-11-00T07:00:00Z",
            "2026-11-31T07:00:00Z",
            "2027-02-29T07:00:00Z",
            "1900-02-29T07:00:00Z",
            "+026-11-28T07:00:00Z",
            "2026-1a-28T07:00:00Z",
            " 2026-11-28T07:00:00Z",
            "２026-11-28T07:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }
}
