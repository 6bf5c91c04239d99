//! Peer benchmark: candle 0.11.1 running the same work as gleaner's benches, as a typical candle
//! program does it. Two modes, each printing one JSON line on stdout (diagnostics on stderr):
//!
//! * Embed (default; `gleaner bench embed` calls it):
//!   `candle-peer --corpus FILE --weights model.safetensors --tokenizer tokenizer.json --batch N
//!   [--sorted] [--passes N]`. candle-transformers' BERT embeds a corpus with all-MiniLM-L6-v2 (batches in
//!   input order, padded to the longest member). `--sorted` also sorts by length first, as
//!   `gleaner embed` does, for a like-for-like number.
//!   With `--passes 2` it embeds the corpus twice in one process (tokenizing included each time).
//!   Prints {"implementation", "batch", "sentences", "secs", "warm_secs"}: the first pass, and
//!   the fastest later one (null with one pass).
//!
//! * Generate: `candle-peer generate --model FILE.gguf --prompt-ids 504,3575,282,...
//!   --new-tokens N --batch B`. candle-transformers' quantized Llama (`quantized_llama`) on a
//!   GGUF file, greedy decoding (argmax of the last position's logits, first maximum) with its
//!   KV cache. Prompt token ids are given directly, so no tokenizer is involved and both
//!   implementations see identical tokens. B copies of the prompt are tried as one (B, seq)
//!   batch; candle 0.11.1 cannot run that (see `generate`), so B > 1 falls back to B sequential
//!   batch-1 runs with summed times, and "implementation" says so.
//!   The prompt forward (prefill) yields the first new token; the remaining N-1 come from
//!   single-token forwards (decode), each timed separately after one untimed warm-up run.
//!   Prints {"implementation", "batch", "prompt_tokens", "prefill_secs", "new_tokens",
//!   "decode_secs", "ids"}, where `ids` are sequence 0's new tokens.

use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use candle_transformers::models::quantized_llama::ModelWeights;
use tokenizers::Tokenizer;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("generate") {
        args.next();
        generate(args)
    } else {
        embed(args)
    }
}

/// Embed mode: BERT over a corpus (see the module doc).
fn embed(mut args: impl Iterator<Item = String>) -> Res<()> {
    let mut corpus = None;
    let mut weights = None;
    let mut tok = None;
    let mut batch = 32usize;
    let mut sorted = false;
    let mut passes = 1usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--corpus" => corpus = args.next(),
            "--weights" => weights = args.next(),
            "--tokenizer" => tok = args.next(),
            "--batch" => batch = args.next().ok_or("--batch N")?.parse()?,
            "--sorted" => sorted = true,
            "--passes" => passes = args.next().ok_or("--passes N")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let corpus = std::fs::read_to_string(corpus.ok_or("--corpus FILE")?)?;
    let weights = std::path::PathBuf::from(weights.ok_or("--weights FILE")?);
    let config: Config = serde_json::from_str(&std::fs::read_to_string(
        weights.with_file_name("config.json"),
    )?)?;
    let mut tokenizer = Tokenizer::from_file(tok.ok_or("--tokenizer FILE")?)?;
    tokenizer.with_padding(None);
    tokenizer.with_truncation(Some(tokenizers::TruncationParams {
        max_length: 256,
        ..Default::default()
    }))?;
    let device = Device::Cpu;
    // SAFETY: the weights file is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device)? };
    let model = BertModel::load(vb, &config)?;

    let texts: Vec<&str> = corpus.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut times = Vec::new();
    let mut out = Vec::new();
    for _ in 0..passes.max(1) {
        let start = Instant::now();
        out = embed_pass(&model, &tokenizer, &texts, batch, sorted, &device)?;
        times.push(start.elapsed().as_secs_f64());
    }
    eprintln!("first vector starts {:?}", &out[..4]);
    let name = if sorted {
        "candle 0.11.1 (length-sorted)"
    } else {
        "candle 0.11.1"
    };
    let warm = times[1..].iter().copied().reduce(f64::min);
    println!(
        "{}",
        serde_json::json!({"implementation": name, "batch": batch, "sentences": texts.len(),
            "secs": times[0], "warm_secs": warm})
    );
    Ok(())
}

/// One pass over the corpus: tokenize, batch, embed (mean-pooled, L2-normalised).
fn embed_pass(
    model: &BertModel,
    tokenizer: &Tokenizer,
    texts: &[&str],
    batch: usize,
    sorted: bool,
    device: &Device,
) -> Res<Vec<f32>> {
    let mut enc: Vec<Vec<u32>> = Vec::with_capacity(texts.len());
    for t in texts {
        enc.push(tokenizer.encode(*t, true)?.get_ids().to_vec());
    }
    let mut order: Vec<usize> = (0..texts.len()).collect();
    if sorted {
        order.sort_by_key(|&i| enc[i].len());
    }
    let mut out = vec![0f32; texts.len() * 384];
    for chunk in order.chunks(batch.max(1)) {
        let seq = chunk.iter().map(|&i| enc[i].len()).max().unwrap_or(1);
        let mut ids = vec![0u32; chunk.len() * seq];
        let mut mask = vec![0u32; chunk.len() * seq];
        for (r, &i) in chunk.iter().enumerate() {
            for (c, &id) in enc[i].iter().enumerate() {
                ids[r * seq + c] = id;
                mask[r * seq + c] = 1;
            }
        }
        let ids = Tensor::from_vec(ids, (chunk.len(), seq), device)?;
        let mask = Tensor::from_vec(mask, (chunk.len(), seq), device)?;
        let types = ids.zeros_like()?;
        let h = model.forward(&ids, &types, Some(&mask))?;
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let sum = h.broadcast_mul(&m)?.sum(1)?;
        let mean = sum.broadcast_div(&m.sum(1)?)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        let v: Vec<Vec<f32>> = mean.broadcast_div(&norm)?.to_vec2()?;
        for (&i, row) in chunk.iter().zip(v) {
            out[i * 384..(i + 1) * 384].copy_from_slice(&row);
        }
    }
    Ok(out)
}

/// Generate mode: greedy decoding with quantized Llama from a GGUF file (see the module doc).
fn generate(mut args: impl Iterator<Item = String>) -> Res<()> {
    let mut model_path = None;
    let mut prompt: Vec<u32> = Vec::new();
    let mut new_tokens = 16usize;
    let mut batch = 1usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--model" => model_path = args.next(),
            "--prompt-ids" => {
                let list = args.next().ok_or("--prompt-ids ID,ID,...")?;
                prompt = list
                    .split(',')
                    .map(|t| t.trim().parse())
                    .collect::<Result<_, _>>()?;
            }
            "--new-tokens" => new_tokens = args.next().ok_or("--new-tokens N")?.parse()?,
            "--batch" => batch = args.next().ok_or("--batch B")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let model_path = model_path.ok_or("--model FILE.gguf")?;
    if prompt.is_empty() || new_tokens == 0 || batch == 0 {
        return Err("need a non-empty --prompt-ids, --new-tokens >= 1 and --batch >= 1".into());
    }
    let device = Device::Cpu;
    let mut file = std::fs::File::open(&model_path)?;
    let content = gguf_file::Content::read(&mut file)?;
    let mut model = ModelWeights::from_gguf(content, &mut file, &device)?;

    // One untimed run (prefill plus one decode step) so page faults on the weights and
    // first-use allocations do not land in the measurement. For B > 1 it also probes whether
    // quantized_llama takes the batch as one tensor: in candle 0.11.1 it does not. Its forward
    // carries the batch dimension throughout, but a prompt of more than one token with B > 1
    // fails at the output projection, which gets the non-contiguous last-position slice
    // (`x.i((.., seq_len - 1, ..))`) that the CPU quantized matmul rejects ("input tensor is not
    // contiguous"; cf. huggingface/candle#2788). Single-token decode steps would batch, but the
    // only other way to fill a batched KV cache is feeding the prompt one token at a time, which
    // is no prompt forward at all; so the fallback runs the B sequences one after another, and
    // the output's "implementation" says so.
    let batched = batch == 1
        || match run(&mut model, &prompt, 2.min(new_tokens), batch, &device) {
            Ok(_) => true,
            Err(e) => {
                let first = e.to_string().lines().next().unwrap_or_default().to_string();
                eprintln!(
                    "quantized_llama cannot run a ({batch}, {}) prompt batch: {first}",
                    prompt.len()
                );
                eprintln!("falling back to {batch} sequential runs of batch 1");
                false
            }
        };
    model.clear_kv_cache();
    if !batched {
        run(&mut model, &prompt, 2.min(new_tokens), 1, &device)?;
        model.clear_kv_cache();
    }

    let (r, implementation) = if batched {
        let r = run(&mut model, &prompt, new_tokens, batch, &device)?;
        (r, "candle 0.11.1 quantized_llama".to_string())
    } else {
        // Times are summed over the runs, so B*P/prefill_secs and B*N/decode_secs stay
        // throughputs of the whole batch.
        let mut total = run(&mut model, &prompt, new_tokens, 1, &device)?;
        eprintln!(
            "sequence 0: prefill {:.3} s, decode {:.3} s",
            total.prefill_secs, total.decode_secs
        );
        for i in 1..batch {
            model.clear_kv_cache();
            let r = run(&mut model, &prompt, new_tokens, 1, &device)?;
            eprintln!(
                "sequence {i}: prefill {:.3} s, decode {:.3} s",
                r.prefill_secs, r.decode_secs
            );
            total.rows_agree &= r.ids == total.ids;
            total.prefill_secs += r.prefill_secs;
            total.decode_secs += r.decode_secs;
        }
        let name = format!("candle 0.11.1 quantized_llama ({batch} sequential batch-1 runs)");
        (total, name)
    };
    if batch > 1 {
        if r.rows_agree {
            eprintln!("all {batch} sequences generated the same ids");
        } else {
            eprintln!("warning: the {batch} identical sequences generated different ids");
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "implementation": implementation,
            "batch": batch,
            "prompt_tokens": prompt.len(),
            "prefill_secs": r.prefill_secs,
            "new_tokens": new_tokens,
            "decode_secs": r.decode_secs,
            "ids": r.ids,
        })
    );
    Ok(())
}

/// What one generation run produced.
struct Generation {
    /// New token ids of sequence 0.
    ids: Vec<u32>,
    /// Whether every sequence in the batch produced the same ids as sequence 0.
    rows_agree: bool,
    /// Seconds for the prompt forward (and its argmax).
    prefill_secs: f64,
    /// Seconds for the `new_tokens - 1` single-token forwards (and their argmaxes).
    decode_secs: f64,
}

/// Generates `new_tokens` tokens greedily for `batch` copies of `prompt`, as one (batch, seq)
/// tensor, each row taking its own argmax. Starts at position 0, which replaces any earlier KV
/// cache. With `batch > 1` and a prompt of more than one token this fails in candle 0.11.1
/// (see `generate`).
fn run(
    model: &mut ModelWeights,
    prompt: &[u32],
    new_tokens: usize,
    batch: usize,
    device: &Device,
) -> Res<Generation> {
    let mut rows: Vec<Vec<u32>> = vec![Vec::with_capacity(new_tokens); batch];

    let start = Instant::now();
    let input = Tensor::new(prompt, device)?
        .unsqueeze(0)?
        .repeat((batch, 1))?;
    let mut next = argmax_rows(&model.forward(&input, 0)?)?;
    let prefill_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    for step in 1..new_tokens {
        for (row, &t) in rows.iter_mut().zip(&next) {
            row.push(t);
        }
        let input = Tensor::from_vec(next, (batch, 1), device)?;
        next = argmax_rows(&model.forward(&input, prompt.len() + step - 1)?)?;
    }
    let decode_secs = start.elapsed().as_secs_f64();
    for (row, &t) in rows.iter_mut().zip(&next) {
        row.push(t);
    }

    let rows_agree = rows.iter().all(|r| *r == rows[0]);
    Ok(Generation {
        ids: rows.swap_remove(0),
        rows_agree,
        prefill_secs,
        decode_secs,
    })
}

/// The index of each row's largest logit in (batch, vocab) logits; the first one on ties.
fn argmax_rows(logits: &Tensor) -> Res<Vec<u32>> {
    let logits: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
    Ok(logits
        .iter()
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect())
}
