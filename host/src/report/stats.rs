//! Confidence intervals for comparing runs: Wilson score intervals for rates
//! (and Newcombe's hybrid interval for a difference of two rates), the
//! percentile bootstrap for everything else, and the Pareto front.
//!
//! The bootstrap draws from a fixed-seed generator, so the same records give
//! the same table every time.

use serde::Serialize;

/// z for a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Resamples drawn by the bootstrap.
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;

/// A point estimate with its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// The estimate.
    pub value: f64,
    /// Lower end of the 95 % interval.
    pub low: f64,
    /// Upper end of the 95 % interval.
    pub high: f64,
    /// Observations behind it (runs for a bootstrap, trials for a rate).
    pub n: u64,
}

impl Estimate {
    /// An estimate without spread (one observation).
    pub fn exact(value: f64, n: u64) -> Estimate {
        Estimate { value, low: value, high: value, n }
    }

    /// Whether the interval lies wholly above (1), below (-1) or across (0) zero.
    pub fn sign(&self) -> i8 {
        if self.low > 0.0 {
            1
        } else if self.high < 0.0 {
            -1
        } else {
            0
        }
    }
}

/// The Wilson score interval of `successes` out of `trials` (95 %).
pub fn wilson(successes: u64, trials: u64) -> Estimate {
    if trials == 0 {
        return Estimate { value: 0.0, low: 0.0, high: 1.0, n: 0 };
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let low = if successes == 0 { 0.0 } else { (center - half).max(0.0) };
    let high = if successes >= trials { 1.0 } else { (center + half).min(1.0) };
    Estimate { value: p, low, high, n: trials }
}

/// Newcombe's hybrid score interval for the difference of two rates
/// (`a - b`), built from their Wilson intervals.
pub fn rate_difference(a: &Estimate, b: &Estimate) -> Estimate {
    let d = a.value - b.value;
    let low = d - ((a.value - a.low).powi(2) + (b.high - b.value).powi(2)).sqrt();
    let high = d + ((a.high - a.value).powi(2) + (b.value - b.low).powi(2)).sqrt();
    Estimate { value: d, low, high, n: a.n.min(b.n) }
}

/// A small, fast, seedable generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

const BOOTSTRAP_SEED: u64 = 0x6E61_735F_626F_6F74;

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn resample_mean(xs: &[f64], rng: &mut SplitMix64) -> f64 {
    let mut s = 0.0;
    for _ in 0..xs.len() {
        s += xs[rng.below(xs.len())];
    }
    s / xs.len() as f64
}

fn percentile_interval(mut draws: Vec<f64>) -> (f64, f64) {
    draws.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = q * (draws.len() - 1) as f64;
        let (i, frac) = (pos.floor() as usize, pos.fract());
        let next = draws[(i + 1).min(draws.len() - 1)];
        draws[i] + (next - draws[i]) * frac
    };
    (at(0.025), at(0.975))
}

/// The mean of `xs` with its 95 % percentile-bootstrap interval. `None`
/// for no observations; one observation gives a zero-width interval.
pub fn bootstrap_mean(xs: &[f64]) -> Option<Estimate> {
    if xs.is_empty() {
        return None;
    }
    let m = mean(xs);
    if xs.len() == 1 {
        return Some(Estimate::exact(m, 1));
    }
    let mut rng = SplitMix64::new(BOOTSTRAP_SEED);
    let draws: Vec<f64> = (0..BOOTSTRAP_RESAMPLES).map(|_| resample_mean(xs, &mut rng)).collect();
    let (low, high) = percentile_interval(draws);
    Some(Estimate { value: m, low, high, n: xs.len() as u64 })
}

/// The difference of means `mean(a) - mean(b)` with its 95 % interval, each
/// sample resampled on its own.
pub fn bootstrap_difference(a: &[f64], b: &[f64]) -> Option<Estimate> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let d = mean(a) - mean(b);
    let n = a.len().min(b.len()) as u64;
    if a.len() == 1 && b.len() == 1 {
        return Some(Estimate::exact(d, n));
    }
    let mut rng = SplitMix64::new(BOOTSTRAP_SEED ^ 0xD1FF);
    let draws: Vec<f64> =
        (0..BOOTSTRAP_RESAMPLES).map(|_| resample_mean(a, &mut rng) - resample_mean(b, &mut rng)).collect();
    let (low, high) = percentile_interval(draws);
    Some(Estimate { value: d, low, high, n })
}

/// The indices of the Pareto-optimal points: no other point has a cost at
/// most as high and a score strictly higher (or the same score at a lower
/// cost). Returned by increasing cost.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> =
        (0..points.len()).filter(|&i| points[i].0.is_finite() && points[i].1.is_finite()).collect();
    order.sort_by(|&i, &j| points[i].0.total_cmp(&points[j].0).then(points[j].1.total_cmp(&points[i].1)));
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in order {
        if points[i].1 > best {
            best = points[i].1;
            front.push(i);
        }
    }
    front
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 5e-4
    }

    #[test]
    fn wilson_matches_published_values() {
        // Newcombe (1998), table I: 81/263 -> 0.2553 to 0.3662.
        let e = wilson(81, 263);
        assert!(close(e.low, 0.2553) && close(e.high, 0.3662), "{e:?}");
        // 8 of 10 -> 0.4902 to 0.9433.
        let e = wilson(8, 10);
        assert!(close(e.low, 0.4902) && close(e.high, 0.9433), "{e:?}");
        // The edges stay inside [0, 1] and are not degenerate.
        let zero = wilson(0, 10);
        assert_eq!(zero.low, 0.0);
        assert!(close(zero.high, 0.2775), "{zero:?}");
        assert_eq!(wilson(10, 10).high, 1.0);
    }

    #[test]
    fn newcombe_difference_matches_the_published_example() {
        // Newcombe (1998), method 10, example (a): 56/70 - 48/80 = 0.2 in 0.0524 to 0.3339.
        let d = rate_difference(&wilson(56, 70), &wilson(48, 80));
        assert!(close(d.value, 0.2), "{d:?}");
        assert!(close(d.low, 0.0524) && close(d.high, 0.3339), "{d:?}");
    }

    #[test]
    fn the_bootstrap_brackets_the_mean_and_is_reproducible() {
        let xs = [0.61, 0.72, 0.68, 0.80, 0.75];
        let a = bootstrap_mean(&xs).expect("estimate");
        assert!(close(a.value, 0.712));
        assert!(a.low < a.value && a.value < a.high);
        assert!(a.low >= 0.61 && a.high <= 0.80, "{a:?}");
        assert_eq!(Some(a), bootstrap_mean(&xs), "a fixed seed gives the same interval");
        assert_eq!(bootstrap_mean(&[0.5]), Some(Estimate::exact(0.5, 1)));
        assert_eq!(bootstrap_mean(&[]), None);
        let same = bootstrap_mean(&[0.3, 0.3, 0.3]).expect("estimate");
        assert_eq!((same.low, same.high), (0.3, 0.3));
    }

    #[test]
    fn the_difference_interval_excludes_zero_only_when_the_gap_is_clear() {
        let hi = [0.80, 0.82, 0.81, 0.83];
        let lo = [0.60, 0.62, 0.61, 0.63];
        assert_eq!(bootstrap_difference(&hi, &lo).expect("d").sign(), 1);
        let noisy = [0.5, 0.9, 0.6, 0.8];
        let noisy2 = [0.55, 0.85, 0.65, 0.7];
        assert_eq!(bootstrap_difference(&noisy, &noisy2).expect("d").sign(), 0);
    }

    #[test]
    fn the_pareto_front_keeps_only_undominated_points() {
        let pts = [(100.0, 0.5), (50.0, 0.6), (200.0, 0.9), (150.0, 0.55), (50.0, 0.4), (300.0, 0.9)];
        assert_eq!(pareto_front(&pts), vec![1, 2]);
        assert!(pareto_front(&[]).is_empty());
    }
}
