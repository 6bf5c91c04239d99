//! Sentence embedding with all-MiniLM-L6-v2: tokenizer + encoder + batching.

use std::path::Path;

use burn::prelude::*;

use crate::backend::{SelectedDevice, cast_params};
use crate::cache::MiniLmFiles;
use crate::ecpu::CpuBert;
use crate::minilm::{Bert, BertConfig};
use crate::tokenize::TextTokenizer;
use crate::{Error, Result};

/// Width of an all-MiniLM-L6-v2 embedding.
pub const EMBED_DIM: usize = 384;

/// The shortest sequence shape used on a GPU.
const MIN_SEQ_BUCKET: usize = 16;

/// The shape a GPU batch dimension of `n` is padded to: the next power of two. Row counts up to
/// 256 and sequence lengths up to [`crate::MAX_TOKENS`] make at most 9 × 5 shapes.
fn bucket(n: usize) -> usize {
    n.next_power_of_two()
}

/// What computes the embeddings.
#[derive(Debug)]
enum Engine {
    /// The Burn module on the device's backend (padded batches).
    Burn(Box<Bert>),
    /// Our CPU kernels ([`CpuBert`], unpadded batches): `--backend cpu`.
    Native(CpuBert),
}

/// A loaded sentence encoder on one device.
#[derive(Debug)]
pub struct Embedder {
    model: Engine,
    tokenizer: TextTokenizer,
    device: SelectedDevice,
    dim: usize,
}

impl Embedder {
    /// Loads all-MiniLM-L6-v2 from `files` onto `device`, in the device's
    /// [`precision`](SelectedDevice::precision) (the file's f32 weights rounded once to f16 when
    /// that is `f16`).
    pub fn load(files: &MiniLmFiles, device: SelectedDevice) -> Result<Self> {
        files.ensure_present()?;
        let tokenizer = TextTokenizer::from_file(&files.tokenizer)?;
        let cfg = BertConfig::new();
        let bert = cfg.load(&files.weights, &device.device)?;
        let model = if device.native_cpu() {
            Engine::Native(CpuBert::from_bert(&bert, &cfg)?)
        } else {
            Engine::Burn(Box::new(cast_params(bert, device.precision.dtype())))
        };
        Ok(Self {
            model,
            tokenizer,
            device,
            dim: EMBED_DIM,
        })
    }

    /// Wraps an already-built Burn model, run by Burn on `device` in its precision (tests use
    /// tiny random models).
    pub fn from_parts(
        model: Bert,
        tokenizer: TextTokenizer,
        device: SelectedDevice,
        dim: usize,
    ) -> Self {
        Self {
            model: Engine::Burn(Box::new(cast_params(model, device.precision.dtype()))),
            tokenizer,
            device,
            dim,
        }
    }

    /// Loads the tokenizer alone from a model directory (tests).
    pub fn tokenizer_from(path: &Path) -> Result<TextTokenizer> {
        TextTokenizer::from_file(path)
    }

    /// The device this embedder runs on.
    pub fn device(&self) -> &SelectedDevice {
        &self.device
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Embeds texts in batches of at most `batch`; returns `[texts.len(), dim]` row-major, in
    /// input order. `progress` is called with the number of texts done after each batch.
    ///
    /// Texts are sorted by token count before batching so a batch pads little; the result does
    /// not depend on the order or the batch size beyond float rounding.
    pub fn embed(
        &self,
        texts: &[&str],
        batch: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<f32>> {
        let batch = batch.max(1);
        let mut encoded = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            if text.trim().is_empty() {
                return Err(Error::Input {
                    index,
                    detail: "empty text".into(),
                });
            }
            encoded.push(self.tokenizer.encode(text)?);
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encoded[i].len());

        let mut out = vec![0f32; texts.len() * self.dim];
        let mut done = 0;
        for chunk in order.chunks(batch) {
            let rows: Vec<&[u32]> = chunk.iter().map(|&i| encoded[i].as_slice()).collect();
            let vectors = self.embed_ids(&rows)?;
            for (&i, v) in chunk.iter().zip(vectors.chunks_exact(self.dim)) {
                out[i * self.dim..(i + 1) * self.dim].copy_from_slice(v);
            }
            done += chunk.len();
            progress(done);
        }
        Ok(out)
    }

    /// Embeds pre-tokenized rows as one batch (padded on Burn backends, packed on `cpu`);
    /// returns `[rows.len(), dim]` row-major.
    pub fn embed_ids(&self, rows: &[&[u32]]) -> Result<Vec<f32>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let model = match &self.model {
            Engine::Native(cpu) => return cpu.embed(rows),
            Engine::Burn(model) => model,
        };
        let longest = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        // On a GPU every new shape costs kernel compilation and autotuning, so shapes come from
        // a small fixed set there (see [`bucket`]); a CPU backend pads to the longest row only.
        let (n, seq) = if self.device.adapter.is_some() {
            (bucket(rows.len()), bucket(longest).max(MIN_SEQ_BUCKET))
        } else {
            (rows.len(), longest)
        };
        let mut ids = vec![0i64; n * seq];
        let mut mask = vec![0f32; n * seq];
        for (r, row) in rows.iter().enumerate() {
            for (c, &id) in row.iter().enumerate() {
                ids[r * seq + c] = i64::from(id);
                mask[r * seq + c] = 1.0;
            }
        }
        // Filler rows (when the row count was rounded up) hold one unmasked token, so no row
        // is all padding; their outputs are dropped.
        for r in rows.len()..n {
            mask[r * seq] = 1.0;
        }
        let device = &self.device.device;
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [n, seq]), device);
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [n, seq]), device);
        let out = model.embed(ids, mask);
        let mut v = out
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Data(format!("{e:?}")))?;
        v.truncate(rows.len() * self.dim);
        Ok(v)
    }

    /// Runs every shape [`Embedder::embed_ids`] can use on a GPU for up to `batch` rows of up to
    /// `tokens` tokens (row counts and sequence lengths from [`bucket`]) once, so a job's first
    /// tasks find their kernels compiled and tuned. `progress(done, total)` is called after each
    /// shape. Returns the number of shapes: 0 on a CPU backend, which has nothing to warm.
    pub fn warm_up(
        &self,
        batch: usize,
        tokens: usize,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<usize> {
        if self.device.adapter.is_none() {
            return Ok(0);
        }
        let longest = bucket(tokens.clamp(1, crate::MAX_TOKENS));
        let mut shapes = Vec::new();
        let mut n = 1;
        while n <= bucket(batch.max(1)) {
            let mut seq = MIN_SEQ_BUCKET;
            while seq <= longest {
                shapes.push((n, seq));
                seq *= 2;
            }
            n *= 2;
        }
        let total = shapes.len();
        for (done, &(n, seq)) in shapes.iter().enumerate() {
            let row = vec![0u32; seq];
            let rows: Vec<&[u32]> = vec![row.as_slice(); n];
            self.embed_ids(&rows)?;
            progress(done + 1, total);
        }
        Ok(total)
    }
}
