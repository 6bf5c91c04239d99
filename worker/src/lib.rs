//! The Gleaner worker ("miner"): it probes its adapter, measures itself, signs in with its
//! staking key, long-polls the coordinator for leases, fetches and hash-checks inputs, runs the
//! model off the async runtime, uploads the output and an EIP-712 signed result, and retries
//! with backoff. On shutdown it finishes the task in hand (or releases its lease) and stops.
//!
//! ```no_run
//! # async fn f(signer: alloy::signers::local::PrivateKeySigner) -> gleaner_worker::Result<()> {
//! use gleaner_worker::{Worker, WorkerConfig};
//! let worker = Worker::start(WorkerConfig::new("http://127.0.0.1:8080"), signer).await?;
//! let stats = worker.run(std::future::pending::<()>()).await?;
//! # Ok(()) }
//! ```

mod client;
mod error;
mod probe;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::B256;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use gleaner_models::{BackendChoice, DecoderChoice, EMBED_DIM, Embedder, Generator, MiniLmFiles};
use gleaner_protocol::api::{Capabilities, Lease, SignIn, SubmitResult};
use gleaner_protocol::blob::{
    Generation, decode_prompts, decode_texts, encode_generations, encode_matrix,
};
use gleaner_protocol::eip712::{self, TaskResult, WorkerSignIn};
use gleaner_protocol::task::TaskKind;

pub use client::CoordinatorClient;
pub use error::{Error, Result};
pub use probe::{FLOPS_PER_TOKEN, Probe, probe};

/// Deliberate misbehaviour, for tests and demonstrations of slashing only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Return embeddings of reversed rows (plausible-looking but wrong vectors).
    CorruptEmbeddings,
    /// Generate honestly, then replace the second token of every output with another token
    /// (ids and text stay consistent; only the model's logits can tell).
    SubstituteTokens,
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Coordinator base URL.
    pub coordinator_url: String,
    /// Backend choice (`auto` by default).
    pub backend: BackendChoice,
    /// all-MiniLM-L6-v2 files (default: the model cache).
    pub model: MiniLmFiles,
    /// SmolLM2 GGUF for generate tasks (default: the model cache); loaded on the first generate
    /// lease. When the file is absent the worker does not offer the generate kind.
    pub smollm: PathBuf,
    /// What generates SmolLM2 tokens (verification is the verifier's).
    pub decoder: DecoderChoice,
    /// Long-poll wait per lease request.
    pub wait_ms: u32,
    /// Stop after this many tasks (None: run until shutdown).
    pub max_tasks: Option<u64>,
    /// Fault injection (tests only).
    pub fault: Option<Fault>,
    /// Where to log progress lines (None: tracing only).
    pub name: String,
}

impl WorkerConfig {
    /// Defaults for a coordinator URL.
    pub fn new(coordinator_url: &str) -> Self {
        Self {
            coordinator_url: coordinator_url.to_owned(),
            backend: BackendChoice::Auto,
            model: MiniLmFiles::from_cache(),
            smollm: gleaner_models::smollm_gguf(),
            decoder: DecoderChoice::Auto,
            wait_ms: 10_000,
            max_tasks: None,
            fault: None,
            name: "worker".into(),
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

/// A signed-in worker with its model loaded.
pub struct Worker {
    config: WorkerConfig,
    signer: PrivateKeySigner,
    client: CoordinatorClient,
    domain: Eip712Domain,
    embedder: Arc<Embedder>,
    weights_sha256: B256,
    probe: Probe,
    generator: Mutex<Option<Arc<Generator>>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("address", &self.signer.address())
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Worker {
    /// Loads the model, measures the device, and signs in.
    pub async fn start(config: WorkerConfig, signer: PrivateKeySigner) -> Result<Self> {
        let client = CoordinatorClient::new(&config.coordinator_url);
        let info = client.info().await?;
        let domain = eip712::domain(info.chain_id, info.market);
        let (files, backend) = (config.model.clone(), config.backend);
        let (embedder, weights_sha256, probe) =
            tokio::task::spawn_blocking(move || -> Result<_> {
                files.ensure_present()?;
                let sha = files.weights_sha256()?;
                let device = gleaner_models::select_device(backend)?;
                tracing::info!(target: "worker", "{}", device.describe());
                let embedder = Embedder::load(&files, device)?;
                let probe = probe(&embedder)?;
                Ok((embedder, sha, probe))
            })
            .await
            .map_err(|e| Error::Transport(format!("model thread: {e}")))??;
        let weights_sha256: B256 = weights_sha256
            .parse()
            .map_err(|_| Error::Sign("hash".into()))?;
        tracing::info!(
            target: "worker",
            address = %signer.address(),
            gflops = format!("{:.1}", probe.gflops),
            "measured"
        );
        let mut worker = Self {
            config,
            signer,
            client,
            domain,
            embedder: Arc::new(embedder),
            weights_sha256,
            probe,
            generator: Mutex::new(None),
        };
        worker.sign_in().await?;
        Ok(worker)
    }

    /// The signed-in coordinator client (Bearer token set).
    pub fn client(&self) -> &CoordinatorClient {
        &self.client
    }

    /// The worker's address.
    pub fn address(&self) -> alloy::primitives::Address {
        self.signer.address()
    }

    fn capabilities(&self) -> Capabilities {
        let dev = self.embedder.device();
        Capabilities {
            adapter: dev
                .adapter
                .as_ref()
                .map_or_else(|| "cpu".to_owned(), |a| a.name.clone()),
            backend: dev.backend.to_owned(),
            memory_bytes: 0,
            gflops: self.probe.gflops,
            kinds: if self.config.smollm.is_file() {
                vec![TaskKind::Embed, TaskKind::Generate]
            } else {
                vec![TaskKind::Embed]
            },
        }
        .round()
    }

    async fn sign_in(&mut self) -> Result<()> {
        let capabilities = self.capabilities();
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let msg = WorkerSignIn {
            worker: self.signer.address(),
            capabilitiesHash: capabilities.hash(),
            nonce,
            expiry: now_secs() + 300,
        };
        let sig = self
            .signer
            .sign_hash_sync(&eip712::digest(&msg, &self.domain))
            .map_err(|e| Error::Sign(e.to_string()))?;
        let session = self
            .client
            .sign_in(&SignIn {
                address: msg.worker,
                capabilities,
                nonce,
                expiry: msg.expiry,
                signature: sig.as_bytes().to_vec().into(),
            })
            .await?;
        self.client =
            CoordinatorClient::new(&self.config.coordinator_url).with_token(session.token);
        tracing::info!(target: "worker", address = %self.signer.address(), "signed in");
        Ok(())
    }

    /// Runs until `shutdown` resolves (or `max_tasks` are done): lease, compute, submit.
    /// Transport errors back off exponentially (1 s … 30 s); an expired session signs in again.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<WorkerStats> {
        let mut stats = WorkerStats::default();
        let mut backoff = Duration::from_secs(1);
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
                Err(Error::Refused { status: 401, .. }) => {
                    self.sign_in().await?;
                    continue;
                }
                Err(e) if e.recoverable() => {
                    tracing::warn!(target: "worker", error = %e, retry_in = ?backoff, "lease failed");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
                Err(e) => return Err(e),
            };
            backoff = Duration::from_secs(1);
            // A task in hand is finished even if shutdown is asked meanwhile.
            match self.execute(&lease).await {
                Ok(()) => {
                    stats.submitted += 1;
                    tracing::info!(
                        target: "worker",
                        worker = %self.config.name,
                        job = %lease.job_id,
                        task = lease.index,
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
                    if !e.recoverable() && matches!(e, Error::WrongModel { .. }) {
                        return Err(e);
                    }
                }
            }
        }
        Ok(stats)
    }

    /// SmolLM2, loaded on first use on the embedder's device.
    async fn generator(&self) -> Result<Arc<Generator>> {
        if let Some(g) = self.generator.lock().expect("lock").as_ref() {
            return Ok(Arc::clone(g));
        }
        let (path, decoder) = (self.config.smollm.clone(), self.config.decoder);
        let device = self.embedder.device().clone();
        tracing::info!(target: "worker", path = %path.display(), "loading SmolLM2 for generate tasks");
        let g = tokio::task::spawn_blocking(move || Generator::load_with(&path, device, decoder))
            .await
            .map_err(|e| Error::Transport(format!("model thread: {e}")))??;
        let g = Arc::new(g);
        *self.generator.lock().expect("lock") = Some(Arc::clone(&g));
        Ok(g)
    }

    fn check_model(&self, lease: &Lease, have: B256) -> Result<()> {
        if lease.model.weights_sha256 != have {
            return Err(Error::WrongModel {
                want: format!("{:x}", lease.model.weights_sha256),
                have: format!("{have:x}"),
            });
        }
        Ok(())
    }

    /// Fetches, computes, uploads and signs one leased task.
    pub async fn execute(&self, lease: &Lease) -> Result<()> {
        let output = match lease.kind {
            TaskKind::Embed => self.embed(lease).await?,
            TaskKind::Generate => self.generate(lease).await?,
        };
        let result_hash = self.client.put_blob(output).await?;
        let msg = TaskResult {
            taskHash: lease.task_hash,
            resultHash: result_hash,
            worker: self.signer.address(),
        };
        let sig = self
            .signer
            .sign_hash_sync(&eip712::digest(&msg, &self.domain))
            .map_err(|e| Error::Sign(e.to_string()))?;
        self.client
            .submit(&SubmitResult {
                lease_id: lease.lease_id.clone(),
                task_hash: lease.task_hash,
                result_hash,
                signature: sig.as_bytes().to_vec().into(),
            })
            .await
    }
}

impl Worker {
    async fn embed(&self, lease: &Lease) -> Result<Vec<u8>> {
        self.check_model(lease, self.weights_sha256)?;
        let input = self.client.get_blob(lease.input_hash).await?;
        let texts = decode_texts(&input)?;
        let embedder = Arc::clone(&self.embedder);
        let batch = lease.params.batch.max(1) as usize;
        let fault = self.config.fault;
        tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let mut v = embedder.embed(&refs, batch, |_| {})?;
            if fault == Some(Fault::CorruptEmbeddings) {
                let rows: Vec<Vec<f32>> = v
                    .chunks_exact(EMBED_DIM)
                    .rev()
                    .map(|r| r.iter().map(|x| -x).collect())
                    .collect();
                v = rows.concat();
            }
            Ok(encode_matrix("embeddings", &v, refs.len(), EMBED_DIM, &[])?)
        })
        .await
        .map_err(|e| Error::Transport(format!("model thread: {e}")))?
    }

    /// Each prompt decoded as the job's params say (greedy, or seeded per task and prompt).
    async fn generate(&self, lease: &Lease) -> Result<Vec<u8>> {
        if !self.config.smollm.is_file() {
            return Err(Error::Model(gleaner_models::Error::MissingModel {
                path: self.config.smollm.clone(),
            }));
        }
        let generator = self.generator().await?;
        let have: B256 = generator
            .weights_sha256()
            .parse()
            .map_err(|_| Error::Sign("hash".into()))?;
        self.check_model(lease, have)?;
        let input = self.client.get_blob(lease.input_hash).await?;
        let prompts = decode_prompts(&input)?;
        let (params, task, fault) = (lease.params.clone(), lease.index, self.config.fault);
        tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            // All the task's prompts in one batch: the weights are read once per step.
            let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
            let rules: Vec<_> = (0..prompts.len() as u32)
                .map(|i| generator.decoding(params.max_tokens, params.sampling, task, i))
                .collect();
            let mut outputs = Vec::with_capacity(prompts.len());
            for mut g in generator.generate_many(&refs, &rules)? {
                if fault == Some(Fault::SubstituteTokens) && g.ids.len() > 1 {
                    let vocab = generator.model().config().vocab as u32;
                    g.ids[1] = (g.ids[1] + vocab / 2) % vocab;
                    g = Generation {
                        text: generator.text(&g.ids)?,
                        ids: g.ids,
                    };
                }
                outputs.push(g);
            }
            Ok(encode_generations(&outputs))
        })
        .await
        .map_err(|e| Error::Transport(format!("model thread: {e}")))?
    }
}
