//! The coordinator's HTTP API (`/v1`), as request and response bodies (JSON).
//!
//! | method | path | who | body → reply |
//! |---|---|---|---|
//! | GET | `/healthz` | anyone | → `ok` |
//! | GET | `/metrics` | anyone | → Prometheus text |
//! | GET | `/v1/info` | anyone | → [`Info`] |
//! | PUT | `/v1/blobs/{sha256}` | anyone | raw bytes (≤ limit; hash must match) → [`BlobRef`] |
//! | GET | `/v1/blobs/{sha256}` | see [Blob access](#blob-access) | → raw bytes |
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
//! | PUT | `/v1/verifier/reports/{sha256}` | verifier (Bearer) | a canonical settlement report (≤ the report limit, larger than the blob limit; hash must match) → [`BlobRef`] |
//!
//! Errors are `4xx`/`5xx` with an [`ApiError`] body. Bad input changes nothing.
//! Sessions: `POST /v1/sign-in` checks an EIP-712 [`WorkerSignIn`](crate::eip712::WorkerSignIn)
//! (nonce strictly increasing per address, expiry ≤ 10 min ahead) and the on-chain stake
//! (workers) or the configured verifier address; the reply's token goes in
//! `Authorization: Bearer <token>`.
//!
//! # Blob access
//!
//! Anyone may upload a blob (its hash must match), but a blob is read only by those its job
//! names. A settlement report is public (auditors rebuild payouts from it). A task's input
//! blob is readable by the verifier, by a worker holding a live lease on that task, and by the
//! job's requester. An output (a replica's result or an accepted result) is readable by the
//! verifier and the requester, and, once the job is settled, by whoever holds a
//! [`ReadGrant`] the requester shared. Everyone else gets 403 (404 when no job names the
//! hash). Workers and the verifier show their Bearer session; a requester shows a
//! [`ReadGrant`] it signed for itself, in the [`GRANT_HEADER`] header or the `grant` query
//! parameter (a shareable link).

use alloy::primitives::{Address, B256, Bytes, U256};
use serde::{Deserialize, Serialize};

use crate::task::{KindId, ModelRef, TaskParams};

/// The header that carries a [`ReadGrant`] (its [`ReadGrant::token`] form).
pub const GRANT_HEADER: &str = "x-gleaner-grant";

/// How far ahead a [`ReadGrant`]'s expiry may be: a shared link lives at most a week.
pub const MAX_GRANT_SECS: u64 = 7 * 24 * 3600;

/// A requester's signed permission to read a job's blobs (EIP-712
/// [`ReadGrant`](crate::eip712::ReadGrant)): for itself (`grantee` = the requester: inputs and
/// outputs) or for anyone holding it (`grantee` = 0: accepted and replica outputs, after
/// settlement). It travels as one URL-safe token, `job.grantee.expiry.signature`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadGrant {
    /// The job whose blobs it opens.
    pub job_id: U256,
    /// The requester itself, or [`Address::ZERO`] for whoever holds the grant.
    pub grantee: Address,
    /// Unix seconds after which it is refused.
    pub expiry: u64,
    /// The requester's 65-byte signature.
    pub signature: Bytes,
}

impl ReadGrant {
    /// The EIP-712 message signed.
    pub fn message(&self) -> crate::eip712::ReadGrant {
        crate::eip712::ReadGrant {
            jobId: self.job_id,
            grantee: self.grantee,
            expiry: self.expiry,
        }
    }

    /// `job.grantee.expiry.signature` (decimal, hex, decimal, hex).
    pub fn token(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.job_id, self.grantee, self.expiry, self.signature
        )
    }

    /// Parses [`ReadGrant::token`]'s form.
    pub fn parse(token: &str) -> crate::Result<Self> {
        let bad = |what: &str| {
            crate::Error::Invalid(format!(
                "read grant {what}: expected JOB.GRANTEE.EXPIRY.SIGNATURE (decimal, 0x address, \
                 decimal, 0x signature)"
            ))
        };
        let mut parts = token.trim().split('.');
        let (Some(job), Some(grantee), Some(expiry), Some(sig), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad("has the wrong number of parts"));
        };
        Ok(Self {
            job_id: U256::from_str_radix(job, 10).map_err(|_| bad("has a bad job id"))?,
            grantee: grantee.parse().map_err(|_| bad("has a bad grantee"))?,
            expiry: expiry.parse().map_err(|_| bad("has a bad expiry"))?,
            signature: sig.parse().map_err(|_| bad("has a bad signature"))?,
        })
    }
}

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
    /// Where the job is in its life; see [`JobState`].
    pub state: JobState,
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

/// A job's state as the coordinator reports it, with exactly one string form each (the JSON).
///
/// `registered` → `posted` (root on-chain) → `verifying` (every task decided) → `settled`;
/// or `cancelled`, `expired` (reclaimed, or the deadline passed before posting), or
/// `root_mismatch` (someone else's task root is on-chain: the coordinator never leases it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Manifest accepted, root not yet posted (or not yet confirmed).
    Registered,
    /// Root posted and confirmed: tasks are leased.
    Posted,
    /// Every task is decided; settlement is on its way.
    Verifying,
    /// The verifier settled it on-chain.
    Settled,
    /// Cancelled by the requester before posting.
    Cancelled,
    /// Reclaimed after the deadline, or the deadline passed before posting.
    Expired,
    /// A task root other than the manifest's was posted on-chain: the job will never run.
    RootMismatch,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [Self; 7] = [
        Self::Registered,
        Self::Posted,
        Self::Verifying,
        Self::Settled,
        Self::Cancelled,
        Self::Expired,
        Self::RootMismatch,
    ];

    /// The one string form (JSON, database, logs).
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Posted => "posted",
            Self::Verifying => "verifying",
            Self::Settled => "settled",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::RootMismatch => "root_mismatch",
        }
    }

    /// Whether the job can no longer change: waiting on it is pointless.
    pub const fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Settled | Self::Cancelled | Self::Expired | Self::RootMismatch
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of [`JobState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {0:?}")]
pub struct UnknownJobState(
    /// The string that was given.
    pub String,
);

impl std::str::FromStr for JobState {
    type Err = UnknownJobState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownJobState(s.to_owned()))
    }
}

impl PartialEq<str> for JobState {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for JobState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for JobState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JobState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
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

    /// Rounds the measured numbers to what the wire carries exactly (`gflops` to 3 decimals,
    /// within ±10^12, a non-finite one to 0).
    pub fn round(mut self) -> Self {
        self.gflops = round3(self.gflops);
        self
    }
}

/// The largest `gflops` magnitude the wire carries exactly: a zettaFLOP/s, far beyond any machine.
///
/// Up to it a value rounded to 3 decimals is `k / 1000` with `k < 2^53`, whose shortest decimal
/// form JSON parsing reads back bit-exactly. Beyond it the parsed value could be 1 ulp off and the
/// capabilities hash differ after the round trip (and at `f64::MAX`, `x * 1000` overflowed to
/// infinity, which serialised as `null` and did not parse at all): property tests in
/// `tests/codecs.rs` found both.
const MAX_GFLOPS: f64 = 1e12;

fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x.clamp(-MAX_GFLOPS, MAX_GFLOPS) * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_states_have_one_string_form() {
        for st in JobState::ALL {
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
            assert_eq!(serde_json::from_str::<JobState>(&json).unwrap(), st);
            assert_eq!(st.as_str().parse::<JobState>().unwrap(), st);
            assert_eq!(st.to_string(), st.as_str());
        }
        assert!("verified".parse::<JobState>().is_err());
        assert!(serde_json::from_str::<JobState>("\"Posted\"").is_err());
        let terminal: Vec<_> = JobState::ALL
            .into_iter()
            .filter(JobState::is_terminal)
            .collect();
        assert_eq!(
            terminal,
            [
                JobState::Settled,
                JobState::Cancelled,
                JobState::Expired,
                JobState::RootMismatch
            ]
        );
    }

    #[test]
    fn decisions_round_trip_per_verdict() {
        let cases = [
            (
                Verdict::Accept {
                    result: B256::repeat_byte(7),
                    quorum: vec![Address::repeat_byte(1), Address::repeat_byte(2)],
                },
                serde_json::json!({
                    "verdict": "accept",
                    "result": B256::repeat_byte(7),
                    "quorum": [Address::repeat_byte(1), Address::repeat_byte(2)],
                }),
            ),
            (
                Verdict::More { extra_replicas: 3 },
                serde_json::json!({"verdict": "more", "extra_replicas": 3}),
            ),
            (Verdict::Fail, serde_json::json!({"verdict": "fail"})),
        ];
        for (verdict, fields) in cases {
            let d = Decision {
                job_id: U256::from(42),
                index: 5,
                verdict: verdict.clone(),
            };
            let json = serde_json::to_value(&d).unwrap();
            let mut want = serde_json::json!({"job_id": U256::from(42), "index": 5});
            for (k, v) in fields.as_object().unwrap() {
                want[k] = v.clone();
            }
            assert_eq!(json, want, "{}", verdict.name());
            let back: Decision = serde_json::from_value(json).unwrap();
            assert_eq!(back, d);
            assert_eq!(json_tag(&back), verdict.name());
        }
        // An unknown verdict, or one without its fields, does not parse.
        for bad in [
            serde_json::json!({"job_id": "0x1", "index": 0, "verdict": "maybe"}),
            serde_json::json!({"job_id": "0x1", "index": 0, "verdict": "accept"}),
            serde_json::json!({"job_id": "0x1", "index": 0, "verdict": "more"}),
            serde_json::json!({"job_id": "0x1", "index": 0}),
        ] {
            assert!(
                serde_json::from_value::<Decision>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    fn json_tag(d: &Decision) -> String {
        serde_json::to_value(d).unwrap()["verdict"]
            .as_str()
            .unwrap()
            .to_owned()
    }

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
        // Huge values are clamped, so they serialise as numbers and parse back exactly.
        for (g, want) in [
            (f64::MAX, MAX_GFLOPS),
            (-f64::MAX, -MAX_GFLOPS),
            (2.7595620671566766e13, MAX_GFLOPS),
            (999_999_999_999.987, 999_999_999_999.987),
        ] {
            let c = Capabilities {
                adapter: "cpu".into(),
                backend: "flex".into(),
                memory_bytes: 0,
                gflops: g,
                kinds: vec![],
            }
            .round();
            assert_eq!(c.gflops, want);
            let back: Capabilities =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back, c);
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
    /// How long to wait for a task, in milliseconds; the coordinator caps it (30,000 by default).
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

/// Ask for up to `max` replicas at once (`POST /v1/leases/batch`); the coordinator holds the
/// request up to `wait_ms` until at least one is free, and may give fewer than `max` (the
/// worker's share of the open work bounds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseBatchRequest {
    /// How long to wait for a first task, in milliseconds (capped like [`LeaseRequest`]'s).
    pub wait_ms: u32,
    /// Most replicas wanted, 1 to [`crate::eip712::MAX_RESULT_BATCH`].
    pub max: u32,
}

/// Replicas leased together: each is a [`Lease`] of its own (its own id and expiry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leases {
    /// The leases, at least one.
    pub leases: Vec<Lease>,
}

/// One result of a [`SubmitResults`] batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    /// The lease.
    pub lease_id: String,
    /// Task hash.
    pub task_hash: B256,
    /// sha256 of the output blob.
    pub result_hash: B256,
    /// The output itself, when not uploaded before (`PUT /v1/blobs`): small outputs travel
    /// with their result. Its sha256 must be `result_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Bytes>,
}

/// Many results signed once (`POST /v1/results/batch`): `signature` is the worker's EIP-712
/// `TaskResults` signature over the tree of `items` in this order (see
/// [`crate::eip712::ResultBatch`]). The batch is taken whole or refused whole: one bad item
/// (not the caller's live lease, a wrong task hash, an output that does not hash to its result
/// hash, a missing blob) refuses it with nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResults {
    /// The results, 1 to [`crate::eip712::MAX_RESULT_BATCH`].
    pub items: Vec<BatchItem>,
    /// The `TaskResults` signature (65 bytes).
    pub signature: Bytes,
}

/// A submitted replica, as the verifier sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    /// Worker.
    pub worker: Address,
    /// Output blob hash.
    pub result_hash: B256,
    /// Its result signature: a `TaskResult` signature, or a batch member's (see
    /// [`crate::eip712::ResultSignature`]).
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
    /// Whether every task is decided (accepted or failed), or the deadline has passed: time
    /// to settle. Past the deadline `pending` still lists the tasks whose replicas are in; the
    /// verifier decides those first (see `undecided`).
    pub all_decided: bool,
    /// Decided tasks with their replicas (for the report), when `all_decided`.
    pub decided: Vec<DecidedTask>,
    /// Tasks not decided yet, pending or not: a job with spot checks accepts its provisional
    /// results once every undecided task is pending.
    #[serde(default)]
    pub undecided: u32,
    /// A job with spot checks: its secret and beacon, once the commitment is on the chain
    /// (absent for full replication). Only the verifier is shown it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_seed: Option<crate::replication::SpotSeed>,
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
///
/// On the wire the verdict's tag and fields sit next to the task's:
/// `{"job_id":"0x1","index":0,"verdict":"accept","result":"0x..","quorum":["0x.."]}`,
/// `{"job_id":"0x1","index":1,"verdict":"more","extra_replicas":1}`,
/// `{"job_id":"0x1","index":2,"verdict":"fail"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// On-chain job id.
    pub job_id: U256,
    /// Task index.
    pub index: u32,
    /// What to do with the task.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// What the verifier decided about a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// Accept `result` (the aggregated output blob, uploaded first), agreed by `quorum`.
    Accept {
        /// Accepted output blob.
        result: B256,
        /// Workers in the accepted cluster (each submitted a replica of the task).
        quorum: Vec<Address>,
    },
    /// Schedule `extra_replicas` (≥ 1) more replicas.
    More {
        /// Extra replicas to schedule.
        extra_replicas: u16,
    },
    /// Give up on the task for good.
    Fail,
}

impl Verdict {
    /// The wire tag (`accept`, `more`, `fail`), for logs.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Accept { .. } => "accept",
            Self::More { .. } => "more",
            Self::Fail => "fail",
        }
    }
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
