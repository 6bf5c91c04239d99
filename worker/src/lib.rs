//! The Gleaner worker ("miner"): it prepares the task kinds it can run (loading and measuring
//! their models), signs in with its staking key, long-polls the coordinator for leases, fetches
//! hash-checked inputs, runs the lease's kind off the async runtime, uploads the output and an
//! EIP-712 signed result, and retries with backoff. On shutdown it finishes the task in hand (or
//! releases its lease) and stops.
//!
//! [`stake`] holds the miner's registry calls (stake, unstake, eligibility).
//!
//! What a task computes is its kind's business ([`gleaner_kinds::TaskKind::run`]); the worker
//! only moves bytes, signs and keeps going.
//!
//! ```no_run
//! # async fn f(signer: alloy::signers::local::PrivateKeySigner) -> Result<(), Box<dyn std::error::Error>> {
//! use gleaner_kinds::{ModelSetup, Registry};
//! use gleaner_worker::{Worker, WorkerConfig};
//! let device = gleaner_models::select_device(gleaner_models::BackendChoice::Auto)?;
//! let paths = gleaner_models::ModelPaths::new(gleaner_models::default_home());
//! let kinds = Registry::standard(&ModelSetup::new(&paths), device.clone());
//! let worker = Worker::start(WorkerConfig::new("http://127.0.0.1:8080", kinds, &device), signer).await?;
//! let stats = worker.run(std::future::pending::<()>()).await?;
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod error;
pub mod stake;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use gleaner_client::{Backoff, Client};
use gleaner_kinds::{Registry, TaskKind, TaskRef};
use gleaner_models::SelectedDevice;
use gleaner_protocol::api::{Capabilities, Lease, SubmitResult};
use gleaner_protocol::eip712;

pub use error::{Error, Result};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Coordinator base URL.
    pub coordinator_url: String,
    /// The task kinds this worker offers (those whose models are present).
    pub kinds: Registry,
    /// Adapter name it reports (`NVIDIA H200`, `llvmpipe`, `cpu`).
    pub adapter: String,
    /// Backend it reports (`wgpu`, `flex`, `ndarray`).
    pub backend: String,
    /// Long-poll wait per lease request.
    pub wait_ms: u32,
    /// Stop after this many tasks (None: run until shutdown).
    pub max_tasks: Option<u64>,
    /// The name progress lines carry.
    pub name: String,
    /// How long a sign-in signature stays valid (the coordinator accepts at most its own limit).
    pub sign_in_valid_for: Duration,
    /// First wait after the coordinator could not be reached; doubled up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest wait between two tries to reach the coordinator.
    pub backoff_max: Duration,
}

impl WorkerConfig {
    /// Defaults for a coordinator URL, running `kinds` on `device`.
    pub fn new(coordinator_url: &str, kinds: Registry, device: &SelectedDevice) -> Self {
        Self {
            coordinator_url: coordinator_url.to_owned(),
            kinds,
            adapter: device
                .adapter
                .as_ref()
                .map_or_else(|| "cpu".to_owned(), |a| a.name.clone()),
            backend: device.backend.to_owned(),
            wait_ms: 10_000,
            max_tasks: None,
            name: "worker".into(),
            sign_in_valid_for: Duration::from_secs(300),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Results accepted by the coordinator.
    pub submitted: u64,
    /// Leases given back.
    pub released: u64,
    /// Tasks that failed (and were released).
    pub failed: u64,
}

/// A signed-in worker with its kinds prepared.
pub struct Worker {
    config: WorkerConfig,
    signer: PrivateKeySigner,
    client: Client,
    domain: Eip712Domain,
    capabilities: Capabilities,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("address", &self.signer.address())
            .field("kinds", &self.capabilities.kinds)
            .finish_non_exhaustive()
    }
}

/// A model thread that panicked or was cancelled.
fn model_thread(e: tokio::task::JoinError) -> Error {
    Error::ModelThread(e.to_string())
}

impl Worker {
    /// Prepares every kind this host can run (loading and measuring models), then signs in.
    pub async fn start(config: WorkerConfig, signer: PrivateKeySigner) -> Result<Self> {
        let client = Client::new(&config.coordinator_url)?;
        let info = client.info().await?;
        let domain = eip712::domain(info.chain_id, info.market);
        let kinds = config.kinds.available();
        for k in config.kinds.iter().filter(|k| !kinds.contains(&k.id())) {
            tracing::warn!(
                target: "worker",
                kind = %k.id(),
                "not offered: its model files are missing (fetch them with scripts/setup)"
            );
        }
        if kinds.is_empty() {
            return Err(Error::NoKinds {
                known: config.kinds.names(),
            });
        }
        let mut gflops = None;
        for id in &kinds {
            let kind = Arc::clone(config.kinds.get(id)?);
            let measured = tokio::task::spawn_blocking(move || kind.prepare())
                .await
                .map_err(model_thread)??;
            gflops = gflops.or(measured);
        }
        let gflops = gflops.unwrap_or(0.0);
        tracing::info!(
            target: "worker",
            address = %signer.address(),
            gflops = format!("{gflops:.1}"),
            kinds = ?kinds,
            "measured"
        );
        let capabilities = Capabilities {
            adapter: config.adapter.clone(),
            backend: config.backend.clone(),
            memory_bytes: 0,
            gflops,
            kinds,
        }
        .round();
        let mut worker = Self {
            config,
            signer,
            client,
            domain,
            capabilities,
        };
        worker.sign_in().await?;
        Ok(worker)
    }

    /// The signed-in coordinator client (Bearer token set).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The worker's address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// What the worker told the coordinator at sign-in.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn sign_in(&mut self) -> Result<()> {
        self.client
            .sign_in(
                &self.signer,
                &self.domain,
                self.capabilities.clone(),
                self.config.sign_in_valid_for,
            )
            .await?;
        tracing::info!(target: "worker", address = %self.signer.address(), "signed in");
        Ok(())
    }

    /// Runs until `shutdown` resolves (or `max_tasks` are done): lease, compute, submit.
    /// A coordinator that cannot be reached is tried again with exponential backoff
    /// (`backoff_initial` … `backoff_max`); an expired session signs in again.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<WorkerStats> {
        let mut stats = WorkerStats::default();
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            if self.config.max_tasks.is_some_and(|m| stats.submitted >= m) {
                break;
            }
            let lease = tokio::select! {
                _ = &mut shutdown => break,
                l = self.client.lease(self.config.wait_ms) => l,
            };
            let lease = match lease {
                Ok(Some(l)) => l,
                Ok(None) => continue,
                Err(e) if e.refused_status() == Some(401) => {
                    self.sign_in().await?;
                    continue;
                }
                Err(e) if e.recoverable() => {
                    let delay = backoff.next_delay();
                    tracing::warn!(target: "worker", error = %e, retry_in = ?delay, "lease failed");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            backoff.reset();
            // A task in hand is finished even if shutdown is asked meanwhile.
            match self.execute(&lease).await {
                Ok(()) => {
                    stats.submitted += 1;
                    tracing::info!(
                        target: "worker",
                        worker = %self.config.name,
                        job = %lease.job_id,
                        task = lease.index,
                        kind = %lease.kind,
                        done = stats.submitted,
                        "result submitted"
                    );
                }
                Err(e) => {
                    stats.failed += 1;
                    tracing::warn!(target: "worker", job = %lease.job_id, task = lease.index, error = %e, "task failed; releasing");
                    if self.client.release(&lease.lease_id).await.is_ok() {
                        stats.released += 1;
                    }
                    if e.fatal() {
                        return Err(e);
                    }
                }
            }
        }
        Ok(stats)
    }

    /// Fetches, computes, uploads and signs one leased task.
    pub async fn execute(&self, lease: &Lease) -> Result<()> {
        let kind: Arc<dyn TaskKind> = Arc::clone(self.config.kinds.get(&lease.kind)?);
        let input = self.client.blob(lease.input_hash).await?;
        let task = lease.clone();
        let output = tokio::task::spawn_blocking(move || {
            let task_ref = TaskRef {
                job_id: task.job_id,
                index: task.index,
                model: &task.model,
                params: &task.params,
            };
            kind.run(&task_ref, &input)
        })
        .await
        .map_err(model_thread)??;
        let result_hash = self.client.put_blob(output).await?;
        let signature = gleaner_client::sign::task_result(
            &self.signer,
            &self.domain,
            lease.task_hash,
            result_hash,
        )?;
        self.client
            .submit(&SubmitResult {
                lease_id: lease.lease_id.clone(),
                task_hash: lease.task_hash,
                result_hash,
                signature,
            })
            .await?;
        Ok(())
    }
}
