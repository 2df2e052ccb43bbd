//! Requests to the agent's API, and its answers turned into results.

use std::{path::PathBuf, time::Duration};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::Value;

use crate::api::wire::ErrorBody;

/// Where the agent's API is and how to talk to it.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The agent's API: its `agent.api_listen` (`http://` may be left out).
    #[arg(
        long = "api",
        env = "XLB_API",
        value_name = "URL",
        default_value = "http://127.0.0.1:9180",
        value_parser = api_url
    )]
    pub url: String,
    /// The API token, which changes need when the agent has `agent.api_token_file`.
    #[arg(
        long,
        env = "XLB_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A file holding the API token.
    #[arg(long, env = "XLB_API_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the agent's JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// The `--api` value as a base URL: `http://HOST:PORT[/PREFIX]`, no trailing `/`.
fn api_url(text: &str) -> Result<String, String> {
    let rest = match text.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "the agent's API is plain HTTP: use http:// rather than {scheme}://"
            ))
        }
        None => text,
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!(
            "{text:?} names no host (e.g. http://127.0.0.1:9180)"
        ));
    }
    Ok(format!("http://{rest}"))
}

/// Every request gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (a long flow list is a few megabytes).
const MAX_ANSWER_BYTES: u64 = 256 << 20;

/// A connection to the agent's API.
pub struct Api {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Api {
    /// Reads the token, if one is given, before any request goes out.
    pub fn new(args: &ApiArgs) -> anyhow::Result<Api> {
        let token = match (&args.token, &args.token_file) {
            (Some(_), Some(_)) => bail!(
                "--token (XLB_API_TOKEN) and --token-file (XLB_API_TOKEN_FILE) both give \
                 the API token: use one"
            ),
            (Some(token), None) => Some(token.trim().to_string()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the API token from {}", path.display())
                })?;
                Some(text.trim().to_string())
            }
            (None, None) => None,
        };
        if token.as_deref() == Some("") {
            bail!("the API token is empty");
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .proxy(None)
            .user_agent(concat!("xlb/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Api {
            base: args.url.clone(),
            token,
            agent,
        })
    }

    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        let request = self.agent.get(self.url(path));
        self.answer(self.authorize(request).call())
    }

    pub fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        parse_json(&self.get(path)?)
    }

    /// A POST with `body` as JSON, or an empty one.
    pub fn post(&self, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let request = self.authorize(self.agent.post(self.url(path)));
        let sent = match body {
            Some(body) => request.send_json(body),
            None => request.send_empty(),
        };
        parse_json(&self.answer(sent)?)
    }

    pub fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let request = self.authorize(self.agent.patch(self.url(path)));
        parse_json(&self.answer(request.send_json(body))?)
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<()> {
        let request = self.authorize(self.agent.delete(self.url(path)));
        self.answer(request.call()).map(drop)
    }

    /// A DELETE that answers with JSON.
    pub fn delete_json(&self, path: &str) -> anyhow::Result<Value> {
        let request = self.authorize(self.agent.delete(self.url(path)));
        parse_json(&self.answer(request.call())?)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    /// The body of a 2xx answer; anything else as an error that says why.
    fn answer(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<String> {
        let mut response = sent.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| anyhow!("reading the answer of the xlb agent at {}: {e}", self.base))?;
        if status.is_client_error() || status.is_server_error() {
            bail!("{}", api_error(status.as_u16(), &body));
        }
        Ok(body)
    }

    fn transport_error(&self, error: ureq::Error) -> anyhow::Error {
        match error {
            ureq::Error::Timeout(_) => {
                anyhow!(
                    "the xlb agent at {} did not answer within {TIMEOUT:?}",
                    self.base
                )
            }
            ureq::Error::Io(_) | ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => {
                anyhow!(
                    "cannot reach the xlb agent at {}: {error} (is `xlb run` running? \
                     --api sets the address)",
                    self.base
                )
            }
            other => anyhow!("talking to the xlb agent at {}: {other}", self.base),
        }
    }
}

fn parse_json(body: &str) -> anyhow::Result<Value> {
    serde_json::from_str(body).context("the agent's answer is not JSON")
}

/// What a failed request prints after `xlb: error: `.
fn api_error(status: u16, body: &str) -> String {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(ErrorBody {
            error,
            field: Some(field),
        }) => format!("{error} (field {field})"),
        Ok(ErrorBody { error, field: None }) => error,
        // Not the API's error form: a proxy, or a route this agent lacks.
        Err(_) if body.trim().is_empty() => format!("the agent answered HTTP {status}"),
        Err(_) => format!("the agent answered HTTP {status}: {}", body.trim()),
    }
}

/// `/api/v1/` and the path segments, each percent-encoded, so that
/// `[fd00::1]:80` stays one segment.
pub fn endpoint(segments: &[&str]) -> String {
    let mut path = String::from("/api/v1");
    for segment in segments {
        path.push('/');
        path.push_str(&percent_encode(segment));
    }
    path
}

/// `path?key=value&...`, the values percent-encoded; `path` alone without pairs.
pub fn with_query(path: String, pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return path;
    }
    let query: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{key}={}", percent_encode(value)))
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// RFC 3986: everything but the unreserved characters as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls_are_http_without_a_trailing_slash() {
        assert_eq!(
            api_url("http://127.0.0.1:9180/").unwrap(),
            "http://127.0.0.1:9180"
        );
        assert_eq!(api_url("10.0.0.1:9180").unwrap(), "http://10.0.0.1:9180");
        assert_eq!(
            api_url("http://[::1]:9180/xlb").unwrap(),
            "http://[::1]:9180/xlb"
        );
        assert!(api_url("https://lb1:9180")
            .unwrap_err()
            .contains("plain HTTP"));
        assert_eq!(api_url("HTTP://lb1:9180").unwrap(), "http://lb1:9180");
        assert!(api_url("http://").unwrap_err().contains("names no host"));
        assert!(api_url("").unwrap_err().contains("names no host"));
        assert!(api_url("http:///api")
            .unwrap_err()
            .contains("names no host"));
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(
            endpoint(&["services", "web", "backends", "[fd00::1]:80"]),
            "/api/v1/services/web/backends/%5Bfd00%3A%3A1%5D%3A80"
        );
        assert_eq!(
            endpoint(&["services", "web.v2", "backends", "198.18.1.10:80"]),
            "/api/v1/services/web.v2/backends/198.18.1.10%3A80"
        );
        assert_eq!(
            endpoint(&["services", "a/b c"]),
            "/api/v1/services/a%2Fb%20c"
        );
    }

    #[test]
    fn queries_are_appended_only_when_given() {
        assert_eq!(with_query(endpoint(&["flows"]), &[]), "/api/v1/flows");
        assert_eq!(
            with_query(
                endpoint(&["flows"]),
                &[("service", "web&co".into()), ("limit", "10".into())]
            ),
            "/api/v1/flows?service=web%26co&limit=10"
        );
    }

    #[test]
    fn api_errors_name_their_field() {
        assert_eq!(
            api_error(
                400,
                r#"{"error":"65536 is out of range","field":"service[web].backend[0].weight"}"#
            ),
            "65536 is out of range (field service[web].backend[0].weight)"
        );
        assert_eq!(
            api_error(404, r#"{"error":"no service named \"web\""}"#),
            r#"no service named "web""#
        );
        assert_eq!(
            api_error(405, "Method Not Allowed\n"),
            "the agent answered HTTP 405: Method Not Allowed"
        );
        assert_eq!(api_error(502, ""), "the agent answered HTTP 502");
    }
}
