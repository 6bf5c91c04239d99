//! `embed`: sentence embeddings with all-MiniLM-L6-v2.
//!
//! - Input blob: texts ([`encode_texts`]), `batch` per task; units of work = the blob's bytes.
//! - Output blob: one safetensors tensor [`EMBED_TENSOR`] of f32 `[texts, 384]`, rows
//!   L2-normalised.
//! - Check: the format (one finite 384-wide row per input text); the verifier cannot tell a
//!   right embedding from a wrong one without recomputing, so replicas are compared.
//! - Comparator: every row's cosine ≥ [`EMBED_MIN_COSINE`] (calibrated across backends,
//!   `models/src/compare.rs`).
//! - Accepted output: the confidence-weighted mean of the cluster (seed 4.1.3), each row
//!   re-normalised to unit length (a mean of unit vectors is slightly shorter; cosines are
//!   unchanged).
//! - Results: `.safetensors` writes one `[n, 384]` tensor, anything else JSON lines of vectors.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use alloy::primitives::B256;
use gleaner_models::{
    EMBED_DIM, EMBED_MIN_COSINE, Embedder, MAX_TOKENS, MINILM_WEIGHTS_SHA256, MiniLmFiles,
    SelectedDevice, compare_embeddings,
};
use gleaner_protocol::blob::{decode_matrix, decode_texts, encode_matrix, encode_texts};
use gleaner_protocol::formulas;
use gleaner_protocol::task::{KindId, ModelRef, TaskParams};

use crate::lines::read_lines;
use crate::{
    Checked, Error, Member, Outcome, Output, Result, SplitOptions, TaskBlob, TaskKind, TaskRef,
    Written, create, io_err, outputs_as,
};

/// Name of the tensor in an embed output blob.
pub const EMBED_TENSOR: &str = "embeddings";

/// The largest task batch whose padded shapes a GPU miner warms up at start (the default
/// `batch` of embed jobs is 32; larger batches compile their shapes on first use).
const WARM_BATCH: usize = 32;

/// Approximate FLOPs per token of all-MiniLM-L6-v2's encoder: 2 × the 10.6M weights of its six
/// layers (4 · 384² attention + 2 · 384 · 1536 feed-forward per layer); attention scores add a
/// few percent at these lengths and are left out.
const FLOPS_PER_TOKEN: f64 = 2.0 * 6.0 * (4.0 * 384.0 * 384.0 + 2.0 * 384.0 * 1536.0);

/// What the self-benchmark embeds.
const PROBE_TEXTS: [&str; 8] = [
    "Idle GPUs can do useful work for foundation models.",
    "The verifier compares redundant results before anyone is paid.",
    "Workers stake tokens and lose them when they cheat.",
    "A requester escrows the budget of a job on-chain.",
    "Embeddings of similar sentences point in similar directions.",
    "Auditors rebuild every payout from the chain's events.",
    "The coordinator splits a job into tasks and leases them.",
    "Each task runs on several machines for redundancy.",
];

/// A row-major `[rows, cols]` f32 matrix, every value finite: a decoded embed output.
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

    /// Reads an embed output blob: `[rows, 384]` F32, every value finite, `expected_rows` rows
    /// when given; otherwise the reason it is malformed.
    pub fn from_blob(bytes: &[u8], expected_rows: Option<usize>) -> Result<Self, String> {
        let (data, rows, cols) = decode_matrix(EMBED_TENSOR, bytes).map_err(|e| e.to_string())?;
        if cols != EMBED_DIM {
            return Err(format!("{cols} columns, expected {EMBED_DIM}"));
        }
        if rows == 0 {
            return Err("no rows".into());
        }
        if let Some(n) = expected_rows.filter(|&n| n != rows) {
            return Err(format!("{rows} rows for {n} input texts"));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(format!("non-finite value at row {}", i / cols));
        }
        Ok(Self { data, rows, cols })
    }

    /// The confidence-weighted mean (seed 4.1.3) of `outputs`, each row re-normalised to unit
    /// length. Equal weights are used when every weight is zero (the verifier never accepts
    /// such a cluster; this only keeps the function total).
    pub fn weighted_mean(outputs: &[&Self], confidences: &[u16]) -> Result<Self> {
        let first = *outputs
            .first()
            .ok_or_else(|| Error::Invalid("nothing to aggregate".into()))?;
        if outputs.len() != confidences.len() {
            return Err(Error::Invalid("one confidence per output".into()));
        }
        if outputs
            .iter()
            .any(|m| m.rows != first.rows || m.cols != first.cols)
        {
            return Err(Error::Invalid("outputs differ in shape".into()));
        }
        let weights = formulas::confidence_weights(confidences.iter().copied());
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
        Ok(Self {
            data,
            rows: first.rows,
            cols: first.cols,
        })
    }
}

/// The `embed` kind; loads MiniLM on first use.
pub struct EmbedKind {
    files: MiniLmFiles,
    device: SelectedDevice,
    loaded: Mutex<Option<(Arc<Embedder>, B256)>>,
}

impl std::fmt::Debug for EmbedKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedKind")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl EmbedKind {
    /// The kind with MiniLM's `files`, run on `device`.
    pub fn new(files: MiniLmFiles, device: SelectedDevice) -> Self {
        Self {
            files,
            device,
            loaded: Mutex::new(None),
        }
    }

    /// The encoder and its weights' sha256, loaded once.
    fn embedder(&self) -> Result<(Arc<Embedder>, B256)> {
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| Error::Invalid("embed model lock poisoned".into()))?;
        if let Some(l) = loaded.as_ref() {
            return Ok(l.clone());
        }
        self.files.ensure_present()?;
        let sha = parse_sha(&self.files.weights_sha256()?)?;
        let embedder = Arc::new(Embedder::load(&self.files, self.device.clone())?);
        Ok(loaded.insert((embedder, sha)).clone())
    }
}

/// A hex sha256 as the models crate prints it.
pub(crate) fn parse_sha(hex: &str) -> Result<B256> {
    hex.parse()
        .map_err(|_| Error::Invalid(format!("sha256 {hex:?} is not 32 bytes of hex")))
}

/// Refuses a task whose model is not `have`.
pub(crate) fn check_model(task: &TaskRef<'_>, have: B256) -> Result<()> {
    if task.model.weights_sha256 != have {
        return Err(Error::WrongModel {
            want: format!("{:x}", task.model.weights_sha256),
            have: format!("{have:x}"),
        });
    }
    Ok(())
}

impl TaskKind for EmbedKind {
    fn id(&self) -> KindId {
        KindId::EMBED
    }

    fn model(&self) -> Result<ModelRef> {
        Ok(ModelRef {
            id: "sentence-transformers/all-MiniLM-L6-v2".into(),
            weights_sha256: parse_sha(MINILM_WEIGHTS_SHA256)?,
        })
    }

    fn validate(&self, manifest: &gleaner_protocol::task::JobManifest) -> Result<()> {
        if manifest.params.sampling.is_some() {
            return Err(Error::Input("embed jobs take no sampling".into()));
        }
        Ok(())
    }

    fn params(&self, asked: TaskParams) -> Result<TaskParams> {
        if asked.sampling.is_some() {
            return Err(Error::Input(
                "sampling (--temperature) applies to generate jobs only".into(),
            ));
        }
        Ok(TaskParams {
            max_tokens: MAX_TOKENS as u32,
            ..asked
        })
    }

    fn split(
        &self,
        input: &[u8],
        params: &TaskParams,
        options: &SplitOptions,
    ) -> Result<Vec<TaskBlob>> {
        if options.chat {
            return Err(Error::Input("--chat applies to generate jobs only".into()));
        }
        let lines = read_lines(input).map_err(|e| Error::Input(e.to_string()))?;
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        lines
            .chunks(params.batch.max(1) as usize)
            .map(|c| {
                let bytes = encode_texts(c)?;
                // Units of work: the input's bytes.
                Ok(TaskBlob {
                    cost: bytes.len() as u64,
                    bytes,
                })
            })
            .collect()
    }

    fn available(&self) -> bool {
        self.files.ensure_present().is_ok()
    }

    /// Loads MiniLM; on a GPU runs every padded shape a task of up to [`WARM_BATCH`] texts can
    /// use once (compiling and tuning its kernels before the first task, with progress and the
    /// duration in the log); then embeds a fixed batch twice and times the second.
    fn prepare(&self) -> Result<Option<f64>> {
        let (embedder, _) = self.embedder()?;
        let start = Instant::now();
        let mut last_log = Instant::now();
        let shapes = embedder.warm_up(WARM_BATCH, gleaner_models::MAX_TOKENS, |done, total| {
            if done == 1 || done == total || last_log.elapsed().as_secs() >= 5 {
                last_log = Instant::now();
                tracing::info!(
                    target: "kinds",
                    "warming up the GPU: shape {done}/{total} [{}{}] {:.0}s",
                    "#".repeat(done * 20 / total),
                    ".".repeat(20 - done * 20 / total),
                    start.elapsed().as_secs_f64()
                );
            }
        })?;
        if shapes > 0 {
            tracing::info!(
                target: "kinds",
                shapes,
                secs = format!("{:.1}", start.elapsed().as_secs_f64()),
                "GPU warm-up done"
            );
        }
        embedder.embed(&PROBE_TEXTS, 8, |_| {})?;
        let tokens: usize = PROBE_TEXTS
            .iter()
            .map(|t| embedder.tokenizer().encode(t).map_or(0, |ids| ids.len()))
            .sum();
        let start = Instant::now();
        embedder.embed(&PROBE_TEXTS, 8, |_| {})?;
        let secs = start.elapsed().as_secs_f64().max(1e-6);
        Ok(Some(tokens as f64 / secs * FLOPS_PER_TOKEN / 1e9))
    }

    fn run(&self, task: &TaskRef<'_>, input: &[u8]) -> Result<Vec<u8>> {
        let (embedder, sha) = self.embedder()?;
        check_model(task, sha)?;
        let texts = decode_texts(input).map_err(|e| Error::BadInput {
            index: task.index,
            detail: e.to_string(),
        })?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let data = embedder.embed(&refs, task.params.batch.max(1) as usize, |_| {})?;
        Matrix {
            data,
            rows: refs.len(),
            cols: EMBED_DIM,
        }
        .to_blob()
    }

    fn check(&self, _task: &TaskRef<'_>, input: &[u8], output: &[u8]) -> Result<Checked> {
        // An unreadable input is the requester's or coordinator's doing: check the format only.
        let rows = decode_texts(input).ok().map(|t| t.len());
        Ok(match Matrix::from_blob(output, rows) {
            Ok(m) => Checked::Valid(Output::new(m)),
            Err(reason) => Checked::Malformed(reason),
        })
    }

    /// Embeds the picked row's text alone and compares it with the output's row (cosine
    /// ≥ [`EMBED_MIN_COSINE`], the comparator's rule): 1/rows of the task's compute.
    fn check_part(
        &self,
        task: &TaskRef<'_>,
        input: &[u8],
        output: &Output,
        pick: u64,
    ) -> Result<Option<String>> {
        let (Some(m), Ok(texts)) = (output.get::<Matrix>(), decode_texts(input)) else {
            return Ok(None);
        };
        if texts.is_empty() || m.rows != texts.len() || m.cols != EMBED_DIM {
            return Ok(None);
        }
        let row = (pick % texts.len() as u64) as usize;
        let (embedder, sha) = self.embedder()?;
        check_model(task, sha)?;
        let ours = embedder.embed(&[texts[row].as_str()], 1, |_| {})?;
        let theirs = &m.data[row * m.cols..(row + 1) * m.cols];
        let g = compare_embeddings(theirs, &ours, m.cols, EMBED_MIN_COSINE)?;
        Ok((!g.agree).then(|| {
            format!(
                "row {row} recomputed by the verifier: cosine {:.6} is below {EMBED_MIN_COSINE}",
                g.min_cosine
            )
        }))
    }

    fn agree(&self, a: &Output, b: &Output) -> bool {
        let (Some(x), Some(y)) = (a.get::<Matrix>(), b.get::<Matrix>()) else {
            return false;
        };
        x.rows == y.rows
            && x.cols == y.cols
            && compare_embeddings(&x.data, &y.data, x.cols, EMBED_MIN_COSINE).is_ok_and(|g| g.agree)
    }

    fn accept(&self, members: &[Member<'_>]) -> Result<Vec<u8>> {
        let outputs = outputs_as::<Matrix>(members)?;
        let confidences: Vec<u16> = members.iter().map(|m| m.confidence).collect();
        Matrix::weighted_mean(&outputs, &confidences)?.to_blob()
    }

    fn write_results(
        &self,
        job_id: alloy::primitives::U256,
        outcomes: &[Outcome<'_>],
        out: &Path,
    ) -> Result<Written> {
        let (mut data, mut rows, mut cols, mut missing) = (Vec::new(), 0, EMBED_DIM, Vec::new());
        for o in outcomes {
            let Some(bytes) = o.output else {
                missing.push(o.index);
                continue;
            };
            let m = Matrix::from_blob(bytes, None).map_err(|reason| {
                Error::Invalid(format!("task {}: accepted output: {reason}", o.index))
            })?;
            rows += m.rows;
            cols = m.cols;
            data.extend(m.data);
        }
        let mut w = create(out)?;
        if out.extension().is_some_and(|e| e == "safetensors") {
            let job = job_id.to_string();
            let bytes = encode_matrix(EMBED_TENSOR, &data, rows, cols, &[("job", &job)])?;
            w.write_all(&bytes).map_err(io_err(out))?;
        } else {
            for row in data.chunks_exact(cols) {
                serde_json::to_writer(&mut w, row)
                    .map_err(|e| io_err(out)(std::io::Error::other(e)))?;
                w.write_all(b"\n").map_err(io_err(out))?;
            }
        }
        w.flush().map_err(io_err(out))?;
        Ok(Written {
            items: rows,
            unit: "rows",
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit `[rows, 384]` matrix pointing along `axis` in every row, nudged by `eps`.
    fn embedding(rows: usize, axis: usize, eps: f32) -> Matrix {
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

    fn kind() -> EmbedKind {
        EmbedKind::new(
            MiniLmFiles::in_dir(Path::new("/nonexistent")),
            SelectedDevice::cpu(gleaner_models::CpuKind::Flex, "test"),
        )
    }

    fn task<'a>(model: &'a ModelRef, params: &'a TaskParams) -> TaskRef<'a> {
        TaskRef {
            job_id: alloy::primitives::U256::from(1),
            index: 0,
            model,
            params,
        }
    }

    #[test]
    fn outputs_are_checked_for_shape_rows_and_finiteness() {
        let k = kind();
        let (model, params) = (
            k.model().unwrap(),
            TaskParams {
                batch: 2,
                max_tokens: 128,
                sampling: None,
                train: None,
            },
        );
        let t = task(&model, &params);
        let input = encode_texts(&["a", "b"]).unwrap();
        let good = embedding(2, 0, 0.0).to_blob().unwrap();
        assert!(k.check(&t, &input, &good).unwrap().output().is_some());
        let rows3 = embedding(3, 0, 0.0).to_blob().unwrap();
        let c = k.check(&t, &input, &rows3).unwrap();
        assert_eq!(c.malformed(), Some("3 rows for 2 input texts"));
        let mut nan = embedding(2, 0, 0.0);
        nan.data[400] = f32::NAN;
        let c = k.check(&t, &input, &nan.to_blob().unwrap()).unwrap();
        assert_eq!(c.malformed(), Some("non-finite value at row 1"));
        let narrow = encode_matrix(EMBED_TENSOR, &[0.5; 4], 2, 2, &[]).unwrap();
        assert!(k.check(&t, &input, &narrow).unwrap().malformed().is_some());
        assert!(k.check(&t, &input, b"junk").unwrap().malformed().is_some());
    }

    #[test]
    fn near_outputs_agree_far_ones_do_not_and_the_mean_is_unit_length() {
        let k = kind();
        let (a, b, far) = (
            Output::new(embedding(3, 0, 0.0)),
            Output::new(embedding(3, 0, 0.01)),
            Output::new(embedding(3, 5, 0.0)),
        );
        assert!(k.agree(&a, &b));
        assert!(!k.agree(&a, &far));
        assert!(!k.agree(&a, &Output::new(7u32)));
        let members = [
            Member {
                worker: alloy::primitives::Address::repeat_byte(1),
                confidence: 10_000,
                output: &a,
            },
            Member {
                worker: alloy::primitives::Address::repeat_byte(2),
                confidence: 5_000,
                output: &b,
            },
        ];
        let m = Matrix::from_blob(&k.accept(&members).unwrap(), Some(3)).unwrap();
        for row in m.data.chunks_exact(EMBED_DIM) {
            let n: f32 = row.iter().map(|v| v * v).sum();
            assert!((n - 1.0).abs() < 1e-5, "{n}");
        }
        // Weighted towards the more trusted replica: its nudge is zero.
        assert!(m.data[1] < 0.01 / 2.0 && m.data[1] > 0.0, "{}", m.data[1]);
        assert!(k.accept(&[]).is_err());
    }

    #[test]
    fn inputs_split_into_batches_costed_by_bytes() {
        let k = kind();
        let params = k
            .params(TaskParams {
                batch: 2,
                max_tokens: 1,
                sampling: None,
                train: None,
            })
            .unwrap();
        assert_eq!(params.max_tokens, MAX_TOKENS as u32);
        let blobs = k
            .split(b"one\ntwo\r\nthree\n", &params, &SplitOptions::default())
            .unwrap();
        assert_eq!(blobs.len(), 2);
        assert_eq!(decode_texts(&blobs[0].bytes).unwrap(), ["one", "two"]);
        assert_eq!(blobs[1].cost, blobs[1].bytes.len() as u64);
        let err = k
            .split(b"a\n \n", &params, &SplitOptions::default())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: empty line (every line must hold one text)"
        );
        let chat = SplitOptions { chat: true };
        assert!(k.split(b"x", &params, &chat).is_err());
    }

    #[test]
    fn results_are_rows_in_task_order_and_missing_tasks_are_named() {
        let k = kind();
        let dir = std::env::temp_dir().join(format!("gleaner-kinds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (
            embedding(2, 0, 0.0).to_blob().unwrap(),
            embedding(1, 3, 0.0).to_blob().unwrap(),
        );
        let outcomes = [
            Outcome {
                index: 0,
                input: &[],
                output: Some(&a),
            },
            Outcome {
                index: 1,
                input: &[],
                output: None,
            },
            Outcome {
                index: 2,
                input: &[],
                output: Some(&b),
            },
        ];
        let st = dir.join("v.safetensors");
        let w = k
            .write_results(alloy::primitives::U256::from(9), &outcomes, &st)
            .unwrap();
        assert_eq!((w.items, w.missing.clone()), (3, vec![1]));
        let (data, rows, cols) = decode_matrix(EMBED_TENSOR, &std::fs::read(&st).unwrap()).unwrap();
        assert_eq!((rows, cols), (3, EMBED_DIM));
        assert_eq!(data[2 * EMBED_DIM + 3], 1.0);
        let bytes = std::fs::read(&st).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        assert_eq!(header["__metadata__"]["job"], "9");
        let jl = dir.join("v.jsonl");
        k.write_results(alloy::primitives::U256::from(9), &outcomes, &jl)
            .unwrap();
        let text = std::fs::read_to_string(&jl).unwrap();
        assert_eq!(text.lines().count(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
