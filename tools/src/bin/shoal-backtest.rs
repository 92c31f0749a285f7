//! `shoal-backtest`: deterministic replay of a market recording through the
//! trading topology (see `shoal_tools::backtest` and docs/backtest.md).

// A command-line tool: the summary line goes to stdout, progress to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use clap::{Parser, Subcommand};
use rust_decimal::Decimal;
use shoal_orchestrator::feed::FeedFormat;
use shoal_orchestrator::settings::OrchestratorSettings;
use shoal_paper::{FillModel, RiskLimits};
use shoal_protocol::messages::MarketTick;
use shoal_tools::backtest::recording::{self, Synth};
use shoal_tools::backtest::{AccountSettings, Setup, diff, plot, run};
use shoal_tools::backtest::{frames, record};

/// Replays a recording of market ticks through Shoal's trading topology —
/// the orchestrator's state and rules, the workers' skills, a paper account
/// with risk limits — on a virtual clock, as fast as the machine allows.
/// Nothing external is called. The same recording and settings print the
/// same digest (SHA-256 of every command, result and the final ledger).
///
/// Examples:
///   shoal-backtest run --recording examples/recordings/sim-seed42.jsonl
///   shoal-backtest run --recording r.jsonl --config shoal.toml --max-drawdown 0.05
///   shoal-backtest diff --recording r.jsonl --b-config eager-rules.toml
///   shoal-backtest synth --seed 42 --ticks 20000 --out r.jsonl
///   shoal-backtest record --out r.jsonl   (the ticks topic of the configured cluster)
///   shoal-backtest record-frames --url ws://127.0.0.1:8765 --seconds 60 --out f.jsonl
///   shoal-backtest run --recording f.jsonl   (a frame recording, through the feed's parser)
#[derive(Debug, Parser)]
#[command(name = "shoal-backtest", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replays a recording and prints the summary line; writes the equity
    /// curve (equity.svg) and the decisions (decisions.jsonl) to --out.
    Run(RunArgs),
    /// Replays one recording through two versions (A and B configurations)
    /// and prints where their decisions part: commands only in A, only in
    /// B, those that differ, and the first divergence per key.
    Diff(DiffArgs),
    /// Writes a recording from the simulator's price walk (the walk
    /// shoal-sim serves), on a virtual clock.
    Synth(SynthArgs),
    /// Records the ticks topic (committed ticks, from the beginning to its
    /// end as of now, in event-time order) to a file.
    Record(RecordArgs),
    /// Records a feed's raw WebSocket frames with their receive times
    /// (subscribed as ingest subscribes); `run` and `diff` replay such a
    /// file through the format's frame parser.
    RecordFrames(RecordFramesArgs),
}

#[derive(Debug, clap::Args)]
struct RecordFramesArgs {
    /// Configuration whose [feed] section names the feed (url, format,
    /// symbols, channels, headers), as shoal-orchestrator reads it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The feed's URL (instead of feed.url).
    #[arg(long)]
    url: Option<String>,
    /// The feed's format: shoal-sim, binance, coinbase or kraken (instead
    /// of feed.format).
    #[arg(long)]
    format: Option<FeedFormat>,
    /// Symbols, comma-separated (instead of feed.symbols).
    #[arg(long, value_delimiter = ',')]
    symbols: Option<Vec<String>>,
    /// How long to record, seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Stop after this many frames.
    #[arg(long, default_value_t = 1_000_000)]
    max_frames: usize,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The recording: one MarketTick JSON per line, in feed order.
    #[arg(long)]
    recording: PathBuf,
    /// Orchestrator configuration whose [rules] and [state] decide (as
    /// shoal-orchestrator reads it: defaults, then this file, then
    /// SHOAL__SECTION__KEY variables).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where equity.svg and decisions.jsonl go.
    #[arg(long, default_value = "target/backtest")]
    out: PathBuf,
    #[command(flatten)]
    account: AccountArgs,
}

#[derive(Debug, clap::Args)]
struct DiffArgs {
    /// The recording both versions replay.
    #[arg(long)]
    recording: PathBuf,
    /// Version A's orchestrator configuration (defaults when absent).
    #[arg(long)]
    a_config: Option<PathBuf>,
    /// Version B's orchestrator configuration (defaults when absent).
    #[arg(long)]
    b_config: Option<PathBuf>,
    /// Most keys whose first divergence is printed.
    #[arg(long, default_value_t = 20)]
    max_keys: usize,
    #[command(flatten)]
    account: AccountArgs,
}

/// The paper account and its limits (the same for both versions of a diff).
#[derive(Debug, clap::Args)]
struct AccountArgs {
    /// Starting cash of the paper account.
    #[arg(long, default_value = "100000")]
    cash: Decimal,
    /// Quantity of each order.
    #[arg(long, default_value = "10")]
    quantity: Decimal,
    /// Fee, basis points of the notional.
    #[arg(long, default_value = "1")]
    fee_bps: Decimal,
    /// Slippage against the tick's price, basis points.
    #[arg(long, default_value = "2")]
    slippage_bps: Decimal,
    /// Largest absolute position per symbol.
    #[arg(long, default_value = "50")]
    max_position: Decimal,
    /// Largest notional per symbol.
    #[arg(long, default_value = "10000")]
    max_notional: Decimal,
    /// Largest gross notional across symbols.
    #[arg(long, default_value = "20000")]
    max_total_notional: Decimal,
    /// Most orders in any 60 s of event time.
    #[arg(long, default_value_t = 20)]
    max_orders_per_minute: u32,
    /// Drawdown (fraction of peak equity) that trips the kill switch.
    #[arg(long, default_value = "0.05")]
    max_drawdown: Decimal,
}

impl AccountArgs {
    fn settings(&self) -> AccountSettings {
        AccountSettings {
            account: "paper".into(),
            cash: self.cash,
            quantity: self.quantity,
            fill: FillModel::new(self.fee_bps, self.slippage_bps),
            limits: RiskLimits {
                max_position_per_symbol: self.max_position,
                max_notional_per_symbol: self.max_notional,
                max_total_notional: self.max_total_notional,
                max_orders_per_minute: self.max_orders_per_minute,
                max_drawdown: self.max_drawdown,
            },
        }
    }
}

#[derive(Debug, clap::Args)]
struct RecordArgs {
    /// Configuration naming the cluster ([kafka]) and the ticks topic
    /// ([topics] ticks), as shoal-orchestrator reads it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The topic to record (default: the configured ticks topic).
    #[arg(long)]
    topic: Option<String>,
    /// Longest the read may take, seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
struct SynthArgs {
    /// The walk's seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Symbols, comma-separated.
    #[arg(long, default_value = "SIM-A,SIM-B,SIM-C", value_delimiter = ',')]
    symbols: Vec<String>,
    /// Ticks in all.
    #[arg(long, default_value_t = 20_000)]
    ticks: usize,
    /// Milliseconds of event time between two ticks.
    #[arg(long, default_value_t = 200)]
    interval_ms: i64,
    /// Event time of the first tick (RFC 3339).
    #[arg(long, default_value = "2026-01-05T09:00:00Z")]
    start: DateTime<Utc>,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => backtest(&args),
        Command::Diff(args) => shadow(&args),
        Command::Synth(args) => synth(&args),
        Command::Record(args) => record_topic(&args),
        Command::RecordFrames(args) => record_frames(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shoal-backtest: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn backtest(args: &RunArgs) -> anyhow::Result<()> {
    let settings: OrchestratorSettings = shoal_config::load(args.config.as_deref())?;
    let ticks = load_ticks(&args.recording)?;
    let account = args.account.settings();
    let setup = Setup { state: settings.state, rules: settings.rules, account };
    eprintln!("shoal-backtest: replaying {} ticks from {}", ticks.len(), args.recording.display());
    let runtime = tokio::runtime::Builder::new_current_thread().build().context("starting the runtime")?;
    let started = std::time::Instant::now();
    let outcome = runtime.block_on(run(&ticks, &setup))?;
    let elapsed = started.elapsed();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let title = format!("Shoal backtest: equity of the paper account ({})", args.recording.display());
    let svg = args.out.join("equity.svg");
    std::fs::write(&svg, plot::equity_svg(&outcome.equity, setup.account.cash, &title))
        .with_context(|| format!("writing {}", svg.display()))?;
    let mut lines = String::new();
    for (c, r) in outcome.commands.iter().zip(&outcome.results) {
        lines.push_str(&serde_json::to_string(&serde_json::json!({ "command": c, "result": r }))?);
        lines.push('\n');
    }
    let decisions = args.out.join("decisions.jsonl");
    std::fs::write(&decisions, lines).with_context(|| format!("writing {}", decisions.display()))?;
    let per_second = ticks.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "shoal-backtest: {} ticks in {:.2} s ({per_second:.0} ticks/s); wrote {} and {}",
        ticks.len(),
        elapsed.as_secs_f64(),
        svg.display(),
        decisions.display()
    );
    println!("{}", outcome.summary(&setup.account));
    Ok(())
}

fn shadow(args: &DiffArgs) -> anyhow::Result<()> {
    let load = |file: &Option<PathBuf>| -> anyhow::Result<Setup> {
        let settings: OrchestratorSettings = shoal_config::load(file.as_deref())?;
        Ok(Setup { state: settings.state, rules: settings.rules, account: args.account.settings() })
    };
    let (a, b) = (load(&args.a_config)?, load(&args.b_config)?);
    let ticks = load_ticks(&args.recording)?;
    eprintln!("shoal-backtest: replaying {} ticks from {} through A and B", ticks.len(), args.recording.display());
    let runtime = tokio::runtime::Builder::new_current_thread().build().context("starting the runtime")?;
    let (run_a, run_b) = (runtime.block_on(run(&ticks, &a))?, runtime.block_on(run(&ticks, &b))?);
    let d = diff::diff(&run_a, &run_b);
    println!("A {}", run_a.summary(&a.account));
    println!("B {}", run_b.summary(&b.account));
    println!("{}", d.summary());
    for divergence in d.first_divergence.values().take(args.max_keys) {
        println!("  first divergence: {}", divergence.describe());
    }
    if d.first_divergence.len() > args.max_keys {
        println!("  ... and {} more keys (--max-keys)", d.first_divergence.len() - args.max_keys);
    }
    Ok(())
}

fn record_topic(args: &RecordArgs) -> anyhow::Result<()> {
    let settings: OrchestratorSettings = shoal_config::load(args.config.as_deref())?;
    let topic = args.topic.clone().unwrap_or_else(|| settings.topics.ticks.name.clone());
    eprintln!("shoal-backtest: recording {topic} from {}", settings.kafka.bootstrap_servers);
    let recorded = record::record(&settings.kafka, &topic, std::time::Duration::from_secs(args.timeout_secs))?;
    recording::write(&args.out, &recorded.ticks)?;
    if recorded.undecodable > 0 {
        eprintln!(
            "shoal-backtest: skipped {} records that are not ticks (partition, offset: {:?})",
            recorded.undecodable, recorded.undecodable_examples
        );
    }
    println!(
        "recorded: topic={topic} ticks={} undecodable={} out={}",
        recorded.ticks.len(),
        recorded.undecodable,
        args.out.display()
    );
    Ok(())
}

fn synth(args: &SynthArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.ticks > 0, "--ticks must be at least 1");
    anyhow::ensure!(args.interval_ms > 0, "--interval-ms must be at least 1");
    anyhow::ensure!(!args.symbols.is_empty(), "--symbols needs at least one symbol");
    let s = Synth {
        seed: args.seed,
        symbols: args.symbols.clone(),
        ticks: args.ticks,
        interval: TimeDelta::milliseconds(args.interval_ms),
        start: args.start,
        walk: recording::default_walk(),
    };
    let ticks = recording::synthesize(&s);
    recording::write(&args.out, &ticks)?;
    eprintln!("shoal-backtest: wrote {} ticks of {} to {}", ticks.len(), args.symbols.join(","), args.out.display());
    Ok(())
}

/// The ticks of a recording: a ticks recording as it is, a frame recording
/// through its format's frame parser.
fn load_ticks(path: &std::path::Path) -> anyhow::Result<Vec<MarketTick>> {
    if !frames::is_frames(path) {
        return Ok(recording::read(path)?);
    }
    let replayed = frames::replay(path)?;
    eprintln!(
        "shoal-backtest: {} frames of {} ({}) parsed: trades={} undecodable={} duplicates={}",
        replayed.frames,
        replayed.header.url,
        replayed.header.format,
        replayed.ticks.len(),
        replayed.undecodable,
        replayed.duplicates
    );
    anyhow::ensure!(!replayed.ticks.is_empty(), "{}: no trades in {} frames", path.display(), replayed.frames);
    Ok(replayed.ticks)
}

fn record_frames(args: &RecordFramesArgs) -> anyhow::Result<()> {
    let settings: OrchestratorSettings = shoal_config::load(args.config.as_deref())?;
    let mut feed = settings.feed;
    if let Some(url) = &args.url {
        feed.url.clone_from(url);
    }
    if let Some(format) = args.format {
        feed.format = format;
    }
    if let Some(symbols) = &args.symbols {
        feed.symbols.clone_from(symbols);
    }
    anyhow::ensure!(args.seconds > 0, "--seconds must be at least 1");
    eprintln!("shoal-backtest: recording {} frames from {} for up to {} s", feed.format, feed.url, args.seconds);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let duration = std::time::Duration::from_secs(args.seconds);
    let recorded = runtime.block_on(frames::record(&feed, duration, args.max_frames, &args.out))?;
    println!(
        "recorded frames: url={} format={} frames={} binary_skipped={} out={}",
        feed.url,
        feed.format,
        recorded.frames,
        recorded.binary_skipped,
        args.out.display()
    );
    Ok(())
}
