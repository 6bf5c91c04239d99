//! `gleaner bench embed`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use gleaner_models::{BackendChoice, EMBED_MIN_COSINE, compare_embeddings};

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

pub(super) fn embed(args: EmbedBench) -> anyhow::Result<()> {
    let corpus = read_all(
        std::fs::File::open(&args.corpus)
            .with_context(|| format!("cannot open corpus {}", args.corpus.display()))?,
    )?;
    let texts: Vec<&str> = corpus.iter().map(String::as_str).collect();
    let mut rows = Vec::new();
    let mut first: Option<Vec<f32>> = None;
    for &backend in &args.backends {
        let embedder = match crate::cmd::embed::load_embedder(
            backend,
            args.model_dir.as_deref(),
            &args.home,
        ) {
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
    peer: &Path,
    args: &EmbedBench,
    batch: u32,
    sorted: bool,
    n: usize,
) -> anyhow::Result<Row> {
    let files = crate::cmd::embed::minilm_files(args.model_dir.as_deref(), &args.home);
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
        .arg(batch.to_string());
    let v = super::peer_json(cmd, peer)?;
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
    super::print_peer_ratios(&rates, "");
    Ok(())
}
