//! Readiness: named checks registered by the parts of the process (each
//! consuming stage: Kafka connection, partitions assigned, producer; the
//! orchestrator's ingest: feed connected), evaluated on each `/readyz`.

use std::sync::Mutex;

type Probe = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The readiness checks of one application (see [`Telemetry`](crate::Telemetry)).
#[derive(Default)]
pub struct Health {
    checks: Mutex<Vec<(String, Probe)>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> =
            self.checks.lock().map(|c| c.iter().map(|(n, _)| n.clone()).collect()).unwrap_or_default();
        f.debug_struct("Health").field("checks", &names).finish()
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckResult {
    /// Check name, e.g. `worker.partitions`.
    pub check: String,
    /// Whether it passes.
    pub ok: bool,
    /// Why not (or `ok`).
    pub detail: String,
}

impl Health {
    /// Adds a check; `probe` says why the process is not ready, if it is not.
    /// A check registered again under the same name replaces the old one.
    pub fn register(&self, name: impl Into<String>, probe: impl Fn() -> Result<(), String> + Send + Sync + 'static) {
        let name = name.into();
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks.retain(|(n, _)| *n != name);
        checks.push((name, Box::new(probe)));
    }

    /// Registers `name` as failing with "starting" until the component
    /// registers its real check under that name. Binaries call this first
    /// thing for each component they run: otherwise, in the seconds before a
    /// component's checks exist (topics created, producer initialised),
    /// the checks registered so far could all pass and report the process
    /// ready before it has joined its group.
    pub fn starting(&self, name: impl Into<String>) {
        let name = name.into();
        let detail = format!("starting: {name} is not running yet");
        self.register(name, move || Err(detail.clone()));
    }

    /// Evaluates every check. Not ready while none is registered (the
    /// process is still starting).
    pub fn readiness(&self) -> (bool, Vec<CheckResult>) {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        let results: Vec<CheckResult> = checks
            .iter()
            .map(|(name, probe)| match probe() {
                Ok(()) => CheckResult { check: name.clone(), ok: true, detail: "ok".into() },
                Err(detail) => CheckResult { check: name.clone(), ok: false, detail },
            })
            .collect();
        let ready = !results.is_empty() && results.iter().all(|r| r.ok);
        if results.is_empty() {
            let starting =
                CheckResult { check: "startup".into(), ok: false, detail: "starting: no component is up yet".into() };
            return (false, vec![starting]);
        }
        (ready, results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn ready_only_when_every_check_passes() {
        let health = Health::default();
        assert!(!health.readiness().0, "nothing registered: starting");
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        health.register("a", || Ok(()));
        health.register("b", move || if f.load(Ordering::Relaxed) { Ok(()) } else { Err("b is down".into()) });
        let (ready, results) = health.readiness();
        assert!(!ready);
        assert_eq!(results.iter().filter(|r| !r.ok).map(|r| r.detail.as_str()).collect::<Vec<_>>(), ["b is down"]);
        flag.store(true, Ordering::Relaxed);
        assert!(health.readiness().0);
        health.register("a", || Err("replaced".into()));
        assert_eq!(health.readiness().1.len(), 2, "same name replaces");
        assert!(!health.readiness().0);
    }

    #[test]
    fn a_component_announced_as_starting_holds_readiness_until_it_registers() {
        let health = Health::default();
        health.register("process", || Ok(()));
        health.starting("worker.partitions");
        let (ready, results) = health.readiness();
        assert!(!ready, "{results:?}");
        assert_eq!(results[1].detail, "starting: worker.partitions is not running yet");
        health.register("worker.partitions", || Ok(()));
        assert!(health.readiness().0);
    }
}
