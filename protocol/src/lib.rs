//! Gleaner's shared vocabulary: what every other crate agrees on.
//!
//! - [`logs`]: event logs read in bounded block ranges.
//! - [`formulas`]: the seed's allocation, execution-time, aggregation, contribution and payout
//!   formulas as checked pure functions (seed 4.1, worked example 4.3 as tests).
//! - [`merkle`]: the task Merkle tree, compatible with OpenZeppelin's `MerkleProof`.
//! - [`api`]: the coordinator's HTTP API bodies and routes.
//! - [`bindings`]: alloy `sol!` bindings of the contracts, from forge's artifacts.
//! - [`blob`]: task input/output blob formats and their sha256 content address.
//! - [`devnet`]: deploy the contracts, fund and stake (dev chains and tests).
//! - [`eip712`]: the signed messages (worker sign-in, task results, job registration).
//! - [`replication`]: adaptive replication: trust, spot checks from a committed secret, the
//!   replica pool, and why cheating loses money.
//! - [`report`]: the settlement report and the recomputation an auditor runs.
//! - [`sampling`]: the seeded sampler of `generate` tasks (SplitMix64, temperature, top-p).
//! - [`task`]: job manifests, task specs, their canonical encodings and hashes.
//! - [`tensors`]: a canonical safetensors codec for several tensors (training checkpoints,
//!   gradients and inputs).
//!
//! Plain data and chain vocabulary only: no async runtime, HTTP server, database or model code.

pub mod api;
pub mod bindings;
pub mod blob;
pub mod devnet;
pub mod eip712;
pub mod formulas;
pub mod logs;
pub mod merkle;
pub mod replication;
pub mod report;
pub mod sampling;
pub mod task;
pub mod tensors;

mod error;
pub use error::{Error, Result};
