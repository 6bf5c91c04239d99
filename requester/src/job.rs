//! A job from input file to results.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use gleaner_client::Client;
use gleaner_kinds::{Outcome, Registry, SplitOptions, Written};
use gleaner_protocol::api::{JobState, JobStatus};
use gleaner_protocol::bindings::{GleanerToken, JobMarket, confirm};
use gleaner_protocol::blob::blob_hash;
use gleaner_protocol::eip712;
use gleaner_protocol::task::{
    JobManifest, KindId, MANIFEST_VERSION, SamplingParams, TaskInput, TaskParams,
};

use crate::error::chain;
use crate::{Error, Result};

/// How long the registration signature stays valid.
const REGISTRATION_VALID_S: u64 = 300;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a requester asks for, besides the input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// The task kind.
    pub kind: KindId,
    /// Inputs (texts, prompts) per task.
    pub batch: u32,
    /// The kind's token limit (generate: most new tokens per prompt; embed sets its own).
    pub max_tokens: u32,
    /// Seeded sampling (generate); `None`: greedy.
    pub sampling: Option<SamplingParams>,
    /// Wrap prompts in the model's chat template (generate).
    pub chat: bool,
    /// Spot checks instead of full replication; `None`: every task `redundancy` times.
    pub spot_checks: Option<gleaner_protocol::replication::SpotChecks>,
    /// The model's shape, step and learning rate (train).
    pub train: Option<gleaner_protocol::task::TrainParams>,
}

/// A job ready to submit: its manifest and the task input blobs, in task order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedJob {
    /// The manifest (its keccak256 is the on-chain spec hash).
    pub manifest: JobManifest,
    /// Task input blobs; `blobs[i]` hashes to `manifest.tasks[i].input_hash`.
    pub blobs: Vec<Vec<u8>>,
}

/// `temperature` and `top_p` as the manifest's integer thousandths, refusing what would not
/// survive the rounding (temperature 0.001-100, top-p 0.001-1).
pub fn sampling(temperature: f64, top_p: f64, seed: u64) -> Result<SamplingParams> {
    if !(temperature.is_finite() && (0.001..=100.0).contains(&temperature)) {
        return Err(gleaner_kinds::Error::Input(
            "temperature must be between 0.001 and 100".into(),
        )
        .into());
    }
    if !(top_p.is_finite() && (0.001..=1.0).contains(&top_p)) {
        return Err(gleaner_kinds::Error::Input("top-p must be between 0.001 and 1".into()).into());
    }
    Ok(SamplingParams {
        temperature_milli: (temperature * 1000.0).round() as u32,
        top_p_milli: (top_p * 1000.0).round() as u32,
        seed,
    })
}

/// Builds the job: the kind splits `input` into task blobs and prices them; nothing is sent.
pub fn prepare(kinds: &Registry, request: &JobRequest, input: &[u8]) -> Result<PreparedJob> {
    let kind = kinds.get(&request.kind)?;
    let params = kind.params(TaskParams {
        batch: request.batch,
        max_tokens: request.max_tokens,
        sampling: request.sampling,
        train: request.train,
    })?;
    let options = SplitOptions { chat: request.chat };
    let blobs = kind.split(input, &params, &options)?;
    let manifest = JobManifest {
        version: MANIFEST_VERSION,
        kind: request.kind.clone(),
        model: kind.model_for(input)?,
        params,
        spot_checks: request.spot_checks,
        tasks: blobs
            .iter()
            .map(|b| TaskInput {
                input_hash: blob_hash(&b.bytes),
                cost: b.cost,
            })
            .collect(),
    };
    manifest.validate()?;
    kind.validate(&manifest)?;
    Ok(PreparedJob {
        manifest,
        blobs: blobs.into_iter().map(|b| b.bytes).collect(),
    })
}

/// A job escrowed and registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The on-chain job id.
    pub job_id: U256,
    /// Tasks in the job.
    pub tasks: u32,
}

/// Uploads the inputs, escrows `budget` (base units) until `deadline` (unix seconds) with
/// `redundancy` replicas per task, and registers the signed manifest. `provider` must send
/// from `signer`'s address. `progress` hears each step.
#[allow(clippy::too_many_arguments)]
pub async fn submit(
    client: &Client,
    provider: &impl Provider,
    signer: &PrivateKeySigner,
    market: Address,
    job: &PreparedJob,
    redundancy: u16,
    budget: U256,
    deadline: u64,
    mut progress: impl FnMut(&str),
) -> Result<Submitted> {
    let me = signer.address();
    let info = client.info().await?;
    if info.market != market {
        return Err(Error::Mismatch(format!(
            "the coordinator serves market {}, not {market}",
            info.market
        )));
    }
    // Inputs first: content-addressed, so uploading twice is harmless.
    progress(&format!("uploading {} task inputs", job.blobs.len()));
    for (blob, task) in job.blobs.iter().zip(&job.manifest.tasks) {
        let h = client.put_blob(blob.clone()).await?;
        if h != task.input_hash {
            return Err(Error::Mismatch(format!(
                "the coordinator stored input {h}, expected {}",
                task.input_hash
            )));
        }
    }
    let tasks = u32::try_from(job.manifest.tasks.len())
        .map_err(|_| gleaner_protocol::Error::Invalid("too many tasks".into()))?;

    let m = JobMarket::new(market, provider);
    let token = GleanerToken::new(
        m.token().call().await.map_err(chain("token address"))?,
        provider,
    );
    let have = token.balanceOf(me).call().await.map_err(chain("balance"))?;
    if have < budget {
        return Err(Error::Funds {
            who: me,
            have,
            budget,
        });
    }
    progress("approving the budget");
    confirm("approve", token.approve(market, budget).send().await).await?;
    progress("creating the job on-chain");
    let receipt = confirm(
        "createJob",
        m.createJob(
            job.manifest.spec_hash(),
            tasks,
            redundancy,
            budget,
            deadline,
        )
        .send()
        .await,
    )
    .await?;
    let job_id = receipt
        .decoded_log::<JobMarket::JobCreated>()
        .map(|l| l.data.jobId)
        .ok_or_else(|| Error::Chain("no JobCreated event in the createJob receipt".into()))?;
    progress(&format!("registering job {job_id} with the coordinator"));
    let body = gleaner_client::sign::register_job(
        signer,
        &eip712::domain(info.chain_id, info.market),
        job_id,
        &job.manifest.canonical(),
        now() + REGISTRATION_VALID_S,
    )?;
    client.register_job(&body).await?;
    Ok(Submitted { job_id, tasks })
}

/// Polls the job every `every` until it reaches a terminal state; `on_status` sees each
/// status. Settled is `Ok`; any other end is [`Error::Ended`].
pub async fn wait(
    client: &Client,
    job_id: U256,
    every: Duration,
    mut on_status: impl FnMut(&JobStatus),
) -> Result<JobStatus> {
    loop {
        let s = client.job_status(job_id).await?;
        on_status(&s);
        if s.state == JobState::Settled {
            return Ok(s);
        }
        if s.state.is_terminal() {
            return Err(Error::Ended {
                job_id,
                state: s.state,
                reason: (s.state == JobState::RootMismatch).then(|| {
                    "a task root other than the manifest's was posted on-chain; \
                     `gleaner job reclaim` returns the escrow after the deadline"
                        .to_owned()
                }),
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// A [`ReadGrant`](gleaner_protocol::api::ReadGrant) for job `job_id`'s blobs, signed by its
/// requester `signer` in the coordinator's deployment, valid for `valid_for` (at most
/// [`MAX_GRANT_SECS`](gleaner_protocol::api::MAX_GRANT_SECS)): `grantee` = the signer's own
/// address opens the job's inputs and outputs to it; [`Address::ZERO`] opens the outputs of the
/// settled job to whoever holds the grant (a link to share).
pub async fn read_grant(
    client: &Client,
    signer: &PrivateKeySigner,
    job_id: U256,
    grantee: Address,
    valid_for: Duration,
) -> Result<gleaner_protocol::api::ReadGrant> {
    let info = client.info().await?;
    let secs = valid_for
        .as_secs()
        .min(gleaner_protocol::api::MAX_GRANT_SECS);
    Ok(gleaner_client::sign::read_grant(
        signer,
        &eip712::domain(info.chain_id, info.market),
        job_id,
        grantee,
        now().saturating_add(secs),
    )?)
}

/// Fetches the accepted outputs of `job_id` (hash-checked) and has its kind write them to
/// `out` in input order. The client must show a read grant
/// ([`Client::with_grant`], from [`read_grant`]): blobs are not public.
pub async fn results(
    client: &Client,
    kinds: &Registry,
    job_id: U256,
    out: &Path,
) -> Result<Written> {
    let r = client.job_results(job_id).await?;
    let manifest = JobManifest::from_canonical(r.manifest.as_bytes())?;
    let kind = kinds.get(&manifest.kind)?;
    let mut blobs = Vec::with_capacity(r.tasks.len());
    for t in &r.tasks {
        let input = match manifest.tasks.get(t.index as usize) {
            Some(task) if kind.results_need_inputs() => client.blob(task.input_hash).await?,
            Some(_) => Vec::new(),
            None => {
                return Err(Error::Mismatch(format!(
                    "the coordinator sent a result for task {}, outside the manifest",
                    t.index
                )));
            }
        };
        let output = match t.result {
            Some(h) => Some(client.blob(h).await?),
            None => None,
        };
        blobs.push((t.index, input, output));
    }
    let outcomes: Vec<Outcome<'_>> = blobs
        .iter()
        .map(|(index, input, output)| Outcome {
            index: *index,
            input,
            output: output.as_deref(),
        })
        .collect();
    Ok(kind.write_results(job_id, &outcomes, out)?)
}

/// Cancels a job whose tasks are not posted yet (full refund); returns the transaction hash.
pub async fn cancel(
    provider: &impl Provider,
    market: Address,
    job_id: U256,
) -> Result<alloy::primitives::B256> {
    let m = JobMarket::new(market, provider);
    let r = confirm("cancel", m.cancel(job_id).send().await).await?;
    Ok(r.transaction_hash)
}

/// Takes back the escrow of a job that will not be settled; returns the transaction hash.
/// A job past its deadline whose settlement never began is reclaimed whole; one whose chunked
/// settlement began but was not finalised within the grace period after the deadline is
/// abandoned: workers keep what earlier chunks paid them, the rest comes back.
pub async fn reclaim(
    provider: &impl Provider,
    market: Address,
    job_id: U256,
) -> Result<alloy::primitives::B256> {
    let m = JobMarket::new(market, provider);
    let status = m
        .getJob(job_id)
        .call()
        .await
        .map_err(chain("getJob"))?
        .status;
    let r = if status == gleaner_protocol::bindings::job_status::SETTLING {
        confirm(
            "abandonSettlement",
            m.abandonSettlement(job_id).send().await,
        )
        .await?
    } else {
        confirm("reclaim", m.reclaim(job_id).send().await).await?
    };
    Ok(r.transaction_hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gleaner_kinds::{Checked, Member, Output, TaskBlob, TaskKind, TaskRef};
    use gleaner_protocol::task::ModelRef;

    /// One task per line; costs its length.
    struct Lines;

    impl TaskKind for Lines {
        fn id(&self) -> KindId {
            KindId::from_static("lines")
        }
        fn model(&self) -> gleaner_kinds::Result<ModelRef> {
            Ok(ModelRef {
                id: "none".into(),
                weights_sha256: alloy::primitives::B256::repeat_byte(1),
            })
        }
        fn split(
            &self,
            input: &[u8],
            _: &TaskParams,
            _: &SplitOptions,
        ) -> gleaner_kinds::Result<Vec<TaskBlob>> {
            Ok(input
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| TaskBlob {
                    bytes: l.to_vec(),
                    cost: l.len() as u64,
                })
                .collect())
        }
        fn run(&self, _: &TaskRef<'_>, input: &[u8]) -> gleaner_kinds::Result<Vec<u8>> {
            Ok(input.to_vec())
        }
        fn check(&self, _: &TaskRef<'_>, _: &[u8], o: &[u8]) -> gleaner_kinds::Result<Checked> {
            Ok(Checked::Valid(Output::new(o.to_vec())))
        }
        fn agree(&self, a: &Output, b: &Output) -> bool {
            a.get::<Vec<u8>>() == b.get::<Vec<u8>>()
        }
        fn accept(&self, m: &[Member<'_>]) -> gleaner_kinds::Result<Vec<u8>> {
            Ok(m[0].output.get::<Vec<u8>>().cloned().unwrap_or_default())
        }
        fn write_results(
            &self,
            _: U256,
            _: &[Outcome<'_>],
            _: &Path,
        ) -> gleaner_kinds::Result<Written> {
            Ok(Written::default())
        }
    }

    fn request(kind: &str) -> JobRequest {
        JobRequest {
            kind: kind.parse().unwrap(),
            batch: 4,
            max_tokens: 8,
            sampling: None,
            chat: false,
            spot_checks: None,
            train: None,
        }
    }

    #[test]
    fn a_prepared_job_pins_each_blob_by_hash_and_cost() {
        let kinds = Registry::new().with(Lines);
        let job = prepare(&kinds, &request("lines"), b"abc\nde\n").unwrap();
        assert_eq!(job.manifest.kind.as_str(), "lines");
        assert_eq!(job.blobs, [b"abc".to_vec(), b"de".to_vec()]);
        let costs: Vec<u64> = job.manifest.tasks.iter().map(|t| t.cost).collect();
        assert_eq!(costs, [3, 2]);
        for (b, t) in job.blobs.iter().zip(&job.manifest.tasks) {
            assert_eq!(blob_hash(b), t.input_hash);
        }
        // Canonical, so the coordinator and the chain agree on its hash.
        assert_eq!(
            JobManifest::from_canonical(&job.manifest.canonical()).unwrap(),
            job.manifest
        );
    }

    #[test]
    fn an_unknown_kind_or_an_empty_input_is_refused_before_anything_is_sent() {
        let kinds = Registry::new().with(Lines);
        let err = prepare(&kinds, &request("embed"), b"x").unwrap_err();
        assert!(err.to_string().contains("this build knows: lines"), "{err}");
        let err = prepare(&kinds, &request("lines"), b"\n").unwrap_err();
        assert!(err.to_string().contains("at least one task"), "{err}");
    }

    #[test]
    fn sampling_refuses_what_would_not_survive_rounding() {
        let s = sampling(0.8, 0.9, 7).unwrap();
        assert_eq!((s.temperature_milli, s.top_p_milli, s.seed), (800, 900, 7));
        for (t, p) in [
            (0.0, 0.9),
            (101.0, 0.9),
            (f64::NAN, 0.9),
            (0.8, 0.0),
            (0.8, 1.5),
        ] {
            assert!(sampling(t, p, 1).is_err(), "{t} {p}");
        }
    }
}
