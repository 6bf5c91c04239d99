//! `gleaner bench`: throughput numbers, printed, never asserted by timed tests.

mod coordinator;
mod embed;
mod generate;
mod kernels;
mod sim;

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use clap::Subcommand;

pub(crate) use coordinator::CoordinatorBench;
pub(crate) use embed::EmbedBench;
pub(crate) use generate::GenerateBench;
pub(crate) use kernels::KernelsBench;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Sentences/s of all-MiniLM-L6-v2 on each backend, and on a peer implementation.
    ///
    /// Embeds a fixed corpus (default bench/corpus-1000.txt: 1,000 sentences of 10-40 words) on
    /// each backend and prints a table with three rows per batch size: `first` (the first pass
    /// after the start-up warm-up a miner does: on a GPU every padded shape runs once), `warm`
    /// (the same pass again) and `process` (a whole `gleaner embed` process: start, load, embed,
    /// write, exit; best of --repeat). With --peer, runs the candle peer (bench/candle-peer,
    /// built --release by scripts/bench) the same ways on the same corpus and weights, and prints
    /// the ratios of each pass. Also prints how far each backend's vectors are from the first
    /// one's (minimum row cosine), which calibrates the embed comparator.
    ///
    /// Examples:
    ///   gleaner bench embed
    ///   gleaner bench embed --backends cpu,flex,ndarray,wgpu --wgpu-limit 64 --repeat 3
    ///   scripts/bench
    #[command(verbatim_doc_comment)]
    Embed(EmbedBench),
    /// SmolLM2 generation: prompt tokens/s and new tokens/s at batch 1 and 8 on each backend
    /// (each batch size first cold, then warm), the cost of the verifier's teacher-forced check
    /// relative to generation (its first run and a second), how far each
    /// backend's logits are from the first one's (which calibrates the verifier's margin), and
    /// with --peer candle's quantized Llama on the same GGUF in the same run.
    ///
    /// Examples:
    ///   gleaner bench generate
    ///   gleaner bench generate --backends flex --batches 1 --new-tokens 32
    ///   scripts/bench generate
    #[command(verbatim_doc_comment)]
    Generate(GenerateBench),
    /// GPU kernel launches per MiniLM forward and per decoded SmolLM2 token, on wgpu (a GPU,
    /// or lavapipe), for each precision, with the shader compiler cubecl used (SPIR-V or WGSL)
    /// and the most launched kernels.
    ///
    /// Runs itself as a child with cubecl's log on, once with one measured forward and once
    /// with three after the same warm-up, and prints the difference over two: compilation,
    /// autotuning and loading cancel out. Each launch is a dispatch that a decoding step
    /// waits for, so fusion and sampling on the device show here before any timing does.
    ///
    /// Examples:
    ///   gleaner bench kernels
    ///   gleaner bench kernels --precisions f16 --batch 32 --decode-batch 8 --json
    #[command(verbatim_doc_comment)]
    Kernels(KernelsBench),
    /// The coordinator under simulated workers: round trips/s, per-endpoint latency, its CPU
    /// share, database bytes and gas per task.
    ///
    /// For each worker count: a fresh anvil with the contracts, staked worker keys, a
    /// `gleaner coordinator run` child on a fresh database (a SQLite file, or a database created
    /// on --database's PostgreSQL) and one job of a simulated kind ("sim": the output is the
    /// input's sha256) registered through the requester library. Workers are tokio tasks with
    /// their own keys and clients: real EIP-712 sign-in, then lease, blob PUT and signed result
    /// over HTTP on loopback, as fast as they can. The verifier runs in-process, decides,
    /// settles on-chain, and the job is audited. Gas is every transaction from the requester's
    /// approve to the settlement, per task. Needs anvil (scripts/setup), no model.
    ///
    /// Examples:
    ///   gleaner bench coordinator
    ///   gleaner bench coordinator --workers 50 --tasks 10000 --redundancy 2 --json
    ///   gleaner bench coordinator --database postgres://postgres@127.0.0.1/postgres
    #[command(verbatim_doc_comment)]
    Coordinator(CoordinatorBench),
}

pub(crate) fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Embed(args) => embed::embed(args),
        BenchCommand::Generate(args) => generate::generate(args),
        BenchCommand::Kernels(args) => kernels::kernels(args),
        BenchCommand::Coordinator(args) => coordinator::coordinator(args),
    }
}

/// Every (backend, precision) pair to measure, backends first: f16 and other precisions only on
/// wgpu, since CPU backends compute in f32.
fn configs(
    backends: &[gleaner_models::BackendChoice],
    precisions: &[gleaner_models::Precision],
) -> Vec<(gleaner_models::BackendChoice, gleaner_models::Precision)> {
    use gleaner_models::{BackendChoice, Precision};
    backends
        .iter()
        .flat_map(|&b| precisions.iter().map(move |&p| (b, p)))
        .filter(|&(b, p)| p == Precision::F32 || b == BackendChoice::Wgpu)
        .collect()
}

/// Runs a peer benchmark command that prints one JSON object, and parses it.
fn peer_json(mut cmd: Command, peer: &Path) -> anyhow::Result<serde_json::Value> {
    let out = cmd
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
    serde_json::from_str(line.trim())
        .with_context(|| format!("peer printed {line:?}, expected one JSON object"))
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

#[cfg(test)]
mod tests {
    use gleaner_models::{BackendChoice as B, Precision as P};

    #[test]
    fn configs_offer_f16_on_wgpu_only() {
        let got = super::configs(&[B::Cpu, B::Wgpu, B::Flex], &[P::F32, P::F16]);
        assert_eq!(
            got,
            vec![
                (B::Cpu, P::F32),
                (B::Wgpu, P::F32),
                (B::Wgpu, P::F16),
                (B::Flex, P::F32)
            ]
        );
        assert!(super::configs(&[B::Cpu], &[P::F16]).is_empty());
    }
}
