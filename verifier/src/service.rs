//! The verifier service: sign in, poll work, decide tasks, settle jobs, with backoff.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use gleaner_models::{BackendChoice, Generator};
use gleaner_protocol::api::{Decision, JobForReview, Settled, TaskForReview};
use gleaner_protocol::bindings::{JobMarket, WorkerRegistry};
use gleaner_protocol::blob::{decode_prompts, decode_texts};
use gleaner_protocol::eip712;
use gleaner_protocol::report::{ReplicaEntry, SettlementReport};
use gleaner_protocol::task::{JobManifest, TaskKind};
use tracing::{debug, error, info, instrument, warn};

use crate::chain::settle_and_slash;
use crate::client::Client;
use crate::decide::{
    Checked, Fetched, Policy, Replica, Verdict, accepted_blob, attributed, check_generations,
    check_output, decide,
};
use crate::reputation::conducts;
use crate::settlement::{JobContext, TaskRecord, build_report, report_blob};
use crate::store::Store;
use crate::{Error, Result};

/// Everything the service needs besides its key.
#[derive(Debug, Clone)]
pub struct Config {
    /// Coordinator base URL.
    pub coordinator_url: String,
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    /// JobMarket address.
    pub market: Address,
    /// Store URL (`sqlite://verifier.sqlite?mode=rwc`, `postgres://...`).
    pub db_url: String,
    /// Pause between polls when all is well.
    pub poll_interval: Duration,
    /// Longest pause after repeated failures.
    pub max_backoff: Duration,
    /// Tokens slashed per contradicting worker and job; `None`: the registry's minStake / 10.
    pub slash_amount: Option<U256>,
    /// First block of event searches (idempotency checks): the market's deployment block.
    pub logs_from_block: u64,
    /// SmolLM2 GGUF for checking generate tasks (loaded on the first one).
    pub smollm: PathBuf,
    /// Where the verifier runs its teacher-forced checks.
    pub backend: BackendChoice,
}

impl Config {
    /// A config with the defaults of `gleaner verifier run`.
    pub fn new(coordinator_url: &str, rpc_url: &str, market: Address) -> Self {
        Self {
            coordinator_url: coordinator_url.to_owned(),
            rpc_url: rpc_url.to_owned(),
            market,
            db_url: "sqlite://verifier.sqlite?mode=rwc".into(),
            poll_interval: Duration::from_millis(1_000),
            max_backoff: Duration::from_secs(30),
            slash_amount: None,
            logs_from_block: 0,
            smollm: gleaner_models::smollm_gguf(),
            backend: BackendChoice::Auto,
        }
    }
}

/// Doubling pause from `base` up to `max`, reset on success.
#[derive(Debug, Clone)]
struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(base: Duration, max: Duration) -> Self {
        let base = base.max(Duration::from_millis(10));
        Self {
            base,
            max: max.max(base),
            next: base,
        }
    }

    fn reset(&mut self) -> Duration {
        self.next = self.base;
        self.base
    }

    fn fail(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

/// Runs the verifier until `shutdown` resolves. Recoverable errors (coordinator, RPC, store
/// hiccups) are logged and retried with backoff; a problem with one job does not hold up the
/// others. Returns an error only when the store cannot be opened or the RPC URL is malformed.
pub async fn run(
    config: Config,
    signer: PrivateKeySigner,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let store = Store::open(&config.db_url).await?;
    let rpc: alloy::transports::http::reqwest::Url = config
        .rpc_url
        .parse()
        .map_err(|e| Error::Invalid(format!("RPC URL {}: {e}", config.rpc_url)))?;
    let mut svc = Service {
        client: Client::new(&config.coordinator_url)?,
        store,
        signer,
        rpc,
        domain: None,
        asked_more: HashMap::new(),
        generator: None,
        verified: HashMap::new(),
        config,
    };
    info!(target: "verifier", verifier = %svc.signer.address(), market = %svc.config.market,
          coordinator = %svc.config.coordinator_url, "verifier started");
    let mut backoff = Backoff::new(svc.config.poll_interval, svc.config.max_backoff);
    tokio::pin!(shutdown);
    loop {
        let pause = match svc.tick().await {
            Ok(()) => backoff.reset(),
            Err(e) => {
                let d = backoff.fail();
                if e.recoverable() {
                    warn!(target: "verifier", error = %e, retry_in_ms = d.as_millis() as u64, "poll failed");
                } else {
                    error!(target: "verifier", error = %e, retry_in_ms = d.as_millis() as u64, "poll failed");
                }
                d
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    info!(target: "verifier", "verifier stopped");
    Ok(())
}

struct Service {
    config: Config,
    client: Client,
    store: Store,
    signer: PrivateKeySigner,
    rpc: alloy::transports::http::reqwest::Url,
    domain: Option<(u64, Eip712Domain)>,
    /// (job, task) → replica count when `more` was asked; not asked again until more arrive.
    asked_more: HashMap<(U256, u32), usize>,
    /// SmolLM2, once a generate job needed it.
    generator: Option<Arc<Generator>>,
    /// (task hash, result hash) → the teacher-forced verdict on that output, so a task polled
    /// again (more replicas arriving) does not re-run the model on outputs already judged.
    verified: HashMap<(B256, B256), Checked>,
}

impl Service {
    /// A provider with the verifier's wallet, built afresh for each use so that a stale nonce
    /// never outlives a failed send (FACTS.md, alloy).
    fn provider(&self) -> impl Provider + Clone + use<> {
        ProviderBuilder::new()
            .wallet(self.signer.clone())
            .connect_http(self.rpc.clone())
    }

    async fn domain(&mut self) -> Result<(u64, Eip712Domain)> {
        if let Some(d) = &self.domain {
            return Ok(d.clone());
        }
        let chain_id = self
            .provider()
            .get_chain_id()
            .await
            .map_err(|e| Error::Chain(format!("chain id: {e}")))?;
        let d = (chain_id, eip712::domain(chain_id, self.config.market));
        self.domain = Some(d.clone());
        Ok(d)
    }

    async fn tick(&mut self) -> Result<()> {
        let (_, domain) = self.domain().await?;
        if !self.client.signed_in(Duration::from_secs(60)) {
            let s = self.client.sign_in(&self.signer, &domain).await?;
            info!(target: "verifier", role = %s.role, expires_at = s.expires_at, "signed in");
        }
        let work = match self.client.work().await {
            Err(Error::CoordinatorRefused { status: 401, .. }) => {
                self.client.sign_out();
                return Err(Error::CoordinatorUnavailable(
                    "session refused; signing in again".into(),
                ));
            }
            w => w?,
        };
        let mut first_err = None;
        for job in &work.jobs {
            if let Err(e) = self.job(job).await {
                warn!(target: "verifier", job_id = %job.job_id, error = %e, "job not processed");
                if e.recoverable() && first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    #[instrument(level = "debug", skip_all, fields(job_id = %job.job_id))]
    async fn job(&mut self, job: &JobForReview) -> Result<()> {
        let manifest = JobManifest::from_canonical(job.manifest.as_bytes())?;
        let hashes = manifest.task_hashes(job.job_id);
        let policy = Policy::new(job.redundancy);
        for task in &job.pending {
            if let Err(e) = self.task(job, &manifest, &hashes, &policy, task).await {
                if e.recoverable() {
                    return Err(e);
                }
                warn!(target: "verifier", job_id = %job.job_id, task = task.index, error = %e, "task not decided");
            }
        }
        if job.all_decided && job.pending.is_empty() {
            self.settle(job, &manifest).await?;
        }
        Ok(())
    }

    async fn task(
        &mut self,
        job: &JobForReview,
        manifest: &JobManifest,
        hashes: &[alloy::primitives::B256],
        policy: &Policy,
        task: &TaskForReview,
    ) -> Result<()> {
        let job_id = job.job_id;
        let index = task.index;
        if hashes.get(index as usize) != Some(&task.task_hash) {
            return Err(Error::Invalid(format!(
                "task {index}: hash {} is not the manifest's",
                task.task_hash
            )));
        }
        // Decided before a crash or a lost reply: tell the coordinator again, change nothing.
        if let Some(rec) = self.store.decision(job_id, index).await? {
            return self.post_record(job_id, &rec).await;
        }
        // One replica per worker: the first submitted counts.
        let mut views = Vec::with_capacity(task.replicas.len());
        for v in &task.replicas {
            if !views
                .iter()
                .any(|x: &&gleaner_protocol::api::ReplicaView| x.worker == v.worker)
            {
                views.push(v);
            }
        }
        if self.asked_more.get(&(job_id, index)) == Some(&views.len()) {
            return Ok(());
        }
        let (_, domain) = self.domain().await?;
        let input = manifest.tasks[index as usize].input_hash;
        let input = self.client.blob(input).await?;
        let conf = self
            .store
            .confidences(views.iter().map(|v| v.worker))
            .await?;
        let mut replicas = Vec::with_capacity(views.len());
        for v in &views {
            let blob = self.client.blob(v.result_hash).await?;
            let fetched = blob.as_deref().map_or(Fetched::Missing, Fetched::Bytes);
            let attribution = attributed(
                &domain,
                task.task_hash,
                v.worker,
                v.result_hash,
                &v.signature,
                fetched,
            );
            let checked = match (attribution, manifest.kind) {
                (Err(unattributable), _) => unattributable,
                (Ok(bytes), TaskKind::Embed) => {
                    let rows = input
                        .as_deref()
                        .and_then(|b| decode_texts(b).ok())
                        .map(|t| t.len());
                    check_output(bytes, rows)
                }
                (Ok(bytes), TaskKind::Generate) => {
                    let input = input.as_deref().ok_or_else(|| {
                        Error::CoordinatorUnavailable(format!(
                            "task {index}: the input blob is missing"
                        ))
                    })?;
                    self.verify_generations(manifest, task, v.result_hash, input, bytes)
                        .await?
                }
            };
            replicas.push(Replica {
                worker: v.worker,
                result_hash: v.result_hash,
                signature: v.signature.clone(),
                confidence: conf.get(&v.worker).copied().unwrap_or_default(),
                checked,
            });
        }
        let verdict = decide(&replicas, policy);
        debug!(target: "verifier", %job_id, task = index, replicas = replicas.len(), ?verdict, "decided");
        let accepted = match &verdict {
            Verdict::More { extra } => {
                self.client
                    .decide(&Decision {
                        job_id,
                        index,
                        verdict: "more".into(),
                        result: None,
                        quorum: Vec::new(),
                        extra_replicas: *extra,
                    })
                    .await?;
                self.asked_more.insert((job_id, index), views.len());
                info!(target: "verifier", %job_id, task = index, extra, "more replicas asked");
                return Ok(());
            }
            Verdict::Accept { quorum } => Some(
                self.client
                    .put_blob(accepted_blob(&replicas, quorum)?)
                    .await?,
            ),
            Verdict::Fail => None,
        };
        let rec = TaskRecord::new(index, task.task_hash, &replicas, &verdict, accepted)?;
        self.store
            .record_decision(job_id, &rec, &conducts(&replicas, &verdict))
            .await?;
        self.asked_more.remove(&(job_id, index));
        self.post_record(job_id, &rec).await
    }

    /// SmolLM2, loaded on first use (off the async runtime).
    async fn generator(&mut self) -> Result<Arc<Generator>> {
        if let Some(g) = &self.generator {
            return Ok(Arc::clone(g));
        }
        let (path, backend) = (self.config.smollm.clone(), self.config.backend);
        info!(target: "verifier", path = %path.display(), "loading SmolLM2 to check generate tasks");
        let g = tokio::task::spawn_blocking(move || -> Result<Generator> {
            let device = gleaner_models::select_device(backend)?;
            info!(target: "verifier", "{}", device.describe());
            // The verifier never generates: no quantized decoder.
            Ok(Generator::load_with(
                &path,
                device,
                gleaner_models::DecoderChoice::Burn,
            )?)
        })
        .await
        .map_err(|e| Error::Invalid(format!("model thread: {e}")))??;
        let g = Arc::new(g);
        self.generator = Some(Arc::clone(&g));
        Ok(g)
    }

    /// The teacher-forced check of one generate output: one forward pass per prompt.
    async fn verify_generations(
        &mut self,
        manifest: &JobManifest,
        task: &TaskForReview,
        result_hash: B256,
        input: &[u8],
        output: &[u8],
    ) -> Result<Checked> {
        if let Some(c) = self.verified.get(&(task.task_hash, result_hash)) {
            return Ok(c.clone());
        }
        let generator = self.generator().await?;
        let have: B256 = generator
            .weights_sha256()
            .parse()
            .map_err(|_| Error::Invalid("model hash".into()))?;
        if have != manifest.model.weights_sha256 {
            return Err(Error::Invalid(format!(
                "the job wants model {}, this verifier has {have}",
                manifest.model.weights_sha256
            )));
        }
        let prompts = match decode_prompts(input) {
            Ok(p) => p,
            Err(e) => {
                return Err(Error::Invalid(format!(
                    "task {}: input is not prompts: {e}",
                    task.index
                )));
            }
        };
        let (params, index, output) = (manifest.params.clone(), task.index, output.to_vec());
        let started = std::time::Instant::now();
        let checked = tokio::task::spawn_blocking(move || {
            check_generations(&output, &prompts, |i, prompt, claimed| {
                let rule = generator.decoding(params.max_tokens, params.sampling, index, i as u32);
                let check = generator.verify(prompt, claimed, &rule)?;
                Ok(check.reason)
            })
        })
        .await
        .map_err(|e| Error::Invalid(format!("model thread: {e}")))??;
        debug!(target: "verifier", task = task.index, %result_hash, ms = started.elapsed().as_millis() as u64,
               accepted = matches!(checked, Checked::Generated(_)), "generate output checked");
        if let Checked::Malformed(reason) = &checked {
            warn!(target: "verifier", task = task.index, %result_hash, %reason, "generate output rejected");
        }
        self.verified
            .insert((task.task_hash, result_hash), checked.clone());
        Ok(checked)
    }

    async fn post_record(&self, job_id: U256, rec: &TaskRecord) -> Result<()> {
        let quorum: Vec<Address> = rec
            .replicas
            .iter()
            .filter(|r| r.in_quorum)
            .map(|r| r.worker)
            .collect();
        let verdict = if rec.accepted_result.is_some() {
            "accept"
        } else {
            "fail"
        };
        let posted = self
            .client
            .decide(&Decision {
                job_id,
                index: rec.index,
                verdict: verdict.into(),
                result: rec.accepted_result,
                quorum,
                extra_replicas: 0,
            })
            .await;
        // 409: the coordinator already has a decision for the task (ours, before a restart).
        match posted {
            Err(Error::CoordinatorRefused { status: 409, .. }) | Ok(()) => {}
            Err(e) => return Err(e),
        }
        info!(target: "verifier", %job_id, task = rec.index, verdict,
              result = ?rec.accepted_result, contradictions = rec.contradictions.len(), "decision posted");
        Ok(())
    }

    async fn settle(&mut self, job: &JobForReview, manifest: &JobManifest) -> Result<()> {
        let job_id = job.job_id;
        if self.store.notified(job_id).await? {
            debug!(target: "verifier", %job_id, "already settled and reported");
            return Ok(());
        }
        let report = match self.store.report(job_id).await? {
            Some(r) => r,
            None => {
                let r = self.build_report(job, manifest).await?;
                self.store.fix_report(job_id, &r).await?
            }
        };
        let (bytes, sha) = report_blob(&report);
        self.client.put_blob(bytes).await?;
        let provider = self.provider();
        let outcome = settle_and_slash(
            &provider,
            self.config.market,
            &report,
            self.config.logs_from_block,
        )
        .await?;
        let told = self
            .client
            .settled(&Settled {
                job_id,
                report_hash: sha,
                tx_hash: outcome.settle_tx,
            })
            .await;
        // 409: the coordinator already knows (we were told before a restart, or its watcher saw it).
        match told {
            Err(Error::CoordinatorRefused { status: 409, .. }) | Ok(()) => {}
            Err(e) => return Err(e),
        }
        self.store.mark_notified(job_id, outcome.settle_tx).await?;
        info!(target: "verifier", %job_id, report_keccak = %report.hash(), report_blob = %sha,
              tx = %outcome.settle_tx, slashes = outcome.slashes.len(), "settlement reported");
        Ok(())
    }

    async fn build_report(
        &mut self,
        job: &JobForReview,
        manifest: &JobManifest,
    ) -> Result<SettlementReport> {
        let job_id = job.job_id;
        let (chain_id, _) = self.domain().await?;
        let ctx = JobContext::new(
            chain_id,
            self.config.market,
            job_id,
            manifest,
            job.tasks_root,
        );
        let mut records = self.store.decisions(job_id).await?;
        // Tasks the coordinator shows as decided that this store lacks (a lost store): take the
        // coordinator's quorum, with no contradictions (nothing is slashed on second-hand data).
        for d in &job.decided {
            if records.iter().any(|r| r.index == d.index) {
                continue;
            }
            warn!(target: "verifier", %job_id, task = d.index, "no local decision; using the coordinator's");
            records.push(TaskRecord {
                index: d.index,
                task_hash: d.task_hash,
                accepted_result: d.accepted_result,
                replicas: d
                    .replicas
                    .iter()
                    .map(|r| ReplicaEntry {
                        worker: r.worker,
                        result_hash: r.result_hash,
                        signature: r.signature.clone(),
                        in_quorum: d.accepted_result.is_some() && d.quorum.contains(&r.worker),
                    })
                    .collect(),
                contradictions: Vec::new(),
            });
        }
        let provider = self.provider();
        let market = JobMarket::new(self.config.market, &provider);
        let registry_addr = market
            .registry()
            .call()
            .await
            .map_err(|e| Error::Chain(format!("registry: {e}")))?;
        let registry = WorkerRegistry::new(registry_addr, &provider);
        let slash_amount = match self.config.slash_amount {
            Some(a) => a,
            None => {
                registry
                    .minStake()
                    .call()
                    .await
                    .map_err(|e| Error::Chain(format!("minStake: {e}")))?
                    / U256::from(10)
            }
        };
        let members: Vec<Address> = records
            .iter()
            .flat_map(|r| r.replicas.iter().filter(|x| x.in_quorum).map(|x| x.worker))
            .collect();
        let conf = self.store.confidences(members.iter().copied()).await?;
        let mut bonded = HashMap::new();
        for (w, p) in &conf {
            let b = registry
                .isBonded(*w)
                .call()
                .await
                .map_err(|e| Error::Chain(format!("isBonded: {e}")))?;
            bonded.insert(*w, b.then_some(*p));
        }
        build_report(
            &ctx,
            &records,
            |w| bonded.get(&w).copied().flatten(),
            slash_amount,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<u128> = (0..4).map(|_| b.fail().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 350, 350]);
        assert_eq!(b.reset().as_millis(), 100);
        assert_eq!(b.fail().as_millis(), 100);
        let mut z = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(z.fail().as_millis(), 10);
    }
}
