//! `gleaner job`: submit work, follow it, collect results (the requester library does the work).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::U256;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use gleaner_client::Client;
use gleaner_protocol::task::KindId;
use gleaner_requester::JobRequest;
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::{
    ChainArgs, KeyArgs, format_amount, parse_amount, parse_duration, provider, runtime,
};

/// Submit jobs and collect their results.
///
/// Examples:
///   gleaner job submit --kind embed --input corpus.txt --batch 16 --redundancy 2 \
///       --budget 100 --deadline 1h --wait --keystore requester.json --market 0x...
///   gleaner job submit --kind generate --input prompts.jsonl --batch 2 --max-tokens 32 \
///       --chat --budget 50 --wait --keystore requester.json --market 0x...
///   gleaner job submit --kind embed --input corpus.txt --redundancy 2 --spot-check 0.05 \
///       --budget 100 --wait --keystore requester.json --market 0x...
///   gleaner job submit --kind generate --input prompts.jsonl --temperature 0.8 --top-p 0.9 \
///       --seed 7 --budget 50 --keystore requester.json --market 0x...
///   gleaner job submit --kind train --input demo/train.txt --steps 5 --shards 3 --batch 8 \
///       --lr 0.05 --budget 10 --checkpoints ckpt --keystore requester.json --market 0x...
///   gleaner job status 1
///   gleaner job results 1 --out vectors.jsonl --keystore requester.json
///   gleaner job share 1 --for 7d --keystore requester.json
///   gleaner job results 1 --out vectors.jsonl --grant 1.0x0000…0000.1767225600.0x…
///   gleaner job cancel 1 --keystore requester.json --market 0x...
#[derive(Debug, Subcommand)]
#[command(verbatim_doc_comment)]
pub enum JobCommand {
    /// Escrow a budget on-chain and hand the job to the coordinator.
    Submit(Box<SubmitArgs>),
    /// Where a job stands (coordinator view).
    Status(StatusArgs),
    /// Write the accepted outputs in input order (blobs are not public: the requester's key
    /// signs a read grant for itself, or show a grant someone shared).
    Results(ResultsArgs),
    /// Print a read grant that lets whoever holds it read the job's outputs once it is
    /// settled (a link to share; expires).
    Share(ShareArgs),
    /// Cancel a job whose tasks are not posted yet (full refund).
    Cancel(OnChainArgs),
    /// Reclaim the escrow of a job past its deadline that was never settled (a chunked
    /// settlement left unfinished past the grace period is abandoned: workers keep what they
    /// were paid, the rest comes back).
    Reclaim(OnChainArgs),
}

/// Coordinator location.
#[derive(Debug, Clone, Args)]
pub(crate) struct CoordinatorArg {
    /// Coordinator URL.
    #[arg(
        long,
        env = "GLEANER_COORDINATOR_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub coordinator_url: String,
}

/// Options of `job submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    chain: ChainArgs,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    coord: CoordinatorArg,
    /// Task kind: embed (sentence embeddings with all-MiniLM-L6-v2), generate (text with
    /// SmolLM2-135M-Instruct, greedy or seeded sampling) or train (SGD steps of a small
    /// byte-level GPT on a text, one job per step; see --steps).
    #[arg(long, default_value = "embed")]
    pub kind: KindId,
    /// Input file. embed: one text per line. generate: JSON lines, one {"prompt": "..."} each.
    /// train: any text (the model learns its bytes).
    #[arg(long)]
    pub input: PathBuf,
    /// Inputs (texts or prompts) per task; train: sequences per task (data shard).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,
    /// generate: most new tokens per prompt.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=2048))]
    pub max_tokens: u32,
    /// generate: wrap each prompt in the model's chat template (one user turn).
    #[arg(long)]
    pub chat: bool,
    /// generate: sample at this temperature (0.001-100, 3 decimals) instead of greedy decoding.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// generate: nucleus mass for sampling (0.001-1, 3 decimals).
    #[arg(long, default_value_t = 1.0, requires = "temperature")]
    pub top_p: f64,
    /// generate: the job's sampling seed (each prompt derives its own from it).
    #[arg(long, default_value_t = 0, requires = "temperature")]
    pub seed: u64,
    /// Replicas per task, on distinct workers. With --spot-check, the most a task is computed
    /// for its check (the budget escrows that many; what is not needed is refunded).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub redundancy: u16,
    /// Spot checks instead of full replication: a trusted worker's task is computed once, and
    /// this share of tasks (0-1, e.g. 0.05), drawn from a secret committed on-chain before
    /// leasing, is computed --redundancy times anyway. New workers are always replicated.
    #[arg(long, value_parser = parse_share)]
    pub spot_check: Option<u32>,
    /// With --spot-check: checked-and-agreed results a worker needs before it is trusted.
    #[arg(long, default_value_t = gleaner_protocol::replication::DEFAULT_TRUST_AFTER,
          requires = "spot_check", value_parser = clap::value_parser!(u32).range(1..))]
    pub trust_after: u32,
    /// Budget in tokens (escrowed; the unaccepted share and dust are refunded).
    #[arg(long)]
    pub budget: String,
    /// Deadline from now: 90s, 30m, 2h, 1d.
    #[arg(long, default_value = "1h")]
    pub deadline: String,
    /// Wait, with a progress bar, until the job is settled (train always waits).
    #[arg(long)]
    pub wait: bool,
    /// train: SGD steps, one job each: the command waits for each step to settle, writes the
    /// next checkpoint, and submits the next step from it (--budget and --deadline are per
    /// step).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub steps: u32,
    /// train: tasks (data shards) per step, --batch sequences each.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub shards: u32,
    /// train: sequence length in bytes (the model's context).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=2048))]
    pub context: u32,
    /// train: learning rate of plain SGD (at most 6 decimals).
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// train: model width (a new model; --from keeps the checkpoint's shape).
    #[arg(long, default_value_t = 192)]
    pub dim: u32,
    /// train: transformer blocks.
    #[arg(long, default_value_t = 4)]
    pub layers: u32,
    /// train: attention heads (dividing --dim).
    #[arg(long, default_value_t = 6)]
    pub heads: u32,
    /// train: seed of the new model's initial weights.
    #[arg(long, default_value_t = 0)]
    pub init_seed: u64,
    /// train: continue from this checkpoint (e.g. the last step-N.safetensors of a run that
    /// stopped) instead of new weights; the data order continues from its step.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// train: where each step's checkpoint is written (step-N.safetensors).
    #[arg(long, default_value = "checkpoints")]
    pub checkpoints: PathBuf,
    /// train: print one JSON object per step on stdout, then a summary
    /// ({"jobs", "losses", "checkpoint"}).
    #[arg(long)]
    pub json: bool,
}

/// Options of `job status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Job id.
    pub job_id: U256,
    #[command(flatten)]
    coord: CoordinatorArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `job results`.
#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// Job id.
    pub job_id: U256,
    #[command(flatten)]
    coord: CoordinatorArg,
    /// Output file. embed: `.safetensors` writes one [n, 384] tensor, anything else JSON lines
    /// of vectors. generate: JSON lines {"prompt", "ids", "text"}. train: the checkpoint after
    /// the job's step (safetensors: every parameter by name, the step's loss in the metadata).
    #[arg(long)]
    pub out: PathBuf,
    /// A read grant someone shared (`gleaner job share`), instead of the requester's keystore.
    #[arg(long, conflicts_with = "keystore")]
    pub grant: Option<String>,
    /// The requester's keystore: it signs a short read grant for itself.
    #[arg(long, env = "GLEANER_KEYSTORE", required_unless_present = "grant")]
    pub keystore: Option<PathBuf>,
    /// File whose first line is the keystore password (for scripts).
    #[arg(long, env = "GLEANER_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// The keystore password itself (visible to other local users; prefer --password-file).
    #[arg(
        long = "unsafe-password",
        env = "GLEANER_PASSWORD",
        hide_env_values = true
    )]
    pub unsafe_password: Option<String>,
}

/// Options of `job share`.
#[derive(Debug, Args)]
pub struct ShareArgs {
    /// Job id.
    pub job_id: U256,
    #[command(flatten)]
    coord: CoordinatorArg,
    #[command(flatten)]
    key: KeyArgs,
    /// How long the grant works: 90s, 30m, 2h, 7d (at most 7 days).
    #[arg(long = "for", default_value = "1d")]
    pub valid_for: String,
}

/// A job id with chain and key.
#[derive(Debug, Args)]
pub struct OnChainArgs {
    /// Job id.
    pub job_id: U256,
    #[command(flatten)]
    chain: ChainArgs,
    #[command(flatten)]
    key: KeyArgs,
}

pub(crate) fn run(cmd: JobCommand) -> anyhow::Result<()> {
    let rt = runtime()?;
    match cmd {
        JobCommand::Submit(a) => rt.block_on(submit(*a)),
        JobCommand::Status(a) => rt.block_on(status(a)),
        JobCommand::Results(a) => rt.block_on(results(a)),
        JobCommand::Share(a) => rt.block_on(share(a)),
        JobCommand::Cancel(a) => rt.block_on(cancel_or_reclaim(a, true)),
        JobCommand::Reclaim(a) => rt.block_on(cancel_or_reclaim(a, false)),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A share in (0, 1] as parts per million (`0.05` → 50,000).
fn parse_share(s: &str) -> Result<u32, String> {
    let x: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number between 0 and 1"))?;
    if !(x > 0.0 && x <= 1.0) {
        return Err(format!(
            "{s} is not in (0, 1]: e.g. 0.05 checks 5% of tasks"
        ));
    }
    let ppm = (x * 1e6).round() as u32;
    if ppm == 0 {
        return Err(format!("{s} is below one in a million"));
    }
    Ok(ppm)
}

/// The built-in kinds, to prepare jobs and write results (no model runs here).
fn kinds() -> gleaner_kinds::Registry {
    let paths = gleaner_models::ModelPaths::new(gleaner_models::default_home());
    gleaner_kinds::Registry::standard_cpu(&gleaner_kinds::ModelSetup::new(&paths))
}

async fn submit(a: SubmitArgs) -> anyhow::Result<()> {
    if a.kind == KindId::TRAIN {
        return train(a).await;
    }
    let sampling = match a.temperature {
        Some(t) => Some(gleaner_requester::sampling(t, a.top_p, a.seed)?),
        None => None,
    };
    let request = JobRequest {
        kind: a.kind.clone(),
        batch: a.batch,
        max_tokens: a.max_tokens,
        sampling,
        chat: a.chat,
        spot_checks: spot_checks(&a),
        train: None,
    };
    if request.spot_checks.is_some() && a.redundancy < 2 {
        bail!("--spot-check needs --redundancy 2 or more: a checked task is computed again");
    }
    let bytes =
        std::fs::read(&a.input).with_context(|| format!("cannot open {}", a.input.display()))?;
    let job = gleaner_requester::prepare(&kinds(), &request, &bytes)
        .with_context(|| format!("in {}", a.input.display()))?;
    let budget = parse_amount(&a.budget)?;
    if budget.is_zero() {
        bail!("--budget must be positive");
    }
    let deadline = now() + parse_duration(&a.deadline)?.as_secs();
    let signer = a.key.signer()?;
    let client = Client::new(&a.coord.coordinator_url)?;
    let p = provider(&a.chain, signer.clone())?;
    let submitted = gleaner_requester::submit(
        &client,
        &p,
        &signer,
        a.chain.market,
        &job,
        a.redundancy,
        budget,
        deadline,
        |step| eprintln!("{step}"),
    )
    .await
    .context("submitting the job")?;
    eprintln!(
        "job {}: {} tasks × {} replicas escrowing {} tokens",
        submitted.job_id,
        submitted.tasks,
        a.redundancy,
        format_amount(budget)
    );
    println!("{}", submitted.job_id);
    if a.wait {
        wait_settled(&client, submitted.job_id).await?;
    }
    Ok(())
}

fn spot_checks(a: &SubmitArgs) -> Option<gleaner_protocol::replication::SpotChecks> {
    a.spot_check
        .map(|check_ppm| gleaner_protocol::replication::SpotChecks {
            check_ppm,
            trust_after: a.trust_after,
        })
}

/// `job submit --kind train`: one job per SGD step, each from the checkpoint the last wrote.
async fn train(a: SubmitArgs) -> anyhow::Result<()> {
    use gleaner_models::gpt::{BYTE_VOCAB, Checkpoint, GptConfig, sequences};
    if !(a.lr.is_finite() && a.lr > 0.0 && a.lr <= 1000.0) {
        bail!("--lr must be a number in (0, 1000]");
    }
    let lr_micro = (a.lr * 1e6).round() as u32;
    if lr_micro == 0 || (f64::from(lr_micro) / 1e6 - a.lr).abs() > 1e-9 {
        bail!("--lr {} has more than 6 decimals", a.lr);
    }
    if a.chat || a.temperature.is_some() {
        bail!("--chat and --temperature apply to generate jobs only");
    }
    if a.spot_check.is_some() && a.redundancy < 2 {
        bail!("--spot-check needs --redundancy 2 or more: a checked task is computed again");
    }
    let text =
        std::fs::read(&a.input).with_context(|| format!("cannot open {}", a.input.display()))?;
    let mut ckpt = match &a.from {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot open {}", path.display()))?;
            Checkpoint::from_bytes(&bytes).with_context(|| format!("in {}", path.display()))?
        }
        None => Checkpoint::init(
            GptConfig {
                vocab: BYTE_VOCAB,
                dim: a.dim as usize,
                layers: a.layers as usize,
                heads: a.heads as usize,
                context: a.context as usize,
            },
            a.init_seed,
        )?,
    };
    let config = ckpt.config;
    let per_step = a.shards as usize * a.batch as usize;
    // Refuse a corpus too short for one sequence before anything is escrowed.
    sequences(&text, config.context, 0, 1).with_context(|| format!("in {}", a.input.display()))?;
    let budget = parse_amount(&a.budget)?;
    if budget.is_zero() {
        bail!("--budget must be positive");
    }
    std::fs::create_dir_all(&a.checkpoints)
        .with_context(|| format!("cannot create {}", a.checkpoints.display()))?;
    let signer = a.key.signer()?;
    let client = Client::new(&a.coord.coordinator_url)?;
    let p = provider(&a.chain, signer.clone())?;
    let kinds = kinds();
    eprintln!(
        "training a {}-parameter GPT ({} blocks, width {}, {} heads, context {}) for {} steps \
         of {} sequences ({} tasks × {}), SGD lr {}",
        config.params(),
        config.layers,
        config.dim,
        config.heads,
        config.context,
        a.steps,
        per_step,
        a.shards,
        a.batch,
        a.lr
    );
    let (mut jobs, mut losses) = (Vec::new(), Vec::new());
    let first = ckpt.step;
    let mut path = a.from.clone();
    for step in first..first + a.steps {
        let tokens = sequences(
            &text,
            config.context,
            u64::from(step) * per_step as u64,
            per_step,
        )?;
        let input = gleaner_kinds::TrainInput {
            checkpoint: ckpt.to_bytes()?,
            tokens,
            rows: per_step,
            width: config.context + 1,
            step,
            lr_micro,
        }
        .to_blob()?;
        let request = JobRequest {
            kind: KindId::TRAIN,
            batch: a.batch,
            max_tokens: u32::try_from(config.context)?,
            sampling: None,
            chat: false,
            spot_checks: spot_checks(&a),
            train: Some(gleaner_kinds::train_params(&config, step, lr_micro)?),
        };
        let job = gleaner_requester::prepare(&kinds, &request, &input)?;
        let deadline = now() + parse_duration(&a.deadline)?.as_secs();
        let submitted = gleaner_requester::submit(
            &client,
            &p,
            &signer,
            a.chain.market,
            &job,
            a.redundancy,
            budget,
            deadline,
            |m| eprintln!("step {step}: {m}"),
        )
        .await
        .with_context(|| resume_hint(step, path.as_deref()))?;
        eprintln!(
            "step {step}: job {} ({} tasks × {} replicas, {} tokens escrowed)",
            submitted.job_id,
            submitted.tasks,
            a.redundancy,
            format_amount(budget)
        );
        wait_settled(&client, submitted.job_id)
            .await
            .with_context(|| resume_hint(step, path.as_deref()))?;
        let grant = gleaner_requester::read_grant(
            &client,
            &signer,
            submitted.job_id,
            signer.address(),
            OWN_GRANT,
        )
        .await?;
        let out = a.checkpoints.join(format!("step-{}.safetensors", step + 1));
        let written = gleaner_requester::results(
            &client.clone().with_grant(&grant),
            &kinds,
            submitted.job_id,
            &out,
        )
        .await
        .with_context(|| resume_hint(step, path.as_deref()))?;
        if !written.missing.is_empty() {
            eprintln!(
                "step {step}: tasks without an accepted gradient (left out of the step): {:?}",
                written.missing
            );
        }
        ckpt = Checkpoint::from_bytes(&std::fs::read(&out)?)
            .with_context(|| format!("in {}", out.display()))?;
        let loss = ckpt.loss.unwrap_or(f32::NAN);
        eprintln!(
            "step {step}: loss {loss:.4}, checkpoint {} (job {})",
            out.display(),
            submitted.job_id
        );
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "step": step,
                    "job": submitted.job_id.to_string(),
                    "loss": loss,
                    "checkpoint": out.display().to_string(),
                })
            );
        }
        jobs.push(submitted.job_id.to_string());
        losses.push(loss);
        path = Some(out);
    }
    let last = path.map(|p| p.display().to_string()).unwrap_or_default();
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "jobs": jobs, "losses": losses, "checkpoint": last })
        );
    } else {
        println!("{last}");
    }
    Ok(())
}

/// How to continue a training run that stopped at `step`.
fn resume_hint(step: u32, last: Option<&std::path::Path>) -> String {
    match last {
        Some(p) => format!(
            "step {step} did not finish; continue with --from {}",
            p.display()
        ),
        None => format!("step {step} did not finish; run the command again"),
    }
}

/// Polls the coordinator with a progress bar until the job ends; an end other than settled is
/// an error.
pub(crate) async fn wait_settled(client: &Client, job_id: U256) -> anyhow::Result<()> {
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} job {msg} [{bar:30}] {pos}/{len} replicas {elapsed}",
        )
        .expect("template"),
    );
    let waited = gleaner_requester::wait(client, job_id, Duration::from_millis(500), |s| {
        bar.set_length(u64::from(s.tasks) * u64::from(s.redundancy));
        bar.set_position(u64::from(s.replicas_done));
        bar.set_message(format!(
            "{job_id} {} ({}/{} accepted)",
            s.state, s.tasks_accepted, s.tasks
        ));
    })
    .await;
    match waited {
        Ok(_) => bar.finish(),
        Err(_) => bar.abandon(),
    }
    Ok(waited.map(drop)?)
}

async fn status(a: StatusArgs) -> anyhow::Result<()> {
    let s = Client::new(&a.coord.coordinator_url)?
        .job_status(a.job_id)
        .await?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!("job       {}", s.job_id);
        println!("state     {}", s.state);
        println!(
            "tasks     {} ({} accepted, {} failed)",
            s.tasks, s.tasks_accepted, s.tasks_failed
        );
        println!(
            "replicas  {}/{}",
            s.replicas_done,
            u64::from(s.tasks) * u64::from(s.redundancy)
        );
        if let Some(h) = s.report_hash {
            println!("report    {h}");
        }
    }
    Ok(())
}

/// Blob reads of a job's results last at most this long.
const OWN_GRANT: std::time::Duration = std::time::Duration::from_secs(3600);

async fn results(a: ResultsArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.coord.coordinator_url)?;
    let grant = match (a.grant, a.keystore) {
        (Some(token), _) => gleaner_protocol::api::ReadGrant::parse(&token)?,
        (None, Some(keystore)) => {
            let signer = KeyArgs {
                keystore,
                password_file: a.password_file,
                unsafe_password: a.unsafe_password,
            }
            .signer()?;
            gleaner_requester::read_grant(&client, &signer, a.job_id, signer.address(), OWN_GRANT)
                .await?
        }
        (None, None) => anyhow::bail!("give --keystore (the requester's) or --grant"),
    };
    let client = client.with_grant(&grant);
    let written = gleaner_requester::results(&client, &kinds(), a.job_id, &a.out).await?;
    if !written.missing.is_empty() {
        eprintln!(
            "tasks without an accepted result (skipped): {:?}",
            written.missing
        );
    }
    eprintln!(
        "wrote {} {} to {}",
        written.items,
        written.unit,
        a.out.display()
    );
    Ok(())
}

async fn share(a: ShareArgs) -> anyhow::Result<()> {
    let valid_for = parse_duration(&a.valid_for)?;
    if valid_for.as_secs() > gleaner_protocol::api::MAX_GRANT_SECS {
        anyhow::bail!(
            "--for {} is longer than the 7 days a grant may last",
            a.valid_for
        );
    }
    let client = Client::new(&a.coord.coordinator_url)?;
    let signer = a.key.signer()?;
    let grant = gleaner_requester::read_grant(
        &client,
        &signer,
        a.job_id,
        alloy::primitives::Address::ZERO,
        valid_for,
    )
    .await?;
    eprintln!(
        "whoever holds this grant may read job {}'s outputs once it is settled, until unix {}:\n  \
         gleaner job results {} --grant TOKEN --out FILE\n  \
         curl -H '{}: TOKEN' {}/v1/blobs/HASH",
        a.job_id,
        grant.expiry,
        a.job_id,
        gleaner_protocol::api::GRANT_HEADER,
        client.base_url()
    );
    println!("{}", grant.token());
    Ok(())
}

async fn cancel_or_reclaim(a: OnChainArgs, cancel: bool) -> anyhow::Result<()> {
    let p = provider(&a.chain, a.key.signer()?)?;
    let (what, tx) = if cancel {
        (
            "cancel",
            gleaner_requester::cancel(&p, a.chain.market, a.job_id).await?,
        )
    } else {
        (
            "reclaim",
            gleaner_requester::reclaim(&p, a.chain.market, a.job_id).await?,
        )
    };
    println!("{what} of job {} done (tx {tx})", a.job_id);
    Ok(())
}
