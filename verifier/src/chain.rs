//! Settling and slashing on-chain, idempotently.
//!
//! [`settle_and_slash`] reads the job first and acts on what the chain says, so it can be run
//! again after a crash at any point:
//!
//! - `Posted`: `settle` in one call (≤ 256 paid workers), else `beginSettlement`, `settleChunk`
//!   (a job with spot checks: `settleReplicas` / `beginSettlementReplicas`, which reveal its
//!   secret and pay for the replicas its accepted tasks used)
//!   per 256 workers and `finalizeSettlement`.
//! - `Settling` (a chunked settlement was interrupted): continues after the contract's
//!   `lastWorker`, then finalizes; a settlement under another report hash is a conflict.
//! - `Settled`: never settles again; finds the `JobSettled` event, checks its report hash.
//! - Anything else (open, cancelled, reclaimed, unknown): a conflict, nothing is sent.
//!
//! Slashing comes after settlement (a slashed worker paid for its good tasks must still be
//! bonded when paid). A slash whose `Slashed` event (same worker, job and evidence hash) is
//! already on-chain is skipped; a worker with nothing bonded any more is skipped with a warning.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{PendingTransactionBuilder, Provider};
use alloy::rpc::types::TransactionReceipt;
use gleaner_protocol::bindings::{JobMarket, WorkerRegistry, job_status};
use gleaner_protocol::report::SettlementReport;
use tracing::{info, warn};

use crate::settlement::{MAX_SETTLEMENT_CHUNK, SettlementPlan, evidence_hash};
use crate::{Error, Result};

/// What [`settle_and_slash`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainOutcome {
    /// The transaction that completed the settlement (`settle` or `finalizeSettlement`),
    /// whether sent now or found on-chain.
    pub settle_tx: B256,
    /// Whether this call settled (false: it was already settled).
    pub settled_now: bool,
    /// One line per slash of the report.
    pub slashes: Vec<SlashOutcome>,
}

/// What happened to one slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlashOutcome {
    /// The worker.
    pub worker: Address,
    /// Its evidence hash.
    pub evidence_hash: B256,
    /// The slash transaction, when sent now.
    pub tx: Option<B256>,
    /// Tokens taken by the transaction sent now (the registry takes what is bonded, up to the
    /// amount).
    pub taken: U256,
    /// Already on-chain, or nothing bonded to take.
    pub skipped: Option<&'static str>,
}

fn chain<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Error {
    move |e| Error::Chain(format!("{what}: {e}"))
}

async fn confirm(
    what: &'static str,
    pending: std::result::Result<
        PendingTransactionBuilder<alloy::network::Ethereum>,
        alloy::contract::Error,
    >,
) -> Result<TransactionReceipt> {
    let receipt = pending
        .map_err(chain(what))?
        .get_receipt()
        .await
        .map_err(chain(what))?;
    if !receipt.status() {
        return Err(Error::Chain(format!(
            "{what}: transaction {} reverted",
            receipt.transaction_hash
        )));
    }
    Ok(receipt)
}

/// Settles `report`'s job on `market` and slashes the workers it names, skipping whatever the
/// chain shows as done. `logs_from_block` bounds the event searches (the job's creation block,
/// or 0 on a dev chain). The provider's wallet needs VERIFIER_ROLE and SLASHER_ROLE.
pub async fn settle_and_slash<P: Provider>(
    provider: &P,
    market_addr: Address,
    report: &SettlementReport,
    logs_from_block: u64,
) -> Result<ChainOutcome> {
    settle_and_slash_in_chunks(
        provider,
        market_addr,
        report,
        logs_from_block,
        MAX_SETTLEMENT_CHUNK,
    )
    .await
}

/// [`settle_and_slash`], paying at most `chunk` workers per transaction (1 to
/// [`MAX_SETTLEMENT_CHUNK`]): smaller chunks cost more transactions; tests and the chaos suite
/// use them to interrupt a settlement between chunks.
pub async fn settle_and_slash_in_chunks<P: Provider>(
    provider: &P,
    market_addr: Address,
    report: &SettlementReport,
    logs_from_block: u64,
    chunk: usize,
) -> Result<ChainOutcome> {
    let chunk = chunk.clamp(1, MAX_SETTLEMENT_CHUNK);
    if report.market != market_addr {
        return Err(Error::Conflict(format!(
            "report is for market {}, not {market_addr}",
            report.market
        )));
    }
    let market = JobMarket::new(market_addr, provider);
    let job_id = report.job_id;
    let plan = SettlementPlan::of(report)?;
    let job = market
        .getJob(job_id)
        .call()
        .await
        .map_err(chain("getJob"))?;
    if job.specHash != report.spec_hash || job.tasksRoot != report.tasks_root {
        return Err(Error::Conflict(format!(
            "job {job_id} on-chain has spec {} and root {}, the report {} and {}",
            job.specHash, job.tasksRoot, report.spec_hash, report.tasks_root
        )));
    }
    let (settle_tx, settled_now) = match job.status {
        job_status::POSTED if plan.workers.len() <= chunk => {
            let sent = match plan.spot {
                Some((paid, secret)) => {
                    market
                        .settleReplicas(
                            job_id,
                            plan.accepted_tasks,
                            paid,
                            plan.workers.clone(),
                            plan.units.clone(),
                            plan.report_hash,
                            secret,
                        )
                        .send()
                        .await
                }
                None => {
                    market
                        .settle(
                            job_id,
                            plan.accepted_tasks,
                            plan.workers.clone(),
                            plan.units.clone(),
                            plan.report_hash,
                        )
                        .send()
                        .await
                }
            };
            let r = confirm("settle", sent).await?;
            (r.transaction_hash, true)
        }
        job_status::POSTED => {
            let sent = match plan.spot {
                Some((paid, secret)) => {
                    market
                        .beginSettlementReplicas(
                            job_id,
                            plan.accepted_tasks,
                            paid,
                            plan.total_units,
                            plan.report_hash,
                            secret,
                        )
                        .send()
                        .await
                }
                None => {
                    market
                        .beginSettlement(
                            job_id,
                            plan.accepted_tasks,
                            plan.total_units,
                            plan.report_hash,
                        )
                        .send()
                        .await
                }
            };
            confirm("beginSettlement", sent).await?;
            (
                settle_chunks(&market, &plan, job_id, Address::ZERO, chunk).await?,
                true,
            )
        }
        job_status::SETTLING => {
            let st = market
                .getSettlement(job_id)
                .call()
                .await
                .map_err(chain("getSettlement"))?;
            if st.reportHash != plan.report_hash {
                return Err(Error::Conflict(format!(
                    "job {job_id} is being settled under report {}, not {}",
                    st.reportHash, plan.report_hash
                )));
            }
            (
                settle_chunks(&market, &plan, job_id, st.lastWorker, chunk).await?,
                true,
            )
        }
        job_status::SETTLED => {
            let logs = market
                .JobSettled_filter()
                .topic1(job_id)
                .from_block(logs_from_block)
                .query()
                .await
                .map_err(chain("JobSettled logs"))?;
            let Some((ev, log)) = logs.last() else {
                return Err(Error::Chain(format!(
                    "job {job_id} is settled but no JobSettled event was found from block \
                     {logs_from_block}"
                )));
            };
            if ev.reportHash != plan.report_hash {
                return Err(Error::Conflict(format!(
                    "job {job_id} was settled under report {}, not {}",
                    ev.reportHash, plan.report_hash
                )));
            }
            info!(target: "verifier", %job_id, "already settled");
            (log.transaction_hash.unwrap_or_default(), false)
        }
        s => {
            return Err(Error::Conflict(format!(
                "job {job_id} has status {s}: only a posted job can be settled"
            )));
        }
    };
    if settled_now {
        info!(target: "verifier", %job_id, tx = %settle_tx, accepted = plan.accepted_tasks,
              workers = plan.workers.len(), "settled");
    }
    let slashes = slash(provider, &market, report, plan.report_hash, logs_from_block).await?;
    Ok(ChainOutcome {
        settle_tx,
        settled_now,
        slashes,
    })
}

async fn settle_chunks<P: Provider>(
    market: &JobMarket::JobMarketInstance<P>,
    plan: &SettlementPlan,
    job_id: U256,
    last_worker: Address,
    chunk: usize,
) -> Result<B256> {
    let start = plan.workers.partition_point(|w| *w <= last_worker);
    let mut i = start;
    while i < plan.workers.len() {
        let end = (i + chunk).min(plan.workers.len());
        confirm(
            "settleChunk",
            market
                .settleChunk(
                    job_id,
                    plan.workers[i..end].to_vec(),
                    plan.units[i..end].to_vec(),
                )
                .send()
                .await,
        )
        .await?;
        info!(target: "verifier", %job_id, from = i, to = end, "settlement chunk paid");
        i = end;
    }
    let r = confirm(
        "finalizeSettlement",
        market.finalizeSettlement(job_id).send().await,
    )
    .await?;
    Ok(r.transaction_hash)
}

async fn slash<P: Provider>(
    provider: &P,
    market: &JobMarket::JobMarketInstance<&P>,
    report: &SettlementReport,
    report_hash: B256,
    logs_from_block: u64,
) -> Result<Vec<SlashOutcome>> {
    let mut out = Vec::with_capacity(report.slashes.len());
    if report.slashes.is_empty() {
        return Ok(out);
    }
    let registry_addr = market.registry().call().await.map_err(chain("registry"))?;
    let registry = WorkerRegistry::new(registry_addr, provider);
    let job_id = report.job_id;
    for s in &report.slashes {
        let evidence = evidence_hash(report_hash, s);
        let mut line = SlashOutcome {
            worker: s.worker,
            evidence_hash: evidence,
            tx: None,
            taken: U256::ZERO,
            skipped: None,
        };
        let done = registry
            .Slashed_filter()
            .topic1(s.worker)
            .topic2(job_id)
            .from_block(logs_from_block)
            .query()
            .await
            .map_err(chain("Slashed logs"))?
            .iter()
            .any(|(ev, _)| ev.evidenceHash == evidence);
        if done {
            line.skipped = Some("already slashed");
            out.push(line);
            continue;
        }
        let bonded = registry
            .isBonded(s.worker)
            .call()
            .await
            .map_err(chain("isBonded"))?;
        if !bonded || s.amount.is_zero() {
            warn!(target: "verifier", %job_id, worker = %s.worker, "nothing to slash");
            line.skipped = Some("nothing bonded");
            out.push(line);
            continue;
        }
        let r = confirm(
            "slash",
            registry
                .slash(s.worker, s.amount, job_id, evidence)
                .send()
                .await,
        )
        .await?;
        line.tx = Some(r.transaction_hash);
        line.taken = r
            .decoded_log::<WorkerRegistry::Slashed>()
            .map_or(U256::ZERO, |l| l.data.amount);
        info!(target: "verifier", %job_id, worker = %s.worker, task = s.task_index,
              taken = %line.taken, %evidence, "slashed");
        out.push(line);
    }
    Ok(out)
}

/// The spot-check commitment job `job_id` made in the block whose hash is `beacon` (its
/// `ChecksCommitted` event there), or `None` when that block holds none (or is not a block of
/// this chain): how the verifier checks that the beacon the coordinator shows is the
/// commitment's block hash, and so not a value the coordinator chose.
pub async fn commitment_in_block<P: Provider>(
    provider: &P,
    market: Address,
    job_id: U256,
    beacon: B256,
) -> Result<Option<B256>> {
    use alloy::rpc::types::Filter;
    use alloy::sol_types::SolEvent;
    let filter = Filter::new()
        .address(market)
        .at_block_hash(beacon)
        .event_signature(JobMarket::ChecksCommitted::SIGNATURE_HASH)
        .topic1(job_id);
    let logs = match provider.get_logs(&filter).await {
        Ok(logs) => logs,
        // Nodes answer an unknown block hash with an error ("unknown block" from anvil and
        // geth, "not found" from others): no such block, so no commitment there.
        Err(e)
            if {
                let m = e.to_string().to_lowercase();
                m.contains("unknown block") || m.contains("not found")
            } =>
        {
            return Ok(None);
        }
        Err(e) => return Err(Error::Chain(format!("ChecksCommitted logs: {e}"))),
    };
    Ok(logs
        .iter()
        .filter(|l| l.block_hash == Some(beacon) && !l.removed)
        .filter_map(|l| JobMarket::ChecksCommitted::decode_log(&l.inner).ok())
        .find(|e| e.jobId == job_id)
        .map(|e| e.commitment))
}
