//! Reduced fault-injection runs (the full ones are `make chaos`) on the
//! single-node broker: worker kills with restarts and a zombie, and the
//! real orchestrator with each of its stages killed and restarted; the
//! checker must report every anomaly counter zero in exactly-once mode.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use shoal_integration_tests::{bin, bootstrap};

/// Every counter the checker requires to be zero.
const ZEROS: [&str; 9] = [
    "lost=0",
    "duplicated=0",
    "out_of_order=0",
    "unexpected=0",
    "aborted_read=0",
    "missing_commands=0",
    "extra_commands=0",
    "seq_anomalies=0",
    "state_mismatches=0",
];

/// Runs `shoal-chaos` with `args` on the shared broker; its summary line.
fn chaos(args: &[&str]) -> (String, std::process::Output) {
    let output = std::process::Command::new(bin("shoal-chaos"))
        .args(args)
        .args(["--mode", "exactly_once", "--cluster", "single", "--bootstrap", &bootstrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find(|l| l.starts_with("chaos: mode=")).unwrap_or_else(|| {
        panic!("no summary line; stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&output.stderr))
    });
    for zero in ZEROS {
        assert!(line.contains(&format!(" {zero}")), "{zero} expected in: {line}\n{stdout}");
    }
    (line.to_string(), output)
}

/// The number after ` name=` in a summary line.
fn field(line: &str, name: &str) -> u64 {
    line.split(&format!(" {name}="))
        .nth(1)
        .and_then(|s| s.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in: {line}"))
}

/// Worker kills and a zombie with the webhook and the LLM skill in the mix:
/// besides results, every effect step (webhook POST, model call) must be
/// made exactly once at the counting endpoint.
#[test]
fn reduced_chaos_run_finds_no_anomaly_in_exactly_once_mode() {
    let args = [
        "--commands",
        "3000",
        "--keys",
        "40",
        "--rate",
        "500",
        "--kills",
        "3",
        "--zombies",
        "1",
        "--seed",
        "7",
        "--webhook-every",
        "5",
        "--llm-every",
        "7",
    ];
    let (line, output) = chaos(&args);
    // On failure, the tool's whole report: it lists each repeated step with
    // the times of its calls, and the faults with theirs.
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(line.contains(" issued=3000 ") && line.contains(" results=3000 "), "{report}");
    assert!(line.contains(" kills=3 "), "the schedule's kills happened: {report}");
    assert_eq!((field(&line, "webhook_commands"), field(&line, "llm_commands")), (600, 343), "{report}");
    assert_eq!(field(&line, "model_calls"), 343, "one model call per llm_decide command: {report}");
    assert_eq!(field(&line, "effects"), field(&line, "effect_steps"), "each step made once: {report}");
    assert_eq!((field(&line, "effects_repeated"), field(&line, "effects_missing")), (0, 0), "{report}");
    assert!(output.status.success(), "checker exit {}: {line}", output.status);
}

#[test]
fn reduced_orchestrator_chaos_run_finds_no_anomaly() {
    let args = ["--orchestrator", "--seconds", "30", "--kills", "2", "--zombies", "1", "--orchestrator-kills", "3"];
    let (line, output) = chaos(&[&args[..], &["--seed", "5"]].concat());
    assert!(line.contains(" orchestrator_kills=3 "), "each stage was killed once: {line}");
    let issued: usize = line.split(" issued=").nth(1).and_then(|s| s.split(' ').next()?.parse().ok()).unwrap();
    assert!(issued > 100, "the rules decided commands: {line}");
    assert!(output.status.success(), "checker exit {}: {line}", output.status);
}
