//! `wss://` feeds end to end, against the real simulator serving TLS with
//! certificates a test CA made here: ingest trusts the feed through
//! `feed.ca_file` and writes its ticks to Kafka; a certificate it cannot
//! trust (another CA, another host name, expired) is refused with an error
//! naming the feed, the reason and what was trusted, retried with the usual
//! backoff, and nothing is written. (Against a plain server, `wss://`
//! failing its handshake is `feeds_resilience`'s `wss_urls_go_through_tls`.)

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use shoal_integration_tests::pki::TestCa;
use shoal_integration_tests::*;
use shoal_orchestrator::feed::{self, ConnectError};
use shoal_orchestrator::settings::FeedSettings;

const WAIT: Duration = Duration::from_secs(60);

/// Starts `shoal-sim` serving `wss://` with `cert` and `key`, logging to
/// `dir/sim.log`; returns it (killed when dropped) and its URL.
fn start_tls_sim(dir: &Path, cert: &Path, key: &Path, args: &[&str]) -> (Proc, String) {
    std::fs::create_dir_all(dir).unwrap();
    let mut all = vec!["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    all.extend_from_slice(args);
    let (sim, url) = start_sim(&all, dir);
    assert!(url.starts_with("wss://127.0.0.1:"), "the simulator announces wss://: {url}");
    (sim, url)
}

/// The value of the metric `name` (a counter's `_total` too) in a
/// Prometheus exposition.
fn metric(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.strip_prefix(' ').or_else(|| rest.strip_prefix("_total "))?;
        value.trim().parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_trusts_a_wss_feed_through_its_ca_file_and_writes_its_ticks() {
    let scope = Scope::with_topics("feed-tls-trusted").await;
    let ca = TestCa::new(&scope.dir, "ca");
    let (cert, key) = ca.server(&scope.dir, "server", &["127.0.0.1"], false);
    let (sim, url) = start_tls_sim(&scope.dir, &cert, &key, &["--symbols", "TLS-A,TLS-B", "--rate", "20"]);

    let settings = FeedSettings { ca_file: ca.path(), ..feed_settings("shoal-sim", url, &["*"]) };
    let ingest = Ingest::start_until(&scope, settings, WAIT, "a subscription and 20 trades over TLS", |i| {
        i.count(|s| &s.subscriptions) >= 1 && i.count(|s| &s.ticks) >= 20
    })
    .await;
    assert_eq!(ingest.count(|s| &s.reconnects), 0, "the first connection was trusted");
    let (_, records) = ingest.stop_and_read(&scope, WAIT).await;
    assert!(records.ticks.len() >= 20, "{} ticks", records.ticks.len());
    assert!(records.ticks.iter().all(|t| t.symbol == "TLS-A" || t.symbol == "TLS-B"));
    records.assert_consecutive("every trade sent over TLS written once, none lost");
    assert!(!sim.log_text().contains("TLS handshake failed"), "{}", sim.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_refuses_an_untrusted_certificate_clearly_keeps_retrying_and_writes_nothing() {
    let scope = Scope::with_topics("feed-tls-untrusted").await;
    let ca = TestCa::new(&scope.dir, "ca");
    let stranger = TestCa::new(&scope.dir, "stranger-ca");
    let (cert, key) = ca.server(&scope.dir, "server", &["127.0.0.1"], false);
    let (sim, url) = start_tls_sim(&scope.dir, &cert, &key, &["--symbols", "TLS-A", "--rate", "20"]);
    let launch = |name: &str, ca: &TestCa| {
        scope
            .orchestrator(name)
            .stages("ingest")
            .feed(&url)
            .with("SHOAL__FEED__CA_FILE", ca.path())
            .with("SHOAL__FEED__RECONNECT_INITIAL_MS", "100")
            .with("SHOAL__FEED__RECONNECT_MAX_MS", "300")
            .with("SHOAL__FEED__RECOVER_TAIL_RECORDS", "0")
    };

    // Trusting another CA: refused, said so, retried; the process stays up.
    let mut refused = launch("orchestrator-untrusted", &stranger).spawn();
    let expected = format!("feed {url}: TLS certificate not trusted: UnknownIssuer (ca_file={})", stranger.path());
    eventually(WAIT, "three refusals logged with the feed, the reason and the CA file", || {
        let refusals = refused.log_text().matches(&expected).count();
        async move { refusals >= 3 }
    })
    .await;
    assert!(refused.running(), "an untrusted feed is retried, not fatal:\n{}", refused.log_text());
    let address = http_address(&refused, WAIT).await;
    let (status, exposition) = http_get(address, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(metric(&exposition, "shoal_feed_reconnects").unwrap() >= 2.0, "attempts counted:\n{exposition}");
    assert_eq!(metric(&exposition, "shoal_feed_connected"), Some(0.0), "{exposition}");
    assert_eq!(metric(&exposition, "shoal_feed_ticks"), Some(0.0), "{exposition}");
    refused.stop_cleanly(Duration::from_secs(20));
    let log = refused.log_text();
    let line = log.lines().find(|l| l.contains(&expected)).unwrap();
    assert!(line.contains("ERROR") && line.contains("cannot connect to feed; retrying with backoff"), "{line}");
    assert!(log.contains("reconnecting to feed") && !log.contains("panicked"), "{log}");
    assert!(sim.log_text().contains("TLS handshake failed"), "the simulator saw the client abort:\n{}", sim.log_text());
    let mut ticks = TopicReader::new(&scope.topics.ticks.name);
    ticks.read_to_end(WAIT).await;
    assert_eq!(ticks.messages.len(), 0, "nothing written from an untrusted feed");

    // The same orchestrator trusting the CA that signed the certificate.
    let mut trusted = launch("orchestrator-trusted", &ca).spawn();
    eventually(WAIT, "a status line of the trusted feed", || {
        let log = trusted.log_text();
        async move { log.contains("feed status connected=true") }
    })
    .await;
    trusted.stop_cleanly(Duration::from_secs(20));
    ticks.read_until(WAIT, "10 ticks through the trusted feed", |m| m.len() >= 10).await;
    assert!(!trusted.log_text().contains("TLS certificate not trusted"), "{}", trusted.log_text());
}

/// Connects to a simulator (its files in the scope's directory `case`)
/// serving `wss://` with a certificate for `names` that `ca` signed
/// (`expired` or not), trusting `trusted` (`None`: the platform's roots);
/// the URL and the connection's outcome. The simulator stops on return.
async fn connect_to(
    scope: &Scope,
    case: &str,
    (ca, names, expired): (&TestCa, &[&str], bool),
    trusted: Option<&TestCa>,
) -> (String, Result<feed::FeedSocket, ConnectError>) {
    let dir = scope.dir.join(case);
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = ca.server(&dir, "server", names, expired);
    let (_sim, url) = start_tls_sim(&dir, &cert, &key, &["--rate", "1"]);
    let ca_file = trusted.map(TestCa::path).unwrap_or_default();
    let settings = FeedSettings { url: url.clone(), ca_file, ..FeedSettings::default() };
    let outcome = feed::connect(&settings).await;
    (url, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_host_name_an_expired_certificate_or_the_platform_roots_are_refused_naming_why() {
    let scope = Scope::logged("feed-tls-reasons");
    let ca = TestCa::new(&scope.dir, "ca");
    let ca_file = format!("(ca_file={})", ca.path());

    let (_, trusted) = connect_to(&scope, "trusted", (&ca, &["127.0.0.1"], false), Some(&ca)).await;
    let mut socket = trusted.expect("a valid certificate for 127.0.0.1 from the configured CA");
    let _ = socket.close(None).await;

    let (url, outcome) = connect_to(&scope, "other-name", (&ca, &["feed.example"], false), Some(&ca)).await;
    let error = outcome.expect_err("a certificate for another name").to_string();
    let expected = format!("feed {url}: TLS certificate not trusted: NotValidForName: ");
    assert!(error.starts_with(&expected) && error.contains("feed.example") && error.ends_with(&ca_file), "{error}");

    let (url, outcome) = connect_to(&scope, "expired", (&ca, &["127.0.0.1"], true), Some(&ca)).await;
    let error = outcome.expect_err("an expired certificate").to_string();
    let expected = format!("feed {url}: TLS certificate not trusted: Expired: certificate expired");
    assert!(error.starts_with(&expected) && error.ends_with(&ca_file), "{error}");

    // No `feed.ca_file`: the platform's roots, which do not know the test CA.
    let (url, outcome) = connect_to(&scope, "platform-roots", (&ca, &["127.0.0.1"], false), None).await;
    match outcome {
        Err(error @ ConnectError::Untrusted { .. }) => {
            let text = error.to_string();
            let expected = format!("feed {url}: TLS certificate not trusted: UnknownIssuer (the platform's root");
            assert!(text.starts_with(&expected) && text.contains("set feed.ca_file"), "{text}");
        }
        // A machine without a CA bundle cannot get that far; say which.
        Err(error @ ConnectError::Roots { .. }) => {
            assert!(error.to_string().contains("no platform root certificates found"), "{error}");
        }
        other => panic!("expected the platform roots to refuse the test CA, got {other:?}"),
    }
}

#[test]
fn an_unusable_ca_file_stops_the_orchestrator_at_start_up_naming_the_key() {
    let scope = Scope::logged("feed-tls-config");
    let missing = scope.dir.join("missing-ca.pem").display().to_string();
    let not_pem = scope.dir.join("not-pem.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let not_pem = not_pem.display().to_string();
    for (file, problem) in [(&missing, "cannot read"), (&not_pem, "holds no PEM certificate")] {
        let output = std::process::Command::new(bin("shoal-orchestrator"))
            .env("SHOAL__FEED__URL", "wss://127.0.0.1:9443")
            .env("SHOAL__FEED__CA_FILE", file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("`feed.ca_file`") && stderr.contains(file) && stderr.contains(problem), "{stderr}");
        assert!(stderr.contains("PEM file holding the CA certificate(s)"), "the expected form: {stderr}");
    }
}
