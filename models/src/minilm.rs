//! all-MiniLM-L6-v2: a 6-layer BERT sentence encoder with masked mean pooling and L2 normalisation.
//!
//! The module tree mirrors the Hugging Face checkpoint's tensor names, so the safetensors file loads
//! through Burn's store with two renames (`LayerNorm` → `layer_norm`, `attention.self` →
//! `attention.self_attn`) and [`PyTorchToBurnAdapter`], which transposes every Linear weight
//! from PyTorch's `[out, in]` to Burn's `[in, out]` (without it, square weights load transposed
//! and silently give wrong vectors; the reference test catches that).

use std::path::Path;

use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::activation::{gelu, softmax};

use crate::{Error, Result};

/// Hyper-parameters of a BERT encoder. Defaults are all-MiniLM-L6-v2's.
#[derive(Config, Debug, PartialEq)]
pub struct BertConfig {
    /// Vocabulary size.
    #[config(default = 30522)]
    pub vocab_size: usize,
    /// Width of the hidden states.
    #[config(default = 384)]
    pub hidden_size: usize,
    /// Number of transformer layers.
    #[config(default = 6)]
    pub num_layers: usize,
    /// Attention heads per layer.
    #[config(default = 12)]
    pub num_heads: usize,
    /// Width of the feed-forward layer.
    #[config(default = 1536)]
    pub intermediate_size: usize,
    /// Longest sequence the position table covers.
    #[config(default = 512)]
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[config(default = 2)]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
}

impl BertConfig {
    /// A small random-weight config for unit tests.
    pub fn tiny() -> Self {
        Self::new()
            .with_vocab_size(64)
            .with_hidden_size(16)
            .with_num_layers(2)
            .with_num_heads(4)
            .with_intermediate_size(32)
            .with_max_position_embeddings(32)
    }

    /// Builds a model with random weights on `device`.
    pub fn init(&self, device: &Device) -> Bert {
        let ln = || {
            LayerNormConfig::new(self.hidden_size)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        let h = self.hidden_size;
        Bert {
            embeddings: Embeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, h)
                    .init(device),
                token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size, h).init(device),
                layer_norm: ln(),
            },
            encoder: Encoder {
                layer: (0..self.num_layers)
                    .map(|_| Layer {
                        attention: Attention {
                            self_attn: SelfAttention {
                                query: lin(h, h),
                                key: lin(h, h),
                                value: lin(h, h),
                            },
                            output: DenseNorm {
                                dense: lin(h, h),
                                layer_norm: ln(),
                            },
                        },
                        intermediate: Intermediate {
                            dense: lin(h, self.intermediate_size),
                        },
                        output: DenseNorm {
                            dense: lin(self.intermediate_size, h),
                            layer_norm: ln(),
                        },
                    })
                    .collect(),
            },
            num_heads: self.num_heads,
        }
    }

    /// Builds the model and loads a Hugging Face BERT safetensors checkpoint into it.
    ///
    /// Every parameter of the model must be in the file; extra tensors (the pooler,
    /// `position_ids`) are ignored.
    pub fn load(&self, weights: &Path, device: &Device) -> Result<Bert> {
        if !weights.is_file() {
            return Err(Error::MissingModel {
                path: weights.to_path_buf(),
            });
        }
        let mut model = self.init(device);
        let mut store = SafetensorsStore::from_file(weights)
            .with_regex(r"^(embeddings|encoder)\.")
            .with_key_remapping(r"LayerNorm", "layer_norm")
            .with_key_remapping(r"attention\.self\.", "attention.self_attn.")
            .with_from_adapter(PyTorchToBurnAdapter)
            .allow_partial(true);
        let result = model.load_from(&mut store).map_err(|e| Error::Weights {
            path: weights.to_path_buf(),
            detail: e.to_string(),
        })?;
        if !result.errors.is_empty() || !result.missing.is_empty() {
            return Err(Error::Weights {
                path: weights.to_path_buf(),
                detail: format!(
                    "{} tensors missing ({:?}), errors: {:?}",
                    result.missing.len(),
                    result
                        .missing
                        .iter()
                        .take(5)
                        .map(|m| &m.0)
                        .collect::<Vec<_>>(),
                    result.errors.iter().take(5).collect::<Vec<_>>()
                ),
            });
        }
        tracing::debug!(target: "models::minilm", applied = result.applied.len(), "weights loaded");
        Ok(model)
    }
}

/// The BERT encoder with sentence-embedding head (mean pooling + L2 normalisation).
#[derive(Module, Debug)]
pub struct Bert {
    embeddings: Embeddings,
    encoder: Encoder,
    num_heads: usize,
}

#[derive(Module, Debug)]
struct Embeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
}

#[derive(Module, Debug)]
struct Encoder {
    layer: Vec<Layer>,
}

#[derive(Module, Debug)]
struct Layer {
    attention: Attention,
    intermediate: Intermediate,
    output: DenseNorm,
}

#[derive(Module, Debug)]
struct Attention {
    self_attn: SelfAttention,
    output: DenseNorm,
}

#[derive(Module, Debug)]
struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
}

#[derive(Module, Debug)]
struct Intermediate {
    dense: Linear,
}

/// `LayerNorm(dense(x) + residual)`, BERT's output blocks.
#[derive(Module, Debug)]
struct DenseNorm {
    dense: Linear,
    layer_norm: LayerNorm,
}

impl DenseNorm {
    fn forward(&self, x: Tensor<2>, residual: Tensor<2>) -> Tensor<2> {
        self.layer_norm.forward(self.dense.forward(x) + residual)
    }
}

impl Bert {
    /// Hidden states of the last layer.
    ///
    /// # Shapes
    /// - `ids`: `[batch, seq]` token ids, padded with any id where `mask` is 0.
    /// - `mask`: `[batch, seq]`, 1 for tokens, 0 for padding, any float type.
    /// - returns `[batch, seq, hidden]`, in the parameters' float type.
    pub fn hidden_states(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let device = ids.device();
        let [batch, seq] = ids.dims();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device)
            .unsqueeze_dim::<2>(0)
            .expand([batch, seq]);
        let types = Tensor::<2, Int>::zeros([batch, seq], &device);
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(ids)
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(types);
        let mut x = e.layer_norm.forward(x);

        // Additive attention bias: 0 for tokens, -10000 for padding (exp underflows to 0 in f32
        // and in f16, whose largest value is 65504), broadcast over heads and query positions,
        // in the model's float type.
        let bias = (mask.clone() - 1.0)
            .mul_scalar(10_000.0)
            .reshape([batch, 1, 1, seq])
            .cast(x.dtype());
        for layer in &self.encoder.layer {
            x = layer.forward(x, bias.clone(), self.num_heads);
        }
        x
    }

    /// Sentence embeddings: masked mean of the last hidden states, L2-normalised.
    ///
    /// # Shapes
    /// - `ids`, `mask`: `[batch, seq]` as in [`Bert::hidden_states`].
    /// - returns `[batch, hidden]`, each row of unit length.
    pub fn embed(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<2> {
        let [batch, seq] = mask.dims();
        // Pooling and normalisation in f32 whatever the model's precision: a sum over up to
        // 256 positions is where f16 would lose most.
        let h = self
            .hidden_states(ids, mask.clone())
            .cast(burn::tensor::FloatDType::F32);
        let m = mask.reshape([batch, seq, 1]);
        let summed = (h * m.clone()).sum_dim(1).squeeze_dim::<2>(1);
        let count = m.sum_dim(1).squeeze_dim::<2>(1).clamp_min(1e-9);
        let mean = summed / count;
        let norm = mean
            .clone()
            .powf_scalar(2.0)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        mean / norm
    }
}

/// A Linear layer's weights as plain vectors: `weight` row-major `[inp, out]` (Burn's layout).
pub(crate) struct LinearParts {
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) inp: usize,
    pub(crate) out: usize,
}

/// One encoder layer's weights as plain vectors; norms are `(gamma, beta)`.
pub(crate) struct LayerParts {
    pub(crate) query: LinearParts,
    pub(crate) key: LinearParts,
    pub(crate) value: LinearParts,
    pub(crate) attn_out: LinearParts,
    pub(crate) attn_norm: (Vec<f32>, Vec<f32>),
    pub(crate) inter: LinearParts,
    pub(crate) out: LinearParts,
    pub(crate) out_norm: (Vec<f32>, Vec<f32>),
}

/// Every weight of a [`Bert`] as plain vectors, for [`crate::ecpu::CpuBert`].
pub(crate) struct BertParts {
    pub(crate) word: Vec<f32>,
    pub(crate) position: Vec<f32>,
    pub(crate) token_type: Vec<f32>,
    pub(crate) embed_norm: (Vec<f32>, Vec<f32>),
    pub(crate) layers: Vec<LayerParts>,
}

fn values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Data(format!("{e:?}")))
}

fn linear_parts(l: &Linear) -> Result<LinearParts> {
    let w = l.weight.val();
    let [inp, out] = w.dims();
    let bias = match &l.bias {
        Some(b) => values(b.val())?,
        None => vec![0.0; out],
    };
    Ok(LinearParts {
        weight: values(w)?,
        bias,
        inp,
        out,
    })
}

fn norm_parts(n: &LayerNorm) -> Result<(Vec<f32>, Vec<f32>)> {
    let gamma = values(n.gamma.val())?;
    let beta = match &n.beta {
        Some(b) => values(b.val())?,
        None => vec![0.0; gamma.len()],
    };
    Ok((gamma, beta))
}

impl Bert {
    /// Every weight as plain vectors.
    pub(crate) fn parts(&self) -> Result<BertParts> {
        let e = &self.embeddings;
        Ok(BertParts {
            word: values(e.word_embeddings.weight.val())?,
            position: values(e.position_embeddings.weight.val())?,
            token_type: values(e.token_type_embeddings.weight.val())?,
            embed_norm: norm_parts(&e.layer_norm)?,
            layers: self
                .encoder
                .layer
                .iter()
                .map(|l| {
                    let sa = &l.attention.self_attn;
                    Ok(LayerParts {
                        query: linear_parts(&sa.query)?,
                        key: linear_parts(&sa.key)?,
                        value: linear_parts(&sa.value)?,
                        attn_out: linear_parts(&l.attention.output.dense)?,
                        attn_norm: norm_parts(&l.attention.output.layer_norm)?,
                        inter: linear_parts(&l.intermediate.dense)?,
                        out: linear_parts(&l.output.dense)?,
                        out_norm: norm_parts(&l.output.layer_norm)?,
                    })
                })
                .collect::<Result<_>>()?,
        })
    }
}

impl Layer {
    /// One encoder layer. The dense parts run on `[batch · seq, hidden]` matrices: one large
    /// matmul per weight instead of a batch of small ones (measured faster on the CPU backends).
    fn forward(&self, x: Tensor<3>, bias: Tensor<4>, heads: usize) -> Tensor<3> {
        let [batch, seq, hidden] = x.dims();
        let d = hidden / heads;
        let x2 = x.reshape([batch * seq, hidden]);
        let split = |t: Tensor<2>| t.reshape([batch, seq, heads, d]).swap_dims(1, 2);
        let sa = &self.attention.self_attn;
        let q = split(sa.query.forward(x2.clone()));
        let k = split(sa.key.forward(x2.clone()));
        let v = split(sa.value.forward(x2.clone()));
        let scores = q.matmul(k.transpose()).div_scalar((d as f32).sqrt()) + bias;
        let ctx = softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch * seq, hidden]);
        let a = self.attention.output.forward(ctx, x2);
        let inter = gelu(self.intermediate.dense.forward(a.clone()));
        self.output.forward(inter, a).reshape([batch, seq, hidden])
    }
}
