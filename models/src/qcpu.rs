//! A CPU decoder for SmolLM2 that computes on the GGUF's quantized weights (Q4_1 layers, Q8_0
//! embedding) instead of an f32 copy: decoding one token reads ~95 MB of weights instead of
//! ~540 MB, which is what bounds a CPU at batch 1.
//!
//! Same semantics as [`crate::smollm::Llama`] (the reference the verifier re-scores with):
//! every weight is dequantised to the same f32 value (`d * q + m`, two roundings, as
//! [`crate::gguf::Gguf::dequantize`] does) right before it is used, and activations stay f32:
//! nothing quantizes activations (candle and llama.cpp do, which moves logits). Only the order
//! of float additions differs, so logits agree with the reference to ~1e-4 (tested), far inside
//! the verifier's margin.
//!
//! Work is split over output rows with rayon. Sequences of a batch need no padding: a step's
//! rows are all the new tokens of all sequences, and attention runs per sequence over its own
//! key/value cache. Decoding itself (sampling, stopping) and the teacher-forced check are
//! [`Decoder`]'s provided methods, shared with the Burn decoder.

use std::path::Path;

use rayon::prelude::*;

use crate::gguf::{GgmlType, Gguf, f16_to_f32};
use crate::smollm::{Decoder, LlamaConfig, Session};
use crate::{Error, Result};

fn bad(msg: impl Into<String>) -> Error {
    Error::Weights {
        path: "gguf".into(),
        detail: msg.into(),
    }
}

/// A weight matrix `[rows (out), cols (in)]`: each row's blocks of 32 weights contiguous, as in
/// the GGUF, with the blocks' f16 scales converted to f32 once at load.
struct QMat {
    ty: GgmlType,
    /// Per block: `[d, m]` (Q4_1) or `[d]` (Q8_0).
    scales: Vec<f32>,
    /// Per block: 16 bytes of nibbles (Q4_1: weight j low, j + 16 high) or 32 i8 (Q8_0).
    quants: Vec<u8>,
    /// F32 weights, row-major.
    dense: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl QMat {
    fn load(g: &Gguf, name: &str) -> Result<Self> {
        let (t, bytes) = g.tensor_bytes(name)?;
        let [cols, rows] = t.dims[..] else {
            return Err(bad(format!("{name} is not 2-D")));
        };
        let (rows, cols) = (rows as usize, cols as usize);
        if cols % 32 != 0 {
            return Err(bad(format!("{name}: rows of {cols} are not whole blocks")));
        }
        let h = |b: &[u8]| f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
        let mut m = Self {
            ty: t.ty,
            scales: Vec::new(),
            quants: Vec::new(),
            dense: Vec::new(),
            rows,
            cols,
        };
        match t.ty {
            GgmlType::Q4_1 => {
                for blk in bytes.chunks_exact(20) {
                    m.scales.extend([h(&blk[0..2]), h(&blk[2..4])]);
                    m.quants.extend_from_slice(&blk[4..]);
                }
            }
            GgmlType::Q8_0 => {
                for blk in bytes.chunks_exact(34) {
                    m.scales.push(h(&blk[0..2]));
                    m.quants.extend_from_slice(&blk[2..]);
                }
            }
            GgmlType::F32 => m.dense = g.dequantize(name)?,
            other => return Err(bad(format!("{name}: {other:?} is not supported here"))),
        }
        Ok(m)
    }

    /// Row `r` dequantised into `out` (`cols` values): `d * q + m` (Q4_1) or `d * q` (Q8_0),
    /// the same f32 values as [`Gguf::dequantize`].
    #[inline(always)]
    fn row(&self, r: usize, out: &mut [f32]) {
        let nb = self.cols / 32;
        match self.ty {
            GgmlType::Q4_1 => {
                let sc = &self.scales[r * nb * 2..(r + 1) * nb * 2];
                let qs = &self.quants[r * nb * 16..(r + 1) * nb * 16];
                for ((s, q), o) in sc
                    .chunks_exact(2)
                    .zip(qs.chunks_exact(16))
                    .zip(out.chunks_exact_mut(32))
                {
                    let q: &[u8; 16] = q.try_into().expect("16");
                    let o: &mut [f32; 32] = o.try_into().expect("32");
                    for j in 0..16 {
                        o[j] = s[0] * f32::from(q[j] & 0x0f) + s[1];
                        o[j + 16] = s[0] * f32::from(q[j] >> 4) + s[1];
                    }
                }
            }
            GgmlType::Q8_0 => {
                let sc = &self.scales[r * nb..(r + 1) * nb];
                let qs = &self.quants[r * nb * 32..(r + 1) * nb * 32];
                for ((&d, q), o) in sc
                    .iter()
                    .zip(qs.chunks_exact(32))
                    .zip(out.chunks_exact_mut(32))
                {
                    for (oj, &qj) in o.iter_mut().zip(q) {
                        *oj = d * f32::from(qj as i8);
                    }
                }
            }
            _ => out.copy_from_slice(&self.dense[r * self.cols..(r + 1) * self.cols]),
        }
    }

    /// Row `r` of the matrix times `x` (`cols` values), dequantising on the fly.
    #[inline(always)]
    fn row_dot(&self, r: usize, x: &[f32]) -> f32 {
        let nb = self.cols / 32;
        let mut lo = [0f32; 16];
        let mut hi = [0f32; 16];
        match self.ty {
            GgmlType::Q4_1 => {
                let sc = &self.scales[r * nb * 2..(r + 1) * nb * 2];
                let qs = &self.quants[r * nb * 16..(r + 1) * nb * 16];
                for ((s, q), xb) in sc
                    .chunks_exact(2)
                    .zip(qs.chunks_exact(16))
                    .zip(x.chunks_exact(32))
                {
                    let q: &[u8; 16] = q.try_into().expect("16");
                    let xb: &[f32; 32] = xb.try_into().expect("32");
                    let (d, m) = (s[0], s[1]);
                    for j in 0..16 {
                        lo[j] += (d * f32::from(q[j] & 0x0f) + m) * xb[j];
                        hi[j] += (d * f32::from(q[j] >> 4) + m) * xb[j + 16];
                    }
                }
            }
            GgmlType::Q8_0 => {
                let sc = &self.scales[r * nb..(r + 1) * nb];
                let qs = &self.quants[r * nb * 32..(r + 1) * nb * 32];
                for ((&d, q), xb) in sc.iter().zip(qs.chunks_exact(32)).zip(x.chunks_exact(32)) {
                    let q: &[u8; 32] = q.try_into().expect("32");
                    let xb: &[f32; 32] = xb.try_into().expect("32");
                    for j in 0..16 {
                        lo[j] += (d * f32::from(q[j] as i8)) * xb[j];
                        hi[j] += (d * f32::from(q[j + 16] as i8)) * xb[j + 16];
                    }
                }
            }
            _ => return dot(&self.dense[r * self.cols..(r + 1) * self.cols], x),
        }
        let mut s = 0f32;
        for j in 0..16 {
            s += lo[j] + hi[j];
        }
        s
    }

    /// Output rows `first..first + out.len() / n` for all `n` rows of `x`, transposed
    /// (`out[k * n + i]` = row `first + k` times `x[i]`).
    #[inline(always)]
    fn rows_into(&self, first: usize, x: &[f32], n: usize, out: &mut [f32]) {
        let cols = self.cols;
        if n == 1 {
            for (k, o) in out.iter_mut().enumerate() {
                *o = self.row_dot(first + k, x);
            }
            return;
        }
        let mut w = vec![0f32; cols];
        for (k, o) in out.chunks_exact_mut(n).enumerate() {
            self.row(first + k, &mut w);
            for (i, oi) in o.iter_mut().enumerate() {
                *oi = dot(&w, &x[i * cols..(i + 1) * cols]);
            }
        }
    }

    /// [`QMat::rows_into`] compiled for AVX2 (8-wide vectors), chosen at run time.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn rows_into_avx2(&self, first: usize, x: &[f32], n: usize, out: &mut [f32]) {
        self.rows_into(first, x, n, out);
    }

    fn rows_dispatch(&self, first: usize, x: &[f32], n: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected on this CPU just above.
            unsafe { self.rows_into_avx2(first, x, n, out) };
            return;
        }
        self.rows_into(first, x, n, out);
    }

    /// Output rows `first..first + out.len() / n` for all `n` rows of `x`, transposed, as one
    /// GEMM: the chunk's weight rows are dequantised into an f32 panel (the same values as
    /// [`QMat::row`]) and multiplied with the packed kernels of the `gemm` crate. For prefill and
    /// the verifier's teacher-forced pass, where `n` is tens to hundreds of rows.
    fn rows_gemm(&self, first: usize, x: &[f32], n: usize, out: &mut [f32]) {
        let cols = self.cols;
        let k = out.len() / n;
        let mut panel = vec![0f32; k * cols];
        for (r, row) in panel.chunks_exact_mut(cols).enumerate() {
            self.row(first + r, row);
        }
        // SAFETY: `panel` is `[k, cols]` row-major, `x` is `[n, cols]` row-major read as its
        // transpose `[cols, n]` (row stride 1, column stride `cols`), `out` is `[k, n]`
        // row-major; all three are at least that long and `out` aliases neither input.
        unsafe {
            gemm::gemm(
                k,
                n,
                cols,
                out.as_mut_ptr(),
                1,
                n as isize,
                false,
                panel.as_ptr(),
                1,
                cols as isize,
                x.as_ptr(),
                cols as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }

    /// `y[i] = W · x[i]` for `n` rows of `x` (`[n, cols]` → `[n, rows]`). For `n > 1` each
    /// weight row is dequantised once and used for all rows; from [`GEMM_ROWS`] rows on, a
    /// chunk of weight rows at a time through a packed GEMM.
    fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        let rows = self.rows;
        let chunk = if n >= GEMM_ROWS { 128 } else { 64 };
        // Transposed result: thread chunks of output rows are contiguous.
        let mut yt = vec![0f32; rows * n];
        yt.par_chunks_mut(chunk * n)
            .enumerate()
            .for_each(|(c, out)| {
                if n >= GEMM_ROWS {
                    self.rows_gemm(c * chunk, x, n, out);
                } else {
                    self.rows_dispatch(c * chunk, x, n, out);
                }
            });
        if n == 1 {
            return yt;
        }
        let mut y = vec![0f32; n * rows];
        for r in 0..rows {
            for i in 0..n {
                y[i * rows + r] = yt[r * n + i];
            }
        }
        y
    }
}

/// Rows of activations from which [`QMat::matmul`] runs a GEMM per chunk of weight rows (below,
/// dot products over each dequantised weight row).
const GEMM_ROWS: usize = 8;

/// A dot product with eight independent partial sums, which the compiler turns into SIMD.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

struct QBlock {
    attn_norm: Vec<f32>,
    wq: QMat,
    wk: QMat,
    wv: QMat,
    wo: QMat,
    ffn_norm: Vec<f32>,
    gate: QMat,
    up: QMat,
    down: QMat,
}

/// SmolLM2 decoding on the CPU from quantized weights.
pub struct QuantLlama {
    cfg: LlamaConfig,
    embed: QMat,
    blocks: Vec<QBlock>,
    norm: Vec<f32>,
    /// Rope inverse frequencies `base^(-2i/d)`, f64 as in the reference.
    inv_freq: Vec<f64>,
}

impl std::fmt::Debug for QuantLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantLlama")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// One sequence's keys and values: per layer `[t, kv_heads * head_dim]`.
struct SeqCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl QuantLlama {
    /// Loads the quantized weights of a SmolLM2 GGUF, with `cfg` read by [`crate::smollm::Llama`].
    pub fn load(path: &Path, cfg: LlamaConfig) -> Result<Self> {
        Self::from_gguf(&Gguf::open(path)?, cfg)
    }

    /// The quantized weights of an opened GGUF.
    pub fn from_gguf(g: &Gguf, cfg: LlamaConfig) -> Result<Self> {
        let vec = |name: &str| g.dequantize(name);
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(QBlock {
                attn_norm: vec(&p("attn_norm"))?,
                wq: QMat::load(g, &p("attn_q"))?,
                wk: QMat::load(g, &p("attn_k"))?,
                wv: QMat::load(g, &p("attn_v"))?,
                wo: QMat::load(g, &p("attn_output"))?,
                ffn_norm: vec(&p("ffn_norm"))?,
                gate: QMat::load(g, &p("ffn_gate"))?,
                up: QMat::load(g, &p("ffn_up"))?,
                down: QMat::load(g, &p("ffn_down"))?,
            });
        }
        let hd = cfg.dim / cfg.heads;
        let inv_freq = (0..hd / 2)
            .map(|i| cfg.rope_base.powf(-2.0 * i as f64 / hd as f64))
            .collect();
        let embed = QMat::load(g, "token_embd.weight")?;
        if embed.rows != cfg.vocab || embed.cols != cfg.dim {
            return Err(bad("token_embd does not match the config"));
        }
        Ok(Self {
            cfg,
            embed,
            blocks,
            norm: vec("output_norm.weight")?,
            inv_freq,
        })
    }

    fn rms_norm(&self, x: &[f32], w: &[f32]) -> Vec<f32> {
        let d = self.cfg.dim;
        let mut out = vec![0f32; x.len()];
        for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
            let inv = 1.0 / (ms + self.cfg.eps as f32).sqrt();
            for j in 0..d {
                o[j] = row[j] * inv * w[j];
            }
        }
        out
    }

    /// cos and sin of the rope angles at `pos` (`half` of each): the same for every layer and
    /// head, so computed once per row and step.
    fn rope_angles(&self, pos: usize) -> (Vec<f32>, Vec<f32>) {
        self.inv_freq
            .iter()
            .map(|f| {
                let theta = pos as f64 * f;
                (theta.cos() as f32, theta.sin() as f32)
            })
            .unzip()
    }

    /// Rotates adjacent pairs (2i, 2i+1) of every head of one row by `angles`.
    fn rope(&self, row: &mut [f32], (cos, sin): &(Vec<f32>, Vec<f32>)) {
        let hd = self.cfg.dim / self.cfg.heads;
        for head in row.chunks_exact_mut(hd) {
            for i in 0..hd / 2 {
                let (x0, x1) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = x0 * cos[i] - x1 * sin[i];
                head[2 * i + 1] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }

    /// Runs one step: `tokens[r]` is appended to sequence `seq[r]` (rows of one sequence in
    /// order). Returns the logits of the rows listed in `want` (`[want.len(), vocab]`).
    fn step(
        &self,
        tokens: &[u32],
        seq: &[usize],
        caches: &mut [SeqCache],
        want: &[usize],
    ) -> Result<Vec<f32>> {
        let c = self.cfg;
        let (n, d) = (tokens.len(), c.dim);
        let hd = d / c.heads;
        let kvd = c.kv_heads * hd;
        let rep = c.heads / c.kv_heads;
        let mut x = vec![0f32; n * d];
        for (r, &t) in tokens.iter().enumerate() {
            if t as usize >= c.vocab {
                return Err(Error::Input {
                    index: r,
                    detail: format!("token {t} outside the vocabulary"),
                });
            }
            self.embed.row(t as usize, &mut x[r * d..(r + 1) * d]);
        }
        // Each row's position in its sequence.
        let mut pos = vec![0usize; n];
        let mut next: Vec<usize> = caches.iter().map(|c| c.len).collect();
        for r in 0..n {
            pos[r] = next[seq[r]];
            next[seq[r]] += 1;
        }
        let angles: Vec<_> = pos.iter().map(|&p| self.rope_angles(p)).collect();
        let scale = 1.0 / (hd as f32).sqrt();
        for (l, b) in self.blocks.iter().enumerate() {
            let h = self.rms_norm(&x, &b.attn_norm);
            let mut q = b.wq.matmul(&h, n);
            let mut k = b.wk.matmul(&h, n);
            let v = b.wv.matmul(&h, n);
            for r in 0..n {
                self.rope(&mut q[r * d..(r + 1) * d], &angles[r]);
                self.rope(&mut k[r * kvd..(r + 1) * kvd], &angles[r]);
                let cache = &mut caches[seq[r]];
                cache.k[l].extend_from_slice(&k[r * kvd..(r + 1) * kvd]);
                cache.v[l].extend_from_slice(&v[r * kvd..(r + 1) * kvd]);
            }
            // Attention, per row over its own sequence's keys up to its position.
            let mut att = vec![0f32; n * d];
            att.par_chunks_mut(d).enumerate().for_each(|(r, out)| {
                let cache = &caches[seq[r]];
                let (ks, vs) = (&cache.k[l], &cache.v[l]);
                let t = pos[r] + 1;
                let mut scores = vec![0f32; t];
                for h in 0..c.heads {
                    let g = h / rep;
                    let qh = &q[r * d + h * hd..r * d + (h + 1) * hd];
                    let mut max = f32::NEG_INFINITY;
                    for (j, s) in scores.iter_mut().enumerate() {
                        *s = dot(qh, &ks[j * kvd + g * hd..j * kvd + (g + 1) * hd]) * scale;
                        max = max.max(*s);
                    }
                    let mut z = 0f32;
                    for s in &mut scores {
                        *s = (*s - max).exp();
                        z += *s;
                    }
                    let o = &mut out[h * hd..(h + 1) * hd];
                    for (j, s) in scores.iter().enumerate() {
                        let p = s / z;
                        let vj = &vs[j * kvd + g * hd..j * kvd + (g + 1) * hd];
                        for (oi, vi) in o.iter_mut().zip(vj) {
                            *oi += p * vi;
                        }
                    }
                }
            });
            for (xi, oi) in x.iter_mut().zip(b.wo.matmul(&att, n)) {
                *xi += oi;
            }
            let h = self.rms_norm(&x, &b.ffn_norm);
            let mut gate = b.gate.matmul(&h, n);
            let up = b.up.matmul(&h, n);
            for (g, u) in gate.iter_mut().zip(&up) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
            for (xi, oi) in x.iter_mut().zip(b.down.matmul(&gate, n)) {
                *xi += oi;
            }
        }
        for (s, cache) in caches.iter_mut().enumerate() {
            cache.len = next[s];
        }
        let rows: Vec<f32> = want
            .iter()
            .flat_map(|&r| x[r * d..(r + 1) * d].iter().copied())
            .collect();
        let last = self.rms_norm(&rows, &self.norm);
        Ok(self.embed.matmul(&last, want.len()))
    }

    /// Empty caches for `n` sequences.
    fn caches(&self, n: usize) -> Vec<SeqCache> {
        let layers = self.cfg.layers;
        (0..n)
            .map(|_| SeqCache {
                k: vec![Vec::new(); layers],
                v: vec![Vec::new(); layers],
                len: 0,
            })
            .collect()
    }

    /// Logits of every position of `ids`, for comparison with the reference.
    pub fn forward_all(&self, ids: &[u32]) -> Result<Vec<f32>> {
        Decoder::forward_from(self, ids, 0)
    }
}

/// A batch on the quantized decoder: each sequence's own cache, no padding.
struct QuantSession<'a> {
    model: &'a QuantLlama,
    caches: Vec<SeqCache>,
}

impl Session for QuantSession<'_> {
    fn step(&mut self, tokens: &[u32], seqs: &[usize]) -> Result<Vec<f32>> {
        if tokens.len() != seqs.len() || seqs.iter().any(|&s| s >= self.caches.len()) {
            return Err(Error::Input {
                index: 0,
                detail: "one token per sequence of the batch".into(),
            });
        }
        let rows: Vec<usize> = (0..tokens.len()).collect();
        self.model.step(tokens, seqs, &mut self.caches, &rows)
    }
}

impl Decoder for QuantLlama {
    fn config(&self) -> LlamaConfig {
        self.cfg
    }

    /// Every prompt token of every sequence in one step.
    fn prefill<'a>(&'a self, prompts: &[&[u32]]) -> Result<(Box<dyn Session + 'a>, Vec<f32>)> {
        let mut caches = self.caches(prompts.len());
        let tokens: Vec<u32> = prompts.iter().flat_map(|p| p.iter().copied()).collect();
        let seq: Vec<usize> = prompts
            .iter()
            .enumerate()
            .flat_map(|(i, p)| std::iter::repeat_n(i, p.len()))
            .collect();
        let mut want = Vec::with_capacity(prompts.len());
        let mut end = 0;
        for (i, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                return Err(Error::Input {
                    index: i,
                    detail: "empty prompt".into(),
                });
            }
            end += p.len();
            want.push(end - 1);
        }
        let logits = self.step(&tokens, &seq, &mut caches, &want)?;
        Ok((
            Box::new(QuantSession {
                model: self,
                caches,
            }),
            logits,
        ))
    }

    fn forward_from(&self, ids: &[u32], from: usize) -> Result<Vec<f32>> {
        if from >= ids.len() {
            return Err(Error::Input {
                index: from,
                detail: format!("no positions from {from} of {}", ids.len()),
            });
        }
        let rows: Vec<usize> = (from..ids.len()).collect();
        self.step(ids, &vec![0; ids.len()], &mut self.caches(1), &rows)
    }
}
