//! Contract bindings generated with alloy's `sol!` from forge's JSON artifacts
//! (`contracts/out/<Name>.sol/<Name>.json`, built by `scripts/build-contracts`).
//!
//! Each module holds the contract's calls, events, errors, and a `deploy` with its bytecode.
#![allow(missing_docs, unreachable_pub, clippy::too_many_arguments)]

alloy::sol!(
    #[sol(rpc, all_derives)]
    GleanerToken,
    "../contracts/out/GleanerToken.sol/GleanerToken.json"
);

alloy::sol!(
    #[sol(rpc, all_derives)]
    WorkerRegistry,
    "../contracts/out/WorkerRegistry.sol/WorkerRegistry.json"
);

alloy::sol!(
    #[sol(rpc, all_derives)]
    JobMarket,
    "../contracts/out/JobMarket.sol/JobMarket.json"
);

/// `JobMarket` job status codes (`getJob(..).status`).
pub mod job_status {
    /// No such job.
    pub const NONE: u8 = 0;
    /// Escrowed, tasks not yet posted.
    pub const OPEN: u8 = 1;
    /// Task root posted.
    pub const POSTED: u8 = 2;
    /// Chunked settlement under way.
    pub const SETTLING: u8 = 3;
    /// Settled.
    pub const SETTLED: u8 = 4;
    /// Cancelled by the requester.
    pub const CANCELLED: u8 = 5;
    /// Reclaimed after the deadline.
    pub const RECLAIMED: u8 = 6;
}

/// The contract error's name where one of these ABIs knows it, else the raw error.
pub fn decode_revert(e: &alloy::contract::Error) -> String {
    if let Some(err) = e.as_decoded_interface_error::<JobMarket::JobMarketErrors>() {
        return format!("JobMarket reverted: {err:?}");
    }
    if let Some(err) = e.as_decoded_interface_error::<WorkerRegistry::WorkerRegistryErrors>() {
        return format!("WorkerRegistry reverted: {err:?}");
    }
    if let Some(err) = e.as_decoded_interface_error::<GleanerToken::GleanerTokenErrors>() {
        return format!("token reverted: {err:?}");
    }
    e.to_string()
}

/// Waits for a sent transaction's receipt; a send that failed or a transaction that reverted is
/// an error that names `what` and, where the ABI knows it, the contract's error.
pub async fn confirm<N: alloy::network::Network>(
    what: &str,
    pending: Result<alloy::providers::PendingTransactionBuilder<N>, alloy::contract::Error>,
) -> crate::Result<N::ReceiptResponse> {
    use alloy::network::ReceiptResponse;
    let receipt = pending
        .map_err(|e| crate::Error::Chain(format!("{what}: {}", decode_revert(&e))))?
        .get_receipt()
        .await
        .map_err(|e| crate::Error::Chain(format!("{what}: no receipt: {e}")))?;
    if !receipt.status() {
        return Err(crate::Error::Chain(format!(
            "{what}: transaction {} reverted",
            receipt.transaction_hash()
        )));
    }
    Ok(receipt)
}
