//! Changes to the replicated data set: what the origin commits under one
//! revision and what every region applies from the changefeed.

use crate::{
    Account, AccountId, Addon, AppCredential, Entitlement, EntitlementId, Feature, OfflinePolicy,
    Plan, Product, RevokedCertificate, RevokedLicense, Sku, Subject, SubjectId, UnixSeconds,
};
use serde::{Deserialize, Serialize};

/// One change to one object. A revision carries one or more of them,
/// applied together or not at all.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mutation {
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
    PutEntitlement(Entitlement),
    /// A license token is refused from now on.
    RevokeLicense(RevokedLicense),
    /// A region certificate, and every token its key signed, is refused from
    /// now on. Concerns no one account: in every scope, like the catalog.
    RevokeCertificate(RevokedCertificate),
    /// An application credential, new, changed or revoked. Concerns no one
    /// account, and is never sent to client-side replicas
    /// ([`Mutation::is_for_replicas`]).
    PutCredential(AppCredential),
    /// The subject gives up its floating seat of the entitlement: every
    /// region drops the subject's lease (none held: nothing changes).
    /// Region state only, never sent to client-side replicas
    /// ([`Mutation::is_for_replicas`]) and not part of a data set.
    ReleaseSeat {
        account: AccountId,
        entitlement: EntitlementId,
        subject: SubjectId,
    },
}

impl Mutation {
    /// The account a mutation concerns, if it concerns one (for per-account
    /// change streams).
    pub fn account(&self) -> Option<&AccountId> {
        match self {
            Mutation::PutAccount(a) => Some(&a.id),
            Mutation::PutSubject(s) => Some(&s.account),
            Mutation::DeleteSubject { account, .. } => Some(account),
            Mutation::PutEntitlement(e) => Some(&e.account),
            Mutation::RevokeLicense(r) => Some(&r.account),
            Mutation::ReleaseSeat { account, .. } => Some(account),
            _ => None,
        }
    }

    /// Whether client-side replicas (`Watch`) may see it: not a
    /// credential or a seat release, which are for region nodes only.
    pub fn is_for_replicas(&self) -> bool {
        !matches!(
            self,
            Mutation::PutCredential(_) | Mutation::ReleaseSeat { .. }
        )
    }
}

/// Everything one origin revision changed. Regions apply records in
/// revision order, each exactly once.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// Gap-free, starting at 1.
    pub revision: u64,
    /// When the origin committed it (stamped by the proposer).
    pub committed_at: UnixSeconds,
    pub mutations: Vec<Mutation>,
}
