//! The coordinator's view (jobs, tasks, replicas, workers, throughput): read from the store when
//! the coordinator serves the explorer itself, or as JSON from a coordinator's
//! `/explorer/api/...` routes when `gleaner explorer` runs apart from it. Either way it is the
//! coordinator's word, and the pages say so; money never comes from here.

use std::sync::Arc;

use alloy::primitives::{Address, B256, U256};
use gleaner_protocol::blob::{decode_generations, decode_matrix};
use serde::{Deserialize, Serialize};

use crate::cache::BoundedCache;
use crate::db::{ExplorerJob, ExplorerReplica, ExplorerTask, ExplorerWorker, Store};
use crate::error::{Error, Result};

/// The tensor name of embed outputs (`gleaner_kinds::EMBED_TENSOR`; the coordinator does not
/// link the kinds).
const EMBED_TENSOR: &str = "embeddings";
/// Minutes of throughput the network page shows.
pub(crate) const THROUGHPUT_MINUTES: u64 = 15;

/// What the network page needs from the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkData {
    /// The coordinator's clock (unix seconds).
    pub now: u64,
    /// Newest jobs first.
    pub jobs: Vec<ExplorerJob>,
    /// Workers.
    pub workers: Vec<ExplorerWorker>,
    /// Replicas submitted per minute, `(minute start, count)`, the last
    /// [`THROUGHPUT_MINUTES`] minutes.
    pub throughput: Vec<(u64, u32)>,
    /// Workers seen within this many seconds count as active.
    pub active_secs: u64,
}

/// What a job page needs from the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobData {
    /// The coordinator's clock (unix seconds).
    pub now: u64,
    /// The job.
    pub job: ExplorerJob,
    /// Its tasks.
    pub tasks: Vec<ExplorerTask>,
    /// Its replicas, each with its distance to the accepted output when both are stored.
    pub replicas: Vec<ReplicaData>,
}

/// A replica and how far its output is from the accepted one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaData {
    /// The replica.
    #[serde(flatten)]
    pub replica: ExplorerReplica,
    /// Its distance to the accepted output (recomputed from the stored outputs).
    pub distance: Option<Distance>,
}

/// How far a replica's output is from the accepted output, in the kind's own terms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "measure", rename_all = "snake_case")]
pub enum Distance {
    /// Embeddings: the lowest cosine similarity of a row with the accepted row (1 = same).
    Cosine {
        /// The lowest row cosine.
        min: f64,
    },
    /// Generations: how many outputs differ in their token ids, and the first differing token.
    Tokens {
        /// Outputs whose ids differ.
        differing: usize,
        /// Outputs.
        outputs: usize,
        /// (output, token) of the first difference.
        first: Option<(usize, usize)>,
    },
    /// Gradients (train): `|a - b| / max(|a|, |b|)` (0 = same).
    Gradient {
        /// The relative L2 distance.
        rel_l2: f64,
    },
    /// Other kinds, or outputs that do not decode: whether the bytes are the same.
    Bytes {
        /// Same bytes.
        equal: bool,
    },
}

/// What a worker page needs from the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerData {
    /// The coordinator's clock (unix seconds).
    pub now: u64,
    /// The worker as the coordinator knows it (`None`: never signed in here).
    pub worker: Option<ExplorerWorker>,
    /// Its newest replicas.
    pub replicas: Vec<ExplorerReplica>,
    /// Each accepted task in `replicas`: `(job, index, accepted result, whether the worker is
    /// in its quorum)`.
    pub accepted: Vec<(U256, u32, B256, bool)>,
}

/// Where the coordinator's view comes from.
#[derive(Clone)]
pub(crate) enum Source {
    /// This coordinator's store.
    Store {
        store: Store,
        active_secs: u64,
        distances: Arc<BoundedCache<(B256, B256), Distance>>,
    },
    /// Another coordinator's `/explorer/api/...` routes.
    Http { base: String, http: reqwest::Client },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Store { .. } => f.write_str("Source::Store"),
            Self::Http { base, .. } => write!(f, "Source::Http({base})"),
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Source {
    pub(crate) fn store(store: Store, active_secs: u64) -> Self {
        Self::Store {
            store,
            active_secs,
            distances: Arc::new(BoundedCache::new(20_000)),
        }
    }

    pub(crate) fn http(base: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .map_err(|e| Error::Internal(format!("http client: {e}")))?;
        Ok(Self::Http {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// GETs `path` of the other coordinator as JSON; `None` on 404.
    async fn get<T: serde::de::DeserializeOwned>(
        http: &reqwest::Client,
        base: &str,
        path: &str,
    ) -> Result<Option<T>> {
        let url = format!("{base}{path}");
        let r = http
            .get(&url)
            .send()
            .await
            .map_err(|e| Error::Chain(format!("coordinator {url}: {e}")))?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(Error::Chain(format!(
                "coordinator {url} answered {}",
                r.status()
            )));
        }
        r.json()
            .await
            .map(Some)
            .map_err(|e| Error::Chain(format!("coordinator {url}: {e}")))
    }

    pub(crate) async fn network(&self) -> Result<NetworkData> {
        match self {
            Self::Store {
                store, active_secs, ..
            } => {
                let now = unix_now();
                Ok(NetworkData {
                    now,
                    jobs: store.explorer_jobs().await?,
                    workers: store.explorer_workers().await?,
                    throughput: store
                        .explorer_throughput(now.saturating_sub(THROUGHPUT_MINUTES * 60))
                        .await?,
                    active_secs: *active_secs,
                })
            }
            Self::Http { base, http } => Self::get(http, base, "/explorer/api/network")
                .await?
                .ok_or_else(|| Error::Chain(format!("{base} serves no explorer API"))),
        }
    }

    pub(crate) async fn job(&self, id: U256) -> Result<Option<JobData>> {
        match self {
            Self::Store {
                store, distances, ..
            } => {
                let Some(job) = store.explorer_job(id).await? else {
                    return Ok(None);
                };
                let tasks = store.explorer_tasks(id).await?;
                let mut replicas = Vec::new();
                for r in store.explorer_replicas(id).await? {
                    let accepted = tasks
                        .get(r.index as usize)
                        .filter(|t| t.index == r.index)
                        .and_then(|t| t.accepted_result);
                    let distance = match (r.result_hash, accepted) {
                        (Some(mine), Some(theirs)) => {
                            distance(store, distances, &job.kind, mine, theirs).await?
                        }
                        _ => None,
                    };
                    replicas.push(ReplicaData {
                        replica: r,
                        distance,
                    });
                }
                Ok(Some(JobData {
                    now: unix_now(),
                    job,
                    tasks,
                    replicas,
                }))
            }
            Self::Http { base, http } => {
                Self::get(http, base, &format!("/explorer/api/jobs/{id}")).await
            }
        }
    }

    pub(crate) async fn worker(&self, address: Address) -> Result<WorkerData> {
        match self {
            Self::Store { store, .. } => {
                let worker = store
                    .explorer_workers()
                    .await?
                    .into_iter()
                    .find(|w| w.address == address);
                let replicas = store.explorer_worker_replicas(address).await?;
                let mut accepted = Vec::new();
                let mut jobs: Vec<U256> = replicas.iter().map(|r| r.job_id).collect();
                jobs.sort();
                jobs.dedup();
                for job in jobs {
                    for t in store.explorer_tasks(job).await? {
                        if let Some(result) = t.accepted_result
                            && replicas
                                .iter()
                                .any(|r| r.job_id == job && r.index == t.index)
                        {
                            accepted.push((job, t.index, result, t.quorum.contains(&address)));
                        }
                    }
                }
                Ok(WorkerData {
                    now: unix_now(),
                    worker,
                    replicas,
                    accepted,
                })
            }
            Self::Http { base, http } => {
                Self::get(http, base, &format!("/explorer/api/workers/{address}"))
                    .await?
                    .ok_or_else(|| Error::Chain(format!("{base} serves no explorer API")))
            }
        }
    }
}

/// The distance of output `mine` to the accepted output `accepted`, both read from the store
/// (`None` when either is missing).
async fn distance(
    store: &Store,
    cache: &BoundedCache<(B256, B256), Distance>,
    kind: &str,
    mine: B256,
    accepted: B256,
) -> Result<Option<Distance>> {
    if mine == accepted {
        return Ok(Some(same(kind)));
    }
    if let Some(d) = cache.get(&(mine, accepted)) {
        return Ok(Some(d));
    }
    let (Some(a), Some(b)) = (store.blob(mine).await?, store.blob(accepted).await?) else {
        return Ok(None);
    };
    let d = measure(kind, &a, &b);
    cache.insert((mine, accepted), d);
    Ok(Some(d))
}

/// The distance of identical outputs.
fn same(kind: &str) -> Distance {
    match kind {
        "embed" => Distance::Cosine { min: 1.0 },
        "train" => Distance::Gradient { rel_l2: 0.0 },
        _ => Distance::Bytes { equal: true },
    }
}

/// The distance of output `a` to the accepted output `b`, in the kind's terms.
pub(crate) fn measure(kind: &str, a: &[u8], b: &[u8]) -> Distance {
    let bytes = Distance::Bytes { equal: a == b };
    match kind {
        "embed" => {
            let (Ok((x, rows, cols)), Ok((y, rows_b, cols_b))) = (
                decode_matrix(EMBED_TENSOR, a),
                decode_matrix(EMBED_TENSOR, b),
            ) else {
                return bytes;
            };
            if (rows, cols) != (rows_b, cols_b) || cols == 0 {
                return Distance::Cosine { min: f64::NAN };
            }
            let min = x
                .chunks_exact(cols)
                .zip(y.chunks_exact(cols))
                .map(|(p, q)| cosine(p, q))
                .fold(f64::INFINITY, f64::min);
            Distance::Cosine {
                min: if rows == 0 { 1.0 } else { min },
            }
        }
        "generate" => {
            let (Ok(x), Ok(y)) = (decode_generations(a), decode_generations(b)) else {
                return bytes;
            };
            let mut differing = x.len().abs_diff(y.len());
            let mut first = None;
            for (o, (p, q)) in x.iter().zip(&y).enumerate() {
                if p.ids != q.ids {
                    differing += 1;
                    let at = p
                        .ids
                        .iter()
                        .zip(&q.ids)
                        .position(|(s, t)| s != t)
                        .unwrap_or(p.ids.len().min(q.ids.len()));
                    first.get_or_insert((o, at));
                }
            }
            Distance::Tokens {
                differing,
                outputs: y.len(),
                first,
            }
        }
        "train" => {
            let (Some(x), Some(y)) = (gradient(a), gradient(b)) else {
                return bytes;
            };
            Distance::Gradient {
                rel_l2: if x.len() == y.len() {
                    gleaner_protocol::formulas::rel_l2(&x, &y)
                } else {
                    f64::NAN
                },
            }
        }
        _ => bytes,
    }
}

/// The `grad` tensor of a train output (`gleaner_kinds::Gradient`; the coordinator does not
/// link the kinds).
fn gradient(bytes: &[u8]) -> Option<Vec<f32>> {
    let f = gleaner_protocol::tensors::decode(bytes).ok()?;
    match &f.get("grad").ok()?.values {
        gleaner_protocol::tensors::Values::F32(v) => Some(v.clone()),
        _ => None,
    }
}

/// Cosine similarity in f64 (NaN rows give NaN).
fn cosine(p: &[f32], q: &[f32]) -> f64 {
    let (mut dot, mut pp, mut qq) = (0f64, 0f64, 0f64);
    for (a, b) in p.iter().zip(q) {
        let (a, b) = (f64::from(*a), f64::from(*b));
        dot += a * b;
        pp += a * a;
        qq += b * b;
    }
    if pp == 0.0 || qq == 0.0 {
        return if pp == qq { 1.0 } else { 0.0 };
    }
    dot / (pp.sqrt() * qq.sqrt())
}

#[cfg(test)]
mod tests {
    use gleaner_protocol::blob::{Generation, encode_generations, encode_matrix};

    use super::*;

    #[test]
    fn distances_in_each_kinds_terms() {
        let a = encode_matrix(EMBED_TENSOR, &[1.0, 0.0, 0.0, 1.0], 2, 2, &[]).unwrap();
        let b = encode_matrix(EMBED_TENSOR, &[1.0, 0.0, 0.0, -1.0], 2, 2, &[]).unwrap();
        assert_eq!(measure("embed", &a, &a), Distance::Cosine { min: 1.0 });
        let grad = |v: Vec<f32>| {
            use gleaner_protocol::tensors::{Tensor, Values, encode};
            encode(&[Tensor::new("grad", vec![v.len()], Values::F32(v))], &[]).unwrap()
        };
        let (g, h) = (grad(vec![3.0, 4.0]), grad(vec![3.0, 4.5]));
        assert_eq!(measure("train", &g, &g), Distance::Gradient { rel_l2: 0.0 });
        let Distance::Gradient { rel_l2 } = measure("train", &g, &h) else {
            panic!("not a gradient distance");
        };
        assert!((rel_l2 - 0.5 / 4.5f64.hypot(3.0)).abs() < 1e-12, "{rel_l2}");
        assert_eq!(
            measure("train", b"junk", &g),
            Distance::Bytes { equal: false }
        );
        assert_eq!(measure("embed", &a, &b), Distance::Cosine { min: -1.0 });
        let g = |ids: Vec<u32>| Generation {
            text: String::new(),
            ids,
        };
        let x = encode_generations(&[g(vec![1, 2, 3]), g(vec![4])]);
        let y = encode_generations(&[g(vec![1, 9, 3]), g(vec![4])]);
        assert_eq!(
            measure("generate", &x, &y),
            Distance::Tokens {
                differing: 1,
                outputs: 2,
                first: Some((0, 1))
            }
        );
        assert_eq!(
            measure("reverse", b"ab", b"ab"),
            Distance::Bytes { equal: true }
        );
        assert_eq!(
            measure("embed", b"junk", &a),
            Distance::Bytes { equal: false }
        );
    }
}
