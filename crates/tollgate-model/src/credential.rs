//! Application credentials: what an application presents on a region's
//! check port. The origin issues them and replicates them to every region
//! as a SHA-256 of the secret, so a region verifies a caller locally, cut
//! off from the origin included, and a revocation reaches every region like
//! any other change. Never sent to SDK replicas (`Watch` leaves them out).

use crate::{AccountId, ModelError, ProductId, UnixSeconds};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;

/// Longest credential id, in bytes (`cred-` and 16 hex digits when the
/// origin makes one).
pub const CREDENTIAL_ID_LEN_MAX: usize = 64;
/// Longest credential name, in bytes.
pub const CREDENTIAL_NAME_LEN_MAX: usize = 128;
/// Most accounts, and most products, one credential may name.
pub const CREDENTIAL_TARGETS_MAX: usize = 1000;
/// How a credential token begins: `tgc_<id>.<secret>`.
pub const CREDENTIAL_TOKEN_PREFIX: &str = "tgc_";

/// What a credential lets an application do on a region node.
#[derive(
    utoipa::ToSchema,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// `Check` and `BatchCheck` without consumption; verifying a license.
    Check,
    /// `Watch` of one account it names (needs every product).
    Watch,
    /// `Watch` of every account at once (needs every account and product).
    WatchAll,
    /// `ReportUsage`, and checks that consume.
    ReportUsage,
    /// Acquire, renew and release floating seats.
    Seats,
    /// Issue license tokens at the region.
    IssueLicenses,
}

impl Verb {
    pub const ALL: [Verb; 6] = [
        Verb::Check,
        Verb::Watch,
        Verb::WatchAll,
        Verb::ReportUsage,
        Verb::Seats,
        Verb::IssueLicenses,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Verb::Check => "check",
            Verb::Watch => "watch",
            Verb::WatchAll => "watch_all",
            Verb::ReportUsage => "report_usage",
            Verb::Seats => "seats",
            Verb::IssueLicenses => "issue_licenses",
        }
    }

    pub fn parse(name: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// Which accounts (or products) a credential covers: every one (`"*"` in
/// JSON) or those listed. An empty list covers none, and is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets<T: Ord> {
    Every,
    Only(BTreeSet<T>),
}

impl<T: Ord> Targets<T> {
    pub fn covers(&self, item: &T) -> bool {
        match self {
            Targets::Every => true,
            Targets::Only(set) => set.contains(item),
        }
    }

    pub fn is_every(&self) -> bool {
        matches!(self, Targets::Every)
    }

    fn len(&self) -> Option<usize> {
        match self {
            Targets::Every => None,
            Targets::Only(set) => Some(set.len()),
        }
    }
}

impl<T: Ord + Serialize> Serialize for Targets<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Targets::Every => s.serialize_str("*"),
            Targets::Only(set) => set.serialize(s),
        }
    }
}

impl<'de, T: Ord + Deserialize<'de>> Deserialize<'de> for Targets<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire<T: Ord> {
            Star(String),
            List(BTreeSet<T>),
        }
        match Wire::<T>::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected \"*\" (every one) or a list of ids"))?
        {
            Wire::Star(s) if s == "*" => Ok(Targets::Every),
            Wire::Star(other) => Err(serde::de::Error::custom(format!(
                "expected \"*\" (every one) or a list of ids, got the string {other:?}"
            ))),
            Wire::List(set) => Ok(Targets::Only(set)),
        }
    }
}

/// An application credential as the origin and every region keep it: the
/// secret only as its SHA-256.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppCredential {
    /// Public part of the credential (`cred-...`).
    pub id: String,
    /// What it is for, for people.
    pub name: String,
    /// SHA-256 of the secret, lower-case hex. The secret is 256 random
    /// bits, so a fast hash is enough.
    pub secret_sha256: String,
    /// The accounts it may act for: `"*"` or a list.
    #[schema(value_type = Object)]
    pub accounts: Targets<AccountId>,
    /// The products whose features it may check: `"*"` or a list.
    #[schema(value_type = Object)]
    pub products: Targets<ProductId>,
    pub verbs: BTreeSet<Verb>,
    pub created_at: UnixSeconds,
    /// Set once revoked; a revoked credential is refused everywhere.
    #[serde(default)]
    pub revoked_at: Option<UnixSeconds>,
}

impl AppCredential {
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_credential_id(&self.id)?;
        if self.name.is_empty() || self.name.len() > CREDENTIAL_NAME_LEN_MAX {
            return Err(ModelError::Length {
                kind: "credential name",
                len: self.name.len(),
                max: CREDENTIAL_NAME_LEN_MAX,
            });
        }
        let hex_ok = self.secret_sha256.len() == 64
            && self
                .secret_sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(ModelError::Invalid {
                field: "secret_sha256",
                reason: "must be a SHA-256 in lower-case hex".into(),
            });
        }
        for (field, len) in [
            ("accounts", self.accounts.len()),
            ("products", self.products.len()),
        ] {
            match len {
                Some(0) => {
                    return Err(ModelError::Invalid {
                        field,
                        reason: "names nothing: give \"*\" or at least one id".into(),
                    })
                }
                Some(len) if len > CREDENTIAL_TARGETS_MAX => {
                    return Err(ModelError::TooMany {
                        field,
                        len,
                        max: CREDENTIAL_TARGETS_MAX,
                    })
                }
                _ => {}
            }
        }
        if self.verbs.is_empty() {
            return Err(ModelError::Invalid {
                field: "verbs",
                reason: "at least one verb is needed".into(),
            });
        }
        if self.verbs.contains(&Verb::WatchAll)
            && !(self.accounts.is_every() && self.products.is_every())
        {
            return Err(ModelError::Invalid {
                field: "verbs",
                reason: "watch_all streams every account: it needs accounts and products \"*\""
                    .into(),
            });
        }
        Ok(())
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// 1..=64 bytes of `[a-z0-9-]`, starting with a letter or digit.
pub fn validate_credential_id(id: &str) -> Result<(), ModelError> {
    if id.is_empty() || id.len() > CREDENTIAL_ID_LEN_MAX {
        return Err(ModelError::Length {
            kind: "credential id",
            len: id.len(),
            max: CREDENTIAL_ID_LEN_MAX,
        });
    }
    let ok = id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ModelError::Charset {
            kind: "credential id",
            value: id.chars().take(CREDENTIAL_ID_LEN_MAX).collect(),
        })
    }
}

/// Splits a presented token `tgc_<id>.<secret>` into id and secret, or
/// `None` when it does not have that shape.
pub fn split_credential_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token
        .strip_prefix(CREDENTIAL_TOKEN_PREFIX)?
        .split_once('.')?;
    (validate_credential_id(id).is_ok() && !secret.is_empty() && secret.len() <= 128)
        .then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AppCredential {
        AppCredential {
            id: "cred-0123456789abcdef".into(),
            name: "checkout service".into(),
            secret_sha256: "a".repeat(64),
            accounts: Targets::Only([AccountId::new("acme").unwrap()].into()),
            products: Targets::Every,
            verbs: [Verb::Check].into(),
            created_at: UnixSeconds(1),
            revoked_at: None,
        }
    }

    #[test]
    fn targets_read_a_star_or_a_list_and_nothing_else() {
        let c = sample();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["accounts"], serde_json::json!(["acme"]));
        assert_eq!(json["products"], serde_json::json!("*"));
        assert_eq!(serde_json::from_value::<AppCredential>(json).unwrap(), c);
        for bad in [serde_json::json!("all"), serde_json::json!(7)] {
            let mut json = serde_json::to_value(&c).unwrap();
            json["accounts"] = bad.clone();
            assert!(
                serde_json::from_value::<AppCredential>(json).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn validation_refuses_empty_scopes_and_a_narrow_watch_all() {
        assert!(sample().validate().is_ok());
        type Change = Box<dyn Fn(&mut AppCredential)>;
        let rows: Vec<(&str, Change)> = vec![
            ("no verbs", Box::new(|c| c.verbs.clear())),
            (
                "no accounts",
                Box::new(|c| c.accounts = Targets::Only(BTreeSet::new())),
            ),
            (
                "narrow watch_all",
                Box::new(|c| {
                    c.verbs.insert(Verb::WatchAll);
                }),
            ),
            ("bad id", Box::new(|c| c.id = "Cred/1".into())),
            ("bad hash", Box::new(|c| c.secret_sha256 = "x".into())),
            ("empty name", Box::new(|c| c.name.clear())),
        ];
        for (name, change) in rows {
            let mut c = sample();
            change(&mut c);
            assert!(c.validate().is_err(), "{name} was accepted");
        }
    }

    #[test]
    fn tokens_split_only_in_their_one_shape() {
        assert_eq!(
            split_credential_token("tgc_cred-1.s3cret"),
            Some(("cred-1", "s3cret"))
        );
        for bad in [
            "tg_cred-1.s",
            "tgc_cred-1",
            "tgc_.s",
            "tgc_Cred.s",
            "tgc_cred-1.",
        ] {
            assert_eq!(split_credential_token(bad), None, "{bad}");
        }
    }
}
