//! The HTTP API: JSON in and out, errors as `{"error": ..., "field": ...}`
//! with a 4xx status, and a rejected request changes nothing.
//!
//! With a token configured, every request that changes something needs
//! `Authorization: Bearer TOKEN`; reads stay open, like HAProxy's stats
//! page beside its admin actions.

mod error;
mod metrics;
mod views;
pub mod wire;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header, HeaderMap, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{de::DeserializeOwned, Deserialize};
use tokio::sync::Mutex;

pub use error::ApiError;

use crate::{
    agent::{Agent, AgentHandle},
    config::{BackendConfig, Config, ServiceConfig},
    model::{
        edit::{self, Edit},
        Model,
    },
    vrrp::{InstanceStatus, Vrrp},
};
use wire::BackendPatch;

/// Who asked for a change, for the log: the client's address, when the
/// server was started with it.
struct Caller(Option<SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>();
        Ok(Caller(peer.map(|info| info.0)))
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(peer) => write!(f, "{peer}"),
            None => f.write_str("unknown"),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Reads come from its snapshot, changes go to it as jobs.
    pub agent: AgentHandle,
    /// The bearer token changes need, if one is configured.
    pub token: Option<Arc<str>>,
    /// Set once the data plane serves the configuration.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// The VRRP instances, once started (none configured: stays `None`).
    pub vrrp: Arc<Mutex<Option<Arc<Vrrp>>>>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/services", get(list_services).post(add_service))
        .route(
            "/api/v1/services/{name}",
            get(show_service)
                .patch(patch_service)
                .delete(delete_service),
        )
        .route(
            "/api/v1/services/{name}/backends",
            get(list_backends).post(add_backend),
        )
        .route(
            "/api/v1/services/{name}/backends/{addr}",
            get(show_backend)
                .patch(patch_backend)
                .delete(delete_backend),
        )
        .route("/api/v1/flows", get(flows))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/config", get(config))
        .route("/api/v1/state", get(show_state).delete(clear_state))
        .route("/api/v1/vrrp", get(vrrp))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such path in this API") })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not a method of this path"),
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::map_response(error::as_json))
        .with_state(state)
}

type ApiResult<T> = Result<T, ApiError>;

/// Changes need the token (if one is set) and, with a body, a JSON content
/// type: a browser cannot send that cross-site without asking first. A
/// browser's change must also come from this API's own page (see
/// [`browser_refusal`]).
async fn authorize(
    State(state): State<ApiState>,
    method: Method,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let changes = !matches!(method, Method::GET | Method::HEAD);
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|len| len != "0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next() == Some("application/json"));
    if changes && has_body && !json {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request body as Content-Type: application/json",
        )
        .into_response();
    }
    if let Some(error) = changes
        .then(|| browser_refusal(&headers, state.token.is_some()))
        .flatten()
    {
        return ApiError::new(StatusCode::FORBIDDEN, error).into_response();
    }
    if let (true, Some(token)) = (changes, &state.token) {
        if !presents(&headers, token) {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this request changes the configuration and needs the API token \
                 (Authorization: Bearer TOKEN)",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
            return response;
        }
    }
    next.run(request).await
}

/// Why a change is refused as another site's doing: a browser names the
/// page a request comes from in `Origin`, which must be this API (against
/// cross-site forms and scripts). Without a token, the `Host` must also be
/// an IP address or localhost: a site's own name, pointed here by DNS
/// rebinding, would otherwise pass as same-origin.
fn browser_refusal(headers: &HeaderMap, token: bool) -> Option<String> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if host.is_none() || authority != host {
            return Some(format!(
                "refused a change sent from the page at {origin:?}: only this API's own page \
                 (http://{}/) may make changes",
                host.unwrap_or("this address")
            ));
        }
    }
    let name = host.map(host_name)?;
    (!token && name.parse::<std::net::IpAddr>().is_err() && !name.eq_ignore_ascii_case("localhost"))
        .then(|| {
            format!(
                "refused a change sent to the name {name:?}: without an API token, changes are \
                 taken only at an IP address or localhost, as another site's name could point \
                 here"
            )
        })
}

/// The name or address in a `Host` header, without the port or brackets.
fn host_name(host: &str) -> &str {
    match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A JSON body, or a 400 that says what is wrong with it and where.
fn parse<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let mut json = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        // "." is the body as a whole, "?" a place the parser never reached.
        let path = e.path().to_string();
        let field = (path != "." && !path.contains('?')).then_some(path);
        ApiError::bad_request(format!("malformed request body: {}", e.inner()), field)
    })
}

fn backend_addr(text: &str) -> ApiResult<SocketAddr> {
    text.parse().map_err(|_| {
        ApiError::bad_request(
            format!("{text:?} is not a backend address:port (e.g. 198.18.1.10:80, [fd00::1]:80)"),
            Some("addr".into()),
        )
    })
}

/// The status page: one file, styles and script inline, nothing fetched
/// from elsewhere; it reads and acts through this API. No other site may
/// frame it (to trick clicks on its buttons) or load anything into it.
async fn status_page() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        axum::response::Html(include_str!("status.html")),
    )
}

async fn ready(State(state): State<ApiState>) -> (StatusCode, &'static str) {
    if state.ready.load(std::sync::atomic::Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn list_services(State(state): State<ApiState>) -> impl IntoResponse {
    Json(views::services(&state.agent.snapshot()))
}

async fn show_service(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let snapshot = state.agent.snapshot();
    Ok(Json(views::service(&snapshot, snapshot.service(&name)?)))
}

/// Makes the edits `change` decides on from the running model, in the
/// agent (see [`Agent::edit`]), after the changes sent before it.
async fn edit<T: Send + 'static>(
    state: &ApiState,
    change: impl FnOnce(&Model) -> ApiResult<(Vec<Edit>, T)> + Send + 'static,
) -> ApiResult<T> {
    state
        .agent
        .run(|agent: &mut Agent| Box::pin(agent.edit::<T, ApiError>(change)))
        .await?
}

/// Exec checks run a command as root: only the file may set them.
fn no_new_exec(before: Option<&ServiceConfig>, after: &ServiceConfig) -> ApiResult<()> {
    let exec = after.health.as_ref().is_some_and(|h| h.kind == "exec");
    if exec && before.and_then(|s| s.health.as_ref()) != after.health.as_ref() {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            error: "exec health checks run a command as root: set them in the configuration \
                    file, not through the API"
                .into(),
            field: Some(format!("service[{}].health.kind", after.name)),
        });
    }
    Ok(())
}

async fn add_service(
    State(state): State<ApiState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let raw: ServiceConfig = parse(&body)?;
    no_new_exec(None, &raw)?;
    let name = raw.name.clone();
    edit(&state, move |model| {
        let service = raw.to_model(model.services.len())?;
        Ok((vec![Edit::AddService(service)], ()))
    })
    .await?;
    log::info!(service = name.as_str(), caller:% = caller; "API: added service {name}");
    let snapshot = state.agent.snapshot();
    Ok((
        StatusCode::CREATED,
        Json(views::service(&snapshot, snapshot.service(&name)?)),
    ))
}

/// `PATCH` of a service: a JSON merge patch (RFC 7396) over its
/// configuration form, e.g. `{"mode": "nat"}` or `{"health": null}`.
async fn patch_service(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let patch: serde_json::Value = parse(&body)?;
    let patched_name = name.clone();
    let renamed = edit(&state, move |model| {
        let service = edit::service(model, &patched_name)?;
        let index = model
            .services
            .iter()
            .position(|s| s.name == patched_name)
            .expect("found above");
        let before = ServiceConfig::from_model(service);
        let mut value = serde_json::to_value(&before).expect("serializable");
        merge(&mut value, patch);
        let patched: ServiceConfig = serde_json::from_value(value)
            .map_err(|e| ApiError::bad_request(format!("malformed service: {e}"), None))?;
        no_new_exec(Some(&before), &patched)?;
        let service = patched.to_model(index)?;
        let renamed = service.name.clone();
        let replace = Edit::ReplaceService {
            name: patched_name,
            service,
        };
        Ok((vec![replace], renamed))
    })
    .await?;
    log::info!(service = name.as_str(), caller:% = caller; "API: changed service {name}");
    let snapshot = state.agent.snapshot();
    Ok(Json(views::service(&snapshot, snapshot.service(&renamed)?)))
}

async fn delete_service(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let deleted = name.clone();
    edit(&state, move |_| {
        Ok((vec![Edit::RemoveService { name: deleted }], ()))
    })
    .await?;
    log::info!(service = name.as_str(), caller:% = caller; "API: deleted service {name}");
    Ok(StatusCode::NO_CONTENT)
}

async fn list_backends(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let snapshot = state.agent.snapshot();
    Ok(Json(
        views::service(&snapshot, snapshot.service(&name)?).backends,
    ))
}

async fn show_backend(
    State(state): State<ApiState>,
    Path((name, addr)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let addr = backend_addr(&addr)?;
    let snapshot = state.agent.snapshot();
    let service = snapshot.service(&name)?;
    Ok(Json(views::backend(
        &snapshot,
        service,
        snapshot.backend(service, addr)?,
    )))
}

async fn add_backend(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let raw: BackendConfig = parse(&body)?;
    let to = name.clone();
    let added = edit(&state, move |model| {
        let service = edit::service(model, &to)?;
        let path = format!("service[{to}].backend[{}]", service.backends.len());
        let backend = raw.to_model(&path, service)?;
        let added = backend.socket_addr();
        Ok((
            vec![Edit::AddBackend {
                service: to,
                backend,
            }],
            added,
        ))
    })
    .await?;
    log::info!(
        service = name.as_str(), backend:% = added, caller:% = caller;
        "API: added backend {added} to {name}"
    );
    let snapshot = state.agent.snapshot();
    let service = snapshot.service(&name)?;
    Ok((
        StatusCode::CREATED,
        Json(views::backend(
            &snapshot,
            service,
            snapshot.backend(service, added)?,
        )),
    ))
}

async fn patch_backend(
    State(state): State<ApiState>,
    caller: Caller,
    Path((name, addr)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let addr = backend_addr(&addr)?;
    let patch: BackendPatch = parse(&body)?;
    let (of, change) = (name.clone(), patch.clone());
    edit(&state, move |model| {
        let (index, _) = edit::backend(model, &of, addr)?;
        let mut edits = Vec::new();
        if let Some(weight) = change.weight {
            let field = format!("service[{of}].backend[{index}].weight");
            edits.push(Edit::SetWeight {
                service: of.clone(),
                backend: addr,
                weight: BackendConfig::weight(&field, weight)?,
            });
        }
        if let Some(admin) = change.admin_state {
            edits.push(Edit::SetAdminState {
                service: of,
                backend: addr,
                admin,
            });
        }
        Ok((edits, ()))
    })
    .await?;
    log::info!(
        service = name.as_str(), backend:% = addr, caller:% = caller;
        "API: changed backend {addr} of {name}: {patch:?}"
    );
    let snapshot = state.agent.snapshot();
    let service = snapshot.service(&name)?;
    Ok(Json(views::backend(
        &snapshot,
        service,
        snapshot.backend(service, addr)?,
    )))
}

async fn delete_backend(
    State(state): State<ApiState>,
    caller: Caller,
    Path((name, addr)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let addr = backend_addr(&addr)?;
    let of = name.clone();
    edit(&state, move |_| {
        let remove = Edit::RemoveBackend {
            service: of,
            backend: addr,
        };
        Ok((vec![remove], ()))
    })
    .await?;
    log::info!(
        service = name.as_str(), backend:% = addr, caller:% = caller;
        "API: deleted backend {addr} of {name}"
    );
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowQuery {
    service: Option<String>,
    limit: Option<usize>,
}

async fn flows(
    State(state): State<ApiState>,
    query: Result<Query<FlowQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(format!("bad query: {e}"), None))?;
    let snapshot = state.agent.snapshot();
    let flows = views::flows(
        &snapshot,
        query.service.as_deref(),
        query.limit.unwrap_or(1000),
    )?;
    Ok(Json(flows))
}

/// The agent's figures, and whether changes need the token (the status page
/// offers its admin actions by that).
async fn stats(State(state): State<ApiState>) -> ApiResult<impl IntoResponse> {
    let snapshot = state.agent.snapshot();
    Ok(Json(views::stats(&snapshot, state.token.is_some())?))
}

async fn reload(State(state): State<ApiState>) -> ApiResult<impl IntoResponse> {
    let summary = state
        .agent
        .run(|agent: &mut Agent| Box::pin(agent.reload()))
        .await??;
    Ok(Json(serde_json::json!({ "reloaded": summary })))
}

/// The changes made through the API, kept over the file.
async fn show_state(State(state): State<ApiState>) -> Json<wire::StateView> {
    let snapshot = state.agent.snapshot();
    Json(wire::StateView {
        path: snapshot.files().state.display().to_string(),
        changes: snapshot.runtime_state(),
    })
}

/// Drops the changes made through the API: the file runs as last read.
async fn clear_state(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<Json<wire::StateView>> {
    let dropped = state
        .agent
        .run(|agent: &mut Agent| Box::pin(agent.clear_state()))
        .await??;
    log::info!(caller:% = caller; "API: dropped the changes made through the API");
    Ok(Json(wire::StateView {
        path: state.agent.snapshot().files().state.display().to_string(),
        changes: dropped,
    }))
}

/// The running configuration as a file. VRRP passwords are left out
/// unless the caller presents the API's token.
async fn config(State(state): State<ApiState>, headers: HeaderMap) -> impl IntoResponse {
    let mut config = Config::from_model(state.agent.snapshot().model());
    let trusted = state
        .token
        .as_ref()
        .is_some_and(|token| presents(&headers, token));
    let mut redacted = 0;
    if !trusted {
        for instance in &mut config.vrrp.instances {
            redacted += usize::from(instance.auth_pass.take().is_some());
        }
    }
    let mut text = config.to_toml();
    if redacted > 0 {
        text.insert_str(
            0,
            "# auth_pass of the VRRP instances is left out: present the API token \
             (Authorization: Bearer TOKEN) to see it\n",
        );
    }
    ([(header::CONTENT_TYPE, "application/toml")], text)
}

/// Whether the request carries `token` as its bearer token.
fn presents(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

async fn vrrp(State(state): State<ApiState>) -> impl IntoResponse {
    Json(vrrp_status(&state).await)
}

/// Every VRRP instance's state (empty without VRRP).
pub async fn vrrp_status(state: &ApiState) -> Vec<InstanceStatus> {
    state
        .vrrp
        .lock()
        .await
        .as_ref()
        .map(|v| v.status())
        .unwrap_or_default()
}

/// RFC 7396: objects merge key by key, `null` removes, anything else replaces.
fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    match patch {
        serde_json::Value::Object(fields) => {
            if !target.is_object() {
                *target = serde_json::Value::Object(Default::default());
            }
            let object = target.as_object_mut().expect("made an object");
            for (key, value) in fields {
                if value.is_null() {
                    object.remove(&key);
                } else {
                    merge(object.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
        }
        other => *target = other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge(&mut doc, json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1, 2]});
        merge(&mut doc, json!({"a": [3], "b": {"c": 1}}));
        assert_eq!(doc, json!({"a": [3], "b": {"c": 1}}));
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), value.parse().unwrap()))
            .collect()
    }

    #[test]
    fn changes_from_another_sites_page_are_refused() {
        let own = headers(&[
            (header::HOST, "198.18.0.2:9180"),
            (header::ORIGIN, "http://198.18.0.2:9180"),
        ]);
        assert_eq!(browser_refusal(&own, true), None);
        assert_eq!(browser_refusal(&own, false), None);
        for origin in ["http://evil.example", "http://198.18.0.2:9181", "null"] {
            let other = headers(&[(header::HOST, "198.18.0.2:9180"), (header::ORIGIN, origin)]);
            let refusal = browser_refusal(&other, true).unwrap();
            assert!(
                refusal.starts_with(&format!(
                    "refused a change sent from the page at {origin:?}"
                )),
                "{refusal}"
            );
        }
        // Not a browser: curl and the CLI send no Origin.
        let cli = headers(&[(header::HOST, "127.0.0.1:9180")]);
        assert_eq!(browser_refusal(&cli, false), None);
        assert_eq!(browser_refusal(&HeaderMap::new(), false), None);
    }

    #[test]
    fn without_a_token_changes_need_an_address_or_localhost() {
        for host in [
            "127.0.0.1:9180",
            "[::1]:9180",
            "localhost:9180",
            "LOCALHOST",
            "[::1]",
        ] {
            let h = headers(&[(header::HOST, host)]);
            assert_eq!(browser_refusal(&h, false), None, "{host}");
        }
        // A rebinding site's own name: same-origin for the browser.
        let rebound = headers(&[
            (header::HOST, "rebind.example:9180"),
            (header::ORIGIN, "http://rebind.example:9180"),
        ]);
        let refusal = browser_refusal(&rebound, false).unwrap();
        assert!(
            refusal.starts_with("refused a change sent to the name \"rebind.example\""),
            "{refusal}"
        );
        assert_eq!(browser_refusal(&rebound, true), None, "the token guards it");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn only_the_token_itself_is_presented() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            headers
        };
        assert!(presents(
            &with("Bearer 0123456789abcdef"),
            "0123456789abcdef"
        ));
        assert!(!presents(
            &with("Bearer 0123456789abcdeX"),
            "0123456789abcdef"
        ));
        assert!(!presents(&with("0123456789abcdef"), "0123456789abcdef"));
        assert!(!presents(&HeaderMap::new(), "0123456789abcdef"));
    }

    #[test]
    fn a_wrong_field_is_named_in_the_refusal() {
        let e =
            parse::<wire::BackendPatch>(&Bytes::from_static(br#"{"weight": "3"}"#)).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.field.as_deref()),
            (400, Some("weight"))
        );
        assert!(
            e.error.starts_with("malformed request body: invalid type"),
            "{}",
            e.error
        );
        let e = parse::<wire::BackendPatch>(&Bytes::from_static(b"{")).unwrap_err();
        assert_eq!(e.field, None);
    }

    #[test]
    fn backend_addresses_parse_or_say_why() {
        assert_eq!(
            backend_addr("[fd00::1]:80").unwrap(),
            "[fd00::1]:80".parse().unwrap()
        );
        let e = backend_addr("198.18.1.10").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.error.contains("is not a backend address:port"),
            "{}",
            e.error
        );
    }
}
