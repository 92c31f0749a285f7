//! The harness's parts; `lib.rs` re-exports their items at the crate root.

pub mod broker;
pub mod ingest;
pub mod kafka;
pub mod launch;
pub mod netfault;
pub mod proc;
pub mod reader;
pub mod replay;
pub mod scope;
pub mod secure;
pub mod sim;
