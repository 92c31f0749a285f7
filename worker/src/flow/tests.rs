//! Unit tests of flow control, on tokio's paused clock.

use std::sync::atomic::AtomicUsize;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn flow(slots: usize, kinds: &[(&str, KindFlow)]) -> Arc<FlowControl> {
    let settings = FlowSettings {
        slots,
        kinds: kinds.iter().map(|(k, f)| (k.to_string(), f.clone())).collect(),
        llm: LlmBudgetSettings::default(),
    };
    Arc::new(FlowControl::new(&settings, 64, Arc::new(FlowStats::default())))
}

#[tokio::test(start_paused = true)]
async fn a_bucket_refills_at_its_rate_up_to_its_burst_and_reservations_queue() {
    let t0 = Instant::now();
    let mut bucket = TokenBucket::new(10.0, 2.0, t0);
    assert_eq!(bucket.reserve(t0), Duration::ZERO);
    assert_eq!(bucket.reserve(t0), Duration::ZERO, "the burst");
    assert_eq!(bucket.reserve(t0), ms(100), "the next token comes 1/rate later");
    assert_eq!(bucket.reserve(t0), ms(200), "and the one after it behind that");
    let later = t0 + Duration::from_secs(10);
    assert!((bucket.available(later) - 2.0).abs() < 1e-9, "refilled, but never beyond the burst");
}

#[tokio::test(start_paused = true)]
async fn freed_slots_go_to_the_highest_priority_first_and_in_arrival_order_within_one() {
    let slots = PrioritySlots::new(1);
    let held = slots.acquire(0).await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (name, priority) in [("low-1", 0), ("high-1", 5), ("low-2", 0), ("high-2", 5), ("mid", 1)] {
        let (slots, order) = (slots.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire(priority).await;
            lock(&order).push(name);
            tokio::time::sleep(ms(10)).await;
        }));
        tokio::task::yield_now().await; // queued in this order
    }
    assert_eq!(slots.snapshot(), (0, 5));
    drop(held);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*lock(&order), ["high-1", "high-2", "mid", "low-1", "low-2"]);
    assert_eq!(slots.snapshot(), (1, 0), "every slot back");
}

#[tokio::test(start_paused = true)]
async fn a_kind_never_runs_more_handlers_than_its_limit() {
    let flow = flow(10, &[("slow", KindFlow { max_concurrency: Some(2), ..KindFlow::default() })]);
    let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (flow, running, peak) = (flow.clone(), running.clone(), peak.clone());
            tokio::spawn(async move {
                let _admission = flow.admit("slow", &format!("k{i}"), None).await.unwrap();
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(ms(100)).await;
                running.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    let t0 = Instant::now();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!(t0.elapsed(), ms(300), "six commands, two at a time, 100 ms each");
    assert_eq!(flow.stats.waits.load(Ordering::Relaxed), 4, "the first two did not wait");
    // Another kind is not held by that limit.
    assert!(flow.admit("other", "k", None).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_kind_and_a_key_start_no_faster_than_their_rates() {
    let limited = KindFlow { rate_per_s: Some(10.0), key_rate_per_s: Some(1.0), ..KindFlow::default() };
    let flow = flow(10, &[("k", limited)]);
    let t0 = Instant::now();
    let mut starts = Vec::new();
    for i in 0..4 {
        let _a = flow.admit("k", &format!("key-{i}"), None).await.unwrap();
        starts.push(t0.elapsed());
    }
    assert_eq!(starts, [ms(0), ms(100), ms(200), ms(300)], "10 per second across keys");
    let _a = flow.admit("k", "key-3", None).await.unwrap();
    // key-3's token was reserved when it asked, at 200 ms (then it waited
    // for the kind's): its next one is due a second after that.
    assert_eq!(t0.elapsed(), ms(1_200), "key-3 again: one per second for a key");
}

#[tokio::test(start_paused = true)]
async fn a_command_whose_deadline_passes_while_waiting_expires_and_leaves_the_queue() {
    let flow = flow(1, &[]);
    let held = flow.admit("k", "a", None).await.unwrap();
    let deadline = Utc::now() + chrono::Duration::milliseconds(50);
    let t0 = Instant::now();
    let outcome = flow.admit("k", "b", Some(deadline)).await;
    let waited = outcome.unwrap_err().waited;
    assert!(waited >= ms(49) && t0.elapsed() < ms(60), "{waited:?}");
    assert_eq!(flow.stats.expired_waiting.load(Ordering::Relaxed), 1);
    assert_eq!(flow.slots(), (0, 0), "no waiter left behind");
    drop(held);
    assert_eq!(flow.slots(), (1, 0), "the slot is free again, not lost");
    assert_eq!(flow.stats.waiting.load(Ordering::Relaxed), 0);
    let past = Utc::now() - chrono::Duration::seconds(1);
    assert!(flow.admit("k", "c", Some(past)).await.is_ok(), "a free slot is taken even when late");
}

#[tokio::test(start_paused = true)]
async fn a_high_priority_command_overtakes_a_flood_waiting_for_slots() {
    let flood = KindFlow { priority: 0, ..KindFlow::default() };
    let urgent = KindFlow { priority: 10, ..KindFlow::default() };
    let flow = flow(2, &[("flood", flood), ("urgent", urgent)]);
    let spawn = |kind: &'static str, key: String| {
        let flow = flow.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let _a = flow.admit(kind, &key, None).await.unwrap();
            tokio::time::sleep(ms(100)).await;
            t0.elapsed()
        })
    };
    let floods: Vec<_> = (0..20).map(|i| spawn("flood", format!("f{i}"))).collect();
    tokio::task::yield_now().await;
    let urgent = spawn("urgent", "u".into()).await.unwrap();
    assert_eq!(urgent, ms(200), "waits for one running flood command, not the 18 queued");
    for f in floods {
        f.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_key_over_its_token_budget_is_refused_until_it_refills() {
    let budget = TokenBudget::new(600); // 10 tokens a second
    let t0 = Instant::now();
    assert_eq!(budget.check("a", t0), Ok(600.0));
    budget.charge("a", 700, t0);
    let refused = budget.check("a", t0).unwrap_err();
    assert_eq!((refused.owed, refused.per_minute), (100.0, 600));
    assert!(refused.to_string().contains("worker.flow.llm.tokens_per_key_per_minute = 600"), "{refused}");
    assert!(budget.check("b", t0).is_ok(), "another key has its own budget");
    assert!(budget.check("a", t0 + Duration::from_secs(10)).is_err(), "debt paid back, nothing left yet");
    assert!(budget.check("a", t0 + Duration::from_secs(11)).is_ok());
}

#[tokio::test(start_paused = true)]
async fn per_key_buckets_stay_bounded() {
    let t0 = Instant::now();
    let mut keys = KeyBuckets::bounded(1.0, 1.0, 2);
    keys.bucket("a", t0).reserve(t0);
    keys.bucket("b", t0).reserve(t0);
    keys.bucket("c", t0).reserve(t0);
    assert_eq!(keys.len(), 1, "every key busy: forgotten, then c tracked");
    let later = t0 + Duration::from_secs(5);
    keys.bucket("d", later).reserve(later);
    keys.bucket("e", later);
    assert_eq!(keys.len(), 2, "c had refilled and was dropped to make room");
}

#[test]
fn settings_name_the_key_at_fault() {
    assert!(FlowSettings::default().validate(16).is_ok());
    let kind = |flow: KindFlow| FlowSettings { kinds: [("probe".to_string(), flow)].into(), ..FlowSettings::default() };
    let error = kind(KindFlow { max_concurrency: Some(16), ..KindFlow::default() }).validate(16).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("worker.flow.kinds.probe.max_concurrency") && text.contains("from 1 to 15"), "{text}");
    let error = kind(KindFlow { burst: Some(5), ..KindFlow::default() }).validate(16).unwrap_err();
    assert!(error.to_string().contains("worker.flow.kinds.probe.burst"), "{error}");
    let error = kind(KindFlow { key_rate_per_s: Some(0.0), ..KindFlow::default() }).validate(16).unwrap_err();
    assert!(error.to_string().contains("key_rate_per_s"), "{error}");
    let slots = FlowSettings { slots: 17, ..FlowSettings::default() };
    assert!(slots.validate(16).unwrap_err().to_string().contains("worker.flow.slots"));
    let ok = kind(KindFlow {
        priority: -5,
        max_concurrency: Some(4),
        rate_per_s: Some(50.0),
        burst: Some(10),
        ..KindFlow::default()
    });
    assert!(ok.validate(16).is_ok() && ok.limits_kinds());
}
