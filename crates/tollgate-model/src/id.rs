//! Validated identifiers. Every id that crosses an API boundary is one of
//! these newtypes, never a bare string: 1..=128 bytes of `[A-Za-z0-9._:@-]`,
//! starting with a letter or digit. The charset keeps ids safe in URLs, sled
//! keys (where `/` and NUL are separators) and log lines.

use crate::ModelError;
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;

/// Longest identifier accepted, in bytes.
pub const ID_LEN_MAX: usize = 128;

fn validate_id(kind: &'static str, value: &str) -> Result<(), ModelError> {
    if value.is_empty() || value.len() > ID_LEN_MAX {
        return Err(ModelError::Length {
            kind,
            len: value.len(),
            max: ID_LEN_MAX,
        });
    }
    let bytes = value.as_bytes();
    let first_ok = bytes[0].is_ascii_alphanumeric();
    let rest_ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'));
    if !(first_ok && rest_ok) {
        return Err(ModelError::Charset {
            kind,
            value: value.chars().take(ID_LEN_MAX).collect(),
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// What this id names, for error messages.
            pub const KIND: &'static str = $kind;

            /// Validates `value` and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, ModelError> {
                let value = value.into();
                validate_id($kind, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ModelError;
            fn try_from(value: String) -> Result<Self, ModelError> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ModelError;
            fn try_from(value: &str) -> Result<Self, ModelError> {
                Self::new(value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ModelError;
            fn from_str(value: &str) -> Result<Self, ModelError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        // Lets maps keyed by the id be searched with a `&str` from a request
        // without allocating.
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// A customer organisation.
    AccountId,
    "account id"
);
id_type!(
    /// A user or device inside an account.
    SubjectId,
    "subject id"
);
id_type!(
    /// A product the vendor sells.
    ProductId,
    "product id"
);
id_type!(
    /// A capability of a product that can be checked.
    FeatureId,
    "feature id"
);
id_type!(
    /// A plan (tier) of a product.
    PlanId,
    "plan id"
);
id_type!(
    /// An add-on or access package.
    AddonId,
    "add-on id"
);
id_type!(
    /// A stock-keeping unit a CRM sells.
    SkuId,
    "SKU id"
);
id_type!(
    /// One entitlement of one account.
    EntitlementId,
    "entitlement id"
);
id_type!(
    /// An order from a CRM or billing system.
    OrderId,
    "order id"
);
id_type!(
    /// A role a subject holds inside its account (e.g. `admin`).
    RoleName,
    "role name"
);
id_type!(
    /// A group a subject belongs to inside its account.
    GroupName,
    "group name"
);
id_type!(
    /// The key of a feature configuration value.
    ConfigKey,
    "config key"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_charset() {
        for ok in [
            "acme",
            "a",
            "user@example.com",
            "acme:eu-1",
            "v1.2_x",
            &"x".repeat(128),
        ] {
            assert!(AccountId::new(ok).is_ok(), "{ok:?} should be accepted");
        }
    }

    #[test]
    fn rejects_empty_long_and_unsafe_ids_with_the_kind_named() {
        let too_long = "x".repeat(129);
        for bad in [
            "",
            too_long.as_str(),
            "-leading",
            "a/b",
            "a b",
            "a\0b",
            "é",
            "..",
        ] {
            let err = FeatureId::new(bad).expect_err(bad);
            assert!(err.to_string().contains("feature id"), "{err}");
        }
    }

    #[test]
    fn serde_validates_on_the_way_in() {
        let ok: PlanId = serde_json::from_str("\"pro\"").unwrap();
        assert_eq!(ok.as_str(), "pro");
        assert!(serde_json::from_str::<PlanId>("\"bad id\"").is_err());
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"pro\"");
    }
}
