//! The HTTP API: JSON in and out, errors as `{"error": ..., "field": ...}`
//! with a 4xx status, and a rejected request changes nothing.
//!
//! With a token configured, every request that changes something needs
//! `Authorization: Bearer TOKEN`; reads stay open, like HAProxy's stats
//! page beside its admin actions.

mod error;
mod limits;
mod metrics;
pub mod openapi;
mod patch;
mod views;
pub mod wire;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header, HeaderMap, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Json, Router,
};
use serde::{de::DeserializeOwned, Deserialize};
use tokio::sync::Mutex;
use utoipa_axum::{router::OpenApiRouter, routes};

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
use wire::{BackendPatch, ErrorBody};

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

/// The API's routes with its OpenAPI document. Each route is registered
/// with its documentation by `routes!`, from its handler's
/// `#[utoipa::path]`: a route cannot be served undocumented.
fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(openapi::document())
        .routes(routes!(status_page))
        .routes(routes!(healthz))
        .routes(routes!(ready))
        .routes(routes!(metrics::metrics))
        .routes(routes!(list_services, add_service))
        .routes(routes!(show_service, patch_service, delete_service))
        .routes(routes!(list_backends, add_backend))
        .routes(routes!(show_backend, patch_backend, delete_backend))
        .routes(routes!(flows))
        .routes(routes!(stats))
        .routes(routes!(reload))
        .routes(routes!(config))
        .routes(routes!(show_state, clear_state))
        .routes(routes!(vrrp))
        .routes(routes!(openapi_json))
}

/// The API, and its OpenAPI document at `GET /api/v1/openapi.json`.
pub fn router(state: ApiState) -> Router {
    let (router, mut document) = routes().split_for_parts();
    openapi::complete(&mut document, state.token.is_some());
    let document = Document(Bytes::from(
        document.to_json().expect("the document serializes"),
    ));
    router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such path in this API") })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not a method of this path"),
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(axum::Extension(document))
        .layer(middleware::from_fn(limits::request_head))
        .layer(axum::extract::DefaultBodyLimit::max(limits::MAX_BODY_BYTES))
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

/// The path of a service.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct ServicePath {
    /// The service's name.
    name: String,
}

/// The path of a service's backend.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct BackendPath {
    /// The service's name.
    name: String,
    /// The backend's address:port, e.g. 198.18.1.10:80 or [fd00::1]:80.
    #[param(pattern = r"^([0-9]{1,3}(\.[0-9]{1,3}){3}|\[[0-9A-Fa-f:.%]+\]):[0-9]{1,5}$")]
    addr: String,
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
#[utoipa::path(get, path = "/", responses(
    (status = 200, description = "The status page", content_type = "text/html", body = String),
))]
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

#[utoipa::path(get, path = "/healthz", responses(
    (status = 200, description = "The agent answers", content_type = "text/plain", body = String),
))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/ready", responses(
    (status = 200, description = "The data plane serves the configuration", content_type = "text/plain", body = String),
    (status = 503, description = "Still starting", body = ErrorBody),
))]
async fn ready(State(state): State<ApiState>) -> (StatusCode, &'static str) {
    if state.ready.load(std::sync::atomic::Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

#[utoipa::path(get, path = "/api/v1/services", responses(
    (status = 200, description = "Every service, in configuration order", body = Vec<wire::Service>),
))]
async fn list_services(State(state): State<ApiState>) -> impl IntoResponse {
    Json(views::services(&state.agent.snapshot()))
}

#[utoipa::path(get, path = "/api/v1/services/{name}", params(ServicePath), responses(
    (status = 200, description = "The service", body = wire::Service),
    (status = 404, description = "No such service", body = ErrorBody),
))]
async fn show_service(
    State(state): State<ApiState>,
    Path(ServicePath { name }): Path<ServicePath>,
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

#[utoipa::path(post, path = "/api/v1/services", request_body = ServiceConfig, responses(
    (status = 201, description = "Added", body = wire::Service),
    (status = 400, description = "A value or rule of the configuration is broken", body = ErrorBody),
    (status = 403, description = "An exec health check, which only the file may set", body = ErrorBody),
    (status = 409, description = "A service of that name or address exists", body = ErrorBody),
    (status = 413, description = "The body is over the limit", body = ErrorBody),
    (status = 500, description = "The data plane refused the change; nothing changed", body = ErrorBody),
))]
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
#[utoipa::path(patch, path = "/api/v1/services/{name}", params(ServicePath),
    request_body = openapi::ServicePatch,
    responses(
        (status = 200, description = "Changed", body = wire::Service),
        (status = 400, description = "The patched service breaks a value or rule of the configuration", body = ErrorBody),
        (status = 403, description = "An exec health check, which only the file may set", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "Renamed or moved onto another service", body = ErrorBody),
        (status = 413, description = "The body is over the limit", body = ErrorBody),
        (status = 500, description = "The data plane refused the change; nothing changed", body = ErrorBody),
    ),
)]
async fn patch_service(
    State(state): State<ApiState>,
    caller: Caller,
    Path(ServicePath { name }): Path<ServicePath>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let patch: serde_json::Value = parse(&body)?;
    patch::known_keys(&patch)?;
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
        patch::merge(&mut value, patch);
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

#[utoipa::path(delete, path = "/api/v1/services/{name}", params(ServicePath), responses(
    (status = 204, description = "Deleted"),
    (status = 400, description = "The configuration's rules need the service", body = ErrorBody),
    (status = 404, description = "No such service", body = ErrorBody),
    (status = 500, description = "The data plane refused the change; nothing changed", body = ErrorBody),
))]
async fn delete_service(
    State(state): State<ApiState>,
    caller: Caller,
    Path(ServicePath { name }): Path<ServicePath>,
) -> ApiResult<StatusCode> {
    let deleted = name.clone();
    edit(&state, move |_| {
        Ok((vec![Edit::RemoveService { name: deleted }], ()))
    })
    .await?;
    log::info!(service = name.as_str(), caller:% = caller; "API: deleted service {name}");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/services/{name}/backends", params(ServicePath), responses(
    (status = 200, description = "The service's backends", body = Vec<wire::Backend>),
    (status = 404, description = "No such service", body = ErrorBody),
))]
async fn list_backends(
    State(state): State<ApiState>,
    Path(ServicePath { name }): Path<ServicePath>,
) -> ApiResult<impl IntoResponse> {
    let snapshot = state.agent.snapshot();
    Ok(Json(
        views::service(&snapshot, snapshot.service(&name)?).backends,
    ))
}

#[utoipa::path(get, path = "/api/v1/services/{name}/backends/{addr}", params(BackendPath), responses(
    (status = 200, description = "The backend", body = wire::Backend),
    (status = 400, description = "Not an address:port", body = ErrorBody),
    (status = 404, description = "No such service or backend", body = ErrorBody),
))]
async fn show_backend(
    State(state): State<ApiState>,
    Path(BackendPath { name, addr }): Path<BackendPath>,
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

#[utoipa::path(post, path = "/api/v1/services/{name}/backends", params(ServicePath), request_body = BackendConfig, responses(
    (status = 201, description = "Added", body = wire::Backend),
    (status = 400, description = "A value or rule of the configuration is broken", body = ErrorBody),
    (status = 404, description = "No such service", body = ErrorBody),
    (status = 409, description = "The service has that backend", body = ErrorBody),
    (status = 413, description = "The body is over the limit", body = ErrorBody),
    (status = 500, description = "The data plane refused the change; nothing changed", body = ErrorBody),
))]
async fn add_backend(
    State(state): State<ApiState>,
    caller: Caller,
    Path(ServicePath { name }): Path<ServicePath>,
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

#[utoipa::path(patch, path = "/api/v1/services/{name}/backends/{addr}", params(BackendPath), request_body = BackendPatch, responses(
    (status = 200, description = "Changed", body = wire::Backend),
    (status = 400, description = "Not an address:port, or a value out of range", body = ErrorBody),
    (status = 404, description = "No such service or backend", body = ErrorBody),
    (status = 413, description = "The body is over the limit", body = ErrorBody),
    (status = 500, description = "The data plane refused the change; nothing changed", body = ErrorBody),
))]
async fn patch_backend(
    State(state): State<ApiState>,
    caller: Caller,
    Path(BackendPath { name, addr }): Path<BackendPath>,
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

#[utoipa::path(delete, path = "/api/v1/services/{name}/backends/{addr}", params(BackendPath), responses(
    (status = 204, description = "Deleted"),
    (status = 400, description = "Not an address:port", body = ErrorBody),
    (status = 404, description = "No such service or backend", body = ErrorBody),
    (status = 500, description = "The data plane refused the change; nothing changed", body = ErrorBody),
))]
async fn delete_backend(
    State(state): State<ApiState>,
    caller: Caller,
    Path(BackendPath { name, addr }): Path<BackendPath>,
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FlowQuery {
    /// Only this service's flows.
    service: Option<String>,
    /// At most this many flows (1000 by default).
    #[param(value_type = Option<u64>, maximum = 4294967295_u64)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/flows", params(FlowQuery), responses(
    (status = 200, description = "Live flows from the flow table", body = Vec<wire::Flow>),
    (status = 400, description = "A query parameter is unknown or malformed", body = ErrorBody),
    (status = 404, description = "No such service", body = ErrorBody),
    (status = 500, description = "The flow table could not be read", body = ErrorBody),
))]
async fn flows(
    State(state): State<ApiState>,
    query: Result<Query<FlowQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(format!("bad query: {e}"), None))?;
    let snapshot = state.agent.snapshot();
    let flows = views::flows(
        &snapshot,
        query.service.as_deref(),
        query.limit.map_or(1000, |limit| limit as usize),
    )?;
    Ok(Json(flows))
}

/// The agent's figures, and whether changes need the token (the status page
/// offers its admin actions by that).
#[utoipa::path(get, path = "/api/v1/stats", responses(
    (status = 200, description = "The agent's figures", body = wire::Stats),
    (status = 500, description = "The data plane's counters could not be read", body = ErrorBody),
))]
async fn stats(State(state): State<ApiState>) -> ApiResult<impl IntoResponse> {
    let snapshot = state.agent.snapshot();
    Ok(Json(views::stats(&snapshot, state.token.is_some())?))
}

/// Reads the configuration file again, as `xlb reload` and SIGHUP do.
#[utoipa::path(post, path = "/api/v1/reload", responses(
    (status = 200, description = "Reloaded", body = wire::Reloaded),
    (status = 400, description = "The file is refused; nothing was reloaded", body = ErrorBody),
    (status = 500, description = "The data plane refused the change", body = ErrorBody),
))]
async fn reload(State(state): State<ApiState>, headers: HeaderMap) -> ApiResult<impl IntoResponse> {
    let reloaded = state
        .agent
        .run(|agent: &mut Agent| Box::pin(agent.reload()))
        .await?
        .map_err(|e| {
            let refusal = ApiError::from(e);
            if trusted(&state, &headers) {
                refusal
            } else {
                without_secret(refusal)
            }
        })?;
    Ok(Json(wire::Reloaded { reloaded }))
}

/// The changes made through the API that the agent keeps over its file.
#[utoipa::path(get, path = "/api/v1/state", responses(
    (status = 200, description = "The state file and the changes it keeps", body = wire::StateView),
))]
async fn show_state(State(state): State<ApiState>) -> Json<wire::StateView> {
    let snapshot = state.agent.snapshot();
    Json(wire::StateView {
        path: snapshot.files().state.display().to_string(),
        changes: snapshot.runtime_state(),
    })
}

/// Drops the changes made through the API: the file runs as last read.
#[utoipa::path(delete, path = "/api/v1/state", responses(
    (status = 200, description = "Dropped; the changes that were kept", body = wire::StateView),
    (status = 400, description = "The file as last read is refused now (a NAT route); nothing changed", body = ErrorBody),
    (status = 500, description = "The data plane refused the change, or the state file could not be removed", body = ErrorBody),
))]
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

/// A refusal of a file's secret (a VRRP password, the hash seed) without
/// its message, which may quote the value (a TOML type error does).
fn without_secret(refusal: ApiError) -> ApiError {
    let secret = refusal
        .field
        .as_deref()
        .is_some_and(|field| field.ends_with(".auth_pass") || field == "agent.hash_seed");
    if !secret {
        return refusal;
    }
    ApiError {
        error: "this value of the file is refused; its message, which may show the secret, is \
                left out: present the API token (Authorization: Bearer TOKEN) to see it; \
                nothing was reloaded"
            .into(),
        ..refusal
    }
}

/// The running configuration as a file. Its secrets are left out unless
/// the caller presents the API's token (see [`redact`]).
#[utoipa::path(get, path = "/api/v1/config", responses(
    (status = 200, description = "The running configuration as a TOML file; VRRP passwords and the hash seed only for a caller that presents the API token", content_type = "application/toml", body = String),
))]
async fn config(State(state): State<ApiState>, headers: HeaderMap) -> impl IntoResponse {
    let mut config = Config::from_model(state.agent.snapshot().model());
    let notes = if trusted(&state, &headers) {
        Vec::new()
    } else {
        redact(&mut config)
    };
    let mut text: String = notes
        .iter()
        .map(|what| {
            format!("# {what} left out: present the API token (Authorization: Bearer TOKEN) to see it\n")
        })
        .collect();
    text.push_str(&config.to_toml());
    ([(header::CONTENT_TYPE, "application/toml")], text)
}

/// Takes the secrets out of `config`: the VRRP passwords, and the hash
/// seed (which would let clients choose ports that all land on one
/// backend). Returns a note for each kind taken out.
fn redact(config: &mut Config) -> Vec<&'static str> {
    let mut notes = Vec::new();
    let mut passwords = 0;
    for instance in &mut config.vrrp.instances {
        passwords += usize::from(instance.auth_pass.take().is_some());
    }
    if passwords > 0 {
        notes.push("auth_pass of the VRRP instances is");
    }
    if config.agent.hash_seed.take().is_some() {
        notes.push("agent.hash_seed is");
    }
    notes
}

/// Whether the caller presents the API's token (none is, without one).
fn trusted(state: &ApiState, headers: &HeaderMap) -> bool {
    state
        .token
        .as_ref()
        .is_some_and(|token| presents(headers, token))
}

/// Whether the request carries `token` as its bearer token.
fn presents(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

#[utoipa::path(get, path = "/api/v1/vrrp", responses(
    (status = 200, description = "Every VRRP instance's state (none without VRRP)", body = Vec<InstanceStatus>),
))]
async fn vrrp(State(state): State<ApiState>) -> impl IntoResponse {
    Json(vrrp_status(&state).await)
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", responses(
    (status = 200, description = "The API's OpenAPI 3 document", content_type = "application/json", body = Object),
))]
async fn openapi_json(axum::Extension(document): axum::Extension<Document>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document.0)
}

/// The OpenAPI document as served, made once with the router.
#[derive(Clone)]
struct Document(Bytes);

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

#[cfg(test)]
mod tests {

    use super::*;

    /// The document as an agent with a token serves it.
    fn document() -> serde_json::Value {
        let (_, mut document) = routes().split_for_parts();
        openapi::complete(&mut document, true);
        serde_json::to_value(&document).unwrap()
    }

    #[test]
    fn the_document_describes_every_answer_of_the_middleware() {
        let document = document();
        assert!(document["openapi"].as_str().unwrap().starts_with("3."));
        let paths = document["paths"].as_object().unwrap();
        for (path, item) in paths {
            for (method, operation) in item.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                let changes = method != "get";
                for status in ["414", "431"].iter().chain(if changes {
                    &["401", "403", "415"][..]
                } else {
                    &[]
                }) {
                    assert!(
                        responses.contains_key(*status),
                        "{method} {path} lacks {status}"
                    );
                }
                assert_eq!(
                    operation.get("security").is_some(),
                    changes || path == "/api/v1/config",
                    "{method} {path}"
                );
            }
        }
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn every_route_is_registered_with_its_documentation() {
        // `routes!` takes a route's path and methods from its handler's
        // `#[utoipa::path]`; axum's own ways of adding one would serve it
        // undocumented.
        let source = include_str!("mod.rs");
        for undocumented in [".route", ".nest", ".merge"] {
            assert!(
                !source.contains(&format!("{undocumented}(")),
                "a route added with {undocumented}"
            );
        }
    }

    #[test]
    fn no_json_answer_has_a_place_for_a_secret() {
        let document = document();
        for (name, schema) in document["components"]["schemas"].as_object().unwrap() {
            let properties = schema["properties"].as_object();
            for property in properties.into_iter().flat_map(|p| p.keys()) {
                assert!(
                    !["auth_pass", "hash_seed", "token", "api_token", "password"]
                        .contains(&property.as_str()),
                    "{name}.{property}"
                );
            }
        }
    }

    #[test]
    fn the_configuration_s_secrets_are_taken_out() {
        let mut config = Config::parse(
            r#"
            [agent]
            interfaces = ["eth0"]
            hash_seed = "0x5eed1234"
            [[vrrp.instance]]
            name = "outside"
            interface = "eth0"
            vrid = 51
            priority = 150
            version = 2
            auth_pass = "s3cret"
            virtual_addresses = ["198.18.0.100"]
            [[vrrp.instance]]
            name = "inside"
            interface = "eth0"
            vrid = 52
            priority = 150
            virtual_addresses = ["198.18.0.101"]
            "#,
        )
        .unwrap();
        let notes = redact(&mut config);
        assert_eq!(
            notes,
            ["auth_pass of the VRRP instances is", "agent.hash_seed is"]
        );
        let text = config.to_toml();
        assert!(
            !text.contains("s3cret") && !text.contains("5eed1234"),
            "{text}"
        );
        // Nothing to take out: no notes.
        assert!(redact(&mut config).is_empty());
    }

    #[test]
    fn a_refused_secret_is_not_quoted_back() {
        for field in ["vrrp.instance[outside].auth_pass", "agent.hash_seed"] {
            let refusal = ApiError::bad_request(
                "line 9: invalid type: integer `12345678`, expected a string",
                Some(field.into()),
            );
            let answer = without_secret(refusal);
            assert!(!answer.error.contains("12345678"), "{}", answer.error);
            assert_eq!(
                (answer.status, answer.field.as_deref()),
                (StatusCode::BAD_REQUEST, Some(field))
            );
        }
        let other = ApiError::bad_request(
            "\"x\" is not an IP address",
            Some("service[web].vip".into()),
        );
        assert_eq!(without_secret(other.clone()), other);
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
