//! A reduced fault-injection run (the full one is `make chaos`): worker
//! kills with restarts and a zombie on the single-node broker; the checker
//! must report no lost, duplicated, out-of-order, unexpected or aborted-read
//! result in exactly-once mode.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use shoal_integration_tests::{bin, bootstrap};

#[test]
fn reduced_chaos_run_finds_no_anomaly_in_exactly_once_mode() {
    let output = std::process::Command::new(bin("shoal-chaos"))
        .args(["--commands", "3000", "--keys", "40", "--rate", "500", "--kills", "3", "--zombies", "1"])
        .args(["--seed", "7", "--mode", "exactly_once", "--cluster", "single", "--bootstrap", &bootstrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find(|l| l.starts_with("chaos: mode=")).unwrap_or_else(|| {
        panic!("no summary line; stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&output.stderr))
    });
    for zero in ["lost=0", "duplicated=0", "out_of_order=0", "unexpected=0", "aborted_read=0"] {
        assert!(line.contains(&format!(" {zero}")), "{zero} expected in: {line}\n{stdout}");
    }
    assert!(line.contains(" issued=3000 ") && line.contains(" results=3000 "), "{line}");
    assert!(line.contains(" kills=3 "), "the schedule's kills happened: {line}");
    assert!(output.status.success(), "checker exit {}: {line}", output.status);
}
