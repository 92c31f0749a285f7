//! Keys and skew: Shoal keeps each key's commands in order, which costs
//! nothing when every key is distinct and bounds the parallelism when few
//! keys carry the load. One exactly-once pipeline (three workers, the
//! `probe` skill doing the handler work) drains backlogs over 10, 1,000
//! and 100,000 keys, drawn uniformly or Zipf-distributed (s = 1.1), with
//! handler work of 0, 1 and 50 ms (an LLM-like call): throughput, and how
//! long after the drain started each result arrived.

use rand::{Rng as _, SeedableRng as _};
use rdkafka::message::OwnedHeaders;
use shoal_kafka::outputs::MessageMeta;
use shoal_protocol::messages::{Command, SCHEMA_VERSION, WireMessage as _};

use super::cli::Cli;
use super::load::Issue;
use super::pipeline::Pipeline;
use super::stats::percentile;

/// Key counts measured.
const KEYS: [usize; 3] = [10, 1_000, 100_000];
/// Handler work measured, ms.
const WORK_MS: [u64; 3] = [0, 1, 50];
/// The Zipf exponent.
const ZIPF_S: f64 = 1.1;
/// Pairs of the skew check (below).
const SKEW_PAIRS: usize = 3;
/// A configuration's drain is sized to take about this long at the
/// parallelism its keys allow, so the 50 ms rows finish in seconds.
const TARGET_SECS: f64 = 5.0;

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Draw {
    Uniform,
    Zipf,
}

/// One configuration's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct KeysRow {
    pub(crate) keys: usize,
    pub(crate) draw: Draw,
    pub(crate) work_ms: u64,
    pub(crate) commands: usize,
    /// Distinct keys in the backlog.
    pub(crate) distinct_keys: usize,
    /// The busiest key's share of the backlog.
    pub(crate) hottest_share: f64,
    pub(crate) results_per_s: f64,
    /// When results arrived after the drain started, ms.
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// The skew check: one drain of the matrix per configuration is too short
/// to compare two rows measured minutes apart on a noisy machine, so the two
/// the acceptance compares (100,000 Zipf keys and 1,000 uniform keys, no
/// handler work) are drained again in alternating pairs.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Skew {
    /// Results/s of each pair: (1,000 uniform, 100,000 Zipf).
    pub(crate) pairs: Vec<(f64, f64)>,
    /// Zipf over uniform, per pair.
    pub(crate) ratios: Vec<f64>,
    /// The median of `ratios`.
    pub(crate) median_ratio: f64,
}

/// What the keys-and-skew phase measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct KeysFigures {
    pub(crate) rows: Vec<KeysRow>,
    pub(crate) skew: Option<Skew>,
}

/// Draws key indices `0..keys`: uniformly, or by a Zipf law (rank r with
/// weight r^-s) through its cumulative distribution.
struct Keys {
    cdf: Option<Vec<f64>>,
    keys: usize,
    rng: rand::rngs::StdRng,
}

impl Keys {
    fn new(keys: usize, draw: Draw, seed: u64) -> Self {
        let cdf = (draw == Draw::Zipf).then(|| {
            let mut acc = 0.0;
            let mut cdf: Vec<f64> = (1..=keys)
                .map(|r| {
                    acc += (r as f64).powf(-ZIPF_S);
                    acc
                })
                .collect();
            for c in &mut cdf {
                *c /= acc;
            }
            cdf
        });
        Self { cdf, keys, rng: rand::rngs::StdRng::seed_from_u64(seed) }
    }

    fn next(&mut self) -> usize {
        match &self.cdf {
            None => self.rng.random_range(0..self.keys),
            Some(cdf) => {
                let u: f64 = self.rng.random();
                cdf.partition_point(|c| *c < u).min(self.keys - 1)
            }
        }
    }
}

/// A backlog of `n` probe commands doing `work_ms` over `keys` keys.
fn backlog(n: usize, keys: usize, draw: Draw, work_ms: u64, partitions: i32) -> (Vec<Issue>, usize, f64) {
    let mut draws = Keys::new(keys, draw, 42);
    let mut counts = std::collections::HashMap::<usize, usize>::new();
    let issued = (0..n)
        .map(|_| {
            let k = draws.next();
            *counts.entry(k).or_default() += 1;
            let key = format!("key-{k}");
            let command = Command {
                schema_version: SCHEMA_VERSION,
                id: uuid::Uuid::now_v7(),
                kind: "probe".into(),
                key: key.clone(),
                seq: 0,
                issued_at: chrono::Utc::now(),
                deadline: None,
                payload: serde_json::json!({ "sleep_ms": work_ms }),
            };
            let meta =
                MessageMeta { message_type: "command", producer_id: "bench-issuer", command_id: Some(command.id) };
            let headers: OwnedHeaders = meta.headers(None, None);
            // Keys spread over the partitions as the orchestrator's would be
            // (hashed), so hot keys load one worker as in a deployment.
            let partition = i32::try_from(fnv(&key) % u64::try_from(partitions).unwrap_or(1)).unwrap_or(0);
            (partition, key, command.encode(), headers)
        })
        .collect();
    let hottest = counts.values().copied().max().unwrap_or(0) as f64 / n.max(1) as f64;
    (issued, counts.len(), hottest)
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Commands for one configuration: enough for [`TARGET_SECS`] at the
/// parallelism the keys allow (at most `cli.keys_backlog`, at least 200).
fn sized(cli: &Cli, keys: usize, draw: Draw, work_ms: u64) -> usize {
    if work_ms == 0 {
        return cli.keys_backlog;
    }
    let slots = (cli.workers * 16) as f64; // worker.max_concurrency's default per worker
    let parallel = match draw {
        Draw::Uniform => (keys as f64).min(slots),
        // The hottest key (share ≈ 1/H(keys, s)) runs its commands one after another.
        Draw::Zipf => (1..=keys).map(|r| (r as f64).powf(-ZIPF_S)).sum::<f64>().min(slots),
    };
    let per_s = parallel * 1000.0 / work_ms as f64;
    ((per_s * TARGET_SECS) as usize).clamp(200, cli.keys_backlog)
}

/// Measures every configuration on one exactly-once pipeline, then the
/// skew check's pairs.
pub(crate) async fn measure(cli: &Cli) -> KeysFigures {
    let mut pipeline = Pipeline::start(cli, "keys-and-skew", Some("exactly_once"), None).await;
    let mut rows = Vec::new();
    for keys in KEYS {
        for draw in [Draw::Uniform, Draw::Zipf] {
            for work_ms in WORK_MS {
                let row = drain(cli, &mut pipeline, keys, draw, work_ms).await;
                println!(
                    "bench: keys {:>6} {:<7} work {:>2} ms: {:>6} commands over {:>6} keys (hottest {:>4.1}%): {:>7.0} results/s",
                    keys,
                    format!("{draw:?}").to_lowercase(),
                    work_ms,
                    row.commands,
                    row.distinct_keys,
                    row.hottest_share * 100.0,
                    row.results_per_s
                );
                rows.push(row);
            }
        }
    }
    let mut pairs = Vec::with_capacity(SKEW_PAIRS);
    for _ in 0..SKEW_PAIRS {
        let uniform = drain(cli, &mut pipeline, 1_000, Draw::Uniform, 0).await.results_per_s;
        let zipf = drain(cli, &mut pipeline, 100_000, Draw::Zipf, 0).await.results_per_s;
        pairs.push((uniform, zipf));
    }
    let skew = skew_of(pairs);
    println!("{}", skew_line(&skew));
    let measured = pipeline.finish().await;
    println!("bench: keys-and-skew workers' peak RSS: {:.0} MiB", measured.rss_mib.first().copied().unwrap_or(0.0));
    KeysFigures { rows, skew: Some(skew) }
}

/// One drain of `keys` keys drawn by `draw` with `work_ms` of handler work.
async fn drain(cli: &Cli, pipeline: &mut Pipeline, keys: usize, draw: Draw, work_ms: u64) -> KeysRow {
    let n = sized(cli, keys, draw, work_ms);
    let (commands, distinct_keys, hottest_share) = backlog(n, keys, draw, work_ms, pipeline.commands_partitions());
    let started = std::time::Instant::now();
    let (results_per_s, received) = pipeline.drain_issued(cli, commands).await;
    let mut arrived: Vec<f64> =
        received.iter().map(|(at, ..)| at.saturating_duration_since(started).as_secs_f64() * 1e3).collect();
    arrived.sort_by(f64::total_cmp);
    KeysRow {
        keys,
        draw,
        work_ms,
        commands: n,
        distinct_keys,
        hottest_share,
        results_per_s,
        p50_ms: percentile(&arrived, 50.0),
        p99_ms: percentile(&arrived, 99.0),
    }
}

fn skew_of(pairs: Vec<(f64, f64)>) -> Skew {
    let ratios: Vec<f64> = pairs.iter().map(|(uniform, zipf)| zipf / uniform).collect();
    let median_ratio = super::stats::median(ratios.clone());
    Skew { pairs, ratios, median_ratio }
}

fn skew_line(skew: &Skew) -> String {
    let (lo, hi) = skew.ratios.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    let per_pair: Vec<String> = skew.pairs.iter().map(|(uniform, zipf)| format!("{zipf:.0}/{uniform:.0}")).collect();
    format!(
        "bench: keys skew, no handler work: 100,000 Zipf / 1,000 uniform = {:.2} (median of {} alternating pairs, range {lo:.2}–{hi:.2}; results/s {})",
        skew.median_ratio,
        skew.ratios.len(),
        per_pair.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_draws_favour_the_first_keys_and_uniform_draws_do_not() {
        let mut zipf = Keys::new(1_000, Draw::Zipf, 1);
        let mut uniform = Keys::new(1_000, Draw::Uniform, 1);
        let n = 100_000;
        let first = |k: &mut Keys| (0..n).filter(|_| k.next() == 0).count() as f64 / n as f64;
        // H(1000, 1.1) ≈ 5.03: the first key takes about a fifth.
        let share = first(&mut zipf);
        assert!((0.17..0.23).contains(&share), "{share}");
        assert!(first(&mut uniform) < 0.003);
        let (_, distinct, hottest) = backlog(10_000, 100_000, Draw::Uniform, 0, 12);
        assert!(distinct > 9_000 && hottest < 0.001, "{distinct} {hottest}");
    }

    #[test]
    fn the_skew_check_reports_the_median_of_its_pairs_ratios() {
        let skew = skew_of(vec![(100.0, 90.0), (100.0, 50.0), (200.0, 220.0)]);
        assert_eq!(skew.ratios, vec![0.9, 0.5, 1.1]);
        assert_eq!(skew.median_ratio, 0.9);
        let line = skew_line(&skew);
        assert!(line.contains("= 0.90 (median of 3 alternating pairs, range 0.50–1.10"), "{line}");
    }
}
