//! The replica's copy of the data, and the engine's views built from it.
//! Pure: mutations in, views out; no clock, no I/O, no tokio.
//!
//! The store is indexed by account, so applying a mutation costs a map
//! update (not a scan of the data set, as `Dataset::apply` does), and a new
//! revision rebuilds only the views of the accounts it touched (all of them
//! when the catalog changed, since every view is resolved against it).
//! Views are built exactly as a region node builds them: the account, its
//! subjects, and its entitlements in id order (the node reads them in key
//! order, and the engine's tie-breaks follow that order).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tollgate_engine::AccountView;
use tollgate_model::{
    Account, AccountId, Catalog, Dataset, Entitlement, EntitlementId, Mutation, Subject, SubjectId,
};

/// One account's objects. `account` is `None` while only its subjects or
/// entitlements are known (the account then decides UNKNOWN_ACCOUNT, as on
/// a node).
#[derive(Debug, Default, Clone)]
struct AccountData {
    account: Option<Account>,
    subjects: BTreeMap<SubjectId, Subject>,
    entitlements: BTreeMap<EntitlementId, Entitlement>,
}

impl AccountData {
    fn is_empty(&self) -> bool {
        self.account.is_none() && self.subjects.is_empty() && self.entitlements.is_empty()
    }
}

/// What a batch of mutations touched, so only those views are rebuilt.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    accounts: HashSet<AccountId>,
    /// A mutation that concerns no one account (the catalog, or a kind the
    /// store keeps only in its data set) was applied: compare catalogs.
    catalog: bool,
}

/// The replica's data.
#[derive(Debug, Default, Clone)]
pub(crate) struct Store {
    /// The catalog, and every kind of object that is not indexed below
    /// (revocations, and whatever the model adds), kept by
    /// `Dataset::apply`. Its accounts, subjects and entitlements stay
    /// empty.
    rest: Dataset,
    accounts: HashMap<AccountId, AccountData>,
    /// Which account each entitlement belongs to, so a put that moves one
    /// removes it from its old account.
    owners: HashMap<EntitlementId, AccountId>,
    /// Objects held (accounts, subjects, entitlements), for the limit.
    objects: usize,
}

/// The engine's inputs at one revision: the catalog and every known
/// account's view.
#[derive(Debug, Default, Clone)]
pub(crate) struct Views {
    pub catalog: Arc<Catalog>,
    pub accounts: HashMap<AccountId, Arc<AccountView>>,
}

impl Store {
    pub(crate) fn from_dataset(dataset: Dataset) -> Store {
        let mut store = Store::default();
        let mut dirty = Dirty::default();
        for m in dataset.to_mutations() {
            store.apply(m, &mut dirty);
        }
        store
    }

    /// The catalog and the objects not indexed by account (revocations).
    pub(crate) fn rest(&self) -> &Dataset {
        &self.rest
    }

    /// Objects held (accounts, subjects and entitlements).
    pub(crate) fn objects(&self) -> usize {
        self.objects
    }

    fn data(&mut self, account: &AccountId) -> &mut AccountData {
        self.accounts.entry(account.clone()).or_default()
    }

    fn prune(&mut self, account: &AccountId) {
        if self
            .accounts
            .get(account)
            .is_some_and(AccountData::is_empty)
        {
            self.accounts.remove(account);
        }
    }

    /// Applies one mutation as a region applies it: a put replaces the
    /// object with the same id, a delete removes it.
    pub(crate) fn apply(&mut self, mutation: Mutation, dirty: &mut Dirty) {
        match mutation {
            Mutation::PutAccount(a) => {
                let id = a.id.clone();
                if self.data(&id).account.replace(a).is_none() {
                    self.objects += 1;
                }
                dirty.accounts.insert(id);
            }
            Mutation::PutSubject(s) => {
                let account = s.account.clone();
                if self
                    .data(&account)
                    .subjects
                    .insert(s.id.clone(), s)
                    .is_none()
                {
                    self.objects += 1;
                }
                dirty.accounts.insert(account);
            }
            Mutation::DeleteSubject { account, subject } => {
                if self
                    .accounts
                    .get_mut(&account)
                    .and_then(|data| data.subjects.remove(&subject))
                    .is_some()
                {
                    self.objects -= 1;
                }
                self.prune(&account);
                dirty.accounts.insert(account);
            }
            Mutation::PutEntitlement(e) => {
                let account = e.account.clone();
                if let Some(old) = self.owners.insert(e.id.clone(), account.clone()) {
                    if old != account {
                        if let Some(data) = self.accounts.get_mut(&old) {
                            data.entitlements.remove(&e.id);
                        }
                        self.prune(&old);
                        dirty.accounts.insert(old);
                    }
                    self.objects -= 1;
                }
                self.data(&account).entitlements.insert(e.id.clone(), e);
                self.objects += 1;
                dirty.accounts.insert(account);
            }
            other => {
                match other.account() {
                    Some(account) => {
                        dirty.accounts.insert(account.clone());
                    }
                    None => dirty.catalog = true,
                }
                self.rest.apply(other);
            }
        }
    }

    fn view(&self, data: &AccountData, catalog: &Catalog) -> Option<Arc<AccountView>> {
        let account = data.account.clone()?;
        Some(Arc::new(AccountView::build(
            account,
            data.subjects.values().cloned(),
            data.entitlements.values().cloned(),
            catalog,
        )))
    }

    /// Every view, built from scratch.
    pub(crate) fn views(&self) -> Views {
        let catalog = Arc::new(self.rest.catalog.clone());
        let accounts = self
            .accounts
            .iter()
            .filter_map(|(id, data)| Some((id.clone(), self.view(data, &catalog)?)))
            .collect();
        Views { catalog, accounts }
    }

    /// The views after the mutations recorded in `dirty`, reusing those of
    /// `previous` that did not change.
    pub(crate) fn update_views(&self, previous: &Views, dirty: &Dirty) -> Views {
        if dirty.catalog && self.rest.catalog != *previous.catalog {
            return self.views();
        }
        let mut accounts = previous.accounts.clone();
        for id in &dirty.accounts {
            match self
                .accounts
                .get(id)
                .and_then(|data| self.view(data, &previous.catalog))
            {
                Some(view) => accounts.insert(id.clone(), view),
                None => accounts.remove(id),
            };
        }
        Views {
            catalog: previous.catalog.clone(),
            accounts,
        }
    }

    /// The data held, as a data set in canonical order.
    pub(crate) fn to_dataset(&self) -> Dataset {
        let mut accounts = Vec::new();
        let mut subjects = Vec::new();
        let mut entitlements = Vec::new();
        for data in self.accounts.values() {
            accounts.extend(data.account.clone());
            subjects.extend(data.subjects.values().cloned());
            entitlements.extend(data.entitlements.values().cloned());
        }
        Dataset {
            accounts,
            subjects,
            entitlements,
            ..self.rest.clone()
        }
        .canonical()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalog of two features, two accounts, their subjects and grants.
    pub(crate) fn sample() -> Dataset {
        serde_json::from_value(serde_json::json!({
            "catalog": {
                "products": {"p": {"id": "p", "name": "P"}},
                "features": {
                    "f": {"id": "f", "product": "p", "name": "F", "kind": "boolean"},
                    "g": {"id": "g", "product": "p", "name": "G", "kind": "boolean"}
                },
                "plans": {"basic": {"id": "basic", "product": "p", "name": "Basic", "tier": 1,
                                    "features": [{"feature": "f"}]}}
            },
            "accounts": [{"id": "acme", "name": "Acme"}, {"id": "globex", "name": "Globex"}],
            "subjects": [
                {"id": "alice", "account": "acme", "kind": "user"},
                {"id": "bob", "account": "acme", "kind": "user"},
                {"id": "hank", "account": "globex", "kind": "user"}
            ],
            "entitlements": [
                {"id": "e1", "account": "acme", "grant": {"plan": "basic"}, "valid_from": 0},
                {"id": "e2", "account": "globex", "grant": {"feature": {"feature": "g"}},
                 "valid_from": 0}
            ]
        }))
        .unwrap()
    }

    fn apply_all(store: &mut Store, mutations: Vec<Mutation>) -> Dirty {
        let mut dirty = Dirty::default();
        for m in mutations {
            store.apply(m, &mut dirty);
        }
        dirty
    }

    #[test]
    fn a_state_then_changes_equals_the_data_set_they_describe() {
        let start = sample();
        let mut store = Store::default();
        apply_all(&mut store, start.to_mutations());
        assert_eq!(store.to_dataset(), start.clone().canonical());
        assert_eq!(store.objects(), 2 + 3 + 2);

        // The same changes through the model's own (linear) apply.
        let mut expected = start.clone();
        let mut revoked = start.entitlements[0].clone();
        revoked.status = tollgate_model::EntitlementStatus::Revoked;
        let mut moved = start.entitlements[1].clone();
        moved.account = "acme".parse().unwrap();
        let mut feature = start.catalog.features["g"].clone();
        feature.name = "G2".into();
        let changes = vec![
            Mutation::PutEntitlement(revoked),
            Mutation::DeleteSubject {
                account: "acme".parse().unwrap(),
                subject: "bob".parse().unwrap(),
            },
            Mutation::PutEntitlement(moved),
            Mutation::PutFeature(feature),
        ];
        for m in changes.clone() {
            expected.apply(m);
        }
        let dirty = apply_all(&mut store, changes);
        assert_eq!(store.to_dataset(), expected.canonical());
        assert_eq!(store.objects(), 2 + 2 + 2);
        assert!(dirty.catalog);
        assert_eq!(dirty.accounts.len(), 2, "acme and globex: {dirty:?}");
    }

    #[test]
    fn only_touched_views_are_rebuilt_unless_the_catalog_changed() {
        let mut store = Store::from_dataset(sample());
        let before = store.views();
        assert_eq!(before.accounts.len(), 2);
        let acme: AccountId = "acme".parse().unwrap();
        let globex: AccountId = "globex".parse().unwrap();

        let mut hank = sample().subjects[2].clone();
        hank.groups.insert("ops".parse().unwrap());
        let dirty = apply_all(&mut store, vec![Mutation::PutSubject(hank)]);
        let after = store.update_views(&before, &dirty);
        assert!(Arc::ptr_eq(&after.accounts[&acme], &before.accounts[&acme]));
        assert!(!Arc::ptr_eq(
            &after.accounts[&globex],
            &before.accounts[&globex]
        ));
        assert!(Arc::ptr_eq(&after.catalog, &before.catalog));

        let mut feature = sample().catalog.features["f"].clone();
        feature.name = "F2".into();
        let dirty = apply_all(&mut store, vec![Mutation::PutFeature(feature)]);
        let rebuilt = store.update_views(&after, &dirty);
        assert!(!Arc::ptr_eq(&rebuilt.catalog, &after.catalog));
        assert!(!Arc::ptr_eq(
            &rebuilt.accounts[&acme],
            &after.accounts[&acme]
        ));
        assert_eq!(rebuilt.catalog.features["f"].name, "F2");
    }

    #[test]
    fn an_account_known_only_by_its_subjects_has_no_view() {
        let mut store = Store::default();
        let mut alice = sample().subjects[0].clone();
        alice.account = "initech".parse().unwrap();
        apply_all(&mut store, vec![Mutation::PutSubject(alice)]);
        assert!(store.views().accounts.is_empty());
        assert_eq!(store.to_dataset().subjects.len(), 1);
    }
}
