//! Sentence embedding with all-MiniLM-L6-v2: tokenizer + encoder + batching.

use std::path::Path;

use burn::prelude::*;

use crate::backend::SelectedDevice;
use crate::cache::MiniLmFiles;
use crate::minilm::{Bert, BertConfig};
use crate::tokenize::TextTokenizer;
use crate::{Error, Result};

/// Width of an all-MiniLM-L6-v2 embedding.
pub const EMBED_DIM: usize = 384;

/// A loaded sentence encoder on one device.
#[derive(Debug)]
pub struct Embedder {
    model: Bert,
    tokenizer: TextTokenizer,
    device: SelectedDevice,
    dim: usize,
}

impl Embedder {
    /// Loads all-MiniLM-L6-v2 from `files` onto `device`.
    pub fn load(files: &MiniLmFiles, device: SelectedDevice) -> Result<Self> {
        files.ensure_present()?;
        let tokenizer = TextTokenizer::from_file(&files.tokenizer)?;
        let model = BertConfig::new().load(&files.weights, &device.device)?;
        Ok(Self {
            model,
            tokenizer,
            device,
            dim: EMBED_DIM,
        })
    }

    /// Wraps an already-built model (tests use tiny random models).
    pub fn from_parts(
        model: Bert,
        tokenizer: TextTokenizer,
        device: SelectedDevice,
        dim: usize,
    ) -> Self {
        Self {
            model,
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

    /// Embeds pre-tokenized rows as one padded batch; returns `[rows.len(), dim]` row-major.
    pub fn embed_ids(&self, rows: &[&[u32]]) -> Result<Vec<f32>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let seq = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0i64; rows.len() * seq];
        let mut mask = vec![0f32; rows.len() * seq];
        for (r, row) in rows.iter().enumerate() {
            for (c, &id) in row.iter().enumerate() {
                ids[r * seq + c] = i64::from(id);
                mask[r * seq + c] = 1.0;
            }
        }
        let device = &self.device.device;
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [rows.len(), seq]), device);
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [rows.len(), seq]), device);
        let out = self.model.embed(ids, mask);
        out.into_data()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Data(format!("{e:?}")))
    }
}
