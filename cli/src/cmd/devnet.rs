//! `gleaner devnet`: a local chain for demos and tests (anvil from npm).

use std::path::PathBuf;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use anyhow::Context;
use clap::{Args, Subcommand};
use gleaner_protocol::bindings::{GleanerToken, JobMarket};
use gleaner_protocol::devnet::{DeployParams, deploy};

use crate::common::{KeyArgs, format_amount, parse_amount, runtime};

/// Local chain helpers (used by scripts/demo).
///
/// Examples:
///   gleaner devnet deploy --keystore admin.json --coordinator 0x.. --verifier 0x.. --out deployment.json
///   gleaner devnet fund --keystore admin.json --market 0x.. --eth 10 --tokens 1000 0xabc.. 0xdef..
#[derive(Debug, Subcommand)]
#[command(verbatim_doc_comment)]
pub enum DevnetCommand {
    /// Deploy token, registry and market, link them and grant the roles.
    Deploy(DeployArgs),
    /// Send ETH and mint test tokens to addresses.
    Fund(FundArgs),
}

/// Options of `devnet deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// JSON-RPC endpoint.
    #[arg(
        long = "rpc-url",
        env = "GLEANER_RPC_URL",
        default_value = "http://127.0.0.1:8545"
    )]
    pub rpc_url: String,
    #[command(flatten)]
    key: KeyArgs,
    /// Holder of COORDINATOR_ROLE.
    #[arg(long)]
    pub coordinator: Address,
    /// Holder of VERIFIER_ROLE and SLASHER_ROLE.
    #[arg(long)]
    pub verifier: Address,
    /// Minimum stake in tokens.
    #[arg(long, default_value = "100")]
    pub min_stake: String,
    /// Unbonding delay in seconds.
    #[arg(long, default_value_t = 3600)]
    pub unbonding_delay: u64,
    /// Write the deployment JSON here too.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Options of `devnet fund`.
#[derive(Debug, Args)]
pub struct FundArgs {
    #[command(flatten)]
    chain: crate::common::ChainArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// ETH for gas, per address.
    #[arg(long, default_value = "10")]
    pub eth: String,
    /// Test tokens per address.
    #[arg(long, default_value = "1000")]
    pub tokens: String,
    /// Addresses to fund.
    #[arg(required = true)]
    pub to: Vec<Address>,
}

pub(crate) fn run(cmd: DevnetCommand) -> anyhow::Result<()> {
    let rt = runtime()?;
    match cmd {
        DevnetCommand::Deploy(a) => rt.block_on(deploy_cmd(a)),
        DevnetCommand::Fund(a) => rt.block_on(fund(a)),
    }
}

async fn deploy_cmd(a: DeployArgs) -> anyhow::Result<()> {
    let signer = a.key.signer()?;
    let admin = signer.address();
    let chain = crate::common::ChainArgs {
        rpc_url: a.rpc_url.clone(),
        market: Address::ZERO,
    };
    let p = crate::common::provider(&chain, signer)?;
    let d = deploy(
        &p,
        &DeployParams {
            admin,
            coordinator: a.coordinator,
            verifier: a.verifier,
            min_stake: parse_amount(&a.min_stake)?,
            unbonding_delay: a.unbonding_delay,
        },
    )
    .await?;
    let json = serde_json::to_string_pretty(&d)?;
    if let Some(out) = &a.out {
        std::fs::write(out, &json).with_context(|| format!("cannot write {}", out.display()))?;
    }
    println!("{json}");
    Ok(())
}

async fn fund(a: FundArgs) -> anyhow::Result<()> {
    let signer = a.key.signer()?;
    let p = crate::common::provider(&a.chain, signer)?;
    let market = JobMarket::new(a.chain.market, &p);
    let token = GleanerToken::new(market.token().call().await?, &p);
    let eth = parse_amount(&a.eth)?;
    let tokens = parse_amount(&a.tokens)?;
    for to in &a.to {
        if !eth.is_zero() {
            let tx = TransactionRequest::default().with_to(*to).with_value(eth);
            p.send_transaction(tx).await?.get_receipt().await?;
        }
        if tokens > U256::ZERO {
            crate::common::confirm("faucet", token.faucet(*to, tokens).send().await).await?;
        }
        eprintln!(
            "funded {to}: {} ETH, {} tokens",
            format_amount(eth),
            format_amount(tokens)
        );
    }
    Ok(())
}
