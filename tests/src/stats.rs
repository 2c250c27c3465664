//! Reference statistics, written out the slow, obvious way, that the tests
//! and benchmarks check the host's rank correlations against.

/// Average ranks from the top: 1 + the values above + half the others equal
/// (the best design is rank 1).
pub fn ranks_desc(x: &[f64]) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let above = x.iter().filter(|v| **v > x[i]).count() as f64;
            let equal = x.iter().filter(|v| **v == x[i]).count() as f64 - 1.0;
            1.0 + above + equal / 2.0
        })
        .collect()
}

/// Spearman's rho: Pearson's r of the average ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    let (rx, ry) = (ranks_desc(x), ranks_desc(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

/// Kendall's tau-b, by counting every pair.
pub fn kendall(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len();
    let (mut c, mut d, mut tx, mut ty) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..n {
        for j in i + 1..n {
            let sx = if x[i] == x[j] { 0.0 } else { (x[i] - x[j]).signum() };
            let sy = if y[i] == y[j] { 0.0 } else { (y[i] - y[j]).signum() };
            if sx == 0.0 {
                tx += 1.0;
            }
            if sy == 0.0 {
                ty += 1.0;
            }
            if sx * sy > 0.0 {
                c += 1.0;
            } else if sx * sy < 0.0 {
                d += 1.0;
            }
        }
    }
    let pairs = (n * (n - 1) / 2) as f64;
    (c - d) / ((pairs - tx) * (pairs - ty)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worked_example_with_ties() {
        let (x, y) = ([0.9, 0.8, 0.8, 0.5], [0.7, 0.9, 0.6, 0.5]);
        assert_eq!(ranks_desc(&x), vec![1.0, 2.5, 2.5, 4.0]);
        // Pairs: 4 concordant, 1 discordant, 1 tied in x only: (4-1)/sqrt(5*6).
        assert!((kendall(&x, &y) - 3.0 / 30f64.sqrt()).abs() < 1e-12);
        assert!((spearman(&x, &x) - 1.0).abs() < 1e-12);
        let reversed: Vec<f64> = x.iter().map(|v| -v).collect();
        assert!((spearman(&x, &reversed) + 1.0).abs() < 1e-12);
    }
}
