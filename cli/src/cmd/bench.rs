//! `gleaner bench`: throughput numbers, printed, never asserted by timed tests.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use gleaner_models::smollm::GENERATE_MARGIN;
use gleaner_models::{BackendChoice, Decoder, EMBED_MIN_COSINE, compare_embeddings};

use crate::common::{HomeArgs, read_all};

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Sentences/s of all-MiniLM-L6-v2 on each backend, and on a peer implementation.
    ///
    /// Embeds a fixed corpus (default bench/corpus-1000.txt: 1,000 sentences of 10-40 words) on
    /// each backend and prints a table. With --peer, runs the candle peer (bench/candle-peer,
    /// built by scripts/bench) on the same corpus and weights in the same run and prints the
    /// ratio. Also prints how far each backend's vectors are from the first one's (minimum row
    /// cosine), which calibrates the embed comparator.
    ///
    /// Examples:
    ///   gleaner bench embed
    ///   gleaner bench embed --backends flex,ndarray,wgpu --wgpu-limit 64
    ///   scripts/bench
    #[command(verbatim_doc_comment)]
    Embed(EmbedBench),
    /// SmolLM2 generation: prompt tokens/s and new tokens/s at batch 1 and 8 on each backend,
    /// the cost of the verifier's teacher-forced check relative to generation, how far each
    /// backend's logits are from the first one's (which calibrates the verifier's margin), and
    /// with --peer candle's quantized Llama on the same GGUF in the same run.
    ///
    /// Examples:
    ///   gleaner bench generate
    ///   gleaner bench generate --backends flex --batches 1 --new-tokens 32
    ///   scripts/bench generate
    #[command(verbatim_doc_comment)]
    Generate(GenerateBench),
}

/// Options of `gleaner bench generate`.
#[derive(Debug, Args)]
pub struct GenerateBench {
    /// Backends to measure, comma-separated (wgpu is skipped with a note when no adapter exists).
    #[arg(long, value_delimiter = ',', default_value = "flex,ndarray")]
    pub backends: Vec<BackendChoice>,
    /// Batch sizes (copies of the prompt decoded together), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batches: Vec<usize>,
    /// New tokens to generate per sequence.
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// The GGUF file [default: the model cache].
    #[arg(long, env = "GLEANER_SMOLLM_GGUF")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub home: HomeArgs,
    /// Peer benchmark binary (bench/candle-peer): candle's quantized Llama on the same GGUF.
    #[arg(long)]
    pub peer: Option<PathBuf>,
    /// Also measure the quantized CPU decoder (with the first CPU backend verifying it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub quantized: bool,
}

type GenFn<'a> = dyn Fn(&[&[u32]], usize) -> gleaner_models::Result<Vec<Vec<u32>>> + 'a;

/// Times `generate` at each batch size (prefill = one new token; decode = the rest) and, at
/// batch 1, the Burn `verifier` model's teacher-forced check of the output, which must accept
/// it. Returns the batch-1 output.
fn measure(
    name: &str,
    args: &GenerateBench,
    prompt: &[u32],
    generate: &GenFn<'_>,
    verifier: &gleaner_models::smollm::Llama,
    rows: &mut Vec<GenRow>,
) -> anyhow::Result<Option<Vec<u32>>> {
    generate(&[prompt], 2)?; // warm-up
    let mut greedy = None;
    for &b in &args.batches {
        let refs: Vec<&[u32]> = vec![prompt; b];
        let t = Instant::now();
        generate(&refs, 1)?;
        let prefill = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let outs = generate(&refs, args.new_tokens)?;
        let total = t.elapsed().as_secs_f64();
        let mut verify_secs = None;
        if b == 1 {
            let t = Instant::now();
            let check = verifier.check_greedy(prompt, &outs[0], GENERATE_MARGIN)?;
            verify_secs = Some(t.elapsed().as_secs_f64());
            if !check.accepted {
                bail!("{name}: the verifier rejected its greedy output: {check:?}");
            }
            eprintln!(
                "{name}: verifier accepts its output, largest gap {:.2e}",
                check.max_gap
            );
            greedy = Some(outs[0].clone());
        }
        let row = GenRow {
            implementation: name.to_owned(),
            batch: b,
            prompt: prompt.len(),
            prefill_secs: prefill,
            new: outs[0].len(),
            decode_secs: (total - prefill).max(1e-9),
            verify_secs,
        };
        eprintln!(
            "{name} batch {b}: prompt {:.1} tok/s, new {:.1} tok/s",
            (b * row.prompt) as f64 / row.prefill_secs,
            (b * row.new) as f64 / row.decode_secs
        );
        rows.push(row);
    }
    Ok(greedy)
}

const GEN_PROMPT: &str = "Gleaner turns idle GPUs into a verifiable compute market. Requesters \
escrow tokens, workers run foundation models, and a verifier compares redundant results before \
anyone is paid. Explain in simple words why redundancy matters:";

/// One measured configuration of `bench generate`.
struct GenRow {
    implementation: String,
    batch: usize,
    prompt: usize,
    prefill_secs: f64,
    new: usize,
    decode_secs: f64,
    /// Teacher-forced check of the batch-1 output, seconds.
    verify_secs: Option<f64>,
}

/// The smallest gap between the two largest logits over rows `from..` of `[rows, v]` logits.
fn min_top2_gap(logits: &[f32], v: usize, from: usize) -> f32 {
    logits
        .chunks_exact(v)
        .skip(from)
        .map(|row| {
            let mut top = [f32::NEG_INFINITY; 2];
            for &x in row {
                if x > top[0] {
                    top = [x, top[0]];
                } else if x > top[1] {
                    top[1] = x;
                }
            }
            top[0] - top[1]
        })
        .fold(f32::INFINITY, f32::min)
}

fn generate(args: GenerateBench) -> anyhow::Result<()> {
    use gleaner_models::smollm::Llama;
    let path = args
        .model
        .clone()
        .unwrap_or_else(|| args.home.models().smollm_gguf());
    if !path.is_file() {
        bail!("{} is missing: run scripts/setup", path.display());
    }
    let mut rows = Vec::new();
    let mut calibration = Vec::new();
    // The first backend's teacher-forced pass (name, prompt + greedy output, logits).
    let mut reference: Option<(String, Vec<u32>, Vec<f32>)> = None;
    let mut prompt_ids = Vec::new();
    let mut quantized_done = false;
    for &backend in &args.backends {
        let dev = match gleaner_models::select_device(backend) {
            Ok(d) => d,
            Err(e) if backend == BackendChoice::Wgpu => {
                eprintln!("skipping wgpu: {e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let name = format!("gleaner/{}", dev.backend);
        let (model, tok) = Llama::load(&path, &dev.device)?;
        let prompt = tok
            .encode(GEN_PROMPT, false)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .get_ids()
            .to_vec();
        prompt_ids.clone_from(&prompt);
        let burn_gen = |refs: &[&[u32]], n: usize| {
            model.generate_batch(refs, n, None, &vec![None; refs.len()])
        };
        let greedy = measure(&name, &args, &prompt, &burn_gen, &model, &mut rows)?;
        // The quantized CPU decoder (what CPU workers generate with), once, verified by the
        // Burn model of this backend.
        if args.quantized && dev.adapter.is_none() && !quantized_done {
            quantized_done = true;
            let q = gleaner_models::qcpu::QuantLlama::load(&path, model.config())?;
            let q_gen = |refs: &[&[u32]], n: usize| {
                q.generate_batch(refs, n, None, &vec![None; refs.len()])
            };
            let qname = "gleaner/quantized-cpu".to_owned();
            measure(&qname, &args, &prompt, &q_gen, &model, &mut rows)?;
            let mut ids = prompt.clone();
            ids.extend(greedy.clone().unwrap_or_default());
            let (a, b) = (model.forward_all(&ids)?, q.forward_all(&ids)?);
            let d = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            calibration.push(format!(
                "{qname} vs {name}: max |logit difference| {d:.2e} over {} positions",
                ids.len()
            ));
        }
        // Calibration: the same teacher-forced pass on each backend.
        let v = model.config().vocab;
        match &reference {
            None => {
                let mut ids = prompt.clone();
                ids.extend(greedy.unwrap_or_default());
                let logits = model.forward_all(&ids)?;
                calibration.push(format!(
                    "{name}: smallest top-2 logit gap along its greedy output {:.3}",
                    min_top2_gap(&logits, v, prompt.len() - 1)
                ));
                reference = Some((name, ids, logits));
            }
            Some((first, ids, want)) => {
                let logits = model.forward_all(ids)?;
                let d = want
                    .iter()
                    .zip(&logits)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                calibration.push(format!(
                    "{name} vs {first}: max |logit difference| {d:.2e} over {} positions \
                     (verifier margin {GENERATE_MARGIN})",
                    ids.len()
                ));
            }
        }
    }
    if let Some(peer) = &args.peer {
        for &b in &args.batches {
            rows.push(run_generate_peer(
                peer,
                &path,
                &prompt_ids,
                args.new_tokens,
                b,
            )?);
        }
    }
    print_gen_rows(&rows);
    for c in calibration {
        println!("{c}");
    }
    Ok(())
}

/// For each batch size, the fastest gleaner row over each peer row:
/// `batch B: {what}gleaner/x / peer = R x`. Rows are `(implementation, batch, rate)`.
fn print_peer_ratios(rows: &[(&str, usize, f64)], what: &str) {
    let batches: std::collections::BTreeSet<usize> = rows.iter().map(|r| r.1).collect();
    for b in batches {
        let best = rows
            .iter()
            .filter(|r| r.1 == b && r.0.starts_with("gleaner"))
            .max_by(|x, y| x.2.total_cmp(&y.2));
        let peers = rows
            .iter()
            .filter(|r| r.1 == b && !r.0.starts_with("gleaner"));
        for p in peers {
            if let Some(g) = best {
                println!("batch {b}: {what}{} / {} = {:.2}x", g.0, p.0, g.2 / p.2);
            }
        }
    }
}

fn run_generate_peer(
    peer: &PathBuf,
    model: &std::path::Path,
    prompt: &[u32],
    new_tokens: usize,
    batch: usize,
) -> anyhow::Result<GenRow> {
    let ids: Vec<String> = prompt.iter().map(u32::to_string).collect();
    let out = Command::new(peer)
        .arg("generate")
        .arg("--model")
        .arg(model)
        .args(["--prompt-ids", &ids.join(",")])
        .args(["--new-tokens", &new_tokens.to_string()])
        .args(["--batch", &batch.to_string()])
        .output()
        .with_context(|| format!("cannot run peer {}", peer.display()))?;
    if !out.status.success() {
        bail!(
            "peer {} failed: {}",
            peer.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .with_context(|| format!("peer printed {line:?}, expected one JSON object"))?;
    let f = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("peer output lacks {k}"))
    };
    Ok(GenRow {
        implementation: v["implementation"].as_str().unwrap_or("peer").to_owned(),
        batch,
        prompt: f("prompt_tokens")? as usize,
        prefill_secs: f("prefill_secs")?,
        new: f("new_tokens")? as usize,
        decode_secs: f("decode_secs")?,
        verify_secs: None,
    })
}

fn print_gen_rows(rows: &[GenRow]) {
    println!(
        "{:<36} {:>5} {:>7} {:>13} {:>5} {:>10} {:>9} {:>11}",
        "implementation",
        "batch",
        "prompt",
        "prompt tok/s",
        "new",
        "new tok/s",
        "verify s",
        "verify/gen"
    );
    let rate = |r: &GenRow| (r.batch * r.new) as f64 / r.decode_secs;
    for r in rows {
        let gen_secs = r.prefill_secs + r.decode_secs;
        let (v, ratio) = r.verify_secs.map_or(("-".into(), "-".into()), |v| {
            (format!("{v:.2}"), format!("{:.3}", v / gen_secs))
        });
        println!(
            "{:<36} {:>5} {:>7} {:>13.1} {:>5} {:>10.1} {:>9} {:>11}",
            r.implementation,
            r.batch,
            r.prompt,
            (r.batch * r.prompt) as f64 / r.prefill_secs,
            r.new,
            rate(r),
            v,
            ratio
        );
    }
    let rates: Vec<(&str, usize, f64)> = rows
        .iter()
        .map(|r| (r.implementation.as_str(), r.batch, rate(r)))
        .collect();
    print_peer_ratios(&rates, "new tokens/s ");
}

/// Options of `gleaner bench embed`.
#[derive(Debug, Args)]
pub struct EmbedBench {
    /// Corpus file, one sentence per line.
    #[arg(long, default_value = "bench/corpus-1000.txt")]
    pub corpus: PathBuf,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32")]
    pub batches: Vec<u32>,
    /// Backends to measure, comma-separated (wgpu is skipped with a note when no adapter exists).
    #[arg(long, value_delimiter = ',', default_value = "flex,ndarray,wgpu")]
    pub backends: Vec<BackendChoice>,
    /// On a software wgpu adapter (lavapipe), embed only this many sentences (it is ~20x slower).
    #[arg(long, default_value_t = 64)]
    pub wgpu_limit: usize,
    /// Peer benchmark binary (bench/candle-peer): run on the same corpus and weights.
    #[arg(long)]
    pub peer: Option<PathBuf>,
    /// Model directory [default: <home>/models/all-minilm-l6-v2].
    #[arg(long, env = "GLEANER_MINILM_DIR")]
    pub model_dir: Option<PathBuf>,
    #[command(flatten)]
    pub home: HomeArgs,
    /// Print the rows as JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Row {
    implementation: String,
    batch: u32,
    sentences: usize,
    secs: f64,
    sentences_per_s: f64,
    /// Smallest row cosine against the first measured backend on the same sentences.
    min_cosine_vs_first: Option<f32>,
    /// Largest |difference| of any value against the first measured backend.
    max_abs_diff_vs_first: Option<f32>,
}

pub(crate) fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Embed(args) => embed(args),
        BenchCommand::Generate(args) => generate(args),
    }
}

fn embed(args: EmbedBench) -> anyhow::Result<()> {
    let corpus = read_all(
        std::fs::File::open(&args.corpus)
            .with_context(|| format!("cannot open corpus {}", args.corpus.display()))?,
    )?;
    let texts: Vec<&str> = corpus.iter().map(String::as_str).collect();
    let mut rows = Vec::new();
    let mut first: Option<Vec<f32>> = None;
    for &backend in &args.backends {
        let embedder =
            match super::embed::load_embedder(backend, args.model_dir.as_deref(), &args.home) {
                Ok(e) => e,
                Err(err) if backend == BackendChoice::Wgpu => {
                    eprintln!("skipping wgpu: {err:#}");
                    continue;
                }
                Err(err) => return Err(err),
            };
        let dev = embedder.device().clone();
        let software = dev.adapter.as_ref().is_some_and(|a| !a.is_gpu);
        let n = if software {
            args.wgpu_limit.min(texts.len())
        } else {
            texts.len()
        };
        let name = match &dev.adapter {
            Some(a) => format!("gleaner/{} ({})", dev.backend, a.name),
            None => format!("gleaner/{}", dev.backend),
        };
        // Warm-up: shader compilation and autotuning happen on the first calls.
        let warm = Instant::now();
        embedder.embed(&texts[..n.min(8)], 8, |_| {})?;
        eprintln!("{name}: warm-up {:.1}s", warm.elapsed().as_secs_f64());
        for &batch in &args.batches {
            let start = Instant::now();
            let v = embedder.embed(&texts[..n], batch as usize, |_| {})?;
            let secs = start.elapsed().as_secs_f64();
            let (min_cosine_vs_first, max_abs_diff_vs_first) = match &first {
                None => {
                    first = Some(v.clone());
                    (None, None)
                }
                Some(f) => {
                    let f = &f[..v.len()];
                    let a = compare_embeddings(f, &v, embedder.dim(), EMBED_MIN_COSINE)?;
                    let d = f
                        .iter()
                        .zip(&v)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0f32, f32::max);
                    (Some(a.min_cosine), Some(d))
                }
            };
            let row = Row {
                implementation: name.clone(),
                batch,
                sentences: n,
                secs,
                sentences_per_s: n as f64 / secs,
                min_cosine_vs_first,
                max_abs_diff_vs_first,
            };
            eprintln!(
                "{name} batch {batch}: {:.1} sentences/s",
                row.sentences_per_s
            );
            rows.push(row);
        }
    }
    if let Some(peer) = &args.peer {
        for &batch in &args.batches {
            for sorted in [false, true] {
                rows.push(run_peer(peer, &args, batch, sorted, texts.len())?);
            }
        }
    }
    print_rows(&rows, args.json)
}

/// Runs the peer once. `sorted` makes it batch length-sorted texts, as gleaner does, so the
/// table shows both the peer as typically written and a like-for-like variant.
fn run_peer(
    peer: &PathBuf,
    args: &EmbedBench,
    batch: u32,
    sorted: bool,
    n: usize,
) -> anyhow::Result<Row> {
    let files = super::embed::minilm_files(args.model_dir.as_deref(), &args.home);
    let mut cmd = Command::new(peer);
    if sorted {
        cmd.arg("--sorted");
    }
    let out = cmd
        .arg("--corpus")
        .arg(&args.corpus)
        .arg("--weights")
        .arg(&files.weights)
        .arg("--tokenizer")
        .arg(&files.tokenizer)
        .arg("--batch")
        .arg(batch.to_string())
        .output()
        .with_context(|| format!("cannot run peer {}", peer.display()))?;
    if !out.status.success() {
        bail!(
            "peer {} failed: {}",
            peer.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .with_context(|| format!("peer printed {line:?}, expected one JSON object"))?;
    let secs = v["secs"].as_f64().context("peer output lacks secs")?;
    Ok(Row {
        implementation: v["implementation"].as_str().unwrap_or("peer").to_owned(),
        batch,
        sentences: n,
        secs,
        sentences_per_s: n as f64 / secs,
        min_cosine_vs_first: None,
        max_abs_diff_vs_first: None,
    })
}

fn print_rows(rows: &[Row], json: bool) -> anyhow::Result<()> {
    if json {
        for r in rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "{:<44} {:>5} {:>9} {:>8} {:>12} {:>12} {:>12}",
        "implementation", "batch", "sentences", "secs", "sentences/s", "min cos/1st", "max|d|/1st"
    );
    for r in rows {
        let cos = r
            .min_cosine_vs_first
            .map_or("-".to_owned(), |c| format!("{c:.7}"));
        let diff = r
            .max_abs_diff_vs_first
            .map_or("-".to_owned(), |d| format!("{d:.2e}"));
        println!(
            "{:<44} {:>5} {:>9} {:>8.2} {:>12.1} {:>12} {:>12}",
            r.implementation, r.batch, r.sentences, r.secs, r.sentences_per_s, cos, diff
        );
    }
    let rates: Vec<(&str, usize, f64)> = rows
        .iter()
        .map(|r| {
            (
                r.implementation.as_str(),
                r.batch as usize,
                r.sentences_per_s,
            )
        })
        .collect();
    print_peer_ratios(&rates, "");
    Ok(())
}
