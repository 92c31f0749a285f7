//! What the API answers when it cannot: a status and a JSON body
//! `{"error": {"code": "...", "message": "...", "parameter": "..."}}`
//! (`parameter` only for a bad parameter).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// `WWW-Authenticate` of a request without a token.
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"shoal\"";
/// `WWW-Authenticate` of a request with a token that is not accepted.
pub const BEARER_INVALID: &str = "Bearer realm=\"shoal\", error=\"invalid_token\"";

/// Longest piece of a caller's value quoted back in a message.
const QUOTE_MAX: usize = 64;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: a parameter is missing, unknown or not of the expected form.
    #[error("{message}")]
    BadParameter {
        /// The parameter (query or path) at fault.
        parameter: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// 401: no token, a malformed `Authorization` header, or an unknown
    /// token.
    #[error("{message}")]
    Unauthorized {
        /// Why.
        message: String,
        /// A token was given but not accepted (`error="invalid_token"`).
        invalid_token: bool,
    },
    /// 403: the token's role does not allow the route.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such entity (or route).
    #[error("{0}")]
    NotFound(String),
    /// 409: the entity is not in a state that allows the request (an
    /// approval decided already or expired).
    #[error("{0}")]
    Conflict(String),
    /// 405: the route does not answer this method.
    #[error(
        "method not allowed: the routes of this API answer GET (POST for /v1/command-requests and /v1/approvals/{{id}}/approve|reject)"
    )]
    MethodNotAllowed,
    /// 429: too many requests or subscriptions.
    #[error("{0}")]
    TooManyRequests(String),
    /// 503: cannot answer now.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A bad parameter: `message` should say what was expected.
    pub fn bad_parameter(parameter: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadParameter { parameter: parameter.into(), message: message.into() }
    }

    /// A parameter whose `value` is not one of `allowed`.
    pub fn not_one_of(parameter: &str, value: &str, allowed: &[&str]) -> Self {
        Self::bad_parameter(
            parameter,
            format!("`{parameter}`: {} is not recognised (expected one of {})", quote(value), allowed.join(", ")),
        )
    }

    /// Query parameters the route does not take.
    pub fn unknown_parameters(unknown: &[&str], allowed: &[&str]) -> Self {
        let mut names: Vec<String> = unknown.iter().take(5).map(|n| quote(n)).collect();
        if unknown.len() > 5 {
            names.push(format!("and {} more", unknown.len() - 5));
        }
        let expected = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
        Self::bad_parameter(
            unknown.first().copied().unwrap_or_default(),
            format!("unknown query parameter(s) {} (this route takes: {expected})", names.join(", ")),
        )
    }

    /// No entity of `kind` and `key`.
    pub fn entity_not_found(kind: &str, key: &str, peers: usize) -> Self {
        let where_ = match peers {
            0 => "here".to_string(),
            1 => "here or at the 1 other instance".to_string(),
            n => format!("here or at any of the {n} other instances"),
        };
        Self::NotFound(format!("no {kind} entity with key {} {where_}", quote(key)))
    }

    /// An unauthenticated request (no token, or a malformed header).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized { message: message.into(), invalid_token: false }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadParameter { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code in the body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadParameter { .. } => "bad_parameter",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::TooManyRequests(_) => "too_many_requests",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The parameter at fault, for a bad parameter.
    pub fn parameter(&self) -> Option<&str> {
        match self {
            Self::BadParameter { parameter, .. } => Some(parameter),
            _ => None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
                parameter: self.parameter().map(str::to_string),
            },
        }
    }
}

/// The body of an error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable code (`bad_parameter`, `unauthorized`, ...).
    pub code: String,
    /// For people.
    pub message: String,
    /// The parameter at fault (bad parameters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if let Self::Unauthorized { invalid_token, .. } = self {
            let challenge = if invalid_token { BEARER_INVALID } else { BEARER_CHALLENGE };
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

/// `value` quoted for a message, cut to a few dozen characters.
pub fn quote(value: &str) -> String {
    if value.chars().count() <= QUOTE_MAX {
        return format!("{value:?}");
    }
    let cut: String = value.chars().take(QUOTE_MAX).collect();
    format!("{cut:?}...")
}

/// The fallback of unknown routes: 404.
pub async fn no_route() -> ApiError {
    ApiError::NotFound("no such route (see /v1/openapi.json)".into())
}

/// The fallback of known routes asked with another method: 405.
pub async fn wrong_method() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_code_message_and_parameter() {
        let e = ApiError::not_one_of("kind", "nope", &["symbol", "account"]);
        let body = serde_json::to_value(e.body()).unwrap();
        assert_eq!(body["error"]["code"], "bad_parameter");
        assert_eq!(body["error"]["parameter"], "kind");
        assert_eq!(body["error"]["message"], "`kind`: \"nope\" is not recognised (expected one of symbol, account)");
        let body = serde_json::to_value(ApiError::Forbidden("admin only".into()).body()).unwrap();
        assert_eq!(body, serde_json::json!({"error": {"code": "forbidden", "message": "admin only"}}));
        let e = ApiError::unknown_parameters(&["x", "y"], &["kind"]);
        assert_eq!(e.parameter(), Some("x"));
        assert!(e.to_string().contains("\"x\", \"y\""), "{e}");
        assert!(ApiError::entity_not_found("symbol", "A", 2).to_string().contains("any of the 2 other"));
        assert_eq!(quote(&"x".repeat(100)).len(), QUOTE_MAX + 5);
    }

    #[test]
    fn unauthorized_answers_challenge() {
        let r = ApiError::unauthorized("no token").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], BEARER_CHALLENGE);
    }
}
