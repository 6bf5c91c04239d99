//! The chain side of the coordinator: the [`reader`] answers the HTTP API's questions (a job's
//! on-chain record, a worker's stake), the [`watcher`] follows JobMarket events and drives job
//! states, and the [`poster`] sends `postTasks`.

mod poster;
mod reader;
mod watcher;

pub use poster::Poster;
pub(crate) use reader::Deployment;
pub use reader::{BoxFuture, Chain, OnChainJob, RpcChain};
pub use watcher::{Watcher, WatcherConfig};
