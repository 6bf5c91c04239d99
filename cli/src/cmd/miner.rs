//! `gleaner miner`: stake, run, earn.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use gleaner_worker::stake;

use crate::common::{
    ChainArgs, KeyArgs, ModelArgs, format_amount, parse_amount, provider, runtime,
};

/// Work for the market: stake tokens, run tasks, withdraw earnings.
///
/// A miner stakes at least the registry's minimum, then `run` signs in to a coordinator with
/// the staking key, measures its device, and computes leased tasks until Ctrl-C (it finishes or
/// releases the task in hand first). Earnings are credited by the market at settlement:
/// `gleaner wallet withdraw` moves them out.
///
/// Examples:
///   gleaner miner stake --amount 100 --keystore miner.json --market 0x...
///   gleaner miner run --coordinator-url http://127.0.0.1:8080 --keystore miner.json --market 0x...
///   gleaner miner status --keystore miner.json --market 0x...
///   gleaner miner unstake --amount 100 --keystore miner.json --market 0x...
#[derive(Debug, Subcommand)]
#[command(verbatim_doc_comment)]
pub enum MinerCommand {
    /// Approve and stake tokens in the worker registry.
    Stake(StakeArgs),
    /// Request to unstake (withdrawable after the unbonding delay; `--withdraw` collects it).
    Unstake(UnstakeArgs),
    /// Stake, eligibility, unbonding and earnings.
    Status(ChainKeyArgs),
    /// Sign in to a coordinator and compute tasks until Ctrl-C.
    Run(RunArgs),
}

/// A chain and a key.
#[derive(Debug, Args)]
pub struct ChainKeyArgs {
    #[command(flatten)]
    chain: ChainArgs,
    #[command(flatten)]
    key: KeyArgs,
}

/// Options of `miner stake`.
#[derive(Debug, Args)]
pub struct StakeArgs {
    #[command(flatten)]
    ck: ChainKeyArgs,
    /// Tokens to stake.
    #[arg(long)]
    pub amount: String,
}

/// Options of `miner unstake`.
#[derive(Debug, Args)]
pub struct UnstakeArgs {
    #[command(flatten)]
    ck: ChainKeyArgs,
    /// Tokens to unstake.
    #[arg(long, required_unless_present = "withdraw")]
    pub amount: Option<String>,
    /// Collect stake whose unbonding delay has passed.
    #[arg(long)]
    pub withdraw: bool,
}

/// Options of `miner run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    ck: ChainKeyArgs,
    /// Coordinator URL.
    #[arg(
        long,
        env = "GLEANER_COORDINATOR_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub coordinator_url: String,
    #[command(flatten)]
    models: ModelArgs,
    /// What generates: auto (quantized on a CPU, Burn on a GPU), quantized or burn.
    #[arg(long, env = "GLEANER_DECODER", default_value = "auto")]
    pub decoder: gleaner_models::DecoderChoice,
    /// Stop after this many tasks.
    #[arg(long)]
    pub max_tasks: Option<u64>,
    /// A name for log lines.
    #[arg(long, env = "GLEANER_WORKER_NAME", default_value = "miner")]
    pub name: String,
    /// How long one lease request waits for work (long poll), in milliseconds (at most 30000).
    #[arg(long, env = "GLEANER_LEASE_WAIT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=30_000))]
    pub lease_wait_ms: u32,
    /// How long a sign-in signature stays valid, in seconds (the coordinator caps it).
    #[arg(long, env = "GLEANER_SIGN_IN_VALID_SECS", default_value_t = 300)]
    pub sign_in_valid_secs: u64,
    /// First wait, in milliseconds, after the coordinator could not be reached; it doubles.
    #[arg(long, env = "GLEANER_BACKOFF_INITIAL_MS", default_value_t = 1_000)]
    pub backoff_initial_ms: u64,
    /// Longest wait, in milliseconds, between two tries to reach the coordinator.
    #[arg(long, env = "GLEANER_BACKOFF_MAX_MS", default_value_t = 30_000)]
    pub backoff_max_ms: u64,
}

pub(crate) fn run(cmd: MinerCommand) -> anyhow::Result<()> {
    let rt = runtime()?;
    match cmd {
        MinerCommand::Stake(a) => rt.block_on(stake(a)),
        MinerCommand::Unstake(a) => rt.block_on(unstake(a)),
        MinerCommand::Status(a) => rt.block_on(status(a)),
        MinerCommand::Run(a) => rt.block_on(mine(a)),
    }
}

async fn stake(a: StakeArgs) -> anyhow::Result<()> {
    let amount = parse_amount(&a.amount)?;
    let p = provider(&a.ck.chain, a.ck.key.signer()?)?;
    let tx = stake::stake(&p, a.ck.chain.market, amount).await?;
    println!("staked {} (tx {tx})", format_amount(amount));
    Ok(())
}

async fn unstake(a: UnstakeArgs) -> anyhow::Result<()> {
    let p = provider(&a.ck.chain, a.ck.key.signer()?)?;
    if let Some(amount) = &a.amount {
        let amount = parse_amount(amount)?;
        let tx = stake::request_unstake(&p, a.ck.chain.market, amount).await?;
        println!("unstake of {} requested (tx {tx})", format_amount(amount));
    }
    if a.withdraw {
        stake::withdraw_stake(&p, a.ck.chain.market).await?;
        println!("unbonded stake withdrawn");
    }
    Ok(())
}

async fn status(a: ChainKeyArgs) -> anyhow::Result<()> {
    let signer = a.key.signer()?;
    let me = signer.address();
    let p = provider(&a.chain, signer)?;
    let b = gleaner_requester::wallet::balances(&p, a.chain.market, me).await?;
    let (eligible, min) = stake::eligibility(&p, a.chain.market, me).await?;
    println!("worker        {me}");
    println!("staked        {}", format_amount(b.staked));
    println!("min stake     {}", format_amount(min));
    println!("eligible      {eligible}");
    println!(
        "unbonding     {} (unlocks at {})",
        format_amount(b.unbonding),
        b.unlock_at
    );
    println!("earnings      {}", format_amount(b.withdrawable));
    Ok(())
}

async fn mine(a: RunArgs) -> anyhow::Result<()> {
    let signer = a.ck.key.signer()?;
    let me = signer.address();
    // Fail early, with the fix, when the key is not staked.
    let p = provider(&a.ck.chain, signer.clone())?;
    let (eligible, min) = stake::eligibility(&p, a.ck.chain.market, me).await?;
    if !eligible {
        anyhow::bail!(
            "{me} is not eligible: stake at least {} with `gleaner miner stake --amount N`",
            format_amount(min)
        );
    }
    let setup = gleaner_kinds::ModelSetup {
        decoder: a.decoder,
        ..a.models.setup()
    };
    let (kinds, device) = a.models.kinds(&setup)?;
    let mut config = gleaner_worker::WorkerConfig::new(&a.coordinator_url, kinds, &device);
    config.max_tasks = a.max_tasks;
    config.name = a.name;
    config.wait_ms = a.lease_wait_ms;
    config.sign_in_valid_for = Duration::from_secs(a.sign_in_valid_secs);
    config.backoff_initial = Duration::from_millis(a.backoff_initial_ms);
    config.backoff_max = Duration::from_millis(a.backoff_max_ms);
    let worker = gleaner_worker::Worker::start(config, signer)
        .await
        .context("worker start")?;
    let stats = worker
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("stopping: finishing the task in hand");
        })
        .await?;
    let earned = gleaner_requester::wallet::balances(&p, a.ck.chain.market, me)
        .await?
        .withdrawable;
    println!(
        "submitted {} results ({} released, {} failed); withdrawable earnings {}",
        stats.submitted,
        stats.released,
        stats.failed,
        format_amount(earned)
    );
    Ok(())
}
