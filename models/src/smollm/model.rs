//! The Llama decoder as Burn modules: [`Attention`], [`Mlp`], [`Block`] and [`Llama`], with tied
//! input/output embeddings and a per-layer key/value cache ([`KvCache`]).
//!
//! Weights are `Param<Tensor>` fields multiplied with `matmul`, not `burn::nn::Linear`: `Linear`
//! goes through `burn::tensor::module::linear`, which may fold batches or pick another kernel,
//! and the reference ids the tests pin come from these exact operations. Matrices are stored
//! `[in, out]`, as `Linear` stores them.
//!
//! A model is built straight from the GGUF's dequantised tensors ([`Llama::from_gguf`]) rather
//! than by `init` + `load_from`: Burn's stores read safetensors and burnpack, not GGUF.
//! [`LlamaConfig::init`] gives random weights of any shape, for unit tests.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Distribution, FloatDType};
use tokenizers::Tokenizer;

use super::tokenizer::tokenizer_from_gguf;
use super::{LlamaConfig, bad};
use crate::gguf::Gguf;
use crate::{Error, Result};

/// Added to the scores of masked keys: finite in f32 and in f16 (largest 65504), so a padded
/// query row (which may see no key) stays finite, yet `exp` of it underflows to exactly 0
/// beside any real key in both.
const MASKED: f32 = -30_000.0;

/// `x / rms(x) * w` over the last dimension, computed in f32 and returned in `x`'s float type:
/// a sum of 576 squares can pass f16's largest value.
fn rms_norm(x: Tensor<2>, w: &Param<Tensor<1>>, eps: f64) -> Tensor<2> {
    let dtype = x.dtype();
    let x = x.cast(FloatDType::F32);
    let ms = x.clone().powf_scalar(2.0).mean_dim(1);
    let w = w.val().cast(FloatDType::F32).unsqueeze_dim::<2>(0);
    (x * (ms + eps).sqrt().recip() * w).cast(dtype)
}

/// cos and sin of the rope angles of a step's positions, `[b, 1, s, head_dim / 2, 1]` each.
struct Rope {
    cos: Tensor<5>,
    sin: Tensor<5>,
}

impl Rope {
    /// The angles of `positions` (row-major `[b, s]`), in `dtype`.
    fn new(
        cfg: &LlamaConfig,
        positions: &[usize],
        (b, s): (usize, usize),
        dtype: FloatDType,
        device: &Device,
    ) -> Self {
        let d = cfg.head_dim();
        let half = d / 2;
        let mut cos = Vec::with_capacity(b * s * half);
        let mut sin = Vec::with_capacity(b * s * half);
        for &p in positions {
            for i in 0..half {
                let theta = (p as f64) * cfg.rope_base.powf(-2.0 * i as f64 / d as f64);
                cos.push(theta.cos() as f32);
                sin.push(theta.sin() as f32);
            }
        }
        let t = |v: Vec<f32>| {
            Tensor::<4>::from_data(TensorData::new(v, [b, 1, s, half]), device)
                .unsqueeze_dim::<5>(4)
                .cast(dtype)
        };
        Self {
            cos: t(cos),
            sin: t(sin),
        }
    }

    /// Rotates adjacent pairs (2i, 2i+1) of each head (GGUF's q/k weights are laid out for
    /// llama.cpp's "normal" rope).
    ///
    /// # Shapes
    /// - x: `[b, heads, s, head_dim]`
    /// - output: `[b, heads, s, head_dim]`
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, s, d] = x.dims();
        let x = x.reshape([b, h, s, d / 2, 2]);
        let x0 = x.clone().narrow(4, 0, 1);
        let x1 = x.narrow(4, 1, 1);
        let r0 = x0.clone() * self.cos.clone() - x1.clone() * self.sin.clone();
        let r1 = x0 * self.sin.clone() + x1 * self.cos.clone();
        Tensor::cat(vec![r0, r1], 4).reshape([b, h, s, d])
    }
}

/// Grouped-query self-attention with rope.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection `[dim, heads * head_dim]`.
    wq: Param<Tensor<2>>,
    /// Key projection `[dim, kv_heads * head_dim]`.
    wk: Param<Tensor<2>>,
    /// Value projection `[dim, kv_heads * head_dim]`.
    wv: Param<Tensor<2>>,
    /// Output projection `[dim, dim]`.
    wo: Param<Tensor<2>>,
}

/// What every layer of one forward pass shares.
struct Step<'a> {
    cfg: &'a LlamaConfig,
    b: usize,
    s: usize,
    rope: Rope,
    /// Added to the scores, `[b, 1, rep * s, t]`; `None` when nothing is masked.
    mask: Option<Tensor<4>>,
}

impl Attention {
    /// Attends the step's rows to the cached keys/values and their own, appending their keys
    /// and values to `k_cache`/`v_cache`.
    ///
    /// # Shapes
    /// - h: `[b * s, dim]` (normalised hidden states, row-major `[b, s]`)
    /// - k_cache, v_cache: `[b, kv_heads, t - s, head_dim]` before, `[b, kv_heads, t, head_dim]` after
    /// - output: `[b * s, dim]`
    fn forward(
        &self,
        h: Tensor<2>,
        step: &Step<'_>,
        k_cache: &mut Option<Tensor<4>>,
        v_cache: &mut Option<Tensor<4>>,
    ) -> Tensor<2> {
        let (c, b, s) = (step.cfg, step.b, step.s);
        let hd = c.head_dim();
        let rep = c.heads / c.kv_heads;
        let heads = |w: &Param<Tensor<2>>, n: usize| {
            h.clone()
                .matmul(w.val())
                .reshape([b, s, n, hd])
                .swap_dims(1, 2)
        };
        let q = step.rope.apply(heads(&self.wq, c.heads));
        let k = step.rope.apply(heads(&self.wk, c.kv_heads));
        let v = heads(&self.wv, c.kv_heads);
        let k = match k_cache.take() {
            Some(prev) => Tensor::cat(vec![prev, k], 2),
            None => k,
        };
        let v = match v_cache.take() {
            Some(prev) => Tensor::cat(vec![prev, v], 2),
            None => v,
        };
        *k_cache = Some(k.clone());
        *v_cache = Some(v.clone());
        // Grouped-query attention without copying keys: query head j = kv * rep + g uses
        // key/value head kv, so the rep query heads of a group stack into one matmul.
        let q = q.reshape([b, c.kv_heads, rep * s, hd]);
        let mut scores = q.matmul(k.swap_dims(2, 3)).div_scalar((hd as f32).sqrt());
        if let Some(m) = &step.mask {
            scores = scores + m.clone();
        }
        softmax(scores, 3)
            .matmul(v)
            .reshape([b, c.heads, s, hd])
            .swap_dims(1, 2)
            .reshape([b * s, c.dim])
            .matmul(self.wo.val())
    }
}

/// The gated feed-forward layer: `down(silu(gate(h)) * up(h))`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `[dim, ffn]`.
    gate: Param<Tensor<2>>,
    /// `[dim, ffn]`.
    up: Param<Tensor<2>>,
    /// `[ffn, dim]`.
    down: Param<Tensor<2>>,
}

impl Mlp {
    /// # Shapes
    /// - h: `[rows, dim]`
    /// - output: `[rows, dim]`
    fn forward(&self, h: Tensor<2>) -> Tensor<2> {
        let ff = silu(h.clone().matmul(self.gate.val())) * h.matmul(self.up.val());
        ff.matmul(self.down.val())
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub struct Block {
    attn_norm: Param<Tensor<1>>,
    attn: Attention,
    ffn_norm: Param<Tensor<1>>,
    mlp: Mlp,
}

impl Block {
    /// # Shapes
    /// - x: `[b * s, dim]`
    /// - output: `[b * s, dim]`
    fn forward(
        &self,
        x: Tensor<2>,
        step: &Step<'_>,
        k_cache: &mut Option<Tensor<4>>,
        v_cache: &mut Option<Tensor<4>>,
    ) -> Tensor<2> {
        let eps = step.cfg.eps;
        let h = rms_norm(x.clone(), &self.attn_norm, eps);
        let x = x + self.attn.forward(h, step, k_cache, v_cache);
        let h = rms_norm(x.clone(), &self.ffn_norm, eps);
        x + self.mlp.forward(h)
    }
}

/// The decoder with tied input/output embeddings.
///
/// Reference semantics: weights dequantised to f32, activations in f32.
#[derive(Module)]
pub struct Llama {
    /// Token embeddings `[vocab, dim]`.
    embed: Param<Tensor<2>>,
    /// The same, transposed once into contiguous memory for the output projection `[dim,
    /// vocab]` (a lazily transposed view would be copied on every forward). Derived, not a
    /// parameter.
    embed_t: Tensor<2>,
    blocks: Vec<Block>,
    norm: Param<Tensor<1>>,
    #[module(skip)]
    cfg: LlamaConfig,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Per-layer key/value cache of a batch of rows: `[rows, kv_heads, t, head_dim]`. Rows are
/// left-padded to a common length; `pads[r]` leading positions of row `r` are masked out.
#[derive(Debug)]
pub struct KvCache {
    k: Vec<Option<Tensor<4>>>,
    v: Vec<Option<Tensor<4>>>,
    len: usize,
    pads: Vec<usize>,
}

impl LlamaConfig {
    /// A model with random weights (normal, σ = 0.02) on `device`, for tests.
    pub fn init(&self, device: &Device) -> Llama {
        let w = |shape: [usize; 2]| {
            Param::from_tensor(Tensor::<2>::random(
                shape,
                Distribution::Normal(0.0, 0.02),
                device,
            ))
        };
        let ones = || Param::from_tensor(Tensor::<1>::ones([self.dim], device));
        let (d, kvd) = (self.dim, self.kv_heads * self.head_dim());
        let embed = w([self.vocab, d]);
        Llama {
            embed_t: embed.val().transpose(),
            embed,
            blocks: (0..self.layers)
                .map(|_| Block {
                    attn_norm: ones(),
                    attn: Attention {
                        wq: w([d, d]),
                        wk: w([d, kvd]),
                        wv: w([d, kvd]),
                        wo: w([d, d]),
                    },
                    ffn_norm: ones(),
                    mlp: Mlp {
                        gate: w([d, self.ffn]),
                        up: w([d, self.ffn]),
                        down: w([self.ffn, d]),
                    },
                })
                .collect(),
            norm: ones(),
            cfg: *self,
        }
    }
}

impl Llama {
    /// Loads the model from a GGUF file (weights dequantised to f32).
    pub fn load(path: &std::path::Path, device: &Device) -> Result<(Self, Tokenizer)> {
        Self::from_gguf(&Gguf::open(path)?, device)
    }

    /// The model and tokenizer of an opened GGUF (weights dequantised to f32).
    pub fn from_gguf(g: &Gguf, device: &Device) -> Result<(Self, Tokenizer)> {
        let tokenizer = tokenizer_from_gguf(g)?;
        let cfg = LlamaConfig::from_gguf(g, tokenizer.get_vocab_size(false))?;
        // GGUF dims are innermost first: a [in, out] entry is row-major [out, in]. Matmuls
        // want [in, out]: transpose once here, into contiguous memory.
        let raw = |name: &str| -> Result<(Vec<f32>, usize, usize)> {
            let t = g
                .tensor(name)
                .ok_or_else(|| bad(format!("no tensor {name}")))?;
            let [inner, outer] = t.dims[..] else {
                return Err(bad(format!("{name} is not 2-D")));
            };
            Ok((g.dequantize(name)?, outer as usize, inner as usize))
        };
        let mat = |name: &str| -> Result<Tensor<2>> {
            let (data, rows, cols) = raw(name)?;
            Ok(Tensor::<2>::from_data(
                TensorData::new(data, [rows, cols]),
                device,
            ))
        };
        let mat_t = |name: &str| -> Result<Tensor<2>> {
            let (data, rows, cols) = raw(name)?;
            let mut t = vec![0f32; data.len()];
            for r in 0..rows {
                for c in 0..cols {
                    t[c * rows + r] = data[r * cols + c];
                }
            }
            Ok(Tensor::<2>::from_data(
                TensorData::new(t, [cols, rows]),
                device,
            ))
        };
        let param_t = |name: &str| mat_t(name).map(Param::from_tensor);
        let vec = |name: &str| -> Result<Param<Tensor<1>>> {
            let data = g.dequantize(name)?;
            let n = data.len();
            Ok(Param::from_tensor(Tensor::<1>::from_data(
                TensorData::new(data, [n]),
                device,
            )))
        };
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: vec(&p("attn_norm"))?,
                attn: Attention {
                    wq: param_t(&p("attn_q"))?,
                    wk: param_t(&p("attn_k"))?,
                    wv: param_t(&p("attn_v"))?,
                    wo: param_t(&p("attn_output"))?,
                },
                ffn_norm: vec(&p("ffn_norm"))?,
                mlp: Mlp {
                    gate: param_t(&p("ffn_gate"))?,
                    up: param_t(&p("ffn_up"))?,
                    down: param_t(&p("ffn_down"))?,
                },
            });
        }
        let model = Self {
            embed: Param::from_tensor(mat("token_embd.weight")?),
            embed_t: mat_t("token_embd.weight")?,
            blocks,
            norm: vec("output_norm.weight")?,
            cfg,
        };
        Ok((model, tokenizer))
    }

    /// The configuration.
    pub fn config(&self) -> LlamaConfig {
        self.cfg
    }

    /// The device the weights are on.
    pub fn device(&self) -> Device {
        self.norm.device()
    }

    /// The same model with its weights in `dtype` (rounded once; a no-op for f32). Activations
    /// follow the weights; RMSNorm statistics and the logits stay f32 ([`rms_norm`]).
    pub fn into_precision(self, dtype: FloatDType) -> Self {
        // `embed_t` is derived, not a parameter: the mapper does not see it.
        let mut model = crate::backend::cast_params(self, dtype);
        model.embed_t = model.embed_t.cast(dtype);
        model
    }

    /// The float type of the weights and activations.
    pub fn precision(&self) -> FloatDType {
        self.norm.val().dtype().into()
    }

    /// An empty cache for one sequence.
    pub fn cache(&self) -> KvCache {
        self.batch_cache(vec![0])
    }

    /// An empty cache for `pads.len()` rows, row `r` left-padded by `pads[r]` positions.
    pub(crate) fn batch_cache(&self, pads: Vec<usize>) -> KvCache {
        KvCache {
            k: vec![None; self.cfg.layers],
            v: vec![None; self.cfg.layers],
            len: 0,
            pads,
        }
    }

    /// Runs `ids` after what the cache holds; returns the logits of the last position.
    ///
    /// # Shapes
    /// - ids: `[s]`, after the cache's `t` positions (one row)
    /// - output: `[vocab]`
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        self.forward_batch(ids, 1, cache, None)
    }

    /// Logits of every position of `ids` (row-major `[ids.len(), vocab]`): one teacher-forced
    /// pass, what the verifier re-scores a claimed output with.
    pub fn forward_all(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.forward_from(ids, 0)
    }

    /// Logits of positions `from..` of `ids` (row-major `[ids.len() - from, vocab]`), in one
    /// pass over all of them: the output projection, a fifth of a token's work, is skipped for
    /// the positions before `from` (a prompt, whose next tokens nobody claims).
    ///
    /// # Shapes
    /// - ids: `[s]`
    /// - output: `[s - from, vocab]` row-major
    pub fn forward_from(&self, ids: &[u32], from: usize) -> Result<Vec<f32>> {
        if from >= ids.len() {
            return Err(Error::Input {
                index: from,
                detail: format!("no positions from {from} of {}", ids.len()),
            });
        }
        self.forward_batch(ids, 1, &mut self.cache(), Some(from))
    }

    /// Runs `b` rows of equal length after what the cache holds. Every row is computed as if
    /// alone: its padded positions are masked out and its rope positions start at its first
    /// real token.
    ///
    /// # Shapes
    /// - ids: `[b, s]` row-major
    /// - output: the logits of the last position of each row, `[b, vocab]`, or with
    ///   `from = Some(f)` of positions `f..s` of each row, `[b * (s - f), vocab]`
    pub(crate) fn forward_batch(
        &self,
        ids: &[u32],
        b: usize,
        cache: &mut KvCache,
        from: Option<usize>,
    ) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let device = self.device();
        let s = ids.len() / b.max(1);
        if b == 0 || s == 0 || s * b != ids.len() || cache.pads.len() != b {
            return Err(Error::Input {
                index: 0,
                detail: format!("{} ids are not {b} equal rows of the cache", ids.len()),
            });
        }
        let rep = c.heads / c.kv_heads;
        let dtype = self.precision();
        let start = cache.len;
        let t = start + s;
        let positions: Vec<usize> = (0..b)
            .flat_map(|r| (start..t).map(move |j| (r, j)))
            .map(|(r, j)| j.saturating_sub(cache.pads[r]))
            .collect();
        // Mask [b, 1, rep * s, t]: key j is visible to query i of row r when it is not after
        // it and not padding; the query rows of the `rep` heads sharing a key head repeat.
        let mask = if cache.pads.iter().any(|&p| p > 0) || s > 1 {
            let mut m = vec![0f32; b * rep * s * t];
            for r in 0..b {
                for g in 0..rep {
                    for i in 0..s {
                        let row = ((r * rep + g) * s + i) * t;
                        for j in 0..t {
                            if j > start + i || j < cache.pads[r] {
                                m[row + j] = MASKED;
                            }
                        }
                    }
                }
            }
            Some(
                Tensor::<4>::from_data(TensorData::new(m, [b, 1, rep * s, t]), &device).cast(dtype),
            )
        } else {
            None
        };
        let step = Step {
            cfg: c,
            b,
            s,
            rope: Rope::new(c, &positions, (b, s), dtype, &device),
            mask,
        };
        let idx: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [b * s]), &device);
        let mut x = self.embed.val().select(0, idx);
        for (l, blk) in self.blocks.iter().enumerate() {
            x = blk.forward(x, &step, &mut cache.k[l], &mut cache.v[l]);
        }
        cache.len = t;
        let from = from.unwrap_or(s - 1).min(s - 1);
        let rows = if from == 0 {
            x
        } else {
            x.reshape([b, s, c.dim])
                .narrow(1, from, s - from)
                .reshape([b * (s - from), c.dim])
        };
        let last = rms_norm(rows, &self.norm, c.eps);
        last.matmul(self.embed_t.clone())
            .cast(FloatDType::F32)
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Data(format!("{e:?}")))
    }
}
