//! The API's errors: an HTTP status and the JSON body `{"error", "field"}`.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};

use super::wire::ErrorBody;
use crate::{
    agent::{AgentError, ErrorKind},
    config::ConfigError,
    model::edit::EditError,
};

/// A request the API refused or could not carry out, as it answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    /// The configuration field at fault, if one is.
    pub field: Option<String>,
}

impl ApiError {
    /// An error with `status` that names no field.
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            field: None,
        }
    }

    pub fn bad_request(error: impl Into<String>, field: Option<String>) -> Self {
        ApiError {
            field,
            ..ApiError::new(StatusCode::BAD_REQUEST, error)
        }
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        AgentError::from(e).into()
    }
}

impl From<EditError> for ApiError {
    fn from(e: EditError) -> Self {
        AgentError::from(e).into()
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        let status = match e.kind {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::Exists => StatusCode::CONFLICT,
            ErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            error: e.message,
            field: e.field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error,
            field: self.field,
        };
        (self.status, Json(body)).into_response()
    }
}

/// Gives an error answer the API did not write itself (a body over the
/// limit, a path or query that did not parse) the API's JSON error body,
/// its text as the error.
pub async fn as_json(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|body| String::from_utf8_lossy(&body).trim().to_string())
        .unwrap_or_default();
    let error = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    ApiError::new(status, error).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_answered_in_plain_text_becomes_json() {
        let plain = (StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded").into_response();
        let answer = as_json(plain).await;
        assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = axum::body::to_bytes(answer.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "length limit exceeded");
        // Success and JSON answers pass untouched.
        let ok = as_json((StatusCode::OK, "fine").into_response()).await;
        let body = axum::body::to_bytes(ok.into_body(), 4096).await.unwrap();
        assert_eq!(&body[..], b"fine");
    }

    #[test]
    fn the_agent_s_refusals_get_their_statuses() {
        let cases = [
            (AgentError::not_found("no service named \"x\""), 404),
            (
                AgentError::invalid("bad", Some("service[x].port".into())),
                400,
            ),
            (AgentError::failed("the data plane refused the change"), 500),
        ];
        for (e, status) in cases {
            let api = ApiError::from(e.clone());
            assert_eq!(api.status.as_u16(), status, "{e:?}");
            assert_eq!((api.error, api.field), (e.message, e.field));
        }
    }
}
