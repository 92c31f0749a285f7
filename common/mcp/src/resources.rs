//! State entities as MCP resources: `shoal://state/{kind}/{key}`, read as
//! the API's JSON (freshness and provenance included), and watched for
//! changes by subscribers.
//!
//! A subscription (`subscriptions/listen`) is served by polling the
//! subscribed entities every `poll` and notifying
//! `notifications/resources/updated` when an entity's last applied record
//! (`provenance`) or its `updated_at` changed: changes are coalesced to at
//! most one notification per resource per interval, and a client re-reads
//! the resource to get the current state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rmcp::ErrorData as McpError;
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
    SubscriptionFilter,
};
use rmcp::service::SubscriptionContext;
use serde_json::Value;

use crate::client::{Caller, ClientError, StateClient};

/// The URI scheme and prefix of a state entity.
pub const PREFIX: &str = "shoal://state/";

/// The kinds listed as resources (commands are found through the tools).
pub const LISTED_KINDS: [&str; 3] = ["symbol", "account", "device"];

/// Every kind a resource URI may name.
const KINDS: [&str; 6] = ["symbol", "account", "device", "command", "outcomes", "alerts"];

/// Entities listed per kind, at most.
const LIST_LIMIT: u32 = 200;

/// Default interval between checks of subscribed resources.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// Resources watched by one subscription, at most.
pub const MAX_WATCHED: usize = 100;

/// `(kind, key)` of a resource URI, or why it is not one.
pub fn parse(uri: &str) -> Result<(&str, &str), String> {
    let rest = uri.strip_prefix(PREFIX).ok_or_else(|| format!("{uri:?} is not a {PREFIX}{{kind}}/{{key}} URI"))?;
    let (kind, key) = rest.split_once('/').ok_or_else(|| format!("{uri:?} has no key after its kind"))?;
    if !KINDS.contains(&kind) {
        return Err(format!("{uri:?}: kind {kind:?} is not one of {KINDS:?}"));
    }
    if key.is_empty() {
        return Err(format!("{uri:?} has an empty key"));
    }
    Ok((kind, key))
}

/// The URI of an entity.
pub fn uri(kind: &str, key: &str) -> String {
    format!("{PREFIX}{kind}/{key}")
}

fn api_error(error: ClientError) -> McpError {
    match &error {
        ClientError::Api { status: 404, message, .. } => McpError::resource_not_found(message.clone(), None),
        ClientError::Api { status: 400, message, .. } => McpError::invalid_params(message.clone(), None),
        _ => McpError::internal_error(error.to_string(), Some(error.to_json())),
    }
}

/// `resources/list`: the symbols, accounts and devices held now.
pub async fn list(client: &StateClient, caller: &Caller) -> Result<ListResourcesResult, McpError> {
    let mut resources = Vec::new();
    for kind in LISTED_KINDS {
        let query = [("kind", Some(kind.to_string())), ("limit", Some(LIST_LIMIT.to_string()))];
        let answer = client.get("v1/entities", &query, caller).await.map_err(api_error)?;
        for entity in answer["entities"].as_array().into_iter().flatten() {
            let Some(key) = entity["key"].as_str() else { continue };
            let updated = entity["updated_at"].as_str().unwrap_or("unknown");
            resources.push(
                Resource::new(uri(kind, key), format!("{kind}/{key}"))
                    .with_title(format!("{kind} {key}"))
                    .with_description(format!("Live state of {kind} {key} (last updated {updated})"))
                    .with_mime_type("application/json"),
            );
        }
    }
    Ok(ListResourcesResult::with_all_items(resources))
}

/// `resources/templates/list`: every entity's URI.
pub fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new(format!("{PREFIX}{{kind}}/{{key}}"), "entity")
            .with_title("A state entity")
            .with_description(format!(
                "The live state of one entity: kind is one of {KINDS:?}, key its key (a symbol, account, device, \
                 command id). JSON with updated_at, provenance and freshness."
            ))
            .with_mime_type("application/json"),
    ])
}

/// `resources/read`: the entity as the API answers it.
pub async fn read(client: &StateClient, uri: &str, caller: &Caller) -> Result<ReadResourceResult, McpError> {
    let (kind, key) = parse(uri).map_err(|e| McpError::invalid_params(e, None))?;
    let answer = client.get(&entity_path(kind, key), &[], caller).await.map_err(api_error)?;
    let text = serde_json::to_string_pretty(&answer).map_err(|e| McpError::internal_error(e.to_string(), None))?;
    Ok(ReadResourceResult::new(vec![ResourceContents::text(text, uri).with_mime_type("application/json")]))
}

fn entity_path(kind: &str, key: &str) -> String {
    let key: String = key
        .chars()
        .map(|c| match c {
            '/' | '?' | '#' | '%' | ' ' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect();
    format!("v1/state/{kind}/{key}")
}

/// The part of a requested filter served: resource subscriptions to valid
/// entity URIs (at most [`MAX_WATCHED`]); list changes are not notified.
pub fn accepted(requested: &SubscriptionFilter) -> SubscriptionFilter {
    let mut filter = SubscriptionFilter::new();
    if let Some(uris) = &requested.resource_subscriptions {
        let valid: Vec<String> = uris.iter().filter(|u| parse(u).is_ok()).take(MAX_WATCHED).cloned().collect();
        filter.resource_subscriptions = Some(valid);
    }
    filter
}

/// What identifies an entity's current version: its last applied record
/// and when it changed (`None`: not held now).
fn version(answer: &Value) -> Option<String> {
    Some(format!("{}|{}", answer.get("updated_at")?, answer.get("provenance")?))
}

/// Serves one subscription until the client cancels it.
pub async fn watch(client: Arc<StateClient>, ctx: SubscriptionContext, poll: Duration) -> Result<(), McpError> {
    let uris = ctx.accepted().resource_subscriptions.clone().unwrap_or_default();
    let caller = Caller::of(ctx.request_context());
    let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
    for uri in &uris {
        seen.insert(uri.clone(), current(&client, uri, &caller).await);
    }
    tracing::info!(resources = uris.len(), ?poll, "resource subscription open");
    let mut ticks = tokio::time::interval(poll);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ctx.cancelled() => break,
            _ = ticks.tick() => {}
        }
        for uri in &uris {
            let now = current(&client, uri, &caller).await;
            let before = seen.insert(uri.clone(), now.clone());
            if before.as_ref() != Some(&now)
                && let Err(error) = ctx.sink().notify_resource_updated(uri.clone()).await
            {
                tracing::info!(%error, "resource subscription closed");
                return Ok(());
            }
        }
    }
    tracing::info!("resource subscription cancelled");
    Ok(())
}

/// The entity's version now; an error reads as "not held" (and is logged).
async fn current(client: &StateClient, uri: &str, caller: &Caller) -> Option<String> {
    let (kind, key) = parse(uri).ok()?;
    match client.get(&entity_path(kind, key), &[], caller).await {
        Ok(answer) => version(&answer),
        Err(ClientError::Api { status: 404, .. }) => None,
        Err(error) => {
            tracing::warn!(%error, uri, "checking a subscribed resource failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_a_kind_and_a_key() {
        assert_eq!(parse("shoal://state/symbol/SIM-A"), Ok(("symbol", "SIM-A")));
        assert_eq!(parse("shoal://state/account/acct/with/slash"), Ok(("account", "acct/with/slash")));
        assert!(parse("shoal://state/planet/X").is_err());
        assert!(parse("shoal://state/symbol/").is_err());
        assert!(parse("file:///etc/passwd").is_err());
        assert_eq!(entity_path("account", "a/b c"), "v1/state/account/a%2Fb%20c");
    }

    #[test]
    fn only_valid_uris_are_subscribed() {
        let mut requested = SubscriptionFilter::new();
        requested.resource_subscriptions = Some(vec!["shoal://state/symbol/A".into(), "http://x".into()]);
        requested.tools_list_changed = Some(true);
        let accepted = accepted(&requested);
        assert_eq!(accepted.resource_subscriptions, Some(vec!["shoal://state/symbol/A".to_string()]));
        assert_eq!(accepted.tools_list_changed, None);
    }

    #[test]
    fn a_version_changes_with_the_record_applied() {
        let a = serde_json::json!({"updated_at": "t1", "provenance": {"offset": 1}});
        let b = serde_json::json!({"updated_at": "t1", "provenance": {"offset": 2}});
        assert_ne!(version(&a), version(&b));
        assert_eq!(version(&serde_json::json!({})), None);
    }
}
