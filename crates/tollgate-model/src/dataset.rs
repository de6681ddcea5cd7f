//! A whole data set in one value: the catalog, accounts, subjects and
//! entitlements. What `tollgate eval` reads, what `tollgate dev` seeds the
//! origin with, and what tests build fixtures from.

use crate::{
    Account, AccountId, Catalog, Entitlement, Grant, ModelError, Mutation, RevokedCertificate,
    RevokedLicense, SkuTarget, Subject,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(utoipa::ToSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dataset {
    pub catalog: Catalog,
    pub accounts: Vec<Account>,
    pub subjects: Vec<Subject>,
    pub entitlements: Vec<Entitlement>,
    /// License tokens revoked before they expired.
    pub revoked_licenses: Vec<RevokedLicense>,
    /// Region certificates revoked before they expired.
    pub revoked_certificates: Vec<RevokedCertificate>,
}

impl Dataset {
    /// Validates every value and every reference between them; the error
    /// names the collection and the id of the offending item.
    pub fn validate(&self) -> Result<(), ModelError> {
        let item = |collection: &'static str, id: &str, source: ModelError| ModelError::Item {
            collection,
            id: id.to_string(),
            source: Box::new(source),
        };
        self.catalog
            .validate()
            .map_err(|e| item("catalog", "-", e))?;
        let mut accounts = BTreeSet::new();
        for a in &self.accounts {
            a.validate()
                .map_err(|e| item("accounts", a.id.as_str(), e))?;
            if !accounts.insert(&a.id) {
                return Err(item("accounts", a.id.as_str(), duplicate()));
            }
        }
        let known_account = |id: &AccountId| {
            if accounts.contains(id) {
                Ok(())
            } else {
                Err(ModelError::Invalid {
                    field: "account",
                    reason: format!("refers to unknown account {id}"),
                })
            }
        };
        let mut subjects = BTreeSet::new();
        for s in &self.subjects {
            s.validate()
                .and_then(|()| known_account(&s.account))
                .map_err(|e| item("subjects", s.id.as_str(), e))?;
            if !subjects.insert((&s.account, &s.id)) {
                return Err(item("subjects", s.id.as_str(), duplicate()));
            }
        }
        let mut entitlements = BTreeSet::new();
        for e in &self.entitlements {
            e.validate()
                .and_then(|()| known_account(&e.account))
                .and_then(|()| self.check_grant(&e.grant))
                .map_err(|err| item("entitlements", e.id.as_str(), err))?;
            if !entitlements.insert(&e.id) {
                return Err(item("entitlements", e.id.as_str(), duplicate()));
            }
        }
        let mut revoked = BTreeSet::new();
        for r in &self.revoked_licenses {
            r.validate()
                .and_then(|()| known_account(&r.account))
                .map_err(|err| item("revoked_licenses", &r.id, err))?;
            if !revoked.insert(&r.id) {
                return Err(item("revoked_licenses", &r.id, duplicate()));
            }
        }
        let mut revoked = BTreeSet::new();
        for r in &self.revoked_certificates {
            r.validate()
                .map_err(|err| item("revoked_certificates", &r.serial, err))?;
            if !revoked.insert(&r.serial) {
                return Err(item("revoked_certificates", &r.serial, duplicate()));
            }
        }
        Ok(())
    }

    fn check_grant(&self, grant: &Grant) -> Result<(), ModelError> {
        let target = match grant {
            Grant::Plan(p) => SkuTarget::Plan(p.clone()),
            Grant::Addon(a) => SkuTarget::Addon(a.clone()),
            Grant::Feature(f) if self.catalog.features.contains_key(&f.feature) => return Ok(()),
            Grant::Feature(f) => {
                return Err(ModelError::Invalid {
                    field: "grant.feature",
                    reason: format!("refers to unknown feature {}", f.feature),
                })
            }
        };
        match self.catalog.bundle(&target) {
            Some(_) => Ok(()),
            None => Err(ModelError::Invalid {
                field: "grant",
                reason: format!("refers to an unknown plan or add-on ({target:?})"),
            }),
        }
    }

    /// Applies one change, as a replica following the origin does. Puts
    /// replace the object with the same id; linear in the data set's size,
    /// which suits tests and small deployments, not a region's store.
    pub fn apply(&mut self, mutation: Mutation) {
        match mutation {
            Mutation::PutProduct(p) => {
                self.catalog.products.insert(p.id.clone(), p);
            }
            Mutation::PutFeature(f) => {
                self.catalog.features.insert(f.id.clone(), f);
            }
            Mutation::PutPlan(p) => {
                self.catalog.plans.insert(p.id.clone(), p);
            }
            Mutation::PutAddon(a) => {
                self.catalog.addons.insert(a.id.clone(), a);
            }
            Mutation::PutSku(s) => {
                self.catalog.skus.insert(s.id.clone(), s);
            }
            Mutation::SetDefaultOfflinePolicy(p) => self.catalog.default_offline_policy = p,
            Mutation::PutAccount(a) => match self.accounts.iter_mut().find(|x| x.id == a.id) {
                Some(slot) => *slot = a,
                None => self.accounts.push(a),
            },
            Mutation::PutSubject(s) => {
                match self
                    .subjects
                    .iter_mut()
                    .find(|x| x.id == s.id && x.account == s.account)
                {
                    Some(slot) => *slot = s,
                    None => self.subjects.push(s),
                }
            }
            Mutation::DeleteSubject { account, subject } => self
                .subjects
                .retain(|x| x.id != subject || x.account != account),
            Mutation::PutEntitlement(e) => {
                match self.entitlements.iter_mut().find(|x| x.id == e.id) {
                    Some(slot) => *slot = e,
                    None => self.entitlements.push(e),
                }
            }
            // A revocation is final: a replay changes nothing.
            Mutation::RevokeLicense(r) => {
                if !self.revoked_licenses.iter().any(|x| x.id == r.id) {
                    self.revoked_licenses.push(r);
                }
            }
            Mutation::RevokeCertificate(r) => {
                if !self
                    .revoked_certificates
                    .iter()
                    .any(|x| x.serial == r.serial)
                {
                    self.revoked_certificates.push(r);
                }
            }
            // Credentials are for region nodes, not part of a data set.
            Mutation::PutCredential(_) => {}
            // Seat leases are region state, not part of a data set.
            Mutation::ReleaseSeat { .. } => {}
        }
    }

    /// The mutations that rebuild this data set from nothing.
    pub fn to_mutations(&self) -> Vec<Mutation> {
        let c = &self.catalog;
        let mut out: Vec<Mutation> = Vec::new();
        out.extend(c.products.values().cloned().map(Mutation::PutProduct));
        out.extend(c.features.values().cloned().map(Mutation::PutFeature));
        out.extend(c.plans.values().cloned().map(Mutation::PutPlan));
        out.extend(c.addons.values().cloned().map(Mutation::PutAddon));
        out.extend(c.skus.values().cloned().map(Mutation::PutSku));
        out.push(Mutation::SetDefaultOfflinePolicy(c.default_offline_policy));
        out.extend(self.accounts.iter().cloned().map(Mutation::PutAccount));
        out.extend(self.subjects.iter().cloned().map(Mutation::PutSubject));
        out.extend(
            self.entitlements
                .iter()
                .cloned()
                .map(Mutation::PutEntitlement),
        );
        out.extend(
            self.revoked_licenses
                .iter()
                .cloned()
                .map(Mutation::RevokeLicense),
        );
        out.extend(
            self.revoked_certificates
                .iter()
                .cloned()
                .map(Mutation::RevokeCertificate),
        );
        out
    }

    /// The same data set in a canonical order, for comparing replicas.
    pub fn canonical(mut self) -> Dataset {
        self.accounts.sort_by(|a, b| a.id.cmp(&b.id));
        self.subjects
            .sort_by(|a, b| (&a.account, &a.id).cmp(&(&b.account, &b.id)));
        self.entitlements.sort_by(|a, b| a.id.cmp(&b.id));
        self.revoked_licenses.sort_by(|a, b| a.id.cmp(&b.id));
        self.revoked_certificates
            .sort_by(|a, b| a.serial.cmp(&b.serial));
        self
    }

    /// The subjects and entitlements of one account.
    pub fn of_account<'a>(
        &'a self,
        account: &'a AccountId,
    ) -> (
        impl Iterator<Item = &'a Subject> + 'a,
        impl Iterator<Item = &'a Entitlement> + 'a,
    ) {
        (
            self.subjects.iter().filter(move |s| &s.account == account),
            self.entitlements
                .iter()
                .filter(move |e| &e.account == account),
        )
    }
}

fn duplicate() -> ModelError {
    ModelError::Invalid {
        field: "id",
        reason: "appears more than once".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Dataset {
        serde_json::from_str(
            r#"{
            "catalog": {
                "products": {"p": {"id": "p", "name": "P"}},
                "features": {"f": {"id": "f", "product": "p", "name": "F", "kind": "boolean"}},
                "plans": {"basic": {"id": "basic", "product": "p", "name": "Basic", "tier": 1,
                                    "features": [{"feature": "f"}]}},
                "skus": {"S-1": {"id": "S-1", "name": "Basic", "target": {"plan": "basic"}}}
            },
            "accounts": [{"id": "acme", "name": "Acme"}],
            "subjects": [{"id": "alice", "account": "acme", "kind": "user"}],
            "entitlements": [{"id": "e1", "account": "acme", "grant": {"plan": "basic"}, "valid_from": 0}]
        }"#,
        )
        .unwrap()
    }

    fn refused(mutate: impl FnOnce(&mut Dataset)) -> String {
        let mut d = demo();
        mutate(&mut d);
        d.validate().expect_err("must be refused").to_string()
    }

    #[test]
    fn every_dangling_reference_and_duplicate_is_refused_by_name() {
        assert_eq!(demo().validate(), Ok(()));
        let f: crate::FeatureId = "ghost".parse().unwrap();
        let cases = [
            (
                refused(|d| {
                    d.catalog.plans.get_mut("basic").unwrap().features[0].feature = f.clone()
                }),
                "unknown feature ghost",
            ),
            (
                refused(|d| {
                    d.catalog.features.get_mut("f").unwrap().product = "q".parse().unwrap()
                }),
                "unknown product q",
            ),
            (
                refused(|d| {
                    let plan = d.catalog.plans.get_mut("basic").unwrap();
                    plan.features.push(plan.features[0].clone());
                }),
                "listed twice",
            ),
            (
                refused(|d| {
                    d.catalog.skus.get_mut("S-1").unwrap().target =
                        SkuTarget::Addon("x".parse().unwrap())
                }),
                "unknown add-on x",
            ),
            (
                refused(|d| d.accounts.push(d.accounts[0].clone())),
                "accounts acme: id: appears more than once",
            ),
            (
                refused(|d| d.subjects[0].account = "nobody".parse().unwrap()),
                "subjects alice: account: refers to unknown account nobody",
            ),
            (
                refused(|d| d.entitlements[0].grant = Grant::Plan("gold".parse().unwrap())),
                "entitlements e1: grant",
            ),
            (
                refused(|d| d.entitlements.push(d.entitlements[0].clone())),
                "entitlements e1: id",
            ),
        ];
        for (err, expected) in cases {
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }
}
