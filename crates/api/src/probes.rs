//! The server's lifecycle as the probes report it, and the gate in front of the ARM routes.
//!
//! The server listens before its database is open, so that `/healthz` responds while a large
//! file is being recovered. Until [`Lifecycle::open`] hands over the store, `/readyz` returns
//! 503 and every ARM request gets a 503 `ServiceStarting`. After a failed commit, when redb
//! rejects further writes, and once shutdown has begun, `/readyz` returns 503 again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use akstore_store::Store;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::{ApiConfig, AppState, handlers};

/// The server's state between start and exit, shared by the probes and the ARM gate.
pub struct Lifecycle {
    config: Arc<ApiConfig>,
    store: OnceLock<Arc<Store>>,
    /// The ARM routes, built once the store is open.
    arm: OnceLock<Router>,
    stopping: AtomicBool,
}

impl Lifecycle {
    pub(crate) fn new(config: ApiConfig) -> Lifecycle {
        Lifecycle {
            config: Arc::new(config),
            store: OnceLock::new(),
            arm: OnceLock::new(),
            stopping: AtomicBool::new(false),
        }
    }

    /// Starts serving the ARM routes from `store`. Only the first call has an effect.
    pub fn open(&self, store: Arc<Store>) {
        let state = AppState {
            store: Arc::clone(&store),
            config: Arc::clone(&self.config),
        };
        let arm = Router::new()
            .fallback(handlers::arm_request)
            .with_state(state);
        if self.store.set(store).is_ok() {
            // `arm` is set only here, after `store`, so a routed request always finds both.
            let _ = self.arm.set(arm);
        }
    }

    /// Marks the server as shutting down: `/readyz` returns 503 from now on.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Returns the open store, once there is one.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.get()
    }

    pub(crate) fn config(&self) -> &ApiConfig {
        &self.config
    }
}

/// `GET /healthz`: the process is up and serving HTTP.
pub(crate) async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: 200 while the store is open and accepts writes, 503 with the reason
/// otherwise.
pub(crate) async fn readyz(State(lifecycle): State<Arc<Lifecycle>>) -> Response {
    let unavailable = |status: &str, reason: &str| {
        let body = json!({ "status": status, "reason": reason });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    };
    if lifecycle.stopping.load(Ordering::SeqCst) {
        return unavailable("stopping", "the server is shutting down");
    }
    match lifecycle.store() {
        None => unavailable("starting", "the database is opening or recovering"),
        Some(store) if !store.is_writable() => unavailable(
            "unavailable",
            "the store does not accept writes after a failed commit; restart the server",
        ),
        Some(_) => axum::Json(json!({ "status": "ready" })).into_response(),
    }
}

/// Routes a request to the ARM routes once the store is open, and returns 503 before.
pub(crate) async fn arm_gate(
    State(lifecycle): State<Arc<Lifecycle>>,
    request: Request,
) -> Response {
    match lifecycle.arm.get() {
        Some(arm) => match arm.clone().oneshot(request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        },
        None => ApiError::Starting.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request as HttpRequest;

    async fn get(app: &Router, path: &str) -> (StatusCode, serde_json::Value) {
        let request = HttpRequest::get(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn probes_follow_the_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let (app, lifecycle) = crate::app(ApiConfig::default());
        let cluster = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/\
                       providers/Microsoft.ContainerService/managedClusters/c1?api-version=2026-08-01";

        // Before the store is open: alive, not ready, ARM requests refused.
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
        let (status, body) = get(&app, "/readyz").await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("starting"))
        );
        let (status, body) = get(&app, cluster).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "ServiceStarting");

        // Open: ready, ARM requests served.
        let store = Arc::new(Store::open(dir.path().join("db.redb")).unwrap());
        lifecycle.open(Arc::clone(&store));
        let (status, body) = get(&app, "/readyz").await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("ready"))
        );
        assert_eq!(get(&app, cluster).await.0, StatusCode::NOT_FOUND);

        // Closed store: not ready, still alive.
        store.close();
        let (status, body) = get(&app, "/readyz").await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"))
        );
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);

        // Shutting down: not ready.
        lifecycle.begin_shutdown();
        let (status, body) = get(&app, "/readyz").await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("stopping"))
        );
    }
}
