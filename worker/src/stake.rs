//! A miner's stake in the worker registry: what makes it eligible for leases.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use gleaner_protocol::bindings::{GleanerToken, JobMarket, WorkerRegistry, confirm};

/// A chain call that failed, with what was being asked.
fn chain(what: &'static str) -> impl Fn(alloy::contract::Error) -> gleaner_protocol::Error {
    move |e| gleaner_protocol::Error::Chain(format!("{what}: {e}"))
}

/// The registry of the market at `market`.
async fn registry<P: Provider>(
    p: &P,
    market: Address,
) -> gleaner_protocol::Result<WorkerRegistry::WorkerRegistryInstance<&P>> {
    let m = JobMarket::new(market, p);
    Ok(WorkerRegistry::new(
        m.registry().call().await.map_err(chain("registry"))?,
        p,
    ))
}

/// Whether `who` may lease tasks, and the registry's minimum stake.
pub async fn eligibility(
    p: &impl Provider,
    market: Address,
    who: Address,
) -> gleaner_protocol::Result<(bool, U256)> {
    let r = registry(p, market).await?;
    Ok((
        r.isEligible(who)
            .call()
            .await
            .map_err(chain("isEligible"))?,
        r.minStake().call().await.map_err(chain("minStake"))?,
    ))
}

/// Approves and stakes `amount` (base units) from the sender.
pub async fn stake(
    p: &impl Provider,
    market: Address,
    amount: U256,
) -> gleaner_protocol::Result<B256> {
    let m = JobMarket::new(market, p);
    let r = registry(p, market).await?;
    let token = GleanerToken::new(m.token().call().await.map_err(chain("token"))?, p);
    confirm("approve", token.approve(*r.address(), amount).send().await).await?;
    Ok(confirm("stake", r.stake(amount).send().await)
        .await?
        .transaction_hash)
}

/// Asks to unstake `amount`; it can be withdrawn after the unbonding delay.
pub async fn request_unstake(
    p: &impl Provider,
    market: Address,
    amount: U256,
) -> gleaner_protocol::Result<B256> {
    let r = registry(p, market).await?;
    Ok(
        confirm("requestUnstake", r.requestUnstake(amount).send().await)
            .await?
            .transaction_hash,
    )
}

/// Withdraws the stake whose unbonding delay has passed.
pub async fn withdraw_stake(p: &impl Provider, market: Address) -> gleaner_protocol::Result<B256> {
    let r = registry(p, market).await?;
    Ok(confirm("withdraw stake", r.withdraw().send().await)
        .await?
        .transaction_hash)
}
