//! What a check reads, kept in memory and current: the applied revision,
//! the region's last contact with the origin, the catalog, and the accounts'
//! views (each account's entitlements indexed against the catalog).
//!
//! One task ([`Views::refresh`], run on every applied entry) moves the
//! state forward: it reads the new head revision and contact time, reads
//! the change records since the last refresh to learn which accounts they
//! touched, rebuilds the catalog only when a record changed it, drops only
//! the touched accounts' views, and then publishes the revision to the
//! waiters of `at_least_revision`. A check takes everything it needs under
//! one read lock: no sled read and no JSON decode on a cache hit.
//!
//! Consistency: a view in the cache is valid at the cache's revision (a
//! change to its account would have dropped it). A view missed is built from
//! sled, and kept only if sled's head revision read before and after the
//! build equals the cache's revision — the build then saw exactly that
//! revision. Otherwise the reader waits (bounded) for the refresh to catch
//! up and tries again, so every answer is at one revision: the data it used
//! is exactly the data of the revision it names.

use crate::credentials::{
    authenticate, Caller, CredentialMode, Credentials, Gate, CREDENTIAL_METADATA_KEY,
};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tollgate_engine::AccountView;
use tollgate_model::limits::{
    CATALOG_ENTRIES_MAX, CREDENTIALS_MAX, ENTITLEMENTS_PER_ACCOUNT_MAX, SUBJECTS_PER_ACCOUNT_MAX,
};
use tollgate_model::{
    AccountId, AppCredential, Catalog, ChangeRecord, EntitlementId, Mutation, UnixSeconds,
};
use tollgate_origin::keys;
use tollgate_raft::recovery::Serving;
use tollgate_raft::StateView;
use tollgate_region::{account_entitlements_prefix, ORIGIN_CONTACT};
use tollgate_server::served::Entries;

/// Most account views kept at once (known and unknown account ids alike):
/// past it, one arbitrary view is dropped for each new one, so a caller
/// asking for ever new account ids cannot grow the cache without bound.
pub const ACCOUNT_VIEWS_CACHED_MAX_DEFAULT: usize = 100_000;
/// More revisions than this between two refreshes drop every view rather
/// than reading as many change records.
const TOUCHED_RECORDS_READ_MAX: u64 = 1_024;
/// Attempts at a refresh whose catalog rebuild raced an applied entry.
const REFRESH_ATTEMPTS_MAX: usize = 4;
/// Attempts at a consistent read before a check gives up (UNAVAILABLE).
const READ_ATTEMPTS_MAX: usize = 8;
/// Longest wait, per attempt, for the refresh to reach what sled holds.
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// Why the views could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// Storage failed or holds what does not decode: nothing can be
    /// answered from it.
    #[error("reading the applied state failed: {0}")]
    Storage(String),
    /// Stored data breaks a model limit (the origin refuses such writes,
    /// so this state did not come from it). Never truncated.
    #[error("{0}")]
    OverLimit(String),
    /// The state kept moving while views were built.
    #[error("the applied state moved on {READ_ATTEMPTS_MAX} reads in a row; try again")]
    Moving,
    /// This node stopped uncleanly and may hold less than it answered
    /// before: it answers nothing until it has caught up with its region's
    /// leader (`tollgate_raft::recovery`).
    #[error("this node restarted after an unclean stop and has not caught up with its region's leader yet; try another node")]
    Recovering,
}

impl ViewError {
    /// The error as the client sees it, with its stable code.
    pub fn status(&self) -> tonic::Status {
        use tollgate_server::grpc::error_status;
        use tonic::Code;
        let (code, error_code) = match self {
            ViewError::Storage(_) => (Code::Unavailable, "STATE_UNREADABLE"),
            ViewError::OverLimit(_) => (Code::Internal, "STATE_OVER_LIMIT"),
            ViewError::Moving => (Code::Unavailable, "STATE_MOVING"),
            ViewError::Recovering => (Code::Unavailable, "NODE_RECOVERING"),
        };
        error_status(code, error_code, self.to_string())
    }
}

fn storage(e: impl std::fmt::Display) -> ViewError {
    ViewError::Storage(e.to_string())
}

/// The facts every check reads, at one applied revision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub revision: u64,
    pub origin_contact: Option<UnixSeconds>,
    pub catalog: Arc<Catalog>,
}

struct State {
    revision: u64,
    origin_contact: Option<UnixSeconds>,
    /// `Err`: the catalog cannot be built from what is stored; every check
    /// answers UNAVAILABLE until it can.
    catalog: Result<Arc<Catalog>, String>,
    /// `None`: the account is not known here.
    accounts: HashMap<AccountId, Option<Arc<AccountView>>>,
    /// `Err`: the stored credentials cannot be read; every call that needs
    /// one answers UNAVAILABLE until they can.
    credentials: Result<Arc<Credentials>, String>,
    /// Bumped whenever views are dropped: a view built before a bump is not
    /// kept.
    generation: u64,
}

/// The in-memory state checks read; see the module documentation.
pub struct Views {
    view: StateView,
    state: RwLock<State>,
    applied_tx: watch::Sender<u64>,
    accounts_max: usize,
    /// Whether the applied state may be answered from; `None`: always.
    serving: Option<Arc<Serving>>,
    /// The Raft log index the views were last brought up to, at least
    /// ([`Views::refresh_at`]); 0 before the first refresh.
    refreshed_index: AtomicU64,
}

impl Views {
    /// Reads the applied state once: head revision, contact and catalog.
    pub fn open(view: StateView, accounts_max: usize) -> Result<Views, ViewError> {
        let revision = head(&view)?;
        let origin_contact = contact(&view)?;
        let catalog = build_catalog(&view).map(Arc::new);
        if let Err(error) = &catalog {
            tracing::error!(%error, "The catalog cannot be built; checks answer UNAVAILABLE.");
        }
        let credentials = build_credentials(&view).map(Arc::new);
        if let Err(error) = &credentials {
            tracing::error!(%error, "The credentials cannot be read; calls answer UNAVAILABLE.");
        }
        Ok(Views {
            applied_tx: watch::channel(revision).0,
            state: RwLock::new(State {
                revision,
                origin_contact,
                catalog: catalog.map_err(|e| e.to_string()),
                accounts: HashMap::new(),
                credentials: credentials.map_err(|e| e.to_string()),
                generation: 0,
            }),
            view,
            accounts_max: accounts_max.max(1),
            serving: None,
            refreshed_index: AtomicU64::new(0),
        })
    }

    /// Answers nothing while `serving` says this node may not (after an
    /// unclean stop, until it caught up): reads and callers are refused
    /// with [`ViewError::Recovering`].
    pub fn gated_by(mut self, serving: Arc<Serving>) -> Views {
        self.serving = Some(serving);
        self
    }

    /// After an unclean stop, nothing is answered until the node has
    /// caught up with its leader (`serving`) *and* the views hold the state
    /// it caught up to: the views refresh after Raft applies, so for a
    /// moment after the gate opens they may still hold what the disk kept,
    /// below what this node answered before it stopped (the chaos checker
    /// caught a status at revision 352 after a check at 372 that way).
    fn check_serving(&self) -> Result<(), ViewError> {
        match &self.serving {
            Some(serving)
                if !serving.is_serving()
                    || self.refreshed_index.load(Ordering::Acquire) < serving.opened_at() =>
            {
                Err(ViewError::Recovering)
            }
            _ => Ok(()),
        }
    }

    /// Whether the views refuse every read and caller for now
    /// ([`ViewError::Recovering`]).
    pub fn recovering(&self) -> bool {
        self.check_serving().is_err()
    }

    /// The applied revision as the views hold it, for `at_least_revision`
    /// waiters and `Watch` streams.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; the
        // next refresh puts it right.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the views up to what sled holds: called after every applied
    /// entry, by one task at a time. Published state is always exactly one
    /// revision's: when the catalog had to be rebuilt and sled moved on
    /// meanwhile, it starts over from the new head (at most
    /// `REFRESH_ATTEMPTS_MAX` times; after that the views stay where they
    /// were, older but whole, and the next applied entry refreshes again).
    ///
    /// Called once Raft reported log index `index` applied: when the views
    /// then hold the applied state's head, they cover `index` (see
    /// `check_serving`).
    pub fn refresh_at(&self, index: u64) -> Result<(), ViewError> {
        if self.refresh_to_head()? {
            self.refreshed_index.fetch_max(index, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Whether the views hold the head they read (false: the state kept
    /// moving and they stayed where they were).
    fn refresh_to_head(&self) -> Result<bool, ViewError> {
        let (from, generation, contact_before) = {
            let state = self.read_state();
            (state.revision, state.generation, state.origin_contact)
        };
        let contact = contact(&self.view)?;
        for _ in 0..REFRESH_ATTEMPTS_MAX {
            let to = head(&self.view)?;
            if to == from {
                if contact != contact_before {
                    self.write_state().origin_contact = contact;
                }
                return Ok(true);
            }
            let touched = touched_between(&self.view, from, to)?;
            let credentials = match &touched {
                Touched::Accounts {
                    credentials: false, ..
                } => None,
                _ => Some(build_credentials(&self.view).map(Arc::new)),
            };
            let catalog = match &touched {
                Touched::Accounts { catalog: false, .. } => None,
                _ => {
                    let catalog = build_catalog(&self.view).map(Arc::new);
                    // Built while sled may have moved past `to`: only a
                    // catalog read at exactly `to` is published with it.
                    if head(&self.view)? != to {
                        continue;
                    }
                    Some(catalog)
                }
            };
            // Like the catalog: only credentials read at exactly `to`.
            if credentials.is_some() && head(&self.view)? != to {
                continue;
            }
            {
                let mut state = self.write_state();
                debug_assert_eq!(state.generation, generation, "one refresher at a time");
                match touched {
                    Touched::Everything => state.accounts.clear(),
                    Touched::Accounts { accounts, .. } => {
                        for account in &accounts {
                            state.accounts.remove(account);
                        }
                    }
                }
                if let Some(catalog) = catalog {
                    if let Err(error) = &catalog {
                        tracing::error!(%error, "The catalog cannot be built; checks answer UNAVAILABLE.");
                    }
                    state.catalog = catalog.map_err(|e| e.to_string());
                    state.accounts.clear();
                }
                if let Some(credentials) = credentials {
                    if let Err(error) = &credentials {
                        tracing::error!(%error, "The credentials cannot be read; calls answer UNAVAILABLE.");
                    }
                    state.credentials = credentials.map_err(|e| e.to_string());
                }
                state.generation += 1;
                state.revision = to;
                state.origin_contact = contact;
            }
            self.applied_tx.send_replace(to);
            return Ok(true);
        }
        tracing::debug!(
            from,
            "The state kept moving during a catalog rebuild; refreshing later."
        );
        Ok(false)
    }

    /// The snapshot and the views of `accounts`, all at one revision.
    pub async fn read(
        &self,
        accounts: &[&AccountId],
    ) -> Result<(Snapshot, Vec<Option<Arc<AccountView>>>), ViewError> {
        self.check_serving()?;
        for _ in 0..READ_ATTEMPTS_MAX {
            let (snapshot, generation, mut found) = {
                let state = self.read_state();
                let catalog = state
                    .catalog
                    .as_ref()
                    .map_err(|e| ViewError::Storage(format!("the catalog: {e}")))?
                    .clone();
                let found: Vec<Option<Option<Arc<AccountView>>>> = accounts
                    .iter()
                    .map(|id| state.accounts.get(*id).cloned())
                    .collect();
                (
                    Snapshot {
                        revision: state.revision,
                        origin_contact: state.origin_contact,
                        catalog,
                    },
                    state.generation,
                    found,
                )
            };
            if found.iter().all(Option::is_some) {
                return Ok((snapshot, found.into_iter().flatten().collect()));
            }
            // Build the missing views from sled, and keep them only if sled
            // held exactly the snapshot's revision throughout.
            let before = head(&self.view)?;
            let mut built = Vec::new();
            if before == snapshot.revision {
                for (i, id) in accounts.iter().enumerate() {
                    if found[i].is_none() {
                        let view = build_account(&self.view, &snapshot.catalog, id)?.map(Arc::new);
                        found[i] = Some(view.clone());
                        built.push(((*id).clone(), view));
                    }
                }
            }
            let after = head(&self.view)?;
            if before == snapshot.revision && after == before {
                let mut state = self.write_state();
                if state.generation == generation {
                    for (id, view) in built {
                        if state.accounts.len() >= self.accounts_max
                            && !state.accounts.contains_key(&id)
                        {
                            evict_one(&mut state.accounts);
                        }
                        state.accounts.insert(id, view);
                    }
                }
                return Ok((snapshot, found.into_iter().flatten().collect()));
            }
            // Sled is ahead of the refresh: wait for it to catch up.
            let mut applied = self.applied_tx.subscribe();
            let target = after.max(before);
            // A timeout only means another attempt; the attempts are bounded.
            if tokio::time::timeout(CATCH_UP_WAIT, applied.wait_for(|r| *r >= target))
                .await
                .is_err()
            {
                tracing::debug!(target, "The views did not catch up with sled in time.");
            }
        }
        Err(ViewError::Moving)
    }

    /// The revision checks are answered at now.
    pub fn revision(&self) -> u64 {
        self.read_state().revision
    }

    /// When the region last heard from the origin, as checks see it.
    pub fn origin_contact(&self) -> Option<UnixSeconds> {
        self.read_state().origin_contact
    }

    /// Who is calling, from the request's credential, verified against the
    /// credentials held now (see `credentials`).
    /// Then counts the call against the caller's rate.
    pub fn caller<T>(
        &self,
        gate: &Gate,
        request: &tonic::Request<T>,
    ) -> Result<Caller, tonic::Status> {
        self.check_serving().map_err(|e| e.status())?;
        let metadata = request.metadata();
        let caller = if gate.mode == CredentialMode::Off
            && !metadata.contains_key(CREDENTIAL_METADATA_KEY)
        {
            Caller::unrestricted()
        } else {
            let credentials = self.credentials().map_err(|e| e.status())?;
            authenticate(gate.mode, &credentials, metadata)?
        };
        let peer = request
            .extensions()
            .get::<tollgate_tls::PeerInfo>()
            .and_then(|p| p.remote)
            .map(|a| a.ip());
        gate.admit(&caller, peer)?;
        Ok(caller)
    }

    /// The catalog checks read now.
    pub fn snapshot_catalog(&self) -> Result<Arc<Catalog>, tonic::Status> {
        self.read_state()
            .catalog
            .as_ref()
            .map_err(|e| ViewError::Storage(format!("the catalog: {e}")).status())
            .cloned()
    }

    /// The credentials callers are verified against, as of the revision
    /// checks are answered at.
    pub fn credentials(&self) -> Result<Arc<Credentials>, ViewError> {
        self.read_state()
            .credentials
            .as_ref()
            .map_err(|e| ViewError::Storage(format!("the credentials: {e}")))
            .cloned()
    }

    /// How many account views are cached (for tests and status).
    pub fn cached_accounts(&self) -> usize {
        self.read_state().accounts.len()
    }
}

fn evict_one(accounts: &mut HashMap<AccountId, Option<Arc<AccountView>>>) {
    if let Some(victim) = accounts.keys().next().cloned() {
        accounts.remove(&victim);
        metrics::counter!("tollgate_check_account_views_evicted_total").increment(1);
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, ViewError> {
    serde_json::from_slice(bytes).map_err(|e| ViewError::Storage(format!("{what}: {e}")))
}

fn head(view: &StateView) -> Result<u64, ViewError> {
    tollgate_server::served::read_u64(view, keys::HEAD_REVISION).map_err(storage)
}

fn contact(view: &StateView) -> Result<Option<UnixSeconds>, ViewError> {
    let seconds = tollgate_server::served::read_u64(view, ORIGIN_CONTACT).map_err(storage)?;
    Ok((seconds > 0).then_some(UnixSeconds(seconds as i64)))
}

/// Every entry under `prefix`, refusing more than `max` rather than
/// answering from part of them.
fn scan_bounded(
    view: &StateView,
    prefix: &[u8],
    max: usize,
    what: impl FnOnce() -> String,
) -> Result<Entries, ViewError> {
    let entries = view.scan(prefix, None, max + 1).map_err(storage)?;
    if entries.len() > max {
        return Err(ViewError::OverLimit(format!(
            "{} holds more than {max} entries, the model's limit",
            what()
        )));
    }
    Ok(entries)
}

fn build_catalog(view: &StateView) -> Result<Catalog, ViewError> {
    // The catalog's objects, its default offline policy among them.
    let entries = scan_bounded(view, b"catalog/", CATALOG_ENTRIES_MAX, || {
        "the catalog".into()
    })?;
    Ok(tollgate_origin::dataset_from_entries(entries)
        .map_err(|e| ViewError::Storage(format!("the catalog: {e}")))?
        .catalog)
}

/// An account's own records as stored — the account, its subjects, its
/// entitlements — read within the model's limits; `None` when the account
/// is not known here. Views and `Watch` (and license issuing) read an
/// account through here.
pub(crate) fn account_entries(
    view: &StateView,
    id: &AccountId,
) -> Result<Option<Entries>, ViewError> {
    let account_key = keys::account(id);
    let Some(account) = view.get(&account_key).map_err(storage)? else {
        return Ok(None);
    };
    let mut entries = vec![(account_key, account)];
    entries.extend(scan_bounded(
        view,
        format!("subject/{id}/").as_bytes(),
        SUBJECTS_PER_ACCOUNT_MAX,
        || format!("account {id}'s subjects"),
    )?);
    let prefix = account_entitlements_prefix(id);
    let index = scan_bounded(view, &prefix, ENTITLEMENTS_PER_ACCOUNT_MAX, || {
        format!("account {id}'s entitlements")
    })?;
    for (key, _) in index {
        let ent_id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
        let ent_id = EntitlementId::new(ent_id).map_err(storage)?;
        let key = keys::entitlement(&ent_id);
        if let Some(bytes) = view.get(&key).map_err(storage)? {
            entries.push((key, bytes));
        }
    }
    Ok(Some(entries))
}

fn build_account(
    view: &StateView,
    catalog: &Catalog,
    id: &AccountId,
) -> Result<Option<AccountView>, ViewError> {
    let Some(entries) = account_entries(view, id)? else {
        return Ok(None);
    };
    let data = tollgate_origin::dataset_from_entries(entries)
        .map_err(|e| ViewError::Storage(format!("account {id}: {e}")))?;
    let account = data
        .accounts
        .into_iter()
        .next()
        .ok_or_else(|| ViewError::Storage(format!("account {id} does not decode")))?;
    Ok(Some(AccountView::build(
        account,
        data.subjects,
        data.entitlements,
        catalog,
    )))
}

/// What the revisions after the last refresh changed.
enum Touched {
    /// Too many revisions, or records missing (a snapshot replaced the
    /// state): drop everything.
    Everything,
    Accounts {
        accounts: BTreeSet<AccountId>,
        catalog: bool,
        credentials: bool,
    },
}

fn touched_between(view: &StateView, from: u64, to: u64) -> Result<Touched, ViewError> {
    if to < from || to - from > TOUCHED_RECORDS_READ_MAX {
        return Ok(Touched::Everything);
    }
    let records = view
        .scan(
            tollgate_region::CHANGE_PREFIX.as_bytes(),
            Some(&tollgate_region::change(from)),
            (to - from) as usize,
        )
        .map_err(storage)?;
    let mut accounts = BTreeSet::new();
    let mut catalog = false;
    let mut credentials = false;
    let mut seen = 0;
    for (_, bytes) in records {
        let record: ChangeRecord = decode("a change record", &bytes)?;
        if record.revision > to {
            break;
        }
        seen += 1;
        for mutation in &record.mutations {
            match mutation.account() {
                Some(account) => {
                    accounts.insert(account.clone());
                }
                None if matches!(mutation, Mutation::PutCredential(_)) => credentials = true,
                None => catalog |= is_catalog(mutation),
            }
        }
    }
    if seen != to - from {
        return Ok(Touched::Everything);
    }
    Ok(Touched::Accounts {
        accounts,
        catalog,
        credentials,
    })
}

/// Whether a mutation that concerns no account changes what views are
/// built from (a revoked region certificate or a credential does not).
fn is_catalog(mutation: &Mutation) -> bool {
    !matches!(
        mutation,
        Mutation::RevokeCertificate(_) | Mutation::PutCredential(_)
    )
}

/// Every credential held, within the origin's bound.
fn build_credentials(view: &StateView) -> Result<Credentials, ViewError> {
    let entries = scan_bounded(
        view,
        tollgate_origin::keys::CREDENTIAL_PREFIX.as_bytes(),
        CREDENTIALS_MAX,
        || "the credentials".into(),
    )?;
    let records = entries
        .iter()
        .map(|(_, bytes)| decode::<AppCredential>("a credential", bytes))
        .collect::<Result<Vec<_>, _>>()?;
    Credentials::from_records(records).map_err(ViewError::Storage)
}
