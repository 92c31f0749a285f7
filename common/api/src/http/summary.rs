//! `GET /v1/summary`: a token-budgeted digest of the state held here, for a
//! language model's context (see [`crate::summary`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use shoal_state::EntityKind;

use super::answer::Freshness;
use crate::ApiContext;
use crate::error::{ApiError, quote};
use crate::params::{Params, parse_kind};
use crate::summary::{DEFAULT_MAX_TOKENS, Encoding, Format, MIN_TOKENS, Scope, TokenCounter, summarize};

/// The answer of `GET /v1/summary`.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryAnswer {
    /// The digest (text, or a JSON document as a string, per `format`).
    pub summary: String,
    /// `text` or `json`.
    pub format: Format,
    /// Its tokens, counted with `encoding`.
    pub tokens: usize,
    /// The budget asked for.
    pub max_tokens: usize,
    /// The tokenizer that counted them.
    pub encoding: Encoding,
    /// Entities in the digest.
    pub included: usize,
    /// Entities in scope left out, by kind.
    pub omitted: BTreeMap<EntityKind, usize>,
    /// The newest event time the state has applied: the reference of every
    /// `age` in the digest.
    pub as_of: Option<DateTime<Utc>>,
    /// Watermarks of every shard held here.
    pub freshness: Freshness,
    /// The instance that answered (a digest covers the shards it holds).
    pub served_by: String,
}

/// `GET /v1/summary?kind=|keys=&max_tokens=&format=`.
pub async fn summary(State(ctx): State<ApiContext>, params: Params) -> Result<Json<SummaryAnswer>, ApiError> {
    let params = params.only(&["kind", "keys", "max_tokens", "format"])?;
    let scope = scope(&params)?;
    let max = ctx.settings.summary_max_tokens;
    let max_tokens = match params.get("max_tokens") {
        None => DEFAULT_MAX_TOKENS.min(max),
        Some(text) => text.parse::<usize>().ok().filter(|n| (MIN_TOKENS..=max).contains(n)).ok_or_else(|| {
            ApiError::bad_parameter(
                "max_tokens",
                format!("`max_tokens`: {} is not valid (expected an integer from {MIN_TOKENS} to {max})", quote(text)),
            )
        })?,
    };
    let format = match params.get("format") {
        None => Format::Text,
        Some(text) => text.parse().map_err(|_| ApiError::not_one_of("format", text, Format::NAMES))?,
    };
    let encoding = ctx.settings.summary_encoding;
    let view = ctx.hub.view();
    // Counting tokens is CPU work (and the first call loads the encoding).
    let digest = tokio::task::spawn_blocking(move || {
        let counter = TokenCounter::new(encoding)?;
        summarize(&view, &scope, max_tokens, format, &counter).map(|s| (s, view))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the summary task failed: {e}")))?;
    let (summary, view) = digest.map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(SummaryAnswer {
        summary: summary.text,
        format,
        tokens: summary.tokens,
        max_tokens,
        encoding,
        included: summary.included,
        omitted: summary.omitted,
        as_of: summary.as_of,
        freshness: Freshness::of_view(&view),
        served_by: ctx.instance,
    }))
}

/// `kind` (one kind), `keys` (comma-separated keys of any kind), both
/// (those keys of that kind), or neither (everything).
fn scope(params: &Params) -> Result<Scope, ApiError> {
    let kind = params.get("kind").map(parse_kind).transpose()?;
    let keys = match params.get("keys") {
        None => None,
        Some(text) => {
            let keys: Vec<String> =
                text.split(',').map(str::trim).filter(|k| !k.is_empty()).map(String::from).collect();
            if keys.is_empty() {
                return Err(ApiError::bad_parameter(
                    "keys",
                    "`keys` is empty (expected comma-separated keys, e.g. SIM-AAA,SIM-BBB)",
                ));
            }
            Some(keys)
        }
    };
    Ok(match (kind, keys) {
        (Some(kind), Some(keys)) => Scope::KeysOfKind(kind, keys),
        (Some(kind), None) => Scope::Kind(kind),
        (None, Some(keys)) => Scope::Keys(keys),
        (None, None) => Scope::All,
    })
}
