//! The chain reader: what the HTTP API asks the chain (a job's on-chain record, a worker's
//! eligibility).
//!
//! A trait object, so that the API tests run against a fake chain and the service against an
//! RPC endpoint ([`RpcChain`]).

use std::future::Future;
use std::pin::Pin;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use gleaner_protocol::api::Info;
use gleaner_protocol::bindings::{JobMarket, WorkerRegistry};

use crate::error::{Error, Result};

/// A boxed future (the trait must be object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A job as `JobMarket.getJob` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnChainJob {
    /// Requester.
    pub requester: Address,
    /// Deadline (unix seconds).
    pub deadline: u64,
    /// Replicas per task.
    pub redundancy: u16,
    /// Number of tasks.
    pub task_count: u32,
    /// [`gleaner_protocol::bindings::job_status`].
    pub status: u8,
    /// keccak256 of the manifest.
    pub spec_hash: B256,
    /// Posted root (zero until posted).
    pub tasks_root: B256,
}

/// The chain, as the API needs it.
pub trait Chain: Send + Sync + 'static {
    /// The job `id`, or `None` when there is no such job.
    fn job(&self, id: U256) -> BoxFuture<'_, Result<Option<OnChainJob>>>;
    /// Whether `worker` is staked enough in the WorkerRegistry.
    fn is_eligible(&self, worker: Address) -> BoxFuture<'_, Result<bool>>;
}

/// The chain through a JSON-RPC endpoint.
#[derive(Debug, Clone)]
pub struct RpcChain {
    provider: DynProvider,
    market: Address,
    registry: Address,
}

/// A deployment as read from its market over RPC.
pub(crate) struct Deployment {
    pub(crate) provider: DynProvider,
    pub(crate) chain_id: u64,
    pub(crate) registry: Address,
    pub(crate) token: Address,
}

impl Deployment {
    /// Connects to `rpc_url` and reads the chain id, registry and token of `market` (an error
    /// that says so when `market` is not a `JobMarket`).
    pub(crate) async fn read(rpc_url: &str, market: Address) -> Result<Self> {
        let url = rpc_url
            .parse()
            .map_err(|e| Error::BadRequest(format!("rpc url {rpc_url:?}: {e}")))?;
        let provider = ProviderBuilder::new().connect_http(url).erased();
        let chain_id = provider.get_chain_id().await.map_err(Error::chain)?;
        let m = JobMarket::new(market, &provider);
        let registry = m.registry().call().await.map_err(|e| {
            Error::Chain(format!(
                "{market} does not answer as a JobMarket (registry()): {e}"
            ))
        })?;
        let token = m.token().call().await.map_err(Error::chain)?;
        Ok(Self {
            provider,
            chain_id,
            registry,
            token,
        })
    }
}

impl RpcChain {
    /// Connects and reads the deployment (chain id, registry, token) from the market.
    pub async fn connect(
        rpc_url: &str,
        market: Address,
        max_blob_bytes: u64,
    ) -> Result<(Self, Info)> {
        let Deployment {
            provider,
            chain_id,
            registry,
            token,
        } = Deployment::read(rpc_url, market).await?;
        let info = Info {
            chain_id,
            market,
            registry,
            token,
            max_blob_bytes,
        };
        Ok((
            Self {
                provider,
                market,
                registry,
            },
            info,
        ))
    }
}

impl Chain for RpcChain {
    fn job(&self, id: U256) -> BoxFuture<'_, Result<Option<OnChainJob>>> {
        Box::pin(async move {
            let m = JobMarket::new(self.market, &self.provider);
            let count = m.jobCount().call().await.map_err(Error::chain)?;
            if id.is_zero() || id > count {
                return Ok(None);
            }
            let j = m.getJob(id).call().await.map_err(Error::chain)?;
            Ok(Some(OnChainJob {
                requester: j.requester,
                deadline: j.deadline,
                redundancy: j.redundancy,
                task_count: j.taskCount,
                status: j.status,
                spec_hash: j.specHash,
                tasks_root: j.tasksRoot,
            }))
        })
    }

    fn is_eligible(&self, worker: Address) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move {
            WorkerRegistry::new(self.registry, &self.provider)
                .isEligible(worker)
                .call()
                .await
                .map_err(Error::chain)
        })
    }
}
