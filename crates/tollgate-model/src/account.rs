//! Customers: accounts (organisations) and the users and devices inside them.

use crate::id::{AccountId, GroupName, RoleName, SubjectId};
use crate::limits::{NAME_LEN_MAX, ROLES_OR_GROUPS_MAX};
use crate::ModelError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    #[default]
    Active,
    /// Every check of the account answers SUSPENDED (e.g. fraud, non-payment
    /// of everything) until it is resumed.
    Suspended,
}

/// A customer organisation.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    #[serde(default)]
    pub status: AccountStatus,
}

impl Account {
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.name.is_empty() || self.name.len() > NAME_LEN_MAX {
            return Err(ModelError::Length {
                kind: "account.name",
                len: self.name.len(),
                max: NAME_LEN_MAX,
            });
        }
        Ok(())
    }
}

#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    User,
    Device,
}

/// A user or device inside an account: what seats are assigned to or leased
/// by, and what roles and groups are checked against.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub id: SubjectId,
    pub account: AccountId,
    pub kind: SubjectKind,
    #[serde(default)]
    pub roles: BTreeSet<RoleName>,
    #[serde(default)]
    pub groups: BTreeSet<GroupName>,
}

impl Subject {
    pub fn validate(&self) -> Result<(), ModelError> {
        for (field, len) in [
            ("subject.roles", self.roles.len()),
            ("subject.groups", self.groups.len()),
        ] {
            if len > ROLES_OR_GROUPS_MAX {
                return Err(ModelError::TooMany {
                    field,
                    len,
                    max: ROLES_OR_GROUPS_MAX,
                });
            }
        }
        Ok(())
    }
}
