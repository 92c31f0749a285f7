//! Shoal's MCP server: the state query API's read questions as tools for
//! LLM clients, on the official Rust SDK (`rmcp`).
//!
//! - [`client`]: a client of the state API (bearer token, bounded requests).
//! - [`tools`]: the tools (`list_entities`, `get_state`, `get_recent_alerts`,
//!   `get_command`, `find_commands`, `summarize`), each answering with the
//!   API's JSON, freshness and provenance included; an API error becomes a
//!   tool error that names the parameter at fault.
//! - [`schemas`]: the tools' output schemas.
//!
//! The `shoal-mcp` binary serves them over stdio.

pub mod approvals;
pub mod client;
pub mod http;
pub mod resources;
pub mod schemas;
pub mod tools;

pub use client::{Caller, ClientError, StateClient};
pub use tools::ShoalTools;
