//! SmolLM2-135M-Instruct (Llama architecture) from GGUF: tokenizer from the GGUF metadata and a
//! decoder with a KV cache, greedy decoding.
//!
//! Reference semantics: weights dequantised to f32, activations in f32. GGUF's q/k weights are
//! laid out for llama.cpp's "normal" rope, which rotates adjacent pairs (2i, 2i+1).

use std::path::Path;

use burn::prelude::*;
use burn::tensor::activation::{silu, softmax};
use tokenizers::Tokenizer;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;

use gleaner_protocol::sampling::{SplitMix64, argmax, reachable, sample};

use crate::gguf::{Gguf, Value};
use crate::{Error, Result};

fn bad(msg: impl Into<String>) -> Error {
    Error::Weights {
        path: "gguf".into(),
        detail: msg.into(),
    }
}

/// Builds the byte-level BPE tokenizer from `tokenizer.ggml.tokens` and `merges`, with digits
/// split one by one (the `smollm` pre-tokenizer).
pub fn tokenizer_from_gguf(g: &Gguf) -> Result<Tokenizer> {
    let strings = |key: &str| -> Result<Vec<String>> {
        match g.get(key) {
            Some(Value::Array(v)) => v
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad(format!("{key}: not strings")))
                })
                .collect(),
            _ => Err(bad(format!("GGUF has no {key}"))),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| bad(format!("merge {m:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    // Control tokens (type 3: <|im_start|>, <|endoftext|>, ...) are matched whole, never split.
    let control: Vec<String> = match g.get("tokenizer.ggml.token_type") {
        Some(Value::Array(types)) => types
            .iter()
            .zip(&tokens)
            .filter(|(t, _)| t.as_u64() == Some(3))
            .map(|(_, tok)| tok.clone())
            .collect(),
        _ => Vec::new(),
    };
    let vocab: Vocab = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tok.with_decoder(Some(ByteLevel::default()));
    let special: Vec<tokenizers::AddedToken> = control
        .into_iter()
        .map(|t| tokenizers::AddedToken::from(t, true))
        .collect();
    tok.add_special_tokens(special)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    Ok(tok)
}

/// Hyper-parameters, read from the GGUF metadata.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Model width.
    pub dim: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// Rope base.
    pub rope_base: f64,
    /// End-of-sequence token (`tokenizer.ggml.eos_token_id`), where decoding stops.
    pub eos: Option<u32>,
}

struct Block {
    attn_norm: Tensor<1>,
    wq: Tensor<2>,
    wk: Tensor<2>,
    wv: Tensor<2>,
    wo: Tensor<2>,
    ffn_norm: Tensor<1>,
    gate: Tensor<2>,
    up: Tensor<2>,
    down: Tensor<2>,
}

/// The decoder with tied input/output embeddings.
pub struct Llama {
    cfg: LlamaConfig,
    embed: Tensor<2>,
    embed_t: Tensor<2>,
    blocks: Vec<Block>,
    norm: Tensor<1>,
    device: Device,
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
pub struct KvCache {
    k: Vec<Option<Tensor<4>>>,
    v: Vec<Option<Tensor<4>>>,
    len: usize,
    pads: Vec<usize>,
}

/// Added to the scores of masked keys: finite, so a padded query row (which may see no key)
/// stays finite, yet `exp` of it underflows to exactly 0 beside any real key.
const MASKED: f32 = -1e9;

impl Llama {
    /// Loads the model from a GGUF file (weights dequantised to f32).
    pub fn load(path: &Path, device: &Device) -> Result<(Self, Tokenizer)> {
        Self::from_gguf(&Gguf::open(path)?, device)
    }

    /// The model and tokenizer of an opened GGUF (weights dequantised to f32).
    pub fn from_gguf(g: &Gguf, device: &Device) -> Result<(Self, Tokenizer)> {
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
        let tokenizer = tokenizer_from_gguf(g)?;
        let cfg = LlamaConfig {
            vocab: tokenizer.get_vocab_size(false),
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
        };
        // GGUF dims are innermost first: a [in, out] entry is row-major [out, in]. Matmuls
        // want [in, out]: transpose once here, into contiguous memory (a lazily transposed
        // view would be copied on every forward).
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
        let vec = |name: &str| -> Result<Tensor<1>> {
            let data = g.dequantize(name)?;
            let n = data.len();
            Ok(Tensor::<1>::from_data(TensorData::new(data, [n]), device))
        };
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: vec(&p("attn_norm"))?,
                wq: mat_t(&p("attn_q"))?,
                wk: mat_t(&p("attn_k"))?,
                wv: mat_t(&p("attn_v"))?,
                wo: mat_t(&p("attn_output"))?,
                ffn_norm: vec(&p("ffn_norm"))?,
                gate: mat_t(&p("ffn_gate"))?,
                up: mat_t(&p("ffn_up"))?,
                down: mat_t(&p("ffn_down"))?,
            });
        }
        let embed = mat("token_embd.weight")?;
        let model = Self {
            cfg,
            embed_t: mat_t("token_embd.weight")?,
            embed,
            blocks,
            norm: vec("output_norm.weight")?,
            device: device.clone(),
        };
        Ok((model, tokenizer))
    }

    /// The configuration.
    pub fn config(&self) -> LlamaConfig {
        self.cfg
    }

    /// An empty cache for one sequence.
    pub fn cache(&self) -> KvCache {
        self.batch_cache(vec![0])
    }

    fn batch_cache(&self, pads: Vec<usize>) -> KvCache {
        KvCache {
            k: vec![None; self.cfg.layers],
            v: vec![None; self.cfg.layers],
            len: 0,
            pads,
        }
    }

    fn rms_norm(&self, x: Tensor<2>, w: &Tensor<1>) -> Tensor<2> {
        let ms = x.clone().powf_scalar(2.0).mean_dim(1);
        x * (ms + self.cfg.eps).sqrt().recip() * w.clone().unsqueeze_dim::<2>(0)
    }

    /// cos and sin of the rope angles for `positions` (row-major `[b, s]`): `[b, 1, s, half, 1]`.
    fn rope_tables(&self, positions: &[usize], b: usize, s: usize) -> (Tensor<5>, Tensor<5>) {
        let d = self.cfg.dim / self.cfg.heads;
        let half = d / 2;
        let mut cos = Vec::with_capacity(b * s * half);
        let mut sin = Vec::with_capacity(b * s * half);
        for &p in positions {
            for i in 0..half {
                let theta = (p as f64) * self.cfg.rope_base.powf(-2.0 * i as f64 / d as f64);
                cos.push(theta.cos() as f32);
                sin.push(theta.sin() as f32);
            }
        }
        let t = |v: Vec<f32>| {
            Tensor::<4>::from_data(TensorData::new(v, [b, 1, s, half]), &self.device)
                .unsqueeze_dim::<5>(4)
        };
        (t(cos), t(sin))
    }

    /// Rotates adjacent pairs (2i, 2i+1) of each head: `x` is `[b, heads, s, head_dim]`.
    fn rope(x: Tensor<4>, cos: &Tensor<5>, sin: &Tensor<5>) -> Tensor<4> {
        let [b, h, s, d] = x.dims();
        let x = x.reshape([b, h, s, d / 2, 2]);
        let x0 = x.clone().narrow(4, 0, 1);
        let x1 = x.narrow(4, 1, 1);
        let r0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
        let r1 = x0 * sin.clone() + x1 * cos.clone();
        Tensor::cat(vec![r0, r1], 4).reshape([b, h, s, d])
    }

    /// Runs `ids` after what the cache holds; returns the logits of the last position.
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
    pub fn forward_from(&self, ids: &[u32], from: usize) -> Result<Vec<f32>> {
        if from >= ids.len() {
            return Err(Error::Input {
                index: from,
                detail: format!("no positions from {from} of {}", ids.len()),
            });
        }
        self.forward_batch(ids, 1, &mut self.cache(), Some(from))
    }

    /// Runs `b` rows of equal length (`ids` row-major `[b, s]`) after what the cache holds.
    /// Returns the logits of the last position of each row (`[b, vocab]`), or of positions
    /// `from..s` of each row (`[b * (s - from), vocab]`). Every row is computed as if alone:
    /// its padded positions are masked out and its rope positions start at its first real token.
    fn forward_batch(
        &self,
        ids: &[u32],
        b: usize,
        cache: &mut KvCache,
        from: Option<usize>,
    ) -> Result<Vec<f32>> {
        let c = self.cfg;
        let s = ids.len() / b.max(1);
        if b == 0 || s == 0 || s * b != ids.len() || cache.pads.len() != b {
            return Err(Error::Input {
                index: 0,
                detail: format!("{} ids are not {b} equal rows of the cache", ids.len()),
            });
        }
        let hd = c.dim / c.heads;
        let rep = c.heads / c.kv_heads;
        let start = cache.len;
        let t = start + s;
        let positions: Vec<usize> = (0..b)
            .flat_map(|r| (start..t).map(move |j| (r, j)))
            .map(|(r, j)| j.saturating_sub(cache.pads[r]))
            .collect();
        let (cos, sin) = self.rope_tables(&positions, b, s);
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
            Some(Tensor::<4>::from_data(
                TensorData::new(m, [b, 1, rep * s, t]),
                &self.device,
            ))
        } else {
            None
        };
        let idx: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [b * s]), &self.device);
        let mut x = self.embed.clone().select(0, idx);
        for (l, blk) in self.blocks.iter().enumerate() {
            let h = self.rms_norm(x.clone(), &blk.attn_norm);
            let heads = |w: &Tensor<2>, n: usize| {
                h.clone()
                    .matmul(w.clone())
                    .reshape([b, s, n, hd])
                    .swap_dims(1, 2)
            };
            let q = Self::rope(heads(&blk.wq, c.heads), &cos, &sin);
            let k = Self::rope(heads(&blk.wk, c.kv_heads), &cos, &sin);
            let v = heads(&blk.wv, c.kv_heads);
            let k = match cache.k[l].take() {
                Some(prev) => Tensor::cat(vec![prev, k], 2),
                None => k,
            };
            let v = match cache.v[l].take() {
                Some(prev) => Tensor::cat(vec![prev, v], 2),
                None => v,
            };
            cache.k[l] = Some(k.clone());
            cache.v[l] = Some(v.clone());
            // Grouped-query attention without copying keys: query head j = kv * rep + g uses
            // key/value head kv, so the rep query heads of a group stack into one matmul.
            let q = q.reshape([b, c.kv_heads, rep * s, hd]);
            let mut scores = q.matmul(k.swap_dims(2, 3)).div_scalar((hd as f32).sqrt());
            if let Some(m) = &mask {
                scores = scores + m.clone();
            }
            let att = softmax(scores, 3)
                .matmul(v)
                .reshape([b, c.heads, s, hd])
                .swap_dims(1, 2)
                .reshape([b * s, c.dim]);
            x = x + att.matmul(blk.wo.clone());
            let h = self.rms_norm(x.clone(), &blk.ffn_norm);
            let ff = silu(h.clone().matmul(blk.gate.clone())) * h.matmul(blk.up.clone());
            x = x + ff.matmul(blk.down.clone());
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
        let last = self.rms_norm(rows, &self.norm);
        last.matmul(self.embed_t.clone())
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Data(format!("{e:?}")))
    }

    /// Greedy decoding: up to `max_new` tokens after `prompt`, stopping at `eos`.
    pub fn generate_greedy(
        &self,
        prompt: &[u32],
        max_new: usize,
        eos: Option<u32>,
    ) -> Result<Vec<u32>> {
        self.generate(prompt, max_new, eos, None)
    }

    /// Decoding: greedy, or seeded sampling as `gleaner_protocol::sampling` specifies it.
    pub fn generate(
        &self,
        prompt: &[u32],
        max_new: usize,
        eos: Option<u32>,
        sampling: Option<Sampling>,
    ) -> Result<Vec<u32>> {
        let mut out = self.generate_batch(&[prompt], max_new, eos, &[sampling])?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Decodes several prompts together: one batched forward per step, so the weights are read
    /// once for all rows. Rows are left-padded to the longest prompt and masked, so each row's
    /// tokens are what decoding it alone gives (up to float rounding). `sampling[i]` is row
    /// `i`'s rule; a row stops at `eos` while the others go on.
    pub fn generate_batch(
        &self,
        prompts: &[&[u32]],
        max_new: usize,
        eos: Option<u32>,
        sampling: &[Option<Sampling>],
    ) -> Result<Vec<Vec<u32>>> {
        check_batch(prompts, sampling)?;
        let b = prompts.len();
        let mut outs = vec![Vec::new(); b];
        if b == 0 || max_new == 0 {
            return Ok(outs);
        }
        let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
        let mut ids = Vec::with_capacity(b * longest);
        for (p, &pad) in prompts.iter().zip(&pads) {
            ids.extend(std::iter::repeat_n(p[0], pad));
            ids.extend_from_slice(p);
        }
        let mut rngs: Vec<Option<SplitMix64>> = sampling
            .iter()
            .map(|s| s.map(|s| SplitMix64::new(s.seed)))
            .collect();
        let mut cache = self.batch_cache(pads);
        let mut logits = self.forward_batch(&ids, b, &mut cache, None)?;
        let v = self.cfg.vocab;
        let mut done = vec![false; b];
        for _ in 0..max_new {
            let mut next = Vec::with_capacity(b);
            for r in 0..b {
                if done[r] {
                    next.push(eos.unwrap_or(0));
                    continue;
                }
                let row = &logits[r * v..(r + 1) * v];
                let tok = match (&sampling[r], rngs[r].as_mut()) {
                    (Some(s), Some(g)) => sample(row, s.temperature, s.top_p, g),
                    _ => argmax(row),
                };
                outs[r].push(tok);
                done[r] = Some(tok) == eos;
                next.push(tok);
            }
            if (0..b).all(|r| done[r] || outs[r].len() >= max_new) {
                break;
            }
            logits = self.forward_batch(&next, b, &mut cache, None)?;
        }
        Ok(outs)
    }
}

/// The logit margin within which the verifier accepts a claimed token: a greedy token must be
/// within it of the top logit, a sampled one must be what the seeded sampler could take had
/// every logit moved by half of it ([`gleaner_protocol::sampling::reachable`]). Calibration, from
/// `gleaner bench generate`: our f32 backends differ from each other by ~1e-5 in a logit; the
/// smallest top-2 gap on the reference prompt is 0.22, and candle's quantized-activation kernels
/// flip that token; substituted tokens sit several logits below the top.
pub const GENERATE_MARGIN: f32 = 0.5;

/// How a generation must have been decoded, for [`Llama::verify`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decoding {
    /// Most new tokens.
    pub max_new: usize,
    /// End-of-sequence token: decoding stops after it, and only there.
    pub eos: Option<u32>,
    /// Seeded sampling, or greedy when `None`.
    pub sampling: Option<Sampling>,
    /// Logit margin ([`GENERATE_MARGIN`]).
    pub margin: f32,
}

/// How a claimed continuation fares under teacher forcing.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenCheck {
    /// For each claimed token: top logit minus the claimed token's logit (0 when it is the top).
    pub gaps: Vec<f32>,
    /// The largest gap.
    pub max_gap: f32,
    /// Whether the claim is accepted.
    pub accepted: bool,
    /// Why not, when it is not.
    pub reason: Option<String>,
}

impl TokenCheck {
    fn reject(reason: String) -> Self {
        Self {
            gaps: Vec::new(),
            max_gap: 0.0,
            accepted: false,
            reason: Some(reason),
        }
    }
}

impl Llama {
    /// Re-scores `claimed` after `prompt` in one forward pass and accepts it when every claimed
    /// token's logit is within `margin` of the top logit at its position (a replica whose floats
    /// differ may take the other side of a near-tie; one that substitutes a token may not).
    pub fn check_greedy(&self, prompt: &[u32], claimed: &[u32], margin: f32) -> Result<TokenCheck> {
        self.verify(
            prompt,
            claimed,
            &Decoding {
                max_new: claimed.len(),
                eos: None,
                sampling: None,
                margin,
            },
        )
    }

    /// Verifies a claimed continuation in one teacher-forced pass over `prompt` + `claimed`:
    /// its length and stop (at most `max_new` tokens; fewer only when the last is `eos`, which
    /// appears nowhere else), then each token against the logits at its position: greedy within
    /// the margin of the top, or sampled as the seeded sampler could have taken it for its draw.
    pub fn verify(&self, prompt: &[u32], claimed: &[u32], rule: &Decoding) -> Result<TokenCheck> {
        if prompt.is_empty() {
            return Err(Error::Input {
                index: 0,
                detail: "empty prompt".into(),
            });
        }
        let n = claimed.len();
        if n == 0 {
            return Ok(TokenCheck::reject("no tokens".into()));
        }
        if n > rule.max_new {
            return Ok(TokenCheck::reject(format!(
                "{n} tokens, more than max_tokens {}",
                rule.max_new
            )));
        }
        if let Some(eos) = rule.eos {
            if let Some(k) = claimed[..n - 1].iter().position(|&t| t == eos) {
                return Ok(TokenCheck::reject(format!(
                    "end of sequence at token {k}, before the end"
                )));
            }
            if n < rule.max_new && claimed[n - 1] != eos {
                return Ok(TokenCheck::reject(format!(
                    "stopped after {n} of {} tokens without the end-of-sequence token",
                    rule.max_new
                )));
            }
        }
        let v = self.cfg.vocab;
        if let Some(k) = claimed.iter().position(|&t| t as usize >= v) {
            return Ok(TokenCheck::reject(format!(
                "token {k} ({}) is outside the vocabulary",
                claimed[k]
            )));
        }
        let mut ids = prompt.to_vec();
        ids.extend_from_slice(&claimed[..n - 1]);
        let logits = self.forward_from(&ids, prompt.len() - 1)?;
        let mut rng = rule.sampling.map(|s| SplitMix64::new(s.seed));
        let mut gaps = Vec::with_capacity(n);
        let mut reason = None;
        for (k, &tok) in claimed.iter().enumerate() {
            let row = &logits[k * v..(k + 1) * v];
            let top = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let gap = top - row[tok as usize];
            gaps.push(gap);
            let ok = match (rule.sampling, rng.as_mut()) {
                (Some(s), Some(r)) => {
                    reachable(row, s.temperature, s.top_p, r.next_f64(), tok, rule.margin)
                }
                _ => gap <= rule.margin,
            };
            if !ok && reason.is_none() {
                reason = Some(match rule.sampling {
                    Some(_) => format!(
                        "token {k} ({tok}) is not what the seeded sampler takes within the margin \
                         (it is {gap:.3} below the top logit)"
                    ),
                    None => format!(
                        "token {k} ({tok}) is {gap:.3} below the top logit, beyond the margin {}",
                        rule.margin
                    ),
                });
            }
        }
        let max_gap = gaps.iter().copied().fold(0f32, f32::max);
        Ok(TokenCheck {
            accepted: reason.is_none(),
            reason,
            max_gap,
            gaps,
        })
    }
}

/// The rules every batched decoder checks: no empty prompt, one sampling rule per prompt.
pub(crate) fn check_batch(prompts: &[&[u32]], sampling: &[Option<Sampling>]) -> Result<()> {
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(Error::Input {
            index: i,
            detail: "empty prompt".into(),
        });
    }
    if sampling.len() != prompts.len() {
        return Err(Error::Input {
            index: 0,
            detail: "one sampling rule per prompt".into(),
        });
    }
    Ok(())
}

/// Seeded sampling parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Softmax temperature (> 0).
    pub temperature: f64,
    /// Nucleus mass.
    pub top_p: f64,
    /// RNG seed.
    pub seed: u64,
}

/// SmolLM2's chat template for one user turn, ready for the assistant's reply.
pub fn chat_prompt(user: &str) -> String {
    format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}
