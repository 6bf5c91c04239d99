//! `gleaner embed`: sentence embeddings on stdout.

use std::fs::File;
use std::io::{BufWriter, IsTerminal};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use gleaner_models::{BackendChoice, Embedder, MiniLmFiles, Precision};
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::{HomeArgs, read_all};
use crate::output::{write_jsonl, write_safetensors};

/// Embed sentences with all-MiniLM-L6-v2.
///
/// Reads one text per line (stdin, or --input FILE) and prints one JSON array of 384 floats per
/// line, in input order. Vectors are L2-normalised mean-pooled BERT states, as
/// sentence-transformers computes them. Texts longer than 256 tokens are truncated.
///
/// Examples:
///   echo "This is an example sentence" | gleaner embed
///   gleaner embed --input corpus.txt --batch 64 > vectors.jsonl
///   gleaner embed --input corpus.txt --format safetensors --out vectors.safetensors
///   gleaner embed --backend wgpu < corpus.txt
///   gleaner embed --backend wgpu --precision f16 < corpus.txt
///
/// The weights come from `scripts/setup` (into <home>/models: --home or GLEANER_HOME, default
/// ~/.cache/gleaner).
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct EmbedArgs {
    /// Where the model runs: auto (a wgpu GPU if there is one, else the CPU), wgpu, cpu, flex or
    /// ndarray.
    #[arg(long, env = "GLEANER_BACKEND", default_value = "auto")]
    pub backend: BackendChoice,
    /// Float type of the model on wgpu: f32 (the reference) or f16 (half the memory traffic,
    /// faster matmuls on GPUs; outputs within the verifier's margins). CPU backends refuse f16.
    #[arg(long, env = "GLEANER_PRECISION", default_value = "f32")]
    pub precision: Precision,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,
    /// Read texts from this file instead of stdin.
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    pub format: Format,
    /// Output file (required for safetensors; JSON lines go to stdout by default).
    #[arg(long, short, required_if_eq("format", "safetensors"))]
    pub out: Option<PathBuf>,
    /// Directory holding model.safetensors and tokenizer.json
    /// [default: <home>/models/all-minilm-l6-v2].
    #[arg(long, env = "GLEANER_MINILM_DIR")]
    pub model_dir: Option<PathBuf>,
    #[command(flatten)]
    pub home: HomeArgs,
}

/// Output formats of `gleaner embed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON array per line.
    Jsonl,
    /// One F32 tensor `embeddings` of shape [n, 384].
    Safetensors,
}

pub(crate) fn run(args: EmbedArgs) -> anyhow::Result<()> {
    let texts = match &args.input {
        Some(path) => {
            read_all(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
                .with_context(|| format!("in {}", path.display()))?
        }
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("reading texts from stdin, one per line (Ctrl-D to end)...");
            }
            read_all(std::io::stdin().lock()).context("in stdin")?
        }
    };
    let embedder = load_embedder(
        args.backend,
        args.precision,
        args.model_dir.as_deref(),
        &args.home,
    )?;

    let progress = if texts.len() > 256 {
        let bar = ProgressBar::new(texts.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} texts  {per_sec}  eta {eta}")
                .expect("static template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let start = Instant::now();
    let vectors = embedder.embed(&refs, args.batch as usize, |done| {
        progress.set_position(done as u64)
    })?;
    progress.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    tracing::info!(
        texts = texts.len(),
        secs = format!("{secs:.2}"),
        per_sec = format!("{:.1}", texts.len() as f64 / secs.max(1e-9)),
        "embedded"
    );

    let dim = embedder.dim();
    match (args.format, &args.out) {
        (Format::Jsonl, None) => write_jsonl(std::io::stdout().lock(), &vectors, dim)?,
        (Format::Jsonl, Some(path)) => write_jsonl(BufWriter::new(create(path)?), &vectors, dim)?,
        (Format::Safetensors, Some(path)) => write_safetensors(
            BufWriter::new(create(path)?),
            "embeddings",
            &vectors,
            texts.len(),
            dim,
            &[("model", "sentence-transformers/all-MiniLM-L6-v2")],
        )?,
        (Format::Safetensors, None) => bail!("--format safetensors needs --out FILE"),
    }
    Ok(())
}

fn create(path: &std::path::Path) -> anyhow::Result<File> {
    File::create(path).with_context(|| format!("cannot create {}", path.display()))
}

/// The encoder's files: in `model_dir`, else in the home's model cache.
pub(crate) fn minilm_files(model_dir: Option<&std::path::Path>, home: &HomeArgs) -> MiniLmFiles {
    model_dir.map_or_else(|| home.models().minilm(), MiniLmFiles::in_dir)
}

/// Loads the encoder on the chosen backend in `precision` and logs the choice.
pub(crate) fn load_embedder(
    backend: BackendChoice,
    precision: Precision,
    model_dir: Option<&std::path::Path>,
    home: &HomeArgs,
) -> anyhow::Result<Embedder> {
    let files = minilm_files(model_dir, home);
    files.ensure_present()?;
    let device = home.select_device(backend)?.with_precision(precision)?;
    tracing::info!("{}", device.describe());
    Ok(Embedder::load(&files, device)?)
}
