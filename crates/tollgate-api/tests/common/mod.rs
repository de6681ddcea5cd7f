//! The REST API served over an in-memory store, as the API's tests start it.

use std::sync::Arc;
use tollgate_api::auth::issue_key;
use tollgate_api::{router, AppState, Clock, OriginStore};
use tollgate_model::UnixSeconds;
use tollgate_origin::{Op, OriginCommand, Scope};
use tollgate_signing::SealKey;

/// Serves the origin's REST API over `store` on 127.0.0.1:0, after
/// committing a bootstrap admin API key and the origin's first signing key
/// (as a node commits them). The base URL and the admin key's token.
pub async fn serve<S: OriginStore>(store: Arc<S>) -> (String, String) {
    let admin = issue_key("bootstrap admin", [Scope::Admin].into(), UnixSeconds(0)).unwrap();
    store
        .write(OriginCommand {
            actor: "bootstrap".into(),
            at: UnixSeconds(0),
            reason: Some("first start".into()),
            op: Op::PutApiKey(admin.record.clone()),
        })
        .await
        .unwrap();
    let keys = tollgate_api::licensing::OriginKeys::new(SealKey::generate().unwrap());
    let bootstrap = tollgate_api::licensing::Actor {
        id: "bootstrap".into(),
        reason: None,
    };
    keys.initialize(&*store, &bootstrap, None, UnixSeconds(0))
        .await
        .unwrap();
    let app = router(AppState {
        store,
        keys,
        metrics: None,
        status: None,
        rate: None,
        clock: Clock::system(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), admin.token)
}
