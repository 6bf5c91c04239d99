//! The chain's view: every JobMarket and WorkerRegistry event, read through JSON-RPC into a
//! [`Ledger`], plus the few contract reads a page needs (a worker's stake, balances, totals),
//! the published reports (checked against `JobSettled.reportHash`) and the audit.
//!
//! The ledger is refreshed at most once per [`REFRESH`], incrementally from the last block read;
//! when the hash of that block changed (a reorg), it is rebuilt from the first block. Every
//! money figure the explorer shows comes from here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEventInterface;
use gleaner_protocol::bindings::GleanerToken;
use gleaner_protocol::bindings::JobMarket::{self, JobMarketEvents};
use gleaner_protocol::bindings::WorkerRegistry::{self, WorkerRegistryEvents};
use gleaner_protocol::logs::{LOG_RANGE, get_logs};
use gleaner_protocol::report::SettlementReport;
use tokio::sync::Mutex;

use crate::chain::Deployment;
use crate::error::{Error, Result};

/// Longest a page reuses the ledger before reading new blocks.
const REFRESH: Duration = Duration::from_millis(700);

/// An event with where it happened.
#[derive(Debug, Clone)]
pub(crate) struct At<T> {
    pub(crate) block: u64,
    pub(crate) tx: B256,
    pub(crate) ev: T,
}

/// A job's events.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChainJob {
    pub(crate) created: Option<At<JobMarket::JobCreated>>,
    pub(crate) posted: Option<At<JobMarket::TasksPosted>>,
    pub(crate) paid: Vec<At<JobMarket::WorkerPaid>>,
    pub(crate) settled: Option<At<JobMarket::JobSettled>>,
    /// A refund outside settlement: cancelled, reclaimed, or an abandoned settlement.
    pub(crate) refunded: Option<At<(&'static str, U256)>>,
    pub(crate) slashes: Vec<At<WorkerRegistry::Slashed>>,
    /// Every transaction with one of the job's events: (block, tx, event names).
    pub(crate) txs: Vec<(u64, B256, Vec<&'static str>)>,
}

impl ChainJob {
    /// Σ `WorkerPaid.amount`.
    pub(crate) fn paid_total(&self) -> U256 {
        self.paid
            .iter()
            .fold(U256::ZERO, |s, p| s.saturating_add(p.ev.amount))
    }

    /// What the chain says of the job: created, posted, settled, cancelled...
    pub(crate) fn status(&self) -> &'static str {
        if self.settled.is_some() {
            "settled"
        } else if let Some(r) = &self.refunded {
            r.ev.0
        } else if self.posted.is_some() {
            "posted"
        } else if self.created.is_some() {
            "created"
        } else {
            "unknown"
        }
    }

    fn note_tx(&mut self, block: u64, tx: B256, name: &'static str) {
        match self.txs.iter_mut().find(|(_, t, _)| *t == tx) {
            Some((_, _, names)) => {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            None => self.txs.push((block, tx, vec![name])),
        }
    }
}

/// A stake change of a worker.
#[derive(Debug, Clone)]
pub(crate) enum StakeChange {
    Staked { amount: U256, stake: U256 },
    Unstake { amount: U256, unlock_at: u64 },
    Withdrawn { amount: U256 },
    Slashed { job: U256, amount: U256 },
}

/// A worker's events.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChainWorker {
    pub(crate) stake_changes: Vec<At<StakeChange>>,
    pub(crate) paid: Vec<At<JobMarket::WorkerPaid>>,
    pub(crate) slashes: Vec<At<WorkerRegistry::Slashed>>,
    pub(crate) withdrawn: Vec<At<U256>>,
    /// Active stake, as the events leave it.
    pub(crate) stake: U256,
    /// Unbonding stake, as the events leave it.
    pub(crate) unbonding: U256,
}

impl ChainWorker {
    pub(crate) fn earned(&self) -> U256 {
        self.paid
            .iter()
            .fold(U256::ZERO, |s, p| s.saturating_add(p.ev.amount))
    }

    pub(crate) fn slashed(&self) -> U256 {
        self.slashes
            .iter()
            .fold(U256::ZERO, |s, p| s.saturating_add(p.ev.amount))
    }
}

/// Every event read so far, by job and by worker.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledger {
    /// Next block to read.
    next: u64,
    /// The last block read and its hash (to notice reorgs).
    last: Option<(u64, B256)>,
    /// The chain's head at the last read.
    pub(crate) head: u64,
    pub(crate) jobs: BTreeMap<U256, ChainJob>,
    pub(crate) workers: BTreeMap<Address, ChainWorker>,
    pub(crate) total_paid: U256,
    pub(crate) total_slashed: U256,
    pub(crate) total_fees: U256,
    pub(crate) total_refunded: U256,
}

impl Ledger {
    fn apply(&mut self, log: &alloy::rpc::types::Log, market: Address) {
        let (Some(block), Some(tx)) = (log.block_number, log.transaction_hash) else {
            return;
        };
        macro_rules! at {
            ($ev:expr) => {
                At { block, tx, ev: $ev }
            };
        }
        if log.address() == market {
            let Ok(d) = JobMarketEvents::decode_log(&log.inner) else {
                return;
            };
            use JobMarketEvents as E;
            match d.data {
                E::JobCreated(e) => {
                    let j = self.jobs.entry(e.jobId).or_default();
                    j.note_tx(block, tx, "JobCreated");
                    j.created = Some(at!(e));
                }
                E::TasksPosted(e) => {
                    let j = self.jobs.entry(e.jobId).or_default();
                    j.note_tx(block, tx, "TasksPosted");
                    j.posted = Some(at!(e));
                }
                E::SettlementStarted(e) => {
                    self.jobs
                        .entry(e.jobId)
                        .or_default()
                        .note_tx(block, tx, "SettlementStarted");
                }
                E::WorkerPaid(e) => {
                    self.total_paid = self.total_paid.saturating_add(e.amount);
                    self.workers
                        .entry(e.worker)
                        .or_default()
                        .paid
                        .push(at!(e.clone()));
                    let j = self.jobs.entry(e.jobId).or_default();
                    j.note_tx(block, tx, "WorkerPaid");
                    j.paid.push(at!(e));
                }
                E::JobSettled(e) => {
                    self.total_fees = self.total_fees.saturating_add(e.fee);
                    self.total_refunded = self.total_refunded.saturating_add(e.refund);
                    let j = self.jobs.entry(e.jobId).or_default();
                    j.note_tx(block, tx, "JobSettled");
                    j.settled = Some(at!(e));
                }
                E::JobCancelled(e) => self.refund(e.jobId, "cancelled", e.refund, block, tx),
                E::JobReclaimed(e) => self.refund(e.jobId, "reclaimed", e.refund, block, tx),
                E::SettlementAbandoned(e) => {
                    self.refund(e.jobId, "abandoned", e.refund, block, tx);
                }
                E::Withdrawn(e) => self
                    .workers
                    .entry(e.account)
                    .or_default()
                    .withdrawn
                    .push(at!(e.amount)),
                _ => {}
            }
        } else if let Ok(d) = WorkerRegistryEvents::decode_log(&log.inner) {
            use WorkerRegistryEvents as E;
            match d.data {
                E::Staked(e) => {
                    let w = self.workers.entry(e.worker).or_default();
                    w.stake = e.stake;
                    w.stake_changes.push(at!(StakeChange::Staked {
                        amount: e.amount,
                        stake: e.stake,
                    }));
                }
                E::UnstakeRequested(e) => {
                    let w = self.workers.entry(e.worker).or_default();
                    w.stake = w.stake.saturating_sub(e.amount);
                    w.unbonding = e.unbonding;
                    w.stake_changes.push(at!(StakeChange::Unstake {
                        amount: e.amount,
                        unlock_at: e.unlockAt,
                    }));
                }
                E::StakeWithdrawn(e) => {
                    let w = self.workers.entry(e.worker).or_default();
                    w.unbonding = w.unbonding.saturating_sub(e.amount);
                    w.stake_changes
                        .push(at!(StakeChange::Withdrawn { amount: e.amount }));
                }
                E::Slashed(e) => {
                    self.total_slashed = self.total_slashed.saturating_add(e.amount);
                    let w = self.workers.entry(e.worker).or_default();
                    w.stake = w.stake.saturating_sub(e.fromStake);
                    w.unbonding = w.unbonding.saturating_sub(e.fromUnbonding);
                    w.stake_changes.push(at!(StakeChange::Slashed {
                        job: e.jobId,
                        amount: e.amount,
                    }));
                    w.slashes.push(at!(e.clone()));
                    let j = self.jobs.entry(e.jobId).or_default();
                    j.note_tx(block, tx, "Slashed");
                    j.slashes.push(at!(e));
                }
                _ => {}
            }
        }
    }

    fn refund(&mut self, job: U256, what: &'static str, amount: U256, block: u64, tx: B256) {
        self.total_refunded = self.total_refunded.saturating_add(amount);
        let j = self.jobs.entry(job).or_default();
        j.note_tx(block, tx, what);
        j.refunded = Some(At {
            block,
            tx,
            ev: (what, amount),
        });
    }
}

/// A worker's stake as `WorkerRegistry.getStake` returns it now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StakeNow {
    pub(crate) stake: U256,
    pub(crate) unbonding: U256,
    pub(crate) unlock_at: u64,
    pub(crate) eligible: bool,
    pub(crate) withdrawable: U256,
}

/// Network-wide balances read from the contracts now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Totals {
    pub(crate) staked: U256,
    pub(crate) open_escrow: U256,
}

/// A report fetched from the coordinator and checked against the chain.
#[derive(Debug, Clone)]
pub(crate) enum Report {
    /// Its keccak256 is the on-chain `reportHash` and it parses.
    Verified(Arc<SettlementReport>),
    /// The coordinator has none, or it does not match: why.
    Unavailable(String),
}

/// The audit's verdict on a settled job.
#[derive(Debug, Clone)]
pub(crate) enum Verdict {
    /// Every difference (none: OK).
    Done(Vec<String>),
    /// The audit could not run: why.
    Failed(String),
    /// Settled on-chain, but the coordinator has no report for the job yet: the verifier names
    /// it right after its settlement and slash transactions, so the audit runs again later.
    ReportPending,
}

/// The chain through JSON-RPC, with the ledger and caches.
pub(crate) struct ChainBook {
    provider: DynProvider,
    pub(crate) market: Address,
    pub(crate) registry: Address,
    pub(crate) chain_id: u64,
    pub(crate) symbol: String,
    pub(crate) decimals: u8,
    from_block: u64,
    /// The coordinator whose report the audit reads (the one an auditor would ask).
    client: gleaner_client::Client,
    ledger: Mutex<(Arc<Ledger>, Option<Instant>)>,
    reports: Mutex<HashMap<B256, Report>>,
    verdicts: Mutex<HashMap<(U256, B256), Verdict>>,
    times: Mutex<HashMap<u64, u64>>,
}

impl std::fmt::Debug for ChainBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainBook")
            .field("market", &self.market)
            .field("chain_id", &self.chain_id)
            .finish_non_exhaustive()
    }
}

impl ChainBook {
    /// Connects to `rpc_url` and reads the deployment from the market; reports and audits go
    /// through the coordinator at `coordinator_url`.
    pub(crate) async fn connect(
        rpc_url: &str,
        market: Address,
        from_block: u64,
        coordinator_url: &str,
    ) -> Result<Self> {
        let Deployment {
            provider,
            chain_id,
            registry,
            token,
        } = Deployment::read(rpc_url, market).await?;
        let t = GleanerToken::new(token, &provider);
        // Any ERC-20 may be the token: without symbol() or decimals(), say "tokens" and 18.
        let symbol = t.symbol().call().await.unwrap_or_else(|_| "tokens".into());
        let decimals = t.decimals().call().await.unwrap_or(18);
        let client = gleaner_client::Client::new(coordinator_url)
            .map_err(|e| Error::BadRequest(format!("coordinator url {coordinator_url:?}: {e}")))?;
        Ok(Self {
            provider,
            market,
            registry,
            chain_id,
            symbol,
            decimals,
            from_block,
            client,
            ledger: Mutex::new((Arc::new(Ledger::default()), None)),
            reports: Mutex::default(),
            verdicts: Mutex::default(),
            times: Mutex::default(),
        })
    }

    /// The ledger, read up to the chain's head (at most [`REFRESH`] old).
    pub(crate) async fn ledger(&self) -> Result<Arc<Ledger>> {
        let mut guard = self.ledger.lock().await;
        if guard.1.is_some_and(|t| t.elapsed() < REFRESH) {
            return Ok(guard.0.clone());
        }
        let mut ledger = (*guard.0).clone();
        if ledger.last.is_none() {
            ledger.next = self.from_block;
        }
        if let Some((n, hash)) = ledger.last
            && self.block_hash(n).await? != Some(hash)
        {
            tracing::warn!(target: "coordinator::explorer", block = n, "reorg: re-reading the chain");
            ledger = Ledger {
                next: self.from_block,
                ..Ledger::default()
            };
        }
        let head = self
            .provider
            .get_block_number()
            .await
            .map_err(Error::chain)?;
        if head >= ledger.next {
            let filter = Filter::new().address(vec![self.market, self.registry]);
            let mut logs = get_logs(&self.provider, &filter, ledger.next, head, LOG_RANGE)
                .await
                .map_err(|e| Error::Chain(e.to_string()))?;
            logs.sort_by_key(|l| (l.block_number, l.log_index));
            for log in &logs {
                ledger.apply(log, self.market);
            }
            ledger.next = head + 1;
            ledger.last = self.block_hash(head).await?.map(|h| (head, h));
        }
        ledger.head = head;
        let ledger = Arc::new(ledger);
        *guard = (ledger.clone(), Some(Instant::now()));
        Ok(ledger)
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>> {
        Ok(self
            .provider
            .get_block_by_number(number.into())
            .await
            .map_err(Error::chain)?
            .map(|b| b.header.hash))
    }

    /// A block's timestamp (cached).
    pub(crate) async fn block_time(&self, number: u64) -> Option<u64> {
        if let Some(t) = self.times.lock().await.get(&number) {
            return Some(*t);
        }
        let t = self
            .provider
            .get_block_by_number(number.into())
            .await
            .ok()??
            .header
            .timestamp;
        self.times.lock().await.insert(number, t);
        Some(t)
    }

    /// A worker's stake, eligibility and withdrawable balance, read now.
    pub(crate) async fn stake_now(&self, worker: Address) -> Result<StakeNow> {
        let r = WorkerRegistry::new(self.registry, &self.provider);
        let s = r.getStake(worker).call().await.map_err(Error::chain)?;
        let eligible = r.isEligible(worker).call().await.map_err(Error::chain)?;
        let withdrawable = JobMarket::new(self.market, &self.provider)
            .withdrawable(worker)
            .call()
            .await
            .map_err(Error::chain)?;
        Ok(StakeNow {
            stake: U256::from(s.stake),
            unbonding: U256::from(s.unbonding),
            unlock_at: s.unlockAt,
            eligible,
            withdrawable,
        })
    }

    /// Total stake and open escrow, read now.
    pub(crate) async fn totals(&self) -> Result<Totals> {
        let r = WorkerRegistry::new(self.registry, &self.provider);
        Ok(Totals {
            staked: r.totalStaked().call().await.map_err(Error::chain)?,
            open_escrow: JobMarket::new(self.market, &self.provider)
                .openEscrow()
                .call()
                .await
                .map_err(Error::chain)?,
        })
    }

    /// The published report of a settled job: fetched from the coordinator (by its sha256,
    /// which the client checks) and kept only if its keccak256 is the on-chain `reportHash`.
    pub(crate) async fn report(&self, job: U256, on_chain: B256) -> Report {
        if let Some(r) = self.reports.lock().await.get(&on_chain) {
            return r.clone();
        }
        let fetched = async {
            let sha = self
                .client
                .job_results(job)
                .await
                .map_err(|e| format!("the coordinator serves no report: {e}"))?
                .report_hash
                .ok_or("the coordinator has no report for this job yet")?;
            let bytes = self
                .client
                .blob(sha)
                .await
                .map_err(|e| format!("report blob {sha}: {e}"))?;
            if keccak256(&bytes) != on_chain {
                return Err(format!(
                    "the coordinator's report hashes to {}, not to the on-chain reportHash {on_chain}",
                    keccak256(&bytes)
                ));
            }
            SettlementReport::from_canonical(&bytes)
                .map(Arc::new)
                .map_err(|e| format!("the report does not parse: {e}"))
        }
        .await;
        let report = match fetched {
            Ok(r) => Report::Verified(r),
            Err(why) => Report::Unavailable(why),
        };
        // A verified report never changes; a missing one may come later.
        if matches!(report, Report::Verified(_)) {
            self.reports.lock().await.insert(on_chain, report.clone());
        }
        report
    }

    /// The audit of a settled job (`gleaner audit job`'s code), once per settlement.
    pub(crate) async fn verdict(&self, job: U256, settle_tx: B256) -> Verdict {
        if let Some(v) = self.verdicts.lock().await.get(&(job, settle_tx)) {
            return v.clone();
        }
        let v = match gleaner_audit::audit_job(
            &self.provider,
            self.market,
            &self.client,
            job,
            self.from_block,
        )
        .await
        {
            Ok(a) => Verdict::Done(a.differences.iter().map(ToString::to_string).collect()),
            Err(gleaner_audit::Error::ReportPending(_)) => Verdict::ReportPending,
            Err(e) => Verdict::Failed(e.to_string()),
        };
        if matches!(v, Verdict::Done(_)) {
            self.verdicts
                .lock()
                .await
                .insert((job, settle_tx), v.clone());
        }
        v
    }

    /// A cached verdict, without running the audit.
    pub(crate) async fn cached_verdict(&self, job: U256, settle_tx: B256) -> Option<Verdict> {
        self.verdicts.lock().await.get(&(job, settle_tx)).cloned()
    }
}
