//! Deploying the contracts on a dev chain: used by `gleaner devnet`, `scripts/demo`
//! and the tests of every crate that talks to the chain.

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;

use crate::bindings::{GleanerToken, JobMarket, WorkerRegistry};
use crate::{Error, Result};

/// Addresses of one deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deployment {
    /// Chain id.
    pub chain_id: u64,
    /// Payment token (a [`GleanerToken`] on dev chains).
    pub token: Address,
    /// WorkerRegistry.
    pub registry: Address,
    /// JobMarket.
    pub market: Address,
}

/// Parameters of a fresh deployment.
#[derive(Debug, Clone)]
pub struct DeployParams {
    /// Admin of both contracts (also the treasury on dev chains).
    pub admin: Address,
    /// Holder of COORDINATOR_ROLE (posts task roots).
    pub coordinator: Address,
    /// Holder of VERIFIER_ROLE and SLASHER_ROLE (settles, slashes).
    pub verifier: Address,
    /// Smallest stake that makes a worker eligible.
    pub min_stake: U256,
    /// Seconds between an unstake request and the withdrawal.
    pub unbonding_delay: u64,
}

/// What to do when [`find_anvil`] finds nothing.
pub const ANVIL_MISSING: &str = "anvil not found: run `scripts/setup` (or `npm ci` in the \
     checkout: it installs @foundry-rs/anvil into node_modules), or set GLEANER_ANVIL to an anvil \
     binary";

/// The anvil binary: `$GLEANER_ANVIL`, else `node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil`
/// under the first ancestor of `start` that has one, else `anvil` on the `PATH`; `None` when
/// there is none (say [`ANVIL_MISSING`]).
pub fn find_anvil(start: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::path::{Path, PathBuf};
    if let Some(p) = std::env::var_os("GLEANER_ANVIL").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let rel = Path::new("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("anvil"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    start
        .ancestors()
        .map(|dir| dir.join(rel))
        .chain(on_path)
        .find(|p| p.is_file())
}

fn chain_err(what: &str) -> impl Fn(alloy::contract::Error) -> Error + '_ {
    move |e| Error::Invalid(format!("{what}: {e}"))
}

/// Deploys token, registry and market from the sender of `provider`, links them and grants
/// the roles. The sender must be `params.admin`.
pub async fn deploy<P: Provider + Clone>(
    provider: &P,
    params: &DeployParams,
) -> Result<Deployment> {
    let chain_id = provider
        .get_chain_id()
        .await
        .map_err(|e| Error::Invalid(format!("chain id: {e}")))?;
    let token = GleanerToken::deploy(provider.clone())
        .await
        .map_err(chain_err("deploy token"))?;
    let registry = WorkerRegistry::deploy(
        provider.clone(),
        *token.address(),
        params.admin,
        params.min_stake,
        params.unbonding_delay,
        params.admin,
    )
    .await
    .map_err(chain_err("deploy registry"))?;
    let market = JobMarket::deploy(
        provider.clone(),
        *token.address(),
        *registry.address(),
        params.admin,
        params.admin,
    )
    .await
    .map_err(chain_err("deploy market"))?;

    crate::bindings::confirm(
        "setMarket",
        registry.setMarket(*market.address()).send().await,
    )
    .await?;
    let coordinator_role = market
        .COORDINATOR_ROLE()
        .call()
        .await
        .map_err(chain_err("COORDINATOR_ROLE"))?;
    let verifier_role = market
        .VERIFIER_ROLE()
        .call()
        .await
        .map_err(chain_err("VERIFIER_ROLE"))?;
    let slasher_role = registry
        .SLASHER_ROLE()
        .call()
        .await
        .map_err(chain_err("SLASHER_ROLE"))?;
    crate::bindings::confirm(
        "grant coordinator",
        market
            .grantRole(coordinator_role, params.coordinator)
            .send()
            .await,
    )
    .await?;
    crate::bindings::confirm(
        "grant verifier",
        market
            .grantRole(verifier_role, params.verifier)
            .send()
            .await,
    )
    .await?;
    crate::bindings::confirm(
        "grant slasher",
        registry
            .grantRole(slasher_role, params.verifier)
            .send()
            .await,
    )
    .await?;
    Ok(Deployment {
        chain_id,
        token: *token.address(),
        registry: *registry.address(),
        market: *market.address(),
    })
}

/// On a dev chain: `worker` mints `tokens` from the faucet to itself, approves the registry and
/// stakes `stake` of them, each transaction from its own key at `rpc`.
pub async fn fund_and_stake(
    rpc: &str,
    d: &Deployment,
    worker: &alloy::signers::local::PrivateKeySigner,
    tokens: U256,
    stake: U256,
) -> Result<()> {
    use alloy::providers::ProviderBuilder;
    let url = rpc
        .parse()
        .map_err(|e| Error::Invalid(format!("rpc url {rpc}: {e}")))?;
    let p = ProviderBuilder::new()
        .wallet(worker.clone())
        .connect_http(url);
    let token = GleanerToken::new(d.token, &p);
    crate::bindings::confirm(
        "faucet",
        token.faucet(worker.address(), tokens).send().await,
    )
    .await?;
    crate::bindings::confirm("approve", token.approve(d.registry, stake).send().await).await?;
    crate::bindings::confirm(
        "stake",
        WorkerRegistry::new(d.registry, &p)
            .stake(stake)
            .send()
            .await,
    )
    .await?;
    Ok(())
}

/// The arguments of `createJob`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewJob {
    /// Spec hash.
    pub spec: alloy::primitives::B256,
    /// Task count.
    pub tasks: u32,
    /// Replicas per task.
    pub redundancy: u16,
    /// Escrowed budget.
    pub budget: U256,
    /// Deadline (unix seconds).
    pub deadline: u64,
}

/// On a dev chain: the sender of `provider` (`requester`) mints the budget from the faucet,
/// approves the market and calls `createJob`; returns the new job id. Takes the caller's
/// provider so its nonce tracking sees every transaction of that key.
pub async fn create_funded_job<P: Provider>(
    provider: &P,
    d: &Deployment,
    requester: Address,
    job: NewJob,
) -> Result<U256> {
    let NewJob {
        spec,
        tasks,
        redundancy,
        budget,
        deadline,
    } = job;
    let token = GleanerToken::new(d.token, provider);
    crate::bindings::confirm("faucet", token.faucet(requester, budget).send().await).await?;
    crate::bindings::confirm("approve", token.approve(d.market, budget).send().await).await?;
    let receipt = JobMarket::new(d.market, provider)
        .createJob(spec, tasks, redundancy, budget, deadline)
        .send()
        .await
        .map_err(chain_err("createJob"))?
        .get_receipt()
        .await
        .map_err(|e| Error::Invalid(format!("createJob: {e}")))?;
    receipt
        .decoded_log::<JobMarket::JobCreated>()
        .map(|l| l.data.jobId)
        .ok_or_else(|| Error::Invalid("createJob: no JobCreated event (reverted?)".into()))
}
