//! `gleaner verifier`.

use std::time::Duration;

use alloy::primitives::U256;
use anyhow::Context;
use clap::{Args, Subcommand};

use crate::common::{ChainArgs, KeyArgs, ModelArgs, runtime};

/// The verifier: compares the replicas of every task, accepts the agreeing ones, settles jobs
/// on-chain and slashes workers whose signed results contradict an accepted quorum.
///
/// Its key needs VERIFIER_ROLE on the market and SLASHER_ROLE on the registry, and must be the
/// verifier address the coordinator is configured with. Reputations and decisions live in its
/// own store (`--db`); a restart resumes where it stopped, never settling or slashing twice.
///
/// Generate outputs are re-scored with SmolLM2 in one teacher-forced pass per prompt (no second
/// generation): every token must be within the calibrated logit margin of what the model would
/// take (greedy) or what the seeded sampler would draw. Replicas that part at a near-tie are
/// both valid; an output with a substituted token, prompt or model is rejected and slashed.
///
/// Examples:
///   gleaner verifier run --keystore verifier.json --market 0x5FbD...0aa3
///   gleaner verifier run --coordinator-url http://coord:8080 --rpc-url http://anvil:8545 \
///     --market 0x5FbD...0aa3 --keystore verifier.json --password-file pw.txt \
///     --db sqlite:///var/lib/gleaner/verifier.sqlite?mode=rwc --slash-amount 10
#[derive(Debug, Subcommand)]
#[command(verbatim_doc_comment)]
pub enum VerifierCommand {
    /// Run the verifier service until Ctrl-C.
    Run(RunArgs),
}

/// Options of `gleaner verifier run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    chain: ChainArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// Coordinator base URL.
    #[arg(
        long,
        env = "GLEANER_COORDINATOR_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub coordinator_url: String,
    /// The verifier's store: `sqlite://PATH?mode=rwc` or `postgres://...`.
    #[arg(
        long = "db",
        env = "GLEANER_VERIFIER_DB",
        default_value = "sqlite://verifier.sqlite?mode=rwc"
    )]
    pub db: String,
    /// Milliseconds between polls of the coordinator when all is well.
    #[arg(long, env = "GLEANER_VERIFIER_POLL_MS", default_value_t = 1_000)]
    pub poll_ms: u64,
    /// Longest pause, in milliseconds, after repeated coordinator or RPC failures.
    #[arg(
        long,
        env = "GLEANER_VERIFIER_MAX_BACKOFF_MS",
        default_value_t = 30_000
    )]
    pub max_backoff_ms: u64,
    /// Tokens slashed per contradicting worker and job (whole tokens, up to 18 decimals: `2.5`).
    /// Default: a tenth of the registry's minimum stake.
    #[arg(long, env = "GLEANER_SLASH_AMOUNT", value_parser = parse_tokens)]
    pub slash_amount: Option<U256>,
    /// First block searched for settlement and slash events (the market's deployment block).
    #[arg(long, env = "GLEANER_LOGS_FROM_BLOCK", default_value_t = 0)]
    pub logs_from_block: u64,
    /// How long a sign-in signature stays valid, in seconds (the coordinator caps it).
    #[arg(long, env = "GLEANER_SIGN_IN_VALID_SECS", default_value_t = 300)]
    pub sign_in_valid_secs: u64,
    /// Checked outputs remembered, so that a task polled again is not re-checked.
    #[arg(long, env = "GLEANER_VERIFIER_CHECKED_CACHE", default_value_t = 4096)]
    pub checked_cache: usize,
    /// Most workers paid per settlement transaction (1-256): a job with more workers is
    /// settled in chunks (more transactions; an interrupted one resumes where it stopped).
    #[arg(long, env = "GLEANER_SETTLE_CHUNK", default_value_t = 256,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub settle_chunk: u16,
    /// Do not recompute a random part of each output (embed: one row per task, 1/rows of its
    /// compute). With part checks on, a faked embedding is caught on its first task even when
    /// no second replica computes it (spot checks) or when two colluders agree on it.
    #[arg(long, env = "GLEANER_NO_PART_CHECKS")]
    pub no_part_checks: bool,
    #[command(flatten)]
    models: ModelArgs,
}

fn parse_tokens(s: &str) -> Result<U256, String> {
    alloy::primitives::utils::parse_units(s, 18)
        .map(Into::into)
        .map_err(|e| format!("expected tokens like 10 or 2.5: {e}"))
}

impl RunArgs {
    /// The service's config, checking `kinds`.
    fn config(&self, kinds: gleaner_kinds::Registry) -> gleaner_verifier::Config {
        let mut c = gleaner_verifier::Config::new(
            &self.coordinator_url,
            &self.chain.rpc_url,
            self.chain.market,
            kinds,
        );
        c.db_url = self.db.clone();
        c.poll_interval = Duration::from_millis(self.poll_ms);
        c.max_backoff = Duration::from_millis(self.max_backoff_ms);
        c.slash_amount = self.slash_amount;
        c.logs_from_block = self.logs_from_block;
        c.sign_in_valid_for = Duration::from_secs(self.sign_in_valid_secs);
        c.checked_cache = self.checked_cache;
        c.settle_chunk = usize::from(self.settle_chunk);
        c.part_checks = !self.no_part_checks;
        c
    }

    /// The kinds the verifier checks; the teacher-forced checks run the Burn model (the
    /// verifier never generates, so no quantized decoder is loaded).
    fn kinds(&self) -> anyhow::Result<gleaner_kinds::Registry> {
        let mut setup = self.models.setup();
        setup.decoder = gleaner_models::DecoderChoice::Burn;
        Ok(self.models.kinds(&setup)?.0)
    }
}

pub(crate) fn run(cmd: VerifierCommand) -> anyhow::Result<()> {
    match cmd {
        VerifierCommand::Run(a) => {
            let signer = a.key.signer()?;
            let config = a.config(a.kinds()?);
            runtime()?
                .block_on(gleaner_verifier::run(config, signer, async {
                    let _ = tokio::signal::ctrl_c().await;
                }))
                .context("verifier stopped with an error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: VerifierCommand,
    }

    #[test]
    fn defaults_and_flags() {
        let m = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
        let base = ["x", "run", "--market", m, "--keystore", "k.json"];
        let Cli {
            cmd: VerifierCommand::Run(a),
        } = Cli::try_parse_from(base).unwrap();
        let c = a.config(gleaner_kinds::Registry::new());
        let d = gleaner_verifier::Config::new(
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8545",
            m.parse().unwrap(),
            gleaner_kinds::Registry::new(),
        );
        assert_eq!(
            (
                c.coordinator_url,
                c.rpc_url,
                c.db_url,
                c.poll_interval,
                c.max_backoff,
                c.slash_amount,
                c.logs_from_block
            ),
            (
                d.coordinator_url,
                d.rpc_url,
                d.db_url,
                d.poll_interval,
                d.max_backoff,
                d.slash_amount,
                d.logs_from_block
            )
        );
        let args: Vec<&str> = base
            .iter()
            .copied()
            .chain([
                "--slash-amount",
                "2.5",
                "--poll-ms",
                "250",
                "--db",
                "sqlite::memory:",
            ])
            .collect();
        let Cli {
            cmd: VerifierCommand::Run(a),
        } = Cli::try_parse_from(args).unwrap();
        assert_eq!(
            a.slash_amount,
            Some(U256::from(25u64) * U256::from(10u64).pow(U256::from(17)))
        );
        assert_eq!(
            a.config(gleaner_kinds::Registry::new()).poll_interval,
            Duration::from_millis(250)
        );
        assert_eq!(a.db, "sqlite::memory:");
        let bad: Vec<&str> = base
            .iter()
            .copied()
            .chain(["--slash-amount", "ten"])
            .collect();
        assert!(Cli::try_parse_from(bad).is_err());
    }
}
