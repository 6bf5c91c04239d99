//! From decided tasks to the settlement report, the contract calls and the slashing evidence.
//! Pure functions.
//!
//! - **Units** (seed 4.1.4): worker i's units are `contribution(costs of the accepted tasks whose
//!   quorum it is in, P_i)` = Σ cost_t × P_i in basis points, with P_i its confidence when the
//!   report is built. A quorum member's confidence is recorded as at least 1 bps, so every
//!   accepted task pays someone; a worker no longer bonded in the registry (the contract would
//!   refuse to pay it) is recorded with confidence 0 and so gets no units.
//! - **Workers** in the report: every worker in some accepted quorum, strictly ascending, with
//!   its confidence and units (0 allowed); the contract is given only those with units > 0,
//!   exactly as [`SettlementReport::recompute`] lists them.
//! - **Slashes**: every worker whose *signed* result contradicts an accepted quorum (another
//!   output, or a malformed blob) is slashed once per job, with the lowest such task as evidence.
//! - **Evidence hash** ([`evidence_hash`]): `keccak256(abi.encode(reportHash, worker, uint32
//!   taskIndex, resultHash))`, where `reportHash` is the report's keccak256 (the on-chain
//!   `reportHash`). An auditor who holds the report recomputes it for every `Slashed` event.
//! - **Two hashes of one report**: `report.hash()` (keccak256 of the canonical bytes) goes
//!   on-chain; the same canonical bytes are uploaded to the coordinator as a blob, addressed by
//!   their sha256 ([`report_blob`]), which is what `POST /v1/verifier/settled` carries.

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256, U256};
use gleaner_protocol::blob::blob_hash;
use gleaner_protocol::formulas::{self, ConfidenceBps};
use gleaner_protocol::report::{
    REPORT_VERSION, ReplicaEntry, SettlementReport, SlashEntry, SpotCheckReport, TaskOutcome,
    WorkerEntry,
};
use gleaner_protocol::task::JobManifest;
use serde::{Deserialize, Serialize};

use crate::decide::{Replica, Verdict};
use crate::{Error, Result};

/// Most workers in one `settle` or `settleChunk` call (the contract's `MAX_SETTLEMENT_CHUNK`).
pub const MAX_SETTLEMENT_CHUNK: usize = 256;

/// What a report needs to know about a job besides its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobContext {
    /// Chain id.
    pub chain_id: u64,
    /// JobMarket address.
    pub market: Address,
    /// On-chain job id.
    pub job_id: U256,
    /// keccak256 of the canonical manifest.
    pub spec_hash: B256,
    /// The posted task root.
    pub tasks_root: B256,
    /// Each task's cost, in index order.
    pub costs: Vec<u64>,
    /// Each task's hash, in index order.
    pub task_hashes: Vec<B256>,
    /// A job with spot checks: the report's section (policy, redundancy, revealed seed).
    pub spot_checks: Option<SpotCheckReport>,
}

impl JobContext {
    /// The context of job `job_id` with this manifest.
    pub fn new(
        chain_id: u64,
        market: Address,
        job_id: U256,
        manifest: &JobManifest,
        tasks_root: B256,
    ) -> Self {
        Self {
            chain_id,
            market,
            job_id,
            spec_hash: manifest.spec_hash(),
            tasks_root,
            costs: manifest.tasks.iter().map(|t| t.cost).collect(),
            task_hashes: manifest.task_hashes(job_id),
            spot_checks: None,
        }
    }
}

/// The verifier's record of one finally decided task (accepted or failed), kept in its store
/// until the job is settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Task index.
    pub index: u32,
    /// Task hash.
    pub task_hash: B256,
    /// sha256 of the accepted (aggregated) output, if accepted.
    pub accepted_result: Option<B256>,
    /// Every replica considered, with `in_quorum`.
    pub replicas: Vec<ReplicaEntry>,
    /// Indices into `replicas` of signed results that contradict the accepted quorum.
    pub contradictions: Vec<usize>,
}

impl TaskRecord {
    /// The record of a final verdict (`Accept` with the aggregated output's hash, or `Fail`).
    pub fn new(
        index: u32,
        task_hash: B256,
        replicas: &[Replica],
        verdict: &Verdict,
        accepted_result: Option<B256>,
    ) -> Result<Self> {
        let quorum: &[usize] = match verdict {
            Verdict::Accept { quorum } => quorum,
            Verdict::Fail => &[],
            Verdict::More { .. } => {
                return Err(Error::Invalid(format!(
                    "task {index}: `more` is not a final verdict"
                )));
            }
        };
        if quorum.is_empty() == accepted_result.is_some() {
            return Err(Error::Invalid(format!(
                "task {index}: an accepted result needs a quorum and vice versa"
            )));
        }
        let entries = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| ReplicaEntry {
                worker: r.worker,
                result_hash: r.result_hash,
                signature: r.signature.clone(),
                in_quorum: quorum.contains(&i),
            })
            .collect();
        let contradictions = if accepted_result.is_some() {
            (0..replicas.len())
                .filter(|i| !quorum.contains(i) && replicas[*i].attributable())
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            index,
            task_hash,
            accepted_result,
            replicas: entries,
            contradictions,
        })
    }
}

/// Builds the settlement report of a job from its task records.
///
/// `confidence(worker)` is the worker's current P_i, or `None` when it is no longer bonded (it
/// cannot be paid). Tasks without a record are reported as not accepted. `slash_amount` of 0
/// means no slashes.
pub fn build_report(
    ctx: &JobContext,
    records: &[TaskRecord],
    confidence: impl Fn(Address) -> Option<ConfidenceBps>,
    slash_amount: U256,
) -> Result<SettlementReport> {
    if ctx.costs.len() != ctx.task_hashes.len() {
        return Err(Error::Invalid(
            "costs and task hashes differ in length".into(),
        ));
    }
    let mut by_index: BTreeMap<u32, &TaskRecord> = BTreeMap::new();
    for r in records {
        let want = ctx.task_hashes.get(r.index as usize).ok_or_else(|| {
            Error::Invalid(format!(
                "task {} is beyond the job's {} tasks",
                r.index,
                ctx.costs.len()
            ))
        })?;
        if *want != r.task_hash {
            return Err(Error::Invalid(format!(
                "task {}: hash {} is not the manifest's {want}",
                r.index, r.task_hash
            )));
        }
        if by_index.insert(r.index, r).is_some() {
            return Err(Error::Invalid(format!("task {} recorded twice", r.index)));
        }
    }
    let mut tasks = Vec::with_capacity(ctx.costs.len());
    let mut costs: BTreeMap<Address, Vec<u64>> = BTreeMap::new();
    let mut slashes: BTreeMap<Address, SlashEntry> = BTreeMap::new();
    let mut accepted = 0usize;
    for (i, (&cost, &task_hash)) in ctx.costs.iter().zip(&ctx.task_hashes).enumerate() {
        let index = u32::try_from(i).map_err(|_| Error::Invalid("too many tasks".into()))?;
        let Some(rec) = by_index.get(&index) else {
            tasks.push(TaskOutcome {
                index,
                task_hash,
                cost,
                accepted_result: None,
                replicas: Vec::new(),
            });
            continue;
        };
        if rec.accepted_result.is_some() {
            accepted += 1;
            for r in rec.replicas.iter().filter(|r| r.in_quorum) {
                costs.entry(r.worker).or_default().push(cost);
            }
            for &k in &rec.contradictions {
                let r = rec
                    .replicas
                    .get(k)
                    .ok_or_else(|| Error::Invalid(format!("task {index}: no replica {k}")))?;
                if !slash_amount.is_zero() && !slashes.contains_key(&r.worker) {
                    slashes.insert(
                        r.worker,
                        SlashEntry {
                            worker: r.worker,
                            task_index: index,
                            result_hash: r.result_hash,
                            amount: slash_amount,
                        },
                    );
                }
            }
        }
        tasks.push(TaskOutcome {
            index,
            task_hash,
            cost,
            accepted_result: rec.accepted_result,
            replicas: rec.replicas.clone(),
        });
    }
    let mut workers = Vec::with_capacity(costs.len());
    let mut total = 0u128;
    for (worker, c) in costs {
        let bps = confidence(worker).map_or(0, |p| p.clamp(1, formulas::FULL_CONFIDENCE));
        let units = formulas::contribution(&c, bps)?;
        total = total
            .checked_add(units)
            .ok_or(gleaner_protocol::Error::Overflow)?;
        workers.push(WorkerEntry {
            worker,
            confidence_bps: bps,
            units: U256::from(units),
        });
    }
    if accepted > 0 && total == 0 {
        return Err(Error::Invalid(
            "no worker of an accepted quorum is still bonded: nobody can be paid".into(),
        ));
    }
    Ok(SettlementReport {
        version: REPORT_VERSION,
        chain_id: ctx.chain_id,
        market: ctx.market,
        job_id: ctx.job_id,
        spec_hash: ctx.spec_hash,
        tasks_root: ctx.tasks_root,
        tasks,
        workers,
        slashes: slashes.into_values().collect(),
        spot_checks: ctx.spot_checks,
    })
}

/// The `evidenceHash` of a slash: `keccak256(abi.encode(reportHash, worker, uint32 taskIndex,
/// resultHash))` with `reportHash` the report's keccak256.
pub fn evidence_hash(report_hash: B256, slash: &SlashEntry) -> B256 {
    slash.evidence_hash(report_hash)
}

/// The report blob (its canonical bytes) and the blob's sha256 address. The on-chain
/// `reportHash` is `report.hash()`, keccak256 of the same bytes.
pub fn report_blob(report: &SettlementReport) -> (Vec<u8>, B256) {
    let bytes = report.canonical();
    let hash = blob_hash(&bytes);
    (bytes, hash)
}

/// The contract calls a report implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementPlan {
    /// Tasks accepted.
    pub accepted_tasks: u32,
    /// Paid workers, strictly ascending.
    pub workers: Vec<Address>,
    /// Their units, each > 0.
    pub units: Vec<U256>,
    /// Σ units.
    pub total_units: U256,
    /// keccak256 of the report.
    pub report_hash: B256,
    /// A job with spot checks: the replicas paid for and the secret to reveal.
    pub spot: Option<(u64, B256)>,
}

impl SettlementPlan {
    /// The plan of `report`, recomputed with the auditor's own formula and checked against the
    /// report's worker lines.
    pub fn of(report: &SettlementReport) -> Result<Self> {
        let r = report.recompute()?;
        for (w, u) in &r.units {
            let line = report.workers.iter().find(|e| e.worker == *w);
            if line.map(|e| e.units) != Some(*u) {
                return Err(Error::Invalid(format!(
                    "report lists other units for {w} than the formula gives"
                )));
            }
        }
        if !report.workers.windows(2).all(|p| p[0].worker < p[1].worker) {
            return Err(Error::Invalid(
                "report workers are not strictly ascending".into(),
            ));
        }
        let total_units = r
            .units
            .iter()
            .map(|(_, u)| *u)
            .fold(U256::ZERO, |a, b| a + b);
        let drawn = report.unchecked_draws();
        if let Some(first) = drawn.first() {
            return Err(Error::Invalid(format!(
                "{} task(s) drawn for a spot check were accepted on one replica, first {first}",
                drawn.len()
            )));
        }
        let spot = match (report.spot_checks, r.paid_replicas) {
            (Some(s), Some(paid)) => Some((paid, s.seed.secret)),
            _ => None,
        };
        let (workers, units) = r.units.into_iter().unzip();
        Ok(Self {
            accepted_tasks: r.accepted_tasks,
            workers,
            units,
            total_units,
            report_hash: report.hash(),
            spot,
        })
    }

    /// Whether one `settle` call can carry it.
    pub fn fits_one_call(&self) -> bool {
        self.workers.len() <= MAX_SETTLEMENT_CHUNK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::tests::embed;
    use crate::decide::tests::{embedding, replica, valid, w};
    use crate::decide::{Policy, decide};
    use gleaner_kinds::Checked;

    fn ctx(n: usize) -> JobContext {
        JobContext {
            chain_id: 31337,
            market: w(0xaa),
            job_id: U256::from(7),
            spec_hash: B256::repeat_byte(0x51),
            tasks_root: B256::repeat_byte(0x52),
            costs: (0..n as u64).map(|i| 10 * (i + 1)).collect(),
            task_hashes: (0..n as u8).map(|i| B256::repeat_byte(0x60 + i)).collect(),
            spot_checks: None,
        }
    }

    fn decided(index: u32, reps: &[Replica], redundancy: u16) -> TaskRecord {
        let v = decide(reps, &Policy::new(redundancy), &embed());
        let result = matches!(v, Verdict::Accept { .. }).then(|| B256::repeat_byte(0xee));
        TaskRecord::new(
            index,
            B256::repeat_byte(0x60 + index as u8),
            reps,
            &v,
            result,
        )
        .unwrap()
    }

    fn ok(n: u8) -> Replica {
        replica(n, 9_000, valid(embedding(1, 0, 0.0)))
    }

    fn liar(n: u8) -> Replica {
        replica(n, 9_000, valid(embedding(1, 9, 0.0)))
    }

    #[test]
    fn corrupted_replica_is_not_paid_and_is_slashed() {
        // Task 0: 3 honest + 1 corrupted. Task 1: worker 4 honest this time. Task 2 failed.
        let t0 = decided(0, &[ok(1), ok(2), liar(4), ok(3)], 3);
        assert_eq!(t0.contradictions, vec![2]);
        assert!(!t0.replicas[2].in_quorum);
        let t1 = decided(1, &[ok(4), ok(2)], 2);
        let t2 = TaskRecord::new(
            2,
            B256::repeat_byte(0x62),
            &[ok(1), replica(6, 9_000, Checked::Malformed("junk".into()))],
            &Verdict::Fail,
            None,
        )
        .unwrap();
        let conf = |a: Address| Some(if a == w(2) { 10_000 } else { 9_000 });
        let r = build_report(&ctx(3), &[t1, t0, t2], conf, U256::from(5)).unwrap();
        assert_eq!(r.tasks.len(), 3);
        assert_eq!(r.tasks[2].accepted_result, None);
        let lines: Vec<(Address, u16, U256)> = r
            .workers
            .iter()
            .map(|e| (e.worker, e.confidence_bps, e.units))
            .collect();
        assert_eq!(
            lines,
            vec![
                (w(1), 9_000, U256::from(10 * 9_000)),
                (w(2), 10_000, U256::from(30 * 10_000)),
                (w(3), 9_000, U256::from(10 * 9_000)),
                (w(4), 9_000, U256::from(20 * 9_000)),
            ]
        );
        // The liar is slashed for task 0 and still paid for task 1; the failed task's garbage
        // is not slashable (no quorum to contradict).
        assert_eq!(
            r.slashes,
            vec![SlashEntry {
                worker: w(4),
                task_index: 0,
                result_hash: B256::repeat_byte(4),
                amount: U256::from(5),
            }]
        );
        let plan = SettlementPlan::of(&r).unwrap();
        assert_eq!(plan.accepted_tasks, 2);
        assert_eq!(plan.workers, vec![w(1), w(2), w(3), w(4)]);
        assert_eq!(
            plan.total_units,
            U256::from(90_000 + 300_000 + 90_000 + 180_000)
        );
        assert_eq!(plan.report_hash, r.hash());
        assert!(plan.fits_one_call());
        // Round trip through the canonical bytes; two hashes of one blob.
        let (bytes, sha) = report_blob(&r);
        assert_eq!(SettlementReport::from_canonical(&bytes).unwrap(), r);
        assert_eq!(sha, blob_hash(&bytes));
        assert_eq!(r.hash(), alloy::primitives::keccak256(&bytes));
    }

    #[test]
    fn unbonded_and_zero_confidence_workers() {
        let t0 = decided(0, &[ok(1), ok(2)], 2);
        // Worker 1 left the registry: confidence 0, no units; worker 2 at P = 0 still gets 1 bps.
        let conf = |a: Address| if a == w(1) { None } else { Some(0) };
        let r = build_report(&ctx(1), std::slice::from_ref(&t0), conf, U256::ZERO).unwrap();
        assert_eq!(r.workers[0].units, U256::ZERO);
        assert_eq!(r.workers[1].confidence_bps, 1);
        let plan = SettlementPlan::of(&r).unwrap();
        assert_eq!(plan.workers, vec![w(2)]);
        assert!(r.slashes.is_empty());
        // Nobody bonded: refuse rather than send a settlement the contract rejects.
        assert!(build_report(&ctx(1), &[t0], |_| None, U256::ZERO).is_err());
    }

    #[test]
    fn nothing_accepted_refunds_everything() {
        let r = build_report(&ctx(2), &[], |_| Some(9_000), U256::from(1)).unwrap();
        let plan = SettlementPlan::of(&r).unwrap();
        assert_eq!(plan.accepted_tasks, 0);
        assert!(plan.workers.is_empty());
        assert_eq!(plan.total_units, U256::ZERO);
    }

    #[test]
    fn bad_records_are_refused() {
        let mut t = decided(0, &[ok(1), ok(2)], 2);
        t.task_hash = B256::ZERO;
        assert!(build_report(&ctx(1), &[t], |_| Some(1), U256::ZERO).is_err());
        let t = decided(3, &[ok(1), ok(2)], 2);
        assert!(build_report(&ctx(1), &[t], |_| Some(1), U256::ZERO).is_err());
        let t = decided(0, &[ok(1), ok(2)], 2);
        assert!(build_report(&ctx(1), &[t.clone(), t], |_| Some(1), U256::ZERO).is_err());
        let reps = [ok(1)];
        assert!(TaskRecord::new(0, B256::ZERO, &reps, &Verdict::More { extra: 1 }, None).is_err());
        assert!(TaskRecord::new(0, B256::ZERO, &reps, &Verdict::Fail, Some(B256::ZERO)).is_err());
    }

    #[test]
    fn evidence_binds_report_worker_task_and_result() {
        let s = SlashEntry {
            worker: w(4),
            task_index: 3,
            result_hash: B256::repeat_byte(9),
            amount: U256::from(1),
        };
        let base = evidence_hash(B256::repeat_byte(1), &s);
        assert_ne!(base, evidence_hash(B256::repeat_byte(2), &s));
        for v in [
            SlashEntry {
                worker: w(5),
                ..s.clone()
            },
            SlashEntry {
                task_index: 4,
                ..s.clone()
            },
            SlashEntry {
                result_hash: B256::ZERO,
                ..s.clone()
            },
        ] {
            assert_ne!(base, evidence_hash(B256::repeat_byte(1), &v));
        }
        // The amount is not evidence: the registry may take less than asked.
        let cheaper = SlashEntry {
            amount: U256::from(2),
            ..s.clone()
        };
        assert_eq!(base, evidence_hash(B256::repeat_byte(1), &cheaper));
    }
}
