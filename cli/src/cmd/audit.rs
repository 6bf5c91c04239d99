//! `gleaner audit`: rebuild settlements from chain events and the published report.

use alloy::primitives::{Address, B256, Signature, U256, keccak256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEventInterface;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use gleaner_protocol::bindings::{JobMarket, WorkerRegistry};
use gleaner_protocol::eip712::{self, TaskResult};
use gleaner_protocol::formulas;
use gleaner_protocol::merkle::MerkleTree;
use gleaner_protocol::report::SettlementReport;
use gleaner_worker::CoordinatorClient;

use crate::common::runtime;

/// Check settlements independently: anyone can run this.
///
/// `audit job ID` replays the job's chain events, fetches the settlement report the verifier
/// published (by its sha256, from the coordinator), checks the report against the on-chain
/// report hash (keccak256), spec hash and task root, re-verifies every replica signature,
/// recomputes each worker's units with the contribution formula and each payout with the
/// payout formula, and prints OK or every difference (exit status 1 on a mismatch).
///
/// Examples:
///   gleaner audit job 1 --market 0x...
///   gleaner audit events --from-block 0 --market 0x... --json
#[derive(Debug, Subcommand)]
#[command(verbatim_doc_comment)]
pub enum AuditCommand {
    /// Recompute one job's settlement.
    Job(JobAudit),
    /// List the market's and registry's events.
    Events(EventsArgs),
}

/// Read-only chain access.
#[derive(Debug, Clone, Args)]
pub(crate) struct ReadChain {
    /// JSON-RPC endpoint.
    #[arg(
        long = "rpc-url",
        env = "GLEANER_RPC_URL",
        default_value = "http://127.0.0.1:8545"
    )]
    pub rpc_url: String,
    /// JobMarket address.
    #[arg(long, env = "GLEANER_MARKET")]
    pub market: Address,
}

/// Options of `audit job`.
#[derive(Debug, Args)]
pub struct JobAudit {
    /// Job id.
    pub job_id: U256,
    #[command(flatten)]
    chain: ReadChain,
    /// Coordinator that serves the report blob.
    #[arg(
        long,
        env = "GLEANER_COORDINATOR_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub coordinator_url: String,
    /// First block to scan.
    #[arg(long, default_value_t = 0)]
    pub from_block: u64,
    /// Print one JSON object: verdict, differences, each worker's tasks, units and payout.
    #[arg(long)]
    pub json: bool,
}

/// What `audit job` found.
#[derive(Debug, Default, serde::Serialize)]
struct AuditOutcome {
    job_id: U256,
    verdict: &'static str,
    differences: Vec<String>,
    workers: Vec<WorkerLine>,
    pool: U256,
    fee: U256,
    refund: U256,
    slashed: Vec<Address>,
}

#[derive(Debug, serde::Serialize)]
struct WorkerLine {
    worker: Address,
    tasks: usize,
    units: U256,
    payout: U256,
}

/// Options of `audit events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    chain: ReadChain,
    /// First block to scan.
    #[arg(long, default_value_t = 0)]
    pub from_block: u64,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    let rt = runtime()?;
    match cmd {
        AuditCommand::Job(a) => {
            let mut out = rt.block_on(audit_job(&a))?;
            out.verdict = if out.differences.is_empty() {
                "OK"
            } else {
                "MISMATCH"
            };
            if a.json {
                println!("{}", serde_json::to_string(&out)?);
            } else {
                for w in &out.workers {
                    println!(
                        "{}  tasks {:>4}  units {:>12}  payout {}",
                        w.worker,
                        w.tasks,
                        w.units,
                        crate::common::format_amount(w.payout)
                    );
                }
                println!(
                    "refund to requester {}",
                    crate::common::format_amount(out.refund)
                );
            }
            let diffs = out.differences;
            if diffs.is_empty() {
                if !a.json {
                    println!(
                        "OK: job {} settlement matches the report and the formulas",
                        a.job_id
                    );
                }
                Ok(())
            } else {
                if !a.json {
                    for d in &diffs {
                        println!("MISMATCH: {d}");
                    }
                }
                bail!("job {}: {} difference(s)", a.job_id, diffs.len())
            }
        }
        AuditCommand::Events(a) => rt.block_on(events(a)),
    }
}

/// Every event of a job, decoded.
#[derive(Debug, Default)]
struct JobEvents {
    created: Option<JobMarket::JobCreated>,
    posted: Option<JobMarket::TasksPosted>,
    settled: Option<JobMarket::JobSettled>,
    paid: Vec<JobMarket::WorkerPaid>,
    slashed: Vec<WorkerRegistry::Slashed>,
}

async fn job_events(
    p: &impl Provider,
    market: Address,
    registry: Address,
    job: U256,
    from: u64,
) -> anyhow::Result<JobEvents> {
    let mut ev = JobEvents::default();
    let logs = p
        .get_logs(&Filter::new().address(market).from_block(from))
        .await?;
    for log in logs {
        let Ok(decoded) = JobMarket::JobMarketEvents::decode_log(&log.inner) else {
            continue;
        };
        match decoded.data {
            JobMarket::JobMarketEvents::JobCreated(e) if e.jobId == job => ev.created = Some(e),
            JobMarket::JobMarketEvents::TasksPosted(e) if e.jobId == job => ev.posted = Some(e),
            JobMarket::JobMarketEvents::JobSettled(e) if e.jobId == job => ev.settled = Some(e),
            JobMarket::JobMarketEvents::WorkerPaid(e) if e.jobId == job => ev.paid.push(e),
            _ => {}
        }
    }
    let logs = p
        .get_logs(&Filter::new().address(registry).from_block(from))
        .await?;
    for log in logs {
        if let Ok(d) = WorkerRegistry::WorkerRegistryEvents::decode_log(&log.inner)
            && let WorkerRegistry::WorkerRegistryEvents::Slashed(e) = d.data
            && e.jobId == job
        {
            ev.slashed.push(e);
        }
    }
    Ok(ev)
}

/// Recomputes a job's settlement; the differences are empty when it is OK.
async fn audit_job(a: &JobAudit) -> anyhow::Result<AuditOutcome> {
    let url = a.chain.rpc_url.parse().context("bad --rpc-url")?;
    let p = ProviderBuilder::new().connect_http(url);
    let market = JobMarket::new(a.chain.market, &p);
    let registry = market.registry().call().await?;
    let chain_id = p.get_chain_id().await?;
    let job = market.getJob(a.job_id).call().await?;
    let ev = job_events(&p, a.chain.market, registry, a.job_id, a.from_block).await?;
    let mut diffs = Vec::new();
    let Some(created) = ev.created else {
        bail!("no JobCreated event for job {}", a.job_id)
    };
    let Some(settled) = ev.settled else {
        bail!("job {} is not settled (no JobSettled event)", a.job_id)
    };
    let posted = ev.posted.context("no TasksPosted event")?;

    // The report: fetched by its sha256, bound to the chain by keccak256.
    let client = CoordinatorClient::new(&a.coordinator_url);
    let results = client.job_results(a.job_id).await?;
    let sha = results
        .report_hash
        .context("the coordinator has no report for this job")?;
    let bytes = client.get_blob(sha).await?;
    if keccak256(&bytes) != settled.reportHash {
        diffs.push(format!(
            "report keccak256 {} != on-chain reportHash {}",
            keccak256(&bytes),
            settled.reportHash
        ));
    }
    let report = SettlementReport::from_canonical(&bytes)?;
    let mut check = |ok: bool, msg: String| {
        if !ok {
            diffs.push(msg);
        }
    };
    check(
        report.job_id == a.job_id,
        format!("report is for job {}", report.job_id),
    );
    check(
        report.chain_id == chain_id && report.market == a.chain.market,
        "report names another deployment".into(),
    );
    check(
        report.spec_hash == created.specHash,
        format!(
            "spec hash {} != JobCreated {}",
            report.spec_hash, created.specHash
        ),
    );
    check(
        report.tasks_root == posted.tasksRoot,
        format!(
            "tasks root {} != TasksPosted {}",
            report.tasks_root, posted.tasksRoot
        ),
    );
    let hashes: Vec<B256> = report.tasks.iter().map(|t| t.task_hash).collect();
    let root = MerkleTree::from_task_hashes(&hashes).root();
    check(
        root == posted.tasksRoot,
        format!(
            "Merkle root of the report's tasks {root} != posted {}",
            posted.tasksRoot
        ),
    );
    check(
        report.tasks.len() == created.taskCount as usize,
        format!(
            "report has {} tasks, job {}",
            report.tasks.len(),
            created.taskCount
        ),
    );

    // Every replica signature.
    let domain = eip712::domain(chain_id, a.chain.market);
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
                format!(
                    "task {}: replica of {} has no valid signature",
                    t.index, r.worker
                ),
            );
        }
    }

    // Units from the contribution formula; payouts from the payout formula.
    let re = report.recompute()?;
    check(
        re.accepted_tasks == settled.acceptedTasks,
        format!(
            "accepted tasks {} != JobSettled {}",
            re.accepted_tasks, settled.acceptedTasks
        ),
    );
    let total: U256 = re.units.iter().map(|(_, u)| *u).sum();
    check(
        total == settled.totalUnits,
        format!("total units {total} != JobSettled {}", settled.totalUnits),
    );
    let pool = formulas::pool(
        created.budget.to::<u128>(),
        u64::from(settled.acceptedTasks),
        u64::from(created.taskCount),
    )?;
    check(
        U256::from(pool) == settled.pool,
        format!("pool {pool} != JobSettled {}", settled.pool),
    );
    let distributable = settled.pool.saturating_sub(settled.fee);
    let mut paid_sum = U256::ZERO;
    for (w, units) in &re.units {
        let want = U256::from(formulas::mul_div(
            distributable.to::<u128>(),
            units.to::<u128>(),
            total.to::<u128>().max(1),
        )?);
        match ev.paid.iter().find(|p| p.worker == *w) {
            Some(p) => {
                check(
                    p.units == *units,
                    format!("{w}: units {} on-chain, {units} by the formula", p.units),
                );
                check(
                    p.amount == want,
                    format!("{w}: paid {} on-chain, {want} by the formula", p.amount),
                );
                paid_sum += p.amount;
            }
            None => check(
                false,
                format!("{w}: earned {units} units but has no WorkerPaid event"),
            ),
        }
    }
    for p in &ev.paid {
        check(
            re.units.iter().any(|(w, _)| *w == p.worker),
            format!("{} was paid but earned nothing in the report", p.worker),
        );
    }
    check(
        paid_sum + settled.fee + settled.refund == created.budget,
        format!(
            "payouts {paid_sum} + fee {} + refund {} != budget {}",
            settled.fee, settled.refund, created.budget
        ),
    );
    for s in &ev.slashed {
        check(
            report.slashes.iter().any(|e| e.worker == s.worker),
            format!("{} was slashed without a report entry", s.worker),
        );
    }
    eprintln!(
        "job {}: {} tasks, {} accepted, {} workers paid, {} slashed, status {}",
        a.job_id,
        created.taskCount,
        settled.acceptedTasks,
        ev.paid.len(),
        ev.slashed.len(),
        job.status
    );
    let workers = ev
        .paid
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
        .collect();
    Ok(AuditOutcome {
        job_id: a.job_id,
        verdict: "",
        differences: diffs,
        workers,
        pool: settled.pool,
        fee: settled.fee,
        refund: settled.refund,
        slashed: ev.slashed.iter().map(|s| s.worker).collect(),
    })
}

async fn events(a: EventsArgs) -> anyhow::Result<()> {
    let url = a.chain.rpc_url.parse().context("bad --rpc-url")?;
    let p = ProviderBuilder::new().connect_http(url);
    let market = JobMarket::new(a.chain.market, &p);
    let registry = market.registry().call().await?;
    let mut logs = p
        .get_logs(
            &Filter::new()
                .address(vec![a.chain.market, registry])
                .from_block(a.from_block),
        )
        .await?;
    logs.sort_by_key(|l| (l.block_number, l.log_index));
    for log in logs {
        let block = log.block_number.unwrap_or_default();
        let text = if let Ok(d) = JobMarket::JobMarketEvents::decode_log(&log.inner) {
            format!("{:?}", d.data)
        } else if let Ok(d) = WorkerRegistry::WorkerRegistryEvents::decode_log(&log.inner) {
            format!("{:?}", d.data)
        } else {
            continue;
        };
        if a.json {
            println!(
                "{}",
                serde_json::json!({"block": block, "tx": log.transaction_hash, "event": text})
            );
        } else {
            println!("{block:>8}  {text}");
        }
    }
    Ok(())
}
