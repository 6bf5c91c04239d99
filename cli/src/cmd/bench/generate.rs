//! `gleaner bench generate`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use gleaner_models::smollm::GENERATE_MARGIN;
use gleaner_models::{BackendChoice, Decoder, Precision};

use crate::common::HomeArgs;

/// Options of `gleaner bench generate`.
#[derive(Debug, Args)]
pub struct GenerateBench {
    /// Backends to measure, comma-separated (wgpu is skipped with a note when no adapter exists).
    #[arg(long, value_delimiter = ',', default_value = "flex,ndarray")]
    pub backends: Vec<BackendChoice>,
    /// Float types to measure on wgpu, comma-separated (f32, f16); CPU backends run f32 only.
    /// Each configuration's logits are compared with the first's, and the first's verifier
    /// checks its greedy output (what an honest worker of that precision would be judged by).
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    pub precisions: Vec<Precision>,
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
    /// Warm runs per measurement: the warm generation, its one-token prefill and the warm
    /// teacher-forced check each run this many times and report their median (this host's
    /// speed may move from one second to the next; one run says little).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeats: u32,
    /// Print JSON lines (one per row, then one per calibration) instead of the table.
    #[arg(long)]
    pub json: bool,
}

type GenFn<'a> = dyn Fn(&[&[u32]], usize) -> gleaner_models::Result<Vec<Vec<u32>>> + 'a;

/// Times `generate` at each batch size: once cold (the first time this process decodes at that
/// batch size), then warm (prefill = one new token; decode = the rest), the median of
/// `--repeats` runs each. At batch 1 it also times `verifier`'s teacher-forced check of the
/// output, which must accept it every time: the first check (cold) and the median of
/// `--repeats` more (warm). Returns the batch-1 output.
fn measure(
    name: &str,
    args: &GenerateBench,
    prompt: &[u32],
    generate: &GenFn<'_>,
    verifier: &dyn Decoder,
    rows: &mut Vec<GenRow>,
) -> anyhow::Result<Option<Vec<u32>>> {
    let mut greedy = None;
    for &b in &args.batches {
        let refs: Vec<&[u32]> = vec![prompt; b];
        let t = Instant::now();
        let cold = generate(&refs, args.new_tokens)?;
        let cold_secs = t.elapsed().as_secs_f64();
        let repeats = args.repeats as usize;
        let (mut prefills, mut totals) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            let t = Instant::now();
            generate(&refs, 1)?;
            prefills.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let outs = generate(&refs, args.new_tokens)?;
            totals.push(t.elapsed().as_secs_f64());
            if outs != cold {
                bail!("{name} batch {b}: two greedy runs gave different tokens");
            }
        }
        let (prefill, total) = (median(&mut prefills), median(&mut totals));
        let mut verify_secs = None;
        if b == 1 {
            let mut secs = Vec::with_capacity(repeats + 1);
            let mut max_gap = 0f32;
            for _ in 0..=repeats {
                let t = Instant::now();
                let check = verifier.check_greedy(prompt, &cold[0], GENERATE_MARGIN)?;
                secs.push(t.elapsed().as_secs_f64());
                if !check.accepted {
                    bail!("{name}: the verifier rejected its greedy output: {check:?}");
                }
                max_gap = max_gap.max(check.max_gap);
            }
            eprintln!(
                "{name}: verifier accepts its output {} times, largest gap {max_gap:.2e}",
                repeats + 1
            );
            verify_secs = Some((secs[0], median(&mut secs[1..])));
            greedy = Some(cold[0].clone());
        }
        let row = GenRow {
            implementation: name.to_owned(),
            precision: Precision::F32,
            batch: b,
            prompt: prompt.len(),
            prefill_secs: prefill,
            new: cold[0].len(),
            decode_secs: (total - prefill).max(1e-9),
            cold_secs,
            verify_secs,
            repeats,
        };
        eprintln!(
            "{name} batch {b}: prompt {:.1} tok/s, new {:.1} tok/s (cold: {:.1} tok/s overall)",
            (b * row.prompt) as f64 / row.prefill_secs,
            (b * row.new) as f64 / row.decode_secs,
            (b * row.new) as f64 / row.cold_secs,
        );
        rows.push(row);
    }
    Ok(greedy)
}

const GEN_PROMPT: &str = "Gleaner turns idle GPUs into a verifiable compute market. Requesters \
escrow tokens, workers run foundation models, and a verifier compares redundant results before \
anyone is paid. Explain in simple words why redundancy matters:";

/// One measured configuration of `bench generate`.
#[derive(Clone)]
struct GenRow {
    implementation: String,
    precision: Precision,
    batch: usize,
    prompt: usize,
    prefill_secs: f64,
    new: usize,
    decode_secs: f64,
    /// The first generation at this batch size, prefill included (0 for the peer: not run).
    cold_secs: f64,
    /// Teacher-forced check of the batch-1 output, seconds: the first check, and the median of
    /// `--repeats` more.
    verify_secs: Option<(f64, f64)>,
    /// Runs behind each warm median.
    repeats: usize,
}

impl GenRow {
    /// One JSON object: the measured seconds and the rates derived from them.
    fn json(&self) -> serde_json::Value {
        let gen_secs = self.prefill_secs + self.decode_secs;
        let (vc, vw) = self.verify_secs.unzip();
        serde_json::json!({
            "implementation": self.implementation,
            "precision": self.precision,
            "batch": self.batch,
            "prompt": self.prompt,
            "prefill_secs": self.prefill_secs,
            "prefill_tok_per_s": (self.batch * self.prompt) as f64 / self.prefill_secs,
            "new": self.new,
            "decode_secs": self.decode_secs,
            "new_tok_per_s": (self.batch * self.new) as f64 / self.decode_secs,
            "cold_secs": (self.cold_secs > 0.0).then_some(self.cold_secs),
            "verify_cold_secs": vc,
            "verify_warm_secs": vw,
            "verify_over_gen_cold": vc.map(|v| v / gen_secs),
            "verify_over_gen_warm": vw.map(|v| v / gen_secs),
            "repeats": self.repeats,
        })
    }
}

/// The median of `v` (the upper one of an even count); `v` is not empty.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The largest element-wise difference of two logit arrays.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
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

pub(super) fn generate(args: GenerateBench) -> anyhow::Result<()> {
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
    // The first configuration's model and teacher-forced pass (prompt + its greedy output).
    let mut reference: Option<Reference> = None;
    let mut prompt_ids = Vec::new();
    let mut quantized_done = false;
    for (backend, precision) in super::configs(&args.backends, &args.precisions) {
        let dev = match args
            .home
            .select_device(backend)
            .and_then(|d| Ok(d.with_precision(precision)?))
        {
            Ok(d) => d,
            Err(e) if backend == BackendChoice::Wgpu => {
                eprintln!("skipping wgpu {precision}: {e:#}");
                continue;
            }
            Err(e) => return Err(e),
        };
        let name = match precision {
            Precision::F32 => format!("gleaner/{}", dev.backend),
            p => format!("gleaner/{}-{p}", dev.backend),
        };
        let (model, tok) = Llama::load(&path, &dev.device)?;
        let model = model.into_precision(precision.dtype());
        let prompt = tok
            .encode(GEN_PROMPT, false)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .get_ids()
            .to_vec();
        prompt_ids.clone_from(&prompt);
        let burn_gen = |refs: &[&[u32]], n: usize| {
            model.generate_batch(refs, n, None, &vec![None; refs.len()])
        };
        let first_row = rows.len();
        let greedy = measure(&name, &args, &prompt, &burn_gen, &model, &mut rows)?;
        for row in &mut rows[first_row..] {
            row.precision = precision;
        }
        // The quantized CPU decoder (what CPU workers generate with, and what a `cpu` verifier
        // checks with), once, verifying itself as a `cpu` verifier does.
        if args.quantized && dev.adapter.is_none() && !quantized_done {
            quantized_done = true;
            let q = gleaner_models::qcpu::QuantLlama::load(&path, model.config())?;
            let q_gen = |refs: &[&[u32]], n: usize| {
                q.generate_batch(refs, n, None, &vec![None; refs.len()])
            };
            let qname = "gleaner/quantized-cpu".to_owned();
            measure(&qname, &args, &prompt, &q_gen, &q, &mut rows)?;
            let mut ids = prompt.clone();
            ids.extend(greedy.clone().unwrap_or_default());
            let (a, b) = (model.forward_all(&ids)?, q.forward_all(&ids)?);
            calibration.push(Calibration {
                implementation: format!("{qname} (the verifier's pass)"),
                against: name.clone(),
                positions: ids.len(),
                max_logit_diff: Some(max_abs_diff(&a, &b)),
                min_top2_gap: None,
                reference_accepts: None,
            });
        }
        // Calibration: the same teacher-forced pass on each configuration, and the reference
        // verifier's judgement of this configuration's greedy output.
        let v = model.config().vocab;
        let greedy = greedy.unwrap_or_default();
        match &reference {
            None => {
                let mut ids = prompt.clone();
                ids.extend(&greedy);
                let logits = model.forward_all(&ids)?;
                calibration.push(Calibration {
                    implementation: name.clone(),
                    against: name.clone(),
                    positions: ids.len(),
                    max_logit_diff: None,
                    min_top2_gap: Some(min_top2_gap(&logits, v, prompt.len() - 1)),
                    reference_accepts: None,
                });
                reference = Some(Reference {
                    name,
                    model,
                    ids,
                    logits,
                });
            }
            Some(r) => {
                let logits = model.forward_all(&r.ids)?;
                let check = r.model.check_greedy(&prompt, &greedy, GENERATE_MARGIN)?;
                calibration.push(Calibration {
                    implementation: name,
                    against: r.name.clone(),
                    positions: r.ids.len(),
                    max_logit_diff: Some(max_abs_diff(&r.logits, &logits)),
                    min_top2_gap: None,
                    reference_accepts: Some((check.accepted, check.max_gap)),
                });
            }
        }
    }
    if let Some(peer) = &args.peer {
        // The peer as often as our warm runs, its medians taken the same way.
        for &b in &args.batches {
            let runs = (0..args.repeats)
                .map(|_| run_generate_peer(peer, &path, &prompt_ids, args.new_tokens, b))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut first = runs[0].clone();
            let pick = |f: fn(&GenRow) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
            first.prefill_secs = pick(|r| r.prefill_secs);
            first.decode_secs = pick(|r| r.decode_secs);
            first.repeats = runs.len();
            rows.push(first);
        }
    }
    if args.json {
        for r in &rows {
            println!("{}", r.json());
        }
        for c in &calibration {
            println!("{}", c.json());
        }
        return Ok(());
    }
    print_gen_rows(&rows);
    for c in &calibration {
        println!("{c}");
    }
    Ok(())
}

/// The first configuration of a run: what every later one is compared with.
struct Reference {
    name: String,
    model: gleaner_models::smollm::Llama,
    /// Prompt + the reference's greedy output.
    ids: Vec<u32>,
    /// The reference's teacher-forced logits of `ids`.
    logits: Vec<f32>,
}

/// How one configuration's logits compare with the reference's.
struct Calibration {
    implementation: String,
    against: String,
    positions: usize,
    /// Largest |logit difference| against `against` over `positions` teacher-forced positions.
    max_logit_diff: Option<f32>,
    /// The reference's smallest top-2 logit gap along its own greedy output.
    min_top2_gap: Option<f32>,
    /// Whether the reference's verifier accepts this configuration's greedy output, and the
    /// largest logit gap it saw.
    reference_accepts: Option<(bool, f32)>,
}

impl Calibration {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "calibration": self.implementation,
            "against": self.against,
            "positions": self.positions,
            "max_logit_diff": self.max_logit_diff,
            "min_top2_gap": self.min_top2_gap,
            "margin": GENERATE_MARGIN,
            "reference_accepts": self.reference_accepts.map(|(a, _)| a),
            "reference_max_gap": self.reference_accepts.map(|(_, g)| g),
        })
    }
}

impl std::fmt::Display for Calibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.positions;
        if let Some(gap) = self.min_top2_gap {
            return write!(
                f,
                "{}: smallest top-2 logit gap along its greedy output {gap:.3}",
                self.implementation
            );
        }
        write!(f, "{} vs {}:", self.implementation, self.against)?;
        if let Some(d) = self.max_logit_diff {
            write!(
                f,
                " max |logit difference| {d:.2e} over {n} positions (verifier margin \
                 {GENERATE_MARGIN})"
            )?;
        }
        match self.reference_accepts {
            Some((true, gap)) => write!(
                f,
                "; its verifier accepts the greedy output (gap {gap:.2e})"
            ),
            Some((false, gap)) => write!(
                f,
                "; ITS VERIFIER REJECTS the greedy output (gap {gap:.2e}): an honest worker \
                 of this configuration would be slashed"
            ),
            None => Ok(()),
        }
    }
}

fn run_generate_peer(
    peer: &Path,
    model: &std::path::Path,
    prompt: &[u32],
    new_tokens: usize,
    batch: usize,
) -> anyhow::Result<GenRow> {
    let ids: Vec<String> = prompt.iter().map(u32::to_string).collect();
    let mut cmd = Command::new(peer);
    cmd.arg("generate")
        .arg("--model")
        .arg(model)
        .args(["--prompt-ids", &ids.join(",")])
        .args(["--new-tokens", &new_tokens.to_string()])
        .args(["--batch", &batch.to_string()]);
    let v = super::peer_json(cmd, peer)?;
    let f = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("peer output lacks {k}"))
    };
    Ok(GenRow {
        implementation: v["implementation"].as_str().unwrap_or("peer").to_owned(),
        precision: Precision::F32,
        batch,
        prompt: f("prompt_tokens")? as usize,
        prefill_secs: f("prefill_secs")?,
        new: f("new_tokens")? as usize,
        decode_secs: f("decode_secs")?,
        cold_secs: 0.0,
        verify_secs: None,
        repeats: 1,
    })
}

fn print_gen_rows(rows: &[GenRow]) {
    println!(
        "{:<36} {:>5} {:>7} {:>13} {:>5} {:>10} {:>10} {:>13} {:>13}",
        "implementation",
        "batch",
        "prompt",
        "prompt tok/s",
        "new",
        "new tok/s",
        "cold tok/s",
        "verify s c/w",
        "verify/gen c/w"
    );
    let rate = |r: &GenRow| (r.batch * r.new) as f64 / r.decode_secs;
    for r in rows {
        let gen_secs = r.prefill_secs + r.decode_secs;
        let (v, ratio) = r
            .verify_secs
            .map_or(("-".into(), "-".into()), |(cold, warm)| {
                (
                    format!("{cold:.3}/{warm:.3}"),
                    format!("{:.3}/{:.3}", cold / gen_secs, warm / gen_secs),
                )
            });
        let cold = if r.cold_secs > 0.0 {
            format!("{:.1}", (r.batch * r.new) as f64 / r.cold_secs)
        } else {
            "-".into()
        };
        println!(
            "{:<36} {:>5} {:>7} {:>13.1} {:>5} {:>10.1} {:>10} {:>13} {:>13}",
            r.implementation,
            r.batch,
            r.prompt,
            (r.batch * r.prompt) as f64 / r.prefill_secs,
            r.new,
            rate(r),
            cold,
            v,
            ratio
        );
    }
    let rates: Vec<(&str, usize, f64)> = rows
        .iter()
        .map(|r| (r.implementation.as_str(), r.batch, rate(r)))
        .collect();
    super::print_peer_ratios(&rates, "new tokens/s ");
}
