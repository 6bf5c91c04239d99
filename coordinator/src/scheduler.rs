//! Dispatch by measured speed: the allocation formula applied continuously.
//!
//! The seed's allocation gives worker i `T_i = M · R_i / Σ_j R_j` of M tasks, R_i being its
//! measured GFLOP/s ([`gleaner_protocol::formulas::allocate`]). The coordinator does not assign
//! tasks up front (workers come and go); instead, at each lease request, M is the number of
//! replicas open or in flight in leasable jobs and the active workers are those seen recently.
//! A worker may hold at most its share of them, and at least one, so a fast worker holds more
//! leases at once and a slow one never more than its part: all finish at about the same time.

use gleaner_protocol::formulas;

/// How many leases worker `me` (an index into `gflops`) may hold at once when `replicas` are open
/// or leased among the active workers whose scores are `gflops`. At least 1.
pub fn share(replicas: u64, gflops: &[f64], me: usize) -> u64 {
    let Some(&mine) = gflops.get(me) else {
        return 1;
    };
    let clean = |g: f64| if g.is_finite() && g > 0.0 { g } else { 0.0 };
    let total = gflops.iter().map(|&g| clean(g)).sum();
    share_of(replicas, clean(mine), total, gflops.len() as u64)
}

/// [`share`] from sums: worker `me`'s score `mine` and the sum `total` of the `active`
/// workers' scores (`me` among them), each score already counted as [`share`] counts it (zero
/// unless finite and positive): the database sums them, the rows stay there.
pub fn share_of(replicas: u64, mine: f64, total: f64, active: u64) -> u64 {
    // Scores that are not finite or are negative count as zero; if nobody has a positive score,
    // everybody counts as equal.
    let (mine, total) = if total > 0.0 && total.is_finite() {
        (mine, total)
    } else {
        (1.0, active.max(1) as f64)
    };
    // The exact share M · R_i / Σ R_j of the allocation formula, rounded up: rounding down
    // (or largest remainder, as `formulas::allocate` does for a fixed assignment) can leave
    // the last replica of a task with only workers that already hold it able to lease.
    let exact = replicas as f64 * mine / total;
    (exact.ceil() as u64).max(1)
}

/// The allocation formula's shares (a fixed assignment of `replicas`), for comparison.
pub fn allocation(replicas: u64, gflops: &[f64]) -> Vec<u64> {
    formulas::allocate(replicas, gflops).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_speed_and_are_at_least_one() {
        let cases: &[(u64, &[f64], &[u64])] = &[
            (10, &[1.0, 1.0], &[5, 5]),
            (4, &[1.0, 1.0, 1.0], &[2, 2, 2]),
            (12, &[3.0, 1.0], &[9, 3]),
            (100, &[50.0, 30.0, 20.0], &[50, 30, 20]),
            (3, &[100.0, 1.0], &[3, 1]),
            (30, &[1.0; 20], &[2; 20]),
            (0, &[1.0, 2.0], &[1, 1]),
            (4, &[0.0, 0.0], &[2, 2]),
            (4, &[f64::NAN, 1.0], &[1, 4]),
        ];
        for (m, g, want) in cases {
            let got: Vec<u64> = (0..g.len()).map(|i| share(*m, g, i)).collect();
            assert_eq!(&got, want, "m={m} g={g:?}");
        }
    }

    #[test]
    fn shares_cover_the_allocation() {
        for (m, g) in [
            (10u64, vec![1.0, 2.0, 3.0]),
            (7, vec![5.0, 5.0]),
            (1000, vec![0.1, 9.9]),
        ] {
            let alloc = allocation(m, &g);
            for (i, a) in alloc.iter().enumerate() {
                assert!(share(m, &g, i) >= *a, "m={m} g={g:?} i={i}");
            }
        }
    }

    #[test]
    fn unknown_worker_gets_one() {
        assert_eq!(share(10, &[1.0], 5), 1);
    }
}
