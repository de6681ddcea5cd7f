//! What can be asked of the origin, and what it answers. Every command is
//! stamped by the proposer with who asked (`actor`), when (`at`) and why
//! (`reason`), so apply stays deterministic and the audit log complete.

use serde::{Deserialize, Serialize};
use tollgate_model::{
    Account, AccountId, Addon, AddonId, Entitlement, EntitlementId, Feature, FeatureId,
    OfflinePolicy, OrderId, Plan, Product, Seats, Sku, SkuId, Subject, SubjectId, UnixSeconds,
};

/// Longest actor name and reason, in bytes.
pub const ACTOR_LEN_MAX: usize = 128;
pub const REASON_LEN_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginCommand {
    /// Who asked: an API key id, or `bootstrap`.
    pub actor: String,
    /// When the proposer received the request.
    pub at: UnixSeconds,
    /// Why, as the caller said.
    pub reason: Option<String>,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    PutProduct(Product),
    PutFeature(Feature),
    PutPlan(Plan),
    PutAddon(Addon),
    PutSku(Sku),
    SetDefaultOfflinePolicy(OfflinePolicy),
    PutAccount(Account),
    PutSubject(Subject),
    DeleteSubject {
        account: AccountId,
        subject: SubjectId,
    },
    /// A new entitlement; its id must be unused.
    Grant(Entitlement),
    /// A change to an existing entitlement.
    ChangeEntitlement {
        id: EntitlementId,
        change: EntitlementChange,
    },
    PlaceOrder(Order),
    RequestAccess(AccessRequestSpec),
    DecideAccess {
        id: String,
        approve: bool,
    },
    /// Create or replace an API key (stored as a hash only).
    PutApiKey(ApiKeyRecord),
    RevokeApiKey {
        id: String,
    },
    /// Create or replace an outgoing webhook. It receives events committed
    /// after this revision.
    PutWebhook(WebhookSpec),
    DeleteWebhook {
        id: String,
    },
    /// A webhook's deliverer processed every event through `through`;
    /// `delivery` records the outcome of the one it delivered, if any.
    WebhookProgress {
        id: String,
        through: u64,
        delivery: Option<DeliveryRecord>,
    },
    /// Deliver webhook `id`'s event of `revision` again, with the same
    /// event id: `revision` must be in its delivery log. Queued for the
    /// deliverer (at most [`WEBHOOK_REDELIVERIES_MAX`] per webhook).
    RedeliverWebhook {
        id: String,
        revision: u64,
    },
    /// The deliverer redelivered a queued revision: the queue entry goes,
    /// `delivery` (marked a redelivery) joins the delivery log.
    WebhookRedelivered {
        id: String,
        delivery: DeliveryRecord,
    },
    /// Drop the change records up to and including `through` (retention).
    /// Subscribers below the new floor get a snapshot instead.
    CompactChanges {
        through: u64,
    },
    /// Region `region` asks for `want` more units of a hard-capped counter;
    /// the origin leases what the cap by its own data at `at`
    /// (`quota::hard_cap`) and `outstanding_max` (the overshoot bound,
    /// stamped by the origin node from its config) leave. `limit` is the cap
    /// as the region read it, recorded for the log only and never trusted.
    /// Refused with CONFLICT when nothing is left or there is no hard cap,
    /// NOT_FOUND for an unknown account.
    LeaseQuota {
        region: String,
        counter: tollgate_model::UsageCounter,
        limit: u64,
        want: u64,
        outstanding_max: u64,
    },
    /// Region `region`'s cumulative usage totals. Refused with CONFLICT
    /// when nothing is new.
    SyncQuota {
        region: String,
        entries: Vec<crate::quota::QuotaSync>,
    },
    /// Region `region` asks for `want` more of a floating-seat
    /// entitlement's seats; never more than the entitlement's count are
    /// held by all regions together. CONFLICT when none is free.
    LeaseSeats {
        region: String,
        entitlement: EntitlementId,
        want: u32,
    },
    /// Region `region` has handed back `released_total` seats of the
    /// entitlement in all (cumulative). CONFLICT when nothing is new.
    ReleaseSeats {
        region: String,
        entitlement: EntitlementId,
        released_total: u64,
    },
    /// The origin node signed a license token; remember it (origin only).
    IssueLicense(crate::licenses::LicenseRecord),
    /// Refuse a license token from now on, in every region. `expires_at`
    /// is needed only for a token the origin has no record of (one a region
    /// issued while cut off); a recorded token's own expiry is used.
    RevokeLicense {
        account: AccountId,
        id: String,
        expires_at: Option<UnixSeconds>,
    },
    /// The origin node certified a region's key; remember the certificate.
    CertifyRegion(crate::licenses::CertificateRecord),
    /// Refuse a region certificate, and the tokens its key signed, from now on.
    RevokeCertificate {
        serial: String,
    },
    /// Create an application credential (stored as a hash only); its id
    /// must be unused. Replicated to every region.
    PutCredential(tollgate_model::AppCredential),
    /// Refuse an application credential from now on, in every region.
    RevokeCredential {
        id: String,
    },
    /// The origin's first signing keys, their secrets sealed: a new key,
    /// or a ring imported from a key file. Changes nothing once the
    /// cluster has keys, so every node may propose it at start.
    InitSigningKeys {
        keys: Vec<tollgate_signing::SealedKey>,
    },
    /// `key` signs from now on; the key that signed until now keeps
    /// verifying for `overlap_seconds`.
    RotateSigningKey {
        key: tollgate_signing::SealedKey,
        overlap_seconds: u64,
    },
    /// A key that no longer signs verifies nothing from now on.
    RetireSigningKey {
        kid: tollgate_signing::KeyId,
    },
    /// Puts access requests filed before the listing queues existed into
    /// them (at most [`QUEUE_BACKFILL_MAX`] per command); the origin leader
    /// proposes it at start for any it finds outside the queues.
    QueueAccessRequests {
        ids: Vec<String>,
    },
    /// A region's leader reports its region's state (members, seat
    /// holders); kept under `region-status/<region>` stamped with `at`
    /// ([`crate::regions`]). Origin only: no changefeed mutation.
    RecordRegionReport(tollgate_model::region_report::RegionReport),
    /// Free `subject`'s floating seat of `entitlement` (of `account`) in
    /// every region, at once: published as `Mutation::ReleaseSeat`.
    ReleaseSeatHolder {
        account: AccountId,
        entitlement: EntitlementId,
        subject: SubjectId,
    },
    /// Create or replace a portal user. Sets the password hash only when
    /// it creates the user; keeps the stored sessions, wrong-password count
    /// and lockout.
    PutPortalUser(crate::portal::PortalUser),
    /// A new portal user: refused (CONFLICT) when the id is taken, so two
    /// invitations of one address at once cannot both succeed.
    CreatePortalUser(crate::portal::PortalUser),
    /// Remove a portal user and end every session of theirs.
    DeletePortalUser {
        id: String,
    },
    /// Set a portal user's password (argon2id, hashed by the proposer),
    /// accepting their invitation if they had one, and end every other
    /// session of theirs (`keep_session`: the one that asked, if any).
    SetPortalPassword {
        user: String,
        password_hash: String,
        keep_session: Option<String>,
    },
    /// A sign-in succeeded: the session starts, the wrong-password count
    /// resets. Refused for a disabled or locked-out user.
    StartPortalSession(crate::portal::PortalSession),
    /// Sign-out: the session ends on every origin node.
    EndPortalSession {
        id: String,
    },
    /// A wrong password for `user`: after `lock_after` in a row the user is
    /// locked out for `lock_seconds` (both stamped by the proposer from its
    /// config, so apply stays deterministic).
    PortalSignInFailed {
        user: String,
        lock_after: u32,
        lock_seconds: u64,
    },
}

/// Most access requests one `QueueAccessRequests` queues.
pub const QUEUE_BACKFILL_MAX: usize = 100;

impl Op {
    /// The command that recreates `m` at an empty origin: how a data set
    /// (the demo data, a test fixture) seeds one, mutation by mutation.
    pub fn seed(m: tollgate_model::Mutation) -> Op {
        use tollgate_model::Mutation;
        match m {
            Mutation::PutProduct(p) => Op::PutProduct(p),
            Mutation::PutFeature(f) => Op::PutFeature(f),
            Mutation::PutPlan(p) => Op::PutPlan(p),
            Mutation::PutAddon(a) => Op::PutAddon(a),
            Mutation::PutSku(s) => Op::PutSku(s),
            Mutation::SetDefaultOfflinePolicy(p) => Op::SetDefaultOfflinePolicy(p),
            Mutation::PutAccount(a) => Op::PutAccount(a),
            Mutation::PutSubject(s) => Op::PutSubject(s),
            Mutation::DeleteSubject { account, subject } => Op::DeleteSubject { account, subject },
            Mutation::PutEntitlement(e) => Op::Grant(e),
            Mutation::RevokeLicense(r) => Op::RevokeLicense {
                account: r.account,
                id: r.id,
                expires_at: Some(r.expires_at),
            },
            Mutation::RevokeCertificate(r) => Op::RevokeCertificate { serial: r.serial },
            Mutation::PutCredential(c) => Op::PutCredential(c),
            Mutation::ReleaseSeat {
                account,
                entitlement,
                subject,
            } => Op::ReleaseSeatHolder {
                account,
                entitlement,
                subject,
            },
        }
    }

    /// A stable name for the audit log (`order.place`, `entitlement.revoke`).
    pub fn action(&self) -> &'static str {
        match self {
            Op::PutProduct(_) => "product.put",
            Op::PutFeature(_) => "feature.put",
            Op::PutPlan(_) => "plan.put",
            Op::PutAddon(_) => "addon.put",
            Op::PutSku(_) => "sku.put",
            Op::SetDefaultOfflinePolicy(_) => "catalog.default_offline_policy",
            Op::LeaseQuota { .. } => "quota.lease",
            Op::SyncQuota { .. } => "quota.sync",
            Op::LeaseSeats { .. } => "seats.lease",
            Op::ReleaseSeats { .. } => "seats.release",
            Op::IssueLicense(_) => "license.issue",
            Op::RevokeLicense { .. } => "license.revoke",
            Op::CertifyRegion(_) => "region_certificate.issue",
            Op::RevokeCertificate { .. } => "region_certificate.revoke",
            Op::PutAccount(_) => "account.put",
            Op::PutSubject(_) => "subject.put",
            Op::DeleteSubject { .. } => "subject.delete",
            Op::Grant(_) => "entitlement.grant",
            Op::ChangeEntitlement { change, .. } => match change {
                EntitlementChange::Replace(_) => "entitlement.change",
                EntitlementChange::Extend { .. } => "entitlement.extend",
                EntitlementChange::SetSeats(_) => "entitlement.seats",
                EntitlementChange::Suspend => "entitlement.suspend",
                EntitlementChange::Resume => "entitlement.resume",
                EntitlementChange::Revoke => "entitlement.revoke",
            },
            Op::PlaceOrder(_) => "order.place",
            Op::RequestAccess(_) => "access_request.create",
            Op::DecideAccess { approve: true, .. } => "access_request.approve",
            Op::DecideAccess { approve: false, .. } => "access_request.deny",
            Op::PutApiKey(_) => "api_key.put",
            Op::RevokeApiKey { .. } => "api_key.revoke",
            Op::PutCredential(_) => "credential.put",
            Op::RevokeCredential { .. } => "credential.revoke",
            Op::CompactChanges { .. } => "changefeed.compact",
            Op::PutWebhook(_) => "webhook.put",
            Op::DeleteWebhook { .. } => "webhook.delete",
            Op::WebhookProgress { .. } => "webhook.progress",
            Op::RedeliverWebhook { .. } => "webhook.redeliver",
            Op::WebhookRedelivered { .. } => "webhook.redelivered",
            Op::InitSigningKeys { .. } => "signing_key.init",
            Op::RotateSigningKey { .. } => "signing_key.rotate",
            Op::RetireSigningKey { .. } => "signing_key.retire",
            Op::QueueAccessRequests { .. } => "access_request.queue",
            Op::RecordRegionReport(_) => "region.report",
            Op::ReleaseSeatHolder { .. } => "seat.release",
            Op::PutPortalUser(_) => "portal_user.put",
            Op::CreatePortalUser(_) => "portal_user.create",
            Op::DeletePortalUser { .. } => "portal_user.delete",
            Op::SetPortalPassword { .. } => "portal_user.set_password",
            Op::StartPortalSession(_) => "portal.sign_in",
            Op::EndPortalSession { .. } => "portal.sign_out",
            Op::PortalSignInFailed { .. } => "portal.sign_in_failed",
        }
    }
}

/// How an existing entitlement changes. Every change takes effect in running
/// applications at the next check: no new license file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntitlementChange {
    /// Replace every field but the id and the account.
    Replace(Box<Entitlement>),
    /// Move `valid_until` (`None`: perpetual).
    Extend {
        valid_until: Option<UnixSeconds>,
    },
    /// Change the seats.
    SetSeats(Option<Seats>),
    Suspend,
    /// Undo a suspension. A revoked entitlement cannot be resumed.
    Resume,
    Revoke,
}

/// What a CRM or billing order does.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// A new entitlement to the SKU's plan or add-on.
    New,
    /// Upgrade or downgrade: the entitlement to a plan of the same product
    /// moves to the SKU's plan and quantity.
    Change,
    /// Extend the entitlement to the order's term end.
    Renew,
    /// End the entitlement: at the term end when given, else at once.
    Cancel,
}

/// An order from a CRM or billing system. Idempotent by `id`: the same
/// order again changes nothing; a different order under the same id is a
/// conflict.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    pub id: OrderId,
    pub account: AccountId,
    pub sku: SkuId,
    /// The tier (plan) the CRM believes it sold. Optional; when present it
    /// must be the plan the SKU sells, which catches a CRM whose catalog has
    /// drifted from the origin's.
    #[serde(default)]
    pub tier: Option<tollgate_model::PlanId>,
    pub kind: OrderKind,
    /// Seats (for seat SKUs); 1 for unmetered SKUs.
    pub quantity: u32,
    pub term_start: UnixSeconds,
    /// `None`: no end (perpetual or until cancelled).
    #[serde(default)]
    pub term_end: Option<UnixSeconds>,
    /// The entitlement a change, renewal or cancellation applies to; when
    /// absent, the account's entitlement from the same product's SKUs.
    #[serde(default)]
    pub entitlement: Option<EntitlementId>,
    /// Grace after the term end.
    #[serde(default)]
    pub grace_period_seconds: u64,
}

/// Most seats one access request may ask for.
pub const SEATS_MORE_MAX: u32 = 10_000;

/// What an access request asks for.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AccessTarget {
    Feature(FeatureId),
    Addon(AddonId),
    /// `more` seats (1..=10000) on an active entitlement of the request's
    /// account that has seats; the result stays within the model's
    /// `SEATS_MAX`. Approval raises that entitlement's seat count; never
    /// approved automatically.
    Seats {
        entitlement: EntitlementId,
        #[schema(minimum = 1, maximum = 10000)]
        more: u32,
    },
}

/// A request for access, as the requester files it.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequestSpec {
    /// Chosen by the caller (so a retried request is not filed twice).
    pub id: String,
    pub account: AccountId,
    #[serde(default)]
    pub subject: Option<SubjectId>,
    pub target: AccessTarget,
    pub justification: String,
    /// How long the access lasts once approved (`None`: until revoked).
    #[serde(default)]
    pub duration_seconds: Option<u64>,
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessRequestStatus {
    Pending,
    Approved { entitlement: EntitlementId },
    Denied,
}

impl AccessRequestStatus {
    /// Every status's name, as `GET /v1/access-requests?status=` takes it.
    pub const NAMES: [&'static str; 3] = ["pending", "approved", "denied"];

    /// `pending`, `approved` or `denied`.
    pub fn name(&self) -> &'static str {
        match self {
            AccessRequestStatus::Pending => "pending",
            AccessRequestStatus::Approved { .. } => "approved",
            AccessRequestStatus::Denied => "denied",
        }
    }
}

/// An access request with its state.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    pub spec: AccessRequestSpec,
    pub status: AccessRequestStatus,
    pub requested_by: String,
    pub requested_at: UnixSeconds,
    pub decided_by: Option<String>,
    pub decided_at: Option<UnixSeconds>,
    pub decision_reason: Option<String>,
    /// The revision that last changed it.
    pub revision: u64,
}

/// An order as applied, kept for idempotency and for the audit trail.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub order: Order,
    pub revision: u64,
    pub entitlements: Vec<EntitlementId>,
}

/// One line of the audit log: who, what, when, why, and the revision.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub revision: u64,
    pub at: UnixSeconds,
    pub actor: String,
    pub action: String,
    /// The object acted on (`entitlement/acme-pro`).
    pub target: String,
    pub reason: Option<String>,
}

/// Why a command was refused. Nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectCode {
    /// A referenced object does not exist.
    NotFound,
    /// The command contradicts the current state (id taken, order replayed
    /// with a different body, revoked entitlement resumed).
    Conflict,
    /// The command is invalid in itself (limits, references, values).
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: RejectCode,
    pub message: String,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginResponse {
    /// Applied under a new revision; the entitlements it created or changed.
    Committed {
        revision: u64,
        entitlements: Vec<EntitlementId>,
    },
    /// A quota lease committed: `granted` more units, `granted_total` to
    /// the region in all.
    Leased {
        revision: u64,
        granted: u64,
        granted_total: u64,
    },
    /// Already applied (an order replayed): nothing changed.
    Unchanged {
        revision: u64,
        entitlements: Vec<EntitlementId>,
        note: String,
    },
    Rejected(Rejection),
}

impl OriginResponse {
    pub fn revision(&self) -> Option<u64> {
        match self {
            OriginResponse::Committed { revision, .. }
            | OriginResponse::Leased { revision, .. }
            | OriginResponse::Unchanged { revision, .. } => Some(*revision),
            OriginResponse::Rejected(_) => None,
        }
    }
}

/// What an API key may do. `admin` may do everything.
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
pub enum Scope {
    #[serde(rename = "admin")]
    Admin,
    /// Products, features, plans, add-ons, SKUs.
    #[serde(rename = "catalog:write")]
    CatalogWrite,
    /// Accounts, subjects, entitlements.
    #[serde(rename = "accounts:write")]
    AccountsWrite,
    /// Orders from a CRM or billing system.
    #[serde(rename = "orders:write")]
    OrdersWrite,
    /// File access requests.
    #[serde(rename = "access:request")]
    AccessRequest,
    /// Approve or deny access requests.
    #[serde(rename = "access:approve")]
    AccessApprove,
    /// Read everything but API keys.
    #[serde(rename = "read")]
    Read,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::Admin,
        Scope::CatalogWrite,
        Scope::AccountsWrite,
        Scope::OrdersWrite,
        Scope::AccessRequest,
        Scope::AccessApprove,
        Scope::Read,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::CatalogWrite => "catalog:write",
            Scope::AccountsWrite => "accounts:write",
            Scope::OrdersWrite => "orders:write",
            Scope::AccessRequest => "access:request",
            Scope::AccessApprove => "access:approve",
            Scope::Read => "read",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The scopes a customer account's key may hold: reading its own
    /// account, managing its own users, devices and license tokens, and
    /// filing access requests. Never the vendor's: `admin`,
    /// `catalog:write`, `orders:write`, `access:approve`.
    pub const ACCOUNT_KEY_SCOPES: [Scope; 3] =
        [Scope::Read, Scope::AccountsWrite, Scope::AccessRequest];

    /// Whether a customer account's key may hold this scope.
    pub fn allowed_for_account_keys(self) -> bool {
        Scope::ACCOUNT_KEY_SCOPES.contains(&self)
    }
}

/// An API key as the origin keeps it: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Public part of the key (`key-...`); an identifier.
    pub id: String,
    /// What it is for, for people.
    pub name: String,
    /// SHA-256 of the secret, lower-case hex. The secret is random (256
    /// bits), so a fast hash is enough.
    pub secret_sha256: String,
    pub scopes: std::collections::BTreeSet<Scope>,
    pub created_at: UnixSeconds,
    pub revoked: bool,
    /// Whose key it is. Keys stored before owners existed are the
    /// tenant's.
    #[serde(default)]
    pub owner: KeyOwner,
}

impl ApiKeyRecord {
    /// Whether the key grants `scope` (admin grants every scope).
    pub fn allows(&self, scope: Scope) -> bool {
        !self.revoked && (self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope))
    }

    /// The account the key is confined to; `None` for a tenant key.
    pub fn account(&self) -> Option<&AccountId> {
        match &self.owner {
            KeyOwner::Tenant => None,
            KeyOwner::Account(account) => Some(account),
        }
    }
}

/// Whom an API key belongs to. One origin cluster serves one tenant (the
/// vendor): its staff, CRM and billing keys are tenant keys and may act on
/// every account, within their scopes. A customer account's key (the
/// self-service portal's) acts only on that account, and holds only
/// [`Scope::ACCOUNT_KEY_SCOPES`].
#[derive(utoipa::ToSchema, Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyOwner {
    /// The vendor: `"tenant"`.
    #[default]
    Tenant,
    /// One customer account: `{"account": "acme"}`.
    Account(AccountId),
}

/// What an outgoing webhook can be told about.
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
pub enum WebhookEvent {
    /// An entitlement was granted, changed, suspended, resumed or revoked
    /// (directly or by an order).
    #[serde(rename = "entitlement.changed")]
    EntitlementChanged,
    #[serde(rename = "access_request.created")]
    AccessRequestCreated,
    #[serde(rename = "access_request.approved")]
    AccessRequestApproved,
    #[serde(rename = "access_request.denied")]
    AccessRequestDenied,
    /// An account's use of a capped feature crossed 80 % or 100 % of the
    /// cap, as the regions reported it.
    #[serde(rename = "usage.threshold")]
    UsageThreshold,
}

impl WebhookEvent {
    pub fn name(self) -> &'static str {
        match self {
            WebhookEvent::EntitlementChanged => "entitlement.changed",
            WebhookEvent::AccessRequestCreated => "access_request.created",
            WebhookEvent::AccessRequestApproved => "access_request.approved",
            WebhookEvent::AccessRequestDenied => "access_request.denied",
            WebhookEvent::UsageThreshold => "usage.threshold",
        }
    }

    /// The event an audit action raises, if any.
    pub fn of_action(action: &str) -> Option<WebhookEvent> {
        Some(match action {
            "order.place"
            | "entitlement.grant"
            | "entitlement.change"
            | "entitlement.extend"
            | "entitlement.seats"
            | "entitlement.suspend"
            | "entitlement.resume"
            | "entitlement.revoke" => WebhookEvent::EntitlementChanged,
            "access_request.create" => WebhookEvent::AccessRequestCreated,
            "access_request.approve" => WebhookEvent::AccessRequestApproved,
            "access_request.deny" => WebhookEvent::AccessRequestDenied,
            "usage.threshold" => WebhookEvent::UsageThreshold,
            _ => return None,
        })
    }
}

/// Longest webhook URL, in bytes.
pub const WEBHOOK_URL_LEN_MAX: usize = 2048;
/// Most webhooks one origin keeps.
pub const WEBHOOKS_MAX: usize = 64;
/// Most redeliveries queued for one webhook at once.
pub const WEBHOOK_REDELIVERIES_MAX: usize = 100;

/// An outgoing webhook as an admin defines it.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// An identifier (same rules as other ids).
    pub id: String,
    /// `https://` (the receiver's certificate is verified), or `http://`
    /// only with `allow_plaintext`; at most 2048 bytes.
    pub url: String,
    /// At least one.
    pub events: std::collections::BTreeSet<WebhookEvent>,
    /// Deliver to a plain `http://` URL: events cross the network in clear
    /// and anyone in the path can read or drop them. Recorded in the audit
    /// log as `webhook.put.insecure_plaintext`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_plaintext: bool,
}

/// A webhook with its state.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub spec: WebhookSpec,
    pub created_at: UnixSeconds,
    /// Events committed after this revision are delivered.
    pub created_revision: u64,
    /// Every event through this revision was processed.
    pub processed_through: u64,
}

#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    Delivered,
    /// Every attempt failed; the deliverer moved on.
    GaveUp,
}

/// One entry of a webhook's delivery log.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub revision: u64,
    pub event: WebhookEvent,
    pub attempts: u32,
    pub outcome: DeliveryOutcome,
    /// The last HTTP status received, if any.
    pub last_status: Option<u16>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    pub finished_at: UnixSeconds,
    /// A redelivery an operator asked for (`POST .../redeliver`), logged
    /// after the first delivery of the same revision.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redelivery: bool,
}
