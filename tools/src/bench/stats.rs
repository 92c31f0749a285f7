//! What a run measured, and the statistics over rounds: medians, paired
//! ratios, confidence intervals and percentiles.

/// One run's measurements (one round, or its rounds combined).
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) name: &'static str,
    pub(crate) throughput: f64,
    pub(crate) latencies_ms: Vec<f64>,
    /// Latencies of the high-rate paced phase (`--rate-high`), sorted once
    /// rounds are combined.
    pub(crate) latencies_high_ms: Vec<f64>,
    /// Throughput of each round (one entry until rounds are combined).
    pub(crate) rounds: Vec<f64>,
    /// Workers' CPU µs per command in the throughput phase, each round.
    pub(crate) cpu_us: Vec<f64>,
    /// Peak resident memory of the processes under test (sum of their
    /// `VmHWM`), MiB, each round.
    pub(crate) rss_mib: Vec<f64>,
}

impl Measured {
    /// The median of the rounds' CPU µs per command.
    pub(crate) fn median_cpu_us(&self) -> f64 {
        self.cpu_us[self.cpu_us.len() / 2]
    }
}

/// One run's rounds combined: the median throughput, all latencies.
pub(crate) fn median_round(rounds: Vec<Measured>) -> Measured {
    // In round order: `paired_ratio` pairs rounds of two runs.
    let throughputs: Vec<f64> = rounds.iter().map(|m| m.throughput).collect();
    let median = median(throughputs.clone());
    let mut latencies: Vec<f64> = rounds.iter().flat_map(|m| m.latencies_ms.iter().copied()).collect();
    latencies.sort_by(f64::total_cmp);
    let mut high: Vec<f64> = rounds.iter().flat_map(|m| m.latencies_high_ms.iter().copied()).collect();
    high.sort_by(f64::total_cmp);
    let mut cpu_us: Vec<f64> = rounds.iter().flat_map(|m| m.cpu_us.iter().copied()).collect();
    cpu_us.sort_by(f64::total_cmp);
    let mut rss_mib: Vec<f64> = rounds.iter().flat_map(|m| m.rss_mib.iter().copied()).collect();
    rss_mib.sort_by(f64::total_cmp);
    Measured {
        name: rounds[0].name,
        throughput: median,
        latencies_ms: latencies,
        latencies_high_ms: high,
        rounds: throughputs,
        cpu_us,
        rss_mib,
    }
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median over rounds of `a`'s throughput over `b`'s in the same round.
/// Runs of one round follow each other within a minute, so a slow spell of
/// the shared machine (it swings throughput by ±25% over minutes) touches
/// both sides of each ratio alike; a ratio of two medians taken from
/// different rounds does not have that property.
pub(crate) fn paired_ratio(a: &Measured, b: &Measured) -> f64 {
    median(round_ratios(a, b))
}

/// `a`'s throughput over `b`'s, round by round.
pub(crate) fn round_ratios(a: &Measured, b: &Measured) -> Vec<f64> {
    a.rounds.iter().zip(&b.rounds).map(|(x, y)| x / y).collect()
}

/// Two-sided 95% quantiles of Student's t distribution for 1 to 30 degrees
/// of freedom (any statistics table); 1.96 (the normal's) beyond.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
    2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/// The geometric mean of per-round ratios with its 95% confidence interval
/// (a t interval on their logarithms, so that 0.9 and 1/0.9 weigh alike);
/// `None` with fewer than two rounds. With the ±10% spread of one round on
/// this machine, five rounds leave an interval about ±10% wide: the
/// controls' ratio shows whether a difference is more than noise.
pub(crate) fn ratio_interval(ratios: &[f64]) -> Option<(f64, f64, f64)> {
    let n = ratios.len();
    if n < 2 {
        return None;
    }
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    let mean = logs.iter().sum::<f64>() / n as f64;
    let variance = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = T95.get(n - 2).copied().unwrap_or(1.96) * (variance / n as f64).sqrt();
    Some((mean.exp(), (mean - half).exp(), (mean + half).exp()))
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::ratio_interval;

    #[test]
    fn the_ratio_interval_is_a_t_interval_on_logarithms() {
        assert_eq!(ratio_interval(&[0.9]), None);
        let (geo, lo, hi) = ratio_interval(&[0.9, 1.0 / 0.9]).unwrap();
        assert!((geo - 1.0).abs() < 1e-12, "{geo}");
        // ln 0.9 = -0.10536; sd of {-0.10536, 0.10536} = 0.149; half
        // width 12.706 × 0.149 / √2 = 1.3387.
        assert!((lo.ln() + 1.3387).abs() < 1e-3 && (hi.ln() - 1.3387).abs() < 1e-3, "{lo} {hi}");
        let (geo, lo, hi) = ratio_interval(&[0.95; 5]).unwrap();
        assert!((geo - 0.95).abs() < 1e-12 && (lo - 0.95).abs() < 1e-12 && (hi - 0.95).abs() < 1e-12);
    }
}
