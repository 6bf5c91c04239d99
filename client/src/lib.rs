//! The one client of the coordinator's HTTP API, shared by every role: the miner, the
//! verifier, the requester and the auditor.
//!
//! - [`Client`]: each route of [`gleaner_protocol::api`] as a typed method, one status check,
//!   one [`RetryPolicy`] (transport errors, 429 and 5xx retried with backoff), and blob downloads
//!   that are always checked against their hash.
//! - [`sign`]: the EIP-712 bodies every role signs (sign-in, task results, job registrations),
//!   built in one place.
//! - [`Backoff`]: the unbounded backoff of a role's own loop.
//!
//! ```no_run
//! # async fn f() -> gleaner_client::Result<()> {
//! let client = gleaner_client::Client::new("http://127.0.0.1:8080")?;
//! let info = client.info().await?;
//! println!("chain {} market {}", info.chain_id, info.market);
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod error;
mod http;
mod retry;
pub mod sign;

pub use error::{Error, Result};
pub use http::Client;
pub use retry::{Backoff, RetryPolicy};
