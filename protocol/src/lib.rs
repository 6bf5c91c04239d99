//! Gleaner's shared vocabulary: what every other crate agrees on.
//!
//! - [`formulas`]: the seed's allocation, execution-time, aggregation, contribution and payout
//!   formulas as checked pure functions (seed 4.1, worked example 4.3 as tests).
//! - [`merkle`]: the task Merkle tree, compatible with OpenZeppelin's `MerkleProof`.
//! - [`task`]: job manifests, task specs, their canonical encodings and hashes.
//!
//! Plain data only: no async runtime, HTTP, database or model code.

pub mod formulas;
pub mod merkle;
pub mod task;

mod error;
pub use error::{Error, Result};
