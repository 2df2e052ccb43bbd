//! Limits on a request's head and body, refused with the API's JSON error
//! body; a body declared too large is refused before it is read, so a
//! client that waits for `100 Continue` (curl, past 1 MiB) never sends it.
//! hyper has larger ones of its own, which it answers before the API sees
//! the request, with an empty 414 or 431: a request-target over 64 KiB, a
//! head over about 400 KiB or more than 100 headers.

use axum::{
    extract::Request,
    http::{header, HeaderMap, StatusCode, Uri},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::ApiError;

/// The longest request-target: path and query.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes, each line counted as sent (`name: value\r\n`).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 64;
/// The largest request body (axum's default, made explicit).
pub const MAX_BODY_BYTES: usize = 2 << 20;

pub async fn request_head(request: Request, next: Next) -> Response {
    match refusal(request.uri(), request.headers()) {
        Some(error) => error.into_response(),
        None => next.run(request).await,
    }
}

/// Why a request with this URI and these headers is refused, if it is.
fn refusal(uri: &Uri, headers: &HeaderMap) -> Option<ApiError> {
    let uri_bytes = uri.to_string().len();
    if uri_bytes > MAX_URI_BYTES {
        return Some(ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("the URI has {uri_bytes} bytes, over the limit of {MAX_URI_BYTES}"),
        ));
    }
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Some(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "{} headers of {header_bytes} bytes, over the limit of {MAX_HEADERS} headers \
                 or {MAX_HEADER_BYTES} bytes",
                headers.len()
            ),
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|&l| l > MAX_BODY_BYTES as u64) {
        return Some(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body has {length} bytes, over the limit of {MAX_BODY_BYTES}"),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderName, HeaderValue};

    use super::*;

    #[test]
    fn a_body_declared_over_the_limit_is_refused_before_it_is_read() {
        let uri: Uri = "/api/v1/services".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(MAX_BODY_BYTES));
        assert_eq!(refusal(&uri, &headers), None);
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(MAX_BODY_BYTES + 1),
        );
        let e = refusal(&uri, &headers).unwrap();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn a_head_over_the_limits_is_refused_with_its_status() {
        let short: Uri = "/api/v1/services".parse().unwrap();
        assert_eq!(refusal(&short, &HeaderMap::new()), None);
        let long: Uri = format!("/api/v1/services/{}", "a".repeat(MAX_URI_BYTES))
            .parse()
            .unwrap();
        let e = refusal(&long, &HeaderMap::new()).unwrap();
        assert_eq!(e.status, StatusCode::URI_TOO_LONG);

        let mut many = HeaderMap::new();
        for i in 0..=MAX_HEADERS {
            many.insert(
                HeaderName::try_from(format!("x-{i}")).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        let e = refusal(&short, &many).unwrap();
        assert_eq!(e.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

        let mut big = HeaderMap::new();
        let value = "v".repeat(MAX_HEADER_BYTES);
        big.insert("x-big", HeaderValue::try_from(value).unwrap());
        let e = refusal(&short, &big).unwrap();
        assert_eq!(e.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert!(e.error.contains("over the limit"), "{}", e.error);
    }
}
