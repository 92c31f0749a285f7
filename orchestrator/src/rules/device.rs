//! `check_device`: the device's newest reading of a metric with the readings
//! before it, from the state, for the worker's detectors (the baseline is
//! learnt from these readings, so it comes from the log).

use shoal_protocol::messages::Event;
use shoal_protocol::payloads::{CheckDevice, DeviceSample};
use shoal_state::State;
use shoal_state::entities::DEFAULT_METRIC;

/// The payload for `event`, a sensor reading the state has just applied:
/// `Err` names what does not fit (the reading itself is checked by the
/// state, which files it under its `metric`).
pub(super) fn check(state: &State, event: &Event) -> Result<serde_json::Value, String> {
    let attrs = &event.attributes;
    let metric = attrs.get("metric").and_then(|m| m.as_str()).unwrap_or(DEFAULT_METRIC).to_string();
    let site = match attrs.get("site") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(site)) => Some(site.clone()),
        Some(other) => return Err(format!("`site` {other} is not a string")),
    };
    let readings: Vec<DeviceSample> = state
        .device(&event.key)
        .and_then(|d| d.metrics.get(&metric))
        .map(|m| {
            m.readings.iter().map(|r| DeviceSample { value: r.value, at: r.stamp.at, threshold: r.threshold }).collect()
        })
        .unwrap_or_default();
    if readings.is_empty() {
        return Err(format!("no {metric} reading of device {} in the state (is `value` a decimal?)", event.key));
    }
    let payload = CheckDevice { device: event.key.clone(), site, metric, readings };
    serde_json::to_value(payload).map_err(|e| e.to_string())
}
