//! The seed's formulas (DESIGN.md, "The formulas") as pure, checked functions.
//!
//! Symbols: M tasks, N workers, R_i resource score (measured throughput), speed_i, P_i confidence
//! in [0, 1], W the reward pool. Money is integer token units (`u128`); every step is checked and
//! never panics.

use crate::{Error, Result};

/// Confidence P_i in basis points: 10_000 = 1.0. Integer so that payouts are exact and replayable.
pub type ConfidenceBps = u16;

/// P = 1.0 in basis points.
pub const FULL_CONFIDENCE: ConfidenceBps = 10_000;

/// Allocation (seed 4.1.1): T_i = M · R_i / Σ_j R_j, rounded so that Σ T_i = M exactly
/// (largest remainder; ties to the lower index).
///
/// Errors when no worker has a positive, finite score.
pub fn allocate(tasks: u64, scores: &[f64]) -> Result<Vec<u64>> {
    if scores.iter().any(|r| !r.is_finite() || *r < 0.0) {
        return Err(Error::Invalid(
            "resource scores must be finite and non-negative".into(),
        ));
    }
    let total: f64 = scores.iter().sum();
    if total <= 0.0 {
        return Err(Error::Invalid(
            "no worker has a positive resource score".into(),
        ));
    }
    let exact: Vec<f64> = scores.iter().map(|r| tasks as f64 * r / total).collect();
    let mut shares: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
    let assigned: u64 = shares.iter().sum();
    let mut left = tasks.saturating_sub(assigned);
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for i in order.into_iter().cycle() {
        if left == 0 {
            break;
        }
        if scores[i] > 0.0 {
            shares[i] += 1;
            left -= 1;
        }
    }
    Ok(shares)
}

/// Execution time (seed 4.1.2): t_i = T_i / speed_i, in the unit of `speed` (tasks per second
/// gives seconds). `None` when the speed is not positive.
pub fn execution_time(tasks: u64, speed: f64) -> Option<f64> {
    (speed.is_finite() && speed > 0.0).then(|| tasks as f64 / speed)
}

/// The relative L2 distance `|a - b| / max(|a|, |b|)` of two equally long vectors, in f64 (the
/// plain distance when both are zero): the train comparator's measure, and what the explorer
/// shows for a gradient.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        d += (x - y) * (x - y);
        na += x * x;
        nb += y * y;
    }
    let n = na.max(nb).sqrt();
    if n == 0.0 { d.sqrt() } else { d.sqrt() / n }
}

/// Confidence weights P_j for [`weighted_mean`] from basis points; equal weights when every
/// one is zero (the verifier never accepts such a cluster: this only keeps callers total).
pub fn confidence_weights(bps: impl IntoIterator<Item = u16>) -> Vec<f64> {
    let mut w: Vec<f64> = bps
        .into_iter()
        .map(|c| f64::from(c) / f64::from(FULL_CONFIDENCE))
        .collect();
    if w.iter().all(|&x| x == 0.0) {
        w.iter_mut().for_each(|x| *x = 1.0);
    }
    w
}

/// Aggregation (seed 4.1.3): the confidence-weighted mean Σ_j r_j · P_j / Σ_k P_k of equally
/// long numeric outputs.
pub fn weighted_mean(outputs: &[&[f32]], confidence: &[f64]) -> Result<Vec<f32>> {
    let Some(first) = outputs.first() else {
        return Err(Error::Invalid("nothing to aggregate".into()));
    };
    if outputs.len() != confidence.len() || outputs.iter().any(|o| o.len() != first.len()) {
        return Err(Error::Invalid(
            "outputs and confidences do not line up".into(),
        ));
    }
    if confidence.iter().any(|p| !p.is_finite() || *p < 0.0) {
        return Err(Error::Invalid(
            "confidences must be finite and non-negative".into(),
        ));
    }
    let total: f64 = confidence.iter().sum();
    if total <= 0.0 {
        return Err(Error::Invalid(
            "confidences must be non-negative with a positive sum".into(),
        ));
    }
    let mut acc = vec![0f64; first.len()];
    for (o, &p) in outputs.iter().zip(confidence) {
        for (a, &v) in acc.iter_mut().zip(o.iter()) {
            *a += f64::from(v) * p;
        }
    }
    Ok(acc.into_iter().map(|a| (a / total) as f32).collect())
}

/// Contribution (seed 4.1.4): c_i = Σ over worker i's accepted tasks of cost_t · P_i, in
/// integer units (`cost` in work units × P in basis points). This is what goes on-chain as
/// `units`.
pub fn contribution(accepted_costs: &[u64], confidence: ConfidenceBps) -> Result<u128> {
    if confidence > FULL_CONFIDENCE {
        return Err(Error::Invalid(format!(
            "confidence {confidence} bps exceeds 10000"
        )));
    }
    let mut sum: u128 = 0;
    for &c in accepted_costs {
        sum = sum.checked_add(u128::from(c)).ok_or(Error::Overflow)?;
    }
    sum.checked_mul(u128::from(confidence))
        .ok_or(Error::Overflow)
}

/// Pool of a job: budget × accepted / total tasks, floored (the contract's formula).
pub fn pool(budget: u128, accepted_tasks: u64, task_count: u64) -> Result<u128> {
    if task_count == 0 || accepted_tasks > task_count {
        return Err(Error::Invalid(format!(
            "{accepted_tasks} accepted of {task_count} tasks"
        )));
    }
    mul_div(budget, u128::from(accepted_tasks), u128::from(task_count))
}

/// Payouts (seed 4.1.4): payout_i = ⌊W · c_i / Σ_j c_j⌋. Returns the payouts and the dust
/// W − Σ payout_i (refunded by the contract).
pub fn payouts(pool: u128, units: &[u128]) -> Result<(Vec<u128>, u128)> {
    let mut total: u128 = 0;
    for &u in units {
        total = total.checked_add(u).ok_or(Error::Overflow)?;
    }
    if total == 0 {
        return Err(Error::Invalid("no contribution to pay".into()));
    }
    let mut paid: u128 = 0;
    let mut out = Vec::with_capacity(units.len());
    for &u in units {
        let p = mul_div(pool, u, total)?;
        paid = paid.checked_add(p).ok_or(Error::Overflow)?;
        out.push(p);
    }
    Ok((out, pool.checked_sub(paid).ok_or(Error::Overflow)?))
}

/// ⌊a · b / c⌋ without intermediate overflow, for a, b, c < 2^128 and a result that fits.
pub fn mul_div(a: u128, b: u128, c: u128) -> Result<u128> {
    if c == 0 {
        return Err(Error::Invalid("division by zero".into()));
    }
    let r = alloy::primitives::U256::from(a) * alloy::primitives::U256::from(b)
        / alloy::primitives::U256::from(c);
    u128::try_from(r).map_err(|_| Error::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_l2_and_confidence_weights() {
        assert_eq!(rel_l2(&[3.0, 4.0], &[3.0, 4.0]), 0.0);
        assert!((rel_l2(&[3.0, 4.0], &[0.0, 0.0]) - 1.0).abs() < 1e-12);
        assert_eq!(rel_l2(&[0.0], &[0.0]), 0.0);
        assert_eq!(confidence_weights([5_000, 10_000]), vec![0.5, 1.0]);
        assert_eq!(confidence_weights([0, 0]), vec![1.0, 1.0]);
    }

    /// Seed 4.3: 10 equal workers, 10,000 tasks, P = 0.95: T_i = 1,000, c_i = 950 (in task units),
    /// each is paid W/10.
    #[test]
    fn seed_worked_example() {
        let t = allocate(10_000, &[1.0; 10]).unwrap();
        assert_eq!(t, vec![1_000; 10]);
        let c: Vec<u128> = t
            .iter()
            .map(|&n| contribution(&vec![1; n as usize], 9_500).unwrap())
            .collect();
        assert!(c.iter().all(|&ci| ci == 950 * 10_000)); // 950 task units, in units × bps
        let w = 1_000_000_000_000_000_000u128;
        let (pay, dust) = payouts(w, &c).unwrap();
        assert!(pay.iter().all(|&p| p == w / 10));
        assert_eq!(dust, 0);
    }

    /// Unequal scores: shares follow R_i and add up to M.
    #[test]
    fn allocation_follows_scores() {
        let scores = [1000.0, 1500.0, 2000.0, 2500.0, 3000.0];
        let t = allocate(10_000, &scores).unwrap();
        assert_eq!(t.iter().sum::<u64>(), 10_000);
        assert_eq!(t, vec![1000, 1500, 2000, 2500, 3000]);
        let t = allocate(10, &[1.0, 1.0, 1.0]).unwrap();
        assert_eq!(t, vec![4, 3, 3]);
        assert_eq!(allocate(5, &[0.0, 2.0]).unwrap(), vec![0, 5]);
        assert!(allocate(5, &[0.0, 0.0]).is_err());
        assert!(allocate(5, &[f64::NAN]).is_err());
        // Finish times equalise: t_i = T_i / speed_i is the same for every worker.
        let times: Vec<f64> = [1000u64, 1500, 2000]
            .iter()
            .zip([1000.0, 1500.0, 2000.0])
            .map(|(&n, s)| execution_time(n, s).unwrap())
            .collect();
        assert!(times.iter().all(|&x| (x - 1.0).abs() < 1e-12));
        assert_eq!(execution_time(1, 0.0), None);
    }

    /// Units 1000, 1500, ..., 5500 are paid in proportion, within 1 wei, and nothing is lost.
    #[test]
    fn payouts_are_proportional() {
        let units: Vec<u128> = (0..10).map(|i| 1000 + 500 * i).collect();
        let w = 123_456_789_012_345_678_901u128;
        let (pay, dust) = payouts(w, &units).unwrap();
        let total: u128 = units.iter().sum();
        for (p, u) in pay.iter().zip(&units) {
            let exact = w as f64 * *u as f64 / total as f64;
            assert!(
                (*p as f64 - exact).abs() <= 1.0 + exact * 1e-15,
                "{p} vs {exact}"
            );
        }
        assert_eq!(pay.iter().sum::<u128>() + dust, w);
        assert!(dust < units.len() as u128);
    }

    #[test]
    fn weighted_mean_follows_confidence() {
        let a = [1.0f32, 0.0];
        let b = [0.0f32, 1.0];
        let m = weighted_mean(&[&a, &b], &[0.75, 0.25]).unwrap();
        assert_eq!(m, vec![0.75, 0.25]);
        assert!(weighted_mean(&[&a, &b[..1]], &[1.0, 1.0]).is_err());
        assert!(weighted_mean(&[&a], &[0.0]).is_err());
        assert!(weighted_mean(&[], &[]).is_err());
    }

    #[test]
    fn money_paths_are_checked() {
        assert_eq!(
            contribution(&[u64::MAX, u64::MAX], 10_000).unwrap(),
            u128::from(u64::MAX) * 2 * 10_000
        );
        assert!(contribution(&[1], 10_001).is_err());
        assert!(payouts(10, &[u128::MAX, 1]).is_err());
        assert!(payouts(10, &[0, 0]).is_err());
        assert_eq!(pool(1_000, 3, 4).unwrap(), 750);
        assert!(pool(1_000, 5, 4).is_err());
        assert!(pool(1_000, 0, 0).is_err());
        assert_eq!(mul_div(u128::MAX, u128::MAX, u128::MAX).unwrap(), u128::MAX);
        assert!(mul_div(u128::MAX, 2, 1).is_err());
    }
}
