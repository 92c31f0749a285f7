//! Bearer tokens with two roles: `read` (every query and the stream) and
//! `admin` (also `/v1/admin/...`).
//!
//! Tokens come from `api.tokens_file` and the variable named by
//! `api.tokens_env`, in one format: one token per line or comma-separated,
//! each `read:<token>` or `admin:<token>`, blank lines and `#` comments
//! ignored, at least [`MIN_TOKEN_LEN`] characters. A request presents its
//! token in `Authorization: Bearer <token>`; a WebSocket upgrade may
//! instead offer it as the subprotocol `bearer.<token as hex>`
//! ([`WEBSOCKET_BEARER_PREFIX`]), as browsers cannot set headers on a
//! WebSocket (never a query parameter, which proxies log). A token is compared
//! with every configured one in constant time, and is never logged nor
//! quoted in an error.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use shoal_config::SettingsError;
use subtle::{Choice, ConstantTimeEq};

use crate::ApiContext;
use crate::error::ApiError;
use crate::settings::{ApiAuth, ApiSettings};

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

const TOKEN_FORM: &str = "`read:<token>` or `admin:<token>`, one a line or comma-separated, tokens of at least 16 \
                          printable characters without spaces or commas";

/// What a token allows. `Admin` implies `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Queries and the stream.
    Read,
    /// Also the admin routes.
    Admin,
}

impl Role {
    /// Whether this role may use a route that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// `read` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }
}

/// The tokens accepted. Its `Debug` shows counts, never tokens.
pub struct Tokens {
    tokens: Vec<(Role, SecretString)>,
    /// `api.auth = "none"`: every request is an admin's.
    open: bool,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let admins = self.tokens.iter().filter(|(r, _)| *r == Role::Admin).count();
        f.debug_struct("Tokens")
            .field("open", &self.open)
            .field("read", &(self.tokens.len() - admins))
            .field("admin", &admins)
            .finish()
    }
}

impl Tokens {
    /// No authentication: every request is allowed, as an admin.
    pub fn open() -> Self {
        Self { tokens: Vec::new(), open: true }
    }

    /// Parses tokens in the file format; `source` names where they come
    /// from in errors (a file path, an environment variable).
    pub fn parse(text: &str, source: &str) -> Result<Self, String> {
        Ok(Self { tokens: parse_tokens(text, source)?, open: false })
    }

    /// Whether authentication is off.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is accepted (and authentication is on).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The role of `candidate`, comparing it with every configured token in
    /// constant time (no early exit).
    pub fn role_of(&self, candidate: &str) -> Option<Role> {
        let (mut read, mut admin) = (Choice::from(0), Choice::from(0));
        for (role, token) in &self.tokens {
            let equal = candidate.as_bytes().ct_eq(token.expose_secret().as_bytes());
            match role {
                Role::Read => read |= equal,
                Role::Admin => admin |= equal,
            }
        }
        if bool::from(admin) {
            Some(Role::Admin)
        } else if bool::from(read) {
            Some(Role::Read)
        } else {
            None
        }
    }

    /// Checks the `Authorization` header of a request to a route that needs
    /// `needed`: 401 without a valid bearer token, 403 when its role is too
    /// low.
    pub fn check(&self, headers: &HeaderMap, needed: Role) -> Result<Role, ApiError> {
        if self.open {
            return Ok(Role::Admin);
        }
        let token = match headers.get(header::AUTHORIZATION) {
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim().to_string())
                .filter(|token| !token.is_empty())
                .ok_or_else(|| {
                    ApiError::unauthorized("malformed `Authorization` header (expected `Bearer <token>`)")
                })?,
            None => websocket_bearer(headers)?
                .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>` header"))?,
        };
        let role = self
            .role_of(&token)
            .ok_or_else(|| ApiError::Unauthorized { message: "unknown token".into(), invalid_token: true })?;
        if role.allows(needed) {
            Ok(role)
        } else {
            Err(ApiError::Forbidden(format!("this route needs an {} token", needed.as_str())))
        }
    }
}

/// The subprotocol a WebSocket client offers to carry its token, for
/// browsers (which cannot set `Authorization` on a WebSocket):
/// `Sec-WebSocket-Protocol: shoal.stream, bearer.<token as lowercase hex>`.
/// The server selects [`crate::stream::PROTOCOL`], never this one.
pub const WEBSOCKET_BEARER_PREFIX: &str = "bearer.";

/// The token of a WebSocket upgrade request offered as the subprotocol
/// `bearer.<hex>` ([`WEBSOCKET_BEARER_PREFIX`]): `None` when the request is
/// not an upgrade or offers none, an error when it is not hex of printable
/// ASCII.
fn websocket_bearer(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok());
    if !upgrade.is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Ok(None);
    }
    let offered = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok());
    let Some(hex) = offered.flat_map(|v| v.split(',')).find_map(|p| p.trim().strip_prefix(WEBSOCKET_BEARER_PREFIX))
    else {
        return Ok(None);
    };
    let malformed =
        || ApiError::unauthorized("malformed `bearer.` WebSocket subprotocol (expected `bearer.<token as hex>`)");
    if hex.is_empty() || hex.len() % 2 != 0 {
        return Err(malformed());
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect();
    let token = bytes.and_then(|b| String::from_utf8(b).ok()).filter(|t| t.chars().all(|c| c.is_ascii_graphic()));
    token.map(Some).ok_or_else(malformed)
}

/// Loads the tokens `settings` names (the file, then the environment
/// variable). With `auth = "none"`, accepts everything and warns.
pub fn load(settings: &ApiSettings) -> Result<Tokens, SettingsError> {
    load_with(settings, |name| std::env::var(name).ok())
}

/// [`load`] reading environment variables through `env`, for tests.
pub fn load_with(settings: &ApiSettings, env: impl Fn(&str) -> Option<String>) -> Result<Tokens, SettingsError> {
    if settings.auth == ApiAuth::None {
        tracing::warn!("api.auth = \"none\": the state API answers anyone, admin routes included");
        return Ok(Tokens::open());
    }
    let mut tokens = Vec::new();
    if !settings.tokens_file.is_empty() {
        let path = &settings.tokens_file;
        let text = std::fs::read_to_string(path).map_err(|error| {
            SettingsError::invalid("api.tokens_file", format!("cannot read {path:?}: {error}"), "a readable file")
        })?;
        let parsed = parse_tokens(&text, &format!("file {path:?}"))
            .map_err(|message| SettingsError::invalid("api.tokens_file", message, TOKEN_FORM))?;
        tokens.extend(parsed);
    }
    if !settings.tokens_env.is_empty()
        && let Some(text) = env(&settings.tokens_env)
    {
        let source = format!("environment variable {}", settings.tokens_env);
        let parsed = parse_tokens(&text, &source)
            .map_err(|message| SettingsError::invalid("api.tokens_env", message, TOKEN_FORM))?;
        tokens.extend(parsed);
    }
    if tokens.is_empty() {
        let env = if settings.tokens_env.is_empty() { "(none)" } else { settings.tokens_env.as_str() };
        return Err(SettingsError::invalid(
            "api.tokens_file",
            format!("api.auth = \"tokens\" but no token was found in api.tokens_file or environment variable {env}"),
            "at least one `read:<token>` or `admin:<token>` in api.tokens_file or the variable named by \
             api.tokens_env, or api.auth = \"none\" to serve without authentication",
        ));
    }
    let admins = tokens.iter().filter(|(r, _)| *r == Role::Admin).count();
    tracing::info!(read = tokens.len() - admins, admin = admins, "state API tokens loaded");
    Ok(Tokens { tokens, open: false })
}

/// Parses the token format; errors name `source` and the line, never the
/// token.
fn parse_tokens(text: &str, source: &str) -> Result<Vec<(Role, SecretString)>, String> {
    let mut tokens = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        for entry in line.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let at = || format!("line {} of {source}", index + 1);
            let (role, token) = match entry.split_once(':') {
                Some(("read", token)) => (Role::Read, token),
                Some(("admin", token)) => (Role::Admin, token),
                _ => return Err(format!("{}: an entry does not start with `read:` or `admin:`", at())),
            };
            if token.chars().count() < MIN_TOKEN_LEN {
                return Err(format!("{}: a token is shorter than {MIN_TOKEN_LEN} characters", at()));
            }
            if !token.chars().all(|c| c.is_ascii_graphic()) {
                return Err(format!("{}: a token holds characters other than printable ASCII", at()));
            }
            tokens.push((role, SecretString::from(token)));
        }
    }
    Ok(tokens)
}

/// Middleware of the read routes: a valid token of any role.
pub async fn require_read(State(ctx): State<ApiContext>, request: Request, next: Next) -> Response {
    authorize(&ctx, Role::Read, request, next).await
}

/// Middleware of the admin routes: an admin token.
pub async fn require_admin(State(ctx): State<ApiContext>, request: Request, next: Next) -> Response {
    authorize(&ctx, Role::Admin, request, next).await
}

async fn authorize(ctx: &ApiContext, needed: Role, mut request: Request, next: Next) -> Response {
    match ctx.tokens.check(request.headers(), needed) {
        Ok(role) => {
            request.extensions_mut().insert(role);
            next.run(request).await
        }
        Err(error) => {
            tracing::debug!(path = %request.uri().path(), code = error.code(), "request refused");
            error.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const READ: &str = "read-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";

    fn tokens() -> Tokens {
        Tokens::parse(&format!("# comment\n\nread:{READ}\n  admin:{ADMIN} , \n"), "test").unwrap()
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn roles_and_checks() {
        let t = tokens();
        assert_eq!(t.len(), 2);
        assert_eq!(t.role_of(READ), Some(Role::Read));
        assert_eq!(t.role_of(ADMIN), Some(Role::Admin));
        assert_eq!(t.role_of("read-token-012345678"), None);
        assert_eq!(t.check(&bearer(&format!("Bearer {READ}")), Role::Read), Ok(Role::Read));
        assert_eq!(t.check(&bearer(&format!("bearer {ADMIN}")), Role::Admin), Ok(Role::Admin));
        assert!(matches!(t.check(&bearer(&format!("Bearer {READ}")), Role::Admin), Err(ApiError::Forbidden(_))));
        let unauthorized = |h: &HeaderMap| matches!(t.check(h, Role::Read), Err(ApiError::Unauthorized { .. }));
        assert!(unauthorized(&HeaderMap::new()));
        assert!(unauthorized(&bearer(READ)));
        assert!(unauthorized(&bearer(&format!("Basic {READ}"))));
        assert!(unauthorized(&bearer("Bearer ")));
        assert!(unauthorized(&bearer("Bearer wrong-token-0123456789")));
        assert_eq!(Tokens::open().check(&HeaderMap::new(), Role::Admin), Ok(Role::Admin));
    }

    fn upgrade(protocols: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_str(protocols).unwrap());
        headers
    }

    fn hex(text: &str) -> String {
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn websocket_upgrades_may_carry_the_token_as_a_subprotocol() {
        let t = tokens();
        let offered = format!("shoal.stream, bearer.{}", hex(ADMIN));
        assert_eq!(t.check(&upgrade(&offered), Role::Admin), Ok(Role::Admin));
        assert_eq!(t.check(&upgrade(&format!("bearer.{}", hex(READ))), Role::Read), Ok(Role::Read));
        assert!(matches!(
            t.check(&upgrade(&format!("bearer.{}", hex(READ))), Role::Admin),
            Err(ApiError::Forbidden(_))
        ));
        let unauthorized = |h: &HeaderMap| matches!(t.check(h, Role::Read), Err(ApiError::Unauthorized { .. }));
        assert!(unauthorized(&upgrade("shoal.stream")));
        assert!(unauthorized(&upgrade("bearer.")));
        assert!(unauthorized(&upgrade("bearer.abc")));
        assert!(unauthorized(&upgrade("bearer.zz")));
        assert!(unauthorized(&upgrade(&format!("bearer.{}", hex("wrong-token-0123456789")))));
        // Only on an upgrade: a plain request's header is ignored.
        let mut plain = upgrade(&format!("bearer.{}", hex(READ)));
        plain.remove(header::UPGRADE);
        assert!(unauthorized(&plain));
        // `Authorization` wins when both are there.
        let mut both = upgrade(&format!("bearer.{}", hex(ADMIN)));
        both.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {READ}")).unwrap());
        assert_eq!(t.check(&both, Role::Read), Ok(Role::Read));
    }

    #[test]
    fn debug_shows_counts_only() {
        let text = format!("{:?}", tokens());
        assert!(!text.contains(READ) && !text.contains(ADMIN), "{text}");
        assert!(text.contains("read: 1") && text.contains("admin: 1"), "{text}");
    }

    #[test]
    fn bad_entries_name_source_and_line_not_the_token() {
        let err = Tokens::parse("# c\nread:0123456789abcdef\nadmin:short-secret\n", "file \"t\"").unwrap_err();
        assert_eq!(err, "line 3 of file \"t\": a token is shorter than 16 characters");
        assert!(!err.contains("short-secret"));
        let err = Tokens::parse("0123456789abcdef0123", "environment variable X").unwrap_err();
        assert!(err.contains("line 1 of environment variable X") && !err.contains("0123456789abcdef"), "{err}");
        let err = Tokens::parse("read:0123456789abcdef\u{e9}", "f").unwrap_err();
        assert!(err.contains("printable ASCII"), "{err}");
    }

    #[test]
    fn load_reads_file_and_environment_and_needs_a_token() {
        let dir = std::env::temp_dir().join(format!("shoal-api-tokens-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        std::fs::write(&path, format!("# readers\nread:{READ}\n")).unwrap();
        let settings = ApiSettings { tokens_file: path.display().to_string(), ..ApiSettings::default() };
        let env = |name: &str| (name == "SHOAL_API_TOKENS").then(|| format!("admin:{ADMIN},read:{READ}"));
        let t = load_with(&settings, env).unwrap();
        assert_eq!((t.len(), t.role_of(ADMIN)), (3, Some(Role::Admin)));
        std::fs::write(&path, "read:tiny\n").unwrap();
        let err = load_with(&settings, |_| None).unwrap_err().to_string();
        assert!(err.contains("api.tokens_file") && err.contains("line 1 of file") && !err.contains("tiny"), "{err}");
        let none = ApiSettings::default();
        let err = load_with(&none, |_| None).unwrap_err().to_string();
        assert!(err.contains("api.tokens_file") && err.contains("SHOAL_API_TOKENS"), "{err}");
        let err = load_with(&none, |_| Some("read:x".into())).unwrap_err().to_string();
        assert!(err.contains("api.tokens_env") && err.contains("environment variable SHOAL_API_TOKENS"), "{err}");
        let open = ApiSettings { auth: ApiAuth::None, ..ApiSettings::default() };
        assert!(load_with(&open, |_| None).unwrap().is_open());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
