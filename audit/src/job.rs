//! [`audit_job`]: one job's settlement, rebuilt and compared.

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::Provider;
use gleaner_client::Client;
use gleaner_protocol::bindings::JobMarket;
use gleaner_protocol::eip712;
use gleaner_protocol::formulas;
use gleaner_protocol::merkle::MerkleTree;
use gleaner_protocol::replication;
use gleaner_protocol::report::SettlementReport;

use crate::events::{JobEvents, job_events};
use crate::{Difference, Error, Result, chain};

/// What auditing a job found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// The job.
    pub job_id: U256,
    /// Every difference; empty means the settlement holds.
    pub differences: Vec<Difference>,
    /// Each paid worker, from the chain.
    pub workers: Vec<WorkerLine>,
    /// `JobSettled.pool`.
    pub pool: U256,
    /// `JobSettled.fee`.
    pub fee: U256,
    /// `JobSettled.refund`.
    pub refund: U256,
    /// Workers slashed for the job.
    pub slashed: Vec<Address>,
    /// Tasks in the job.
    pub task_count: u32,
    /// Tasks accepted.
    pub accepted_tasks: u32,
    /// The job's on-chain status code (`JobMarket.getJob().status`).
    pub status: u8,
    /// Gas used by the job's transactions (createJob, postTasks, every settlement transaction,
    /// slashes), summed from their receipts: base cost and calldata included.
    pub gas_used: u64,
    /// How many transactions that is.
    pub transactions: usize,
    /// A job with spot checks: the replicas its settlement paid for (`ChecksRevealed`), out of
    /// `task_count × redundancy` escrowed; `None` for full replication.
    pub paid_replicas: Option<u64>,
}

impl AuditReport {
    /// [`AuditReport::gas_used`] per task, rounded up (0 for a job without tasks).
    pub fn gas_per_task(&self) -> u64 {
        self.gas_used
            .checked_div(u64::from(self.task_count))
            .map_or(0, |q| {
                q + u64::from(!self.gas_used.is_multiple_of(u64::from(self.task_count)))
            })
    }

    /// Whether the settlement holds.
    pub fn ok(&self) -> bool {
        self.differences.is_empty()
    }
}

/// A paid worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLine {
    /// The worker.
    pub worker: Address,
    /// Accepted tasks it was in the quorum of.
    pub tasks: usize,
    /// `WorkerPaid.units`.
    pub units: U256,
    /// `WorkerPaid.amount`.
    pub payout: U256,
}

/// Audits job `job_id` of the market at `market`: events from block `from` on, the report from
/// the coordinator `client`.
pub async fn audit_job(
    p: &impl Provider,
    market: Address,
    client: &Client,
    job_id: U256,
    from: u64,
) -> Result<AuditReport> {
    let m = JobMarket::new(market, p);
    let registry = m
        .registry()
        .call()
        .await
        .map_err(chain("registry address"))?;
    let chain_id = p
        .get_chain_id()
        .await
        .map_err(|e| Error::Chain(format!("chain id: {e}")))?;
    let status = m
        .getJob(job_id)
        .call()
        .await
        .map_err(chain("getJob"))?
        .status;
    let ev = job_events(p, market, registry, job_id, from).await?;
    let Some(settled) = &ev.settled else {
        return Err(Error::NotAuditable(format!(
            "job {job_id} is not settled (no JobSettled event)"
        )));
    };
    // The report: fetched by its sha256 (the client checks it), bound to the chain by keccak256.
    let sha = client
        .job_results(job_id)
        .await?
        .report_hash
        .ok_or(Error::ReportPending(job_id))?;
    let bytes = client.blob(sha).await?;
    let mut differences = Vec::new();
    if keccak256(&bytes) != settled.reportHash {
        differences.push(Difference::ReportHash {
            report: keccak256(&bytes),
            on_chain: settled.reportHash,
        });
    }
    let created = ev
        .created
        .as_ref()
        .ok_or_else(|| Error::NotAuditable(format!("no JobCreated event for job {job_id}")))?;
    let workers = match SettlementReport::from_canonical(&bytes) {
        Ok(report) => {
            compare(job_id, (chain_id, market), &ev, &report, &mut differences)?;
            worker_lines(&ev, &report)
        }
        Err(e) => {
            differences.push(Difference::UnreadableReport {
                reason: e.to_string(),
            });
            ev.paid
                .iter()
                .map(|p| WorkerLine {
                    worker: p.worker,
                    tasks: 0,
                    units: p.units,
                    payout: p.amount,
                })
                .collect()
        }
    };
    let mut gas_used = 0u64;
    for tx in &ev.txs {
        let receipt = p
            .get_transaction_receipt(*tx)
            .await
            .map_err(|e| Error::Chain(format!("receipt of {tx}: {e}")))?
            .ok_or_else(|| Error::Chain(format!("no receipt for {tx}")))?;
        gas_used = gas_used.saturating_add(receipt.gas_used);
    }
    Ok(AuditReport {
        paid_replicas: ev.revealed.as_ref().map(|r| r.paidReplicas),
        gas_used,
        transactions: ev.txs.len(),
        job_id,
        workers,
        pool: settled.pool,
        fee: settled.fee,
        refund: settled.refund,
        slashed: ev.slashed.iter().map(|s| s.worker).collect(),
        task_count: created.taskCount,
        accepted_tasks: settled.acceptedTasks,
        status,
        differences,
    })
}

/// An on-chain amount as the formulas' u128, or the difference that says it is out of range.
fn small(what: &'static str, value: U256, diffs: &mut Vec<Difference>) -> Option<u128> {
    let v = u128::try_from(value).ok();
    if v.is_none() {
        diffs.push(Difference::OutOfRange { what, value });
    }
    v
}

/// Compares the report with the job's events and the formulas; pure.
pub(crate) fn compare(
    job_id: U256,
    (chain_id, market): (u64, Address),
    ev: &JobEvents,
    report: &SettlementReport,
    diffs: &mut Vec<Difference>,
) -> Result<()> {
    let (Some(created), Some(settled)) = (&ev.created, &ev.settled) else {
        return Err(Error::NotAuditable(format!(
            "no JobCreated or JobSettled event for job {job_id}"
        )));
    };
    let posted = ev
        .posted
        .as_ref()
        .ok_or_else(|| Error::NotAuditable(format!("no TasksPosted event for job {job_id}")))?;
    let mut check = |ok: bool, d: Difference| {
        if !ok {
            diffs.push(d);
        }
    };
    check(
        report.job_id == job_id,
        Difference::ReportJob {
            report: report.job_id,
        },
    );
    check(
        report.chain_id == chain_id && report.market == market,
        Difference::ReportDeployment,
    );
    check(
        report.spec_hash == created.specHash,
        Difference::SpecHash {
            report: report.spec_hash,
            on_chain: created.specHash,
        },
    );
    check(
        report.tasks_root == posted.tasksRoot,
        Difference::TasksRoot {
            report: report.tasks_root,
            on_chain: posted.tasksRoot,
        },
    );
    let hashes: Vec<B256> = report.tasks.iter().map(|t| t.task_hash).collect();
    let root = MerkleTree::from_task_hashes(&hashes).root();
    check(
        root == posted.tasksRoot,
        Difference::MerkleRoot {
            computed: root,
            on_chain: posted.tasksRoot,
        },
    );
    check(
        report.tasks.len() == created.taskCount as usize,
        Difference::TaskCount {
            report: report.tasks.len() as u64,
            on_chain: u64::from(created.taskCount),
        },
    );

    // Every replica signature.
    let domain = eip712::domain(chain_id, market);
    for t in &report.tasks {
        for r in &t.replicas {
            // A `TaskResult` signature, or a batch member's (`TaskResults` and a proof).
            let ok =
                eip712::verify_result(&domain, t.task_hash, r.result_hash, r.worker, &r.signature)
                    .is_ok();
            check(
                ok,
                Difference::BadSignature {
                    task: t.index,
                    worker: r.worker,
                },
            );
        }
    }

    // Units from the contribution formula; payouts from the payout formula.
    let re = match report.recompute() {
        Ok(re) => re,
        Err(e) => {
            diffs.push(Difference::Unrecomputable {
                reason: e.to_string(),
            });
            return Ok(());
        }
    };
    check(
        re.accepted_tasks == settled.acceptedTasks,
        Difference::AcceptedTasks {
            computed: u64::from(re.accepted_tasks),
            on_chain: u64::from(settled.acceptedTasks),
        },
    );
    let total = re
        .units
        .iter()
        .try_fold(U256::ZERO, |sum, (_, u)| sum.checked_add(*u))
        .ok_or(gleaner_protocol::Error::Overflow)?;
    check(
        total == settled.totalUnits,
        Difference::TotalUnits {
            computed: total,
            on_chain: settled.totalUnits,
        },
    );
    spot_checks(ev, report, re.paid_replicas, diffs);
    if let Some(budget) = small("budget", created.budget, diffs) {
        let pool = match (&ev.revealed, report.spot_checks) {
            // The replicas paid for, recomputed from the report (a mismatch with the revealed
            // count is its own difference).
            (Some(_), Some(_)) => replication::replica_pool(
                budget,
                re.paid_replicas.unwrap_or_default(),
                u64::from(created.taskCount),
                created.redundancy,
            ),
            _ => formulas::pool(
                budget,
                u64::from(settled.acceptedTasks),
                u64::from(created.taskCount),
            ),
        };
        match pool {
            Ok(pool) if U256::from(pool) == settled.pool => {}
            Ok(pool) => diffs.push(Difference::Pool {
                computed: U256::from(pool),
                on_chain: settled.pool,
            }),
            Err(e) => diffs.push(Difference::Unrecomputable {
                reason: format!("pool: {e}"),
            }),
        }
    }
    let distributable = settled.pool.saturating_sub(settled.fee);
    let mut paid_sum = U256::ZERO;
    for (w, units) in &re.units {
        let Some(p) = ev.paid.iter().find(|p| p.worker == *w) else {
            diffs.push(Difference::Unpaid {
                worker: *w,
                units: *units,
            });
            continue;
        };
        if p.units != *units {
            diffs.push(Difference::Units {
                worker: *w,
                computed: *units,
                on_chain: p.units,
            });
        }
        let amounts = (
            small("distributable pool", distributable, diffs),
            small("units", *units, diffs),
            small("total units", total, diffs),
        );
        if let (Some(d), Some(u), Some(t)) = amounts {
            match formulas::mul_div(d, u, t.max(1)) {
                Ok(want) if U256::from(want) == p.amount => {}
                Ok(want) => diffs.push(Difference::Payout {
                    worker: *w,
                    computed: U256::from(want),
                    on_chain: p.amount,
                }),
                Err(e) => diffs.push(Difference::Unrecomputable {
                    reason: format!("payout of {w}: {e}"),
                }),
            }
        }
        paid_sum = paid_sum.saturating_add(p.amount);
    }
    for p in &ev.paid {
        if !re.units.iter().any(|(w, _)| *w == p.worker) {
            diffs.push(Difference::PaidWithoutUnits { worker: p.worker });
        }
    }
    let spent = paid_sum
        .checked_add(settled.fee)
        .and_then(|s| s.checked_add(settled.refund));
    if spent != Some(created.budget) {
        diffs.push(Difference::Balance {
            paid: paid_sum,
            fee: settled.fee,
            refund: settled.refund,
            budget: created.budget,
        });
    }
    for s in &ev.slashed {
        if !report.slashes.iter().any(|e| e.worker == s.worker) {
            diffs.push(Difference::UnreportedSlash { worker: s.worker });
        }
    }
    Ok(())
}

/// A job with spot checks: the report's seed against the chain's commitment, beacon and reveal,
/// the selection followed, the replicas paid for.
fn spot_checks(
    ev: &JobEvents,
    report: &SettlementReport,
    paid_replicas: Option<u64>,
    diffs: &mut Vec<Difference>,
) {
    let mut bad = |reason: String| diffs.push(Difference::SpotCheckSeed { reason });
    let (spot, (committed, beacon)) = match (report.spot_checks, &ev.committed) {
        (None, None) => return,
        (Some(_), None) => {
            return bad("the report has spot checks, the chain no ChecksCommitted event".into());
        }
        (None, Some(_)) => {
            return bad("the chain committed to spot checks, the report has none".into());
        }
        (Some(s), Some(c)) => (s, c),
    };
    if replication::commitment(spot.seed.secret) != committed.commitment {
        bad(format!(
            "the report's secret does not hash to the commitment {}",
            committed.commitment
        ));
    }
    if *beacon != Some(spot.seed.beacon) {
        bad(format!(
            "the report's beacon {} is not the commitment's block {}",
            spot.seed.beacon,
            beacon.map_or("(unknown)".into(), |b| b.to_string())
        ));
    }
    if let Some(created) = &ev.created
        && created.redundancy != spot.redundancy
    {
        bad(format!(
            "the report's redundancy {} is not the job's {}",
            spot.redundancy, created.redundancy
        ));
    }
    match &ev.revealed {
        None => bad("the settlement revealed no secret (no ChecksRevealed event)".into()),
        Some(r) => {
            if r.secret != spot.seed.secret {
                bad(format!(
                    "the revealed secret {} is not the report's",
                    r.secret
                ));
            }
            let computed = paid_replicas.unwrap_or_default();
            if computed != r.paidReplicas {
                diffs.push(Difference::PaidReplicas {
                    computed,
                    on_chain: r.paidReplicas,
                });
            }
        }
    }
    let drawn = report.unchecked_draws();
    if !drawn.is_empty() {
        diffs.push(Difference::UncheckedDraws { tasks: drawn });
    }
}

/// Each paid worker with the accepted tasks it was in the quorum of.
fn worker_lines(ev: &JobEvents, report: &SettlementReport) -> Vec<WorkerLine> {
    ev.paid
        .iter()
        .map(|p| WorkerLine {
            worker: p.worker,
            tasks: report
                .tasks
                .iter()
                .filter(|t| t.accepted_result.is_some())
                .filter(|t| {
                    t.replicas
                        .iter()
                        .any(|r| r.in_quorum && r.worker == p.worker)
                })
                .count(),
            units: p.units,
            payout: p.amount,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use alloy::primitives::Bytes;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;
    use gleaner_protocol::bindings::WorkerRegistry;
    use gleaner_protocol::eip712::TaskResult;
    use gleaner_protocol::replication::{SpotChecks, SpotSeed};
    use gleaner_protocol::report::{
        REPORT_VERSION, ReplicaEntry, SlashEntry, SpotCheckReport, TaskOutcome, WorkerEntry,
    };

    use super::*;

    const CHAIN: u64 = 31337;

    fn market() -> Address {
        Address::repeat_byte(0xaa)
    }

    /// One task of cost 10 computed by `worker` at full confidence, settled as the formulas say:
    /// budget 1,000 base units, no fee, 100,000 units, everything paid to the worker.
    fn settled(worker: &PrivateKeySigner) -> (JobEvents, SettlementReport) {
        let job = U256::from(7);
        let task_hash = B256::repeat_byte(4);
        let result_hash = B256::repeat_byte(5);
        let msg = TaskResult {
            taskHash: task_hash,
            resultHash: result_hash,
            worker: worker.address(),
        };
        let sig = worker
            .sign_hash_sync(&eip712::digest(&msg, &eip712::domain(CHAIN, market())))
            .unwrap();
        let root = MerkleTree::from_task_hashes(&[task_hash]).root();
        let report = SettlementReport {
            version: REPORT_VERSION,
            chain_id: CHAIN,
            market: market(),
            job_id: job,
            spec_hash: B256::repeat_byte(2),
            tasks_root: root,
            tasks: vec![TaskOutcome {
                index: 0,
                task_hash,
                cost: 10,
                accepted_result: Some(result_hash),
                replicas: vec![ReplicaEntry {
                    worker: worker.address(),
                    result_hash,
                    signature: Bytes::from(sig.as_bytes().to_vec()),
                    in_quorum: true,
                }],
            }],
            workers: vec![WorkerEntry {
                worker: worker.address(),
                confidence_bps: 10_000,
                units: U256::from(100_000),
            }],
            slashes: Vec::new(),
            spot_checks: None,
        };
        let events = JobEvents {
            created: Some(JobMarket::JobCreated {
                jobId: job,
                requester: Address::repeat_byte(1),
                specHash: report.spec_hash,
                taskCount: 1,
                redundancy: 1,
                budget: U256::from(1_000),
                deadline: 0,
                feeBps: 0,
            }),
            posted: Some(JobMarket::TasksPosted {
                jobId: job,
                tasksRoot: root,
                count: 1,
            }),
            settled: Some(JobMarket::JobSettled {
                jobId: job,
                acceptedTasks: 1,
                pool: U256::from(1_000),
                totalUnits: U256::from(100_000),
                fee: U256::ZERO,
                refund: U256::ZERO,
                reportHash: report.hash(),
            }),
            paid: vec![JobMarket::WorkerPaid {
                jobId: job,
                worker: worker.address(),
                units: U256::from(100_000),
                amount: U256::from(1_000),
            }],
            slashed: Vec::new(),
            committed: None,
            revealed: None,
            txs: Default::default(),
        };
        (events, report)
    }

    /// [`settled`] as a job with spot checks at redundancy 2: the lone replica was not drawn,
    /// so one of the two escrowed replicas is paid (pool 500) and the other refunded.
    fn spot_settled(worker: &PrivateKeySigner) -> (JobEvents, SettlementReport) {
        let (mut ev, mut report) = settled(worker);
        let seed = SpotSeed {
            secret: B256::repeat_byte(0x51),
            beacon: B256::repeat_byte(0xbe),
        };
        let policy = SpotChecks {
            check_ppm: 1,
            trust_after: 3,
        };
        assert!(!seed.is_checked(report.tasks[0].task_hash, policy.check_ppm));
        report.spot_checks = Some(SpotCheckReport {
            policy,
            redundancy: 2,
            seed,
        });
        let job = report.job_id;
        ev.created.as_mut().unwrap().redundancy = 2;
        ev.committed = Some((
            JobMarket::ChecksCommitted {
                jobId: job,
                commitment: replication::commitment(seed.secret),
            },
            Some(seed.beacon),
        ));
        ev.revealed = Some(JobMarket::ChecksRevealed {
            jobId: job,
            secret: seed.secret,
            paidReplicas: 1,
        });
        let settled = ev.settled.as_mut().unwrap();
        settled.pool = U256::from(500);
        settled.refund = U256::from(500);
        settled.reportHash = report.hash();
        ev.paid[0].amount = U256::from(500);
        (ev, report)
    }

    #[test]
    fn spot_checks_are_recomputed_from_chain_data() {
        let worker = PrivateKeySigner::random();
        let (ev, report) = spot_settled(&worker);
        assert_eq!(differences(&ev, &report), []);

        // The report claims a policy under which the task was drawn: not followed.
        let (ev, mut report) = spot_settled(&worker);
        report.spot_checks.as_mut().unwrap().policy.check_ppm = replication::PPM;
        assert_eq!(
            differences(&ev, &report),
            [Difference::UncheckedDraws { tasks: vec![0] }]
        );

        // Another secret, another beacon, a wrong count of paid replicas.
        let (mut ev, report) = spot_settled(&worker);
        ev.revealed.as_mut().unwrap().secret = B256::repeat_byte(1);
        ev.committed.as_mut().unwrap().1 = Some(B256::repeat_byte(2));
        ev.revealed.as_mut().unwrap().paidReplicas = 2;
        let d = differences(&ev, &report);
        assert_eq!(
            d.iter()
                .filter(|x| matches!(x, Difference::SpotCheckSeed { .. }))
                .count(),
            2,
            "{d:?}"
        );
        assert!(d.contains(&Difference::PaidReplicas {
            computed: 1,
            on_chain: 2
        }));

        // A pool paid as if every escrowed replica had been computed.
        let (mut ev, report) = spot_settled(&worker);
        ev.settled.as_mut().unwrap().pool = U256::from(1_000);
        assert!(differences(&ev, &report).contains(&Difference::Pool {
            computed: U256::from(500),
            on_chain: U256::from(1_000)
        }));

        // Spot checks in the report without a commitment on the chain, and the other way round.
        let (mut ev, report) = spot_settled(&worker);
        ev.committed = None;
        assert!(
            differences(&ev, &report)
                .iter()
                .any(|x| matches!(x, Difference::SpotCheckSeed { .. }))
        );
        let (ev, _) = spot_settled(&worker);
        let (_, plain) = settled(&worker);
        assert!(
            differences(&ev, &plain)
                .iter()
                .any(|x| matches!(x, Difference::SpotCheckSeed { .. }))
        );
    }

    fn differences(ev: &JobEvents, report: &SettlementReport) -> Vec<Difference> {
        let mut d = Vec::new();
        compare(U256::from(7), (CHAIN, market()), ev, report, &mut d).unwrap();
        d
    }

    #[test]
    fn an_honest_settlement_has_no_differences() {
        let (ev, report) = settled(&PrivateKeySigner::random());
        assert_eq!(differences(&ev, &report), []);
    }

    #[test]
    fn each_tampering_is_named_by_a_typed_difference() {
        let worker = PrivateKeySigner::random();
        let w = worker.address();

        let (mut ev, report) = settled(&worker);
        ev.paid[0].amount = U256::from(999);
        assert_eq!(
            differences(&ev, &report),
            [
                Difference::Payout {
                    worker: w,
                    computed: U256::from(1_000),
                    on_chain: U256::from(999),
                },
                Difference::Balance {
                    paid: U256::from(999),
                    fee: U256::ZERO,
                    refund: U256::ZERO,
                    budget: U256::from(1_000),
                },
            ]
        );

        let (ev, mut report) = settled(&worker);
        report.tasks[0].replicas[0].signature = Bytes::from(vec![1u8; 65]);
        assert_eq!(
            differences(&ev, &report),
            [Difference::BadSignature { task: 0, worker: w }]
        );

        let (mut ev, report) = settled(&worker);
        let stranger = Address::repeat_byte(9);
        ev.slashed.push(WorkerRegistry::Slashed {
            worker: stranger,
            jobId: U256::from(7),
            amount: U256::from(1),
            beneficiary: Address::repeat_byte(1),
            evidenceHash: B256::ZERO,
            fromStake: U256::from(1),
            fromUnbonding: U256::ZERO,
        });
        assert_eq!(
            differences(&ev, &report),
            [Difference::UnreportedSlash { worker: stranger }]
        );

        // A budget beyond the formulas' u128 is a difference, not a panic.
        let (mut ev, report) = settled(&worker);
        ev.created.as_mut().unwrap().budget = U256::MAX;
        let d = differences(&ev, &report);
        assert!(d.contains(&Difference::OutOfRange {
            what: "budget",
            value: U256::MAX
        }));

        let (ev, mut report) = settled(&worker);
        report.slashes.push(SlashEntry {
            worker: stranger,
            task_index: 0,
            result_hash: B256::ZERO,
            amount: U256::from(1),
        });
        // A reported slash without a Slashed event is not a payout difference.
        assert_eq!(differences(&ev, &report), []);

        // A paid worker the report gives no confidence: named, not an error.
        let (ev, mut report) = settled(&worker);
        report.workers.clear();
        assert!(matches!(
            differences(&ev, &report).as_slice(),
            [Difference::Unrecomputable { reason }] if reason.contains("no confidence entry")
        ));
        let mut posted = ev;
        posted.posted = None;
        assert!(matches!(
            compare(
                U256::from(7),
                (CHAIN, market()),
                &posted,
                &report,
                &mut Vec::new()
            ),
            Err(Error::NotAuditable(_))
        ));
    }
}
