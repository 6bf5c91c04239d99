//! Measuring a worker: its resource score R_i (GFLOP/s on the embed model).

use std::time::Instant;

use gleaner_models::Embedder;

use crate::Result;

/// Approximate FLOPs per token of all-MiniLM-L6-v2's encoder: 2 × the 10.6M weights of its six
/// layers (4 · 384² attention + 2 · 384 · 1536 feed-forward per layer); attention scores add a
/// few percent at these lengths and are left out.
pub const FLOPS_PER_TOKEN: f64 = 2.0 * 6.0 * (4.0 * 384.0 * 384.0 + 2.0 * 384.0 * 1536.0);

/// The result of a self-benchmark.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// Measured throughput in GFLOP/s: the resource score the scheduler allocates by.
    pub gflops: f64,
    /// Tokens per second.
    pub tokens_per_s: f64,
}

const PROBE_TEXTS: [&str; 8] = [
    "Idle GPUs can do useful work for foundation models.",
    "The verifier compares redundant results before anyone is paid.",
    "Workers stake tokens and lose them when they cheat.",
    "A requester escrows the budget of a job on-chain.",
    "Embeddings of similar sentences point in similar directions.",
    "Auditors rebuild every payout from the chain's events.",
    "The coordinator splits a job into tasks and leases them.",
    "Each task runs on several machines for redundancy.",
];

/// Embeds a fixed batch twice (the first run warms caches and kernels) and times the second.
pub fn probe(embedder: &Embedder) -> Result<Probe> {
    embedder.embed(&PROBE_TEXTS, 8, |_| {})?;
    let tokens: usize = PROBE_TEXTS
        .iter()
        .map(|t| embedder.tokenizer().encode(t).map_or(0, |ids| ids.len()))
        .sum();
    let start = Instant::now();
    embedder.embed(&PROBE_TEXTS, 8, |_| {})?;
    let secs = start.elapsed().as_secs_f64().max(1e-6);
    let tokens_per_s = tokens as f64 / secs;
    Ok(Probe {
        gflops: tokens_per_s * FLOPS_PER_TOKEN / 1e9,
        tokens_per_s,
    })
}
