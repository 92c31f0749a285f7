//! Query and path parameters: every route names the query parameters it
//! takes, and anything else (an unknown name, a repeated one, a value not
//! of the expected form) is a 400 naming the parameter.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use shoal_state::EntityKind;
use shoal_state::commands::Lifecycle;
use uuid::Uuid;

use crate::error::{ApiError, quote};

/// Every lifecycle status, as named in JSON.
pub const STATUSES: [Lifecycle; 9] = [
    Lifecycle::Issued,
    Lifecycle::Succeeded,
    Lifecycle::Failed,
    Lifecycle::Expired,
    Lifecycle::Unsupported,
    Lifecycle::DeadLettered,
    Lifecycle::PendingApproval,
    Lifecycle::Approved,
    Lifecycle::Rejected,
];

/// The names of every entity kind.
pub fn kind_names() -> Vec<&'static str> {
    EntityKind::ALL.iter().map(|k| k.as_str()).collect()
}

/// The names of every lifecycle status.
pub fn status_names() -> Vec<&'static str> {
    STATUSES.iter().map(|s| s.as_str()).collect()
}

/// The query parameters of a request, in order.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::bad_parameter("query", format!("malformed query string: {}", e.body_text())))?;
        Ok(Self { pairs })
    }
}

impl Params {
    /// Checks that only `allowed` names are given, each at most once.
    pub fn only(self, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut unknown: Vec<&str> =
            self.pairs.iter().map(|(k, _)| k.as_str()).filter(|k| !allowed.contains(k)).collect();
        if !unknown.is_empty() {
            unknown.dedup();
            return Err(ApiError::unknown_parameters(&unknown, allowed));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some((name, _)) = self.pairs.iter().find(|(name, _)| !seen.insert(name.as_str())) {
            return Err(ApiError::bad_parameter(name, format!("`{name}` is given more than once (expected once)")));
        }
        Ok(self)
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// `limit`: an integer from 1 to `max`, `max` when absent.
    pub fn limit(&self, max: usize) -> Result<usize, ApiError> {
        let Some(text) = self.get("limit") else { return Ok(max) };
        match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_parameter(
                "limit",
                format!("`limit`: {} is not valid (expected an integer from 1 to {max})", quote(text)),
            )),
        }
    }

    /// The required `kind`.
    pub fn kind(&self) -> Result<EntityKind, ApiError> {
        let text = self.get("kind").ok_or_else(|| {
            ApiError::bad_parameter("kind", format!("`kind` is required (expected one of {})", kind_names().join(", ")))
        })?;
        parse_kind(text)
    }

    /// The optional `status`.
    pub fn status(&self) -> Result<Option<Lifecycle>, ApiError> {
        self.get("status").map(parse_status).transpose()
    }

    /// The optional `since`, an RFC 3339 date-time.
    pub fn since(&self) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.get("since")
            .map(|text| {
                DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|_| {
                    ApiError::bad_parameter(
                        "since",
                        format!(
                            "`since`: {} is not a date-time (expected RFC 3339, e.g. 2025-01-31T12:00:00Z)",
                            quote(text)
                        ),
                    )
                })
            })
            .transpose()
    }
}

/// An entity kind by name (`kind`).
pub fn parse_kind(text: &str) -> Result<EntityKind, ApiError> {
    EntityKind::parse(text).ok_or_else(|| ApiError::not_one_of("kind", text, &kind_names()))
}

/// A lifecycle status by name (`status`).
pub fn parse_status(text: &str) -> Result<Lifecycle, ApiError> {
    STATUSES
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| ApiError::not_one_of("status", text, &status_names()))
}

/// A command id (`id`), in its canonical (lowercase, hyphenated) form.
pub fn parse_command_id(text: &str) -> Result<String, ApiError> {
    Uuid::parse_str(text).map(|id| id.to_string()).map_err(|_| {
        ApiError::bad_parameter(
            "id",
            format!("`id`: {} is not a UUID (expected e.g. 0190a5b2-3c4d-7e8f-9a0b-1c2d3e4f5a6b)", quote(text)),
        )
    })
}

/// Path parameters, rejected as a JSON 400.
#[derive(Debug)]
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_parameter("path", rejection.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params { pairs: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    #[test]
    fn names_values_and_limits() {
        assert!(params(&[("kind", "symbol"), ("limit", "5")]).only(&["kind", "limit"]).is_ok());
        let err = params(&[("kind", "symbol"), ("x", "1")]).only(&["kind", "limit"]).unwrap_err();
        assert_eq!(err.parameter(), Some("x"));
        let err = params(&[("kind", "a"), ("kind", "b")]).only(&["kind"]).unwrap_err();
        assert!(err.to_string().contains("more than once"), "{err}");
        assert_eq!(params(&[]).limit(10), Ok(10));
        assert_eq!(params(&[("limit", "3")]).limit(10), Ok(3));
        for bad in ["0", "11", "-1", "x", ""] {
            assert_eq!(params(&[("limit", bad)]).limit(10).unwrap_err().parameter(), Some("limit"), "{bad}");
        }
        assert_eq!(params(&[]).kind().unwrap_err().parameter(), Some("kind"));
        assert_eq!(params(&[("kind", "alerts")]).kind(), Ok(EntityKind::Alerts));
        assert_eq!(params(&[("status", "dead_lettered")]).status(), Ok(Some(Lifecycle::DeadLettered)));
        assert!(params(&[("status", "done")]).status().unwrap_err().to_string().contains("issued, succeeded"));
        assert!(params(&[("since", "2025-01-01T00:00:00+01:00")]).since().unwrap().is_some());
        assert_eq!(params(&[("since", "yesterday")]).since().unwrap_err().parameter(), Some("since"));
        let id = "0190A5B2-3C4D-7E8F-9A0B-1C2D3E4F5A6B";
        assert_eq!(parse_command_id(id), Ok(id.to_lowercase()));
        assert_eq!(parse_command_id("42").unwrap_err().parameter(), Some("id"));
    }
}
