//! The root poster: sends `postTasks(jobId, root, count)` (or `postTasksCommitted` with a
//! spot-check commitment) with the coordinator's key and tells
//! whether a sent transaction failed or vanished.

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::http::reqwest::Url;
use gleaner_protocol::bindings::JobMarket;

use crate::error::{Error, Result};

/// Sends `postTasks` (the key holds COORDINATOR_ROLE on the market).
#[derive(Debug, Clone)]
pub struct Poster {
    url: Url,
    market: Address,
    signer: PrivateKeySigner,
    provider: DynProvider,
}

impl Poster {
    /// A poster through `rpc_url` to `market`.
    pub fn new(rpc_url: &str, market: Address, signer: PrivateKeySigner) -> Result<Self> {
        let url: Url = rpc_url
            .parse()
            .map_err(|e| Error::BadRequest(format!("rpc url {rpc_url:?}: {e}")))?;
        let provider = ProviderBuilder::new().connect_http(url.clone()).erased();
        Ok(Self {
            url,
            market,
            signer,
            provider,
        })
    }

    /// Sends `postTasks`, or `postTasksCommitted` with `commitment` for a job with spot checks,
    /// and returns the transaction hash without waiting for it.
    pub async fn post_tasks(
        &self,
        job_id: U256,
        root: B256,
        count: u32,
        commitment: Option<B256>,
    ) -> Result<B256> {
        // A fresh provider per send: its nonce comes from the chain, never a stale cache.
        let sender = ProviderBuilder::new()
            .wallet(EthereumWallet::from(self.signer.clone()))
            .connect_http(self.url.clone());
        let market = JobMarket::new(self.market, &sender);
        let pending = match commitment {
            Some(c) => {
                market
                    .postTasksCommitted(job_id, root, count, c)
                    .send()
                    .await
            }
            None => market.postTasks(job_id, root, count).send().await,
        }
        .map_err(Error::chain)?;
        Ok(*pending.tx_hash())
    }

    /// Whether a sent transaction failed (reverted) or vanished (a reorg, a dropped tx); `false`
    /// while it is pending or once it succeeded.
    pub async fn failed_or_vanished(&self, tx: B256) -> Result<bool> {
        let receipt = self
            .provider
            .get_transaction_receipt(tx)
            .await
            .map_err(Error::chain)?;
        Ok(match receipt {
            Some(r) => !r.status(),
            None => self
                .provider
                .get_transaction_by_hash(tx)
                .await
                .map_err(Error::chain)?
                .is_none(),
        })
    }
}
