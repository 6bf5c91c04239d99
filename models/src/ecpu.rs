//! all-MiniLM-L6-v2 (any [`BertConfig`]-shaped encoder) on the CPU with kernels of our own: what
//! `--backend cpu` embeds with.
//!
//! Same model and semantics as [`crate::Bert`], and built from it, so both hold the same f32
//! weights; computed differently:
//! - **No padding.** A batch's sequences are packed row after row. Every dense layer is one GEMM
//!   over the batch's real tokens (Σ lengths, not batch × longest), and attention runs per
//!   sequence over its own keys. Padding never enters a sum, so a row does not depend on its
//!   batch beyond the GEMM's summation order.
//! - **Fused.** Q, K and V are one GEMM against a concatenated `[h, 3h]` weight. Each bias (and
//!   each residual) is written into a GEMM's destination before the GEMM accumulates into it;
//!   GELU and LayerNorm run in place on the GEMM's output.
//! - **GEMM** from the `gemm` crate (packed, with AVX2/AVX-512 micro-kernels chosen at run time;
//!   the crate burn-flex and candle use), split over all cores with rayon.
//! - Softmax's `exp` and GELU's `erf` are branch-free approximations that vectorize (relative
//!   error ≤ 2.5e-7 and absolute ≤ 5e-7, tested against f64); the element-wise kernels are compiled
//!   for AVX2+FMA too and picked at run time.
//!
//! Tested against the Burn model on tiny random weights (max |difference| ≤ 1e-5) and against the
//! float64 reference on the real checkpoint (cosine ≥ 0.99999 on every row).
//!
//! Measured with `scripts/bench embed --backends cpu,flex --batches 32 --repeat 3` (1,000
//! sentences, 2 cores, AVX-512 EPYC): 261–271 sentences/s in-process and 246/s as a whole
//! `gleaner embed` process; Burn flex 139–142 (121 whole process); candle 0.11.1 built
//! `--release` 99–107 (108 whole process), length-sorted 141–156 (151). Largest difference
//! from flex 2.1e-7.

use rayon::prelude::*;

use crate::minilm::{Bert, BertConfig, LinearParts};
use crate::{Error, Result};

/// A dense layer: `y = x · w + b`, `w` row-major `[inp, out]`.
struct Dense {
    w: Vec<f32>,
    b: Vec<f32>,
    inp: usize,
    out: usize,
}

impl Dense {
    fn new(parts: LinearParts) -> Self {
        Self {
            w: parts.weight,
            b: parts.bias,
            inp: parts.inp,
            out: parts.out,
        }
    }

    /// Q, K and V as one layer: the weights side by side, `[inp, 3 · out]`.
    fn concat(parts: [LinearParts; 3]) -> Self {
        let (inp, out) = (parts[0].inp, parts[0].out);
        let mut w = Vec::with_capacity(inp * out * 3);
        for r in 0..inp {
            for p in &parts {
                w.extend_from_slice(&p.weight[r * out..(r + 1) * out]);
            }
        }
        let b = parts.iter().flat_map(|p| p.bias.iter().copied()).collect();
        Self {
            w,
            b,
            inp,
            out: out * 3,
        }
    }

    /// `dst[m, out] += x[m, inp] · w` (the caller has put the bias, and any residual, in `dst`).
    fn accumulate(&self, x: &[f32], dst: &mut [f32]) {
        let m = x.len() / self.inp;
        debug_assert_eq!(dst.len(), m * self.out);
        gemm_acc(m, self.out, self.inp, x, &self.w, dst);
    }
}

/// `c[m×n] += a[m×k] · b[k×n]`, all row-major.
fn gemm_acc(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    if m == 0 {
        return;
    }
    // Below ~1 MFLOP splitting over threads costs more than it saves.
    let par = if m * n * k >= 1 << 20 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the three buffers hold at least m×k, k×n and m×n values (asserted above), the
    // strides describe dense row-major matrices of those shapes, and `c` does not alias `a` or
    // `b` (it is a distinct `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct EncoderLayer {
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    inter: Dense,
    out: Dense,
    out_norm: Norm,
}

/// The encoder with the sentence-embedding head, on our CPU kernels.
pub struct CpuBert {
    hidden: usize,
    heads: usize,
    eps: f32,
    vocab: usize,
    max_positions: usize,
    word: Vec<f32>,
    position: Vec<f32>,
    /// Token type 0's row (single-segment input, as [`Bert`] uses).
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<EncoderLayer>,
}

impl std::fmt::Debug for CpuBert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBert")
            .field("hidden", &self.hidden)
            .field("heads", &self.heads)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

/// Rows per parallel chunk of the element-wise kernels.
const ROWS_PER_TASK: usize = 16;

impl CpuBert {
    /// Copies the weights of a Burn model built with `cfg`.
    pub fn from_bert(model: &Bert, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        if cfg.num_heads == 0 || !h.is_multiple_of(cfg.num_heads) {
            return Err(Error::Shape(format!(
                "hidden size {h} is not a multiple of {} heads",
                cfg.num_heads
            )));
        }
        let p = model.parts()?;
        let norm = |(gamma, beta): (Vec<f32>, Vec<f32>)| Norm { gamma, beta };
        let layers = p
            .layers
            .into_iter()
            .map(|l| EncoderLayer {
                qkv: Dense::concat([l.query, l.key, l.value]),
                attn_out: Dense::new(l.attn_out),
                attn_norm: norm(l.attn_norm),
                inter: Dense::new(l.inter),
                out: Dense::new(l.out),
                out_norm: norm(l.out_norm),
            })
            .collect::<Vec<_>>();
        let shapes_ok = p.word.len() == cfg.vocab_size * h
            && p.position.len() == cfg.max_position_embeddings * h
            && p.token_type.len() >= h
            && layers.iter().all(|l| {
                l.qkv.inp == h
                    && l.qkv.out == 3 * h
                    && l.attn_out.inp == h
                    && l.attn_out.out == h
                    && l.inter.inp == h
                    && l.out.inp == l.inter.out
                    && l.out.out == h
            });
        if !shapes_ok {
            return Err(Error::Shape(
                "weights do not match the encoder config".into(),
            ));
        }
        Ok(Self {
            hidden: h,
            heads: cfg.num_heads,
            eps: cfg.layer_norm_eps as f32,
            vocab: cfg.vocab_size,
            max_positions: cfg.max_position_embeddings,
            word: p.word,
            position: p.position,
            token_type: p.token_type[..h].to_vec(),
            embed_norm: norm(p.embed_norm),
            layers,
        })
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.hidden
    }

    /// Sentence embeddings of token-id rows (no padding: rows may differ in length): masked
    /// mean of the last hidden states, L2-normalised, `[rows.len(), hidden]` row-major.
    pub fn embed(&self, rows: &[&[u32]]) -> Result<Vec<f32>> {
        let h = self.hidden;
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        offsets.push(0usize);
        for (index, row) in rows.iter().enumerate() {
            if row.is_empty() || row.len() > self.max_positions {
                return Err(Error::Input {
                    index,
                    detail: format!(
                        "{} tokens; the encoder takes 1 to {}",
                        row.len(),
                        self.max_positions
                    ),
                });
            }
            if let Some(&id) = row.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(Error::Input {
                    index,
                    detail: format!("token id {id} is outside the vocabulary"),
                });
            }
            offsets.push(offsets[index] + row.len());
        }
        let t = offsets[rows.len()];
        if t == 0 {
            return Ok(Vec::new());
        }

        // Embeddings: word + position + type, then LayerNorm.
        let mut x = vec![0f32; t * h];
        for (row, &start) in rows.iter().zip(&offsets) {
            for (p, &id) in row.iter().enumerate() {
                let dst = &mut x[(start + p) * h..(start + p + 1) * h];
                let w = &self.word[id as usize * h..(id as usize + 1) * h];
                let pos = &self.position[p * h..(p + 1) * h];
                for (((d, &a), &b), &c) in dst.iter_mut().zip(w).zip(pos).zip(&self.token_type) {
                    *d = (a + b) + c;
                }
            }
        }
        self.layer_norm(&mut x, &self.embed_norm);

        let inter_w = self.layers.first().map_or(0, |l| l.inter.out);
        let mut qkv = vec![0f32; t * 3 * h];
        let mut ctx = vec![0f32; t * h];
        let mut a = vec![0f32; t * h];
        let mut inter = vec![0f32; t * inter_w];
        for l in &self.layers {
            fill_rows(&mut qkv, &l.qkv.b);
            l.qkv.accumulate(&x, &mut qkv);
            self.attention(&qkv, &offsets, &mut ctx);
            add_rows(&mut a, &x, &l.attn_out.b);
            l.attn_out.accumulate(&ctx, &mut a);
            self.layer_norm(&mut a, &l.attn_norm);
            fill_rows(&mut inter, &l.inter.b);
            l.inter.accumulate(&a, &mut inter);
            inter
                .par_chunks_mut(ROWS_PER_TASK * inter_w)
                .for_each(kernels::gelu);
            add_rows(&mut x, &a, &l.out.b);
            l.out.accumulate(&inter, &mut x);
            self.layer_norm(&mut x, &l.out_norm);
        }

        // Mean over each sequence's rows, then unit length.
        let mut out = vec![0f32; rows.len() * h];
        for (s, o) in out.chunks_exact_mut(h).enumerate() {
            let (start, end) = (offsets[s], offsets[s + 1]);
            for r in x[start * h..end * h].chunks_exact(h) {
                for (oi, &v) in o.iter_mut().zip(r) {
                    *oi += v;
                }
            }
            let count = (end - start) as f32;
            o.iter_mut().for_each(|v| *v /= count);
            let norm = o.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            o.iter_mut().for_each(|v| *v /= norm);
        }
        Ok(out)
    }

    fn layer_norm(&self, x: &mut [f32], n: &Norm) {
        let h = self.hidden;
        x.par_chunks_mut(ROWS_PER_TASK * h)
            .for_each(|rows| kernels::layer_norm(rows, &n.gamma, &n.beta, self.eps));
    }

    /// Self-attention of every sequence over its own rows: `ctx` (`[t, h]`) from `qkv`
    /// (`[t, 3h]`: queries, keys, values side by side).
    fn attention(&self, qkv: &[f32], offsets: &[usize], ctx: &mut [f32]) {
        let h = self.hidden;
        // Split `ctx` at the sequence boundaries so each sequence owns its rows.
        let mut parts = Vec::with_capacity(offsets.len() - 1);
        let mut rest = ctx;
        for w in offsets.windows(2) {
            let (head, tail) = rest.split_at_mut((w[1] - w[0]) * h);
            parts.push((w[0], head));
            rest = tail;
        }
        parts.into_par_iter().for_each(|(start, out)| {
            let len = out.len() / h;
            kernels::attend(
                &qkv[start * 3 * h..(start + len) * 3 * h],
                out,
                h,
                self.heads,
            );
        });
    }
}

/// Every row of `dst` set to `bias`.
fn fill_rows(dst: &mut [f32], bias: &[f32]) {
    for row in dst.chunks_exact_mut(bias.len()) {
        row.copy_from_slice(bias);
    }
}

/// Every row of `dst` set to the same row of `src` plus `bias`.
fn add_rows(dst: &mut [f32], src: &[f32], bias: &[f32]) {
    for (d, s) in dst
        .chunks_exact_mut(bias.len())
        .zip(src.chunks_exact(bias.len()))
    {
        for ((di, &si), &bi) in d.iter_mut().zip(s).zip(bias) {
            *di = si + bi;
        }
    }
}

/// Element-wise kernels, each written once (`*_impl`, always inlined) and compiled twice: for the
/// baseline target and for AVX2+FMA, which [`kernels`]' public functions pick at run time.
/// [`crate::qcpu`] builds its kernels from the same parts.
pub(crate) mod kernels {
    /// `exp(x)` in f32 without branches (so loops over it vectorize): `x = n·ln 2 + r` with
    /// `|r| ≤ ln 2 / 2`, a degree-7 Taylor polynomial for `e^r` (truncation < 1e-8 relative),
    /// and `2^n` built in the exponent bits. Inputs are clamped to [-87, 88] (results stay
    /// normal floats), which only softmax's far tails and erf's saturated range reach.
    #[inline(always)]
    pub(crate) fn exp(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        // ln 2 split in two (Cody–Waite) so that n·LN2_HI is exact for |n| ≤ 128.
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer.
        const ROUND: f32 = 12_582_912.0;
        let x = x.clamp(-87.0, 88.0);
        let t = x * LOG2E + ROUND;
        let n = t - ROUND;
        let r = (x - n * LN2_HI) - n * LN2_LO;
        let mut p = 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r + 1.0;
        p = p * r + 1.0;
        // `n` as an integer from `t`'s bits (both lie in [2^23, 2^24), where bits count units):
        // the same value as `n as i32`, without the saturating cast that stops vectorisation.
        let ni = t.to_bits() as i32 - ROUND.to_bits() as i32;
        let scale = f32::from_bits(((ni + 127) as u32) << 23);
        p * scale
    }

    /// `erf(x)` (Abramowitz & Stegun 7.1.26: absolute error ≤ 1.5e-7 in exact arithmetic).
    #[inline(always)]
    pub(super) fn erf(x: f32) -> f32 {
        const P: f32 = 0.327_591_1;
        const A: [f32; 5] = [
            0.254_829_6,
            -0.284_496_74,
            1.421_413_8,
            -1.453_152,
            1.061_405_4,
        ];
        let a = x.abs();
        let t = 1.0 / (1.0 + P * a);
        let poly = ((((A[4] * t + A[3]) * t + A[2]) * t + A[1]) * t + A[0]) * t;
        let y = 1.0 - poly * exp(-a * a);
        y.copysign(x)
    }

    #[inline(always)]
    fn gelu_impl(x: &mut [f32]) {
        for v in x {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }

    #[inline(always)]
    fn layer_norm_impl(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let h = gamma.len();
        for row in x.chunks_exact_mut(h) {
            let mean = sum8(row.iter().copied()) / h as f32;
            let var = sum8(row.iter().map(|v| (v - mean) * (v - mean))) / h as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }

    /// The largest value (NaNs skipped, as [`f32::max`] does) with eight independent partial
    /// maxima, so that it vectorizes; `-inf` for an empty slice.
    #[inline(always)]
    pub(crate) fn max8(x: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; 8];
        let chunks = x.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a = a.max(v);
            }
        }
        let m = rest.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        acc.iter().fold(m, |a, &v| a.max(v))
    }

    /// A sum with eight independent partial sums (vectorizes; also more accurate than one).
    #[inline(always)]
    pub(crate) fn sum8(it: impl Iterator<Item = f32>) -> f32 {
        let mut acc = [0f32; 8];
        for (i, v) in it.enumerate() {
            acc[i % 8] += v;
        }
        ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
    }

    /// Attention of one sequence: `qkv` is `[len, 3h]`, `out` is `[len, h]`.
    #[inline(always)]
    fn attend_impl(qkv: &[f32], out: &mut [f32], h: usize, heads: usize) {
        let d = h / heads;
        let len = out.len() / h;
        let scale = 1.0 / (d as f32).sqrt();
        // Keys of one head transposed, `[d, len]`, so a query's scores are axpys over `len`.
        let mut kt = vec![0f32; d * len];
        let mut scores = vec![0f32; len];
        for head in 0..heads {
            let (qo, ko, vo) = (head * d, h + head * d, 2 * h + head * d);
            for j in 0..len {
                for c in 0..d {
                    kt[c * len + j] = qkv[j * 3 * h + ko + c];
                }
            }
            for i in 0..len {
                let q = &qkv[i * 3 * h + qo..i * 3 * h + qo + d];
                scores.iter_mut().for_each(|s| *s = 0.0);
                for (c, &qc) in q.iter().enumerate() {
                    let qc = qc * scale;
                    for (s, &k) in scores.iter_mut().zip(&kt[c * len..(c + 1) * len]) {
                        *s += qc * k;
                    }
                }
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for s in scores.iter_mut() {
                    *s = exp(*s - max);
                }
                let inv = 1.0 / sum8(scores.iter().copied());
                let o = &mut out[i * h + qo..i * h + qo + d];
                o.iter_mut().for_each(|v| *v = 0.0);
                for (j, &p) in scores.iter().enumerate() {
                    let p = p * inv;
                    let v = &qkv[j * 3 * h + vo..j * 3 * h + vo + d];
                    for (oi, &vi) in o.iter_mut().zip(v) {
                        *oi += p * vi;
                    }
                }
            }
        }
    }

    /// Defines `pub(super) fn $name` running `$imp` compiled for AVX2+FMA when the CPU has them.
    macro_rules! dispatch {
        ($name:ident, $avx:ident, $imp:ident, ($($arg:ident: $ty:ty),*)) => {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn $avx($($arg: $ty),*) {
                $imp($($arg),*)
            }

            pub(super) fn $name($($arg: $ty),*) {
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: AVX2 and FMA were detected on this CPU just above.
                    unsafe { $avx($($arg),*) };
                    return;
                }
                $imp($($arg),*)
            }
        };
    }
    pub(crate) use dispatch;

    dispatch!(gelu, gelu_avx2, gelu_impl, (x: &mut [f32]));
    dispatch!(layer_norm, layer_norm_avx2, layer_norm_impl, (x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32));
    dispatch!(attend, attend_avx2, attend_impl, (qkv: &[f32], out: &mut [f32], h: usize, heads: usize));
}

#[cfg(test)]
mod tests {
    use super::kernels::{erf, exp, max8};

    /// `max8` is `f32::max` folded, NaNs skipped, for every length around its chunks.
    #[test]
    fn max8_is_the_folded_max() {
        for len in 0..40 {
            let mut x: Vec<f32> = (0..len).map(|i| ((i * 7919) % 37) as f32 - 18.0).collect();
            let want = |x: &[f32]| x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max8(&x), want(&x), "length {len}");
            if len > 3 {
                x[len - 1] = 1e9;
                x[2] = f32::NAN;
                assert_eq!(max8(&x), 1e9, "length {len} with a NaN");
            }
        }
    }

    /// erf in f64 by its Maclaurin series (|x| ≤ 3) or its asymptotic complement.
    fn erf64(x: f64) -> f64 {
        if x.abs() > 3.0 {
            // erfc(x) ≈ e^{-x²}/(x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶)) for x > 3.
            let a = x.abs();
            let a2 = a * a;
            let c = (-a2).exp() / (a * std::f64::consts::PI.sqrt())
                * (1.0 - 1.0 / (2.0 * a2) + 3.0 / (4.0 * a2 * a2) - 15.0 / (8.0 * a2 * a2 * a2));
            return (1.0 - c).copysign(x);
        }
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_is_within_two_ulp_over_the_range_used() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = f64::from(x).exp();
            let rel = ((f64::from(exp(x)) - want) / want).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e4) < 1e-37 && exp(-1e4) >= 0.0);
    }

    #[test]
    fn erf_is_within_5e_7() {
        let mut worst = 0f64;
        let mut x = -6.0f32;
        while x <= 6.0 {
            worst = worst.max((f64::from(erf(x)) - erf64(f64::from(x))).abs());
            x += 0.001;
        }
        assert!(worst < 5e-7, "worst absolute error {worst:e}");
        assert!(erf(0.0).abs() < 5e-7);
        assert!(erf(-0.5) < 0.0 && (erf(0.5) + erf(-0.5)).abs() < 1e-7);
    }
}
