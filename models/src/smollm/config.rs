//! SmolLM2's hyper-parameters: a Burn `Config` whose defaults are SmolLM2-135M's, read from a
//! GGUF's `llama.*` metadata when a model is loaded.

use burn::prelude::*;

use super::bad;
use crate::Result;
use crate::gguf::{Gguf, Value};

/// Hyper-parameters of a Llama decoder. Defaults are SmolLM2-135M-Instruct's (what its GGUF
/// says; `defaults_are_the_gguf_values` ties the two together).
#[derive(Config, Debug, Copy, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size.
    #[config(default = 49152)]
    pub vocab: usize,
    /// Model width.
    #[config(default = 576)]
    pub dim: usize,
    /// Transformer blocks.
    #[config(default = 30)]
    pub layers: usize,
    /// Query heads.
    #[config(default = 9)]
    pub heads: usize,
    /// Key/value heads.
    #[config(default = 3)]
    pub kv_heads: usize,
    /// Feed-forward width.
    #[config(default = 1536)]
    pub ffn: usize,
    /// RMSNorm epsilon (the GGUF stores it as f32).
    #[config(default = "1e-5_f32 as f64")]
    pub eps: f64,
    /// Rope base.
    #[config(default = 100000.0)]
    pub rope_base: f64,
    /// End-of-sequence token (`tokenizer.ggml.eos_token_id`), where decoding stops.
    #[config(default = "Some(2)")]
    pub eos: Option<u32>,
}

impl LlamaConfig {
    /// The hyper-parameters in a GGUF's metadata; `vocab` is the tokenizer's size.
    pub fn from_gguf(g: &Gguf, vocab: usize) -> Result<Self> {
        let u = |k: &str| {
            g.get(k)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("no {k}")))
        };
        let f = |k: &str| {
            g.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| bad(format!("no {k}")))
        };
        Ok(Self {
            vocab,
            dim: u("llama.embedding_length")?,
            layers: u("llama.block_count")?,
            heads: u("llama.attention.head_count")?,
            kv_heads: u("llama.attention.head_count_kv")?,
            ffn: u("llama.feed_forward_length")?,
            eps: f("llama.attention.layer_norm_rms_epsilon")?,
            rope_base: f("llama.rope.freq_base")?,
            eos: g
                .get("tokenizer.ggml.eos_token_id")
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok()),
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }

    /// A small config for unit tests (random weights through [`LlamaConfig::init`]).
    pub fn tiny() -> Self {
        Self::new()
            .with_vocab(64)
            .with_dim(16)
            .with_layers(2)
            .with_heads(4)
            .with_kv_heads(2)
            .with_ffn(32)
            .with_eos(Some(3))
    }
}
