//! The coordinator's HTTP API (`/v1`), as request and response bodies (JSON).
//!
//! | method | path | who | body → reply |
//! |---|---|---|---|
//! | GET | `/healthz` | anyone | → `ok` |
//! | GET | `/metrics` | anyone | → Prometheus text |
//! | GET | `/v1/info` | anyone | → [`Info`] |
//! | PUT | `/v1/blobs/{sha256}` | anyone | raw bytes (≤ limit; hash must match) → [`BlobRef`] |
//! | GET | `/v1/blobs/{sha256}` | anyone | → raw bytes |
//! | POST | `/v1/jobs` | requester | [`RegisterJob`] (signed) → [`JobStatus`] |
//! | GET | `/v1/jobs/{id}` | anyone | → [`JobStatus`] |
//! | GET | `/v1/jobs/{id}/results` | anyone | → [`JobResults`] (accepted outputs only) |
//! | POST | `/v1/sign-in` | worker, verifier | [`SignIn`] (signed) → [`Session`] |
//! | POST | `/v1/leases` | worker (Bearer) | [`LeaseRequest`] → [`Lease`], or 204 after `wait_ms` |
//! | POST | `/v1/leases/{lease_id}/release` | worker (Bearer) | → 204 (replica back to the queue) |
//! | POST | `/v1/results` | worker (Bearer) | [`SubmitResult`] (signed) → 204 |
//! | GET | `/v1/verifier/work` | verifier (Bearer) | → [`VerifierWork`] |
//! | POST | `/v1/verifier/decisions` | verifier (Bearer) | [`Decision`] → 204 |
//! | POST | `/v1/verifier/settled` | verifier (Bearer) | [`Settled`] → 204 |
//!
//! Errors are `4xx`/`5xx` with an [`ApiError`] body. Bad input changes nothing.
//! Sessions: `POST /v1/sign-in` checks an EIP-712 [`WorkerSignIn`](crate::eip712::WorkerSignIn)
//! (nonce strictly increasing per address, expiry ≤ 10 min ahead) and the on-chain stake
//! (workers) or the configured verifier address; the reply's token goes in
//! `Authorization: Bearer <token>`.

use alloy::primitives::{Address, B256, Bytes, U256};
use serde::{Deserialize, Serialize};

use crate::task::{KindId, ModelRef, TaskParams};

/// Error body of every non-2xx reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Machine-readable code (`bad_request`, `not_found`, `unauthorized`, `conflict`, ...).
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
}

/// The deployment a coordinator serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// Chain id.
    pub chain_id: u64,
    /// JobMarket address (the EIP-712 verifying contract).
    pub market: Address,
    /// WorkerRegistry address.
    pub registry: Address,
    /// Payment token address.
    pub token: Address,
    /// Largest accepted blob, in bytes.
    pub max_blob_bytes: u64,
}

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// sha256 of the bytes.
    pub hash: B256,
    /// Size in bytes.
    pub size: u64,
}

/// A requester registers the manifest of a job it created on-chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterJob {
    /// On-chain job id.
    pub job_id: U256,
    /// The canonical manifest JSON (its keccak256 must equal the on-chain specHash).
    pub manifest: String,
    /// The requester (must be the on-chain job's requester).
    pub requester: Address,
    /// Expiry of the signature (unix seconds).
    pub expiry: u64,
    /// EIP-712 `JobRegistration` signature by `requester`.
    pub signature: Bytes,
}

/// Where a job stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// On-chain job id.
    pub job_id: U256,
    /// `registered`, `posted` (root on-chain), `verifying`, `settled`, `cancelled`, `expired`.
    pub state: String,
    /// Number of tasks.
    pub tasks: u32,
    /// Replicas per task.
    pub redundancy: u16,
    /// Replicas submitted so far.
    pub replicas_done: u32,
    /// Tasks the verifier accepted.
    pub tasks_accepted: u32,
    /// Tasks the verifier rejected for good.
    pub tasks_failed: u32,
    /// Settlement report hash, once settled.
    pub report_hash: Option<B256>,
}

/// Accepted outputs in task order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResults {
    /// On-chain job id.
    pub job_id: U256,
    /// One entry per task; `result` is `None` for tasks not accepted.
    pub tasks: Vec<TaskResultRef>,
    /// The settlement report blob, once settled.
    pub report_hash: Option<B256>,
    /// The job's canonical manifest (kind, model, params, inputs), to read the outputs with.
    pub manifest: String,
}

/// The accepted output of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResultRef {
    /// Task index.
    pub index: u32,
    /// sha256 of the accepted output blob.
    pub result: Option<B256>,
}

/// What a worker measured about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Adapter name (`NVIDIA H200`, `llvmpipe`, `cpu`).
    pub adapter: String,
    /// Backend (`wgpu`, `flex`, `ndarray`).
    pub backend: String,
    /// Device memory in bytes, when known.
    pub memory_bytes: u64,
    /// Measured throughput in GFLOP/s: the resource score R_i.
    pub gflops: f64,
    /// Task kinds it runs.
    pub kinds: Vec<KindId>,
}

impl Capabilities {
    /// keccak256 of the JSON, signed in [`WorkerSignIn`](crate::eip712::WorkerSignIn).
    ///
    /// `gflops` is hashed rounded to 3 decimals: JSON float parsing is not bit-exact for long
    /// decimals, and the coordinator hashes what it parsed. Workers send rounded values
    /// ([`Capabilities::round`]) so both sides hash the same bytes.
    pub fn hash(&self) -> B256 {
        let mut c = self.clone();
        c.gflops = round3(c.gflops);
        alloy::primitives::keccak256(serde_json::to_vec(&c).expect("serialises"))
    }

    /// Rounds the measured numbers to what the wire carries exactly.
    pub fn round(mut self) -> Self {
        self.gflops = round3(self.gflops);
        self
    }
}

fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_hash_survives_a_json_round_trip() {
        for g in [
            0.1 + 0.2,
            1.0 / 3.0,
            123.456_789_012_345_67,
            5.3e-5,
            97.06543210987654,
        ] {
            let c = Capabilities {
                adapter: "cpu".into(),
                backend: "flex".into(),
                memory_bytes: 0,
                gflops: g,
                kinds: vec![KindId::EMBED],
            }
            .round();
            let back: Capabilities =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back.hash(), c.hash(), "gflops {g}");
        }
    }
}

/// Sign-in body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignIn {
    /// The staking address (worker) or the verifier address.
    pub address: Address,
    /// What the worker can do (ignored for the verifier).
    pub capabilities: Capabilities,
    /// Strictly increasing per address (e.g. unix milliseconds).
    pub nonce: u64,
    /// Expiry (unix seconds).
    pub expiry: u64,
    /// EIP-712 `WorkerSignIn` signature.
    pub signature: Bytes,
}

/// A session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Bearer token.
    pub token: String,
    /// Unix seconds after which the token is refused.
    pub expires_at: u64,
    /// `worker` or `verifier`.
    pub role: String,
}

/// Ask for work; the coordinator holds the request up to `wait_ms` (long poll).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// How long to wait for a task, at most 30,000.
    pub wait_ms: u32,
}

/// One replica of one task, leased to the caller until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Lease id (for results and release).
    pub lease_id: String,
    /// On-chain job id.
    pub job_id: U256,
    /// Task index.
    pub index: u32,
    /// Task hash (what the result signature binds).
    pub task_hash: B256,
    /// Task kind.
    pub kind: KindId,
    /// Model to run.
    pub model: ModelRef,
    /// Parameters.
    pub params: TaskParams,
    /// Input blob.
    pub input_hash: B256,
    /// Unix seconds; after that the replica returns to the queue.
    pub expires_at: u64,
}

/// A worker's signed result (its output blob is uploaded first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResult {
    /// The lease.
    pub lease_id: String,
    /// Task hash.
    pub task_hash: B256,
    /// sha256 of the output blob.
    pub result_hash: B256,
    /// EIP-712 `TaskResult` signature.
    pub signature: Bytes,
}

/// A submitted replica, as the verifier sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    /// Worker.
    pub worker: Address,
    /// Output blob hash.
    pub result_hash: B256,
    /// Its `TaskResult` signature.
    pub signature: Bytes,
}

/// A task whose replicas are in and which awaits a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskForReview {
    /// Task index.
    pub index: u32,
    /// Task hash.
    pub task_hash: B256,
    /// Every submitted replica.
    pub replicas: Vec<ReplicaView>,
}

/// A job the verifier has to work on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobForReview {
    /// On-chain job id.
    pub job_id: U256,
    /// Canonical manifest JSON.
    pub manifest: String,
    /// Posted task root.
    pub tasks_root: B256,
    /// Replicas per task.
    pub redundancy: u16,
    /// Tasks awaiting a decision.
    pub pending: Vec<TaskForReview>,
    /// Whether every task is decided (accepted or failed): time to settle.
    pub all_decided: bool,
    /// Decided tasks with their replicas (for the report), when `all_decided`.
    pub decided: Vec<DecidedTask>,
}

/// A task the verifier already decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecidedTask {
    /// Task index.
    pub index: u32,
    /// Task hash.
    pub task_hash: B256,
    /// Accepted output, if any.
    pub accepted_result: Option<B256>,
    /// Workers in the accepted cluster.
    pub quorum: Vec<Address>,
    /// Every replica.
    pub replicas: Vec<ReplicaView>,
}

/// Work for the verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifierWork {
    /// Jobs with pending tasks or ready to settle.
    pub jobs: Vec<JobForReview>,
}

/// The verifier's decision on one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// On-chain job id.
    pub job_id: U256,
    /// Task index.
    pub index: u32,
    /// `accept`: `result` (the aggregated output blob, uploaded first) with `quorum`;
    /// `more`: schedule `extra_replicas` more replicas; `fail`: give up on the task.
    pub verdict: String,
    /// Accepted output blob (for `accept`).
    pub result: Option<B256>,
    /// Workers in the accepted cluster (for `accept`).
    pub quorum: Vec<Address>,
    /// Extra replicas to schedule (for `more`).
    pub extra_replicas: u16,
}

/// The verifier settled a job on-chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// On-chain job id.
    pub job_id: U256,
    /// Hash of the settlement report blob (uploaded first).
    pub report_hash: B256,
    /// Settlement transaction.
    pub tx_hash: B256,
}
