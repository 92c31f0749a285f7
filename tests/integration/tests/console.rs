//! The operator console (docs/console.md) in a real browser: Debian's
//! headless Chromium, driven over WebDriver by chromedriver, against an
//! orchestrator and a worker on the real broker. The page loads, the token
//! typed into it opens the stream, prices, commands, alerts and the paper
//! ledger update live, and a held command approved with its button is
//! issued and handled (its result is on the results topic); one rejected
//! with its button never is.
//!
//! `SHOAL_UPDATE_SCREENSHOT=1` writes the page as `docs/console.png`.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_integration_tests::webdriver::Browser;
use shoal_integration_tests::*;
use shoal_protocol::approvals::{ApprovalChange, ApprovalEvent};
use shoal_protocol::messages::{Command, SCHEMA_VERSION, WireMessage};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
const SYMBOLS: [&str; 3] = ["CON-A", "CON-B", "CON-C"];

/// `POST` to the API with the admin token: status and JSON body.
async fn api_post(api: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    shoal_integration_tests::api_post(api, path, ADMIN_TOKEN, body).await.unwrap()
}

/// Asks for a `score_transaction` of `account` (held for approval) and
/// waits until it is pending: its command id.
async fn held(api: SocketAddr, account: &str, amount: &str) -> String {
    let payload = json!({"event_id": Uuid::now_v7(), "account": account, "amount": amount, "currency": "EUR",
        "country": "FR", "card_present": false});
    let body = json!({"kind": "score_transaction", "key": account, "payload": payload, "reason": "large card-not-present payment"});
    let (status, answer) = api_post(api, "/v1/command-requests", &body).await;
    assert_eq!(status, 202, "{answer}");
    let path = format!("/v1/approvals?status=pending&key={account}");
    wait_for(WAIT, "the command held for approval", || {
        let path = path.clone();
        async move {
            let (_, body) = api_get(api, &path, Some(READ_TOKEN)).await.map_err(|e| e.to_string())?;
            match body["approvals"].as_array().and_then(|a| a.first()) {
                Some(c) => Ok(c["id"].as_str().unwrap().to_string()),
                None => Err(format!("not held yet: {body}")),
            }
        }
    })
    .await
}

/// A `paper_order` for account `paper-1`, straight onto the commands topic.
fn order(seq: u64, side: &str, quantity: &str, mid: &str) -> Command {
    Command {
        schema_version: SCHEMA_VERSION,
        id: Uuid::now_v7(),
        kind: "paper_order".into(),
        key: "paper-1".into(),
        seq,
        issued_at: chrono::Utc::now(),
        deadline: None,
        payload: json!({"symbol": "CON-A", "side": side, "quantity": quantity, "mid_price": mid}),
    }
}

/// Waits until `probe` (a script returning a string, or null while not
/// there yet) answers something `accept` takes: that answer.
async fn page_shows(browser: &Browser, what: &str, script: &str, accept: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let value = browser.execute(script, json!([])).await;
        if let Some(text) = value.as_str()
            && accept(text)
        {
            return text.to_string();
        }
        if tokio::time::Instant::now() >= deadline {
            let page = browser.text("main").await.unwrap_or_default();
            let status = browser.text("#status").await.unwrap_or_default();
            panic!("the console did not show {what} within {WAIT:?}: last {value}; status {status:?}; page:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await; // poll interval within the deadline above
    }
}

/// The trades count the console shows for `symbol`.
fn trades_of(symbol: &str) -> String {
    format!(
        "const r = document.querySelector('#price-rows tr[data-symbol=\"{symbol}\"]'); return r && r.cells[7].textContent;"
    )
}

async fn first_result(scope: &Scope, id: &str) -> Value {
    let mut reader = TopicReader::new(&scope.topics.results.name);
    reader
        .read_until(WAIT, &format!("the result of {id}"), |m| {
            decode_results(m).iter().any(|r| r.command_id.to_string() == id)
        })
        .await;
    let result = decode_results(&reader.messages).into_iter().find(|r| r.command_id.to_string() == id).unwrap();
    serde_json::to_value(result).unwrap()
}

async fn decisions(scope: &Scope) -> Vec<ApprovalEvent> {
    let mut reader = TopicReader::new(&scope.topics.approvals.name);
    reader.read_to_end(Duration::from_secs(20)).await;
    let events = reader.messages.iter().filter_map(|m| ApprovalEvent::decode(rdkafka::Message::payload(m)?).ok());
    events.filter(|e| matches!(e.change, ApprovalChange::Decided { .. })).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_live_state_and_decides_approvals() {
    let scope = Scope::with_topics("console").await;
    let (sim, url) = start_sim(&["--rate", "8", "--seed", "11", "--symbols", &SYMBOLS.join(",")], &scope.dir);
    let mut orchestrator = scope
        .orchestrator("orchestrator")
        .stages("ingest,decisions,results")
        .feed(&url)
        .lively_rules()
        .with("SHOAL__API__ISSUE_COMMANDS", "true")
        .with("SHOAL__RULES__APPROVAL_KINDS", "score_transaction")
        .with("SHOAL__RULES__APPROVAL_TIMEOUT_MS", "300000")
        .spawn();
    let mut worker = scope.worker("worker").with("SHOAL__WORKER__PAPER__ENABLED", "true").spawn();
    let api = api_address(&orchestrator, WAIT).await;
    let producer = producer();
    for command in [order(1, "buy", "10", "100.00"), order(2, "sell", "4", "101.50")] {
        produce(&producer, &scope.topics.commands.name, &command.key, &command.encode()).await;
    }

    let browser = Browser::start(&scope.dir, 1480, 1240).await;
    browser.goto(&format!("http://{api}/console")).await;
    assert_eq!(browser.text("h1").await.as_deref(), Some("Shoal console"), "the page loads");
    assert_eq!(browser.text("#status").await.as_deref(), Some("not connected"));
    browser.type_into("#token", ADMIN_TOKEN).await;
    browser.click("#connect").await;
    page_shows(&browser, "the stream live", "return document.querySelector('#status').dataset.state;", |s| s == "live")
        .await;

    // Live: a symbol's trade count moves on while the page is open, frames
    // keep coming, and the sparkline is drawn.
    let before: u64 = page_shows(&browser, "CON-A's trades", &trades_of("CON-A"), |t| t.parse::<u64>().is_ok())
        .await
        .parse()
        .unwrap();
    page_shows(&browser, "CON-A's trades growing", &trades_of("CON-A"), |t| {
        t.parse::<u64>().is_ok_and(|n| n >= before + 5)
    })
    .await;
    let rows = "return String(document.querySelectorAll('#price-rows tr[data-symbol] svg polyline').length);";
    page_shows(&browser, "a sparkline per symbol", rows, |n| n == "3").await;
    let frames: u64 = browser.text("#frames").await.unwrap().parse().unwrap();
    assert!(frames > 10, "stream frames counted: {frames}");
    let alerts = "return String(document.querySelectorAll('#alert-rows tr[data-command]').length);";
    page_shows(&browser, "alerts", alerts, |n| n != "0").await;
    let kinds =
        "const r = document.querySelector('#kinds tr[data-kind=\"raise_alert\"]'); return r && r.cells[2].textContent;";
    page_shows(&browser, "raise_alert results per minute", kinds, |n| n != "0").await;
    let topics =
        "const r = document.querySelector('#topics tr[data-topic$=\".ticks\"] td.rate'); return r && r.textContent;";
    page_shows(&browser, "the ticks topic's rate", topics, |r| r.parse::<f64>().is_ok_and(|r| r > 0.0)).await;
    let ledger = "const r = document.querySelector('#ledger-rows tr[data-account=\"paper-1\"]'); return r && r.cells[6].textContent + ' ' + r.cells[5].textContent;";
    page_shows(&browser, "the paper ledger after two fills", ledger, |l| l == "2 CON-A 6.000").await;

    // Approvals: two held commands in the queue; one approved and one
    // rejected with the page's buttons.
    let approve = held(api, "acct-approve", "1250.00").await;
    let reject = held(api, "acct-reject", "7300.00").await;
    let queued = "return String(document.querySelectorAll('#approval-rows tr[data-id]').length);";
    page_shows(&browser, "two commands waiting for approval", queued, |n| n == "2").await;
    if std::env::var("SHOAL_UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        // The whole page: the window as tall as the document.
        let height = browser.execute("return document.documentElement.scrollHeight;", json!([])).await;
        browser.set_window(1600, height.as_u64().unwrap_or(1240) + 140).await;
        let png = browser.screenshot().await;
        std::fs::write(repo_root().join("docs/console.png"), &png).unwrap();
        eprintln!("wrote docs/console.png ({} bytes)", png.len());
    }
    browser.type_into("#approval-reason", "checked in the console").await;
    browser.click(&format!("#approval-rows button[data-action=\"approve\"][data-id=\"{approve}\"]")).await;
    let message = "return document.querySelector('#approval-message').textContent;";
    page_shows(&browser, "the approval acknowledged", message, |m| m.starts_with("Approved")).await;
    browser.click(&format!("#approval-rows button[data-action=\"reject\"][data-id=\"{reject}\"]")).await;
    page_shows(&browser, "the rejection acknowledged", message, |m| m.starts_with("Rejected")).await;
    page_shows(&browser, "an empty queue", queued, |n| n == "0").await;

    // The approved command reached the pipeline: issued, handled, its
    // result on the results topic; the decisions name the page's reason.
    let result = first_result(&scope, &approve).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert!(result["output"]["score"].is_u64(), "a fraud score: {result}");
    let decided = decisions(&scope).await;
    let by_command = |id: &str| decided.iter().find(|e| e.command_id.to_string() == id).map(|e| e.change.clone());
    match by_command(&approve) {
        Some(ApprovalChange::Decided { decision, reason, .. }) => {
            assert_eq!((decision.as_str(), reason.as_deref()), ("approve", Some("checked in the console")));
        }
        other => panic!("no approve decision for {approve}: {other:?}"),
    }
    assert!(
        matches!(by_command(&reject), Some(ApprovalChange::Decided { decision, .. }) if decision.as_str() == "reject"),
        "{decided:?}"
    );
    let state = format!("/v1/commands/{reject}");
    let (_, body) = api_get(api, &state, Some(READ_TOKEN)).await.unwrap();
    assert_eq!(body["state"]["status"], "rejected", "{body}");

    browser.quit().await;
    stop_all_cleanly([&mut orchestrator, &mut worker], Duration::from_secs(30));
    sim.signal(nix::sys::signal::Signal::SIGTERM);
}
