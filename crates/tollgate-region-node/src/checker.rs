//! Answering one check from this node's applied state: the account views
//! (cached per applied revision), the caller's geography, the live usage and
//! seat state, the engine's decision, and metering when the check consumes.

use crate::meter::{Meter, MeterConfig, Take};
use crate::watch::Watches;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tollgate_engine::{
    decide, AccountView, CheckRequest, Decision, Environment, Freshness, LiveState, Location,
    SeatLease,
};
use tollgate_geo::GeoDatabases;
use tollgate_model::{
    Account, AccountId, Catalog, Entitlement, EntitlementId, FeatureId, GeoFacts, PeriodKey,
    SeatMode, Subject, UnixSeconds,
};
use tollgate_origin::keys;
use tollgate_raft::{Node, StateView};
use tollgate_region::{account_entitlements_prefix, Counter, RegionLogic, ORIGIN_CONTACT};
use tollgate_server::clock::now;
use tonic::Status;

/// Most subjects or entitlements read for one account view.
const ACCOUNT_ITEMS_MAX: usize = tollgate_model::limits::ENTITLEMENTS_PER_ACCOUNT_MAX;
/// Most catalog entries read when the catalog is rebuilt.
const CATALOG_ENTRIES_MAX: usize = 100_000;

pub(crate) fn read_u64(view: &StateView, key: &[u8]) -> u64 {
    tollgate_server::served::read_u64(view, key).unwrap_or(0)
}

/// Views rebuilt when the applied revision moves.
pub(crate) struct Cache {
    pub(crate) revision: u64,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) accounts: HashMap<AccountId, Option<Arc<AccountView>>>,
}

/// The revision, the catalog and the account's view (`None`: unknown).
type Views = (u64, Arc<Catalog>, Option<Arc<AccountView>>);

pub(crate) struct Checker {
    pub(crate) node: Arc<Node<RegionLogic>>,
    pub(crate) view: StateView,
    pub(crate) name: String,
    pub(crate) geo: Option<Arc<GeoDatabases>>,
    pub(crate) trust_proxy: bool,
    pub(crate) wait_max: Duration,
    pub(crate) applied: watch::Receiver<u64>,
    pub(crate) cache: Mutex<Cache>,
    pub(crate) watches: Watches,
    pub(crate) meter: Arc<Meter>,
    pub(crate) meter_config: MeterConfig,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl Checker {
    fn decode<T: serde::de::DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, Status> {
        serde_json::from_slice(bytes).map_err(internal)
    }

    fn catalog(&self) -> Result<Catalog, Status> {
        let entries = self
            .view
            .scan(b"catalog/", None, CATALOG_ENTRIES_MAX)
            .map_err(internal)?;
        Ok(tollgate_origin::dataset_from_entries(entries)
            .map_err(internal)?
            .catalog)
    }

    fn account_view(
        &self,
        catalog: &Catalog,
        id: &AccountId,
    ) -> Result<Option<AccountView>, Status> {
        let Some(bytes) = self.view.get(&keys::account(id)).map_err(internal)? else {
            return Ok(None);
        };
        let account: Account = self.decode(&bytes)?;
        let subjects: Vec<Subject> = self
            .view
            .scan(format!("subject/{id}/").as_bytes(), None, ACCOUNT_ITEMS_MAX)
            .map_err(internal)?
            .into_iter()
            .map(|(_, v)| self.decode(&v))
            .collect::<Result<_, _>>()?;
        let prefix = account_entitlements_prefix(id);
        let mut entitlements: Vec<Entitlement> = Vec::new();
        for (key, _) in self
            .view
            .scan(&prefix, None, ACCOUNT_ITEMS_MAX)
            .map_err(internal)?
        {
            let ent_id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            let ent_id = EntitlementId::new(ent_id).map_err(internal)?;
            if let Some(bytes) = self
                .view
                .get(&keys::entitlement(&ent_id))
                .map_err(internal)?
            {
                entitlements.push(self.decode(&bytes)?);
            }
        }
        Ok(Some(AccountView::build(
            account,
            subjects,
            entitlements,
            catalog,
        )))
    }

    /// The catalog and the account's view at the current revision. The
    /// state has no point-in-time read across keys, so the revision is read
    /// before and after the data: a view built while an entry applied could
    /// hold data newer than the revision it would be answered at, so it is
    /// rebuilt (and never cached). After `VIEW_ATTEMPTS_MAX` races in a row
    /// the earlier revision is answered: it understates, never overstates,
    /// how fresh the answer is.
    pub(crate) fn views(&self, id: &AccountId) -> Result<Views, Status> {
        const VIEW_ATTEMPTS_MAX: usize = 8;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let revision = read_u64(&self.view, keys::HEAD_REVISION);
            let cached_catalog = {
                let cache = self
                    .cache
                    .lock()
                    .map_err(|_| Status::internal("cache lock poisoned"))?;
                if cache.revision != revision {
                    None
                } else if let Some(found) = cache.accounts.get(id) {
                    return Ok((revision, cache.catalog.clone(), found.clone()));
                } else {
                    Some(cache.catalog.clone())
                }
            };
            let catalog = match cached_catalog {
                Some(catalog) => catalog,
                None => Arc::new(self.catalog()?),
            };
            let view = self.account_view(&catalog, id)?.map(Arc::new);
            let stable = read_u64(&self.view, keys::HEAD_REVISION) == revision;
            if stable {
                let mut cache = self
                    .cache
                    .lock()
                    .map_err(|_| Status::internal("cache lock poisoned"))?;
                // Revisions only grow: never replace a newer cache.
                if cache.revision == u64::MAX || cache.revision < revision {
                    *cache = Cache {
                        revision,
                        catalog: catalog.clone(),
                        accounts: HashMap::new(),
                    };
                }
                if cache.revision == revision {
                    cache.accounts.insert(id.clone(), view.clone());
                }
                return Ok((revision, catalog, view));
            }
            if attempt >= VIEW_ATTEMPTS_MAX {
                return Ok((revision, catalog, view));
            }
        }
    }

    pub(crate) async fn wait_for(&self, revision: u64) -> Result<(), Status> {
        let mut applied = self.applied.clone();
        let reached =
            tokio::time::timeout(self.wait_max, applied.wait_for(|r| *r >= revision)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Status::deadline_exceeded(format!(
                "revision {revision} was not applied within {:?}; applied {}",
                self.wait_max,
                *self.applied.borrow()
            ))),
        }
    }

    fn geo_facts(&self, location: &Location) -> GeoFacts {
        match location {
            Location::Unknown => GeoFacts::unknown(),
            Location::Resolved(facts) if self.trust_proxy => facts.clone(),
            Location::Resolved(_) => GeoFacts::unknown(),
            Location::Ip(ip) => match &self.geo {
                Some(geo) => geo.resolve(*ip).unwrap_or_else(|error| {
                    tracing::warn!(%ip, %error, "Geo lookup failed; location unknown.");
                    GeoFacts::unknown()
                }),
                None => GeoFacts::unknown(),
            },
        }
    }

    /// Decides one check from this node's state, with its usage counters
    /// and seat leases; `saturated` makes that counter look used up (the
    /// region's share of the cap is gone).
    fn decide_engine(
        &self,
        request: &CheckRequest,
        saturated: Option<&Counter>,
    ) -> Result<(Decision, u64), Status> {
        let (revision, catalog, account) = self.views(&request.check.account)?;
        let contact = read_u64(&self.view, ORIGIN_CONTACT);
        let freshness = Freshness {
            applied_revision: revision,
            last_origin_contact: (contact > 0).then_some(UnixSeconds(contact as i64)),
        };
        let live = Live::load(&self.view, &self.meter, account.as_deref(), saturated)?;
        let env = Environment {
            catalog: &catalog,
            live: &live,
            freshness,
            now: now(),
        };
        let geo = self.geo_facts(&request.location);
        let decision = decide(&request.check, account.as_deref(), &geo, &env);
        Ok((decision, revision))
    }

    /// Decides one check and, when it is allowed and consumes, meters it:
    /// a hard cap out of this node's chunk (drawn through the log when
    /// short), anything else straight into the next usage report.
    pub(crate) async fn answer(&self, request: &CheckRequest) -> Result<(Decision, u64), Status> {
        let consume = request.check.consume;
        if consume > 0 {
            if let Some(key) = &request.idempotency_key {
                if self.meter.seen(key) {
                    // A retry of a counted check: answer, consume nothing.
                    let mut again = request.clone();
                    again.check.consume = 0;
                    return self.decide_engine(&again, None);
                }
            }
        }
        let (decision, revision) = self.decide_engine(request, None)?;
        let Some(metering) = decision
            .metering
            .filter(|_| consume > 0 && decision.reason.is_allowed())
        else {
            return Ok((decision, revision));
        };
        let counter = Counter {
            account: request.check.account.clone(),
            feature: request.check.feature.clone(),
            period: metering.period,
        };
        if self.meter.backed_up() {
            return Err(Status::unavailable(
                "usage reports are not reaching the region's log; try another node",
            ));
        }
        let from_chunk = match metering.limit {
            Some(limit) if metering.hard => {
                match self
                    .meter
                    .take(&counter, limit, consume)
                    .await
                    .map_err(Status::unavailable)?
                {
                    Take::Taken => true,
                    Take::Exhausted => return self.decide_engine(request, Some(&counter)),
                }
            }
            _ => false,
        };
        self.meter.record(
            counter,
            consume,
            request.idempotency_key.clone(),
            from_chunk,
        );
        Ok((decision, revision))
    }
}

/// The usage and seat state a decision reads, loaded for one account.
struct Live<'a> {
    meter: &'a Meter,
    leases: HashMap<EntitlementId, Vec<SeatLease>>,
    saturated: Option<&'a Counter>,
}

impl<'a> Live<'a> {
    fn load(
        view: &StateView,
        meter: &'a Meter,
        account: Option<&AccountView>,
        saturated: Option<&'a Counter>,
    ) -> Result<Self, Status> {
        let mut leases = HashMap::new();
        for ent in account
            .map(|a| a.entitlements.as_slice())
            .unwrap_or_default()
        {
            if matches!(
                ent.seats.as_ref().map(|s| &s.mode),
                Some(SeatMode::Floating { .. })
            ) {
                let held = tollgate_region::seats::leases(view, &ent.id).map_err(internal)?;
                leases.insert(ent.id.clone(), held);
            }
        }
        Ok(Live {
            meter,
            leases,
            saturated,
        })
    }
}

impl LiveState for Live<'_> {
    fn usage_consumed(&self, account: &AccountId, feature: &FeatureId, period: PeriodKey) -> u64 {
        let counter = Counter {
            account: account.clone(),
            feature: feature.clone(),
            period,
        };
        if self.saturated == Some(&counter) {
            return u64::MAX / 2;
        }
        self.meter.consumed(&counter)
    }

    fn floating_leases(&self, entitlement: &EntitlementId) -> &[SeatLease] {
        self.leases.get(entitlement).map_or(&[], Vec::as_slice)
    }
}
