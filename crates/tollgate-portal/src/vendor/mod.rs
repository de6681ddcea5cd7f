//! The vendor's console, under `/portal/vendor`: only the vendor's staff
//! reach it (anyone else gets 404). `accounts.rs`: accounts, their
//! entitlements and the changes' progress to the regions, access requests
//! and auto-approval, orders. `ops.rs`: regions, webhooks, API keys and
//! application credentials, signing keys, the vendor's portal users.

mod accounts;
mod ops;

use crate::auth::Viewer;
use crate::web::{NavLink, PageError};
use crate::{Shared, BASE};
use axum::Router;
use tollgate_api::OriginStore;

/// 404 for anyone but the vendor's staff.
pub(crate) fn vendor_only(viewer: &Viewer) -> Result<(), PageError> {
    if viewer.is_vendor() {
        Ok(())
    } else {
        Err(PageError::NotFound)
    }
}

/// 404 for anyone but the vendor's administrators.
pub(crate) fn admin_only(viewer: &Viewer) -> Result<(), PageError> {
    if viewer.user.role == tollgate_origin::portal::PortalRole::VendorAdmin {
        Ok(())
    } else {
        Err(PageError::NotFound)
    }
}

/// The console's navigation, with `current` (a path under
/// `/portal/vendor`) marked.
pub(crate) fn nav(current: &str) -> Vec<NavLink> {
    [
        ("", "Accounts"),
        ("/requests", "Requests"),
        ("/orders", "Orders"),
        ("/regions", "Regions"),
        ("/webhooks", "Webhooks"),
        ("/keys", "API keys"),
        ("/signing", "Signing keys"),
        ("/users", "Staff"),
    ]
    .into_iter()
    .map(|(path, label)| NavLink {
        href: format!("{BASE}/vendor{path}"),
        label,
        current: path == current,
    })
    .collect()
}

pub(crate) fn routes<S: OriginStore>() -> Router<Shared<S>> {
    Router::new()
        .merge(accounts::routes::<S>())
        .merge(ops::routes::<S>())
}
