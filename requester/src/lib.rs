//! The requester's role: turn an input file into a job, escrow its budget on-chain, hand its
//! manifest to the coordinator, follow it to a terminal state and collect the accepted outputs.
//!
//! - [`prepare`] (pure): the job's kind ([`gleaner_kinds::TaskKind`]) splits the input into task
//!   blobs and prices each in units of work; the result is the manifest and the blobs.
//! - [`submit`]: uploads the inputs (hash-checked), checks the balance, approves the budget,
//!   calls `createJob`, and registers the signed manifest with the coordinator.
//! - [`wait`]: polls the job until it settles, and fails clearly on any other terminal state.
//! - [`results`]: fetches the accepted outputs and has the kind write them in input order.
//! - [`cancel`] / [`reclaim`]: the requester's two ways to get an escrow back.
//! - [`wallet`]: balances, withdrawals of earnings and refunds, the dev faucet (requesters and
//!   miners alike).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod error;
mod job;
pub mod wallet;

pub use error::{Error, Result};
pub use job::{
    JobRequest, PreparedJob, Submitted, cancel, prepare, read_grant, reclaim, results, sampling,
    submit, wait,
};
