//! The state's counters, one set per stage that keeps state (decisions:
//! ticks and events; results: commands, results and dead letters),
//! registered with a `stage` label.

shoal_telemetry::counters! {
    /// State counters of one stage.
    pub struct StateStats {
        /// Inputs applied to the state.
        applied => counter("shoal_state_inputs_applied", "Inputs applied to the derived state"),
        /// Inputs the state ignored (replayed, untracked or invalid).
        ignored => counter("shoal_state_inputs_ignored", "Inputs the derived state did not apply (replays, untracked event types, invalid values)"),
        /// Shards restored from their changelog.
        restores => counter("shoal_state_restores", "State shards restored from their changelog"),
        /// Inputs applied again while restoring (after the last checkpoint).
        caught_up => counter("shoal_state_inputs_caught_up", "Inputs applied again after a checkpoint while restoring a state shard"),
        /// Entities held (as of the last status line).
        entities => gauge("shoal_state_entities", "Entities held in this instance's state shards"),
        /// Entities evicted to keep the bound (as of the last status line).
        evicted => gauge("shoal_state_entities_evicted", "Entities evicted from the state to keep state.max_entities, or expired past state.command_retention_secs (since the shards were restored)"),
        /// Shards held (as of the last status line).
        shards => gauge("shoal_state_shards", "State shards (input partitions) held by this instance"),
    }
}
