//! Deciding one task from its replicas: check, cluster, quorum, aggregate. Pure functions.
//!
//! Rules (DESIGN.md, "The job, end to end" step 4):
//!
//! 1. **Check** every replica ([`check_replica`]): a replica whose `TaskResult` signature does not
//!    recover to its worker, or whose blob is missing or does not hash to the signed result, is
//!    [`Checked::Unattributable`]: it loses, but nothing is held against the named worker (the
//!    coordinator could have forged or lost it). A correctly signed blob that does not decode, has
//!    the wrong shape (not `[rows, 384]`, or not one row per input text) or holds a non-finite
//!    value is [`Checked::Malformed`]: the worker signed garbage, which contradicts any quorum.
//! 2. **Cluster** the well-formed outputs ([`cluster`]) with the embed comparator (every row's
//!    cosine ≥ [`EMBED_MIN_COSINE`]), complete linkage: a replica joins the first cluster (in
//!    ascending worker order) with *every* member of which it agrees, else starts its own. Every
//!    pair inside a cluster therefore agrees; the result does not depend on submission order.
//! 3. **Quorum** ([`Policy::quorum`]): a majority of the job's redundancy, ⌊r/2⌋ + 1 (so at
//!    least 2 when r ≥ 2; r = 1 trusts a single replica, which is what the requester asked for).
//! 4. **Decide** ([`decide`]): the cluster with the greatest confidence weight Σ P_j wins if it
//!    is strictly heavier than every other cluster, has a positive weight and reaches quorum:
//!    [`Verdict::Accept`]. Otherwise, while fewer than [`Policy::max_replicas`] replicas are in
//!    (default 2 × redundancy, at least redundancy + 1), [`Verdict::More`] asks for the replicas
//!    the leading cluster lacks (at least one); beyond that, [`Verdict::Fail`].
//! 5. **Aggregate** ([`aggregate`]): the accepted output is the confidence-weighted mean of the
//!    winning cluster (seed 4.1.3), each row then re-normalised to unit length: the model's
//!    outputs are L2-normalised, a mean of unit vectors is slightly shorter, and re-normalising
//!    keeps the accepted output in the same format as any single replica (cosines unchanged).

use alloy::primitives::{Address, B256, Bytes, Signature};
use alloy::sol_types::Eip712Domain;
use gleaner_models::{EMBED_DIM, EMBED_MIN_COSINE, compare_embeddings};
use gleaner_protocol::blob::{
    Generation, blob_hash, decode_generations, decode_matrix, encode_generations, encode_matrix,
};
use gleaner_protocol::eip712::{self, TaskResult};
use gleaner_protocol::formulas::{self, ConfidenceBps, FULL_CONFIDENCE};

use crate::{Error, Result};

/// Name of the tensor in an embed output blob.
pub const EMBED_TENSOR: &str = "embeddings";

/// A row-major `[rows, cols]` f32 matrix, every value finite.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Values, row after row.
    pub data: Vec<f32>,
    /// Rows (texts).
    pub rows: usize,
    /// Columns (embedding dimension).
    pub cols: usize,
}

impl Matrix {
    /// The safetensors blob of this matrix (tensor [`EMBED_TENSOR`], no metadata, so equal
    /// matrices give equal bytes and equal hashes).
    pub fn to_blob(&self) -> Result<Vec<u8>> {
        Ok(encode_matrix(
            EMBED_TENSOR,
            &self.data,
            self.rows,
            self.cols,
            &[],
        )?)
    }
}

/// What checking a replica found.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// Signed by its worker and well formed (embed).
    Output(Matrix),
    /// Signed by its worker, well formed, and every generation passed the teacher-forced check
    /// (generate). Any two such replicas agree: both are outputs the model could have produced,
    /// even where they part at a near-tie.
    Generated(Vec<Generation>),
    /// Signed by its worker but malformed (the reason): contradicts any accepted quorum.
    Malformed(String),
    /// Cannot be held against the named worker (bad signature, blob missing or not matching its
    /// hash): loses, changes nothing else.
    Unattributable(String),
}

/// The blob behind a replica's result hash, as fetched.
#[derive(Debug, Clone, Copy)]
pub enum Fetched<'a> {
    /// The blob's bytes.
    Bytes(&'a [u8]),
    /// The coordinator does not have it.
    Missing,
}

/// One replica, checked, with its worker's confidence at decision time.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    /// The worker it claims to come from.
    pub worker: Address,
    /// sha256 of its output blob (what the worker signed).
    pub result_hash: B256,
    /// Its `TaskResult` signature.
    pub signature: Bytes,
    /// The worker's confidence P_j.
    pub confidence: ConfidenceBps,
    /// What checking found.
    pub checked: Checked,
}

impl Replica {
    /// Whether the named worker provably signed this result (so it can be rewarded or blamed).
    pub fn attributable(&self) -> bool {
        !matches!(self.checked, Checked::Unattributable(_))
    }
}

/// Whether `signature` is `worker`'s EIP-712 `TaskResult{task_hash, result_hash, worker}`.
pub fn signature_valid(
    domain: &Eip712Domain,
    task_hash: B256,
    worker: Address,
    result_hash: B256,
    signature: &[u8],
) -> bool {
    let Ok(sig) = Signature::try_from(signature) else {
        return false;
    };
    let msg = TaskResult {
        taskHash: task_hash,
        resultHash: result_hash,
        worker,
    };
    eip712::verify(&msg, domain, &sig, worker).is_ok()
}

/// Checks one embed replica: signature first, then the blob against its hash, then its format.
/// `expected_rows` is the number of input texts, when known.
pub fn check_replica(
    domain: &Eip712Domain,
    task_hash: B256,
    worker: Address,
    result_hash: B256,
    signature: &[u8],
    blob: Fetched<'_>,
    expected_rows: Option<usize>,
) -> Checked {
    match attributed(domain, task_hash, worker, result_hash, signature, blob) {
        Ok(bytes) => check_output(bytes, expected_rows),
        Err(c) => c,
    }
}

/// The blob's bytes when `worker` provably signed them for `task_hash`; otherwise the
/// [`Checked::Unattributable`] verdict.
pub fn attributed<'a>(
    domain: &Eip712Domain,
    task_hash: B256,
    worker: Address,
    result_hash: B256,
    signature: &[u8],
    blob: Fetched<'a>,
) -> std::result::Result<&'a [u8], Checked> {
    if !signature_valid(domain, task_hash, worker, result_hash, signature) {
        return Err(Checked::Unattributable(
            "signature does not recover to the worker".into(),
        ));
    }
    let bytes = match blob {
        Fetched::Missing => return Err(Checked::Unattributable("output blob is missing".into())),
        Fetched::Bytes(b) => b,
    };
    if blob_hash(bytes) != result_hash {
        return Err(Checked::Unattributable(
            "blob does not hash to the signed result".into(),
        ));
    }
    Ok(bytes)
}

/// Checks a generate output blob: canonical, one generation per prompt, and each accepted by
/// `verify(index, prompt, generation)`, which returns `None` to accept or the reason to reject
/// (the model's teacher-forced check). An error from `verify` is the verifier's own failure and
/// is passed on: it says nothing about the worker.
pub fn check_generations(
    bytes: &[u8],
    prompts: &[String],
    mut verify: impl FnMut(usize, &str, &Generation) -> Result<Option<String>>,
) -> Result<Checked> {
    let outputs = match decode_generations(bytes) {
        Ok(o) => o,
        Err(e) => return Ok(Checked::Malformed(e.to_string())),
    };
    if outputs.len() != prompts.len() {
        return Ok(Checked::Malformed(format!(
            "{} outputs for {} prompts",
            outputs.len(),
            prompts.len()
        )));
    }
    for (i, (p, g)) in prompts.iter().zip(&outputs).enumerate() {
        if let Some(reason) = verify(i, p, g)? {
            return Ok(Checked::Malformed(format!("prompt {i}: {reason}")));
        }
    }
    Ok(Checked::Generated(outputs))
}

/// Checks the format of an embed output blob: `[rows, 384]` F32, every value finite.
pub fn check_output(bytes: &[u8], expected_rows: Option<usize>) -> Checked {
    let (data, rows, cols) = match decode_matrix(EMBED_TENSOR, bytes) {
        Ok(m) => m,
        Err(e) => return Checked::Malformed(e.to_string()),
    };
    if cols != EMBED_DIM {
        return Checked::Malformed(format!("{cols} columns, expected {EMBED_DIM}"));
    }
    if rows == 0 {
        return Checked::Malformed("no rows".into());
    }
    if let Some(n) = expected_rows.filter(|&n| n != rows) {
        return Checked::Malformed(format!("{rows} rows for {n} input texts"));
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Checked::Malformed(format!("non-finite value at row {}", i / cols));
    }
    Checked::Output(Matrix { data, rows, cols })
}

/// How a job's tasks are decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Replicas per task the requester paid for.
    pub redundancy: u16,
    /// Most replicas to look at before giving up on a task.
    pub max_replicas: usize,
    /// Row cosine at or above which two embeddings agree.
    pub min_cosine: f32,
}

impl Policy {
    /// The default policy for a job: cap 2 × redundancy (at least redundancy + 1), the
    /// calibrated [`EMBED_MIN_COSINE`].
    pub fn new(redundancy: u16) -> Self {
        let r = usize::from(redundancy.max(1));
        Self {
            redundancy: redundancy.max(1),
            max_replicas: (2 * r).max(r + 1),
            min_cosine: EMBED_MIN_COSINE,
        }
    }

    /// Members a cluster needs: ⌊r/2⌋ + 1.
    pub fn quorum(&self) -> usize {
        usize::from(self.redundancy) / 2 + 1
    }
}

/// A set of mutually agreeing replicas (indices into the task's replicas, ascending by worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Replica indices.
    pub members: Vec<usize>,
    /// Σ P_j of the members, in basis points.
    pub weight: u64,
}

/// Clusters the well-formed outputs (complete linkage, ascending worker order). Malformed and
/// unattributable replicas are in no cluster: each is its own losing singleton.
pub fn cluster(replicas: &[Replica], min_cosine: f32) -> Vec<Cluster> {
    let mut order: Vec<usize> = (0..replicas.len())
        .filter(|&i| {
            matches!(
                replicas[i].checked,
                Checked::Output(_) | Checked::Generated(_)
            )
        })
        .collect();
    order.sort_by_key(|&i| (replicas[i].worker, i));
    let mut clusters: Vec<Cluster> = Vec::new();
    for i in order {
        let home = clusters.iter().position(|c| {
            c.members
                .iter()
                .all(|&j| agree(&replicas[i], &replicas[j], min_cosine))
        });
        let w = u64::from(replicas[i].confidence);
        match home {
            Some(k) => {
                clusters[k].members.push(i);
                clusters[k].weight += w;
            }
            None => clusters.push(Cluster {
                members: vec![i],
                weight: w,
            }),
        }
    }
    clusters
}

fn agree(a: &Replica, b: &Replica, min_cosine: f32) -> bool {
    match (&a.checked, &b.checked) {
        (Checked::Output(x), Checked::Output(y)) => {
            x.rows == y.rows
                && x.cols == y.cols
                && compare_embeddings(&x.data, &y.data, x.cols, min_cosine)
                    .map(|g| g.agree)
                    .unwrap_or(false)
        }
        (Checked::Generated(x), Checked::Generated(y)) => x.len() == y.len(),
        _ => false,
    }
}

/// The verdict on a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accept the cluster with these replica indices (ascending by worker).
    Accept {
        /// Members of the winning cluster.
        quorum: Vec<usize>,
    },
    /// Schedule this many more replicas.
    More {
        /// Extra replicas (≥ 1).
        extra: u16,
    },
    /// Give up on the task: no quorum within the replica cap.
    Fail,
}

/// Decides a task from its checked replicas (see the module docs for the rules).
pub fn decide(replicas: &[Replica], policy: &Policy) -> Verdict {
    let clusters = cluster(replicas, policy.min_cosine);
    let mut by_weight: Vec<&Cluster> = clusters.iter().collect();
    by_weight.sort_by_key(|c| std::cmp::Reverse(c.weight));
    let leader = by_weight.first().copied();
    let runner_up = by_weight.get(1).map_or(0, |c| c.weight);
    if let Some(c) = leader
        && c.weight > 0
        && c.weight > runner_up
        && c.members.len() >= policy.quorum()
    {
        return Verdict::Accept {
            quorum: c.members.clone(),
        };
    }
    let have = replicas.len();
    if have >= policy.max_replicas {
        return Verdict::Fail;
    }
    let leading = leader.map_or(0, |c| c.members.len());
    let lacking = policy.quorum().saturating_sub(leading).max(1);
    let extra = lacking.min(policy.max_replicas - have);
    Verdict::More {
        extra: u16::try_from(extra).unwrap_or(u16::MAX),
    }
}

/// The accepted output's blob: for embed the [`aggregate`] of the members; for generate the
/// output of the member with the greatest confidence (the first in ascending worker order on a
/// tie), since token sequences have no mean.
pub fn accepted_blob(replicas: &[Replica], members: &[usize]) -> Result<Vec<u8>> {
    let generated: Vec<(usize, &Vec<Generation>)> = members
        .iter()
        .filter_map(|&i| match replicas.get(i).map(|r| &r.checked) {
            Some(Checked::Generated(g)) => Some((i, g)),
            _ => None,
        })
        .collect();
    if generated.is_empty() {
        return aggregate(replicas, members)?.to_blob();
    }
    if generated.len() != members.len() {
        return Err(Error::Invalid("a quorum mixes output kinds".into()));
    }
    let mut best = generated[0];
    for &(i, g) in &generated[1..] {
        let key = |k: usize| {
            (
                replicas[k].confidence,
                std::cmp::Reverse(replicas[k].worker),
            )
        };
        if key(i) > key(best.0) {
            best = (i, g);
        }
    }
    Ok(encode_generations(best.1))
}

/// The accepted output: the confidence-weighted mean (seed 4.1.3) of the members' outputs, each
/// row re-normalised to unit length. Equal weights are used when every member's confidence is
/// zero (the caller never accepts such a cluster; this only keeps the function total).
pub fn aggregate(replicas: &[Replica], members: &[usize]) -> Result<Matrix> {
    let mut outputs: Vec<&Matrix> = Vec::with_capacity(members.len());
    let mut weights: Vec<f64> = Vec::with_capacity(members.len());
    for &i in members {
        let r = replicas
            .get(i)
            .ok_or_else(|| Error::Invalid(format!("no replica {i}")))?;
        let Checked::Output(m) = &r.checked else {
            return Err(Error::Invalid(format!("replica {i} has no valid output")));
        };
        outputs.push(m);
        weights.push(f64::from(r.confidence) / f64::from(FULL_CONFIDENCE));
    }
    let first = *outputs
        .first()
        .ok_or_else(|| Error::Invalid("nothing to aggregate".into()))?;
    if outputs
        .iter()
        .any(|m| m.rows != first.rows || m.cols != first.cols)
    {
        return Err(Error::Invalid("outputs differ in shape".into()));
    }
    if weights.iter().all(|&w| w == 0.0) {
        weights.iter_mut().for_each(|w| *w = 1.0);
    }
    let slices: Vec<&[f32]> = outputs.iter().map(|m| m.data.as_slice()).collect();
    let mut data = formulas::weighted_mean(&slices, &weights)?;
    for row in data.chunks_exact_mut(first.cols) {
        let norm = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 && norm.is_finite() {
            row.iter_mut()
                .for_each(|v| *v = (f64::from(*v) / norm) as f32);
        }
    }
    Ok(Matrix {
        data,
        rows: first.rows,
        cols: first.cols,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;

    /// A unit `[rows, 384]` matrix pointing along `axis` in every row, nudged by `eps`.
    pub(crate) fn embedding(rows: usize, axis: usize, eps: f32) -> Matrix {
        let mut data = vec![0f32; rows * EMBED_DIM];
        for r in 0..rows {
            data[r * EMBED_DIM + axis] = 1.0;
            data[r * EMBED_DIM + (axis + 1) % EMBED_DIM] = eps;
        }
        let mut m = Matrix {
            data,
            rows,
            cols: EMBED_DIM,
        };
        for row in m.data.chunks_exact_mut(EMBED_DIM) {
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            row.iter_mut().for_each(|v| *v /= n);
        }
        m
    }

    pub(crate) fn w(n: u8) -> Address {
        Address::repeat_byte(n)
    }

    pub(crate) fn replica(n: u8, p: ConfidenceBps, checked: Checked) -> Replica {
        Replica {
            worker: w(n),
            result_hash: B256::repeat_byte(n),
            signature: Bytes::from(vec![n; 65]),
            confidence: p,
            checked,
        }
    }

    fn out(axis: usize, eps: f32) -> Checked {
        Checked::Output(embedding(2, axis, eps))
    }

    #[test]
    fn quorum_and_cap_follow_redundancy() {
        for (r, q, cap) in [(1, 1, 2), (2, 2, 4), (3, 2, 6), (4, 3, 8), (5, 3, 10)] {
            let p = Policy::new(r);
            assert_eq!((p.quorum(), p.max_replicas), (q, cap), "redundancy {r}");
        }
    }

    /// Table: replicas → verdict, redundancy 3 unless said otherwise.
    #[test]
    fn decisions() {
        let honest = |n| replica(n, 9_000, out(0, 0.001 * f32::from(n)));
        let liar = |n| replica(n, 9_000, out(7, 0.0));
        let nan = |n| {
            let mut m = embedding(2, 0, 0.0);
            m.data[5] = f32::NAN;
            replica(n, 9_000, check_output(&m.to_blob().unwrap(), Some(2)))
        };
        let cases: Vec<(&str, u16, Vec<Replica>, Verdict)> = vec![
            (
                "3 honest",
                3,
                vec![honest(1), honest(2), honest(3)],
                Verdict::Accept {
                    quorum: vec![0, 1, 2],
                },
            ),
            (
                "one liar among 3",
                3,
                vec![honest(1), liar(2), honest(3)],
                Verdict::Accept { quorum: vec![0, 2] },
            ),
            (
                "one corrupted among 3 honest",
                3,
                vec![honest(1), honest(2), liar(4), honest(3)],
                Verdict::Accept {
                    quorum: vec![0, 1, 3],
                },
            ),
            (
                "2 disagreeing",
                2,
                vec![honest(1), liar(2)],
                Verdict::More { extra: 1 },
            ),
            (
                "2 agreeing, redundancy 2",
                2,
                vec![honest(1), honest(2)],
                Verdict::Accept { quorum: vec![0, 1] },
            ),
            (
                "NaN loses",
                3,
                vec![honest(1), nan(2), honest(3)],
                Verdict::Accept { quorum: vec![0, 2] },
            ),
            (
                "NaN and a liar: no quorum",
                3,
                vec![honest(1), nan(2), liar(3)],
                Verdict::More { extra: 1 },
            ),
            (
                "cap reached",
                2,
                vec![honest(1), liar(2), nan(3), replica(4, 9_000, out(9, 0.0))],
                Verdict::Fail,
            ),
            (
                "tie at the cap fails",
                2,
                vec![honest(1), honest(2), liar(3), liar(4)],
                Verdict::Fail,
            ),
            (
                "tie below cap",
                3,
                vec![honest(1), honest(2), liar(3), liar(4)],
                Verdict::More { extra: 1 },
            ),
            (
                "heavier cluster wins",
                3,
                vec![
                    replica(1, 9_000, out(0, 0.0)),
                    replica(2, 9_000, out(0, 0.0)),
                    replica(3, 2_000, out(7, 0.0)),
                    replica(4, 2_000, out(7, 0.0)),
                ],
                Verdict::Accept { quorum: vec![0, 1] },
            ),
            (
                "zero-weight cluster never wins",
                2,
                vec![replica(1, 0, out(0, 0.0)), replica(2, 0, out(0, 0.0))],
                Verdict::More { extra: 1 },
            ),
            (
                "unattributable loses",
                3,
                vec![
                    honest(1),
                    replica(2, 9_000, Checked::Unattributable("bad sig".into())),
                    replica(3, 9_000, Checked::Malformed("junk".into())),
                ],
                Verdict::More { extra: 1 },
            ),
            (
                "redundancy 1 trusts one",
                1,
                vec![honest(1)],
                Verdict::Accept { quorum: vec![0] },
            ),
            ("nothing in", 2, vec![], Verdict::More { extra: 2 }),
        ];
        for (name, r, reps, want) in cases {
            assert_eq!(decide(&reps, &Policy::new(r)), want, "{name}");
        }
    }

    #[test]
    fn clustering_ignores_submission_order() {
        let a = vec![
            replica(3, 9_000, out(0, 0.0)),
            replica(1, 9_000, out(7, 0.0)),
            replica(2, 9_000, out(0, 0.0)),
        ];
        let c = cluster(&a, EMBED_MIN_COSINE);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].members, vec![1]);
        assert_eq!(c[1].members, vec![2, 0]);
        assert_eq!(c[1].weight, 18_000);
    }

    #[test]
    fn aggregate_is_the_weighted_mean_renormalised() {
        let mut a = embedding(1, 0, 0.0);
        let mut b = embedding(1, 0, 0.0);
        a.data[1] = 0.02; // both rows slightly off the axis, in different directions
        b.data[2] = 0.02;
        let reps = vec![
            replica(1, 10_000, Checked::Output(a.clone())),
            replica(2, 5_000, Checked::Output(b.clone())),
        ];
        let m = aggregate(&reps, &[0, 1]).unwrap();
        let raw: Vec<f64> = (0..3)
            .map(|i| (f64::from(a.data[i]) * 1.0 + f64::from(b.data[i]) * 0.5) / 1.5)
            .collect();
        let n = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
        for (i, r) in raw.iter().enumerate() {
            assert!((f64::from(m.data[i]) - r / n).abs() < 1e-6, "{i}");
        }
        let norm: f32 = m.data.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6);
        assert!(aggregate(&reps, &[2]).is_err());
        let bad = vec![replica(1, 1, Checked::Malformed("x".into()))];
        assert!(aggregate(&bad, &[0]).is_err());
    }

    #[test]
    fn replica_checks() {
        let signer = PrivateKeySigner::random();
        let d = eip712::domain(31337, w(0xaa));
        let task = B256::repeat_byte(7);
        let good = embedding(3, 0, 0.0).to_blob().unwrap();
        let sign = |hash: B256| {
            let msg = TaskResult {
                taskHash: task,
                resultHash: hash,
                worker: signer.address(),
            };
            signer
                .sign_hash_sync(&eip712::digest(&msg, &d))
                .unwrap()
                .as_bytes()
                .to_vec()
        };
        let h = blob_hash(&good);
        let sig = sign(h);
        let check = |sig: &[u8], h, blob, rows| {
            check_replica(&d, task, signer.address(), h, sig, blob, rows)
        };
        assert!(matches!(
            check(&sig, h, Fetched::Bytes(&good), Some(3)),
            Checked::Output(_)
        ));
        assert!(matches!(
            check(&sig, h, Fetched::Bytes(&good), Some(4)),
            Checked::Malformed(_)
        ));
        assert!(matches!(
            check(&sig, h, Fetched::Missing, None),
            Checked::Unattributable(_)
        ));
        assert!(matches!(
            check(&sig, h, Fetched::Bytes(b"other"), None),
            Checked::Unattributable(_)
        ));
        assert!(matches!(
            check(&[1u8; 65], h, Fetched::Bytes(&good), None),
            Checked::Unattributable(_)
        ));
        assert!(matches!(
            check(&[], h, Fetched::Bytes(&good), None),
            Checked::Unattributable(_)
        ));
        // A signed, hash-matching blob of garbage is the worker's fault.
        let junk = b"not safetensors".to_vec();
        let hj = blob_hash(&junk);
        assert!(matches!(
            check(&sign(hj), hj, Fetched::Bytes(&junk), None),
            Checked::Malformed(_)
        ));
        let narrow = encode_matrix(EMBED_TENSOR, &[1.0; 6], 2, 3, &[]).unwrap();
        assert!(matches!(check_output(&narrow, None), Checked::Malformed(_)));
    }

    fn generation(ids: &[u32]) -> Generation {
        Generation {
            ids: ids.to_vec(),
            text: format!("{ids:?}"),
        }
    }

    /// A stand-in for the model's check: accepts ids that are all even.
    fn even(_: usize, _: &str, g: &Generation) -> Result<Option<String>> {
        Ok(g.ids
            .iter()
            .position(|t| t % 2 == 1)
            .map(|k| format!("token {k} is odd")))
    }

    #[test]
    fn generations_are_checked_then_any_two_valid_ones_agree() {
        let prompts = vec!["a".to_owned(), "b".to_owned()];
        let good = encode_generations(&[generation(&[2, 4]), generation(&[6])]);
        let Checked::Generated(g) = check_generations(&good, &prompts, even).unwrap() else {
            panic!("honest output rejected");
        };
        assert_eq!(g.len(), 2);
        // One substituted token, a missing output, non-canonical bytes: malformed (slashable).
        let forged = encode_generations(&[generation(&[2, 5]), generation(&[6])]);
        match check_generations(&forged, &prompts, even).unwrap() {
            Checked::Malformed(m) => assert!(m.contains("prompt 0: token 1 is odd"), "{m}"),
            c => panic!("{c:?}"),
        }
        let short = encode_generations(&[generation(&[2])]);
        assert!(matches!(
            check_generations(&short, &prompts, even).unwrap(),
            Checked::Malformed(_)
        ));
        let mut spaced = good.clone();
        spaced.insert(1, b' ');
        assert!(matches!(
            check_generations(&spaced, &prompts, even).unwrap(),
            Checked::Malformed(_)
        ));
        // The verifier's own failure is an error, not a verdict on the worker.
        assert!(
            check_generations(&good, &prompts, |_, _, _| Err(Error::Invalid("oom".into())))
                .is_err()
        );

        // Two valid replicas that part at a near-tie agree; a forged one does not join them.
        let a = Checked::Generated(vec![generation(&[2, 4]), generation(&[6])]);
        let b = Checked::Generated(vec![generation(&[2, 8]), generation(&[6])]);
        let reps = vec![
            replica(1, 9_000, a),
            replica(2, 9_500, b),
            replica(
                3,
                9_900,
                Checked::Malformed("prompt 0: token 1 is odd".into()),
            ),
        ];
        let policy = Policy::new(3);
        assert_eq!(
            decide(&reps, &policy),
            Verdict::Accept { quorum: vec![0, 1] }
        );
        // The accepted output is the most trusted member's, byte for byte.
        let blob = accepted_blob(&reps, &[0, 1]).unwrap();
        assert_eq!(
            decode_generations(&blob).unwrap(),
            vec![generation(&[2, 8]), generation(&[6])]
        );
        assert!(accepted_blob(&reps, &[0, 2]).is_err());
    }
}
