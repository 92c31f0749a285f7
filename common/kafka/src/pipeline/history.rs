//! The exactly-once stage's transaction history (`delivery.history_path`):
//! one JSON line per transaction with its outcome, the digests of its
//! outputs and the offsets it carried, for the chaos runs' audit.

use rdkafka::TopicPartitionList;

/// Digest identifying one output record's body across processes (FNV-1a,
/// 64 bit: stable, unlike the standard library's hasher).
pub fn output_digest(payload: &[u8]) -> String {
    let hash =
        payload.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

/// Appends one transaction's outcome to the history file.
pub(super) fn record_history(
    path: &std::path::Path,
    transactional_id: &str,
    event: &str,
    records: usize,
    digests: &[(String, String)],
    offsets: &TopicPartitionList,
) {
    use std::io::Write as _;
    // The consumed offsets the transaction carried, with their metadata
    // (what is done above each): what a later owner resumes from.
    let offsets: Vec<serde_json::Value> = offsets
        .elements()
        .iter()
        .map(|e| {
            let at = match e.offset() {
                rdkafka::Offset::Offset(at) => Some(at),
                _ => None,
            };
            serde_json::json!([e.topic(), e.partition(), at, e.metadata()])
        })
        .collect();
    let line = serde_json::json!({
        "ts": chrono::Utc::now(),
        "transactional_id": transactional_id,
        "event": event,
        "records": records,
        "outputs": digests,
        "offsets": offsets,
    });
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(error) = written {
        tracing::warn!(%error, path = %path.display(), "cannot append to the transaction history");
    }
}
