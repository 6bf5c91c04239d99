//! The chain watcher: ingests JobMarket events up to `head - confirmations`, survives reorgs,
//! and posts the task roots of registered jobs, once each.
//!
//! Reorgs: anvil (and some nodes) drop the replaced blocks' logs without `removed: true`, so
//! the watcher stores the (number, hash) of the blocks it processed (each range's last block and
//! every block with an event) and, on each poll, compares the newest stored ones with the chain.
//! On a mismatch it forgets everything above the highest block that still matches and
//! re-ingests from there.

use std::time::Duration;

use alloy::eips::BlockId;
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEventInterface;
use gleaner_protocol::bindings::JobMarket::{self, JobMarketEvents};
use gleaner_protocol::bindings::job_status;

use crate::api::AppState;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::{ChainEvent, job_state};

/// How many stored blocks are re-checked each poll (the deepest reorg noticed).
const RECHECK: i64 = 64;
/// Most blocks per `eth_getLogs`.
const RANGE: u64 = 1_000;

/// Watcher settings.
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    /// JobMarket address.
    pub market: Address,
    /// Blocks to wait before ingesting (0 on a dev chain).
    pub confirmations: u64,
    /// Pause between polls.
    pub poll_interval: Duration,
    /// First block to ingest (the market's deployment block, or 0).
    pub from_block: u64,
}

/// The watcher: the store's view of the chain, and the root poster.
#[derive(Debug)]
pub struct Watcher {
    state: AppState,
    config: WatcherConfig,
    signer: PrivateKeySigner,
    provider: DynProvider,
}

impl Watcher {
    /// A watcher; `signer` holds COORDINATOR_ROLE.
    pub fn new(state: AppState, config: WatcherConfig, signer: PrivateKeySigner) -> Result<Self> {
        let url = config
            .rpc_url
            .parse()
            .map_err(|e| Error::BadRequest(format!("rpc url {:?}: {e}", config.rpc_url)))?;
        let provider = ProviderBuilder::new().connect_http(url).erased();
        Ok(Self {
            state,
            config,
            signer,
            provider,
        })
    }

    /// Polls forever. Chain errors are logged and retried; a store error ends the loop (and,
    /// through [`crate::serve`], the process).
    pub async fn run(self) -> Result<()> {
        loop {
            match self.poll().await {
                Ok(()) => {}
                Err(e) if e.is_transient() => {
                    tracing::warn!(target: "coordinator::chain", error = %e, "poll failed; retrying");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    /// One round: detect reorgs, ingest confirmed events, derive job states, post roots.
    pub async fn poll(&self) -> Result<()> {
        self.check_reorg().await?;
        let target = self.ingest().await?;
        self.advance_jobs(target).await?;
        Ok(())
    }

    async fn block_hash(&self, n: u64) -> Result<Option<B256>> {
        Ok(self
            .provider
            .get_block_by_number(n.into())
            .await
            .map_err(Error::chain)?
            .map(|b| b.header.hash))
    }

    async fn check_reorg(&self) -> Result<()> {
        let stored = self.state.store().chain_blocks(RECHECK).await?;
        let mut fork = None;
        for (n, h) in &stored {
            if self.block_hash(*n).await? == Some(*h) {
                break;
            }
            fork = Some(*n);
        }
        if let Some(n) = fork {
            let jobs = self.state.store().rollback_chain(n).await?;
            Metrics::inc(&self.state.metrics().reorgs);
            tracing::warn!(target: "coordinator::chain", from = n, ?jobs, "reorg: rolled back");
        }
        Ok(())
    }

    /// Ingests events up to `head - confirmations`; returns that block.
    async fn ingest(&self) -> Result<u64> {
        let head = self
            .provider
            .get_block_number()
            .await
            .map_err(Error::chain)?;
        let target = head.saturating_sub(self.config.confirmations);
        let stored = self.state.store().chain_blocks(1).await?;
        let mut from = stored
            .first()
            .map(|(n, _)| n + 1)
            .unwrap_or(self.config.from_block);
        while from <= target {
            let to = target.min(from + RANGE - 1);
            let filter = Filter::new()
                .address(self.config.market)
                .from_block(from)
                .to_block(to);
            let logs = self
                .provider
                .get_logs(&filter)
                .await
                .map_err(Error::chain)?;
            let mut events = Vec::new();
            let mut blocks = Vec::new();
            for log in &logs {
                let (Some(bh), Some(bn), Some(th), Some(li)) = (
                    log.block_hash,
                    log.block_number,
                    log.transaction_hash,
                    log.log_index,
                ) else {
                    continue;
                };
                let Ok(decoded) = JobMarketEvents::decode_log(&log.inner) else {
                    continue;
                };
                let (name, job_id, data) = match decoded.data {
                    JobMarketEvents::JobCreated(e) => (
                        "JobCreated",
                        e.jobId,
                        format!("{{\"specHash\":\"{}\"}}", e.specHash),
                    ),
                    JobMarketEvents::TasksPosted(e) => (
                        "TasksPosted",
                        e.jobId,
                        format!(
                            "{{\"tasksRoot\":\"{}\",\"count\":{}}}",
                            e.tasksRoot, e.count
                        ),
                    ),
                    JobMarketEvents::JobSettled(e) => (
                        "JobSettled",
                        e.jobId,
                        format!("{{\"reportHash\":\"{}\"}}", e.reportHash),
                    ),
                    JobMarketEvents::JobCancelled(e) => ("JobCancelled", e.jobId, "{}".into()),
                    JobMarketEvents::JobReclaimed(e) => ("JobReclaimed", e.jobId, "{}".into()),
                    _ => continue,
                };
                blocks.push((bn, bh));
                events.push(ChainEvent {
                    block_hash: bh,
                    block_number: bn,
                    tx_hash: th,
                    log_index: li,
                    event: name.to_owned(),
                    job_id,
                    data,
                });
            }
            let Some(end_hash) = self.block_hash(to).await? else {
                return Err(Error::Chain(format!("block {to} vanished")));
            };
            blocks.push((to, end_hash));
            let fresh = self.state.store().record_chain(&blocks, &events).await?;
            for (job_id, event) in fresh {
                self.react(job_id, &event).await?;
            }
            self.state
                .metrics()
                .chain_block
                .store(to, std::sync::atomic::Ordering::Relaxed);
            from = to + 1;
        }
        Ok(target)
    }

    async fn react(&self, job_id: U256, event: &str) -> Result<()> {
        let store = self.state.store();
        let moved = match event {
            "JobCancelled" => {
                store
                    .set_job_state(job_id, job_state::REGISTERED, job_state::CANCELLED)
                    .await?
            }
            "JobReclaimed" => {
                store
                    .set_job_state(job_id, job_state::POSTED, job_state::EXPIRED)
                    .await?
                    || store
                        .set_job_state(job_id, job_state::REGISTERED, job_state::EXPIRED)
                        .await?
            }
            "JobSettled" => {
                store
                    .set_job_state(job_id, job_state::POSTED, job_state::SETTLED)
                    .await?
            }
            _ => false,
        };
        if moved {
            tracing::info!(target: "coordinator::chain", %job_id, event, "job state from chain");
        }
        Ok(())
    }

    /// Registered jobs: derive their state from the chain at the confirmed block, and post
    /// roots of open ones (checking the latest state first, and never with a transaction of
    /// ours still pending).
    async fn advance_jobs(&self, confirmed: u64) -> Result<()> {
        let store = self.state.store();
        let market = JobMarket::new(self.config.market, &self.provider);
        for job in store.jobs_in_state(job_state::REGISTERED).await? {
            let at = market
                .getJob(job.job_id)
                .block(BlockId::number(confirmed))
                .call()
                .await
                .map_err(Error::chain)?;
            let next = match at.status {
                job_status::POSTED | job_status::SETTLING | job_status::SETTLED
                    if at.tasksRoot != job.tasks_root =>
                {
                    tracing::error!(target: "coordinator::chain", job_id = %job.job_id,
                        posted = %at.tasksRoot, ours = %job.tasks_root, "a different root was posted");
                    Some(job_state::ROOT_MISMATCH)
                }
                job_status::POSTED | job_status::SETTLING => Some(job_state::POSTED),
                job_status::SETTLED => Some(job_state::SETTLED),
                job_status::CANCELLED => Some(job_state::CANCELLED),
                job_status::RECLAIMED => Some(job_state::EXPIRED),
                _ => None,
            };
            if let Some(next) = next {
                if store
                    .set_job_state(job.job_id, job_state::REGISTERED, next)
                    .await?
                {
                    tracing::info!(target: "coordinator::chain", job_id = %job.job_id, state = next, "job state");
                    if next == job_state::POSTED {
                        self.state.notify_work();
                    }
                }
                continue;
            }
            self.maybe_post(&job).await?;
        }
        Ok(())
    }

    async fn maybe_post(&self, job: &crate::store::JobRow) -> Result<()> {
        let store = self.state.store();
        if let Some(tx) = job.post_tx {
            // Ours is out: wait for it, unless it failed or vanished (a reorg, a dropped tx).
            let receipt = self
                .provider
                .get_transaction_receipt(tx)
                .await
                .map_err(Error::chain)?;
            let gone = match receipt {
                Some(r) => !r.status(),
                None => self
                    .provider
                    .get_transaction_by_hash(tx)
                    .await
                    .map_err(Error::chain)?
                    .is_none(),
            };
            if gone {
                tracing::warn!(target: "coordinator::chain", job_id = %job.job_id, %tx, "postTasks failed or vanished");
                store.set_post_tx(job.job_id, None).await?;
            }
            return Ok(());
        }
        let market = JobMarket::new(self.config.market, &self.provider);
        let latest = market
            .getJob(job.job_id)
            .call()
            .await
            .map_err(Error::chain)?;
        if latest.status != job_status::OPEN {
            return Ok(());
        }
        let now = self.state.now();
        if latest.deadline <= now {
            store
                .set_job_state(job.job_id, job_state::REGISTERED, job_state::EXPIRED)
                .await?;
            return Ok(());
        }
        // A fresh provider per send: its nonce comes from the chain, never a stale cache.
        let url = self
            .config
            .rpc_url
            .parse()
            .map_err(|e| Error::BadRequest(format!("rpc url: {e}")))?;
        let sender = ProviderBuilder::new()
            .wallet(EthereumWallet::from(self.signer.clone()))
            .connect_http(url);
        let pending = JobMarket::new(self.config.market, &sender)
            .postTasks(job.job_id, job.tasks_root, job.task_count)
            .send()
            .await
            .map_err(Error::chain)?;
        let tx = *pending.tx_hash();
        store.set_post_tx(job.job_id, Some(tx)).await?;
        Metrics::inc(&self.state.metrics().roots_posted);
        tracing::info!(target: "coordinator::chain", job_id = %job.job_id, root = %job.tasks_root, %tx, "posted task root");
        Ok(())
    }
}
