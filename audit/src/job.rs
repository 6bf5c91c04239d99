//! [`audit_job`]: one job's settlement, rebuilt and compared.

use alloy::primitives::{Address, B256, Signature, U256, keccak256};
use alloy::providers::Provider;
use gleaner_client::Client;
use gleaner_protocol::bindings::JobMarket;
use gleaner_protocol::eip712::{self, TaskResult};
use gleaner_protocol::formulas;
use gleaner_protocol::merkle::MerkleTree;
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
}

impl AuditReport {
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
        .ok_or_else(|| {
            Error::NotAuditable(format!("the coordinator has no report for job {job_id}"))
        })?;
    let bytes = client.blob(sha).await?;
    let mut differences = Vec::new();
    if keccak256(&bytes) != settled.reportHash {
        differences.push(Difference::ReportHash {
            report: keccak256(&bytes),
            on_chain: settled.reportHash,
        });
    }
    let report = SettlementReport::from_canonical(&bytes)?;
    let deployment = (chain_id, market);
    compare(job_id, deployment, &ev, &report, &mut differences)?;
    let created = ev.created.as_ref().expect("compare checked it");
    Ok(AuditReport {
        job_id,
        workers: worker_lines(&ev, &report),
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
            let msg = TaskResult {
                taskHash: t.task_hash,
                resultHash: r.result_hash,
                worker: r.worker,
            };
            let ok = Signature::try_from(r.signature.as_ref())
                .ok()
                .is_some_and(|s| eip712::verify(&msg, &domain, &s, r.worker).is_ok());
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
    let re = report.recompute()?;
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
    if let Some(budget) = small("budget", created.budget, diffs) {
        let pool = U256::from(formulas::pool(
            budget,
            u64::from(settled.acceptedTasks),
            u64::from(created.taskCount),
        )?);
        if pool != settled.pool {
            diffs.push(Difference::Pool {
                computed: pool,
                on_chain: settled.pool,
            });
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
            let want = U256::from(formulas::mul_div(d, u, t.max(1))?);
            if p.amount != want {
                diffs.push(Difference::Payout {
                    worker: *w,
                    computed: want,
                    on_chain: p.amount,
                });
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
