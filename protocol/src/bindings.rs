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
