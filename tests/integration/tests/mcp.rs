//! Shoal's MCP server checked by a client no one here wrote: the official
//! MCP Python SDK (PyPI), over streamable HTTP (served by the orchestrator
//! beside its state API) and over stdio (`shoal-mcp`), against a real
//! orchestrator fed by the simulator, so resources change on their own and
//! a requested command goes through Kafka and the decisions stage.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nix::sys::signal::Signal;
use shoal_integration_tests::*;

async fn check(args: &[&str]) -> String {
    let script = repo_root().join("scripts/mcp-check.sh");
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .args(args)
        .output()
        .await
        .expect("running scripts/mcp-check.sh");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the MCP Python SDK's checks failed:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_uses_both_transports() {
    let scope = Scope::with_topics("mcp-sdk").await;
    let (sim, url) = start_sim(&["--rate", "20", "--seed", "11", "--symbols", "MC-A,MC-B"], &scope.dir);
    let mut orchestrator = scope
        .orchestrator("orchestrator")
        .stages("ingest,decisions,results")
        .feed(&url)
        .with("SHOAL__API__ISSUE_COMMANDS", "true")
        .with("SHOAL__API__MCP_POLL_MS", "200")
        .spawn();
    let api = api_address(&orchestrator, Duration::from_secs(60)).await;
    wait_for(Duration::from_secs(60), "two symbols in the state", || async move {
        let (_, body) = api_get(api, "/v1/entities?kind=symbol", Some(READ_TOKEN)).await.map_err(|e| e.to_string())?;
        let n = body["entities"].as_array().map_or(0, Vec::len);
        if n >= 2 { Ok(()) } else { Err(format!("{n} symbols: {body}")) }
    })
    .await;

    let http = check(&["http", &format!("http://{api}/mcp"), READ_TOKEN, ADMIN_TOKEN]).await;
    assert!(http.contains("mcp-check: ok transport=http"), "{http}");
    let binary = bin("shoal-mcp");
    let stdio = check(&["stdio", binary.to_str().unwrap(), &format!("http://{api}"), READ_TOKEN, ADMIN_TOKEN]).await;
    assert!(stdio.contains("mcp-check: ok transport=stdio"), "{stdio}");

    // Both requests were recorded with who asked, never the token.
    let log = orchestrator.log_text();
    assert_eq!(log.matches("command requested").count(), 2, "two requests accepted");
    for token in [READ_TOKEN, ADMIN_TOKEN] {
        assert!(!log.contains(token), "a token appears in the log");
    }
    orchestrator.stop_cleanly(Duration::from_secs(20));
    sim.signal(Signal::SIGTERM);
}
