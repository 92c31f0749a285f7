//! The `[api]` section: where the state API listens, how callers
//! authenticate, and its limits.

use serde::{Deserialize, Serialize};
use shoal_config::{SettingsError, at_least};

shoal_config::choice! {
    /// How callers authenticate (`api.auth`).
    #[derive(Default)]
    pub enum ApiAuth {
        /// Bearer tokens from `api.tokens_file` and `api.tokens_env`
        /// (the default).
        #[default]
        Tokens = "tokens",
        /// No authentication: every caller is an admin. Explicit, and
        /// warned about at start.
        None = "none",
    }
}

/// Keys of this section whose environment values are comma-separated
/// lists: add them to the binary's [`shoal_config::Validate::LIST_KEYS`].
pub const LIST_KEYS: &[&str] = &["api.cors_allowed_origins", "api.mcp_allowed_hosts"];

/// The `[api]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// `ip:port` the API listens on; empty disables the API.
    pub listen: String,
    /// Base URL other instances use to reach this one (forwarded queries);
    /// empty for `http://<listen>`.
    pub advertised_url: String,
    /// `tokens` or `none`.
    pub auth: ApiAuth,
    /// File of tokens (`read:<token>` or `admin:<token>`, one a line or
    /// comma-separated; `#` comments); empty for none.
    pub tokens_file: String,
    /// Environment variable holding tokens in the same format; empty for
    /// none.
    pub tokens_env: String,
    /// WebSocket subscriptions open at once, at most.
    pub max_subscriptions: usize,
    /// Entities pending per subscriber before changes to the same entity
    /// are coalesced.
    pub stream_buffer: usize,
    /// Origins allowed by CORS (`https://host[:port]`, or `*`); empty
    /// turns CORS off.
    pub cors_allowed_origins: Vec<String>,
    /// Most items a list endpoint returns (and the largest `limit`).
    pub max_list: usize,
    /// The tokenizer that counts a summary's tokens (`o200k_base` or
    /// `cl100k_base`): the one of the model that reads the summaries.
    pub summary_encoding: crate::summary::Encoding,
    /// The largest `max_tokens` a summary may be asked for.
    pub summary_max_tokens: usize,
    /// Serve MCP (streamable HTTP) at `/mcp` beside the API, with the same
    /// tokens.
    pub mcp: bool,
    /// `Host` header values `/mcp` accepts (`host` or `host:port`), against
    /// DNS rebinding; loopback names by default. Add the names clients use
    /// (a Service's DNS name, an ingress host).
    pub mcp_allowed_hosts: Vec<String>,
    /// How often `/mcp` checks subscribed resources for changes,
    /// milliseconds: one notification per resource per interval at most.
    pub mcp_poll_ms: u64,
    /// Accept command requests (`POST /v1/command-requests`, MCP's
    /// `issue_command`) from admin tokens.
    pub issue_commands: bool,
    /// Command requests accepted per minute by this instance, at most.
    pub issue_rate_per_minute: u32,
    /// PEM certificate chain (server certificate first) to serve HTTPS
    /// with, for the API, `/mcp` and the console; empty serves plain HTTP.
    /// Set together with `tls_key_file`.
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`'s first certificate.
    pub tls_key_file: String,
    /// PEM CA certificates that peers' HTTPS certificates are verified with
    /// when queries are forwarded to them; empty for the platform's roots.
    pub tls_ca_file: String,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8780".into(),
            advertised_url: String::new(),
            auth: ApiAuth::Tokens,
            tokens_file: String::new(),
            tokens_env: "SHOAL_API_TOKENS".into(),
            max_subscriptions: 64,
            stream_buffer: 256,
            cors_allowed_origins: Vec::new(),
            max_list: 1_000,
            summary_encoding: crate::summary::Encoding::O200kBase,
            summary_max_tokens: 32_000,
            mcp: true,
            mcp_allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            mcp_poll_ms: 1_000,
            issue_commands: false,
            issue_rate_per_minute: 10,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_ca_file: String::new(),
        }
    }
}

impl ApiSettings {
    /// Whether the API is served at all (`listen` is not empty).
    pub fn enabled(&self) -> bool {
        !self.listen.trim().is_empty()
    }

    /// Whether the API serves HTTPS (`tls_cert_file` and `tls_key_file`
    /// set).
    pub fn tls(&self) -> bool {
        !self.tls_cert_file.is_empty()
    }

    /// The URL other instances use to reach this one: `advertised_url`,
    /// else `http://<listen>` (`https://` with TLS).
    pub fn advertised_url(&self) -> String {
        if self.advertised_url.is_empty() {
            let scheme = if self.tls() { "https" } else { "http" };
            format!("{scheme}://{}", self.listen)
        } else {
            self.advertised_url.trim_end_matches('/').to_string()
        }
    }

    /// Checks the section; errors name `api.<key>` and the expected form.
    /// Tokens are read and checked by [`crate::auth::load`].
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.enabled() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(SettingsError::invalid(
                "api.listen",
                format!("{:?} is not an IP address and port", self.listen),
                "ip:port, e.g. 127.0.0.1:8780, or an empty string to disable the API",
            ));
        }
        if !self.advertised_url.is_empty() && !is_http_url(&self.advertised_url) {
            return Err(SettingsError::invalid(
                "api.advertised_url",
                format!("{:?} is not an http(s) URL", self.advertised_url),
                "http://host:port or https://host:port (empty for http://<api.listen>)",
            ));
        }
        if !self.tokens_env.is_empty() && !is_env_name(&self.tokens_env) {
            return Err(SettingsError::invalid(
                "api.tokens_env",
                format!("{:?} is not an environment variable name", self.tokens_env),
                "letters, digits and underscores, not starting with a digit (empty for none)",
            ));
        }
        at_least("api.max_subscriptions", self.max_subscriptions, 1, "an integer")?;
        at_least("api.stream_buffer", self.stream_buffer, 1, "an integer")?;
        shoal_config::in_range("api.max_list", self.max_list, 1..=1_000_000, "an integer")?;
        shoal_config::in_range(
            "api.summary_max_tokens",
            self.summary_max_tokens,
            crate::summary::MIN_TOKENS..=1_000_000,
            "an integer",
        )?;
        shoal_config::in_range("api.mcp_poll_ms", self.mcp_poll_ms, 100..=60_000, "milliseconds")?;
        shoal_config::in_range("api.issue_rate_per_minute", self.issue_rate_per_minute, 1..=100_000, "an integer")?;
        if self.mcp && self.mcp_allowed_hosts.iter().any(|h| h.trim().is_empty() || h.contains('/')) {
            return Err(SettingsError::invalid(
                "api.mcp_allowed_hosts",
                format!("{:?} holds an empty entry or a URL", self.mcp_allowed_hosts),
                "host names or host:port authorities, e.g. localhost, shoal.example.com:8780",
            ));
        }
        shoal_config::both_or_neither(
            ("api.tls_cert_file", &self.tls_cert_file),
            ("api.tls_key_file", &self.tls_key_file),
            "both api.tls_cert_file and api.tls_key_file (PEM files) to serve HTTPS, or neither for plain HTTP",
        )?;
        for origin in &self.cors_allowed_origins {
            if origin != "*" && !is_origin(origin) {
                return Err(SettingsError::invalid(
                    "api.cors_allowed_origins",
                    format!("{origin:?} is not an origin"),
                    "a list of origins such as https://example.com or http://localhost:3000 (no path), or *",
                ));
            }
        }
        Ok(())
    }
}

fn is_http_url(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `scheme://host[:port]` with nothing after it.
fn is_origin(text: &str) -> bool {
    is_http_url(text) && url::Url::parse(text).is_ok_and(|u| u.origin().ascii_serialization() == text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_advertise_the_listener() {
        let s = ApiSettings::default();
        s.validate().unwrap();
        assert!(s.enabled());
        assert_eq!(s.auth, ApiAuth::Tokens);
        assert_eq!(s.advertised_url(), "http://127.0.0.1:8780");
        let s = ApiSettings { advertised_url: "https://api.example:9000/".into(), ..s };
        assert_eq!(s.advertised_url(), "https://api.example:9000");
        assert!(!ApiSettings { listen: String::new(), ..s }.enabled());
    }

    #[test]
    fn tls_needs_both_files_and_advertises_https() {
        let s = ApiSettings { tls_cert_file: "/etc/shoal/api.pem".into(), ..ApiSettings::default() };
        let error = s.validate().expect_err("a certificate without its key").to_string();
        assert!(error.contains("api.tls_key_file") && error.contains("api.tls_cert_file"), "{error}");
        let s = ApiSettings { tls_cert_file: String::new(), tls_key_file: "/etc/shoal/api-key.pem".into(), ..s };
        let error = s.validate().expect_err("a key without its certificate").to_string();
        assert!(error.contains("`api.tls_cert_file`: is empty"), "{error}");
        let s = ApiSettings { tls_cert_file: "/etc/shoal/api.pem".into(), ..s };
        s.validate().expect("both set");
        assert!(s.tls());
        assert_eq!(s.advertised_url(), "https://127.0.0.1:8780");
    }

    #[test]
    fn errors_name_the_key_and_the_expected_form() {
        let bad = |s: ApiSettings| s.validate().unwrap_err().to_string();
        let d = ApiSettings::default;
        assert!(bad(ApiSettings { listen: "localhost".into(), ..d() }).contains("`api.listen`"));
        assert!(bad(ApiSettings { advertised_url: "ftp://x".into(), ..d() }).contains("`api.advertised_url`"));
        assert!(bad(ApiSettings { tokens_env: "1X".into(), ..d() }).contains("`api.tokens_env`"));
        assert!(bad(ApiSettings { max_subscriptions: 0, ..d() }).contains("`api.max_subscriptions`"));
        assert!(bad(ApiSettings { stream_buffer: 0, ..d() }).contains("`api.stream_buffer`"));
        assert!(bad(ApiSettings { max_list: 0, ..d() }).contains("`api.max_list`"));
        assert!(bad(ApiSettings { mcp_poll_ms: 5, ..d() }).contains("`api.mcp_poll_ms`"));
        assert!(bad(ApiSettings { issue_rate_per_minute: 0, ..d() }).contains("`api.issue_rate_per_minute`"));
        let hosts = ApiSettings { mcp_allowed_hosts: vec!["http://x/".into()], ..d() };
        assert!(bad(hosts).contains("`api.mcp_allowed_hosts`"));
        let origins =
            |o: &[&str]| ApiSettings { cors_allowed_origins: o.iter().map(|s| s.to_string()).collect(), ..d() };
        assert!(bad(origins(&["https://x.example/path"])).contains("`api.cors_allowed_origins`"));
        origins(&["*", "http://localhost:3000", "https://x.example"]).validate().unwrap();
        ApiSettings { listen: String::new(), tokens_env: String::new(), ..d() }.validate().unwrap();
    }

    #[test]
    fn auth_reads_its_strings_and_unknown_fields_are_refused() {
        let s: ApiSettings = serde_json::from_str(r#"{"auth": "none"}"#).unwrap();
        assert_eq!(s.auth, ApiAuth::None);
        assert!(serde_json::from_str::<ApiSettings>(r#"{"auth": "open"}"#).is_err());
        assert!(serde_json::from_str::<ApiSettings>(r#"{"token": "x"}"#).is_err());
    }
}
