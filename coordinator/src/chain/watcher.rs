//! The chain watcher: ingests JobMarket events up to `head - confirmations`, survives reorgs,
//! derives the state of registered jobs from the chain and has their task roots posted, once
//! each.
//!
//! Reorgs: anvil (and some nodes) drop the replaced blocks' logs without `removed: true`, so
//! the watcher stores the (number, hash) of the blocks it processed (each range's last block and
//! every block with an event) and, on each poll, compares the newest stored ones with the chain.
//! On a mismatch it forgets everything above the highest block that still matches and
//! re-ingests from there.
//!
//! A root other than ours on-chain (someone else's `postTasks`) makes the job
//! [`JobState::RootMismatch`], a terminal state: it is never leased, and a requester waiting
//! on it stops.
//!
//! Stake changes: the watcher also reads the WorkerRegistry's `Slashed`, `UnstakeRequested`,
//! `StakeWithdrawn` and `MinStakeChanged` events. A worker they leave ineligible loses its sessions and live leases at
//! once (its token stops working; its leases go back to the queue), instead of working on until
//! its session expires.
//!
//! The watcher needs only the store, a [`Notify`] to wake long-polling lease requests when a
//! job becomes leasable, and the counters: not the HTTP state.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use alloy::eips::BlockId;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEventInterface;
use gleaner_protocol::api::JobState;
use gleaner_protocol::bindings::JobMarket::{self, JobMarketEvents};
use gleaner_protocol::bindings::WorkerRegistry::{self, WorkerRegistryEvents};
use gleaner_protocol::bindings::job_status;
use tokio::sync::Notify;

use super::poster::Poster;
use crate::db::{ChainEvent, JobEvent, JobRow, Store};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

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
    /// How many stored blocks are re-checked each poll (the deepest reorg noticed).
    pub reorg_depth: u64,
    /// Most blocks per `eth_getLogs`.
    pub logs_range: u64,
    /// How long a coordinator's lead lasts without renewal: of several coordinators on one
    /// database, one follows the chain and posts roots; when it dies, another takes over
    /// within this time.
    pub leader_secs: u64,
}

impl WatcherConfig {
    /// Default of [`WatcherConfig::reorg_depth`].
    pub const DEFAULT_REORG_DEPTH: u64 = 64;
    /// Default of [`WatcherConfig::logs_range`].
    pub const DEFAULT_LOGS_RANGE: u64 = 1_000;
    /// Default of [`WatcherConfig::leader_secs`].
    pub const DEFAULT_LEADER_SECS: u64 = 15;

    /// Settings for `rpc_url` and `market` with the defaults: no confirmations, 1 s polls,
    /// from block 0.
    pub fn new(rpc_url: impl Into<String>, market: Address) -> Self {
        Self {
            rpc_url: rpc_url.into(),
            market,
            confirmations: 0,
            poll_interval: Duration::from_secs(1),
            from_block: 0,
            reorg_depth: Self::DEFAULT_REORG_DEPTH,
            logs_range: Self::DEFAULT_LOGS_RANGE,
            leader_secs: Self::DEFAULT_LEADER_SECS,
        }
    }
}

/// The watcher: the store's view of the chain, and the root poster.
#[derive(Debug)]
pub struct Watcher {
    store: Store,
    work: Arc<Notify>,
    metrics: Arc<Metrics>,
    config: WatcherConfig,
    provider: DynProvider,
    poster: Poster,
    /// The market's WorkerRegistry, read on the first poll.
    registry: tokio::sync::OnceCell<Address>,
    /// This process's name in the `leader` table.
    holder: String,
    /// Whether it led at its last poll.
    leading: std::sync::atomic::AtomicBool,
}

/// The role in the `leader` table that follows the chain and posts roots.
const LEADER_ROLE: &str = "watcher";

/// A decoded JobMarket log as the job event the coordinator keeps, or `None` for events it
/// does not follow (stakes, slashing, withdrawals).
fn job_event(decoded: JobMarketEvents) -> Option<(U256, JobEvent)> {
    Some(match decoded {
        JobMarketEvents::JobCreated(e) => (
            e.jobId,
            JobEvent::JobCreated {
                spec_hash: e.specHash,
            },
        ),
        JobMarketEvents::TasksPosted(e) => (
            e.jobId,
            JobEvent::TasksPosted {
                tasks_root: e.tasksRoot,
                count: e.count,
            },
        ),
        JobMarketEvents::JobSettled(e) => (
            e.jobId,
            JobEvent::JobSettled {
                report_hash: e.reportHash,
            },
        ),
        JobMarketEvents::JobCancelled(e) => (e.jobId, JobEvent::JobCancelled),
        JobMarketEvents::JobReclaimed(e) => (e.jobId, JobEvent::JobReclaimed),
        _ => return None,
    })
}

/// The state a registered job takes from its on-chain record, or `None` while it is open.
fn state_from_chain(status: u8, posted_root: B256, ours: B256) -> Option<JobState> {
    match status {
        job_status::POSTED | job_status::SETTLING | job_status::SETTLED if posted_root != ours => {
            Some(JobState::RootMismatch)
        }
        job_status::POSTED | job_status::SETTLING => Some(JobState::Posted),
        job_status::SETTLED => Some(JobState::Settled),
        job_status::CANCELLED => Some(JobState::Cancelled),
        job_status::RECLAIMED => Some(JobState::Expired),
        _ => None,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Watcher {
    /// A watcher over `store` that wakes `work` when a job becomes leasable; `signer` holds
    /// COORDINATOR_ROLE.
    pub fn new(
        store: Store,
        work: Arc<Notify>,
        config: WatcherConfig,
        signer: PrivateKeySigner,
    ) -> Result<Self> {
        let url = config
            .rpc_url
            .parse()
            .map_err(|e| Error::BadRequest(format!("rpc url {:?}: {e}", config.rpc_url)))?;
        let provider = ProviderBuilder::new().connect_http(url).erased();
        let poster = Poster::new(&config.rpc_url, config.market, signer)?;
        Ok(Self {
            store,
            work,
            metrics: Arc::default(),
            config,
            provider,
            poster,
            registry: tokio::sync::OnceCell::new(),
            holder: crate::db::codec::random_hex()[..16].to_owned(),
            leading: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The market's WorkerRegistry address.
    async fn registry(&self) -> Result<Address> {
        self.registry
            .get_or_try_init(|| async {
                JobMarket::new(self.config.market, &self.provider)
                    .registry()
                    .call()
                    .await
                    .map_err(Error::chain)
            })
            .await
            .copied()
    }

    /// Ends the sessions and live leases of each of `workers` that is no longer eligible.
    async fn end_ineligible(&self, workers: &[Address]) -> Result<()> {
        let registry = WorkerRegistry::new(self.registry().await?, &self.provider);
        for &worker in workers {
            let eligible = registry
                .isEligible(worker)
                .call()
                .await
                .map_err(Error::chain)?;
            if eligible {
                continue;
            }
            let (sessions, leases) = self.store.end_worker(worker).await?;
            tracing::warn!(target: "coordinator::chain", %worker, sessions, leases,
                           "worker no longer eligible: sessions and leases ended");
            if leases > 0 {
                self.work.notify_waiters();
            }
        }
        Ok(())
    }

    /// Counts into `metrics` (shared with the HTTP API's `/metrics`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Polls forever. Chain errors are logged and retried; a store error ends the loop (and,
    /// through [`crate::serve`], the process).
    pub async fn run(&self) -> Result<()> {
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

    /// Whether this watcher led at its last poll.
    pub fn is_leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Gives up the lead (on shutdown), so another coordinator takes over at once.
    pub async fn resign(&self) -> Result<()> {
        self.store.resign(LEADER_ROLE, &self.holder).await
    }

    /// One round, if this coordinator leads (takes or renews the lead first): detect reorgs,
    /// ingest confirmed events, derive job states, post roots. A follower only wakes its
    /// long-polling lease requests: the leader moves job states in the shared store.
    pub async fn poll(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        let leads = self
            .store
            .try_lead(
                LEADER_ROLE,
                &self.holder,
                unix_now(),
                self.config.leader_secs,
            )
            .await?;
        let led = self.leading.swap(leads, Ordering::Relaxed);
        self.metrics
            .leader
            .store(u64::from(leads), Ordering::Relaxed);
        if !leads {
            if led {
                tracing::warn!(target: "coordinator::chain", holder = %self.holder, "lost the lead to another coordinator");
            }
            self.work.notify_waiters();
            return Ok(());
        }
        if !led {
            tracing::info!(target: "coordinator::chain", holder = %self.holder, "leading: following the chain and posting roots");
        }
        self.check_reorg().await?;
        let confirmed = self.ingest().await?;
        self.advance_jobs(confirmed).await?;
        Ok(())
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>> {
        Ok(self
            .provider
            .get_block_by_number(number.into())
            .await
            .map_err(Error::chain)?
            .map(|b| b.header.hash))
    }

    async fn check_reorg(&self) -> Result<()> {
        let stored = self.store.chain_blocks(self.config.reorg_depth).await?;
        let mut fork = None;
        for (number, hash) in &stored {
            if self.block_hash(*number).await? == Some(*hash) {
                break;
            }
            fork = Some(*number);
        }
        if let Some(number) = fork {
            let jobs = self.store.rollback_chain(number).await?;
            Metrics::inc(&self.metrics.reorgs);
            tracing::warn!(target: "coordinator::chain", from = number, ?jobs, "reorg: rolled back");
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
        let stored = self.store.chain_blocks(1).await?;
        let mut from = stored
            .first()
            .map(|(number, _)| number + 1)
            .unwrap_or(self.config.from_block);
        let range = self.config.logs_range.max(1);
        while from <= target {
            let to = target.min(from + range - 1);
            let registry = self.registry().await?;
            let filter = Filter::new()
                .address(vec![self.config.market, registry])
                .from_block(from)
                .to_block(to);
            let logs = self
                .provider
                .get_logs(&filter)
                .await
                .map_err(Error::chain)?;
            let mut events = Vec::new();
            let mut blocks = Vec::new();
            let mut stake_changed = Vec::new();
            for log in &logs {
                if log.address() == registry {
                    if let Ok(decoded) = WorkerRegistryEvents::decode_log(&log.inner) {
                        let workers = match decoded.data {
                            WorkerRegistryEvents::Slashed(e) => vec![e.worker],
                            WorkerRegistryEvents::UnstakeRequested(e) => vec![e.worker],
                            WorkerRegistryEvents::StakeWithdrawn(e) => vec![e.worker],
                            // A higher minimum can leave anyone signed in short of it.
                            WorkerRegistryEvents::MinStakeChanged(_) => {
                                self.store.signed_in_workers().await?
                            }
                            _ => Vec::new(),
                        };
                        for w in workers {
                            if !stake_changed.contains(&w) {
                                stake_changed.push(w);
                            }
                        }
                    }
                    continue;
                }
                let (Some(block_hash), Some(block_number), Some(tx_hash), Some(log_index)) = (
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
                let Some((job_id, event)) = job_event(decoded.data) else {
                    continue;
                };
                blocks.push((block_number, block_hash));
                events.push(ChainEvent {
                    block_hash,
                    block_number,
                    tx_hash,
                    log_index,
                    job_id,
                    event,
                });
            }
            let Some(end_hash) = self.block_hash(to).await? else {
                return Err(Error::Chain(format!("block {to} vanished")));
            };
            blocks.push((to, end_hash));
            for fresh in self.store.record_chain(&blocks, &events).await? {
                self.react(fresh.job_id, &fresh.event).await?;
            }
            self.end_ineligible(&stake_changed).await?;
            self.metrics.chain_block.store(to, Ordering::Relaxed);
            from = to + 1;
        }
        Ok(target)
    }

    /// Applies a confirmed event to the job it names.
    async fn react(&self, job_id: U256, event: &JobEvent) -> Result<()> {
        let store = &self.store;
        let moved = match event {
            JobEvent::JobCancelled => {
                store
                    .set_job_state(job_id, JobState::Registered, JobState::Cancelled)
                    .await?
            }
            JobEvent::JobReclaimed => {
                store
                    .set_job_state(job_id, JobState::Posted, JobState::Expired)
                    .await?
                    || store
                        .set_job_state(job_id, JobState::Registered, JobState::Expired)
                        .await?
            }
            JobEvent::JobSettled { .. } => {
                store
                    .set_job_state(job_id, JobState::Posted, JobState::Settled)
                    .await?
            }
            JobEvent::TasksPosted { tasks_root, .. } => match store.job(job_id).await? {
                Some(job) if job.state == JobState::Registered && *tasks_root != job.tasks_root => {
                    tracing::error!(target: "coordinator::chain", %job_id, posted = %tasks_root,
                        ours = %job.tasks_root, "a different root was posted");
                    store
                        .set_job_state(job_id, JobState::Registered, JobState::RootMismatch)
                        .await?
                }
                // Ours (the job becomes posted in `advance_jobs`), or a job we do not serve.
                _ => false,
            },
            JobEvent::JobCreated { .. } => false,
        };
        if moved {
            tracing::info!(target: "coordinator::chain", %job_id, event = event.name(), "job state from chain");
        }
        Ok(())
    }

    /// Registered jobs: derive their state from the chain at the confirmed block, and post
    /// roots of open ones (checking the latest state first, and never with a transaction of
    /// ours still pending).
    async fn advance_jobs(&self, confirmed: u64) -> Result<()> {
        let market = JobMarket::new(self.config.market, &self.provider);
        for job in self.store.jobs_in_state(JobState::Registered).await? {
            let at = market
                .getJob(job.job_id)
                .block(BlockId::number(confirmed))
                .call()
                .await
                .map_err(Error::chain)?;
            let Some(next) = state_from_chain(at.status, at.tasksRoot, job.tasks_root) else {
                self.maybe_post(&job).await?;
                continue;
            };
            if next == JobState::RootMismatch {
                tracing::error!(target: "coordinator::chain", job_id = %job.job_id,
                    posted = %at.tasksRoot, ours = %job.tasks_root, "a different root was posted");
            }
            if self
                .store
                .set_job_state(job.job_id, JobState::Registered, next)
                .await?
            {
                tracing::info!(target: "coordinator::chain", job_id = %job.job_id, state = %next, "job state");
                if next == JobState::Posted {
                    self.work.notify_waiters();
                }
            }
        }
        // A settlement the verifier reported but the chain no longer has (a reorg dropped it
        // before the watcher confirmed it): the job is posted again, so the verifier sees it
        // and settles it again.
        for job_id in self.store.settled_unconfirmed().await? {
            let latest = market.getJob(job_id).call().await.map_err(Error::chain)?;
            if latest.status == job_status::POSTED
                && self
                    .store
                    .set_job_state(job_id, JobState::Settled, JobState::Posted)
                    .await?
            {
                tracing::warn!(target: "coordinator::chain", %job_id, "reported settlement is not on the chain (reorg?): posted again");
            }
        }
        Ok(())
    }

    async fn maybe_post(&self, job: &JobRow) -> Result<()> {
        if let Some(tx) = job.post_tx {
            // Ours is out: wait for it, unless it failed or vanished (a reorg, a dropped tx).
            if self.poster.failed_or_vanished(tx).await? {
                tracing::warn!(target: "coordinator::chain", job_id = %job.job_id, %tx, "postTasks failed or vanished");
                self.store.set_post_tx(job.job_id, None).await?;
            }
            return Ok(());
        }
        let latest = JobMarket::new(self.config.market, &self.provider)
            .getJob(job.job_id)
            .call()
            .await
            .map_err(Error::chain)?;
        if latest.status != job_status::OPEN {
            return Ok(());
        }
        if latest.deadline <= unix_now() {
            self.store
                .set_job_state(job.job_id, JobState::Registered, JobState::Expired)
                .await?;
            return Ok(());
        }
        let commitment = self
            .store
            .check_secret(job.job_id)
            .await?
            .map(gleaner_protocol::replication::commitment);
        let tx = self
            .poster
            .post_tasks(job.job_id, job.tasks_root, job.task_count, commitment)
            .await?;
        self.store.set_post_tx(job.job_id, Some(tx)).await?;
        Metrics::inc(&self.metrics.roots_posted);
        tracing::info!(target: "coordinator::chain", job_id = %job.job_id, root = %job.tasks_root, %tx, "posted task root");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_jobs_take_their_state_from_the_chain() {
        let (ours, theirs) = (B256::repeat_byte(1), B256::repeat_byte(2));
        let cases = [
            (job_status::OPEN, B256::ZERO, None),
            (job_status::POSTED, ours, Some(JobState::Posted)),
            (job_status::SETTLING, ours, Some(JobState::Posted)),
            (job_status::SETTLED, ours, Some(JobState::Settled)),
            (job_status::POSTED, theirs, Some(JobState::RootMismatch)),
            (job_status::SETTLING, theirs, Some(JobState::RootMismatch)),
            (job_status::SETTLED, theirs, Some(JobState::RootMismatch)),
            (job_status::CANCELLED, B256::ZERO, Some(JobState::Cancelled)),
            (job_status::RECLAIMED, B256::ZERO, Some(JobState::Expired)),
        ];
        for (status, root, want) in cases {
            assert_eq!(
                state_from_chain(status, root, ours),
                want,
                "status {status}"
            );
        }
        assert!(JobState::RootMismatch.is_terminal());
    }
}
