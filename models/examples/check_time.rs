//! Times the verifier's greedy check of SmolLM2 on the quantized CPU decoder, many times over,
//! and prints a fingerprint of the check's logits, so that a change to the teacher-forced pass
//! can be timed and shown to leave every logit unchanged, bit for bit.
//!
//! The decoder generates 64 tokens after a fixed prompt once; then `verify` checks them `REPS`
//! times (default 40). It prints the first check's time, the median and the fastest.
//!
//! ```text
//! cargo build --workspace --examples
//! $CARGO_TARGET_DIR/debug/examples/check_time ~/.cache/gleaner/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf 40
//! RAYON_NUM_THREADS=1 $CARGO_TARGET_DIR/debug/examples/check_time GGUF    # one thread
//! ```
//!
//! `scripts/setup` fetches the GGUF.

use std::error::Error;
use std::time::Instant;

use gleaner_models::smollm::{Decoder, Decoding, GENERATE_MARGIN, tokenizer_from_gguf, verify};
use gleaner_models::{LlamaConfig, gguf::Gguf, qcpu::QuantLlama};

const PROMPT: &str = "Gleaner turns idle GPUs into a verifiable compute market. Requesters \
                      escrow tokens, workers run models, and a verifier compares their results.";

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        return Err("usage: check_time GGUF [REPS] (scripts/setup fetches the GGUF)".into());
    };
    let reps: usize = args.next().map_or(Ok(40), |s| s.parse())?.max(1);
    let g = Gguf::open(std::path::Path::new(&path))?;
    let tok = tokenizer_from_gguf(&g)?;
    let q = QuantLlama::from_gguf(&g, LlamaConfig::from_gguf(&g, tok.get_vocab_size(false))?)?;
    let prompt = tok.encode(PROMPT, false)?.get_ids().to_vec();
    let t = Instant::now();
    let claimed = q.generate_batch(&[&prompt], 64, None, &[None])?.remove(0);
    let gen_s = t.elapsed().as_secs_f64();
    let rule = Decoding {
        max_new: 64,
        eos: None,
        sampling: None,
        margin: GENERATE_MARGIN,
    };
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let check = verify(&q, &prompt, &claimed, &rule)?;
        times.push(t.elapsed().as_secs_f64());
        if !check.accepted {
            return Err("the check rejected the decoder's own output".into());
        }
    }
    // FNV-1a over every logit's bits, of every position of prompt and output.
    let logits = q.forward_all(&[prompt.as_slice(), &claimed].concat())?;
    let fingerprint = logits.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, v| {
        (h ^ u64::from(v.to_bits())).wrapping_mul(0x0100_0000_01b3)
    });
    let first = times[0];
    times.sort_by(f64::total_cmp);
    println!(
        "fingerprint {fingerprint:016x} over {} logits",
        logits.len()
    );
    println!(
        "prompt {} tokens, {} generated in {gen_s:.3} s; check: first {first:.4} s, median {:.4} s, fastest {:.4} s",
        prompt.len(),
        claimed.len(),
        times[reps / 2],
        times[0],
    );
    Ok(())
}
