//! The money side shared by requesters and miners: balances, the market's pull payments, the
//! dev faucet.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use gleaner_protocol::bindings::{GleanerToken, JobMarket, WorkerRegistry, confirm};

use crate::Result;
use crate::error::chain;

/// What an address holds, in base units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balances {
    /// Native currency (gas).
    pub eth: U256,
    /// The market's payment token.
    pub tokens: U256,
    /// Staked in the worker registry.
    pub staked: U256,
    /// Requested for unstaking, waiting for the unbonding delay.
    pub unbonding: U256,
    /// Unix seconds when the unbonding stake can be withdrawn.
    pub unlock_at: u64,
    /// Earnings and refunds the market holds for it (`withdraw` moves them out).
    pub withdrawable: U256,
}

/// The balances of `who` in the deployment of the market at `market`.
pub async fn balances(p: &impl Provider, market: Address, who: Address) -> Result<Balances> {
    let m = JobMarket::new(market, p);
    let token = GleanerToken::new(m.token().call().await.map_err(chain("token"))?, p);
    let registry = WorkerRegistry::new(m.registry().call().await.map_err(chain("registry"))?, p);
    let stake = registry
        .getStake(who)
        .call()
        .await
        .map_err(chain("getStake"))?;
    Ok(Balances {
        eth: p
            .get_balance(who)
            .await
            .map_err(|e| crate::Error::Chain(format!("balance: {e}")))?,
        tokens: token
            .balanceOf(who)
            .call()
            .await
            .map_err(chain("balanceOf"))?,
        staked: U256::from(stake.stake),
        unbonding: U256::from(stake.unbonding),
        unlock_at: stake.unlockAt,
        withdrawable: m
            .withdrawable(who)
            .call()
            .await
            .map_err(chain("withdrawable"))?,
    })
}

/// Moves the sender's earnings and refunds out of the market; returns the amount (zero: there
/// was nothing, and no transaction was sent).
pub async fn withdraw(p: &impl Provider, market: Address, me: Address) -> Result<U256> {
    let m = JobMarket::new(market, p);
    let due = m
        .withdrawable(me)
        .call()
        .await
        .map_err(chain("withdrawable"))?;
    if !due.is_zero() {
        confirm("withdraw", m.withdraw().send().await).await?;
    }
    Ok(due)
}

/// Mints `amount` test tokens to `to` (the token's faucet; dev chains only); returns the
/// transaction hash.
pub async fn faucet(p: &impl Provider, market: Address, to: Address, amount: U256) -> Result<B256> {
    let m = JobMarket::new(market, p);
    let token = GleanerToken::new(m.token().call().await.map_err(chain("token"))?, p);
    let r = confirm("faucet", token.faucet(to, amount).send().await).await?;
    Ok(r.transaction_hash)
}
