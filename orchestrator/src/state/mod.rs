//! The orchestrator's derived state: sharded per input partition, owned by
//! the stage that reads the partition (decisions: ticks and events;
//! results: commands, results and dead letters), checkpointed to compacted changelog topics in the
//! stage's transactions, restored from them, published to the query API's
//! readers, and announced to the other instances.

pub mod decode;
pub mod log;
pub mod members;
pub mod replay;
pub mod settings;
pub mod shards;
pub mod stats;
pub mod topics;

pub use settings::StateSettings;
pub use shards::{RestoreError, RestoreReport, Shards};
pub use stats::StateStats;
