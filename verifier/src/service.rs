//! The verifier service: sign in, poll work, decide tasks, settle jobs, with backoff.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use gleaner_client::{Backoff, Client};
use gleaner_kinds::{Checked, Registry, TaskKind, TaskRef};
use gleaner_protocol::api::{
    self, Capabilities, Decision, JobForReview, ReplicaView, Settled, TaskForReview,
};
use gleaner_protocol::bindings::{JobMarket, WorkerRegistry};
use gleaner_protocol::eip712;
use gleaner_protocol::replication::{self, SpotChecks, SpotSeed};
use gleaner_protocol::report::{ReplicaEntry, SettlementReport, SpotCheckReport};
use gleaner_protocol::task::{JobManifest, KindId};
use tracing::{debug, error, info, instrument, warn};

use crate::chain::settle_and_slash_in_chunks;
use crate::decide::{
    Fetched, Policy, Replica, Single, Verdict, accepted_blob, attributed, decide,
    provisional_verdict, single,
};
use crate::reputation::{Conduct, conducts, evidence};
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
    /// The task kinds the verifier can check, by name (their models load on first use).
    pub kinds: Registry,
    /// How many checked outputs to remember, so that a task polled again (more replicas
    /// arriving) does not re-run a model on outputs already judged.
    pub checked_cache: usize,
    /// How long a sign-in signature stays valid.
    pub sign_in_valid_for: Duration,
    /// How each request to the coordinator is retried.
    pub retry: gleaner_client::RetryPolicy,
    /// Most workers paid per settlement transaction (1 to the contract's 256).
    pub settle_chunk: usize,
    /// Recompute a randomly picked part of every valid output (embed: one row), where the kind
    /// can ([`TaskKind::check_part`]): a fake is then caught without a second replica.
    pub part_checks: bool,
}

impl Config {
    /// A config with the defaults of `gleaner verifier run`, checking the `kinds`.
    pub fn new(coordinator_url: &str, rpc_url: &str, market: Address, kinds: Registry) -> Self {
        Self {
            coordinator_url: coordinator_url.to_owned(),
            rpc_url: rpc_url.to_owned(),
            market,
            db_url: "sqlite://verifier.sqlite?mode=rwc".into(),
            poll_interval: Duration::from_millis(1_000),
            max_backoff: Duration::from_secs(30),
            slash_amount: None,
            logs_from_block: 0,
            kinds,
            checked_cache: 4096,
            sign_in_valid_for: Duration::from_secs(300),
            retry: gleaner_client::RetryPolicy::default(),
            settle_chunk: crate::settlement::MAX_SETTLEMENT_CHUNK,
            part_checks: true,
        }
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
        client: Client::new(&config.coordinator_url)?.with_retry(config.retry),
        store,
        signer,
        rpc,
        domain: None,
        asked_more: HashMap::new(),
        provisional: HashMap::new(),
        job_slash: HashMap::new(),
        stake_covers: HashMap::new(),
        commitments: HashMap::new(),
        beacons: std::collections::HashSet::new(),
        registry: None,
        caught: HashMap::new(),
        closing: std::collections::HashSet::new(),
        manifests: HashMap::new(),
        prefetched: HashMap::new(),
        checked: BoundedCache::new(config.checked_cache),
        config,
    };
    info!(target: "verifier", verifier = %svc.signer.address(), market = %svc.config.market,
          coordinator = %svc.config.coordinator_url, "verifier started");
    let mut backoff = Backoff::new(svc.config.poll_interval, svc.config.max_backoff);
    tokio::pin!(shutdown);
    loop {
        let pause = match svc.tick().await {
            Ok(()) => {
                backoff.reset();
                svc.config.poll_interval
            }
            Err(e) => {
                let d = backoff.next_delay();
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
    /// (job, task) → the lone replica held provisionally (spot checks): not looked at again
    /// until the rest of the job is decided. Rebuilt after a restart from the same rules.
    provisional: HashMap<(U256, u32), (Address, B256)>,
    /// job → the slash of a caught worker (spot checks raise it; see `slash_amount`).
    job_slash: HashMap<U256, U256>,
    /// (job, worker) → whether the worker's stake covers the job's slash.
    stake_covers: HashMap<(U256, Address), bool>,
    /// The market's registry address, once read.
    registry: Option<Address>,
    /// job → its on-chain spot-check commitment.
    commitments: HashMap<U256, B256>,
    /// (job, beacon) pairs checked against the chain: the beacon is the hash of the block that
    /// holds the job's commitment.
    beacons: std::collections::HashSet<(U256, B256)>,
    /// job → workers that contradicted one of its accepted quorums (spot checks: never trusted
    /// again within the job, so their provisional results are all computed again).
    caught: HashMap<U256, std::collections::HashSet<Address>>,
    /// Blobs fetched ahead for the tasks being decided (see `prefetch`), by hash.
    prefetched: HashMap<B256, std::result::Result<Option<Vec<u8>>, ()>>,
    /// job → its parsed manifest and task hashes.
    manifests: HashMap<U256, (Arc<JobManifest>, Arc<[B256]>)>,
    /// Jobs past their deadline whose last results were decided in an earlier poll: settled
    /// on the next one, whatever is still open.
    closing: std::collections::HashSet<U256>,
    /// (task hash, result hash) → the kind's verdict on that output, bounded.
    checked: BoundedCache<(B256, B256), Checked>,
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
            let s = self
                .client
                .sign_in(
                    &self.signer,
                    &domain,
                    verifier_capabilities(),
                    self.config.sign_in_valid_for,
                )
                .await?;
            info!(target: "verifier", role = %s.role, expires_at = s.expires_at, "signed in");
        }
        let work = match self.client.verifier_work().await {
            Err(e) if e.refused_status() == Some(401) => {
                self.client.sign_out();
                return Err(Error::CoordinatorUnavailable(
                    "session refused; signing in again".into(),
                ));
            }
            w => w?,
        };
        // Forget "more asked" marks of jobs the coordinator no longer lists (settled, expired).
        self.asked_more
            .retain(|(job_id, _), _| work.jobs.iter().any(|j| j.job_id == *job_id));
        let listed = |job_id: &U256| work.jobs.iter().any(|j| j.job_id == *job_id);
        self.provisional.retain(|(job_id, _), _| listed(job_id));
        self.job_slash.retain(|job_id, _| listed(job_id));
        self.stake_covers.retain(|(job_id, _), _| listed(job_id));
        self.commitments.retain(|job_id, _| listed(job_id));
        self.beacons.retain(|(job_id, _)| listed(job_id));
        self.caught.retain(|job_id, _| listed(job_id));
        self.closing.retain(listed);
        self.manifests.retain(|job_id, _| listed(job_id));
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
        // Parsed and hashed once per job: a large job's manifest is megabytes, polled often.
        let (manifest, hashes) = match self.manifests.get(&job.job_id) {
            Some(m) => m.clone(),
            None => {
                let m = Arc::new(JobManifest::from_canonical(job.manifest.as_bytes())?);
                let h: Arc<[B256]> = m.task_hashes(job.job_id).into();
                self.manifests
                    .insert(job.job_id, (Arc::clone(&m), Arc::clone(&h)));
                (m, h)
            }
        };
        let policy = Policy::new(job.redundancy);
        let spot = match (manifest.spot_checks, job.spot_seed) {
            (Some(p), Some(seed)) => {
                let on_chain = self.commitment(job.job_id).await?;
                if replication::commitment(seed.secret) != on_chain {
                    return Err(Error::Conflict(format!(
                        "the coordinator's spot-check secret does not hash to the job's \
                         on-chain commitment {on_chain}"
                    )));
                }
                // The beacon must be the commitment's block hash: a value the coordinator could
                // choose would let it steer which tasks are checked.
                if !self.beacons.contains(&(job.job_id, seed.beacon)) {
                    let found = crate::chain::commitment_in_block(
                        &self.provider(),
                        self.config.market,
                        job.job_id,
                        seed.beacon,
                    )
                    .await?;
                    if found != Some(on_chain) {
                        return Err(Error::Conflict(format!(
                            "the coordinator's spot-check beacon {} is not the hash of the block \
                             that holds the job's commitment",
                            seed.beacon
                        )));
                    }
                    self.beacons.insert((job.job_id, seed.beacon));
                }
                Some((p, seed))
            }
            (Some(_), None) => {
                debug!(target: "verifier", job_id = %job.job_id, "spot-check seed not shown yet (commitment unconfirmed)");
                return Ok(());
            }
            (None, _) => None,
        };
        let ctx = (&manifest, &hashes[..], &policy, spot);
        let pending: Vec<&TaskForReview> = job.pending.iter().collect();
        self.tasks(job, ctx, &pending, false).await?;
        // Past the deadline (`all_decided` with tasks still open) nothing more will come in.
        let past_deadline = job.all_decided && job.undecided > 0;
        // Spot checks: once every undecided task is a provisional result, or at the deadline,
        // accept those whose worker is still trusted and replicate the others (a worker
        // caught meanwhile; past the deadline those stay unaccepted).
        if spot.is_some() && job.undecided > 0 {
            let held: Vec<&TaskForReview> = job
                .pending
                .iter()
                .filter(|t| self.provisional.contains_key(&(job.job_id, t.index)))
                .collect();
            if !held.is_empty() && (held.len() == job.undecided as usize || past_deadline) {
                info!(target: "verifier", job_id = %job.job_id, tasks = held.len(), past_deadline, "deciding provisional results");
                self.tasks(job, ctx, &held, true).await?;
            }
        }
        if job.all_decided {
            if job.pending.is_empty() || self.closing.contains(&job.job_id) {
                self.settle(job, &manifest).await?;
            } else {
                // This poll's `decided` predates the decisions just posted: settle on the next.
                info!(target: "verifier", job_id = %job.job_id, decided = job.pending.len(), "past the deadline: results in were decided; settling next");
                self.closing.insert(job.job_id);
            }
        }
        Ok(())
    }

    /// Decides `tasks` of `job` (`finalize`: provisional results, see [`Service::task`]); a
    /// task that cannot be decided is logged and left for the next poll, unless the failure is
    /// recoverable (then the poll backs off). Each decision, recorded first in the store, is
    /// posted to the coordinator while the next tasks are decided ([`POSTS_IN_FLIGHT`] at
    /// most); all posts have ended when this returns.
    async fn tasks(
        &mut self,
        job: &JobForReview,
        (manifest, hashes, policy, spot): JobCtx<'_>,
        tasks: &[&TaskForReview],
        finalize: bool,
    ) -> Result<()> {
        let job_id = job.job_id;
        let mut posts = tokio::task::JoinSet::new();
        let mut failed = None;
        'chunks: for chunk in tasks.chunks(PREFETCH_TASKS) {
            if let Err(e) = self.prefetch(job_id, manifest, chunk, finalize).await {
                failed.get_or_insert(e);
                break;
            }
            for task in chunk {
                match self
                    .task(job, manifest, hashes, policy, spot, task, finalize)
                    .await
                {
                    Ok(Some(rec)) => {
                        while posts.len() >= POSTS_IN_FLIGHT {
                            let Some(done) = posts.join_next().await else {
                                break;
                            };
                            post_ended(job_id, done, &mut failed)?;
                        }
                        let client = self.client.clone();
                        posts.spawn(async move {
                            (rec.index, post_record(&client, job_id, &rec).await)
                        });
                    }
                    Ok(None) => {}
                    Err(e) if e.recoverable() => {
                        failed.get_or_insert(e);
                        break 'chunks;
                    }
                    Err(e) => {
                        warn!(target: "verifier", %job_id, task = task.index, error = %e, "task not decided");
                    }
                }
                if failed.is_some() {
                    break 'chunks;
                }
            }
        }
        while let Some(done) = posts.join_next().await {
            post_ended(job_id, done, &mut failed)?;
        }
        self.prefetched.clear();
        failed.map_or(Ok(()), Err)
    }

    /// Fetches, concurrently, the blobs that deciding `tasks` will read (inputs and outputs of
    /// the tasks not waiting for more replicas), so that the decisions, made one at a time, do
    /// not wait on one download after another. A blob that fails here is fetched again (and
    /// its error reported) when its task is decided.
    async fn prefetch(
        &mut self,
        job_id: U256,
        manifest: &JobManifest,
        tasks: &[&TaskForReview],
        finalize: bool,
    ) -> Result<()> {
        self.prefetched.clear();
        let mut wanted = Vec::new();
        for task in tasks {
            let views = distinct_views(task);
            if self.waiting(job_id, task.index, &views, finalize) {
                continue;
            }
            if let Some(t) = manifest.tasks.get(task.index as usize) {
                wanted.push(t.input_hash);
            }
            wanted.extend(views.iter().map(|v| v.result_hash));
        }
        wanted.sort_unstable();
        wanted.dedup();
        for wave in wanted.chunks(PREFETCH_CONCURRENCY) {
            let mut set = tokio::task::JoinSet::new();
            for &hash in wave {
                let client = self.client.clone();
                set.spawn(async move { (hash, client.blob_if_present(hash).await) });
            }
            while let Some(done) = set.join_next().await {
                let (hash, got) = done.map_err(|e| Error::Invalid(format!("fetch task: {e}")))?;
                if let Ok(blob) = as_fetched(got) {
                    self.prefetched.insert(hash, blob);
                }
            }
        }
        Ok(())
    }

    /// A blob a decision reads: prefetched, else fetched now (`Ok(None)`: not there;
    /// `Err(())`: what came back does not match its hash).
    async fn fetch(&self, hash: B256) -> Result<std::result::Result<Option<Vec<u8>>, ()>> {
        if let Some(blob) = self.prefetched.get(&hash) {
            return Ok(blob.clone());
        }
        Ok(as_fetched(self.client.blob_if_present(hash).await)?)
    }

    /// Whether a task is left as it is for now: `more` was asked and no replica came since,
    /// or its lone replica is held provisionally (unless it is time to `finalize` those).
    fn waiting(&self, job_id: U256, index: u32, views: &[&ReplicaView], finalize: bool) -> bool {
        if self.asked_more.get(&(job_id, index)) == Some(&views.len()) {
            return true;
        }
        !finalize
            && matches!(views, [only]
                if self.provisional.get(&(job_id, index)) == Some(&(only.worker, only.result_hash)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn task(
        &mut self,
        job: &JobForReview,
        manifest: &Arc<JobManifest>,
        hashes: &[alloy::primitives::B256],
        policy: &Policy,
        spot: Option<(SpotChecks, SpotSeed)>,
        task: &TaskForReview,
        finalize: bool,
    ) -> Result<Option<TaskRecord>> {
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
            return Ok(Some(rec));
        }
        let views = distinct_views(task);
        if self.waiting(job_id, index, &views, finalize) {
            return Ok(None);
        }
        let (_, domain) = self.domain().await?;
        let kind = Arc::clone(self.config.kinds.get(&manifest.kind)?);
        let input_hash = manifest.tasks[index as usize].input_hash;
        // A missing (or corrupt) input is the coordinator's problem, never a worker's: the kind
        // checks what it can without it (embed: the format) or says it cannot (generate).
        let input: Arc<[u8]> = match self.fetch(input_hash).await? {
            Ok(Some(bytes)) => bytes.into(),
            Ok(None) | Err(()) => {
                warn!(target: "verifier", %job_id, task = index, %input_hash, "input blob unavailable");
                Arc::from(Vec::new())
            }
        };
        let conf = self
            .store
            .confidences(views.iter().map(|v| v.worker).collect::<Vec<_>>())
            .await?;
        let mut replicas = Vec::with_capacity(views.len());
        for v in &views {
            let blob = self.fetch(v.result_hash).await?;
            let fetched = match &blob {
                Ok(Some(bytes)) => Fetched::Bytes(bytes),
                Ok(None) => Fetched::Missing,
                Err(()) => Fetched::Corrupt,
            };
            let attribution = attributed(
                &domain,
                task.task_hash,
                v.worker,
                v.result_hash,
                &v.signature,
                fetched,
            );
            let checked = match attribution {
                Err(unattributable) => unattributable,
                Ok(bytes) => {
                    let task = TaskCheck {
                        kind: Arc::clone(&kind),
                        job_id,
                        index,
                        task_hash: task.task_hash,
                        result_hash: v.result_hash,
                        manifest: Arc::clone(manifest),
                        input: Arc::clone(&input),
                    };
                    self.check(task, bytes).await?
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
        let lone = match (spot, replicas.as_slice()) {
            (Some((p, seed)), [r]) => Some((p, seed, r)),
            _ => None,
        };
        let verdict = match lone {
            Some((p, seed, r)) => {
                let trusted = self.trusted(job_id, p, r.worker).await?;
                if finalize {
                    provisional_verdict(trusted, job.redundancy)
                } else {
                    let checked = seed.is_checked(task.task_hash, p.check_ppm);
                    match single(r, job.redundancy, trusted, checked) {
                        Single::Provisional => {
                            debug!(target: "verifier", %job_id, task = index, worker = %r.worker, "held provisionally");
                            self.provisional
                                .insert((job_id, index), (r.worker, r.result_hash));
                            return Ok(None);
                        }
                        Single::Replicate { extra } => Verdict::More { extra },
                    }
                }
            }
            None => decide(&replicas, policy, kind.as_ref()),
        };
        self.provisional.remove(&(job_id, index));
        debug!(target: "verifier", %job_id, task = index, replicas = replicas.len(), ?verdict, "decided");
        let accepted = match &verdict {
            Verdict::More { extra } => {
                self.client
                    .decide(&Decision {
                        job_id,
                        index,
                        verdict: api::Verdict::More {
                            extra_replicas: *extra,
                        },
                    })
                    .await?;
                self.asked_more.insert((job_id, index), views.len());
                info!(target: "verifier", %job_id, task = index, extra, "more replicas asked");
                return Ok(None);
            }
            Verdict::Accept { quorum } => {
                let bytes = accepted_blob(&replicas, quorum, kind.as_ref())?;
                let hash = gleaner_protocol::blob::blob_hash(&bytes);
                // A replica's own output (a lone result, identical replicas) is stored already.
                if replicas.iter().any(|r| r.result_hash == hash) {
                    Some(hash)
                } else {
                    Some(self.client.put_blob(bytes).await?)
                }
            }
            Verdict::Fail => None,
        };
        let rec = TaskRecord::new(index, task.task_hash, &replicas, &verdict, accepted)?;
        // A result accepted unchecked earns its worker nothing: no confidence, no trust.
        let conducts = if lone.is_some() {
            replicas
                .iter()
                .map(|r| (r.worker, Conduct::Neutral))
                .collect()
        } else {
            conducts(&replicas, &verdict)
        };
        self.store
            .record_decision(job_id, &rec, &conducts, &evidence(&replicas, &verdict))
            .await?;
        if let Some(caught) = self.caught.get_mut(&job_id) {
            caught.extend(rec.contradictions.iter().map(|&k| rec.replicas[k].worker));
        }
        self.asked_more.remove(&(job_id, index));
        Ok(Some(rec))
    }

    /// The kind's check of one attributed output, off the async runtime, remembered so that a
    /// task polled again does not re-run a model on outputs already judged.
    async fn check(&mut self, task: TaskCheck, output: &[u8]) -> Result<Checked> {
        let key = (task.task_hash, task.result_hash);
        if let Some(c) = self.checked.get(&key) {
            return Ok(c.clone());
        }
        let (index, result_hash, output) = (task.index, task.result_hash, output.to_vec());
        let started = std::time::Instant::now();
        // Drawn now, after the output is in: the worker could not know it when computing.
        let pick = self.config.part_checks.then(random_pick);
        let checked = tokio::task::spawn_blocking(move || {
            let manifest = &task.manifest;
            let task_ref = TaskRef {
                job_id: task.job_id,
                index: task.index,
                model: &manifest.model,
                params: &manifest.params,
            };
            let checked = task.kind.check(&task_ref, &task.input, &output)?;
            if let (Checked::Valid(out), Some(pick)) = (&checked, pick)
                && let Some(reason) = task.kind.check_part(&task_ref, &task.input, out, pick)?
            {
                return Ok(Checked::Malformed(reason));
            }
            Ok::<_, gleaner_kinds::Error>(checked)
        })
        .await
        .map_err(|e| Error::Invalid(format!("check thread: {e}")))??;
        debug!(target: "verifier", task = index, %result_hash, ms = started.elapsed().as_millis() as u64,
               valid = checked.output().is_some(), "output checked");
        if let Checked::Malformed(reason) = &checked {
            warn!(target: "verifier", task = index, %result_hash, %reason, "output rejected");
        }
        self.checked.insert(key, checked.clone());
        Ok(checked)
    }

    async fn settle(&mut self, job: &JobForReview, manifest: &JobManifest) -> Result<()> {
        let job_id = job.job_id;
        if self.store.notified(job_id).await? {
            // Listed again after we reported it: settled still, or did a reorg drop it?
            let status =
                gleaner_protocol::bindings::JobMarket::new(self.config.market, self.provider())
                    .getJob(job_id)
                    .call()
                    .await
                    .map_err(|e| crate::Error::Chain(format!("getJob: {e}")))?
                    .status;
            if status == gleaner_protocol::bindings::job_status::SETTLED {
                debug!(target: "verifier", %job_id, "already settled and reported");
                return Ok(());
            }
            warn!(target: "verifier", %job_id, status, "reported settlement is not on the chain (reorg?): settling again");
        }
        let report = match self.store.report(job_id).await? {
            Some(r) => r,
            None => {
                let r = self.build_report(job, manifest).await?;
                self.store.fix_report(job_id, &r).await?
            }
        };
        let (bytes, sha) = report_blob(&report);
        self.client.put_report(bytes).await?;
        let provider = self.provider();
        let outcome = settle_and_slash_in_chunks(
            &provider,
            self.config.market,
            &report,
            self.config.logs_from_block,
            self.config.settle_chunk,
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
            Ok(()) => {}
            Err(e) if e.refused_status() == Some(409) => {}
            Err(e) => return Err(e.into()),
        }
        self.store.mark_notified(job_id, outcome.settle_tx).await?;
        info!(target: "verifier", %job_id, report_keccak = %report.hash(), report_blob = %sha,
              tx = %outcome.settle_tx, slashes = outcome.slashes.len(), "settlement reported");
        Ok(())
    }

    /// The slash of a caught worker of `job_id`: the configured amount (default the registry's
    /// minStake / 10), and for a job with spot checks at least
    /// [`replication::min_slash`] of one replica's price, so that faking is a loss
    /// (see [`gleaner_protocol::replication`]).
    async fn slash_amount(&mut self, job_id: U256, spot: Option<SpotChecks>) -> Result<U256> {
        if let Some(s) = self.job_slash.get(&job_id) {
            return Ok(*s);
        }
        let provider = self.provider();
        let market = JobMarket::new(self.config.market, &provider);
        let base = match self.config.slash_amount {
            Some(a) => a,
            None => {
                WorkerRegistry::new(self.registry().await?, &provider)
                    .minStake()
                    .call()
                    .await
                    .map_err(|e| Error::Chain(format!("minStake: {e}")))?
                    / U256::from(10)
            }
        };
        let slash = match spot {
            None => base,
            Some(p) => {
                let job = market
                    .getJob(job_id)
                    .call()
                    .await
                    .map_err(|e| Error::Chain(format!("getJob: {e}")))?;
                let slots = u128::from(job.taskCount) * u128::from(job.redundancy.max(1));
                let price = job.budget / slots.max(1);
                base.max(U256::from(replication::min_slash(price, p.check_ppm)?))
            }
        };
        self.job_slash.insert(job_id, slash);
        Ok(slash)
    }

    /// The market's worker registry (immutable in the contract), read once.
    async fn registry(&mut self) -> Result<Address> {
        if let Some(r) = self.registry {
            return Ok(r);
        }
        let r = JobMarket::new(self.config.market, self.provider())
            .registry()
            .call()
            .await
            .map_err(|e| Error::Chain(format!("registry: {e}")))?;
        self.registry = Some(r);
        Ok(r)
    }

    /// The job's on-chain spot-check commitment (zero when it has none), read once.
    async fn commitment(&mut self, job_id: U256) -> Result<B256> {
        if let Some(c) = self.commitments.get(&job_id) {
            return Ok(*c);
        }
        let c = JobMarket::new(self.config.market, self.provider())
            .checkCommitment(job_id)
            .call()
            .await
            .map_err(|e| Error::Chain(format!("checkCommitment: {e}")))?;
        self.commitments.insert(job_id, c);
        Ok(c)
    }

    /// Whether `worker` contradicted an accepted quorum of `job_id` (its decisions are read from
    /// the store once per job, then kept up to date as decisions are recorded).
    async fn caught_in(&mut self, job_id: U256, worker: Address) -> Result<bool> {
        if !self.caught.contains_key(&job_id) {
            let mut set = std::collections::HashSet::new();
            for rec in self.store.decisions(job_id).await? {
                set.extend(rec.contradictions.iter().map(|&k| rec.replicas[k].worker));
            }
            self.caught.insert(job_id, set);
        }
        Ok(self.caught[&job_id].contains(&worker))
    }

    /// Whether `worker` may be trusted on `job_id`: a streak of `trust_after` checked results,
    /// not caught on this job (trust earned back within the job does not count), and a stake
    /// that covers the job's slash (a slash takes at most what is bonded).
    async fn trusted(&mut self, job_id: U256, policy: SpotChecks, worker: Address) -> Result<bool> {
        if !policy.trusted(self.store.streak(worker).await?)
            || self.caught_in(job_id, worker).await?
        {
            return Ok(false);
        }
        if let Some(ok) = self.stake_covers.get(&(job_id, worker)) {
            return Ok(*ok);
        }
        let slash = self.slash_amount(job_id, Some(policy)).await?;
        let stake = WorkerRegistry::new(self.registry().await?, self.provider())
            .stakeOf(worker)
            .call()
            .await
            .map_err(|e| Error::Chain(format!("stakeOf: {e}")))?;
        let ok = stake >= slash;
        if !ok {
            info!(target: "verifier", %job_id, %worker, %stake, %slash, "stake below the job's slash: replicated like a new worker");
        }
        self.stake_covers.insert((job_id, worker), ok);
        Ok(ok)
    }

    async fn build_report(
        &mut self,
        job: &JobForReview,
        manifest: &JobManifest,
    ) -> Result<SettlementReport> {
        let job_id = job.job_id;
        let (chain_id, _) = self.domain().await?;
        let mut ctx = JobContext::new(
            chain_id,
            self.config.market,
            job_id,
            manifest,
            job.tasks_root,
        );
        if let Some(policy) = manifest.spot_checks {
            let seed = job.spot_seed.ok_or_else(|| {
                Error::CoordinatorUnavailable(format!(
                    "job {job_id}: the coordinator does not show the spot-check secret yet"
                ))
            })?;
            ctx.spot_checks = Some(SpotCheckReport {
                policy,
                redundancy: job.redundancy,
                seed,
            });
        }
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
        let registry = WorkerRegistry::new(self.registry().await?, &provider);
        let slash_amount = self.slash_amount(job_id, manifest.spot_checks).await?;
        let members: Vec<Address> = records
            .iter()
            .flat_map(|r| r.replicas.iter().filter(|x| x.in_quorum).map(|x| x.worker))
            .collect();
        let conf = self.store.confidences(members.to_vec()).await?;
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

/// A decision post's outcome, as [`Service::tasks`] takes it: a recoverable failure is kept in
/// `failed` (the deciding stops once the posts in flight end), any other leaves its task for
/// the next poll.
fn post_ended(
    job_id: U256,
    done: std::result::Result<(u32, Result<()>), tokio::task::JoinError>,
    failed: &mut Option<Error>,
) -> Result<()> {
    let (index, posted) = done.map_err(|e| Error::Invalid(format!("decision post task: {e}")))?;
    match posted {
        Err(e) if e.recoverable() => {
            failed.get_or_insert(e);
        }
        Err(e) => {
            warn!(target: "verifier", %job_id, task = index, error = %e, "task not decided");
        }
        Ok(()) => {}
    }
    Ok(())
}

/// Tells the coordinator a decision (already in the verifier's store), once more after a restart
/// or a lost reply: a 409 (it has the decision already) counts as told.
async fn post_record(client: &Client, job_id: U256, rec: &TaskRecord) -> Result<()> {
    let quorum: Vec<Address> = rec
        .replicas
        .iter()
        .filter(|r| r.in_quorum)
        .map(|r| r.worker)
        .collect();
    let verdict = match rec.accepted_result {
        Some(result) => api::Verdict::Accept { result, quorum },
        None => api::Verdict::Fail,
    };
    let name = verdict.name();
    let posted = client
        .decide(&Decision {
            job_id,
            index: rec.index,
            verdict,
        })
        .await;
    // 409: the coordinator already has a decision for the task (ours, before a restart).
    match posted {
        Ok(()) => {}
        Err(e) if e.refused_status() == Some(409) => {}
        Err(e) => return Err(e.into()),
    }
    info!(target: "verifier", %job_id, task = rec.index, verdict = name,
          result = ?rec.accepted_result, contradictions = rec.contradictions.len(), "decision posted");
    Ok(())
}

/// Tasks whose blobs are fetched ahead together, before they are decided one by one.
const PREFETCH_TASKS: usize = 64;
/// Blob downloads in flight at once while prefetching.
const PREFETCH_CONCURRENCY: usize = 16;
/// Decision posts in flight at once while the next tasks are decided.
const POSTS_IN_FLIGHT: usize = 16;

/// A blob download as a decision reads it: `Ok(None)` not there, `Err(())` bytes that do not
/// match the hash; any other failure stays an error.
fn as_fetched(
    got: gleaner_client::Result<Option<Vec<u8>>>,
) -> gleaner_client::Result<std::result::Result<Option<Vec<u8>>, ()>> {
    match got {
        Ok(blob) => Ok(Ok(blob)),
        Err(gleaner_client::Error::BadBlob { .. }) => Ok(Err(())),
        Err(e) => Err(e),
    }
}

/// A task's replicas, one per worker: the first submitted counts.
fn distinct_views(task: &TaskForReview) -> Vec<&ReplicaView> {
    let mut views: Vec<&ReplicaView> = Vec::with_capacity(task.replicas.len());
    for v in &task.replicas {
        if !views.iter().any(|x| x.worker == v.worker) {
            views.push(v);
        }
    }
    views
}

/// What deciding a job's tasks needs besides the job: its manifest, task hashes, decision
/// policy and spot checks.
type JobCtx<'a> = (
    &'a Arc<JobManifest>,
    &'a [B256],
    &'a Policy,
    Option<(SpotChecks, SpotSeed)>,
);

/// What the verifier states at sign-in: it runs no tasks.
fn verifier_capabilities() -> Capabilities {
    Capabilities {
        adapter: "verifier".into(),
        backend: "none".into(),
        memory_bytes: 0,
        gflops: 0.0,
        kinds: vec![KindId::EMBED],
    }
}

/// A uniformly random `u64` from `rand`'s thread-local CSPRNG: which part of an output
/// [`TaskKind::check_part`] recomputes.
fn random_pick() -> u64 {
    rand08::random()
}

/// One output to check, owned, for the checking thread.
struct TaskCheck {
    kind: Arc<dyn TaskKind>,
    job_id: U256,
    index: u32,
    task_hash: B256,
    result_hash: B256,
    manifest: Arc<JobManifest>,
    input: Arc<[u8]>,
}

/// A map that forgets its oldest entries beyond `cap`.
struct BoundedCache<K, V> {
    cap: usize,
    map: HashMap<K, V>,
    order: std::collections::VecDeque<K>,
}

impl<K: std::hash::Hash + Eq + Clone, V> BoundedCache<K, V> {
    fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            map: HashMap::new(),
            order: std::collections::VecDeque::new(),
        }
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
        }
        while self.map.len() > self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_cache_forgets_its_oldest_entries() {
        let mut c = BoundedCache::new(2);
        c.insert(1, "a");
        c.insert(2, "b");
        c.insert(1, "a2");
        assert_eq!(c.get(&1), Some(&"a2"));
        c.insert(3, "c");
        assert_eq!(
            (c.get(&1), c.get(&2), c.get(&3)),
            (None, Some(&"b"), Some(&"c"))
        );
        for i in 0..100 {
            c.insert(i, "x");
        }
        assert_eq!((c.map.len(), c.order.len()), (2, 2));
    }
}
