//! Peer benchmark: candle-transformers' BERT embedding a corpus with all-MiniLM-L6-v2, as a
//! typical candle program does it (batches in input order, padded to the longest member).
//! `--sorted` also sorts by length first, as `gleaner embed` does, for a like-for-like number.
//!
//! Prints one JSON object: {"implementation", "batch", "sentences", "secs"}.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::Tokenizer;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Res<()> {
    let mut corpus = None;
    let mut weights = None;
    let mut tok = None;
    let mut batch = 32usize;
    let mut sorted = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--corpus" => corpus = args.next(),
            "--weights" => weights = args.next(),
            "--tokenizer" => tok = args.next(),
            "--batch" => batch = args.next().ok_or("--batch N")?.parse()?,
            "--sorted" => sorted = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let corpus = std::fs::read_to_string(corpus.ok_or("--corpus FILE")?)?;
    let weights = std::path::PathBuf::from(weights.ok_or("--weights FILE")?);
    let config: Config =
        serde_json::from_str(&std::fs::read_to_string(weights.with_file_name("config.json"))?)?;
    let mut tokenizer = Tokenizer::from_file(tok.ok_or("--tokenizer FILE")?)?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams { max_length: 256, ..Default::default() }))?;
    let device = Device::Cpu;
    // SAFETY: the weights file is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device)? };
    let model = BertModel::load(vb, &config)?;

    let texts: Vec<&str> = corpus.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = Instant::now();
    let mut enc: Vec<Vec<u32>> = Vec::with_capacity(texts.len());
    for t in &texts {
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
        let ids = Tensor::from_vec(ids, (chunk.len(), seq), &device)?;
        let mask = Tensor::from_vec(mask, (chunk.len(), seq), &device)?;
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
    let secs = start.elapsed().as_secs_f64();
    eprintln!("first vector starts {:?}", &out[..4]);
    let name = if sorted { "candle 0.11.1 (length-sorted)" } else { "candle 0.11.1" };
    println!(
        "{}",
        serde_json::json!({"implementation": name, "batch": batch, "sentences": texts.len(), "secs": secs})
    );
    Ok(())
}
