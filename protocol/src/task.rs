//! Job manifests and task specs, their canonical encodings and hashes.
//!
//! - A **task spec** is `(jobId, index, modelHash, inputHash, paramsHash)`. Its canonical encoding
//!   is Solidity's `abi.encode` of that tuple (so a contract could recompute it), and the task hash
//!   is `keccak256` of it. The task Merkle root ([`crate::merkle`]) commits to all task hashes.
//! - A **job manifest** is JSON. Its canonical encoding is the compact serialisation of
//!   [`JobManifest`] with fields in declared order, no white space, hashes as 0x-prefixed
//!   lowercase hex; `specHash = keccak256(canonical bytes)` is what `createJob` escrows against.
//!   [`JobManifest::from_canonical`] refuses bytes that are not canonical, so two parties can never
//!   disagree on a hash of the "same" manifest.

use alloy::primitives::{B256, U256, keccak256};
use alloy::sol_types::SolValue;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::replication::SpotChecks;
use crate::{Error, Result};

/// Manifest format version.
pub const MANIFEST_VERSION: u32 = 1;

/// The name of a task kind (`embed`, `generate`, ...) in manifests, leases and capabilities.
///
/// Kinds are open: a kind is whatever a `TaskKind` implementation registers (see the
/// `gleaner-kinds` crate); the coordinator only matches names. A name is 1 to 32 characters of
/// `a-z`, `0-9`, `-` and `_`, starting with a letter, so it is the same string everywhere
/// (JSON, SQL, logs). Parsing (and deserialising) refuses anything else.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct KindId(Cow<'static, str>);

impl KindId {
    /// Sentence embeddings (all-MiniLM-L6-v2): f32 `[n, 384]`.
    pub const EMBED: Self = Self(Cow::Borrowed("embed"));
    /// Text generation (SmolLM2-135M-Instruct): token ids and text.
    pub const GENERATE: Self = Self(Cow::Borrowed("generate"));
    /// One training step of a small GPT: a gradient and a loss per data shard.
    pub const TRAIN: Self = Self(Cow::Borrowed("train"));

    /// A kind name known at compile time; panics (at compile time in a `const`) when invalid.
    pub const fn from_static(name: &'static str) -> Self {
        assert!(valid_kind_name(name.as_bytes()), "invalid kind name");
        Self(Cow::Borrowed(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const fn valid_kind_name(b: &[u8]) -> bool {
    if b.is_empty() || b.len() > 32 || !b[0].is_ascii_lowercase() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

impl std::str::FromStr for KindId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if !valid_kind_name(s.as_bytes()) {
            return Err(Error::Invalid(format!(
                "task kind {s:?}: expected 1-32 characters of a-z, 0-9, '-', '_', starting with a letter"
            )));
        }
        Ok(Self(Cow::Owned(s.to_owned())))
    }
}

impl<'de> Deserialize<'de> for KindId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for KindId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The model a job runs, pinned by the sha256 of its weights file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    /// Model id, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub id: String,
    /// sha256 of the weights file.
    pub weights_sha256: B256,
}

/// One task: an input blob and its cost in deterministic work units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInput {
    /// sha256 of the input blob in the coordinator's content-addressed store.
    pub input_hash: B256,
    /// Work units (e.g. tokens × layers), the `cost_t` of the reward formula.
    pub cost: u64,
}

/// A job as the requester escrows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobManifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// Task kind.
    pub kind: KindId,
    /// Model and weights hash.
    pub model: ModelRef,
    /// Kind-specific parameters, hashed into every task spec (`paramsHash`).
    pub params: TaskParams,
    /// Spot checks instead of full replication: a trusted worker's task is computed once,
    /// except for tasks drawn for a check ([`crate::replication`]). Absent (and then absent from
    /// the canonical JSON): every task is computed `redundancy` times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_checks: Option<SpotChecks>,
    /// Tasks in order.
    pub tasks: Vec<TaskInput>,
}

/// Kind-specific parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskParams {
    /// Inputs per task (texts for embed, prompts for generate); for embed also the texts per
    /// forward pass, which does not change results beyond float rounding.
    pub batch: u32,
    /// Embed: longest input in tokens (longer inputs are truncated). Generate: most new tokens
    /// per prompt.
    pub max_tokens: u32,
    /// Generate only: seeded sampling; absent means greedy decoding. Absent from the canonical
    /// JSON when `None`, so embed manifests are unchanged by its existence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingParams>,
    /// Train only: the model's shape, the step and the learning rate (`batch` is then the
    /// sequences per task and `max_tokens` their length). Absent from the canonical JSON when
    /// `None`, so other kinds' manifests are unchanged by its existence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainParams>,
}

/// What a `train` step pins besides its checkpoint (the model hash) and data (the inputs): the
/// GPT's shape, which step of the run this is, and the SGD learning rate the step's results
/// are applied with. Integers, so the canonical JSON never depends on how a float prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// Vocabulary size (256: bytes).
    pub vocab: u32,
    /// Model width.
    pub dim: u32,
    /// Transformer blocks.
    pub layers: u32,
    /// Attention heads (dividing `dim`).
    pub heads: u32,
    /// Step of the run, from 0.
    pub step: u32,
    /// Learning rate × 10⁶.
    pub lr_micro: u32,
}

impl TrainParams {
    /// The learning rate.
    pub fn lr(&self) -> f32 {
        self.lr_micro as f32 / 1e6
    }
}

/// Seeded sampling for a generate job, in integers so that the canonical JSON (and so the spec
/// hash) never depends on how a float is printed. Prompt `p` of task `t` samples with the seed
/// [`crate::sampling::prompt_seed`]`(seed, t, p)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    /// Temperature × 1000 (e.g. 800 for 0.8); positive.
    pub temperature_milli: u32,
    /// Nucleus mass × 1000, in 1..=1000.
    pub top_p_milli: u32,
    /// The job's seed.
    pub seed: u64,
}

impl SamplingParams {
    /// The temperature.
    pub fn temperature(&self) -> f64 {
        f64::from(self.temperature_milli) / 1000.0
    }

    /// The nucleus mass.
    pub fn top_p(&self) -> f64 {
        f64::from(self.top_p_milli) / 1000.0
    }
}

impl JobManifest {
    /// Checks the rules every manifest obeys.
    pub fn validate(&self) -> Result<()> {
        if self.version != MANIFEST_VERSION {
            return Err(Error::Invalid(format!(
                "manifest version {} (expected 1)",
                self.version
            )));
        }
        if self.tasks.is_empty() {
            return Err(Error::Invalid("a job needs at least one task".into()));
        }
        if self.tasks.len() > u32::MAX as usize {
            return Err(Error::Invalid("too many tasks".into()));
        }
        if self.model.id.is_empty() {
            return Err(Error::Invalid("model id is empty".into()));
        }
        if let Some(i) = self.tasks.iter().position(|t| t.cost == 0) {
            return Err(Error::Invalid(format!("task {i} has zero cost")));
        }
        if self.params.batch == 0 || self.params.max_tokens == 0 {
            return Err(Error::Invalid(
                "batch and max_tokens must be positive".into(),
            ));
        }
        if let Some(spot) = &self.spot_checks {
            spot.validate()?;
        }
        if let Some(t) = self.params.train
            && (t.vocab == 0
                || t.dim == 0
                || t.layers == 0
                || t.heads == 0
                || t.dim % t.heads != 0
                || t.lr_micro == 0)
        {
            return Err(Error::Invalid(
                "train needs a positive vocab, dim, layers, heads and lr, with heads dividing dim"
                    .into(),
            ));
        }
        // Whether a kind takes sampling at all is the kind's rule (`TaskKind::validate`).
        if let Some(s) = self.params.sampling
            && (s.temperature_milli == 0 || !(1..=1000).contains(&s.top_p_milli))
        {
            return Err(Error::Invalid(
                "sampling needs temperature_milli > 0 and top_p_milli in 1..=1000".into(),
            ));
        }
        Ok(())
    }

    /// The canonical bytes (compact JSON in declared field order).
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("manifest serialises")
    }

    /// `specHash`: keccak256 of the canonical bytes.
    pub fn spec_hash(&self) -> B256 {
        keccak256(self.canonical())
    }

    /// Parses and validates canonical bytes; anything else (extra spaces, reordered or unknown
    /// fields, uppercase hex) is refused.
    pub fn from_canonical(bytes: &[u8]) -> Result<Self> {
        let m: Self = serde_json::from_slice(bytes).map_err(|e| {
            Error::Invalid(format!("manifest is not valid JSON of the schema: {e}"))
        })?;
        if m.canonical() != bytes {
            return Err(Error::Invalid("manifest is not in canonical form".into()));
        }
        m.validate()?;
        Ok(m)
    }

    /// keccak256 of the canonical params JSON: the `paramsHash` of every task.
    pub fn params_hash(&self) -> B256 {
        keccak256(serde_json::to_vec(&self.params).expect("params serialise"))
    }

    /// The spec of task `index` of on-chain job `job_id`.
    pub fn task_spec(&self, job_id: U256, index: u32) -> Option<TaskSpec> {
        let t = self.tasks.get(index as usize)?;
        Some(TaskSpec {
            job_id,
            index,
            model_hash: self.model.weights_sha256,
            input_hash: t.input_hash,
            params_hash: self.params_hash(),
        })
    }

    /// Every task hash, in order.
    pub fn task_hashes(&self, job_id: U256) -> Vec<B256> {
        (0..self.tasks.len() as u32)
            .filter_map(|i| self.task_spec(job_id, i))
            .map(|s| s.hash())
            .collect()
    }
}

/// What one task computes, bound to its on-chain job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// On-chain job id.
    pub job_id: U256,
    /// Task index within the job.
    pub index: u32,
    /// sha256 of the model weights.
    pub model_hash: B256,
    /// sha256 of the input blob.
    pub input_hash: B256,
    /// keccak256 of the canonical params.
    pub params_hash: B256,
}

impl TaskSpec {
    /// Canonical encoding: `abi.encode(jobId, uint32 index, modelHash, inputHash, paramsHash)`.
    pub fn encode(&self) -> Vec<u8> {
        (
            self.job_id,
            self.index,
            self.model_hash,
            self.input_hash,
            self.params_hash,
        )
            .abi_encode()
    }

    /// The task hash: keccak256 of [`TaskSpec::encode`].
    pub fn hash(&self) -> B256 {
        keccak256(self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> JobManifest {
        JobManifest {
            version: 1,
            kind: KindId::EMBED,
            model: ModelRef {
                id: "all-MiniLM-L6-v2".into(),
                weights_sha256: B256::repeat_byte(0xab),
            },
            params: TaskParams {
                batch: 32,
                max_tokens: 256,
                sampling: None,
                train: None,
            },
            spot_checks: None,
            tasks: (0..3u8)
                .map(|i| TaskInput {
                    input_hash: B256::repeat_byte(i),
                    cost: 10 + u64::from(i),
                })
                .collect(),
        }
    }

    #[test]
    fn canonical_round_trip() {
        let m = manifest();
        let bytes = m.canonical();
        assert_eq!(JobManifest::from_canonical(&bytes).unwrap(), m);
        assert_eq!(m.spec_hash(), keccak256(&bytes));
    }

    #[test]
    fn non_canonical_bytes_are_refused() {
        let bytes = m_str();
        let spaced = bytes.replace(",", ", ");
        assert!(JobManifest::from_canonical(spaced.as_bytes()).is_err());
        assert!(bytes.contains("abab"));
        let upper = bytes.replace("abab", "ABAB");
        assert!(JobManifest::from_canonical(upper.as_bytes()).is_err());
        let extra = bytes.replacen('{', "{\"extra\":1,", 1);
        assert!(JobManifest::from_canonical(extra.as_bytes()).is_err());
    }

    fn m_str() -> String {
        String::from_utf8(manifest().canonical()).unwrap()
    }

    #[test]
    fn invalid_manifests_are_refused() {
        let mut m = manifest();
        m.tasks.clear();
        assert!(JobManifest::from_canonical(&m.canonical()).is_err());
        let mut m = manifest();
        m.tasks[1].cost = 0;
        assert!(m.validate().is_err());
        let mut m = manifest();
        m.version = 2;
        assert!(m.validate().is_err());
    }

    #[test]
    fn sampling_is_canonical_and_checked() {
        // Greedy manifests carry no `sampling` key at all.
        assert!(!m_str().contains("sampling"));
        let mut m = manifest();
        m.kind = KindId::GENERATE;
        m.params.sampling = Some(SamplingParams {
            temperature_milli: 800,
            top_p_milli: 900,
            seed: u64::MAX,
        });
        let bytes = m.canonical();
        assert!(String::from_utf8_lossy(&bytes).contains(
            r#""sampling":{"temperature_milli":800,"top_p_milli":900,"seed":18446744073709551615}"#
        ));
        assert_eq!(JobManifest::from_canonical(&bytes).unwrap(), m);
        assert_ne!(m.params_hash(), manifest().params_hash());
        let s = m.params.sampling.unwrap();
        assert_eq!((s.temperature(), s.top_p()), (0.8, 0.9));
        // An explicit null is not canonical.
        let null = String::from_utf8(manifest().canonical())
            .unwrap()
            .replace(r#""max_tokens":256"#, r#""max_tokens":256,"sampling":null"#);
        assert!(JobManifest::from_canonical(null.as_bytes()).is_err());
        for bad in [(0, 900), (800, 0), (800, 1001)] {
            let mut b = m.clone();
            b.params.sampling = Some(SamplingParams {
                temperature_milli: bad.0,
                top_p_milli: bad.1,
                seed: 1,
            });
            assert!(b.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kind_names_are_checked_and_round_trip() {
        for good in ["embed", "generate", "reverse-bytes", "train_gpt2"] {
            let k: KindId = good.parse().unwrap();
            assert_eq!(k.as_str(), good);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{good}\""));
            assert_eq!(serde_json::from_str::<KindId>(&json).unwrap(), k);
        }
        for bad in [
            "",
            "Embed",
            "1st",
            "a b",
            "x'; DROP TABLE jobs",
            &"a".repeat(33),
        ] {
            assert!(bad.parse::<KindId>().is_err(), "{bad:?}");
            assert!(
                serde_json::from_str::<KindId>(&format!("{bad:?}")).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(KindId::EMBED, "embed".parse().unwrap());
        assert_eq!(KindId::from_static("generate"), KindId::GENERATE);
    }

    #[test]
    fn task_hash_binds_every_field() {
        let m = manifest();
        let base = m.task_spec(U256::from(1), 1).unwrap();
        let variants = [
            TaskSpec {
                job_id: U256::from(2),
                ..base
            },
            TaskSpec { index: 2, ..base },
            TaskSpec {
                model_hash: B256::ZERO,
                ..base
            },
            TaskSpec {
                input_hash: B256::ZERO,
                ..base
            },
            TaskSpec {
                params_hash: B256::ZERO,
                ..base
            },
        ];
        for v in variants {
            assert_ne!(v.hash(), base.hash(), "{v:?}");
        }
        assert_eq!(base.encode().len(), 5 * 32);
        assert_eq!(m.task_hashes(U256::from(1)).len(), 3);
        assert!(m.task_spec(U256::from(1), 3).is_none());
    }
}
