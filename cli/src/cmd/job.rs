//! `gleaner job`: submit work, follow it, collect results.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::U256;
use alloy::signers::SignerSync;
use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use gleaner_models::smollm::chat_prompt;
use gleaner_protocol::api::RegisterJob;
use gleaner_protocol::bindings::{GleanerToken, JobMarket};
use gleaner_protocol::blob::{
    blob_hash, decode_generations, decode_matrix, decode_prompts, encode_prompts, encode_texts,
};
use gleaner_protocol::eip712::{self, JobRegistration};
use gleaner_protocol::task::{
    JobManifest, MANIFEST_VERSION, ModelRef, SamplingParams, TaskInput, TaskKind, TaskParams,
};
use gleaner_worker::CoordinatorClient;
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::{ChainArgs, KeyArgs, confirm, format_amount, parse_amount, provider, runtime};

/// Submit jobs and collect their results.
///
/// Examples:
///   gleaner job submit --kind embed --input corpus.txt --batch 16 --redundancy 2 \
///       --budget 100 --deadline 1h --wait --keystore requester.json --market 0x...
///   gleaner job submit --kind generate --input prompts.jsonl --batch 2 --max-tokens 32 \
///       --chat --budget 50 --wait --keystore requester.json --market 0x...
///   gleaner job submit --kind generate --input prompts.jsonl --temperature 0.8 --top-p 0.9 \
///       --seed 7 --budget 50 --keystore requester.json --market 0x...
///   gleaner job status 1
///   gleaner job results 1 --out vectors.jsonl
///   gleaner job cancel 1 --keystore requester.json --market 0x...
#[derive(Debug, Subcommand)]
#[command(verbatim_doc_comment)]
pub enum JobCommand {
    /// Escrow a budget on-chain and hand the job to the coordinator.
    Submit(SubmitArgs),
    /// Where a job stands (coordinator view).
    Status(StatusArgs),
    /// Write the accepted outputs in input order.
    Results(ResultsArgs),
    /// Cancel a job whose tasks are not posted yet (full refund).
    Cancel(OnChainArgs),
    /// Reclaim the escrow of a job past its deadline that was never settled.
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
    /// Task kind.
    #[arg(long, value_enum, default_value_t = Kind::Embed)]
    pub kind: Kind,
    /// Input file. embed: one text per line. generate: JSON lines, one {"prompt": "..."} each.
    #[arg(long)]
    pub input: PathBuf,
    /// Inputs (texts or prompts) per task.
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
    /// Replicas per task, on distinct workers.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub redundancy: u16,
    /// Budget in tokens (escrowed; the unaccepted share and dust are refunded).
    #[arg(long)]
    pub budget: String,
    /// Deadline from now: 90s, 30m, 2h, 1d.
    #[arg(long, default_value = "1h")]
    pub deadline: String,
    /// Wait, with a progress bar, until the job is settled.
    #[arg(long)]
    pub wait: bool,
}

/// Task kinds `job submit` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Sentence embeddings with all-MiniLM-L6-v2.
    Embed,
    /// Text generation with SmolLM2-135M-Instruct (greedy or seeded sampling).
    Generate,
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
    /// of vectors. generate: JSON lines {"prompt", "ids", "text"}.
    #[arg(long)]
    pub out: PathBuf,
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
        JobCommand::Submit(a) => rt.block_on(submit(a)),
        JobCommand::Status(a) => rt.block_on(status(a)),
        JobCommand::Results(a) => rt.block_on(results(a)),
        JobCommand::Cancel(a) => rt.block_on(cancel_or_reclaim(a, true)),
        JobCommand::Reclaim(a) => rt.block_on(cancel_or_reclaim(a, false)),
    }
}

/// Parses `90s`, `30m`, `2h`, `1d` (or plain seconds).
pub(crate) fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.trim().len()),
    );
    let n: u64 = num
        .parse()
        .with_context(|| format!("bad duration {s:?}: use 90s, 30m, 2h or 1d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("bad duration {s:?}: use 90s, 30m, 2h or 1d"),
    };
    if secs == 0 {
        bail!("deadline must be in the future");
    }
    Ok(Duration::from_secs(secs))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `temperature`/`top_p` as the manifest's integer thousandths, refusing what would not survive.
fn sampling_params(a: &SubmitArgs) -> anyhow::Result<Option<SamplingParams>> {
    let Some(t) = a.temperature else {
        return Ok(None);
    };
    if a.kind != Kind::Generate {
        bail!("--temperature applies to --kind generate only");
    }
    if !(t.is_finite() && (0.001..=100.0).contains(&t)) {
        bail!("--temperature must be between 0.001 and 100");
    }
    if !(a.top_p.is_finite() && (0.001..=1.0).contains(&a.top_p)) {
        bail!("--top-p must be between 0.001 and 1");
    }
    Ok(Some(SamplingParams {
        temperature_milli: (t * 1000.0).round() as u32,
        top_p_milli: (a.top_p * 1000.0).round() as u32,
        seed: a.seed,
    }))
}

/// The task inputs and the manifest (without uploading): embed texts, or generate prompts.
fn build_inputs(a: &SubmitArgs, bytes: &[u8]) -> anyhow::Result<(Vec<Vec<u8>>, JobManifest)> {
    let sampling = sampling_params(a)?;
    let (blobs, kind, model, max_tokens) = match a.kind {
        Kind::Embed => {
            if a.chat {
                bail!("--chat applies to --kind generate only");
            }
            let texts = crate::input::read_lines(bytes)?;
            // Work units: the input's bytes.
            let blobs = texts
                .chunks(a.batch as usize)
                .map(|c| {
                    let b = encode_texts(&c.iter().map(String::as_str).collect::<Vec<_>>())?;
                    Ok::<_, gleaner_protocol::Error>((b.len() as u64, b))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let model = ModelRef {
                id: "sentence-transformers/all-MiniLM-L6-v2".into(),
                weights_sha256: gleaner_models::MINILM_WEIGHTS_SHA256.parse()?,
            };
            (
                blobs,
                TaskKind::Embed,
                model,
                gleaner_models::MAX_TOKENS as u32,
            )
        }
        Kind::Generate => {
            let prompts = decode_prompts(bytes)?;
            let prompts: Vec<String> = if a.chat {
                prompts.iter().map(|p| chat_prompt(p)).collect()
            } else {
                prompts
            };
            // Work units: the input's bytes plus 4 per token each prompt may generate.
            let blobs = prompts
                .chunks(a.batch as usize)
                .map(|c| {
                    let b = encode_prompts(&c.iter().map(String::as_str).collect::<Vec<_>>())?;
                    let most = c.len() as u64 * u64::from(a.max_tokens) * 4;
                    Ok::<_, gleaner_protocol::Error>((b.len() as u64 + most, b))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let model = ModelRef {
                id: "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, dequantised to f32)".into(),
                weights_sha256: gleaner_models::SMOLLM_GGUF_SHA256.parse()?,
            };
            (blobs, TaskKind::Generate, model, a.max_tokens)
        }
    };
    let tasks = blobs
        .iter()
        .map(|(cost, b)| TaskInput {
            input_hash: blob_hash(b),
            cost: *cost,
        })
        .collect();
    let manifest = JobManifest {
        version: MANIFEST_VERSION,
        kind,
        model,
        params: TaskParams {
            batch: a.batch,
            max_tokens,
            sampling,
        },
        tasks,
    };
    manifest.validate()?;
    Ok((blobs.into_iter().map(|(_, b)| b).collect(), manifest))
}

async fn submit(a: SubmitArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&a.input).with_context(|| format!("cannot open {}", a.input.display()))?;
    let (blobs, manifest) =
        build_inputs(&a, &bytes).with_context(|| format!("in {}", a.input.display()))?;
    let budget = parse_amount(&a.budget)?;
    if budget.is_zero() {
        bail!("--budget must be positive");
    }
    let deadline = now() + parse_duration(&a.deadline)?.as_secs();
    let signer = a.key.signer()?;
    let me = signer.address();
    let client = CoordinatorClient::new(&a.coord.coordinator_url);
    let info = client.info().await.context("coordinator")?;
    if info.market != a.chain.market {
        bail!(
            "the coordinator serves market {}, not {}",
            info.market,
            a.chain.market
        );
    }

    // Inputs first: content-addressed, so uploading twice is harmless.
    for (blob, task) in blobs.into_iter().zip(&manifest.tasks) {
        let h = client.put_blob(blob).await?;
        if h != task.input_hash {
            bail!(
                "the coordinator stored input {h}, expected {}",
                task.input_hash
            );
        }
    }
    manifest.validate()?;
    let task_count = u32::try_from(manifest.tasks.len()).context("too many tasks")?;

    let p = provider(&a.chain, signer.clone())?;
    let market = JobMarket::new(a.chain.market, &p);
    let token = GleanerToken::new(market.token().call().await?, &p);
    let have = token.balanceOf(me).call().await?;
    if have < budget {
        bail!(
            "{me} holds {} tokens, the budget is {}",
            format_amount(have),
            format_amount(budget)
        );
    }
    confirm(
        "approve",
        token.approve(a.chain.market, budget).send().await,
    )
    .await?;
    let receipt = confirm(
        "createJob",
        market
            .createJob(
                manifest.spec_hash(),
                task_count,
                a.redundancy,
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
        .context("no JobCreated event in the receipt")?;
    eprintln!(
        "job {job_id}: {task_count} tasks × {} replicas escrowing {} tokens",
        a.redundancy,
        format_amount(budget)
    );

    let msg = JobRegistration {
        jobId: job_id,
        specHash: manifest.spec_hash(),
        requester: me,
        expiry: now() + 300,
    };
    let sig = signer.sign_hash_sync(&eip712::digest(
        &msg,
        &eip712::domain(info.chain_id, info.market),
    ))?;
    client
        .register_job(&RegisterJob {
            job_id,
            manifest: String::from_utf8(manifest.canonical())?,
            requester: me,
            expiry: msg.expiry,
            signature: sig.as_bytes().to_vec().into(),
        })
        .await
        .context("registering the manifest with the coordinator")?;
    println!("{job_id}");
    if a.wait {
        wait_settled(&client, job_id).await?;
    }
    Ok(())
}

/// Polls the coordinator with a progress bar until the job is settled.
pub(crate) async fn wait_settled(client: &CoordinatorClient, job_id: U256) -> anyhow::Result<()> {
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} job {msg} [{bar:30}] {pos}/{len} replicas {elapsed}",
        )
        .expect("template"),
    );
    loop {
        let s = client.job_status(job_id).await?;
        bar.set_length(u64::from(s.tasks) * u64::from(s.redundancy));
        bar.set_position(u64::from(s.replicas_done));
        bar.set_message(format!(
            "{job_id} {} ({}/{} accepted)",
            s.state, s.tasks_accepted, s.tasks
        ));
        match s.state.as_str() {
            "settled" => {
                bar.finish();
                return Ok(());
            }
            "cancelled" | "expired" | "reclaimed" => {
                bar.abandon();
                bail!("job {job_id} ended {}", s.state);
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

async fn status(a: StatusArgs) -> anyhow::Result<()> {
    let s = CoordinatorClient::new(&a.coord.coordinator_url)
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

async fn results(a: ResultsArgs) -> anyhow::Result<()> {
    let client = CoordinatorClient::new(&a.coord.coordinator_url);
    let r = client.job_results(a.job_id).await?;
    let manifest = JobManifest::from_canonical(r.manifest.as_bytes())
        .context("the coordinator's manifest for the job")?;
    if manifest.kind == TaskKind::Generate {
        return generate_results(&client, &a, &manifest, &r).await;
    }
    let mut rows = Vec::new();
    let mut n = 0usize;
    let mut dim = 0usize;
    let mut missing = Vec::new();
    for t in &r.tasks {
        let Some(h) = t.result else {
            missing.push(t.index);
            continue;
        };
        let (data, rws, cols) = decode_matrix("embeddings", &client.get_blob(h).await?)?;
        n += rws;
        dim = cols;
        rows.extend(data);
    }
    if !missing.is_empty() {
        eprintln!("tasks without an accepted result (skipped): {missing:?}");
    }
    let file = std::fs::File::create(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let w = std::io::BufWriter::new(file);
    if a.out.extension().is_some_and(|e| e == "safetensors") {
        crate::output::write_safetensors(
            w,
            "embeddings",
            &rows,
            n,
            dim,
            &[("job", &a.job_id.to_string())],
        )?;
    } else if dim > 0 {
        crate::output::write_jsonl(w, &rows, dim)?;
    }
    eprintln!("wrote {n} rows to {}", a.out.display());
    Ok(())
}

/// Writes one JSON line per prompt, in input order: {"prompt", "ids", "text"}.
async fn generate_results(
    client: &CoordinatorClient,
    a: &ResultsArgs,
    manifest: &JobManifest,
    r: &gleaner_protocol::api::JobResults,
) -> anyhow::Result<()> {
    use std::io::Write;
    let file = std::fs::File::create(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let (mut n, mut missing) = (0usize, Vec::new());
    for t in &r.tasks {
        let Some(h) = t.result else {
            missing.push(t.index);
            continue;
        };
        let input = manifest
            .tasks
            .get(t.index as usize)
            .context("result for a task outside the manifest")?;
        let prompts = decode_prompts(&client.get_blob(input.input_hash).await?)?;
        let outputs = decode_generations(&client.get_blob(h).await?)?;
        for (p, g) in prompts.iter().zip(&outputs) {
            let line = serde_json::json!({ "prompt": p, "ids": g.ids, "text": g.text });
            writeln!(w, "{line}")?;
            n += 1;
        }
    }
    w.flush()?;
    if !missing.is_empty() {
        eprintln!("tasks without an accepted result (skipped): {missing:?}");
    }
    eprintln!("wrote {n} generations to {}", a.out.display());
    Ok(())
}

async fn cancel_or_reclaim(a: OnChainArgs, cancel: bool) -> anyhow::Result<()> {
    let signer = a.key.signer()?;
    let p = provider(&a.chain, signer)?;
    let market = JobMarket::new(a.chain.market, &p);
    let (what, pending) = if cancel {
        ("cancel", market.cancel(a.job_id).send().await)
    } else {
        ("reclaim", market.reclaim(a.job_id).send().await)
    };
    let r = confirm(what, pending).await?;
    println!(
        "{what} of job {} done (tx {})",
        a.job_id, r.transaction_hash
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
    }
}
