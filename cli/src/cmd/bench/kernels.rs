//! `gleaner bench kernels`: GPU kernel launches per MiniLM forward and per decoded token, and
//! which shader compiler produced them.
//!
//! Kernel launches are what a decoding step's latency is made of on a GPU (each one costs a
//! dispatch whatever its size), so fusion, a persistent KV cache or sampling on the device show
//! up here first, on any wgpu adapter, lavapipe included. The counts come from cubecl's own
//! profiling log: the bench runs itself as a child with `CUBECL_DEBUG_LOG` pointing at a file,
//! once with one measured forward and once with three after the same warm-up, and reads the
//! difference, so compilation, autotuning and loading cancel out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use gleaner_models::{BackendChoice, Decoder, Embedder, Precision};

use crate::common::HomeArgs;

/// Options of `gleaner bench kernels`.
#[derive(Debug, Args)]
pub struct KernelsBench {
    /// Float types to count, comma-separated (f32, f16).
    #[arg(long, value_delimiter = ',', default_value = "f32,f16")]
    pub precisions: Vec<Precision>,
    /// Sentences in the MiniLM batch (each 12 tokens, padded to the 16-token shape).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 1)]
    pub decode_batch: usize,
    /// Model directory [default: <home>/models/all-minilm-l6-v2].
    #[arg(long, env = "GLEANER_MINILM_DIR")]
    pub model_dir: Option<PathBuf>,
    /// The SmolLM2 GGUF file [default: the model cache].
    #[arg(long, env = "GLEANER_SMOLLM_GGUF")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub home: HomeArgs,
    /// Print JSON lines instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Internal: run one workload (`embed` or `decode`) `--forwards` times and exit.
    #[arg(long, hide = true)]
    pub child: Option<String>,
    /// Internal: measured forwards of the child.
    #[arg(long, hide = true, default_value_t = 1)]
    pub forwards: usize,
}

/// Forwards the child runs before the measured ones: kernels compiled and tuned.
const WARM_UP: usize = 3;

/// What one child run's log says.
#[derive(Debug, Default)]
struct LogCounts {
    /// Kernel launches by kernel name.
    launches: BTreeMap<String, usize>,
    /// Kernels compiled, by the shader language the compiler reported.
    languages: BTreeMap<String, usize>,
}

impl LogCounts {
    fn total(&self) -> usize {
        self.launches.values().sum()
    }
}

/// Reads cubecl's log: a profiled launch is a line `| <duration> | <kernel name>`; a compiled
/// kernel names its language on a `lang: ...` or `language: ...` line (the full compilation log),
/// else it is recognised by its source (SPIR-V's `OpEntryPoint`, WGSL's `@compute`).
fn parse_log(text: &str) -> LogCounts {
    let mut counts = LogCounts::default();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix('|') {
            let mut cells = rest.splitn(2, '|');
            let (Some(duration), Some(name)) = (cells.next(), cells.next()) else {
                continue;
            };
            let duration = duration.trim();
            let name = name.trim().trim_end_matches('|').trim();
            // Summary tables repeat names with counts; launches have a duration first.
            let timed = duration.ends_with('s')
                && duration.chars().next().is_some_and(|c| c.is_ascii_digit());
            if (timed || duration == "not measured") && !name.is_empty() {
                let short = name.split('<').next().unwrap_or(name).trim().to_owned();
                *counts.launches.entry(short).or_default() += 1;
            }
        } else if t.contains("OpEntryPoint") {
            *counts.languages.entry("spirv".into()).or_default() += 1;
        } else if t.starts_with("@compute") {
            *counts.languages.entry("wgsl".into()).or_default() += 1;
        }
    }
    counts
}

pub(super) fn kernels(args: KernelsBench) -> anyhow::Result<()> {
    if let Some(workload) = &args.child {
        return child(&args, workload);
    }
    let exe = std::env::current_exe().context("cannot find the running gleaner binary")?;
    let dir = tempfile::tempdir().context("temporary directory")?;
    let mut rows = Vec::new();
    for &precision in &args.precisions {
        for workload in ["embed", "decode"] {
            let mut runs = Vec::new();
            for forwards in [1, 3] {
                let log = dir
                    .path()
                    .join(format!("{workload}-{precision}-{forwards}.log"));
                let mut cmd = Command::new(&exe);
                cmd.args(["bench", "kernels", "--child", workload])
                    .args(["--forwards", &forwards.to_string()])
                    .args(["--precisions", &precision.to_string()])
                    .args(["--batch", &args.batch.to_string()])
                    .args(["--decode-batch", &args.decode_batch.to_string()])
                    .env("CUBECL_DEBUG_LOG", &log);
                if let Some(h) = &args.home.home {
                    cmd.arg("--home").arg(h);
                }
                if let Some(d) = &args.model_dir {
                    cmd.arg("--model-dir").arg(d);
                }
                if let Some(m) = &args.model {
                    cmd.arg("--model").arg(m);
                }
                eprintln!("{workload} {precision}: warm-up and {forwards} measured forward(s)");
                let out = cmd
                    .output()
                    .with_context(|| format!("cannot run {cmd:?}"))?;
                if !out.status.success() {
                    bail!(
                        "{workload} {precision} failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                runs.push(parse_log(&read_settled(&log)?));
            }
            let (one, three) = (&runs[0], &runs[1]);
            let per = three.total().saturating_sub(one.total()) as f64 / 2.0;
            let mut top: Vec<(String, f64)> = three
                .launches
                .iter()
                .map(|(k, &n)| {
                    let before = one.launches.get(k).copied().unwrap_or(0);
                    (k.clone(), n.saturating_sub(before) as f64 / 2.0)
                })
                .filter(|(_, n)| *n > 0.0)
                .collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            top.truncate(6);
            let compiler = three
                .languages
                .iter()
                .max_by_key(|(_, n)| **n)
                .map_or("unknown".to_owned(), |(k, _)| k.clone());
            rows.push(serde_json::json!({
                "workload": workload,
                "what": if workload == "embed" {
                    format!("one MiniLM forward, {} sentences", args.batch)
                } else {
                    format!("one decoded token, batch {}", args.decode_batch)
                },
                "precision": precision,
                "compiler": compiler,
                "launches_per_forward": per,
                "top_kernels": top,
            }));
        }
    }
    if args.json {
        for r in &rows {
            println!("{r}");
        }
        return Ok(());
    }
    println!(
        "{:<36} {:>9} {:>9} {:>9}   most launched",
        "workload", "precision", "compiler", "launches"
    );
    for r in &rows {
        let top: Vec<String> = r["top_kernels"]
            .as_array()
            .into_iter()
            .flatten()
            .take(3)
            .map(|k| format!("{} ×{}", k[0].as_str().unwrap_or("?"), k[1]))
            .collect();
        println!(
            "{:<36} {:>9} {:>9} {:>9.1}   {}",
            r["what"].as_str().unwrap_or(""),
            r["precision"].as_str().unwrap_or(""),
            r["compiler"].as_str().unwrap_or(""),
            r["launches_per_forward"].as_f64().unwrap_or(0.0),
            top.join(", ")
        );
    }
    Ok(())
}

/// The log once cubecl's asynchronous logger has stopped writing it.
fn read_settled(path: &Path) -> anyhow::Result<String> {
    let mut last = None;
    for _ in 0..50 {
        let len = std::fs::metadata(path).map(|m| m.len()).ok();
        if len.is_some() && len == last {
            break;
        }
        last = len;
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(path).with_context(|| {
        format!(
            "cubecl wrote no log at {} (is this a wgpu build with cubecl's logger?)",
            path.display()
        )
    })
}

/// The child: the workload on wgpu, warmed up, then `--forwards` measured forwards, then a
/// pause for the logger to finish writing.
fn child(args: &KernelsBench, workload: &str) -> anyhow::Result<()> {
    let precision = args.precisions.first().copied().unwrap_or_default();
    let device = args
        .home
        .select_device(BackendChoice::Wgpu)?
        .with_precision(precision)?;
    match workload {
        "embed" => {
            let files = crate::cmd::embed::minilm_files(args.model_dir.as_deref(), &args.home);
            let embedder = Embedder::load(&files, device)?;
            // 12 tokens per sentence: [CLS] + 10 words + [SEP].
            let row: Vec<u32> = std::iter::once(101)
                .chain((0..10).map(|i| 2000 + i))
                .chain(std::iter::once(102))
                .collect();
            let rows: Vec<&[u32]> = vec![row.as_slice(); args.batch.max(1)];
            for _ in 0..WARM_UP + args.forwards {
                embedder.embed_ids(&rows)?;
            }
        }
        "decode" => {
            let path = args
                .model
                .clone()
                .unwrap_or_else(|| args.home.models().smollm_gguf());
            let (model, _) = gleaner_models::smollm::Llama::load(&path, &device.device)?;
            let model = model.into_precision(precision.dtype());
            let prompt: Vec<u32> = (1..=16).collect();
            let prompts: Vec<&[u32]> = vec![prompt.as_slice(); args.decode_batch.max(1)];
            let seqs: Vec<usize> = (0..prompts.len()).collect();
            let tokens = vec![42u32; prompts.len()];
            let (mut session, _) = model.prefill(&prompts)?;
            for _ in 0..WARM_UP + args.forwards {
                session.step(&tokens, &seqs)?;
            }
        }
        other => bail!("unknown workload {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Launch lines (`| <duration> | <name>`, as cubecl's logger writes them) are counted by
    /// the name before its generics; summary rows, compilation output and other lines are not.
    #[test]
    fn parse_log_counts_launches_and_languages() {
        let log = "\
| 1.25ms     | matmul<f32, Tile>
| 17.5µs     | matmul<f16, Tile>
| not measured | fused_elemwise
| name | 3 | 2.1ms
[START_KERNEL_COMPILATION]
@compute @workgroup_size(16, 16, 1)
fn main() {}
Executing something else
";
        let c = parse_log(log);
        assert_eq!(c.launches.get("matmul"), Some(&2));
        assert_eq!(c.launches.get("fused_elemwise"), Some(&1));
        assert_eq!(c.total(), 3);
        assert_eq!(c.languages.get("wgsl"), Some(&1));
        assert!(!c.languages.contains_key("spirv"));
    }
}
