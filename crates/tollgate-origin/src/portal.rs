//! The portal's users and sessions, kept in the origin's replicated state so
//! that every origin node behind a load balancer knows them: a sign-in on
//! one node is a session on all, a sign-out ends it on all, and the count
//! of wrong passwords that locks a user out cannot be spread across nodes.
//!
//! Passwords are stored only as argon2id PHC strings, computed by the
//! proposing node (apply never hashes); sessions only as the SHA-256 of
//! their token.

use serde::{Deserialize, Serialize};
use tollgate_model::{AccountId, UnixSeconds};

/// Longest user id (an e-mail address), in bytes: `portal:<id>` is the
/// audit actor, at most 128 bytes.
pub const USER_ID_LEN_MAX: usize = 120;
/// Longest display name, in bytes.
pub const USER_NAME_LEN_MAX: usize = 128;
/// Longest stored password hash (a PHC string), in bytes.
pub const PASSWORD_HASH_LEN_MAX: usize = 256;
/// Longest OIDC subject, in bytes.
pub const OIDC_SUBJECT_LEN_MAX: usize = 255;
/// Most sessions one user holds at once; a new one ends the oldest.
pub const SESSIONS_PER_USER_MAX: usize = 16;
/// Most portal users one account has.
pub const USERS_PER_ACCOUNT_MAX: usize = 500;

/// What a portal user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortalRole {
    /// The vendor's administrator: everything, any account.
    VendorAdmin,
    /// The vendor's support staff: reads everything, decides access
    /// requests and changes entitlements; no keys, webhooks or users.
    VendorSupport,
    /// A customer's administrator: their own account only; manages its
    /// users and devices, licenses, seats and portal users.
    CustomerAdmin,
    /// A customer's member: reads their own account and asks for more.
    CustomerMember,
}

impl PortalRole {
    pub const ALL: [PortalRole; 4] = [
        PortalRole::VendorAdmin,
        PortalRole::VendorSupport,
        PortalRole::CustomerAdmin,
        PortalRole::CustomerMember,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PortalRole::VendorAdmin => "vendor_admin",
            PortalRole::VendorSupport => "vendor_support",
            PortalRole::CustomerAdmin => "customer_admin",
            PortalRole::CustomerMember => "customer_member",
        }
    }

    /// Words for a page.
    pub fn label(self) -> &'static str {
        match self {
            PortalRole::VendorAdmin => "Vendor administrator",
            PortalRole::VendorSupport => "Vendor support",
            PortalRole::CustomerAdmin => "Administrator",
            PortalRole::CustomerMember => "Member",
        }
    }

    pub fn parse(text: &str) -> Option<PortalRole> {
        PortalRole::ALL.into_iter().find(|r| r.name() == text)
    }

    /// A vendor role reaches every account; a customer role one.
    pub fn is_vendor(self) -> bool {
        matches!(self, PortalRole::VendorAdmin | PortalRole::VendorSupport)
    }
}

/// An invitation not yet accepted: the link's token, as SHA-256 hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalInvite {
    pub token_sha256: String,
    pub expires_at: UnixSeconds,
    /// The portal user who invited.
    pub invited_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalUser {
    /// The sign-in name: an e-mail address, lower case.
    pub id: String,
    pub name: String,
    pub role: PortalRole,
    /// The account of a customer role; `None` for the vendor's staff.
    #[serde(default)]
    pub account: Option<AccountId>,
    /// argon2id, as a PHC string; `None`: signs in only by OIDC, or has
    /// not accepted an invitation yet. `PutPortalUser` sets it only when it
    /// creates the user; `SetPortalPassword` changes it.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// The identity provider's `sub` this user signed in with first.
    #[serde(default)]
    pub oidc_subject: Option<String>,
    #[serde(default)]
    pub invite: Option<PortalInvite>,
    /// Wrong passwords since the last sign-in or lockout (kept by apply).
    #[serde(default)]
    pub failed_sign_ins: u32,
    /// Refused until then after too many wrong passwords (kept by apply).
    #[serde(default)]
    pub locked_until: Option<UnixSeconds>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub created_at: UnixSeconds,
    /// Token hashes of this user's sessions, oldest first (kept by apply).
    #[serde(default)]
    pub sessions: Vec<String>,
}

impl PortalUser {
    /// Whether the user is locked out at `now`.
    pub fn locked_at(&self, now: UnixSeconds) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }

    /// A problem with the fields a caller sets, if any.
    pub fn invalid(&self) -> Option<String> {
        if !valid_user_id(&self.id) {
            return Some(format!(
                "user id must be an e-mail address in lower case, at most {USER_ID_LEN_MAX} bytes"
            ));
        }
        if self.name.trim().is_empty() || self.name.len() > USER_NAME_LEN_MAX {
            return Some(format!("user name must be 1..={USER_NAME_LEN_MAX} bytes"));
        }
        if self.name.chars().any(char::is_control) {
            return Some("user name must not hold control characters".into());
        }
        match (self.role.is_vendor(), &self.account) {
            (true, Some(_)) => return Some("a vendor role belongs to no account".into()),
            (false, None) => return Some("a customer role needs its account".into()),
            _ => {}
        }
        if self.password_hash.as_ref().is_some_and(|h| {
            h.is_empty() || h.len() > PASSWORD_HASH_LEN_MAX || !h.starts_with("$argon2id$")
        }) {
            return Some("a password hash must be an argon2id PHC string".into());
        }
        if self
            .oidc_subject
            .as_ref()
            .is_some_and(|s| s.is_empty() || s.len() > OIDC_SUBJECT_LEN_MAX)
        {
            return Some(format!(
                "OIDC subject must be 1..={OIDC_SUBJECT_LEN_MAX} bytes"
            ));
        }
        None
    }
}

/// Whether `id` is a plausible e-mail address in lower case: one `@`, a
/// non-empty local part, a domain with a dot, no spaces or controls.
pub fn valid_user_id(id: &str) -> bool {
    if id.is_empty() || id.len() > USER_ID_LEN_MAX {
        return false;
    }
    let Some((local, domain)) = id.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && id
            .chars()
            .all(|c| c.is_ascii_graphic() && !c.is_ascii_uppercase() && !"<>\"'/\\".contains(c))
}

/// How a session was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignInMethod {
    Password,
    Oidc,
}

/// A signed-in browser, stored under the SHA-256 of its cookie's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalSession {
    /// SHA-256 hex of the session token.
    pub id: String,
    pub user: String,
    pub created_at: UnixSeconds,
    pub expires_at: UnixSeconds,
    /// The synchronizer token every form of this session carries.
    pub csrf: String,
    pub method: SignInMethod,
}

/// Whether `text` is 64 lower-case hex digits (a SHA-256).
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
