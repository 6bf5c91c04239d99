//! The `gleaner` command line: argument parsing and dispatch only; the work lives in the library
//! crates (`gleaner-models`, `gleaner-protocol`, ...).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
pub mod common;
mod output;

pub use output::write_safetensors;

/// Gleaner: a verifiable compute market for foundation models.
///
/// Requesters escrow tokens for jobs, staked miners run the models, a verifier settles on-chain,
/// anyone can audit. This binary holds every role.
#[derive(Debug, Parser)]
#[command(name = "gleaner", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub cmd: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Embed sentences with all-MiniLM-L6-v2 (one text per input line).
    Embed(cmd::embed::EmbedArgs),
    /// Generate text with SmolLM2-135M-Instruct.
    Generate(cmd::generate::GenerateArgs),
    /// Measure throughput.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// List wgpu adapters and the backend `--backend auto` would choose.
    Backends,
    /// The coordinator service: HTTP API, store, scheduler, chain watcher.
    #[command(subcommand)]
    Coordinator(cmd::coordinator::CoordinatorCommand),
    /// The verifier service: compares replicas, settles and slashes on-chain.
    #[command(subcommand)]
    Verifier(cmd::verifier::VerifierCommand),
    /// Stake, run tasks, earn (workers).
    #[command(subcommand)]
    Miner(cmd::miner::MinerCommand),
    /// Keys, balances, faucet, withdrawals.
    #[command(subcommand)]
    Wallet(cmd::wallet::WalletCommand),
    /// Submit jobs, follow them, collect results (requesters).
    #[command(subcommand)]
    Job(cmd::job::JobCommand),
    /// Recompute settlements from chain events and the published report (anyone).
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
    /// Serve the explorer's web pages (jobs, tasks, workers, money) apart from the coordinator.
    Explorer(cmd::explorer::ExplorerArgs),
    /// Local chain helpers: deploy contracts, fund accounts.
    #[command(subcommand)]
    Devnet(cmd::devnet::DevnetCommand),
    /// Simulate the market's economics: does cheating pay under spot checks?
    ///
    /// Runs every strategy (honest; fake a share of results; fake one row of a share of
    /// results; fake only what it computes first; colluding pairs; build trust then cheat; go
    /// offline) through the verifier's own decision, trust, spot-check and payout code, and
    /// prints per strategy: profit per replica leased against an honest worker's (in replica
    /// prices; negative: cheating loses), the probability that a job accepts a fake, compute per
    /// task (replicas plus the verifier's part checks), and time to settle.
    ///
    /// Examples:
    ///   gleaner sim
    ///   gleaner sim --jobs 30 --tasks 4000 --spot-check 0.05 --trust-after 20 --json
    ///   gleaner sim --no-part-checks   (fakes found only by comparing replicas)
    ///   gleaner sim --full          (every task computed --redundancy times, for comparison)
    #[command(verbatim_doc_comment)]
    Sim(cmd::sim::SimArgs),
}

/// Parses the command line, runs it, prints any error with its causes, and returns the exit code.
pub fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Command::Embed(args) => cmd::embed::run(args),
        Command::Generate(args) => cmd::generate::run(args),
        Command::Bench(cmd) => cmd::bench::run(cmd),
        Command::Backends => cmd::backends(),
        Command::Coordinator(cmd) => cmd::coordinator::run(cmd),
        Command::Verifier(cmd) => cmd::verifier::run(cmd),
        Command::Miner(cmd) => cmd::miner::run(cmd),
        Command::Wallet(cmd) => cmd::wallet::run(cmd),
        Command::Job(cmd) => cmd::job::run(cmd),
        Command::Audit(cmd) => cmd::audit::run(cmd),
        Command::Explorer(args) => cmd::explorer::run(args),
        Command::Devnet(cmd) => cmd::devnet::run(cmd),
        Command::Sim(args) => cmd::sim::run(args),
    }
}

/// Our crates log at info; dependencies (wgpu, cubecl's autotuner, sqlx) only warnings.
/// `RUST_LOG` overrides it.
const DEFAULT_LOG: &str = "warn,gleaner_cli=info,gleaner_models=info,gleaner_coordinator=info,\
gleaner_worker=info,gleaner_verifier=info,models=info,coordinator=info,worker=info,verifier=info,\
kinds=info,gleaner=info";

fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn embed_defaults() {
        let cli = Cli::try_parse_from(["gleaner", "embed"]).unwrap();
        let Command::Embed(args) = cli.cmd else {
            panic!("not embed")
        };
        assert_eq!(args.batch, 32);
        assert_eq!(args.backend, gleaner_models::BackendChoice::Auto);
        assert!(args.input.is_none());
    }

    #[test]
    fn safetensors_needs_out() {
        let err = Cli::try_parse_from(["gleaner", "embed", "--format", "safetensors"]).unwrap_err();
        assert!(err.to_string().contains("--out"), "{err}");
    }

    /// Every GLEANER_* variable docker-compose.yml sets is read by a command that service runs.
    #[test]
    fn compose_sets_only_variables_the_binary_reads() {
        let compose = include_str!("../../docker-compose.yml");
        let root = Cli::command();
        let env_of = |path: &[&str]| -> Vec<String> {
            let mut cmd = &root;
            for p in path {
                cmd = cmd
                    .find_subcommand(p)
                    .unwrap_or_else(|| panic!("no subcommand {path:?}"));
            }
            cmd.get_arguments()
                .filter_map(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
                .collect()
        };
        let mut services = Vec::new(); // (name, commands, vars)
        let mut in_services = false;
        for line in compose.lines() {
            if !line.starts_with(' ') && !line.is_empty() {
                in_services = line.starts_with("services:");
                continue;
            }
            if !in_services {
                continue;
            }
            if let Some(name) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
                services.push((
                    name.trim_end_matches(':').to_owned(),
                    Vec::new(),
                    Vec::new(),
                ));
                continue;
            }
            let Some((_, cmds, vars)) = services.last_mut() else {
                continue;
            };
            let t = line.trim();
            if let Some(c) = t.strip_prefix("command: [") {
                let words: Vec<String> = c
                    .trim_end_matches(']')
                    .split(',')
                    .map(|w| w.trim().trim_matches('"').to_owned())
                    .collect();
                cmds.push(words);
            }
            for (i, _) in t.match_indices("gleaner ") {
                let words: Vec<String> = t[i + 8..]
                    .split_whitespace()
                    .take(2)
                    .map(str::to_owned)
                    .collect();
                cmds.push(words);
            }
            if let Some((k, _)) = t.split_once(':').filter(|(k, _)| k.starts_with("GLEANER_")) {
                vars.push(k.to_owned());
            }
        }
        let mut checked = 0;
        for (name, cmds, vars) in &services {
            if vars.is_empty() {
                continue;
            }
            assert!(
                !cmds.is_empty(),
                "service {name} sets GLEANER_* but runs no gleaner command"
            );
            let accepted: Vec<String> = cmds
                .iter()
                .flat_map(|c| env_of(&c.iter().map(String::as_str).collect::<Vec<_>>()))
                .collect();
            for v in vars {
                assert!(
                    accepted.contains(v),
                    "service {name}: {v} is read by none of {cmds:?}"
                );
                checked += 1;
            }
        }
        assert!(
            checked >= 20,
            "parsed only {checked} variables from docker-compose.yml"
        );
    }

    #[test]
    fn bad_backend_is_rejected() {
        let err = Cli::try_parse_from(["gleaner", "embed", "--backend", "cuda"]).unwrap_err();
        assert!(
            err.to_string().contains("expected auto, wgpu, cpu"),
            "{err}"
        );
    }
}
