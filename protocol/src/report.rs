//! The settlement report: everything an auditor needs to recompute a job's payouts.
//!
//! The verifier publishes it as a blob; `keccak256(canonical JSON)` goes on-chain as `reportHash`.
//! From it and the chain events, [`SettlementReport::recompute`] rebuilds every worker's units
//! and payout with the seed's formulas.

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use serde::{Deserialize, Serialize};

use crate::formulas::{self, ConfidenceBps};
use crate::replication::{self, SpotChecks, SpotSeed};
use crate::{Error, Result};

/// Report format version.
pub const REPORT_VERSION: u32 = 1;

/// One replica of a task as the verifier saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaEntry {
    /// The worker.
    pub worker: Address,
    /// sha256 of its output blob.
    pub result_hash: B256,
    /// Its result signature: an EIP-712 `TaskResult` signature, or a batch member's (see
    /// [`crate::eip712::ResultSignature`]).
    pub signature: Bytes,
    /// Whether its output is in the accepted cluster.
    pub in_quorum: bool,
}

/// The verdict on one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutcome {
    /// Task index.
    pub index: u32,
    /// Task hash (leaf input of the on-chain root).
    pub task_hash: B256,
    /// Work units of the task (`cost_t`).
    pub cost: u64,
    /// sha256 of the accepted (aggregated) output, if the task was accepted.
    pub accepted_result: Option<B256>,
    /// Every replica considered.
    pub replicas: Vec<ReplicaEntry>,
}

/// A worker's line in the settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerEntry {
    /// The worker.
    pub worker: Address,
    /// Its confidence P_i in basis points when the job was settled.
    pub confidence_bps: ConfidenceBps,
    /// Units = Σ cost of its in-quorum replicas × confidence_bps.
    pub units: U256,
}

/// A slash with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlashEntry {
    /// The slashed worker.
    pub worker: Address,
    /// The task whose accepted quorum its signed result contradicts.
    pub task_index: u32,
    /// The contradicting result hash it signed.
    pub result_hash: B256,
    /// Tokens slashed.
    pub amount: U256,
}

impl SlashEntry {
    /// The slash's on-chain `evidenceHash`: `keccak256(abi.encode(reportHash, worker, uint32
    /// taskIndex, resultHash))`, with `report_hash` the report's keccak256. The verifier posts
    /// it; the explorer and auditors recompute it.
    pub fn evidence_hash(&self, report_hash: B256) -> B256 {
        use alloy::sol_types::SolValue;
        alloy::primitives::keccak256(
            (report_hash, self.worker, self.task_index, self.result_hash).abi_encode(),
        )
    }
}

/// The published settlement report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementReport {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// Chain id.
    pub chain_id: u64,
    /// JobMarket address.
    pub market: Address,
    /// On-chain job id.
    pub job_id: U256,
    /// The job's spec hash.
    pub spec_hash: B256,
    /// The posted task root.
    pub tasks_root: B256,
    /// Tasks, in index order.
    pub tasks: Vec<TaskOutcome>,
    /// Paid workers, in strictly ascending address order (the contract's order).
    pub workers: Vec<WorkerEntry>,
    /// Slashes.
    pub slashes: Vec<SlashEntry>,
    /// A job with spot checks: its policy and revealed randomness (absent, and absent from the
    /// canonical JSON, for full replication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_checks: Option<SpotCheckReport>,
}

/// What an auditor needs to recompute a job's spot checks and the replicas its escrow paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpotCheckReport {
    /// The manifest's policy.
    pub policy: SpotChecks,
    /// Replicas per task the job escrowed (its on-chain redundancy).
    pub redundancy: u16,
    /// The revealed secret and the beacon block hash.
    pub seed: SpotSeed,
}

/// What the formulas say a settlement must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recomputed {
    /// Accepted task count.
    pub accepted_tasks: u32,
    /// Workers (ascending) and their units.
    pub units: Vec<(Address, U256)>,
    /// A job with spot checks: the replicas its accepted tasks paid for, each task's quorum
    /// members up to the redundancy ([`replication::paid_replicas`]).
    pub paid_replicas: Option<u64>,
}

impl SettlementReport {
    /// Canonical bytes: compact JSON in declared field order.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("report serialises")
    }

    /// `reportHash`.
    pub fn hash(&self) -> B256 {
        keccak256(self.canonical())
    }

    /// Parses canonical bytes and refuses anything else.
    pub fn from_canonical(bytes: &[u8]) -> Result<Self> {
        let r: Self = serde_json::from_slice(bytes)
            .map_err(|e| Error::Invalid(format!("report is not valid JSON of the schema: {e}")))?;
        if r.canonical() != bytes {
            return Err(Error::Invalid("report is not in canonical form".into()));
        }
        Ok(r)
    }

    /// Recomputes accepted tasks and every worker's units from the task outcomes and the
    /// workers' confidences, as the seed's contribution formula defines them.
    pub fn recompute(&self) -> Result<Recomputed> {
        let mut costs: std::collections::BTreeMap<Address, Vec<u64>> = Default::default();
        let mut accepted = 0u32;
        let mut paid = 0u64;
        for t in &self.tasks {
            if t.accepted_result.is_some() {
                accepted = accepted.checked_add(1).ok_or(Error::Overflow)?;
                if let Some(spot) = &self.spot_checks {
                    let members = t.replicas.iter().filter(|r| r.in_quorum).count();
                    paid = paid
                        .checked_add(u64::from(replication::paid_replicas(
                            members,
                            spot.redundancy,
                        )))
                        .ok_or(Error::Overflow)?;
                }
                for r in t.replicas.iter().filter(|r| r.in_quorum) {
                    costs.entry(r.worker).or_default().push(t.cost);
                }
            } else if t.replicas.iter().any(|r| r.in_quorum) {
                return Err(Error::Invalid(format!(
                    "task {} has a quorum but no result",
                    t.index
                )));
            }
        }
        let mut units = Vec::with_capacity(costs.len());
        for (worker, c) in costs {
            let bps = self
                .workers
                .iter()
                .find(|w| w.worker == worker)
                .map(|w| w.confidence_bps)
                .ok_or_else(|| {
                    Error::Invalid(format!("worker {worker} has no confidence entry"))
                })?;
            let u = formulas::contribution(&c, bps)?;
            if u > 0 {
                units.push((worker, U256::from(u)));
            }
        }
        Ok(Recomputed {
            accepted_tasks: accepted,
            units,
            paid_replicas: self.spot_checks.map(|_| paid),
        })
    }

    /// Tasks that the spot-check selection drew for a check but that were accepted on one
    /// replica: the selection was not followed (empty for full replication).
    pub fn unchecked_draws(&self) -> Vec<u32> {
        let Some(spot) = &self.spot_checks else {
            return Vec::new();
        };
        self.tasks
            .iter()
            .filter(|t| {
                t.accepted_result.is_some()
                    && t.replicas.iter().filter(|r| r.in_quorum).count() < 2
                    && spot.seed.is_checked(t.task_hash, spot.policy.check_ppm)
            })
            .map(|t| t.index)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(n: u8) -> Address {
        Address::repeat_byte(n)
    }

    fn report() -> SettlementReport {
        let rep = |n: u8, q: bool| ReplicaEntry {
            worker: w(n),
            result_hash: B256::repeat_byte(if q { 1 } else { 9 }),
            signature: Bytes::from(vec![n; 65]),
            in_quorum: q,
        };
        SettlementReport {
            version: REPORT_VERSION,
            chain_id: 31337,
            market: w(0xaa),
            job_id: U256::from(1),
            spec_hash: B256::repeat_byte(2),
            tasks_root: B256::repeat_byte(3),
            tasks: vec![
                TaskOutcome {
                    index: 0,
                    task_hash: B256::repeat_byte(4),
                    cost: 10,
                    accepted_result: Some(B256::repeat_byte(1)),
                    replicas: vec![rep(1, true), rep(2, true), rep(3, false)],
                },
                TaskOutcome {
                    index: 1,
                    task_hash: B256::repeat_byte(5),
                    cost: 30,
                    accepted_result: Some(B256::repeat_byte(1)),
                    replicas: vec![rep(1, true), rep(3, false)],
                },
                TaskOutcome {
                    index: 2,
                    task_hash: B256::repeat_byte(6),
                    cost: 5,
                    accepted_result: None,
                    replicas: vec![rep(3, false)],
                },
            ],
            workers: vec![
                WorkerEntry {
                    worker: w(1),
                    confidence_bps: 10_000,
                    units: U256::from(400_000),
                },
                WorkerEntry {
                    worker: w(2),
                    confidence_bps: 5_000,
                    units: U256::from(50_000),
                },
                WorkerEntry {
                    worker: w(3),
                    confidence_bps: 10_000,
                    units: U256::ZERO,
                },
            ],
            slashes: vec![],
            spot_checks: None,
        }
    }

    #[test]
    fn recompute_follows_the_contribution_formula() {
        let r = report().recompute().unwrap();
        assert_eq!(r.accepted_tasks, 2);
        assert_eq!(
            r.units,
            vec![
                (w(1), U256::from(40u64 * 10_000)),
                (w(2), U256::from(10u64 * 5_000))
            ]
        );
    }

    #[test]
    fn canonical_round_trip_and_hash() {
        let r = report();
        let bytes = r.canonical();
        assert_eq!(SettlementReport::from_canonical(&bytes).unwrap(), r);
        assert_eq!(r.hash(), keccak256(&bytes));
        let mut spaced = String::from_utf8(bytes).unwrap();
        spaced.insert(1, ' ');
        assert!(SettlementReport::from_canonical(spaced.as_bytes()).is_err());
    }

    #[test]
    fn spot_checked_reports_count_paid_replicas_and_unchecked_draws() {
        let mut r = report();
        assert_eq!(r.recompute().unwrap().paid_replicas, None);
        assert!(r.unchecked_draws().is_empty());
        // Task 1 was accepted on one replica (worker 1): fine unless it was drawn.
        let spot = |check_ppm| SpotCheckReport {
            policy: SpotChecks {
                check_ppm,
                trust_after: 5,
            },
            redundancy: 2,
            seed: SpotSeed {
                secret: B256::repeat_byte(7),
                beacon: B256::repeat_byte(8),
            },
        };
        r.spot_checks = Some(spot(1));
        // 2 (task 0: three replicas, two in quorum, at most r = 2) + 1 (task 1).
        assert_eq!(r.recompute().unwrap().paid_replicas, Some(3));
        assert!(r.unchecked_draws().is_empty());
        r.spot_checks = Some(spot(replication::PPM));
        assert_eq!(r.unchecked_draws(), vec![1]);
        // The section survives the canonical round trip; without it the bytes are as before.
        let bytes = r.canonical();
        assert_eq!(SettlementReport::from_canonical(&bytes).unwrap(), r);
        assert!(
            !report()
                .canonical()
                .windows(11)
                .any(|w| w == b"spot_checks")
        );
    }

    #[test]
    fn quorum_without_result_is_invalid() {
        let mut r = report();
        r.tasks[0].accepted_result = None;
        assert!(r.recompute().is_err());
    }
}
