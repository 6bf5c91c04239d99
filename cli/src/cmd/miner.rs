//! `gleaner miner`: stake, run, earn.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use gleaner_models::{BackendChoice, DecoderChoice, MiniLmFiles};
use gleaner_protocol::bindings::{GleanerToken, JobMarket, WorkerRegistry};

use crate::common::{
    ChainArgs, HomeArgs, KeyArgs, confirm, format_amount, parse_amount, provider, runtime,
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
    /// Where the model runs: auto, wgpu, cpu, flex or ndarray.
    #[arg(long, env = "GLEANER_BACKEND", default_value = "auto")]
    pub backend: BackendChoice,
    /// Directory with model.safetensors and tokenizer.json [default: the model cache].
    #[arg(long, env = "GLEANER_MINILM_DIR")]
    pub model_dir: Option<PathBuf>,
    /// SmolLM2 GGUF for generate tasks [default: the model cache]. Without the file the
    /// miner offers embed only.
    #[arg(long, env = "GLEANER_SMOLLM_GGUF")]
    pub smollm: Option<PathBuf>,
    /// What generates: auto (quantized on a CPU, Burn on a GPU), quantized or burn.
    #[arg(long, env = "GLEANER_DECODER", default_value = "auto")]
    pub decoder: DecoderChoice,
    #[command(flatten)]
    pub home: HomeArgs,
    /// Stop after this many tasks.
    #[arg(long)]
    pub max_tasks: Option<u64>,
    /// A name for log lines.
    #[arg(long, env = "GLEANER_WORKER_NAME", default_value = "miner")]
    pub name: String,
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
    let signer = a.ck.key.signer()?;
    let p = provider(&a.ck.chain, signer)?;
    let market = JobMarket::new(a.ck.chain.market, &p);
    let registry = WorkerRegistry::new(market.registry().call().await?, &p);
    let token = GleanerToken::new(market.token().call().await?, &p);
    confirm(
        "approve",
        token.approve(*registry.address(), amount).send().await,
    )
    .await?;
    confirm("stake", registry.stake(amount).send().await).await?;
    println!("staked {}", format_amount(amount));
    Ok(())
}

async fn unstake(a: UnstakeArgs) -> anyhow::Result<()> {
    let signer = a.ck.key.signer()?;
    let p = provider(&a.ck.chain, signer)?;
    let market = JobMarket::new(a.ck.chain.market, &p);
    let registry = WorkerRegistry::new(market.registry().call().await?, &p);
    if let Some(amount) = &a.amount {
        let amount = parse_amount(amount)?;
        let r = confirm(
            "requestUnstake",
            registry.requestUnstake(amount).send().await,
        )
        .await?;
        println!(
            "unstake of {} requested (tx {})",
            format_amount(amount),
            r.transaction_hash
        );
    }
    if a.withdraw {
        confirm("withdraw stake", registry.withdraw().send().await).await?;
        println!("unbonded stake withdrawn");
    }
    Ok(())
}

async fn status(a: ChainKeyArgs) -> anyhow::Result<()> {
    let signer = a.key.signer()?;
    let me = signer.address();
    let p = provider(&a.chain, signer)?;
    let market = JobMarket::new(a.chain.market, &p);
    let registry = WorkerRegistry::new(market.registry().call().await?, &p);
    let s = registry.getStake(me).call().await?;
    let min = registry.minStake().call().await?;
    println!("worker        {me}");
    println!(
        "staked        {}",
        format_amount(alloy::primitives::U256::from(s.stake))
    );
    println!("min stake     {}", format_amount(min));
    println!("eligible      {}", registry.isEligible(me).call().await?);
    println!(
        "unbonding     {} (unlocks at {})",
        format_amount(alloy::primitives::U256::from(s.unbonding)),
        s.unlockAt
    );
    println!(
        "earnings      {}",
        format_amount(market.withdrawable(me).call().await?)
    );
    Ok(())
}

async fn mine(a: RunArgs) -> anyhow::Result<()> {
    let signer = a.ck.key.signer()?;
    let me = signer.address();
    // Fail early, with the fix, when the key is not staked.
    let p = provider(&a.ck.chain, signer.clone())?;
    let market = JobMarket::new(a.ck.chain.market, &p);
    let registry = WorkerRegistry::new(market.registry().call().await?, &p);
    if !registry.isEligible(me).call().await? {
        anyhow::bail!(
            "{me} is not eligible: stake at least {} with `gleaner miner stake --amount N`",
            format_amount(registry.minStake().call().await?)
        );
    }
    let mut config = gleaner_worker::WorkerConfig::new(&a.coordinator_url);
    config.backend = a.backend;
    config.max_tasks = a.max_tasks;
    config.name = a.name;
    let models = a.home.models();
    config.model = a
        .model_dir
        .as_deref()
        .map_or_else(|| models.minilm(), MiniLmFiles::in_dir);
    config.smollm = a.smollm.clone().unwrap_or_else(|| models.smollm_gguf());
    config.decoder = a.decoder;
    let worker = gleaner_worker::Worker::start(config, signer)
        .await
        .context("worker start")?;
    let stats = worker
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("stopping: finishing the task in hand");
        })
        .await?;
    let earned = market.withdrawable(me).call().await?;
    println!(
        "submitted {} results ({} released, {} failed); withdrawable earnings {}",
        stats.submitted,
        stats.released,
        stats.failed,
        format_amount(earned)
    );
    Ok(())
}
