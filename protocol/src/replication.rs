//! Adaptive replication: trusted workers are computed once, except for spot checks chosen from
//! randomness committed before leasing and revealed at settlement.
//!
//! One place for the rules, used by the verifier (what a first replica needs), the auditor
//! (recomputing the spot-check selection from chain data) and the simulator (`gleaner sim`).
//!
//! # The rules
//!
//! - **Trust.** A worker's *streak* counts its results that were checked (compared with another
//!   replica) and agreed, since its last contradiction. It is trusted for a job when its streak
//!   is at least the job's [`SpotChecks::trust_after`]. A contradiction (slashed) resets it to 0;
//!   a result accepted unchecked changes nothing ([`streak_after`]).
//! - **Spot checks.** The coordinator draws a 32-byte secret per job and posts
//!   `commitment = keccak256(secret)` with the task root (`postTasksCommitted`). The job's seed is
//!   `keccak256(secret ‖ beacon)`, where the beacon is the hash of the block that holds that
//!   transaction: it did not exist when the commitment was signed, so the coordinator could not
//!   grind the secret against it. Task `t` is *checked* when the first 8 bytes of
//!   `keccak256(seed ‖ taskHash_t)`, read as a big-endian integer `x`, satisfy
//!   `x · 10⁶ < check_ppm · 2⁶⁴` ([`is_checked`]). The secret is revealed in the settlement
//!   transaction, where the contract checks it against the commitment; an auditor then recomputes
//!   every task's selection from chain data alone.
//! - **First replica.** Every task starts with one replica. When it comes in, the verifier asks
//!   for `redundancy − 1` more when the worker is not trusted or the task is checked, and holds
//!   it as *provisional* otherwise ([`replicas_wanted`]). A worker cannot tell a checked task from
//!   an unchecked one: every lease looks the same, and the selection needs the secret.
//! - **Provisional results are accepted last.** They are accepted when nothing else in the job is
//!   undecided, and only if their worker is still trusted then; a worker caught on any task
//!   meanwhile has all its provisional results replicated again. So a cheater's fakes are accepted
//!   only if none of them, in the whole job, was checked.
//! - **Part checks.** Independently of replicas, the verifier recomputes a part of every output
//!   it checks, where the kind has a cheap one (`TaskKind::check_part`; embed: one row, picked at
//!   random when the output arrives, 1/rows of the task's compute). An output whose recomputed
//!   part differs is malformed, which contradicts any quorum: a wholly faked output is caught on
//!   its first task, checked or not, and so is a pair of colluders agreeing on one. Generate
//!   needs none (its check already replays every token against the model); train has none.
//! - **Money.** A job escrows its budget for `taskCount × redundancy` replicas; the pool of the
//!   settlement is `budget × paidReplicas / (taskCount × redundancy)` ([`replica_pool`]), where
//!   `paidReplicas` counts each accepted task's quorum members up to `redundancy`
//!   ([`paid_replicas`]). What replication did not need goes back to the requester.
//!
//! # Why cheating loses money
//!
//! Let `p` be what a replica pays, `c ≤ p` what computing it costs the worker, `q = check_ppm /
//! 10⁶` and `S` the slash. A trusted worker that fakes `k ≥ 1` of its results in a job saves `k·c`
//! if no fake is checked, and otherwise (probability `π_k = 1 − (1 − q)^k`) is paid for none of
//! them and loses `S`. Its expected gain over honesty is
//!
//! `G(k) = k·c − π_k·(k·p + S)`.
//!
//! Since `(1 − q)^k ≤ 1/(1 + k·q)`, `π_k ≥ k·q/(1 + k·q)`, so `G(k) < 0` as soon as
//! `q·(k·p + S) > c·(1 + k·q)`, i.e. `q·S > c + k·q·(c − p)`. A worker only works when `c ≤ p`,
//! so the right side is at most `c`: **a slash `S > c/q` makes every faking strategy a loss, for
//! any number of fakes** ([`min_slash`]). The verifier slashes a caught worker of a job with spot
//! checks at least `min_slash(p, q)`, just above `p/q` (`c ≤ p`, so above `c/q` too), and trusts
//! only workers whose stake covers it (a slash takes at most what is bonded). With the default
//! `q = 5%`: 20 replica prices. The end-to-end test's job (40 tasks at redundancy 2 for 90
//! tokens) pays 1.125 tokens a replica, so a caught worker is slashed 22.5 tokens of its stake of
//! 100 (at its `q = 50%`, 2.25 tokens; the registry's minStake / 10 = 10 tokens applies instead).
//! A part check only adds ways to be caught (`π_k` grows), so the bound holds with it. The
//! simulator measures it without the bound.

use alloy::primitives::{B256, keccak256};
use serde::{Deserialize, Serialize};

use crate::formulas::mul_div;
use crate::{Error, Result};

/// Parts per million: `check_ppm` of 1,000,000 checks every task.
pub const PPM: u32 = 1_000_000;
/// Default spot-check probability: 5%.
pub const DEFAULT_CHECK_PPM: u32 = 50_000;
/// Default checked-and-agreed results before a worker is trusted.
pub const DEFAULT_TRUST_AFTER: u32 = 20;

/// A job's spot-check policy, part of its manifest. Absent: every task is computed
/// `redundancy` times (full replication).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpotChecks {
    /// Probability, in parts per million, that a trusted worker's task is replicated anyway.
    pub check_ppm: u32,
    /// Checked-and-agreed results (since its last contradiction) a worker needs to be trusted.
    pub trust_after: u32,
}

impl Default for SpotChecks {
    fn default() -> Self {
        Self {
            check_ppm: DEFAULT_CHECK_PPM,
            trust_after: DEFAULT_TRUST_AFTER,
        }
    }
}

impl SpotChecks {
    /// Checks the policy's ranges.
    pub fn validate(&self) -> Result<()> {
        if !(1..=PPM).contains(&self.check_ppm) {
            return Err(Error::Invalid(format!(
                "check_ppm {} is outside 1..=1000000",
                self.check_ppm
            )));
        }
        if self.trust_after == 0 {
            return Err(Error::Invalid(
                "trust_after must be at least 1 (a worker is never trusted on sight)".into(),
            ));
        }
        Ok(())
    }

    /// The spot-check probability `q`.
    pub fn q(&self) -> f64 {
        f64::from(self.check_ppm) / f64::from(PPM)
    }

    /// Whether a worker with this streak is trusted.
    pub fn trusted(&self, streak: u32) -> bool {
        streak >= self.trust_after
    }
}

/// A job's spot-check randomness: the coordinator's secret and the beacon block hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpotSeed {
    /// The secret whose keccak256 was committed with the task root.
    pub secret: B256,
    /// The hash of the block that holds the commitment.
    pub beacon: B256,
}

impl SpotSeed {
    /// The job's seed ([`seed`]).
    pub fn seed(&self) -> B256 {
        seed(self.secret, self.beacon)
    }

    /// Whether the task `task_hash` is checked at `check_ppm`.
    pub fn is_checked(&self, task_hash: B256, check_ppm: u32) -> bool {
        is_checked(self.seed(), task_hash, check_ppm)
    }
}

/// `keccak256(secret)`: what the coordinator posts with the task root.
pub fn commitment(secret: B256) -> B256 {
    keccak256(secret)
}

/// The job's seed: `keccak256(secret ‖ beacon)`, the beacon being the hash of the block that
/// holds the commitment.
pub fn seed(secret: B256, beacon: B256) -> B256 {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(secret.as_slice());
    buf[32..].copy_from_slice(beacon.as_slice());
    keccak256(buf)
}

/// Whether task `task_hash` is spot-checked under `seed`: the first 8 bytes of
/// `keccak256(seed ‖ taskHash)` as a big-endian `x`, checked iff `x · 10⁶ < check_ppm · 2⁶⁴`.
pub fn is_checked(seed: B256, task_hash: B256, check_ppm: u32) -> bool {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(seed.as_slice());
    buf[32..].copy_from_slice(task_hash.as_slice());
    let h = keccak256(buf);
    let mut x = [0u8; 8];
    x.copy_from_slice(&h[..8]);
    let x = u128::from(u64::from_be_bytes(x));
    x * u128::from(PPM) < u128::from(check_ppm.min(PPM)) << 64
}

/// How a worker's result bears on its streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Compared with another replica and in the accepted quorum.
    CheckedAgreed,
    /// Signed a result that contradicts an accepted quorum (or a malformed one).
    Contradicted,
    /// Accepted without a comparison, or nothing decided: no evidence either way.
    None,
}

/// The streak after one piece of evidence (saturating).
pub fn streak_after(streak: u32, evidence: Evidence) -> u32 {
    match evidence {
        Evidence::CheckedAgreed => streak.saturating_add(1),
        Evidence::Contradicted => 0,
        Evidence::None => streak,
    }
}

/// Replicas a task wants in all once its first replica came from a worker (`trusted` or not):
/// 1 (provisional) for a trusted worker on an unchecked task, else the job's redundancy.
pub fn replicas_wanted(redundancy: u16, trusted: bool, checked: bool) -> u16 {
    if trusted && !checked {
        1
    } else {
        redundancy.max(1)
    }
}

/// Replicas an accepted task pays for: its quorum's members, at most `redundancy`.
pub fn paid_replicas(quorum_members: usize, redundancy: u16) -> u32 {
    let r = usize::from(redundancy.max(1));
    u32::try_from(quorum_members.min(r)).unwrap_or(u32::MAX)
}

/// The settlement pool of a job with spot checks: `budget × paidReplicas / (taskCount ×
/// redundancy)`, floored (the contract's formula). With every accepted task paying `redundancy`
/// replicas it equals [`crate::formulas::pool`].
pub fn replica_pool(
    budget: u128,
    paid_replicas: u64,
    task_count: u64,
    redundancy: u16,
) -> Result<u128> {
    let slots = u128::from(task_count) * u128::from(redundancy);
    if slots == 0 || u128::from(paid_replicas) > slots {
        return Err(Error::Invalid(format!(
            "{paid_replicas} paid replicas of {task_count} tasks × {redundancy}"
        )));
    }
    mul_div(budget, u128::from(paid_replicas), slots)
}

/// The smallest slash that makes every faking strategy of a trusted worker a loss (see the
/// module docs): the least integer above `c / q`, for a replica that costs `cost` to compute, at
/// `check_ppm`.
pub fn min_slash(cost: u128, check_ppm: u32) -> Result<u128> {
    if check_ppm == 0 || check_ppm > PPM {
        return Err(Error::Invalid(format!("check_ppm {check_ppm}")));
    }
    let ppm = u128::from(check_ppm);
    let num = cost.checked_mul(u128::from(PPM)).ok_or(Error::Overflow)?;
    (num / ppm).checked_add(1).ok_or(Error::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_rate_follows_check_ppm() {
        let seed = seed(B256::repeat_byte(7), B256::repeat_byte(9));
        for ppm in [10_000u32, 50_000, 500_000] {
            let n = 100_000u32;
            let hits = (0..n)
                .filter(|i| is_checked(seed, keccak256(i.to_be_bytes()), ppm))
                .count() as f64;
            let want = f64::from(n) * f64::from(ppm) / 1e6;
            let sd = (want * (1.0 - f64::from(ppm) / 1e6)).sqrt();
            assert!((hits - want).abs() < 5.0 * sd, "{ppm}: {hits} vs {want}");
        }
        let t = B256::repeat_byte(1);
        assert!(is_checked(seed, t, PPM));
        assert!(!(0..1000u32).any(|i| is_checked(seed, keccak256(i.to_be_bytes()), 0)));
    }

    #[test]
    fn selection_depends_on_secret_and_beacon() {
        let tasks: Vec<B256> = (0..256u32).map(|i| keccak256(i.to_be_bytes())).collect();
        let pick =
            |s: B256| -> Vec<bool> { tasks.iter().map(|&t| is_checked(s, t, 500_000)).collect() };
        let a = pick(seed(B256::repeat_byte(1), B256::repeat_byte(2)));
        assert_eq!(a, pick(seed(B256::repeat_byte(1), B256::repeat_byte(2))));
        assert_ne!(a, pick(seed(B256::repeat_byte(3), B256::repeat_byte(2))));
        assert_ne!(a, pick(seed(B256::repeat_byte(1), B256::repeat_byte(4))));
        assert_eq!(commitment(B256::ZERO), keccak256([0u8; 32]));
    }

    #[test]
    fn trust_is_earned_slowly_and_lost_at_once() {
        let p = SpotChecks::default();
        let mut s = 0;
        for _ in 0..p.trust_after - 1 {
            s = streak_after(s, Evidence::CheckedAgreed);
        }
        assert!(!p.trusted(s));
        assert!(!p.trusted(streak_after(s, Evidence::None)));
        s = streak_after(s, Evidence::CheckedAgreed);
        assert!(p.trusted(s));
        assert_eq!(streak_after(s, Evidence::Contradicted), 0);
        assert_eq!(streak_after(u32::MAX, Evidence::CheckedAgreed), u32::MAX);
        assert_eq!(replicas_wanted(2, true, false), 1);
        assert_eq!(replicas_wanted(2, true, true), 2);
        assert_eq!(replicas_wanted(3, false, false), 3);
        assert_eq!(replicas_wanted(0, false, false), 1);
    }

    #[test]
    fn policy_ranges_are_checked() {
        assert!(SpotChecks::default().validate().is_ok());
        for bad in [
            SpotChecks {
                check_ppm: 0,
                trust_after: 1,
            },
            SpotChecks {
                check_ppm: PPM + 1,
                trust_after: 1,
            },
            SpotChecks {
                check_ppm: 1,
                trust_after: 0,
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn money_is_exact() {
        // Full replication: the replica pool equals the task pool.
        for (budget, accepted, tasks, r) in [(1_000u128, 3u64, 4u64, 2u16), (999, 7, 7, 3)] {
            assert_eq!(
                replica_pool(budget, accepted * u64::from(r), tasks, r).unwrap(),
                crate::formulas::pool(budget, accepted, tasks).unwrap()
            );
        }
        // 10 tasks at r = 2, 11 replicas paid: 11/20 of the budget.
        assert_eq!(replica_pool(2_000, 11, 10, 2).unwrap(), 1_100);
        assert!(replica_pool(2_000, 21, 10, 2).is_err());
        assert!(replica_pool(2_000, 0, 0, 2).is_err());
        assert_eq!(paid_replicas(3, 2), 2);
        assert_eq!(paid_replicas(1, 2), 1);
        assert_eq!(min_slash(1, DEFAULT_CHECK_PPM).unwrap(), 21);
        assert_eq!(min_slash(3, 300_000).unwrap(), 11);
        assert_eq!(min_slash(7, PPM).unwrap(), 8);
        assert!(min_slash(1, 0).is_err());
        assert!(min_slash(u128::MAX, 1).is_err());
    }
}
