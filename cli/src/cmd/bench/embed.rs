//! `gleaner bench embed`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use gleaner_models::{BackendChoice, EMBED_MIN_COSINE, Precision, compare_embeddings};

use crate::common::{HomeArgs, read_all};

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
    /// The first is the one the others' vectors are compared with.
    #[arg(long, value_delimiter = ',', default_value = "cpu,flex,wgpu")]
    pub backends: Vec<BackendChoice>,
    /// Float types to measure on wgpu, comma-separated (f32, f16); CPU backends run f32 only.
    /// Each f16 row is compared with the first measured backend like any other.
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    pub precisions: Vec<Precision>,
    /// Also time whole processes (`gleaner embed` on each CPU backend, and the peer): start,
    /// load, embed the corpus, write, exit.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub process: bool,
    /// Whole-process runs per configuration; the best is printed.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
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
    /// The model's float type (`f32`, or `f16` on wgpu); `f32` for the peer.
    precision: Precision,
    batch: u32,
    /// `first`: the first pass of this configuration after the miner's start-up warm-up (a job's
    /// first sentences; for the peer, its first pass); `warm`: the same pass again; `process`: a
    /// whole process (start, load, embed, write, exit).
    pass: &'static str,
    sentences: usize,
    secs: f64,
    sentences_per_s: f64,
    /// Smallest row cosine against the first measured backend on the same sentences.
    min_cosine_vs_first: Option<f32>,
    /// Largest |difference| of any value against the first measured backend.
    max_abs_diff_vs_first: Option<f32>,
}

impl Row {
    fn new(implementation: &str, batch: u32, pass: &'static str, n: usize, secs: f64) -> Self {
        Self {
            implementation: implementation.to_owned(),
            precision: Precision::F32,
            batch,
            pass,
            sentences: n,
            secs,
            sentences_per_s: n as f64 / secs.max(1e-9),
            min_cosine_vs_first: None,
            max_abs_diff_vs_first: None,
        }
    }
}

pub(super) fn embed(args: EmbedBench) -> anyhow::Result<()> {
    let corpus = read_all(
        std::fs::File::open(&args.corpus)
            .with_context(|| format!("cannot open corpus {}", args.corpus.display()))?,
    )?;
    let texts: Vec<&str> = corpus.iter().map(String::as_str).collect();
    let mut rows = Vec::new();
    let mut first: Option<Vec<f32>> = None;
    let mut cpu_backends = Vec::new();
    for (backend, precision) in super::configs(&args.backends, &args.precisions) {
        let embedder = match crate::cmd::embed::load_embedder(
            backend,
            precision,
            args.model_dir.as_deref(),
            &args.home,
        ) {
            Ok(e) => e,
            Err(err) if backend == BackendChoice::Wgpu => {
                eprintln!("skipping wgpu {precision}: {err:#}");
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
        if dev.adapter.is_none() {
            cpu_backends.push((backend, format!("gleaner/{}", dev.backend)));
        }
        let suffix = match precision {
            Precision::F32 => String::new(),
            p => format!("-{p}"),
        };
        let name = match &dev.adapter {
            Some(a) => format!("gleaner/{}{suffix} ({})", dev.backend, a.name),
            None => format!("gleaner/{}", dev.backend),
        };
        // What a miner does at start: on a GPU, every padded shape the corpus can use runs once
        // (kernels compiled and tuned); nothing on a CPU.
        let longest = texts[..n]
            .iter()
            .map(|t| embedder.tokenizer().encode(t).map_or(1, |ids| ids.len()))
            .max()
            .unwrap_or(1);
        let most = args.batches.iter().copied().max().unwrap_or(1) as usize;
        let start = Instant::now();
        let shapes = embedder.warm_up(most, longest, |_, _| {})?;
        if shapes > 0 {
            eprintln!(
                "{name}: start-up warm-up, {shapes} shapes: {:.1}s",
                start.elapsed().as_secs_f64()
            );
        }
        // Each batch size twice: the first pass after that start-up (a job's first sentences),
        // then again.
        for &batch in &args.batches {
            for pass in ["first", "warm"] {
                let start = Instant::now();
                let v = embedder.embed(&texts[..n], batch as usize, |_| {})?;
                let mut row = Row::new(&name, batch, pass, n, start.elapsed().as_secs_f64());
                row.precision = precision;
                match &first {
                    None => first = Some(v),
                    Some(f) => {
                        let f = &f[..v.len()];
                        let a = compare_embeddings(f, &v, embedder.dim(), EMBED_MIN_COSINE)?;
                        row.min_cosine_vs_first = Some(a.min_cosine);
                        row.max_abs_diff_vs_first = Some(
                            f.iter()
                                .zip(&v)
                                .map(|(x, y)| (x - y).abs())
                                .fold(0f32, f32::max),
                        );
                    }
                }
                eprintln!(
                    "{name} batch {batch} {pass}: {:.1} sentences/s",
                    row.sentences_per_s
                );
                rows.push(row);
            }
        }
    }
    // Whole processes, best of --repeat: `gleaner embed` on each CPU backend, and the peer.
    let files = crate::cmd::embed::minilm_files(args.model_dir.as_deref(), &args.home);
    let model_dir = files
        .weights
        .parent()
        .context("the weights path has no directory")?
        .to_path_buf();
    let out = tempfile::tempdir().context("temporary directory")?;
    let exe = std::env::current_exe().context("cannot find the running gleaner binary")?;
    if args.process {
        for (backend, name) in &cpu_backends {
            for &batch in &args.batches {
                let mut cmd = Command::new(&exe);
                cmd.arg("embed")
                    .args(["--backend", &backend.to_string()])
                    .args(["--batch", &batch.to_string()])
                    .arg("--input")
                    .arg(&args.corpus)
                    .arg("--model-dir")
                    .arg(&model_dir)
                    .args(["--format", "safetensors", "--out"])
                    .arg(out.path().join("v.safetensors"));
                let secs = best_process_secs(&mut cmd, args.repeat)?;
                rows.push(Row::new(name, batch, "process", texts.len(), secs));
            }
        }
    }
    if let Some(peer) = &args.peer {
        for &batch in &args.batches {
            for sorted in [false, true] {
                rows.extend(run_peer(peer, &args, batch, sorted, texts.len())?);
            }
        }
    }
    print_rows(&rows, args.json)
}

/// The shortest wall time of `repeat` runs of `cmd` (start to exit), which must succeed.
fn best_process_secs(cmd: &mut Command, repeat: u32) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let out = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("cannot run {cmd:?}"))?;
        let secs = start.elapsed().as_secs_f64();
        if !out.status.success() {
            anyhow::bail!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        best = best.min(secs);
    }
    Ok(best)
}

/// Runs the peer: in-process cold and warm passes from one run (it embeds the corpus twice),
/// and whole-process runs (best of --repeat). `sorted` makes it batch length-sorted texts, as
/// gleaner does, so the table shows both the peer as typically written and a like-for-like
/// variant.
fn run_peer(
    peer: &Path,
    args: &EmbedBench,
    batch: u32,
    sorted: bool,
    n: usize,
) -> anyhow::Result<Vec<Row>> {
    let files = crate::cmd::embed::minilm_files(args.model_dir.as_deref(), &args.home);
    let command = |passes: u32| {
        let mut cmd = Command::new(peer);
        if sorted {
            cmd.arg("--sorted");
        }
        cmd.arg("--corpus")
            .arg(&args.corpus)
            .arg("--weights")
            .arg(&files.weights)
            .arg("--tokenizer")
            .arg(&files.tokenizer)
            .arg("--batch")
            .arg(batch.to_string())
            .arg("--passes")
            .arg(passes.to_string());
        cmd
    };
    let v = super::peer_json(command(2), peer)?;
    let name = v["implementation"].as_str().unwrap_or("peer").to_owned();
    let secs = v["secs"].as_f64().context("peer output lacks secs")?;
    let warm = v["warm_secs"]
        .as_f64()
        .context("peer output lacks warm_secs")?;
    let mut rows = vec![
        Row::new(&name, batch, "first", n, secs),
        Row::new(&name, batch, "warm", n, warm),
    ];
    if args.process {
        let secs = best_process_secs(&mut command(1), args.repeat)?;
        rows.push(Row::new(&name, batch, "process", n, secs));
    }
    Ok(rows)
}

fn print_rows(rows: &[Row], json: bool) -> anyhow::Result<()> {
    if json {
        for r in rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "{:<44} {:>5} {:>7} {:>9} {:>8} {:>12} {:>12} {:>12}",
        "implementation",
        "batch",
        "pass",
        "sentences",
        "secs",
        "sentences/s",
        "min cos/1st",
        "max|d|/1st"
    );
    for r in rows {
        let cos = r
            .min_cosine_vs_first
            .map_or("-".to_owned(), |c| format!("{c:.7}"));
        let diff = r
            .max_abs_diff_vs_first
            .map_or("-".to_owned(), |d| format!("{d:.2e}"));
        println!(
            "{:<44} {:>5} {:>7} {:>9} {:>8.2} {:>12.1} {:>12} {:>12}",
            r.implementation, r.batch, r.pass, r.sentences, r.secs, r.sentences_per_s, cos, diff
        );
    }
    let full = rows.iter().map(|r| r.sentences).max().unwrap_or(0);
    for pass in ["first", "warm", "process"] {
        let rates: Vec<(&str, usize, f64)> = rows
            .iter()
            .filter(|r| r.pass == pass && r.sentences == full)
            .map(|r| {
                (
                    r.implementation.as_str(),
                    r.batch as usize,
                    r.sentences_per_s,
                )
            })
            .collect();
        super::print_peer_ratios(&rates, &format!("{pass}: "));
    }
    // First over warm, per implementation and batch: what a job's first sentences cost.
    for cold in rows.iter().filter(|r| r.pass == "first") {
        if let Some(warm) = rows.iter().find(|w| {
            w.pass == "warm" && w.implementation == cold.implementation && w.batch == cold.batch
        }) {
            println!(
                "batch {}: {} first/warm = {:.2}",
                cold.batch,
                cold.implementation,
                cold.sentences_per_s / warm.sentences_per_s
            );
        }
    }
    Ok(())
}
