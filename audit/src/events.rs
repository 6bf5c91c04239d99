//! The market's and registry's events, read in bounded block ranges.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEventInterface;
use gleaner_protocol::bindings::{JobMarket, WorkerRegistry};
use gleaner_protocol::logs::{LOG_RANGE, get_logs};

use crate::{Result, chain};

/// Every event of one job, decoded.
#[derive(Debug, Default)]
pub(crate) struct JobEvents {
    pub(crate) created: Option<JobMarket::JobCreated>,
    pub(crate) posted: Option<JobMarket::TasksPosted>,
    pub(crate) settled: Option<JobMarket::JobSettled>,
    pub(crate) paid: Vec<JobMarket::WorkerPaid>,
    pub(crate) slashed: Vec<WorkerRegistry::Slashed>,
    /// `ChecksCommitted` (a job with spot checks) with the hash of its block: the beacon.
    pub(crate) committed: Option<(JobMarket::ChecksCommitted, Option<B256>)>,
    /// `ChecksRevealed`: the secret and the replicas paid for.
    pub(crate) revealed: Option<JobMarket::ChecksRevealed>,
    /// Every transaction that emitted one of the job's events (createJob, postTasks, each
    /// settlement transaction, slashes), once each.
    pub(crate) txs: std::collections::BTreeSet<B256>,
}

/// The job's events between `from` and the chain's head.
pub(crate) async fn job_events(
    p: &impl Provider,
    market: Address,
    registry: Address,
    job: U256,
    from: u64,
) -> Result<JobEvents> {
    let head = p
        .get_block_number()
        .await
        .map_err(|e| crate::Error::Chain(format!("block number: {e}")))?;
    let filter = Filter::new().address(vec![market, registry]);
    let mut ev = JobEvents::default();
    for log in get_logs(p, &filter, from, head, LOG_RANGE).await? {
        if log.address() == market {
            let Ok(decoded) = JobMarket::JobMarketEvents::decode_log(&log.inner) else {
                continue;
            };
            use JobMarket::JobMarketEvents as E;
            let of_job = match &decoded.data {
                E::JobCreated(e) => e.jobId == job,
                E::TasksPosted(e) => e.jobId == job,
                E::SettlementStarted(e) => e.jobId == job,
                E::WorkerPaid(e) => e.jobId == job,
                E::JobSettled(e) => e.jobId == job,
                E::JobCancelled(e) => e.jobId == job,
                E::JobReclaimed(e) => e.jobId == job,
                E::SettlementAbandoned(e) => e.jobId == job,
                E::ChecksCommitted(e) => e.jobId == job,
                E::ChecksRevealed(e) => e.jobId == job,
                _ => false,
            };
            if of_job && let Some(tx) = log.transaction_hash {
                ev.txs.insert(tx);
            }
            match decoded.data {
                JobMarket::JobMarketEvents::JobCreated(e) if e.jobId == job => {
                    ev.created = Some(e);
                }
                JobMarket::JobMarketEvents::TasksPosted(e) if e.jobId == job => {
                    ev.posted = Some(e);
                }
                JobMarket::JobMarketEvents::JobSettled(e) if e.jobId == job => {
                    ev.settled = Some(e);
                }
                JobMarket::JobMarketEvents::WorkerPaid(e) if e.jobId == job => ev.paid.push(e),
                JobMarket::JobMarketEvents::ChecksCommitted(e) if e.jobId == job => {
                    ev.committed = Some((e, log.block_hash));
                }
                JobMarket::JobMarketEvents::ChecksRevealed(e) if e.jobId == job => {
                    ev.revealed = Some(e);
                }
                _ => {}
            }
        } else if let Ok(d) = WorkerRegistry::WorkerRegistryEvents::decode_log(&log.inner)
            && let WorkerRegistry::WorkerRegistryEvents::Slashed(e) = d.data
            && e.jobId == job
        {
            if let Some(tx) = log.transaction_hash {
                ev.txs.insert(tx);
            }
            ev.slashed.push(e);
        }
    }
    Ok(ev)
}

/// One decoded event of the market or the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    /// Block number.
    pub block: u64,
    /// Transaction hash.
    pub tx: Option<B256>,
    /// The event, decoded (`Name { field: value, .. }`).
    pub event: String,
}

/// Every event of the market at `market` and its registry from block `from` on, in chain order.
pub async fn events(p: &impl Provider, market: Address, from: u64) -> Result<Vec<EventLine>> {
    let registry = JobMarket::new(market, p)
        .registry()
        .call()
        .await
        .map_err(chain("registry address"))?;
    let head = p
        .get_block_number()
        .await
        .map_err(|e| crate::Error::Chain(format!("block number: {e}")))?;
    let filter = Filter::new().address(vec![market, registry]);
    let mut logs = get_logs(p, &filter, from, head, LOG_RANGE).await?;
    logs.sort_by_key(|l| (l.block_number, l.log_index));
    Ok(logs
        .into_iter()
        .filter_map(|log| {
            let event = if let Ok(d) = JobMarket::JobMarketEvents::decode_log(&log.inner) {
                format!("{:?}", d.data)
            } else if let Ok(d) = WorkerRegistry::WorkerRegistryEvents::decode_log(&log.inner) {
                format!("{:?}", d.data)
            } else {
                return None;
            };
            Some(EventLine {
                block: log.block_number.unwrap_or_default(),
                tx: log.transaction_hash,
                event,
            })
        })
        .collect())
}
