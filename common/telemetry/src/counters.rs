//! Counters declared once: [`counters!`](crate::counters) declares a struct
//! of atomic counters in which each field names its metric (if it has one),
//! and derives from that one declaration both the registration of the
//! metrics (read at each scrape, never counted twice) and the status line
//! that logs every field.
//!
//! ```
//! shoal_telemetry::counters! {
//!     /// What a stage did.
//!     pub struct StageStats {
//!         /// Records read.
//!         records => counter("shoal_example_records", "Records read"),
//!         /// Results by status: one metric, a label value per field.
//!         succeeded => counter("shoal_example_results", "Results by status", status = "succeeded"),
//!         failed => counter("shoal_example_results", "Results by status", status = "failed"),
//!         /// Records waiting.
//!         pending => gauge("shoal_example_pending", "Records waiting"),
//!         /// Logged in the status line only.
//!         retries,
//!     }
//! }
//!
//! let stats = std::sync::Arc::new(StageStats::default());
//! stats.succeeded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//! let metrics = shoal_telemetry::metrics::Metrics::new();
//! stats.register_metrics(&metrics, &[("stage", "example".to_string())]);
//! assert!(metrics.encode().contains(r#"shoal_example_results_total{stage="example",status="succeeded"} 1"#));
//! stats.log_status("example status", "example");
//! ```
//!
//! Fields that are not counters (flags, names, handles) follow the counters
//! in a `with { ... }` block and are declared as usual; a last `status {
//! name = |s: &Self| value }` block adds such values to the status line.

/// Declares a struct of `AtomicU64` counters with `register_metrics` and
/// `log_status` derived from the declaration; see the [module
/// docs](crate::counters).
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                $field:ident $( => $kind:ident ( $metric:literal, $help:literal $(, $label:ident = $value:literal)* ) )?
            ),* $(,)?
        }
        $( with {
            $( $(#[$extra_meta:meta])* $extra_vis:vis $extra:ident : $extra_ty:ty ),* $(,)?
        } )?
        $( status {
            $( $status:ident = $read_status:expr ),* $(,)?
        } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        $vis struct $name {
            $( $(#[$field_meta])* pub $field: ::std::sync::atomic::AtomicU64, )*
            $( $( $(#[$extra_meta])* $extra_vis $extra: $extra_ty, )* )?
        }

        impl $name {
            /// Registers the counters that name a metric, read at each
            /// scrape, with `labels` on every sample (plus each field's own).
            pub fn register_metrics(
                self: &::std::sync::Arc<Self>,
                metrics: &$crate::metrics::Metrics,
                labels: &[(&'static str, String)],
            ) {
                let _ = (metrics, labels);
                $( $(
                    {
                        let stats = ::std::sync::Arc::clone(self);
                        #[allow(unused_mut)]
                        let mut labels = labels.to_vec();
                        $( labels.push((stringify!($label), $value.to_string())); )*
                        let read = move || stats.$field.load(::std::sync::atomic::Ordering::Relaxed);
                        $crate::counters!(@register $kind, metrics, $metric, $help, labels, read);
                    }
                )? )*
            }

            /// Logs every counter in one line at `info`, with `message`, the
            /// `stage` it belongs to, and the `status { ... }` fields first.
            pub fn log_status(&self, message: &str, stage: &str) {
                ::tracing::info!(
                    $( $( $status = ($read_status)(self), )* )?
                    stage,
                    $( $field = self.$field.load(::std::sync::atomic::Ordering::Relaxed), )*
                    "{message}"
                );
            }
        }
    };
    (@register counter, $metrics:ident, $metric:literal, $help:literal, $labels:ident, $read:ident) => {
        $metrics.counter($metric, $help, $labels, $read)
    };
    (@register gauge, $metrics:ident, $metric:literal, $help:literal, $labels:ident, $read:ident) => {
        $metrics.gauge($metric, $help, $labels, move || i64::try_from($read()).unwrap_or(i64::MAX))
    };
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::metrics::Metrics;

    crate::counters! {
        /// Test counters.
        pub struct Stats {
            /// Counted, no labels of its own.
            records => counter("shoal_test_records", "Records"),
            /// One family, two label values.
            ok => counter("shoal_test_outcomes", "Outcomes", outcome = "ok"),
            bad => counter("shoal_test_outcomes", "Outcomes", outcome = "bad"),
            /// A gauge.
            pending => gauge("shoal_test_pending", "Pending"),
            /// Status line only.
            quiet,
        }
        with {
            /// Not a counter.
            pub ready: AtomicBool,
        }
        status {
            ready = |s: &Stats| s.ready.load(Ordering::Relaxed),
        }
    }

    #[test]
    fn one_declaration_feeds_the_metrics() {
        let stats = Arc::new(Stats::default());
        stats.records.fetch_add(3, Ordering::Relaxed);
        stats.bad.fetch_add(2, Ordering::Relaxed);
        stats.pending.store(7, Ordering::Relaxed);
        stats.quiet.store(9, Ordering::Relaxed);
        stats.ready.store(true, Ordering::Relaxed);
        let metrics = Metrics::new();
        stats.register_metrics(&metrics, &[("stage", "s".to_string())]);
        let text = metrics.encode();
        assert!(text.contains("shoal_test_records_total{stage=\"s\"} 3"), "{text}");
        assert!(text.contains("shoal_test_outcomes_total{stage=\"s\",outcome=\"bad\"} 2"), "{text}");
        assert!(text.contains("shoal_test_outcomes_total{stage=\"s\",outcome=\"ok\"} 0"), "{text}");
        assert!(text.contains("shoal_test_pending{stage=\"s\"} 7"), "{text}");
        assert_eq!(text.matches("# TYPE shoal_test_outcomes counter").count(), 1, "{text}");
        assert!(!text.contains("quiet"), "{text}");
        // Read at scrape time, not copied at registration.
        stats.records.fetch_add(1, Ordering::Relaxed);
        assert!(metrics.encode().contains("shoal_test_records_total{stage=\"s\"} 4"));
        stats.log_status("test status", "s");
    }
}
