//! Deciding one task from its replicas: check, cluster, quorum, accept. Pure functions; what
//! differs between task kinds (the check, the comparator, the accepted output) is the kind's
//! [`TaskKind`].
//!
//! Rules (DESIGN.md, "The job, end to end" step 4):
//!
//! 1. **Check** every replica: a replica whose `TaskResult` signature does not recover to its
//!    worker, or whose blob is missing or does not hash to the signed result, is
//!    [`Checked::Unattributable`] ([`attributed`]): it loses, but nothing is held against the
//!    named worker (the coordinator could have forged or lost it). A correctly signed blob that
//!    the kind finds malformed or wrong ([`TaskKind::check`]: for embed not one finite 384-wide
//!    row per input text; for generate a token the model would not have produced) is
//!    [`Checked::Malformed`]: the worker signed garbage, which contradicts any quorum.
//! 2. **Cluster** the valid outputs ([`cluster`]) with the kind's comparator
//!    ([`TaskKind::agree`]), complete linkage: a replica joins the first cluster (in ascending
//!    worker order) with *every* member of which it agrees, else starts its own. Every pair
//!    inside a cluster therefore agrees; the result does not depend on submission order.
//! 3. **Quorum** ([`Policy::quorum`]): a majority of the job's redundancy, ⌊r/2⌋ + 1 (so at
//!    least 2 when r ≥ 2; r = 1 trusts a single replica, which is what the requester asked for).
//! 4. **Decide** ([`decide`]): the cluster with the greatest confidence weight Σ P_j wins if it
//!    is strictly heavier than every other cluster, has a positive weight and reaches quorum:
//!    [`Verdict::Accept`]. Otherwise, while fewer than [`Policy::max_replicas`] replicas are in
//!    (default 2 × redundancy, at least redundancy + 1), [`Verdict::More`] asks for the replicas
//!    the leading cluster lacks (at least one); beyond that, [`Verdict::Fail`].
//! 5. **Accept** ([`accepted_blob`]): the kind makes the accepted output of the winning cluster
//!    ([`TaskKind::accept`]; for embed the confidence-weighted mean of seed 4.1.3).

use alloy::primitives::{Address, B256, Bytes};
use alloy::sol_types::Eip712Domain;
use gleaner_kinds::{Checked, Member, TaskKind};
use gleaner_protocol::blob::blob_hash;
use gleaner_protocol::eip712;
use gleaner_protocol::formulas::ConfidenceBps;

use crate::{Error, Result};

/// The blob behind a replica's result hash, as fetched.
#[derive(Debug, Clone, Copy)]
pub enum Fetched<'a> {
    /// The blob's bytes.
    Bytes(&'a [u8]),
    /// The coordinator does not have it.
    Missing,
    /// The coordinator served bytes that do not hash to the signed result (the client refused
    /// them): not the worker's doing.
    Corrupt,
}

/// One replica, checked, with its worker's confidence at decision time.
#[derive(Debug, Clone)]
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

/// Whether `signature` binds `worker` to `result_hash` for `task_hash`: an EIP-712
/// `TaskResult{task_hash, result_hash, worker}` signature, or a batch member's
/// ([`eip712::ResultSignature`]).
///
/// Signers recovered before are remembered by digest and signature (a bounded map): every
/// member of a batch carries the batch's one signature over one digest, so a batch of 64
/// results recovers once instead of 64 times (signer recovery was about a third of the
/// verifier's CPU while it decided a 16-worker bench job). The answer is the same either way:
/// recovery is a function of the digest and the signature.
pub fn signature_valid(
    domain: &Eip712Domain,
    task_hash: B256,
    worker: Address,
    result_hash: B256,
    signature: &[u8],
) -> bool {
    let Ok(decoded) = eip712::ResultSignature::decode(signature) else {
        return false;
    };
    let (digest, signature) = decoded.signed(domain, task_hash, result_hash, worker);
    let key = (digest, signature.as_bytes());
    if let Some(signer) = RECOVERED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
    {
        return *signer == worker;
    }
    let Ok(signer) = signature.recover_address_from_prehash(&digest) else {
        return false;
    };
    let mut recovered = RECOVERED.lock().unwrap_or_else(|p| p.into_inner());
    if recovered.len() >= RECOVERED_MAX {
        recovered.clear();
    }
    recovered.insert(key, signer);
    signer == worker
}

/// How many recovered signers [`signature_valid`] remembers before it starts afresh.
const RECOVERED_MAX: usize = 4096;

/// Signers by the digest and signature they were recovered from.
type Signers = std::collections::HashMap<(B256, [u8; 65]), Address>;

/// Recovered signers ([`signature_valid`]).
static RECOVERED: std::sync::LazyLock<std::sync::Mutex<Signers>> =
    std::sync::LazyLock::new(Default::default);

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
        Fetched::Corrupt => {
            return Err(Checked::Unattributable(
                "the coordinator served bytes that do not hash to the signed result".into(),
            ));
        }
        Fetched::Bytes(b) => b,
    };
    if blob_hash(bytes) != result_hash {
        return Err(Checked::Unattributable(
            "blob does not hash to the signed result".into(),
        ));
    }
    Ok(bytes)
}

/// How a job's tasks are decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Replicas per task the requester paid for.
    pub redundancy: u16,
    /// Most replicas to look at before giving up on a task.
    pub max_replicas: usize,
}

impl Policy {
    /// The default policy for a job: cap 2 × redundancy (at least redundancy + 1).
    pub fn new(redundancy: u16) -> Self {
        let r = usize::from(redundancy.max(1));
        Self {
            redundancy: redundancy.max(1),
            max_replicas: (2 * r).max(r + 1),
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

/// Clusters the valid outputs with the kind's comparator (complete linkage, ascending worker
/// order). Malformed and unattributable replicas are in no cluster: each is its own losing
/// singleton.
pub fn cluster(replicas: &[Replica], kind: &dyn TaskKind) -> Vec<Cluster> {
    let mut order: Vec<usize> = (0..replicas.len())
        .filter(|&i| replicas[i].checked.output().is_some())
        .collect();
    order.sort_by_key(|&i| (replicas[i].worker, i));
    let mut clusters: Vec<Cluster> = Vec::new();
    for i in order {
        let home = clusters.iter().position(|c| {
            c.members
                .iter()
                .all(|&j| agree(kind, &replicas[i], &replicas[j]))
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

fn agree(kind: &dyn TaskKind, a: &Replica, b: &Replica) -> bool {
    match (a.checked.output(), b.checked.output()) {
        (Some(x), Some(y)) => kind.agree(x, y),
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
pub fn decide(replicas: &[Replica], policy: &Policy, kind: &dyn TaskKind) -> Verdict {
    let clusters = cluster(replicas, kind);
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

/// What a job with spot checks does with a task's lone first replica
/// ([`gleaner_protocol::replication`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Single {
    /// Hold it: accepted when the rest of the job is decided, if its worker is still trusted.
    Provisional,
    /// Ask for this many more replicas now (the task is then decided as under full replication).
    Replicate {
        /// Extra replicas (≥ 1 when the redundancy is above 1).
        extra: u16,
    },
}

/// The lone first replica of a task in a job with spot checks: held provisionally when it is
/// valid, its worker is `trusted` and the task was not drawn for a check (`checked`); otherwise
/// the job's other `redundancy − 1` replicas are asked for.
pub fn single(replica: &Replica, redundancy: u16, trusted: bool, checked: bool) -> Single {
    let wanted = gleaner_protocol::replication::replicas_wanted(redundancy, trusted, checked);
    if replica.checked.output().is_some() && wanted == 1 {
        Single::Provisional
    } else {
        Single::Replicate {
            extra: redundancy.max(2) - 1,
        }
    }
}

/// The final verdict on a provisional replica once the rest of its job is decided: accepted alone
/// when its worker is still trusted, else the job's other replicas are asked for.
pub fn provisional_verdict(still_trusted: bool, redundancy: u16) -> Verdict {
    if still_trusted {
        Verdict::Accept { quorum: vec![0] }
    } else {
        Verdict::More {
            extra: redundancy.max(2) - 1,
        }
    }
}

/// The accepted output's blob: what the kind makes of the members' outputs
/// ([`TaskKind::accept`]), members in ascending worker order.
pub fn accepted_blob(
    replicas: &[Replica],
    members: &[usize],
    kind: &dyn TaskKind,
) -> Result<Vec<u8>> {
    let members = members
        .iter()
        .map(|&i| {
            let r = replicas
                .get(i)
                .ok_or_else(|| Error::Invalid(format!("no replica {i}")))?;
            let output = r
                .checked
                .output()
                .ok_or_else(|| Error::Invalid(format!("replica {i} has no valid output")))?;
            Ok(Member {
                worker: r.worker,
                confidence: r.confidence,
                output,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(kind.accept(&members)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;
    use gleaner_kinds::{EMBED_TENSOR, EmbedKind, GenerateKind, Matrix, Output, TaskRef};
    use gleaner_models::{CpuKind, EMBED_DIM, MiniLmFiles, SelectedDevice};
    use gleaner_protocol::blob::{Generation, decode_generations, encode_matrix, encode_texts};
    use gleaner_protocol::eip712::TaskResult;

    /// The embed kind; nothing here loads its model.
    pub(crate) fn embed() -> EmbedKind {
        EmbedKind::new(
            MiniLmFiles::in_dir(std::path::Path::new("/nonexistent")),
            SelectedDevice::cpu(CpuKind::Flex, "test"),
        )
    }

    /// A unit `[rows, 384]` matrix pointing along `axis` in every row, nudged by `eps`.
    pub(crate) fn embedding(rows: usize, axis: usize, eps: f32) -> Matrix {
        let mut data = vec![0f32; rows * EMBED_DIM];
        for r in 0..rows {
            data[r * EMBED_DIM + axis] = 1.0;
            data[r * EMBED_DIM + (axis + 1) % EMBED_DIM] = eps;
        }
        for row in data.chunks_exact_mut(EMBED_DIM) {
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            row.iter_mut().for_each(|v| *v /= n);
        }
        Matrix {
            data,
            rows,
            cols: EMBED_DIM,
        }
    }

    /// A valid embed output.
    pub(crate) fn valid(m: Matrix) -> Checked {
        Checked::Valid(Output::new(m))
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
        valid(embedding(2, axis, eps))
    }

    /// What the embed kind's check makes of `m` as the output for 2 input texts.
    fn checked(m: &Matrix) -> Checked {
        let kind = embed();
        let model = kind.model().unwrap();
        let params = gleaner_protocol::task::TaskParams {
            batch: 2,
            max_tokens: 128,
            sampling: None,
            train: None,
        };
        let task = TaskRef {
            job_id: alloy::primitives::U256::from(1),
            index: 0,
            model: &model,
            params: &params,
        };
        let input = encode_texts(&["a", "b"]).unwrap();
        kind.check(&task, &input, &m.to_blob().unwrap()).unwrap()
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
            replica(n, 9_000, checked(&m))
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
            assert_eq!(decide(&reps, &Policy::new(r), &embed()), want, "{name}");
        }
    }

    #[test]
    fn clustering_ignores_submission_order() {
        let a = vec![
            replica(3, 9_000, out(0, 0.0)),
            replica(1, 9_000, out(7, 0.0)),
            replica(2, 9_000, out(0, 0.0)),
        ];
        let c = cluster(&a, &embed());
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].members, vec![1]);
        assert_eq!(c[1].members, vec![2, 0]);
        assert_eq!(c[1].weight, 18_000);
    }

    #[test]
    fn the_accepted_embedding_is_the_weighted_mean_renormalised() {
        let mut a = embedding(1, 0, 0.0);
        let mut b = embedding(1, 0, 0.0);
        a.data[1] = 0.02; // both rows slightly off the axis, in different directions
        b.data[2] = 0.02;
        let reps = vec![
            replica(1, 10_000, valid(a.clone())),
            replica(2, 5_000, valid(b.clone())),
        ];
        let blob = accepted_blob(&reps, &[0, 1], &embed()).unwrap();
        let m = Matrix::from_blob(&blob, Some(1)).unwrap();
        let raw: Vec<f64> = (0..3)
            .map(|i| (f64::from(a.data[i]) * 1.0 + f64::from(b.data[i]) * 0.5) / 1.5)
            .collect();
        let n = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
        for (i, r) in raw.iter().enumerate() {
            assert!((f64::from(m.data[i]) - r / n).abs() < 1e-6, "{i}");
        }
        let norm: f32 = m.data.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6);
        assert!(accepted_blob(&reps, &[2], &embed()).is_err());
        let bad = vec![replica(1, 1, Checked::Malformed("x".into()))];
        assert!(accepted_blob(&bad, &[0], &embed()).is_err());
    }

    #[test]
    fn replica_checks() {
        let signer = PrivateKeySigner::random();
        let d = eip712::domain(31337, w(0xaa));
        let task = B256::repeat_byte(7);
        let good = embedding(2, 0, 0.0).to_blob().unwrap();
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
        let check = |sig: &[u8], h, blob| attributed(&d, task, signer.address(), h, sig, blob);
        assert_eq!(check(&sig, h, Fetched::Bytes(&good)).unwrap(), &good[..]);
        let unattributable =
            |r: std::result::Result<&[u8], Checked>| matches!(r, Err(Checked::Unattributable(_)));
        assert!(unattributable(check(&sig, h, Fetched::Missing)));
        assert!(unattributable(check(&sig, h, Fetched::Corrupt)));
        assert!(unattributable(check(&sig, h, Fetched::Bytes(b"other"))));
        assert!(unattributable(check(&[1u8; 65], h, Fetched::Bytes(&good))));
        assert!(unattributable(check(&[], h, Fetched::Bytes(&good))));
        // A signed, hash-matching blob of garbage is attributed: the kind then finds it malformed.
        let junk = b"not safetensors".to_vec();
        let hj = blob_hash(&junk);
        assert!(check(&sign(hj), hj, Fetched::Bytes(&junk)).is_ok());
        let narrow = encode_matrix(EMBED_TENSOR, &[1.0; 6], 2, 3, &[]).unwrap();
        assert!(Matrix::from_blob(&narrow, None).is_err());
    }

    /// Every member of a signed batch is attributed to its signer, and to nobody else, however
    /// often its batch's signer was recovered before (the remembered signers answer the
    /// repeats): another worker, result or task, or the batch signature on a result outside the
    /// batch, does not verify, before or after the batch's members have.
    #[test]
    fn batch_members_verify_once_remembered() {
        let signer = PrivateKeySigner::random();
        let d = eip712::domain(31337, w(0xab));
        let results: Vec<(B256, B256)> = (1..=5u8)
            .map(|i| (B256::repeat_byte(i), B256::repeat_byte(100 + i)))
            .collect();
        let batch = eip712::ResultBatch::new(signer.address(), &results).unwrap();
        let sig = signer
            .sign_hash_sync(&eip712::digest(batch.message(), &d))
            .unwrap();
        let member = |i: usize| batch.member(i, sig).unwrap().encode();
        let valid =
            |i: usize, task, result, worker| signature_valid(&d, task, worker, result, &member(i));
        for round in 0..2 {
            for (i, &(task, result)) in results.iter().enumerate() {
                assert!(
                    valid(i, task, result, signer.address()),
                    "{round}: member {i}"
                );
                assert!(!valid(i, task, result, w(0xcd)), "{round}: another worker");
                assert!(
                    !valid(i, task, B256::ZERO, signer.address()),
                    "{round}: another result"
                );
                let (other_task, _) = results[(i + 1) % results.len()];
                assert!(
                    !valid(i, other_task, result, signer.address()),
                    "{round}: another task"
                );
            }
        }
    }

    fn generation(ids: &[u32]) -> Generation {
        Generation {
            ids: ids.to_vec(),
            text: format!("{ids:?}"),
        }
    }

    #[test]
    fn any_two_valid_generations_agree_and_the_most_trusted_is_accepted() {
        let kind = GenerateKind::new(
            "/nonexistent.gguf".into(),
            SelectedDevice::cpu(CpuKind::Flex, "test"),
            gleaner_models::DecoderChoice::Auto,
        );
        // Two valid replicas that part at a near-tie agree; a forged one does not join them.
        let a = Checked::Valid(Output::new(vec![generation(&[2, 4]), generation(&[6])]));
        let b = Checked::Valid(Output::new(vec![generation(&[2, 8]), generation(&[6])]));
        let reps = vec![
            replica(1, 9_000, a),
            replica(2, 9_500, b),
            replica(
                3,
                9_900,
                Checked::Malformed("prompt 0: token 1 is odd".into()),
            ),
        ];
        assert_eq!(
            decide(&reps, &Policy::new(3), &kind),
            Verdict::Accept { quorum: vec![0, 1] }
        );
        // The accepted output is the most trusted member's, byte for byte.
        let blob = accepted_blob(&reps, &[0, 1], &kind).unwrap();
        assert_eq!(
            decode_generations(&blob).unwrap(),
            vec![generation(&[2, 8]), generation(&[6])]
        );
        assert!(accepted_blob(&reps, &[0, 2], &kind).is_err());
        // Outputs of another kind never agree with these.
        assert!(cluster(&[reps[0].clone(), replica(4, 1, out(0, 0.0))], &kind).len() == 2);
    }
}
