//! A CPU decoder for SmolLM2 that computes on the GGUF's quantized weights (Q4_1 layers, Q8_0
//! embedding) instead of an f32 copy: decoding one token reads ~95 MB of weights instead of
//! ~540 MB, which is what bounds a CPU at batch 1.
//!
//! Same semantics as [`crate::smollm::Llama`] (the reference the verifier re-scores with):
//! every weight is dequantised to the same f32 value (`d * q + m`, two roundings, as
//! [`crate::gguf::Gguf::dequantize`] does) right before it is used, and when generating,
//! activations stay f32 (candle and llama.cpp quantize them to 8 bits, which moves logits by
//! tenths and flips near-ties). Only the order of float additions differs, so logits agree with
//! the reference to ~1e-4 (tested), far inside the verifier's margin.
//!
//! The verifier's teacher-forced pass ([`Decoder::forward_from`]) on CPUs with AVX-512 VNNI
//! multiplies 16-bit activations instead ([`avx512q`]): each 32 values of a row scaled to
//! ±32767, so each moves by at most 1/65534 of its block's largest, and the weights' 4- or 8-bit
//! `q` exactly, twice the multiply-adds per instruction of f32. Its logits differ from the
//! reference's by ~1e-2 at most on the calibration prompt (`gleaner bench generate` prints it;
//! tested below a tenth of [`crate::smollm::GENERATE_MARGIN`]).
//!
//! Work is split over output rows with rayon. Sequences of a batch need no padding: a step's
//! rows are all the new tokens of all sequences, and attention runs per sequence over its own
//! key/value cache. Decoding itself (sampling, stopping) and the teacher-forced check are
//! [`Decoder`]'s provided methods, shared with the Burn decoder.
//!
//! Many rows at once (a prompt; the verifier's teacher-forced pass over prompt and output) are
//! compute-bound, not memory-bound: there each matmul is a GEMM. On CPUs with AVX-512 it is our
//! own kernel ([`matmul_xt`]): the activations transposed once, each chunk of weight rows
//! dequantised into an f32 block that stays in cache, 12 rows × 32 positions of accumulators
//! (the verifier's 16-bit kernel: 6 rows × 32 positions, see [`avx512q`]); the query, key and
//! value projections run in one parallel loop, as do gate and up. Attention over one
//! sequence's rows is tiles of scores and weighted values per head and 16 query rows. The
//! verifier's pass keeps its activations positions-minor between layers
//! ([`QuantLlama::forward_cols`]), the layout the kernels multiply, so no product is transposed
//! except attention's inputs. Its greedy check reads two outputs a position of the output
//! layer: every row is first multiplied in 8 bits with a bound on its distance from the 16-bit
//! output, and only the rows that can be the largest are computed in 16 bits (`head`).
//! Elsewhere the `gemm` crate multiplies.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::gguf::{GgmlType, Gguf, f16_to_f32};
use crate::smollm::{Decoder, LlamaConfig, Session};
use crate::{Error, Result};

#[cfg(target_arch = "x86_64")]
mod head;

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
    /// The output layer's prefilter sums ([`head::RowSums`], Q8_0 only), made once.
    #[cfg(target_arch = "x86_64")]
    row_sums: std::sync::OnceLock<head::RowSums>,
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
            #[cfg(target_arch = "x86_64")]
            row_sums: std::sync::OnceLock::new(),
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
        // At load, not in the first check.
        #[cfg(target_arch = "x86_64")]
        if head::runs(&m) {
            m.row_sums();
        }
        Ok(m)
    }

    /// [`head::RowSums`] of this Q8_0 matrix.
    #[cfg(target_arch = "x86_64")]
    fn row_sums(&self) -> &head::RowSums {
        self.row_sums.get_or_init(|| head::RowSums::of(self))
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

    /// Weight rows `first..first + panel.len() / cols` dequantised into `panel` (the same values
    /// as [`QMat::row`]), compiled for AVX2 where the CPU has it so the nibble unpacking and the
    /// `d * q + m` (still two roundings: Rust never contracts into an FMA) run 8 wide.
    fn rows_f32(&self, first: usize, panel: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn avx2(m: &QMat, first: usize, panel: &mut [f32]) {
            for (r, row) in panel.chunks_exact_mut(m.cols).enumerate() {
                m.row(first + r, row);
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected on this CPU just above.
            unsafe { avx2(self, first, panel) };
            return;
        }
        for (r, row) in panel.chunks_exact_mut(self.cols).enumerate() {
            self.row(first + r, row);
        }
    }

    /// `y = x · Wᵀ` (`[n, cols]` → `[n, rows]`) as GEMMs over chunks of [`GEMM_CHUNK`] weight
    /// rows, one rayon task each: the chunk is dequantised into an f32 panel and multiplied with
    /// the packed kernels of the `gemm` crate, which write the chunk's columns of `y` in place.
    /// For many rows (prefill, the verifier's pass) on CPUs without AVX-512, where
    /// [`matmul_xt`] does not run.
    fn matmul_gemm(&self, x: &[f32], n: usize) -> Vec<f32> {
        let (rows, cols) = (self.rows, self.cols);
        assert!(x.len() >= n * cols, "x holds {n} rows of {cols}");
        let mut y = vec![0f32; n * rows];
        let dst = SendPtr(y.as_mut_ptr());
        (0..rows.div_ceil(GEMM_CHUNK))
            .into_par_iter()
            .for_each(|c| {
                SCRATCH.with_borrow_mut(|(panel, _, _)| {
                    let first = c * GEMM_CHUNK;
                    let k = GEMM_CHUNK.min(rows - first);
                    // Every value is written before it is read: old contents do not matter.
                    if panel.len() < k * cols {
                        panel.resize(k * cols, 0.0);
                    }
                    self.rows_f32(first, &mut panel[..k * cols]);
                    let dst = &dst;
                    // SAFETY: `panel` holds `[k, cols]` row-major; `x` is `[n, cols]` row-major,
                    // read as its transpose `[cols, n]` (row stride 1, column stride `cols`); the
                    // destination is columns `first..first + k` of `y` (`[n, rows]` row-major: row
                    // stride 1 and column stride `rows` for the transposed view), which lie inside
                    // `y` and which no other task writes (chunks are disjoint); `y` outlives the
                    // parallel loop and aliases neither input.
                    unsafe {
                        gemm_into(
                            k,
                            n,
                            cols,
                            (dst.0.add(first), rows as isize, 1),
                            (panel.as_ptr(), 1, cols as isize),
                            (x.as_ptr(), cols as isize, 1),
                            1.0,
                        );
                    }
                });
            });
        y
    }

    /// Whether the int16 kernel ([`avx512q`]) takes this matrix's blocks (Q4_1, Q8_0).
    fn int16(&self) -> bool {
        matches!(self.ty, GgmlType::Q4_1 | GgmlType::Q8_0)
    }

    /// The quantised bytes and scales of the `k` rows from `first` (empty past the end), for
    /// prefetching.
    fn next_chunk(&self, first: usize, k: usize) -> (&[u8], &[f32]) {
        let first = first.min(self.rows);
        let end = (first + k).min(self.rows);
        let (qb, sb) = (self.quants.len() / self.rows, self.scales.len() / self.rows);
        (
            &self.quants[first * qb..end * qb],
            &self.scales[first * sb..end * sb],
        )
    }

    /// `y[i] = W · x[i]` for `n` rows of `x` (`[n, cols]` → `[n, rows]`). For `n > 1` each
    /// weight row is dequantised once and used for all rows; from [`GEMM_ROWS`] rows on, as a
    /// GEMM: [`matmul_xt`] where the CPU has AVX-512 (with 16-bit activations when `fast` and
    /// the CPU has VNNI, see [`Acts::new`]), [`QMat::matmul_gemm`] elsewhere.
    fn matmul(&self, x: &[f32], n: usize, fast: bool) -> Vec<f32> {
        let [y] = matmul_many([self], x, n, fast);
        y
    }

    /// For each of the `n` rows of `x`, the largest output of [`QMat::matmul`] (NaNs passed
    /// over, as [`crate::ecpu::kernels::max8`] does) and the output at row `tokens[i]` (each
    /// below `rows`): the same values, without the `[n, rows]` product where [`tops_xt`] runs.
    fn tops(&self, x: &[f32], n: usize, tokens: &[u32], fast: bool) -> Vec<[f32; 2]> {
        if let Some(a) = Acts::new(x, n, &[self], fast) {
            return tops_xt(self, &a, tokens);
        }
        crate::smollm::tops_of_rows(&self.matmul_rows(x, n), self.rows, tokens)
    }

    /// [`QMat::matmul`] where [`matmul_xt`] does not run.
    fn matmul_rows(&self, x: &[f32], n: usize) -> Vec<f32> {
        if n >= GEMM_ROWS {
            return self.matmul_gemm(x, n);
        }
        let rows = self.rows;
        let chunk = 64;
        // Transposed result: thread chunks of output rows are contiguous.
        let mut yt = vec![0f32; rows * n];
        yt.par_chunks_mut(chunk * n)
            .enumerate()
            .for_each(|(c, out)| self.rows_dispatch(c * chunk, x, n, out));
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

/// A raw pointer that rayon tasks may share: each writes a disjoint part of the buffer.
struct SendPtr(*mut f32);
// SAFETY: every user (`matmul_xt`, `QMat::matmul_gemm`, `QuantLlama::attend_rows`) has its tasks
// write disjoint parts of one buffer that outlives them, and nothing reads it meanwhile.
unsafe impl Sync for SendPtr {}

/// Weight rows per GEMM task: divides the rows of every SmolLM2 matrix (192, 576, 1,536 and the
/// 49,152-row embedding), so two threads get equal shares, and is a multiple of the AVX-512
/// kernel's 12-row groups (no row is left to its one-row tail). The AVX-512 GEMMs split it
/// further where a call would give too few tasks for the threads ([`chunk_rows`]).
const GEMM_CHUNK: usize = 96;

/// `dst = beta · lhs · rhs` (`m × k` times `k × n`) on this thread with the `gemm` crate; each
/// matrix is a pointer with its column and row strides.
///
/// # Safety
/// As `gemm::gemm`'s: every element the strides address lies inside its buffer, and `dst`
/// aliases neither input.
unsafe fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    (dst, dst_cs, dst_rs): (*mut f32, isize, isize),
    (lhs, lhs_cs, lhs_rs): (*const f32, isize, isize),
    (rhs, rhs_cs, rhs_rs): (*const f32, isize, isize),
    beta: f32,
) {
    // SAFETY: the caller's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            false,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            0.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Rows of activations from which [`QMat::matmul`] runs a GEMM per chunk of weight rows (below,
/// dot products over each dequantised weight row).
const GEMM_ROWS: usize = 8;

thread_local! {
    /// Each pool thread's f32 weight block, result slab and 16-bit weight block for
    /// [`matmul_xt`] (the f32 block also for [`QMat::matmul_gemm`]), reused from call to call:
    /// fresh ones per task cost page faults and zeroing.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>, Vec<i16>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// `x · W_jᵀ` for each of `mats` (all as wide as `x`): in one parallel loop ([`matmul_xt`])
/// where an AVX-512 kernel runs, else one matrix at a time.
fn matmul_many<const M: usize>(mats: [&QMat; M], x: &[f32], n: usize, fast: bool) -> [Vec<f32>; M] {
    match Acts::new(x, n, &mats, fast) {
        Some(a) => <[Vec<f32>; M]>::try_from(matmul_xt(&mats, &a)).expect("one result per matrix"),
        None => mats.map(|m| m.matmul_rows(x, n)),
    }
}

/// `y_j = x · W_jᵀ` (`[n, rows_j]`) for every matrix of `mats`, all as wide as `x`, from `x`
/// transposed ([`Xt`]) or quantised ([`Xq`]) on an AVX-512 kernel ([`gemm_chunks`]), each
/// chunk's columns of `y_j` written from its slab.
fn matmul_xt(mats: &[&QMat], acts: &Acts) -> Vec<Vec<f32>> {
    let n = acts.n();
    let mut ys: Vec<Vec<f32>> = mats
        .iter()
        .map(|m| Vec::with_capacity(n * m.rows))
        .collect();
    let dsts: Vec<SendPtr> = ys.iter_mut().map(|y| SendPtr(y.as_mut_ptr())).collect();
    gemm_chunks(mats, acts, |j, first, k, slab| {
        // The chunk's columns of `y_j` (the slab is `[k, np]`, `y_j` is `[n, rows]`).
        // SAFETY: an `Acts` exists only where AVX-512F was detected; columns `first..first + k`
        // of the `n` rows of `y_j` (allocated above) lie inside its capacity and only this
        // chunk's call writes them; `ys` outlives the loop and is not read meanwhile.
        unsafe {
            avx512::store_transposed(slab, acts.np(), k, n, dsts[j].0.add(first), mats[j].rows)
        };
    });
    for (y, m) in ys.iter_mut().zip(mats) {
        // SAFETY: the calls above wrote every column of every row: all `n * rows` values.
        unsafe { y.set_len(n * m.rows) };
    }
    ys
}

/// For each of the `n` positions of `acts`, the largest output of `x · Wᵀ` (NaNs passed over,
/// as [`crate::ecpu::kernels::max8`] does) and the output at row `tokens[i]`: the values
/// [`matmul_xt`] would give, without writing its `[n, rows]` product (the output layer's is
/// 49,152 logits a position, written at a 196 KB stride).
fn tops_xt(m: &QMat, acts: &Acts, tokens: &[u32]) -> Vec<[f32; 2]> {
    #[cfg(target_arch = "x86_64")]
    if let Acts::I16(xq) = acts
        && head::runs(m)
    {
        return head::tops(m, xq, tokens).0;
    }
    tops_full(m, acts, tokens)
}

/// [`tops_xt`] from the whole product, chunk by chunk.
fn tops_full(m: &QMat, acts: &Acts, tokens: &[u32]) -> Vec<[f32; 2]> {
    let (n, np) = (acts.n(), acts.np());
    assert!(tokens.len() == n && tokens.iter().all(|&t| (t as usize) < m.rows));
    // Each chunk's largest per position, and each position's chosen output (one chunk holds it).
    let chunks = m.rows.div_ceil(GEMM_CHUNK);
    let mut tops = vec![f32::NEG_INFINITY; chunks * n];
    let mut chosen = vec![f32::NAN; n];
    let ptrs = [SendPtr(tops.as_mut_ptr()), SendPtr(chosen.as_mut_ptr())];
    gemm_chunks(&[m], acts, |_, first, k, slab| {
        // SAFETY: row `first / GEMM_CHUNK` of `tops` is this chunk's alone, as is `chosen[i]`
        // for the positions whose token lies in its rows; both outlive the loop and are not
        // read meanwhile.
        let top =
            unsafe { std::slice::from_raw_parts_mut(ptrs[0].0.add(first / GEMM_CHUNK * n), n) };
        for r in 0..k {
            for (t, &v) in top.iter_mut().zip(&slab[r * np..r * np + n]) {
                *t = t.max(v);
            }
        }
        for (i, &tok) in tokens.iter().enumerate() {
            if let Some(r) = (tok as usize).checked_sub(first).filter(|&r| r < k) {
                // SAFETY: as above.
                unsafe { *ptrs[1].0.add(i) = slab[r * np + i] };
            }
        }
    });
    (0..n)
        .map(|i| {
            let top = (0..chunks).fold(f32::NEG_INFINITY, |a, c| a.max(tops[c * n + i]));
            [top, chosen[i]]
        })
        .collect()
}

/// `y_j = W_j · x` for every matrix of `mats` (all as wide as `acts`), positions-minor: `[rows_j,
/// np]`, each chunk's slab written in place ([`QuantLlama::forward_cols`]).
#[cfg(target_arch = "x86_64")]
fn gemm_cols<const M: usize>(mats: [&QMat; M], acts: &Acts) -> [Vec<f32>; M] {
    let np = acts.np();
    let mut ys: [Vec<f32>; M] = mats.map(|m| Vec::with_capacity(m.rows * np));
    let dsts: Vec<SendPtr> = ys.iter_mut().map(|y| SendPtr(y.as_mut_ptr())).collect();
    // SAFETY: each `y_j` has capacity for its `rows * np` values, outlives the call and is not
    // otherwise touched meanwhile.
    unsafe { gemm_chunks_into(&mats, acts, Some(&dsts), |_, _, _, _| {}) };
    for (y, m) in ys.iter_mut().zip(mats) {
        // SAFETY: the chunks above wrote every row: all `rows * np` values.
        unsafe { y.set_len(m.rows * np) };
    }
    ys
}

/// Positions `q0..n` of `t` (`[width, np]`), positions-minor: `[width, (n - q0)` rounded up to
/// a multiple of 16`]`, the padding zeros.
fn sub_cols(t: &[f32], np: usize, q0: usize, n: usize) -> Vec<f32> {
    let nq = (n - q0).next_multiple_of(16);
    let mut out = vec![0f32; t.len() / np * nq];
    for (o, r) in out.chunks_exact_mut(nq).zip(t.chunks_exact(np)) {
        o[..n - q0].copy_from_slice(&r[q0..n]);
    }
    out
}

/// Positions `from..n` of `t` (`[width, np]`) as rows, `[n - from, width]`.
///
/// # Safety
/// The CPU has AVX-512F; `np` is a multiple of 16, `from < n <= np`.
#[cfg(target_arch = "x86_64")]
unsafe fn rows_of(t: &[f32], width: usize, np: usize, from: usize, n: usize) -> Vec<f32> {
    assert!(np.is_multiple_of(16) && from < n && n <= np && t.len() >= width * np);
    let m = n - from;
    let mut out = Vec::with_capacity(m * width);
    if from == 0 {
        // SAFETY: AVX-512F (the caller's); `t` is `[width, np]` and `out` has room for `n`
        // rows of `width`.
        unsafe { avx512::store_transposed(t, np, width, n, out.as_mut_ptr(), width) };
    } else {
        for p in from..n {
            out.extend((0..width).map(|i| t[i * np + p]));
        }
    }
    // SAFETY: every one of the `m * width` values was written above.
    unsafe { out.set_len(m * width) };
    out
}

/// [`kernels::rms_norm`] of every position of `x` (`[w.len(), np]`) at once: each position's
/// sum of squares in eight partial sums, added in `sum8`'s order, so that every value is the
/// row-wise kernel's, bit for bit.
fn rms_norm_cols(x: &[f32], w: &[f32], eps: f32, np: usize) -> Vec<f32> {
    let d = w.len();
    let mut acc = vec![0f32; 8 * np];
    for (i, row) in x.chunks_exact(np).take(d).enumerate() {
        for (a, &v) in acc[i % 8 * np..(i % 8 + 1) * np].iter_mut().zip(row) {
            *a += v * v;
        }
    }
    let inv: Vec<f32> = (0..np)
        .map(|p| {
            let a = |j: usize| acc[j * np + p];
            let sum = ((a(0) + a(4)) + (a(1) + a(5))) + ((a(2) + a(6)) + (a(3) + a(7)));
            1.0 / (sum / d as f32 + eps).sqrt()
        })
        .collect();
    let mut out = vec![0f32; d * np];
    for ((o, row), &wi) in out.chunks_exact_mut(np).zip(x.chunks_exact(np)).zip(w) {
        for ((o, &v), &s) in o.iter_mut().zip(row).zip(&inv) {
            *o = v * s * wi;
        }
    }
    out
}

/// [`QuantLlama::rope`] of every position of `t` (`[heads * hd, np]`) at once: rows `2i` and
/// `2i + 1` of each head rotated by angle `i` of each position (`cos`, `sin`: `[hd / 2, np]`).
fn rope_cols(t: &mut [f32], cos: &[f32], sin: &[f32], hd: usize, np: usize) {
    for head in t.chunks_exact_mut(hd * np) {
        for (i, pair) in head.chunks_exact_mut(2 * np).enumerate() {
            let (r0, r1) = pair.split_at_mut(np);
            let (c, s) = (&cos[i * np..(i + 1) * np], &sin[i * np..(i + 1) * np]);
            for (((x0, x1), &c), &s) in r0.iter_mut().zip(r1.iter_mut()).zip(c).zip(s) {
                let (a, b) = (*x0, *x1);
                *x0 = a * c - b * s;
                *x1 = a * s + b * c;
            }
        }
    }
}

/// Keeps the pool's other threads busy-waiting for work until the returned guard drops, so that
/// the many short parallel loops of one pass (about ten a layer, between short serial steps)
/// do not each wait for sleeping threads to be woken: on a two-core VM that wait cost about as
/// much as some of the loops themselves. Each spinner runs the pool's pending work
/// ([`rayon::yield_now`]) and otherwise yields its CPU to the OS, without sleeping.
///
/// A spinner that starts on a thread already inside a pass (its own pass's thread, another
/// pass's, or another spinner's) returns at once: spinning there would hold up the pass below
/// it until this one ends, and two passes on one pool could then wait on each other.
fn keep_awake<'s>(s: &rayon::Scope<'s>, done: &'s AtomicBool) -> Awake<'s> {
    let in_pass = InPass::enter();
    for _ in 1..rayon::current_num_threads() {
        s.spawn(move |_| {
            let in_pass = InPass::enter();
            if in_pass.0 {
                return;
            }
            while !done.load(Ordering::Acquire) {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    // Nothing pending: let any other runnable thread of this CPU (the
                    // process's async runtime, say) run first, as rayon's docs advise.
                    std::thread::yield_now();
                }
            }
        });
    }
    Awake {
        done,
        _in_pass: in_pass,
    }
}

thread_local! {
    /// Whether this thread is running a pass or spinning for one ([`keep_awake`]).
    static IN_PASS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as inside a pass until dropped (also when unwinding), then puts back the
/// mark it found, which the field holds.
struct InPass(bool);

impl InPass {
    fn enter() -> Self {
        Self(IN_PASS.replace(true))
    }
}

impl Drop for InPass {
    fn drop(&mut self) {
        IN_PASS.set(self.0);
    }
}

/// Ends [`keep_awake`]'s spinning when dropped (also on an early return or a panic).
struct Awake<'s> {
    done: &'s AtomicBool,
    _in_pass: InPass,
}

impl Drop for Awake<'_> {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
    }
}

/// Weight rows per task of [`gemm_chunks_into`] for `threads` threads: [`GEMM_CHUNK`], halved
/// (down to 12, the f32 kernel's row group) while the matrices give fewer than three tasks a
/// thread and every matrix's rows still divide evenly. On two threads SmolLM2's matrices keep
/// 96 (its smallest call, 576 rows, gives six tasks); on sixteen a 576-row matrix is split into
/// 48 tasks of 12 instead of 6 of 96, which would leave ten threads idle.
fn chunk_rows(mats: &[&QMat], threads: usize) -> usize {
    let total: usize = mats.iter().map(|m| m.rows).sum();
    let mut chunk = GEMM_CHUNK;
    while chunk > 12
        && total.div_ceil(chunk) < 3 * threads
        && mats.iter().all(|m| m.rows.is_multiple_of(chunk / 2))
    {
        chunk /= 2;
    }
    chunk
}

/// The AVX-512 GEMMs of every matrix of `mats` (all as wide as `acts`) in one parallel loop
/// (fewer wake-ups of the thread pool), one task per [`chunk_rows`] rows of a matrix: it
/// dequantises them into a block (f32 for [`Xt`], 16-bit for [`Xq`]), multiplies it with every
/// position into a slab `[k, np]` (rows × positions), and hands that to `sink(j, first, k,
/// slab)`.
fn gemm_chunks(mats: &[&QMat], acts: &Acts, sink: impl Fn(usize, usize, usize, &[f32]) + Sync) {
    // SAFETY: no buffers to write in place.
    unsafe { gemm_chunks_into(mats, acts, None, sink) }
}

/// [`gemm_chunks`], where with `into` (one buffer per matrix, `[rows_j, np]`) each chunk's slab
/// is its rows of that buffer, written in place.
///
/// # Safety
/// Each buffer of `into` holds `rows_j * np` writable values that nothing else reads or writes
/// during the call.
unsafe fn gemm_chunks_into(
    mats: &[&QMat],
    acts: &Acts,
    into: Option<&[SendPtr]>,
    sink: impl Fn(usize, usize, usize, &[f32]) + Sync,
) {
    let (cols, np) = (mats[0].cols, acts.np());
    assert!(mats.iter().all(|m| m.cols == cols) && acts.cols() == cols);
    assert!(into.is_none_or(|d| d.len() == mats.len()));
    let chunk = chunk_rows(mats, rayon::current_num_threads());
    let tasks: Vec<(usize, usize)> = mats
        .iter()
        .enumerate()
        .flat_map(|(j, m)| (0..m.rows).step_by(chunk).map(move |first| (j, first)))
        .collect();
    tasks.into_par_iter().for_each(|(j, first)| {
        SCRATCH.with_borrow_mut(|(w, slab, wq)| {
            let m = mats[j];
            let k = chunk.min(m.rows - first);
            // Every value is written below before it is read, so old contents do not matter.
            let slab = match into {
                // SAFETY: rows `first..first + k` of buffer `j` (the caller's bounds) are this
                // task's alone.
                Some(d) => unsafe {
                    std::slice::from_raw_parts_mut(d[j].0.add(first * np), k * np)
                },
                None => {
                    if slab.len() < k * np {
                        slab.resize(k * np, 0.0);
                    }
                    &mut slab[..k * np]
                }
            };
            match acts {
                Acts::F32(xt) => {
                    if w.len() < k * cols {
                        w.resize(k * cols, 0.0);
                    }
                    let w = &mut w[..k * cols];
                    // SAFETY: an `Xt` exists only where AVX-512F was detected (`Xt::new`).
                    unsafe {
                        avx512::dequantize(m, first, w);
                        avx512::block(w, cols, &xt.data, np, slab);
                    }
                }
                Acts::I16(xq) => {
                    if wq.len() < k * cols {
                        wq.resize(k * cols, 0);
                    }
                    let wq = &mut wq[..k * cols];
                    // SAFETY: an `Xq` exists only where AVX-512F, BW and VNNI were detected
                    // (`Xq::new`), and only for Q4_1 and Q8_0 matrices (`Acts::new`).
                    unsafe {
                        avx512q::unpack(m, first, wq);
                        avx512q::block(m, first, wq, xq, slab, m.next_chunk(first + k, k));
                    }
                }
            }
            sink(j, first, k, slab);
        });
    });
}

/// Activations `[n, cols]` transposed to `[cols, np]`, positions padded with zeros to `np`, a
/// multiple of 16 (one AVX-512 vector): the layout [`avx512::block`] multiplies.
struct Xt {
    data: Vec<f32>,
    n: usize,
    np: usize,
}

impl Xt {
    /// `x` (`[n, cols]`) transposed, when the AVX-512 kernel runs here and `n` is at least
    /// [`GEMM_ROWS`]; `None` otherwise.
    fn new(x: &[f32], n: usize, cols: usize) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if n >= GEMM_ROWS && std::arch::is_x86_feature_detected!("avx512f") {
            let np = n.next_multiple_of(16);
            let mut data = vec![0f32; cols * np];
            // 16 columns of `x` per task: reads 64-byte runs of each row, writes whole rows.
            data.par_chunks_mut(16 * np)
                .enumerate()
                .for_each(|(b, out)| {
                    let c0 = 16 * b;
                    let w = out.len() / np;
                    for (i, row) in x.chunks_exact(cols).take(n).enumerate() {
                        for (j, &v) in row[c0..c0 + w].iter().enumerate() {
                            out[j * np + i] = v;
                        }
                    }
                });
            return Some(Self { data, n, np });
        }
        let _ = (x, n, cols);
        None
    }
}

/// The order both AVX-512 kernels walk a block of `rows` weight rows against `np` positions:
/// columns in blocks of `kb` (the activations' slice for 32 positions stays in L1), then 32
/// positions at a time (16 for a last odd vector), then `rmax` rows at a time (one at a time
/// for the remainder). `f` gets each tile's first column and column count, first position and
/// vector count (1 or 2), first row, and whether it has `rmax` rows (else one).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn for_each_tile(
    cols: usize,
    np: usize,
    rows: usize,
    kb: usize,
    rmax: usize,
    mut f: impl FnMut(usize, usize, usize, usize, usize, bool),
) {
    for c0 in (0..cols).step_by(kb) {
        let len = kb.min(cols - c0);
        let mut p = 0;
        while p < np {
            let v = if np - p >= 32 { 2 } else { 1 };
            let mut r = 0;
            while r < rows {
                let full = rows - r >= rmax;
                f(c0, len, p, v, r, full);
                r += if full { rmax } else { 1 };
            }
            p += 16 * v;
        }
    }
}

/// A GEMM step's activations, in the layout of one of the AVX-512 kernels.
enum Acts {
    /// Exact f32 values ([`avx512`]): prompts, and every pass on CPUs without VNNI.
    F32(Xt),
    /// 16-bit fixed point per 32 columns ([`avx512q`]): the verifier's teacher-forced pass.
    I16(Xq),
}

impl Acts {
    /// `x` (`[n, cols]`) for the kernels that multiply it with every matrix of `mats`: quantised
    /// to 16 bits when `fast` and the CPU and the matrices' types allow it, else exact; `None`
    /// when neither AVX-512 kernel runs here or `n` is below [`GEMM_ROWS`].
    fn new(x: &[f32], n: usize, mats: &[&QMat], fast: bool) -> Option<Self> {
        let cols = mats[0].cols;
        let int16 = fast && mats.iter().all(|m| m.int16());
        match int16.then(|| Xq::new(x, n, cols)).flatten() {
            Some(xq) => Some(Self::I16(xq)),
            None => Xt::new(x, n, cols).map(Self::F32),
        }
    }

    fn n(&self) -> usize {
        match self {
            Self::F32(a) => a.n,
            Self::I16(a) => a.n,
        }
    }

    fn np(&self) -> usize {
        match self {
            Self::F32(a) => a.np,
            Self::I16(a) => a.np,
        }
    }

    fn cols(&self) -> usize {
        match self {
            Self::F32(a) => a.data.len() / a.np,
            Self::I16(a) => a.scale.len() / a.np * 32,
        }
    }
}

/// Activations `[n, cols]` as 16-bit integers for [`avx512q`]: each position's 32-column block
/// `x_b` becomes `s_b · X_b` with `s_b = max |x_b| / 32767` and `X_b = round(x_b / s_b)`, so each
/// value moves by at most `s_b / 2` (a relative 1.5e-5 of its block's largest). Positions are
/// padded with zeros to `np`, a multiple of 16.
struct Xq {
    /// `[cols / 2, np]`: columns `2j` and `2j + 1` of a position as one word, low half first.
    words: Vec<i32>,
    /// `[cols / 32, np]`: `s_b`.
    scale: Vec<f32>,
    /// `[cols / 32, np]`: `s_b · Σ X_b`, the block's sum of quantised values (for Q4_1's `m`).
    sums: Vec<f32>,
    n: usize,
    np: usize,
}

impl Xq {
    /// `x` quantised, when the int16 kernel runs here (AVX-512F, BW and VNNI), `n` is at least
    /// [`GEMM_ROWS`] and `cols` a multiple of 32; `None` otherwise.
    fn new(x: &[f32], n: usize, cols: usize) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if x.len() >= n * cols {
            let blocks = rayon::iter::repeat_n((), cols / 32);
            return Self::build(
                n,
                n.next_multiple_of(16),
                cols,
                blocks,
                |_, b, p0, w, s, su| {
                    // SAFETY: `build` runs this only where AVX-512F and BW were detected; `x` holds
                    // `n` rows of `cols` (checked above), block `b` lies inside them, and `w`, `s`,
                    // `su` hold `np` (a multiple of 16 above `p0`) positions a row.
                    unsafe { avx512q::quantize16(x, n, cols, b, p0, w, s, su) }
                },
            );
        }
        let _ = (x, n, cols);
        None
    }

    /// [`Xq::new`] from activations already positions-minor: `xt` is `[cols, np]`, its first
    /// `n` positions real and the rest zeros, `np` a multiple of 16 (the layout of
    /// [`QuantLlama::forward_cols`]).
    fn from_cols(xt: &[f32], n: usize, np: usize, cols: usize) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if np.is_multiple_of(16) && n <= np && xt.len() >= cols * np {
            let blocks = rayon::iter::repeat_n((), cols / 32);
            return Self::build(n, np, cols, blocks, |_, b, p0, w, s, su| {
                // SAFETY: `build` runs this only where AVX-512F and BW were detected; `xt` holds
                // `cols` rows of `np` (checked above) and block `b` lies inside them; `w`, `s`,
                // `su` hold `np` positions a row, `p0 + 16` at most.
                unsafe { avx512q::quantize16_cols(xt, b, p0, w, s, su) }
            });
        }
        let _ = (xt, n, np, cols);
        None
    }

    /// [`Xq::from_cols`] of `silu(gate) * up` (both `[cols, np]`), with `gate` overwritten by
    /// that product: each task multiplies its own block's 32 rows right before quantising them,
    /// so the product needs no parallel loop of its own (one fewer wake-up of the thread pool a
    /// layer). Every value is [`kernels::silu_mul`]'s, as in a separate pass.
    fn silu_from_cols(
        gate: &mut [f32],
        up: &[f32],
        n: usize,
        np: usize,
        cols: usize,
    ) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if np.is_multiple_of(16)
            && n <= np
            && cols.is_multiple_of(32)
            && gate.len() >= cols * np
            && up.len() >= cols * np
        {
            // Each block's task gets its 32 rows of both.
            let blocks = gate[..cols * np]
                .par_chunks_exact_mut(32 * np)
                .zip(up[..cols * np].par_chunks_exact(32 * np));
            return Self::build(n, np, cols, blocks, |(g, u), _, p0, w, s, su| {
                // `build` runs this once per 16 positions: the first run multiplies the rows.
                if p0 == 0 {
                    kernels::silu_mul(g, u);
                }
                // SAFETY: `build` runs this only where AVX-512F and BW were detected; `g` holds
                // the block's 32 rows of `np` (checked above), read as block 0; `w`, `s`, `su`
                // hold `np` positions a row, `p0 + 16` at most.
                unsafe { avx512q::quantize16_cols(g, 0, p0, w, s, su) }
            });
        }
        let _ = (gate, up, n, np, cols);
        None
    }

    /// Buffers for `n` positions padded to `np`, each 32-column block's filled by
    /// `quantize(item, b, p0, words, scale, sums)` 16 positions at a time (one task per block,
    /// which owns block `b`'s `item` of `blocks`), where the CPU runs the int16 kernel, `n` is
    /// at least [`GEMM_ROWS`] and `cols` a multiple of 32.
    #[cfg(target_arch = "x86_64")]
    fn build<T: Send>(
        n: usize,
        np: usize,
        cols: usize,
        blocks: impl IndexedParallelIterator<Item = T>,
        quantize: impl Fn(&mut T, usize, usize, &mut [i32], &mut [f32], &mut [f32]) + Sync,
    ) -> Option<Self> {
        if n >= GEMM_ROWS && cols.is_multiple_of(32) && avx512q::runs() {
            let nb = cols / 32;
            let mut words = vec![0i32; cols / 2 * np];
            let mut scale = vec![0f32; nb * np];
            let mut sums = vec![0f32; nb * np];
            // One task per block of 32 columns: it writes its 16 rows of words and its row of
            // scales and sums, 16 positions at a time.
            words
                .par_chunks_mut(16 * np)
                .zip(scale.par_chunks_mut(np).zip(sums.par_chunks_mut(np)))
                .zip(blocks)
                .enumerate()
                .for_each(|(b, ((w, (s, su)), mut item))| {
                    for p0 in (0..n).step_by(16) {
                        quantize(&mut item, b, p0, w, s, su);
                    }
                });
            return Some(Self {
                words,
                scale,
                sums,
                n,
                np,
            });
        }
        None
    }
}

/// The verifier's matmul kernel on AVX-512 VNNI: weights as 16-bit integers (a Q4_1 or Q8_0
/// block's `q`, exact), activations as [`Xq`]; `vpdpwssd` sums two products per lane into
/// 32-bit integers over each 32-column block (exact: at most 16 · 2 · 128 · 32767 < 2³¹), and the
/// block's scales turn that into f32: `y += d · s_b · Σ q X + m · s_b · Σ X`. Twice the
/// multiply-adds per instruction of the f32 kernel.
#[cfg(target_arch = "x86_64")]
mod avx512q {
    use std::arch::x86_64::*;

    use super::{QMat, Xq};
    use crate::gguf::GgmlType;

    /// Weight rows per micro-kernel call: 6 rows × 32 positions of integer sums and as many f32
    /// sums fill 24 of the 32 registers.
    const R: usize = 6;

    /// Columns per L1 block of [`block`] (six 32-column blocks).
    const KB: usize = 192;

    /// Whether this CPU runs the kernel: AVX-512F, BW and VNNI.
    pub(super) fn runs() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }

    /// 32 values as 16 words of two 16-bit integers, their scale `s` and `s · Σ X` ([`Xq`]). A
    /// block with a non-finite value gets scale NaN, so that it poisons the result as it would
    /// in f32.
    ///
    /// # Safety
    /// AVX-512F and BW; `x` holds 32 values.
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize(x: &[f32]) -> ([i32; 16], f32, f32) {
        assert!(x.len() >= 32);
        // SAFETY: 32 values (asserted).
        let (a, b) = unsafe {
            (
                _mm512_loadu_ps(x.as_ptr()),
                _mm512_loadu_ps(x.as_ptr().add(16)),
            )
        };
        let max = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        let mut out = [0i32; 16];
        // (`max` drops NaNs: they are looked for on their own.)
        let nan =
            _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, a) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(b, b);
        if nan != 0 || !max.is_finite() {
            return (out, f32::NAN, f32::NAN);
        }
        if max == 0.0 {
            return (out, 0.0, 0.0);
        }
        let inv = _mm512_set1_ps(32767.0 / max);
        // Round to nearest (even), within ±32767: the largest value maps to 32767 within a
        // rounding of the reciprocal, which stays below 32767.5.
        let qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, inv));
        let qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, inv));
        let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
        // The 32 values in order as 16-bit integers: word j holds values 2j and 2j + 1.
        let packed = _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm512_cvtepi32_epi16(qa)),
            _mm512_cvtepi32_epi16(qb),
        );
        // SAFETY: `out` is 64 bytes.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), packed) };
        let s = max / 32767.0;
        (out, s, s * sum as f32)
    }

    /// Block `b` (columns `32 b..32 b + 32`) of the 16 positions from `p0` of `x` (`[n, cols]`;
    /// positions from `n` on count as zeros) quantised as [`Xq`] says, all at once with
    /// positions in lanes (no horizontal reductions), into the block's 16 rows of words
    /// (`words`, rows `np = scale.len()` apart), `scale` and `sums` at `p0`. A position whose
    /// block holds a NaN or whose largest is infinite gets zeros with scale and sum NaN, so
    /// that it poisons its results as it would in f32; an all-zero block gets zeros. Bit for
    /// bit what the one-position `quantize` (kept for the tests) gives.
    ///
    /// # Safety
    /// AVX-512F and BW; `x` holds `n` rows of `cols` and block `b` lies inside them; `p0 + 16`
    /// is at most `np`, a multiple of 16; `words` holds 16 rows of `np`, `sums` holds `np`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize16(
        x: &[f32],
        n: usize,
        cols: usize,
        b: usize,
        p0: usize,
        words: &mut [i32],
        scale: &mut [f32],
        sums: &mut [f32],
    ) {
        assert!(32 * (b + 1) <= cols && x.len() >= n * cols);
        // Columns as vectors over the 16 positions: `lo[c]` is column `32 b + c`, `hi[c]`
        // column `32 b + 16 + c`.
        // SAFETY: a row `p0 + i < n` of `x` holds block `b` (asserted).
        let load = |i: usize, h: usize| unsafe {
            if p0 + i < n {
                _mm512_loadu_ps(x.as_ptr().add((p0 + i) * cols + 32 * b + 16 * h))
            } else {
                _mm512_setzero_ps()
            }
        };
        let lo = super::avx512::transpose16(std::array::from_fn(|i| load(i, 0)));
        let hi = super::avx512::transpose16(std::array::from_fn(|i| load(i, 1)));
        quantize_columns(lo, hi, p0, words, scale, sums);
    }

    /// [`quantize16`] for activations already positions-minor: block `b` of the 16 positions
    /// from `p0` of `xt` (`[cols, np]`, `np = scale.len()`), read as whole vectors.
    ///
    /// # Safety
    /// AVX-512F and BW; as [`quantize16`], with `xt` holding `cols` rows of `np`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize16_cols(
        xt: &[f32],
        b: usize,
        p0: usize,
        words: &mut [i32],
        scale: &mut [f32],
        sums: &mut [f32],
    ) {
        let np = scale.len();
        assert!(xt.len() >= 32 * (b + 1) * np && p0 + 16 <= np);
        // SAFETY: row `32 b + c` of `xt` holds positions `p0..p0 + 16` (asserted).
        let load = |c: usize| unsafe { _mm512_loadu_ps(xt.as_ptr().add((32 * b + c) * np + p0)) };
        let lo = std::array::from_fn(&load);
        let hi = std::array::from_fn(|c| load(16 + c));
        quantize_columns(lo, hi, p0, words, scale, sums);
    }

    /// The quantisation both [`quantize16`] and [`quantize16_cols`] run: one block's 32
    /// columns as vectors over 16 positions (`lo`, then `hi`) into words, scale and sum at
    /// `p0`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn quantize_columns(
        lo: [__m512; 16],
        hi: [__m512; 16],
        p0: usize,
        words: &mut [i32],
        scale: &mut [f32],
        sums: &mut [f32],
    ) {
        let np = scale.len();
        assert!(
            np.is_multiple_of(16) && p0 + 16 <= np && words.len() >= 16 * np && sums.len() >= np
        );
        let mut max = _mm512_setzero_ps();
        let mut nan: __mmask16 = 0;
        for v in lo.iter().chain(&hi) {
            max = _mm512_max_ps(max, _mm512_abs_ps(*v));
            nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(*v, *v);
        }
        // As `quantize`: a NaN or an infinite largest gives zeros with scale and sum NaN; an
        // all-zero block zeros; the rest the scaled, rounded values.
        let bad = nan | _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(max, _mm512_set1_ps(f32::INFINITY));
        let zero = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(max, _mm512_setzero_ps());
        let ok = !(bad | zero);
        let inv = _mm512_div_ps(_mm512_set1_ps(32767.0), max);
        let mut sum = _mm512_setzero_si512();
        for j in 0..16 {
            let (a, c) = if j < 8 {
                (lo[2 * j], lo[2 * j + 1])
            } else {
                (hi[2 * j - 16], hi[2 * j - 15])
            };
            let qa = _mm512_maskz_cvtps_epi32(ok, _mm512_mul_ps(a, inv));
            let qc = _mm512_maskz_cvtps_epi32(ok, _mm512_mul_ps(c, inv));
            sum = _mm512_add_epi32(sum, _mm512_add_epi32(qa, qc));
            // Value 2j in the low half, 2j + 1 in the high half.
            let w = _mm512_or_si512(
                _mm512_and_si512(qa, _mm512_set1_epi32(0xffff)),
                _mm512_slli_epi32::<16>(qc),
            );
            // SAFETY: row `j` of the block's words holds positions `p0..p0 + 16` (asserted).
            unsafe { _mm512_storeu_si512(words.as_mut_ptr().add(j * np + p0).cast(), w) };
        }
        let s = _mm512_div_ps(max, _mm512_set1_ps(32767.0));
        let total = _mm512_mul_ps(s, _mm512_cvtepi32_ps(sum));
        let nanv = _mm512_set1_ps(f32::NAN);
        let pick = |v| _mm512_mask_blend_ps(bad, _mm512_maskz_mov_ps(ok, v), nanv);
        // SAFETY: positions `p0..p0 + 16` of `scale` and `sums` (asserted).
        unsafe {
            _mm512_storeu_ps(scale.as_mut_ptr().add(p0), pick(s));
            _mm512_storeu_ps(sums.as_mut_ptr().add(p0), pick(total));
        }
    }

    /// Rows `first..first + w.len() / cols` of `m` as 16-bit integers: each block's `q`
    /// (Q4_1: 0..=15; Q8_0: -128..=127) in column order.
    ///
    /// # Safety
    /// AVX-512F and BW; `m` is Q4_1 or Q8_0; the rows exist.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn unpack(m: &QMat, first: usize, w: &mut [i16]) {
        let nb = m.cols / 32;
        let rows = w.len() / m.cols;
        assert!(first + rows <= m.rows);
        let bytes = if m.ty == GgmlType::Q4_1 { 16 } else { 32 };
        let qs = &m.quants[first * nb * bytes..];
        match m.ty {
            GgmlType::Q4_1 => {
                let nib = _mm_set1_epi8(0x0f);
                for (q, o) in qs.chunks_exact(16).zip(w.chunks_exact_mut(32)) {
                    // SAFETY: `q` holds 16 bytes and `o` 32 values.
                    unsafe {
                        let q = _mm_loadu_si128(q.as_ptr().cast());
                        let lo = _mm256_cvtepu8_epi16(_mm_and_si128(q, nib));
                        let hi = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(q, 4), nib));
                        _mm256_storeu_si256(o.as_mut_ptr().cast(), lo);
                        _mm256_storeu_si256(o.as_mut_ptr().add(16).cast(), hi);
                    }
                }
            }
            GgmlType::Q8_0 => {
                for (q, o) in qs.chunks_exact(32).zip(w.chunks_exact_mut(32)) {
                    // SAFETY: `q` holds 32 bytes and `o` 32 values.
                    unsafe {
                        let v = _mm512_cvtepi8_epi16(_mm256_loadu_si256(q.as_ptr().cast()));
                        _mm512_storeu_si512(o.as_mut_ptr().cast(), v);
                    }
                }
            }
            _ => panic!("the int16 kernel takes Q4_1 and Q8_0 matrices"),
        }
    }

    /// `out[r][p] = Σ_c w_f32[r][c] · x̂[c][p]` for the rows `first..` of `m` unpacked in `w`
    /// ([`unpack`]) and the positions of `x` ([`Xq`]); `out` is `[rows, np]`.
    ///
    /// # Safety
    /// AVX-512F, BW and VNNI; `w` holds whole rows of `m` from `first`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn block(
        m: &QMat,
        first: usize,
        w: &[i16],
        x: &Xq,
        out: &mut [f32],
        (next_q, next_s): (&[u8], &[f32]),
    ) {
        let (cols, np) = (m.cols, x.np);
        let (nb, rows) = (cols / 32, w.len() / cols);
        // The next chunk's weights are brought into L2 a few lines per micro-kernel call, so
        // that its unpacking does not wait on memory.
        let calls = cols.div_ceil(KB) * np.div_ceil(32) * (rows / R + rows % R);
        let lines = (next_q.len() + 4 * next_s.len()).div_ceil(64);
        let per = lines.div_ceil(calls.max(1));
        let mut line = 0;
        let prefetch = |line: usize| {
            let q_lines = next_q.len().div_ceil(64);
            let p: *const i8 = if line < q_lines {
                next_q[64 * line..].as_ptr().cast()
            } else if 16 * (line - q_lines) < next_s.len() {
                next_s[16 * (line - q_lines)..].as_ptr().cast()
            } else {
                return;
            };
            _mm_prefetch::<_MM_HINT_T1>(p);
        };
        assert!(
            np.is_multiple_of(16)
                && x.words.len() >= cols / 2 * np
                && x.scale.len() >= nb * np
                && out.len() >= rows * np
                && first + rows <= m.rows
        );
        let sw = if m.ty == GgmlType::Q4_1 { 2 } else { 1 };
        super::for_each_tile(cols, np, rows, KB, R, |c0, len, p, v, r, full| {
            // SAFETY: rows `r..r + R` (or `r` alone) of `w` and of `out`, blocks
            // `c0 / 32..(c0 + len) / 32` of the rows' scales, and positions `p..p + 16 v` of `x`
            // lie inside them (asserted above).
            unsafe {
                let a = Args {
                    w: w.as_ptr().add(r * cols + c0).cast(),
                    cpairs: cols / 2,
                    x: x.words.as_ptr().add(c0 / 2 * np + p),
                    xs: x.scale.as_ptr().add(c0 / 32 * np + p),
                    xsum: x.sums.as_ptr().add(c0 / 32 * np + p),
                    np,
                    sc: m.scales.as_ptr().add(((first + r) * nb + c0 / 32) * sw),
                    sc_row: nb * sw,
                    out: out.as_mut_ptr().add(r * np + p),
                    blocks: len / 32,
                    first: c0 == 0,
                };
                for _ in 0..per {
                    prefetch(line);
                    line += 1;
                }
                // SmolLM2's two widths as constants, as in the f32 kernel.
                match (full, v, sw, cols) {
                    (true, 2, 2, 576) => micro::<R, 2, true, 288>(&a),
                    (true, 2, 2, 1536) => micro::<R, 2, true, 768>(&a),
                    (true, 2, 1, 576) => micro::<R, 2, false, 288>(&a),
                    (true, 2, 2, _) => micro::<R, 2, true, 0>(&a),
                    (true, 2, _, _) => micro::<R, 2, false, 0>(&a),
                    (true, _, 2, _) => micro::<R, 1, true, 0>(&a),
                    (true, _, _, _) => micro::<R, 1, false, 0>(&a),
                    (false, 2, 2, _) => micro::<1, 2, true, 0>(&a),
                    (false, _, 2, _) => micro::<1, 1, true, 0>(&a),
                    (false, 2, _, _) => micro::<1, 2, false, 0>(&a),
                    (false, _, _, _) => micro::<1, 1, false, 0>(&a),
                }
            }
        });
    }

    /// One micro-kernel call's pointers, each at its tile's first row, position and block.
    struct Args {
        /// Weight words (two columns each), rows `cpairs` apart.
        w: *const i32,
        cpairs: usize,
        /// Activation words, scales and sums ([`Xq`]), rows `np` apart.
        x: *const i32,
        xs: *const f32,
        xsum: *const f32,
        np: usize,
        /// The weights' block scales (`[d, m]` or `[d]` per block), rows `sc_row` apart.
        sc: *const f32,
        sc_row: usize,
        /// Results, rows `np` apart: accumulated into, or overwritten when `first`.
        out: *mut f32,
        blocks: usize,
        first: bool,
    }

    /// `NR` rows × `16 V` positions over `blocks` blocks of 32 columns; `M`: the weights have a
    /// per-block minimum (Q4_1).
    ///
    /// # Safety
    /// AVX-512F, BW and VNNI; every pointer of `a` addresses what [`Args`] says for `NR` rows,
    /// `16 V` positions and `blocks` blocks.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn micro<const NR: usize, const V: usize, const M: bool, const CP: usize>(a: &Args) {
        let sw = if M { 2 } else { 1 };
        let cp = if CP == 0 { a.cpairs } else { CP };
        // The f32 sums stay in registers over all the blocks; each block's exact integer sums
        // are scaled into them.
        let mut y = [_mm512_setzero_ps(); 12];
        if !a.first {
            for r in 0..NR {
                for v in 0..V {
                    // SAFETY: the caller's bounds.
                    y[r * V + v] = unsafe { _mm512_loadu_ps(a.out.add(r * a.np + 16 * v)) };
                }
            }
        }
        for b in 0..a.blocks {
            let mut acc = [_mm512_setzero_si512(); 12];
            for j in 16 * b..16 * b + 16 {
                // SAFETY: the caller's bounds.
                unsafe {
                    let x: [__m512i; V] = std::array::from_fn(|v| {
                        _mm512_loadu_si512(a.x.add(j * a.np + 16 * v).cast())
                    });
                    for r in 0..NR {
                        let wv = _mm512_set1_epi32(*a.w.add(r * cp + j));
                        for v in 0..V {
                            acc[r * V + v] = _mm512_dpwssd_epi32(acc[r * V + v], wv, x[v]);
                        }
                    }
                }
            }
            // SAFETY: the caller's bounds.
            unsafe {
                let s: [__m512; V] =
                    std::array::from_fn(|v| _mm512_loadu_ps(a.xs.add(b * a.np + 16 * v)));
                let su: [__m512; V] = std::array::from_fn(|v| {
                    if M {
                        _mm512_loadu_ps(a.xsum.add(b * a.np + 16 * v))
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                for r in 0..NR {
                    let sc = a.sc.add(r * a.sc_row + b * sw);
                    let d = _mm512_set1_ps(*sc);
                    for v in 0..V {
                        let t = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[r * V + v]), s[v]);
                        y[r * V + v] = _mm512_fmadd_ps(t, d, y[r * V + v]);
                        if M {
                            y[r * V + v] =
                                _mm512_fmadd_ps(su[v], _mm512_set1_ps(*sc.add(1)), y[r * V + v]);
                        }
                    }
                }
            }
        }
        for r in 0..NR {
            for v in 0..V {
                // SAFETY: the caller's bounds.
                unsafe { _mm512_storeu_ps(a.out.add(r * a.np + 16 * v), y[r * V + v]) };
            }
        }
    }
}

/// The teacher-forced pass's matmul kernel for AVX-512: weights broadcast one at a time,
/// activations 16 positions to a vector, `R` rows × `V` vectors of accumulators.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::QMat;
    use crate::gguf::GgmlType;

    /// Weight rows per micro-kernel call.
    const R: usize = 12;

    /// Rows `first..first + w.len() / cols` of `m` dequantised into `w`: `d * q + m` (Q4_1) or
    /// `d * q` (Q8_0), a multiply and an add (two roundings), the values of [`QMat::row`].
    ///
    /// # Safety
    /// The CPU has AVX-512F; the rows exist.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dequantize(m: &QMat, first: usize, w: &mut [f32]) {
        let nb = m.cols / 32;
        let rows = w.len() / m.cols;
        assert!(first + rows <= m.rows);
        match m.ty {
            GgmlType::Q4_1 => {
                let nib = _mm_set1_epi8(0x0f);
                for (r, out) in w.chunks_exact_mut(m.cols).enumerate() {
                    let sc = &m.scales[(first + r) * nb * 2..(first + r + 1) * nb * 2];
                    let qs = &m.quants[(first + r) * nb * 16..(first + r + 1) * nb * 16];
                    for ((s, q), o) in sc
                        .chunks_exact(2)
                        .zip(qs.chunks_exact(16))
                        .zip(out.chunks_exact_mut(32))
                    {
                        // SAFETY: `q` holds 16 bytes and `o` 32 floats.
                        unsafe {
                            let q = _mm_loadu_si128(q.as_ptr().cast());
                            let lo =
                                _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(q, nib)));
                            let hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(
                                _mm_srli_epi16(q, 4),
                                nib,
                            )));
                            let (d, mm) = (_mm512_set1_ps(s[0]), _mm512_set1_ps(s[1]));
                            _mm512_storeu_ps(
                                o.as_mut_ptr(),
                                _mm512_add_ps(_mm512_mul_ps(d, lo), mm),
                            );
                            _mm512_storeu_ps(
                                o.as_mut_ptr().add(16),
                                _mm512_add_ps(_mm512_mul_ps(d, hi), mm),
                            );
                        }
                    }
                }
            }
            GgmlType::Q8_0 => {
                for (r, out) in w.chunks_exact_mut(m.cols).enumerate() {
                    let sc = &m.scales[(first + r) * nb..(first + r + 1) * nb];
                    let qs = &m.quants[(first + r) * nb * 32..(first + r + 1) * nb * 32];
                    for ((&d, q), o) in sc
                        .iter()
                        .zip(qs.chunks_exact(32))
                        .zip(out.chunks_exact_mut(32))
                    {
                        // SAFETY: `q` holds 32 bytes and `o` 32 floats.
                        unsafe {
                            let d = _mm512_set1_ps(d);
                            let a = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                                q.as_ptr().cast(),
                            )));
                            let b = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                                q.as_ptr().add(16).cast(),
                            )));
                            _mm512_storeu_ps(o.as_mut_ptr(), _mm512_mul_ps(d, a));
                            _mm512_storeu_ps(o.as_mut_ptr().add(16), _mm512_mul_ps(d, b));
                        }
                    }
                }
            }
            _ => {
                for (r, out) in w.chunks_exact_mut(m.cols).enumerate() {
                    m.row(first + r, out);
                }
            }
        }
    }

    /// Attention scores of 16 query rows: `s[i][j] = scale · Σ_c q[i][c] · kt[c][j]` for the
    /// first `tkp` keys (a multiple of 16) of `kt` (`[hd, tp]`); `q` is `[16, hd]`, `s` is
    /// `[16, tkp]`. Tiles of 8 rows × 32 keys, summed over `c` in order.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores(
        q: &[f32],
        hd: usize,
        kt: &[f32],
        tp: usize,
        tkp: usize,
        scale: f32,
        s: &mut [f32],
    ) {
        assert!(
            tkp.is_multiple_of(16)
                && tkp <= tp
                && q.len() >= 16 * hd
                && kt.len() >= hd * tp
                && s.len() >= 16 * tkp
        );
        let sc = _mm512_set1_ps(scale);
        for r0 in [0, 8] {
            let mut j = 0;
            while j < tkp {
                let two = tkp - j >= 32;
                let mut acc = [_mm512_setzero_ps(); 16];
                for c in 0..hd {
                    // SAFETY: `c < hd`, `j + 16 (or 32) <= tkp <= tp` (asserted above).
                    let (k0, k1) = unsafe {
                        let row = kt.as_ptr().add(c * tp + j);
                        (
                            _mm512_loadu_ps(row),
                            if two {
                                _mm512_loadu_ps(row.add(16))
                            } else {
                                _mm512_setzero_ps()
                            },
                        )
                    };
                    for r in 0..8 {
                        let qv = _mm512_set1_ps(q[(r0 + r) * hd + c]);
                        acc[2 * r] = _mm512_fmadd_ps(qv, k0, acc[2 * r]);
                        if two {
                            acc[2 * r + 1] = _mm512_fmadd_ps(qv, k1, acc[2 * r + 1]);
                        }
                    }
                }
                for r in 0..8 {
                    // SAFETY: row `r0 + r < 16` of `s` holds keys `j..j + 16 (or 32)`.
                    unsafe {
                        let o = s.as_mut_ptr().add((r0 + r) * tkp + j);
                        _mm512_storeu_ps(o, _mm512_mul_ps(acc[2 * r], sc));
                        if two {
                            _mm512_storeu_ps(o.add(16), _mm512_mul_ps(acc[2 * r + 1], sc));
                        }
                    }
                }
                j += if two { 32 } else { 16 };
            }
        }
    }

    /// `o[i] = Σ_j p[i][j] · v_j` for 16 rows of probabilities `p` (`[16, tkp]`, the first `tk`
    /// keys read) and `tk` value rows of `hd` at stride `vs_stride` from `v`; `o` is `[16, hd]`.
    /// Tiles of 4 rows × 64 values, summed over `j` in order.
    ///
    /// # Safety
    /// AVX-512F; `hd` is a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted_values(
        p: &[f32],
        tkp: usize,
        tk: usize,
        v: &[f32],
        vs_stride: usize,
        hd: usize,
        o: &mut [f32],
    ) {
        assert!(
            hd.is_multiple_of(16)
                && tk <= tkp
                && p.len() >= 16 * tkp
                && o.len() >= 16 * hd
                && (tk == 0 || v.len() >= (tk - 1) * vs_stride + hd)
        );
        for r0 in (0..16).step_by(4) {
            for c0 in (0..hd).step_by(64) {
                let nv = ((hd - c0) / 16).min(4);
                let mut acc = [_mm512_setzero_ps(); 16];
                for j in 0..tk {
                    // SAFETY: value row `j < tk` holds `hd` values from `j * vs_stride`
                    // (asserted above), of which `c0..c0 + 16 nv`.
                    let vv: [__m512; 4] = std::array::from_fn(|k| {
                        if k < nv {
                            unsafe { _mm512_loadu_ps(v.as_ptr().add(j * vs_stride + c0 + 16 * k)) }
                        } else {
                            _mm512_setzero_ps()
                        }
                    });
                    for r in 0..4 {
                        let pv = _mm512_set1_ps(p[(r0 + r) * tkp + j]);
                        for k in 0..nv {
                            acc[4 * r + k] = _mm512_fmadd_ps(pv, vv[k], acc[4 * r + k]);
                        }
                    }
                }
                for r in 0..4 {
                    for k in 0..nv {
                        // SAFETY: row `r0 + r < 16` of `o` holds `hd` values.
                        unsafe {
                            _mm512_storeu_ps(
                                o.as_mut_ptr().add((r0 + r) * hd + c0 + 16 * k),
                                acc[4 * r + k],
                            )
                        };
                    }
                }
            }
        }
    }

    /// The `k` rows of `slab` (`[k, np]`) as columns of `dst` (`n` rows, `stride` apart):
    /// `dst[i * stride + r] = slab[r * np + i]` for `i < n`, in 16 × 16 tiles transposed in
    /// registers.
    ///
    /// # Safety
    /// AVX-512F; `np` is a multiple of 16 and at least `n`; `dst` is writable at `i * stride +
    /// r` for every `i < n`, `r < k`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn store_transposed(
        slab: &[f32],
        np: usize,
        k: usize,
        n: usize,
        dst: *mut f32,
        stride: usize,
    ) {
        assert!(np.is_multiple_of(16) && n <= np && slab.len() >= k * np);
        let whole = k - k % 16;
        for r0 in (0..whole).step_by(16) {
            for p0 in (0..n).step_by(16) {
                // SAFETY: rows `r0..r0 + 16` of the slab hold positions `p0..p0 + 16` (`np` is
                // a multiple of 16 above `p0`).
                let rows: [__m512; 16] = std::array::from_fn(|i| unsafe {
                    _mm512_loadu_ps(slab.as_ptr().add((r0 + i) * np + p0))
                });
                let cols = transpose16(rows);
                for (i, c) in cols.iter().enumerate().take(n - p0) {
                    // SAFETY: the caller's bounds (`p0 + i < n`, `r0 + 16 <= k`).
                    unsafe { _mm512_storeu_ps(dst.add((p0 + i) * stride + r0), *c) };
                }
            }
        }
        for r in whole..k {
            for i in 0..n {
                // SAFETY: the caller's bounds.
                unsafe { *dst.add(i * stride + r) = slab[r * np + i] };
            }
        }
    }

    /// A 16 × 16 tile transposed: `out[c][r] = rows[r][c]`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn transpose16(a: [__m512; 16]) -> [__m512; 16] {
        // Pairs of rows interleaved, then pairs of pairs: in each 128-bit lane `L`, `u[4j + k]`
        // holds column `4L + k` of rows `4j..4j + 4`.
        let t: [__m512; 16] = std::array::from_fn(|i| {
            let (x, y) = (a[i / 2 * 2], a[i / 2 * 2 + 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(x, y)
            } else {
                _mm512_unpackhi_ps(x, y)
            }
        });
        let u: [__m512; 16] = std::array::from_fn(|i| {
            let (j, k) = (i / 4, i % 4);
            let (x, y) = (
                _mm512_castps_pd(t[4 * j + k / 2]),
                _mm512_castps_pd(t[4 * j + k / 2 + 2]),
            );
            _mm512_castpd_ps(if k % 2 == 0 {
                _mm512_unpacklo_pd(x, y)
            } else {
                _mm512_unpackhi_pd(x, y)
            })
        });
        // Then the 4 × 4 grid of lanes: column `4L + k` gathers lane `L` of `u[k]`, `u[4 + k]`,
        // `u[8 + k]` and `u[12 + k]`.
        let mut out = [_mm512_setzero_ps(); 16];
        for k in 0..4 {
            let (x0, x1) = (
                _mm512_shuffle_f32x4::<0x44>(u[k], u[4 + k]),
                _mm512_shuffle_f32x4::<0xEE>(u[k], u[4 + k]),
            );
            let (y0, y1) = (
                _mm512_shuffle_f32x4::<0x44>(u[8 + k], u[12 + k]),
                _mm512_shuffle_f32x4::<0xEE>(u[8 + k], u[12 + k]),
            );
            out[k] = _mm512_shuffle_f32x4::<0x88>(x0, y0);
            out[4 + k] = _mm512_shuffle_f32x4::<0xDD>(x0, y0);
            out[8 + k] = _mm512_shuffle_f32x4::<0x88>(x1, y1);
            out[12 + k] = _mm512_shuffle_f32x4::<0xDD>(x1, y1);
        }
        out
    }

    /// `out[r][p] = Σ_c w[r][c] · xt[c][p]` for the `w.len() / cols` rows of `w` (`[rows,
    /// cols]`) and the `np` positions of `xt` (`[cols, np]`); `out` is `[rows, np]`.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `np` is a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block(w: &[f32], cols: usize, xt: &[f32], np: usize, out: &mut [f32]) {
        let rows = w.len() / cols;
        assert!(np.is_multiple_of(16) && xt.len() >= cols * np && out.len() >= rows * np);
        // Columns in blocks of `KB`: one block of 32 positions of `xt` (24 KiB) stays in L1
        // while every row group of `w` passes over it. Each sum still runs over c = 0, 1, ... in
        // order (the accumulators are stored and reloaded between blocks): the same result.
        super::for_each_tile(cols, np, rows, KB, R, |c0, len, p, v, r, full| {
            // SAFETY: rows `r..r + R` (or `r` alone) and columns `c0..c0 + len` of `w`, those
            // columns' positions `p..p + 16 v` of `xt`, and the rows' positions of `out` lie
            // inside them (asserted above).
            unsafe {
                let (wp, xp, op) = (
                    w.as_ptr().add(r * cols + c0),
                    xt.as_ptr().add(c0 * np + p),
                    out.as_mut_ptr().add(r * np + p),
                );
                let first = c0 == 0;
                // SmolLM2's two widths as constants, so that each row's weights are a fixed
                // offset from one pointer (no address arithmetic per row).
                match (full, v, cols) {
                    (true, 2, 576) => micro::<R, 2, 576>(wp, cols, xp, np, op, len, first),
                    (true, 2, 1536) => micro::<R, 2, 1536>(wp, cols, xp, np, op, len, first),
                    (true, 1, 576) => micro::<R, 1, 576>(wp, cols, xp, np, op, len, first),
                    (true, 1, 1536) => micro::<R, 1, 1536>(wp, cols, xp, np, op, len, first),
                    (true, 2, _) => micro::<R, 2, 0>(wp, cols, xp, np, op, len, first),
                    (true, _, _) => micro::<R, 1, 0>(wp, cols, xp, np, op, len, first),
                    (false, 2, _) => micro::<1, 2, 0>(wp, cols, xp, np, op, len, first),
                    (false, _, _) => micro::<1, 1, 0>(wp, cols, xp, np, op, len, first),
                }
            }
        });
    }

    /// Columns per block of [`block`].
    const KB: usize = 192;

    /// `NR` rows × `16 V` positions over `len` columns: every column `c` adds `w[r][c] ·
    /// xt[c][p..]` to the accumulators, which start at 0 (`first`) or at `out`'s values. Rows of
    /// `w` are `cols` apart (`COLS` when it is not 0).
    ///
    /// # Safety
    /// AVX-512F; `NR` rows of `len` at `w` (`cols` apart), `len` rows of `np` at `xt` with
    /// `16 V` readable from each, and `NR` rows of `np` at `out` with `16 V` readable and
    /// writable in each.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn micro<const NR: usize, const V: usize, const COLS: usize>(
        w: *const f32,
        cols: usize,
        xt: *const f32,
        np: usize,
        out: *mut f32,
        len: usize,
        first: bool,
    ) {
        let cols = if COLS == 0 { cols } else { COLS };
        let mut acc = [[_mm512_setzero_ps(); V]; NR];
        if !first {
            for (r, a) in acc.iter_mut().enumerate() {
                for (v, av) in a.iter_mut().enumerate() {
                    // SAFETY: the caller's bounds.
                    *av = unsafe { _mm512_loadu_ps(out.add(r * np + 16 * v)) };
                }
            }
        }
        for c in 0..len {
            // SAFETY: the caller's bounds.
            unsafe {
                let x: [__m512; V] =
                    std::array::from_fn(|v| _mm512_loadu_ps(xt.add(c * np + 16 * v)));
                for (r, a) in acc.iter_mut().enumerate() {
                    let wv = _mm512_set1_ps(*w.add(r * cols + c));
                    for (av, xv) in a.iter_mut().zip(&x) {
                        *av = _mm512_fmadd_ps(wv, *xv, *av);
                    }
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            for (v, av) in a.iter().enumerate() {
                // SAFETY: the caller's bounds.
                unsafe { _mm512_storeu_ps(out.add(r * np + 16 * v), *av) };
            }
        }
    }
}

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

/// The decoder's element-wise and attention kernels, written once (`*_impl`) and compiled for
/// AVX2+FMA where the CPU has them, as [`crate::ecpu`]'s are (same `exp`, same dispatch).
mod kernels {
    // `attend` takes a query row, a cache and its shape.
    #![allow(clippy::too_many_arguments)]

    use super::dot;
    use crate::ecpu::kernels::{dispatch, exp, max8, sum8};

    /// `gate = silu(gate) * up`.
    #[inline(always)]
    fn silu_mul_impl(gate: &mut [f32], up: &[f32]) {
        for (g, &u) in gate.iter_mut().zip(up) {
            *g = *g / (1.0 + exp(-*g)) * u;
        }
    }

    /// Each row of `x` RMS-normalised and scaled by `w`, into `out`.
    #[inline(always)]
    fn rms_norm_impl(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let d = w.len();
        for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let ms = sum8(row.iter().map(|v| v * v)) / d as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            for ((oj, &xj), &wj) in o.iter_mut().zip(row).zip(w) {
                *oj = xj * inv * wj;
            }
        }
    }

    /// One query row `q` (`[heads * hd]`) over the first `t` cached keys and values (`[t, kv_heads
    /// * hd]`, `rep` query heads per key head), into `out` (zeroed, `[heads * hd]`).
    #[inline(always)]
    fn attend_impl(
        q: &[f32],
        ks: &[f32],
        vs: &[f32],
        t: usize,
        rep: usize,
        hd: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let kvd = q.len() / rep;
        let mut scores = vec![0f32; t];
        for (h, o) in out.chunks_exact_mut(hd).enumerate() {
            let g = h / rep;
            let qh = &q[h * hd..(h + 1) * hd];
            let mut max = f32::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate() {
                *s = dot(qh, &ks[j * kvd + g * hd..j * kvd + (g + 1) * hd]) * scale;
                max = max.max(*s);
            }
            for s in &mut scores {
                *s = exp(*s - max);
            }
            let z = sum8(scores.iter().copied());
            for (j, s) in scores.iter().enumerate() {
                let p = s / z;
                let vj = &vs[j * kvd + g * hd..j * kvd + (g + 1) * hd];
                for (oi, vi) in o.iter_mut().zip(vj) {
                    *oi += p * vi;
                }
            }
        }
    }

    /// Softmax over `row[..len]`; the rest of the row (masked positions) set to 0.
    #[inline(always)]
    fn softmax_prefix_impl(row: &mut [f32], len: usize) {
        let (live, masked) = row.split_at_mut(len);
        let max = max8(live);
        for s in live.iter_mut() {
            *s = exp(*s - max);
        }
        let inv = 1.0 / sum8(live.iter().copied());
        for s in live.iter_mut() {
            *s *= inv;
        }
        masked.fill(0.0);
    }

    dispatch!(silu_mul, silu_mul_avx2, silu_mul_impl, (gate: &mut [f32], up: &[f32]));
    dispatch!(softmax_prefix, softmax_prefix_avx2, softmax_prefix_impl, (row: &mut [f32], len: usize));
    dispatch!(rms_norm, rms_norm_avx2, rms_norm_impl, (x: &[f32], w: &[f32], eps: f32, out: &mut [f32]));
    dispatch!(attend, attend_avx2, attend_impl, (q: &[f32], ks: &[f32], vs: &[f32], t: usize, rep: usize, hd: usize, scale: f32, out: &mut [f32]));
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
        let mut out = vec![0f32; x.len()];
        let eps = self.cfg.eps as f32;
        if x.len() < 2 * GEMM_ROWS * w.len() {
            kernels::rms_norm(x, w, eps, &mut out);
            return out;
        }
        // Many rows (a prompt, the verifier's pass) in parallel, like the rest of the step.
        let chunk = GEMM_ROWS * w.len();
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(o, x)| kernels::rms_norm(x, w, eps, o));
        out
    }

    /// Token `t` (the `index`-th of a step) embedded into `out`, or an input error when it lies
    /// outside the vocabulary.
    fn embedding(&self, index: usize, t: u32, out: &mut [f32]) -> Result<()> {
        if t as usize >= self.cfg.vocab {
            return Err(Error::Input {
                index,
                detail: format!("token {t} outside the vocabulary"),
            });
        }
        self.embed.row(t as usize, out);
        Ok(())
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
    /// order). Returns the logits of the rows listed in `want` (`[want.len(), vocab]`). `fast`:
    /// the verifier's pass, whose GEMMs may take 16-bit activations ([`Acts::new`]).
    fn step(
        &self,
        tokens: &[u32],
        seq: &[usize],
        caches: &mut [SeqCache],
        want: &[usize],
        fast: bool,
    ) -> Result<Vec<f32>> {
        self.step_then(tokens, seq, caches, want, fast, |last| {
            self.embed.matmul(last, want.len(), fast)
        })
    }

    /// [`Self::step`] up to the output layer ([`Self::step_in_pool`]), then `head` on the
    /// final-normed rows `want`.
    fn step_then<T: Send>(
        &self,
        tokens: &[u32],
        seq: &[usize],
        caches: &mut [SeqCache],
        want: &[usize],
        fast: bool,
        head: impl FnOnce(&[f32]) -> T + Send,
    ) -> Result<T> {
        // On a pool thread, so that the step's many parallel loops start from inside the pool
        // instead of each waking it from outside.
        rayon::scope(|_| {
            let last = self.step_in_pool(tokens, seq, caches, want, fast)?;
            Ok(head(&last))
        })
    }

    /// [`Self::step`]'s work up to the output layer: the final-normed hidden rows `want`,
    /// `[want.len(), dim]`.
    fn step_in_pool(
        &self,
        tokens: &[u32],
        seq: &[usize],
        caches: &mut [SeqCache],
        want: &[usize],
        fast: bool,
    ) -> Result<Vec<f32>> {
        let c = self.cfg;
        let (n, d) = (tokens.len(), c.dim);
        let hd = d / c.heads;
        let kvd = c.kv_heads * hd;
        let rep = c.heads / c.kv_heads;
        let mut x = vec![0f32; n * d];
        for (r, &t) in tokens.iter().enumerate() {
            self.embedding(r, t, &mut x[r * d..(r + 1) * d])?;
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
            let [mut q, mut k, v] = matmul_many([&b.wq, &b.wk, &b.wv], &h, n, fast);
            if n < 2 * GEMM_ROWS {
                for r in 0..n {
                    self.rope(&mut q[r * d..(r + 1) * d], &angles[r]);
                    self.rope(&mut k[r * kvd..(r + 1) * kvd], &angles[r]);
                }
            } else {
                q.par_chunks_mut(d)
                    .zip(k.par_chunks_mut(kvd))
                    .zip(&angles)
                    .for_each(|((q, k), a)| {
                        self.rope(q, a);
                        self.rope(k, a);
                    });
            }
            for r in 0..n {
                let cache = &mut caches[seq[r]];
                cache.k[l].extend_from_slice(&k[r * kvd..(r + 1) * kvd]);
                cache.v[l].extend_from_slice(&v[r * kvd..(r + 1) * kvd]);
            }
            let mut att = vec![0f32; n * d];
            if n >= GEMM_ROWS && seq.iter().all(|&s| s == seq[0]) {
                // Many rows of one sequence (a prompt, the verifier's pass): GEMMs per head.
                let cache = &caches[seq[0]];
                self.attend_rows(&q, &cache.k[l], &cache.v[l], pos[0], n, &mut att);
            } else {
                // Per row over its own sequence's keys up to its position.
                att.par_chunks_mut(d).enumerate().for_each(|(r, out)| {
                    let cache = &caches[seq[r]];
                    let q = &q[r * d..(r + 1) * d];
                    kernels::attend(q, &cache.k[l], &cache.v[l], pos[r] + 1, rep, hd, scale, out);
                });
            }
            let o = b.wo.matmul(&att, n, fast);
            for (xi, oi) in x.iter_mut().zip(o) {
                *xi += oi;
            }
            let h = self.rms_norm(&x, &b.ffn_norm);
            let [mut gate, up] = matmul_many([&b.gate, &b.up], &h, n, fast);
            if n < 2 * GEMM_ROWS {
                kernels::silu_mul(&mut gate, &up);
            } else {
                let chunk = GEMM_ROWS * c.ffn;
                gate.par_chunks_mut(chunk)
                    .zip(up.par_chunks(chunk))
                    .for_each(|(g, u)| kernels::silu_mul(g, u));
            }
            let down = b.down.matmul(&gate, n, fast);
            for (xi, oi) in x.iter_mut().zip(down) {
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
        Ok(self.rms_norm(&rows, &self.norm))
    }

    /// Causal attention of `n` consecutive rows of one sequence, the first at position `start`,
    /// whose keys and values (`[start + n, kv_heads * hd]`) are cached, into `att` (`[n, dim]`):
    /// per head and 16 query rows, the scores (`q · kᵀ` over the keys the last row sees, the
    /// masked part included), a softmax over each row's prefix, and the output (`p · v`). On
    /// AVX-512 tiles ([`avx512::scores`], [`avx512::weighted_values`]) where the CPU has them and
    /// heads are a multiple of 16 wide, else as two gemm-crate calls.
    fn attend_rows(
        &self,
        q: &[f32],
        ks: &[f32],
        vs: &[f32],
        start: usize,
        n: usize,
        att: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        let tiles = std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let tiles = false;
        self.attend_rows_with(q, ks, vs, start, n, att, tiles);
    }

    /// [`Self::attend_rows`], on the AVX-512 tiles when `tiles` (which the caller has checked
    /// the CPU runs) and the head width allows, else on the gemm crate.
    #[allow(clippy::too_many_arguments)]
    fn attend_rows_with(
        &self,
        q: &[f32],
        ks: &[f32],
        vs: &[f32],
        start: usize,
        n: usize,
        att: &mut [f32],
        tiles: bool,
    ) {
        let c = self.cfg;
        let (d, hd) = (c.dim, c.dim / c.heads);
        let (kvd, rep, t) = (c.kv_heads * hd, c.heads / c.kv_heads, start + n);
        assert!(
            q.len() >= n * d && att.len() >= n * d && ks.len() >= t * kvd && vs.len() >= t * kvd
        );
        let scale = 1.0 / (hd as f32).sqrt();
        let dst = SendPtr(att.as_mut_ptr());
        // One task per head and 16 query rows (even shares for two threads); each reads only
        // the keys its last row sees.
        const ROWS: usize = 16;
        let chunks = n.div_ceil(ROWS);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = tiles;
        #[cfg(target_arch = "x86_64")]
        if tiles && hd.is_multiple_of(16) {
            // Each key group's keys transposed once (`[hd, tp]`, zero-padded to 16 keys), so
            // that scores are rows of 16 keys.
            let tp = t.next_multiple_of(16);
            let kts: Vec<Vec<f32>> = (0..c.kv_heads)
                .into_par_iter()
                .map(|g| {
                    let mut kt = vec![0f32; hd * tp];
                    for (j, k) in ks.chunks_exact(kvd).take(t).enumerate() {
                        for (cc, &v) in k[g * hd..(g + 1) * hd].iter().enumerate() {
                            kt[cc * tp + j] = v;
                        }
                    }
                    kt
                })
                .collect();
            (0..c.heads * chunks).into_par_iter().for_each(|task| {
                let dst = &dst;
                let (h, i0) = (task / chunks, task % chunks * ROWS);
                let (m, g) = (ROWS.min(n - i0), h / rep);
                let tk = start + i0 + m;
                let mut qb = vec![0f32; ROWS * hd];
                for (i, row) in qb.chunks_exact_mut(hd).take(m).enumerate() {
                    let at = (i0 + i) * d + h * hd;
                    row.copy_from_slice(&q[at..at + hd]);
                }
                let tkp = tk.next_multiple_of(16);
                let mut s = vec![0f32; ROWS * tkp];
                let mut o = vec![0f32; ROWS * hd];
                // SAFETY: AVX-512F was detected (`tiles`); `qb` is `[16, hd]`, `kts[g]` is `[hd, tp]` with
                // `tkp <= tp`, `s` is `[16, tkp]`, `o` is `[16, hd]`, the values of group `g`
                // are `tk <= t` rows of `hd` at stride `kvd` inside `vs`, and `hd` is a
                // multiple of 16.
                unsafe {
                    avx512::scores(&qb, hd, &kts[g], tp, tkp, scale, &mut s);
                    for (i, row) in s.chunks_exact_mut(tkp).take(m).enumerate() {
                        kernels::softmax_prefix(row, start + i0 + i + 1);
                    }
                    avx512::weighted_values(&s, tkp, tk, &vs[g * hd..], kvd, hd, &mut o);
                }
                for (i, row) in o.chunks_exact(hd).take(m).enumerate() {
                    // SAFETY: columns `h * hd..(h + 1) * hd` of row `i0 + i` of `att` (asserted
                    // above to hold `n` rows of `d`), which only this task writes; `att`
                    // outlives the loop.
                    let out = unsafe {
                        std::slice::from_raw_parts_mut(dst.0.add((i0 + i) * d + h * hd), hd)
                    };
                    out.copy_from_slice(row);
                }
            });
            return;
        }
        (0..c.heads * chunks).into_par_iter().for_each(|task| {
            let dst = &dst;
            let (h, i0) = (task / chunks, task % chunks * ROWS);
            let (m, g) = (ROWS.min(n - i0), h / rep);
            let tk = start + i0 + m;
            let mut s = vec![0f32; m * tk];
            // SAFETY: `s` is `[m, tk]` row-major; the query rows `i0..i0 + m` of head `h` are
            // rows of `hd` at stride `d` inside `q`; the first `tk <= t` keys of group `g` are
            // rows of `hd` at stride `kvd` inside `ks`, read transposed (lengths asserted above).
            unsafe {
                gemm_into(
                    m,
                    tk,
                    hd,
                    (s.as_mut_ptr(), 1, tk as isize),
                    (q.as_ptr().add(i0 * d + h * hd), 1, d as isize),
                    (ks.as_ptr().add(g * hd), kvd as isize, 1),
                    scale,
                );
            }
            for (i, row) in s.chunks_exact_mut(tk).enumerate() {
                kernels::softmax_prefix(row, start + i0 + i + 1);
            }
            // SAFETY: the output is columns `h * hd..(h + 1) * hd` of rows `i0..i0 + m` of
            // `att` (stride `d`), which only this task writes, and `att` outlives the loop; the
            // first `tk` values of group `g` are rows of `hd` at stride `kvd` inside `vs`.
            unsafe {
                gemm_into(
                    m,
                    hd,
                    tk,
                    (dst.0.add(i0 * d + h * hd), 1, d as isize),
                    (s.as_ptr(), 1, tk as isize),
                    (vs.as_ptr().add(g * hd), 1, kvd as isize),
                    1.0,
                );
            }
        });
    }

    /// Whether [`Self::forward_cols`] runs here for `n` positions: the CPU runs the int16
    /// kernel ([`Xq`]), `n` is at least [`GEMM_ROWS`], the widths are whole 32-column blocks
    /// and every layer's matrices are Q4_1 or Q8_0, as [`Acts::new`] requires of every GEMM of
    /// the `fast` pass.
    fn cols_pass_runs(&self, n: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let c = self.cfg;
            n >= GEMM_ROWS
                && c.dim.is_multiple_of(32)
                && c.ffn.is_multiple_of(32)
                && avx512q::runs()
                && self.blocks.iter().all(|b| {
                    [&b.wq, &b.wk, &b.wv, &b.wo, &b.gate, &b.up, &b.down]
                        .into_iter()
                        .all(QMat::int16)
                })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = n;
            false
        }
    }

    /// The verifier's teacher-forced pass over `tokens` (one sequence from position 0), with
    /// the activations between layers kept positions-minor: `[width, np]`, positions padded
    /// with zeros to `np`, a multiple of 16. That is the layout of every GEMM's slab
    /// ([`gemm_chunks`]), so each product is copied whole instead of transposed row by row
    /// ([`avx512::store_transposed`]), and the layout the next GEMM's activations are quantised
    /// from without transposes ([`Xq::from_cols`]); norms, rope, silu and residual adds run
    /// across positions. Only attention takes rows: `q`, `k`, `v` are transposed for it and its
    /// output quantised from rows. The same operations on the same values in the same order
    /// as [`Self::step`]'s `fast` pass, so bit for bit its result (tested): the final-normed
    /// rows from `from`, `[n - from, dim]`. The last layer computes keys and values at every
    /// position, and the rest only from `from` (the positions whose outputs are read; at least
    /// [`GEMM_ROWS`] of them, else at every position). Only where [`Self::cols_pass_runs`].
    #[cfg(target_arch = "x86_64")]
    fn forward_cols(&self, tokens: &[u32], from: usize) -> Result<Vec<f32>> {
        let c = self.cfg;
        let (n, d, ffn) = (tokens.len(), c.dim, c.ffn);
        let np = n.next_multiple_of(16);
        let hd = d / c.heads;
        let kvd = c.kv_heads * hd;
        let eps = c.eps as f32;
        assert!(from < n && self.cols_pass_runs(n));
        let mut x = vec![0f32; d * np];
        let mut row = vec![0f32; d];
        for (p, &t) in tokens.iter().enumerate() {
            self.embedding(p, t, &mut row)?;
            for (i, &v) in row.iter().enumerate() {
                x[i * np + p] = v;
            }
        }
        // cos and sin of each rope angle (`[hd / 2, np]`), as `rope_angles` gives them.
        let half = hd / 2;
        let (mut cos, mut sin) = (vec![0f32; half * np], vec![0f32; half * np]);
        for p in 0..n {
            let (cs, sn) = self.rope_angles(p);
            for i in 0..half {
                cos[i * np + p] = cs[i];
                sin[i * np + p] = sn[i];
            }
        }
        let int16 = |xq: Option<Xq>| {
            xq.map(Acts::I16)
                .ok_or_else(|| bad("the int16 kernel does not run here"))
        };
        let quantised =
            |t: &[f32], width: usize, n: usize, np: usize| int16(Xq::from_cols(t, n, np, width));
        // The last layer computes queries, attention and the MLP only at the positions whose
        // outputs are read (`from` on; its keys and values at every position), where they are
        // enough for the kernel. `x` then holds those positions alone, from `base`.
        let (mut np, mut base) = (np, 0);
        let last = self.blocks.len() - 1;
        for (l, b) in self.blocks.iter().enumerate() {
            let q0 = if l == last && n - from >= GEMM_ROWS {
                from
            } else {
                0
            };
            let (m, nq) = (n - q0, (n - q0).next_multiple_of(16));
            let h = rms_norm_cols(&x, &b.attn_norm, eps, np);
            let hq = quantised(&h, d, n, np)?;
            let (q, mut k, v) = if q0 == 0 {
                let [mut q, k, v] = gemm_cols([&b.wq, &b.wk, &b.wv], &hq);
                rope_cols(&mut q, &cos, &sin, hd, np);
                (q, k, v)
            } else {
                let [k, v] = gemm_cols([&b.wk, &b.wv], &hq);
                let [mut q] = gemm_cols([&b.wq], &quantised(&sub_cols(&h, np, q0, n), d, m, nq)?);
                let (cos, sin) = (sub_cols(&cos, np, q0, n), sub_cols(&sin, np, q0, n));
                rope_cols(&mut q, &cos, &sin, hd, nq);
                (q, k, v)
            };
            rope_cols(&mut k, &cos, &sin, hd, np);
            // SAFETY: `cols_pass_runs` found AVX-512F; `np` and `nq` are multiples of 16
            // above `n` and `m`.
            let (q, k, v) = unsafe {
                (
                    rows_of(&q, d, nq, 0, m),
                    rows_of(&k, kvd, np, 0, n),
                    rows_of(&v, kvd, np, 0, n),
                )
            };
            let mut att = vec![0f32; m * d];
            self.attend_rows(&q, &k, &v, q0, m, &mut att);
            let att = int16(Xq::new(&att, m, d))?;
            let [o] = gemm_cols([&b.wo], &att);
            if q0 > 0 {
                (x, np, base) = (sub_cols(&x, np, q0, n), nq, q0);
            }
            for (xi, oi) in x.iter_mut().zip(o) {
                *xi += oi;
            }
            let h = rms_norm_cols(&x, &b.ffn_norm, eps, np);
            let [mut gate, up] = gemm_cols([&b.gate, &b.up], &quantised(&h, d, m, np)?);
            let [down] = gemm_cols(
                [&b.down],
                &int16(Xq::silu_from_cols(&mut gate, &up, m, np, ffn))?,
            );
            for (xi, oi) in x.iter_mut().zip(down) {
                *xi += oi;
            }
        }
        // SAFETY: as above.
        let rows = unsafe { rows_of(&x, d, np, from - base, n - base) };
        Ok(self.rms_norm(&rows, &self.norm))
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

    /// Logits of every position of `ids` as the verifier computes them (16-bit activations in
    /// the GEMMs where the CPU has AVX-512 VNNI), for comparison with the reference.
    pub fn forward_all(&self, ids: &[u32]) -> Result<Vec<f32>> {
        Decoder::forward_from(self, ids, 0)
    }

    /// Logits of every position of `ids` with f32 activations throughout, as prompts are
    /// computed.
    pub fn forward_all_exact(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.teacher_forced(ids, 0, false)
    }

    /// The logits of positions `from..` of `ids` in one step over all of `ids`.
    fn teacher_forced(&self, ids: &[u32], from: usize, fast: bool) -> Result<Vec<f32>> {
        if from >= ids.len() {
            return Err(Error::Input {
                index: from,
                detail: format!("no positions from {from} of {}", ids.len()),
            });
        }
        self.teacher_forced_then(ids, from, fast, |last, m| self.embed.matmul(last, m, fast))
    }

    /// The teacher-forced pass over `ids` up to the output layer, then `head` on the
    /// final-normed rows from `from` and their count: [`Self::forward_cols`] for the verifier's
    /// pass where it runs, else [`Self::step_then`].
    fn teacher_forced_then<T: Send>(
        &self,
        ids: &[u32],
        from: usize,
        fast: bool,
        head: impl FnOnce(&[f32], usize) -> T + Send,
    ) -> Result<T> {
        let m = ids.len() - from;
        #[cfg(target_arch = "x86_64")]
        if fast && self.cols_pass_runs(ids.len()) {
            // On a pool thread, as in `step_then`, with the pool's other threads kept awake.
            let done = AtomicBool::new(false);
            return rayon::scope(|s| {
                let _awake = keep_awake(s, &done);
                Ok(head(&self.forward_cols(ids, from)?, m))
            });
        }
        let rows: Vec<usize> = (from..ids.len()).collect();
        let seq = vec![0; ids.len()];
        self.step_then(ids, &seq, &mut self.caches(1), &rows, fast, |last| {
            head(last, m)
        })
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
        self.model
            .step(tokens, seqs, &mut self.caches, &rows, false)
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
        let logits = self.step(&tokens, &seq, &mut caches, &want, false)?;
        Ok((
            Box::new(QuantSession {
                model: self,
                caches,
            }),
            logits,
        ))
    }

    fn forward_from(&self, ids: &[u32], from: usize) -> Result<Vec<f32>> {
        self.teacher_forced(ids, from, true)
    }

    /// [`Decoder::forward_from`]'s pass, with the output layer reduced to the two logits a
    /// position's greedy check reads ([`QMat::tops`]) instead of all 49,152.
    fn forward_tops(&self, ids: &[u32], from: usize, tokens: &[u32]) -> Result<Vec<[f32; 2]>> {
        super::smollm::check_tops_args(ids, from, tokens, self.cfg.vocab)?;
        self.teacher_forced_then(ids, from, true, |last, m| {
            self.embed.tops(last, m, tokens, true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A matrix of `rows × cols` with pseudo-random blocks of type `ty` (Q4_1 or Q8_0).
    pub(super) fn matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> QMat {
        let mut s = seed;
        let mut next = move || {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 33) as u32
        };
        let nb = rows * cols / 32;
        let (scales, quants) = match ty {
            GgmlType::Q4_1 => (
                (0..2 * nb)
                    .map(|i| (next() % 1000) as f32 / 4e4 - if i % 2 == 1 { 0.01 } else { 0.0 })
                    .collect(),
                (0..16 * nb).map(|_| next() as u8).collect(),
            ),
            _ => (
                (0..nb).map(|_| (next() % 1000) as f32 / 1e5).collect(),
                (0..32 * nb).map(|_| next() as u8).collect(),
            ),
        };
        QMat {
            ty,
            scales,
            quants,
            dense: Vec::new(),
            rows,
            cols,
            #[cfg(target_arch = "x86_64")]
            row_sums: std::sync::OnceLock::new(),
        }
    }

    /// Every GEMM path (the AVX-512 kernel where this CPU has it: rows in groups of 12 and
    /// alone, 32 and 16 positions at a time, one and several column blocks, a partial last one,
    /// widths other than SmolLM2's; several matrices in one loop) gives the per-row dot products
    /// of the decoding path, up to float rounding.
    #[test]
    fn gemm_paths_equal_row_dot_products() {
        for (ty, rows, cols) in [
            (GgmlType::Q4_1, 200, 96),
            (GgmlType::Q8_0, 40, 64),
            (GgmlType::Q4_1, 24, 576),
            (GgmlType::Q4_1, 13, 320),
        ] {
            let m = matrix(ty, rows, cols, rows as u64);
            for n in [8, 21, 48] {
                let x: Vec<f32> = (0..n * cols)
                    .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
                    .collect();
                let want: Vec<f32> = (0..n)
                    .flat_map(|i| (0..rows).map(move |r| (i, r)))
                    .map(|(i, r)| m.row_dot(r, &x[i * cols..(i + 1) * cols]))
                    .collect();
                let close = |got: &[f32], path: &str| {
                    assert_eq!(got.len(), want.len());
                    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{ty:?} {rows}×{cols}, n {n}, {path}, value {k}: {g} vs {w}"
                        );
                    }
                };
                close(&m.matmul(&x, n, false), "matmul");
                close(&m.matmul_gemm(&x, n), "gemm crate");
                if let Some(xt) = Xt::new(&x, n, cols) {
                    let twice = matmul_xt(&[&m, &m], &Acts::F32(xt));
                    close(&twice[0], "avx512, first of two");
                    close(&twice[1], "avx512, second of two");
                }
            }
        }
    }

    /// `QMat::tops` gives exactly the largest output and the chosen row's output of the same
    /// path's `QMat::matmul`, on every path (16-bit and f32 activations; below `GEMM_ROWS`
    /// rows), with a last chunk shorter than `GEMM_CHUNK`, the chosen rows in several chunks,
    /// and a position whose NaN activation makes all its outputs NaN (its largest is then -inf,
    /// as `max8` gives, and its chosen output NaN).
    #[test]
    fn tops_are_the_full_products_largest_and_chosen_outputs() {
        for (ty, rows, cols) in [(GgmlType::Q8_0, 200, 64), (GgmlType::Q4_1, 96, 576)] {
            let m = matrix(ty, rows, cols, 7);
            for n in [3, 21] {
                let mut x: Vec<f32> = (0..n * cols)
                    .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
                    .collect();
                x[cols + 5] = f32::NAN;
                let tokens: Vec<u32> = (0..n).map(|i| ((i * 61) % rows) as u32).collect();
                for fast in [false, true] {
                    let y = m.matmul(&x, n, fast);
                    let got = m.tops(&x, n, &tokens, fast);
                    assert_eq!(got.len(), n);
                    for (i, (row, [top, chosen])) in y.chunks_exact(rows).zip(got).enumerate() {
                        let want = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let want_chosen = row[tokens[i] as usize];
                        let at = format!("{ty:?} {rows}×{cols}, n {n}, fast {fast}, position {i}");
                        assert_eq!(top.to_bits(), want.to_bits(), "{at}: largest");
                        assert!(
                            chosen.to_bits() == want_chosen.to_bits()
                                || (chosen.is_nan() && want_chosen.is_nan()),
                            "{at}: chosen {chosen} vs {want_chosen}"
                        );
                        if i == 1 {
                            assert!(top == f32::NEG_INFINITY && chosen.is_nan(), "{at}");
                        } else {
                            assert!(top.is_finite() && chosen <= top, "{at}");
                        }
                    }
                }
            }
        }
    }

    /// `Xq::new`'s positions-in-lanes quantisation equals the one-position `quantize` bit for
    /// bit: words, scales and sums, for 1 to 37 positions (a partial last group of 16, padded
    /// positions left zero), with an all-zero block, a NaN, an infinity, tiny and huge values.
    #[test]
    fn quantizing_16_positions_at_once_equals_one_at_a_time() {
        #[cfg(target_arch = "x86_64")]
        {
            if !(std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni"))
            {
                eprintln!("quantize16: no AVX-512 VNNI here; nothing to compare");
                return;
            }
            let cols = 96;
            for n in [GEMM_ROWS, 16, 17, 37] {
                let mut x: Vec<f32> = (0..n * cols)
                    .map(|i| {
                        let v = ((i * 7919) % 2001) as f32 / 1000.0 - 1.0;
                        v * [1e-3, 1.0, 1e3][(i / cols) % 3]
                    })
                    .collect();
                x[cols..cols + 32].fill(0.0);
                x[2 * cols + 40] = f32::NAN;
                x[3 * cols + 70] = f32::INFINITY;
                x[4 * cols + 3] = -0.0;
                let q = Xq::new(&x, n, cols).expect("the int16 path runs here");
                let np = q.np;
                assert!(np.is_multiple_of(16) && np >= n);
                let same =
                    |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
                for b in 0..cols / 32 {
                    for i in 0..np {
                        let (words, s, sum) = if i < n {
                            // SAFETY: AVX-512F and BW were detected; 32 values.
                            unsafe {
                                avx512q::quantize(&x[i * cols + 32 * b..i * cols + 32 * b + 32])
                            }
                        } else {
                            ([0; 16], 0.0, 0.0)
                        };
                        let at = format!("n {n}, block {b}, position {i}");
                        for (j, w) in words.iter().enumerate() {
                            assert_eq!(q.words[(16 * b + j) * np + i], *w, "{at}, word {j}");
                        }
                        assert!(
                            same(q.scale[b * np + i], s),
                            "{at}: scale {} vs {s}",
                            q.scale[b * np + i]
                        );
                        assert!(
                            same(q.sums[b * np + i], sum),
                            "{at}: sum {} vs {sum}",
                            q.sums[b * np + i]
                        );
                    }
                }
                assert!(
                    q.scale[1] == 0.0 && q.scale[np + 2].is_nan() && q.scale[2 * np + 3].is_nan(),
                    "n {n}: the zero, NaN and infinite blocks"
                );
            }
        }
    }

    /// The verifier's 16-bit path (where this CPU has AVX-512 VNNI): every output within the
    /// bound its activation rounding allows (`Σ |w| · s_b / 2` per block, plus f32 rounding) of
    /// the exact product, for Q4_1 and Q8_0, every tile shape (rows in sixes and alone; 32 and
    /// 16 positions; both SmolLM2 widths and others), activations from 1e-3 to 1e3 with an
    /// all-zero block; a NaN activation poisons its own position only.
    #[test]
    fn int16_path_is_within_its_rounding_bound() {
        let vnni = cfg!(target_arch = "x86_64") && {
            #[cfg(target_arch = "x86_64")]
            let has = std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512bw");
            #[cfg(not(target_arch = "x86_64"))]
            let has = false;
            has
        };
        if !vnni {
            eprintln!("int16 path: this CPU has no AVX-512 VNNI; the verifier uses f32 here");
        }
        for (ty, rows, cols) in [
            (GgmlType::Q4_1, 200, 96),
            (GgmlType::Q8_0, 40, 64),
            (GgmlType::Q4_1, 24, 576),
            (GgmlType::Q8_0, 30, 576),
            (GgmlType::Q4_1, 13, 1536),
        ] {
            let m = matrix(ty, rows, cols, 7 + rows as u64);
            let w: Vec<Vec<f32>> = (0..rows)
                .map(|r| {
                    let mut row = vec![0f32; cols];
                    m.row(r, &mut row);
                    row
                })
                .collect();
            for n in [8, 21, 48, 107] {
                let mut x: Vec<f32> = (0..n * cols)
                    .map(|i| {
                        let (p, c) = (i / cols, i % cols);
                        let scale = 10f32.powi(((p + c / 32) % 7) as i32 - 3);
                        (((i * 37) % 101) as f32 / 50.0 - 1.0) * scale
                    })
                    .collect();
                x[..32].fill(0.0);
                x[cols + 5] = 1e3;
                let acts = Acts::new(&x, n, &[&m], true).expect("AVX-512 here");
                assert_eq!(matches!(acts, Acts::I16(_)), vnni, "the path taken");
                let got = matmul_xt(&[&m], &acts).pop().unwrap();
                for i in 0..n {
                    let xi = &x[i * cols..(i + 1) * cols];
                    for (r, wr) in w.iter().enumerate() {
                        let exact: f64 =
                            wr.iter().zip(xi).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let mut bound = 0f64;
                        for (wb, xb) in wr.chunks(32).zip(xi.chunks(32)) {
                            let s = xb.iter().fold(0f32, |a, v| a.max(v.abs())) as f64 / 32767.0;
                            bound += wb.iter().map(|v| v.abs() as f64).sum::<f64>() * s * 0.5;
                        }
                        let mag: f64 = wr
                            .iter()
                            .zip(xi)
                            .map(|(&a, &b)| (a as f64 * b as f64).abs())
                            .sum();
                        let bound = bound * 1.01 + 1e-5 * mag + 1e-30;
                        let g = got[i * rows + r] as f64;
                        assert!(
                            (g - exact).abs() <= bound,
                            "{ty:?} {rows}×{cols}, n {n}, position {i}, row {r}: {g} vs {exact} (bound {bound:e})"
                        );
                    }
                }
                // A NaN activation: its position's outputs are NaN, the others' are not.
                x[3 * cols + 1] = f32::NAN;
                let acts = Acts::new(&x, n, &[&m], true).unwrap();
                let got = matmul_xt(&[&m], &acts).pop().unwrap();
                for (i, y) in got.chunks(rows).enumerate() {
                    assert_eq!(
                        y.iter().all(|v| v.is_nan()),
                        i == 3,
                        "{ty:?} n {n} position {i}"
                    );
                }
            }
        }
    }

    /// A two-layer model (four heads, two key/value heads) of `vocab` tokens, width `dim` and
    /// MLP width `ffn`, with pseudo-random Q4_1 and Q8_0 weights.
    fn tiny_model(vocab: usize, dim: usize, ffn: usize) -> QuantLlama {
        let cfg = LlamaConfig {
            vocab,
            dim,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            ffn,
            ..LlamaConfig::new()
        };
        let norm = |seed: usize| -> Vec<f32> {
            (0..cfg.dim)
                .map(|i| 0.5 + ((i * 31 + seed * 17) % 23) as f32 / 23.0)
                .collect()
        };
        let (kvd, q41) = (cfg.kv_heads * cfg.dim / cfg.heads, GgmlType::Q4_1);
        let blocks = (0..cfg.layers as u64)
            .map(|l| QBlock {
                attn_norm: norm(2 * l as usize),
                wq: matrix(q41, cfg.dim, cfg.dim, 10 * l + 1),
                wk: matrix(q41, kvd, cfg.dim, 10 * l + 2),
                wv: matrix(GgmlType::Q8_0, kvd, cfg.dim, 10 * l + 3),
                wo: matrix(q41, cfg.dim, cfg.dim, 10 * l + 4),
                ffn_norm: norm(2 * l as usize + 1),
                gate: matrix(q41, cfg.ffn, cfg.dim, 10 * l + 5),
                up: matrix(q41, cfg.ffn, cfg.dim, 10 * l + 6),
                down: matrix(q41, cfg.dim, cfg.ffn, 10 * l + 7),
            })
            .collect();
        let hd = cfg.dim / cfg.heads;
        QuantLlama {
            cfg,
            embed: matrix(GgmlType::Q8_0, cfg.vocab, cfg.dim, 99),
            blocks,
            norm: norm(7),
            inv_freq: (0..hd / 2)
                .map(|i| cfg.rope_base.powf(-2.0 * i as f64 / hd as f64))
                .collect(),
        }
    }

    /// The verifier's positions-minor pass ([`QuantLlama::forward_cols`]) gives bit for bit
    /// the final-normed rows of the row-wise `fast` step, on a small random model (Q4_1 layers
    /// with a Q8_0 value matrix, Q8_0 embedding) at position counts with and without padding.
    #[test]
    fn positions_minor_pass_equals_the_row_pass() {
        let model = tiny_model(50, 64, 96);
        let cfg = model.cfg;
        if !model.cols_pass_runs(GEMM_ROWS) {
            eprintln!("positions-minor pass: no AVX-512 VNNI here, nothing to compare");
            return;
        }
        for (n, from) in [(21, 5), (32, 0), (GEMM_ROWS, GEMM_ROWS - 1)] {
            let ids: Vec<u32> = (0..n).map(|i| (i * 7 % cfg.vocab) as u32).collect();
            let rows: Vec<usize> = (from..n).collect();
            let want = model
                .step_then(
                    &ids,
                    &vec![0; n],
                    &mut model.caches(1),
                    &rows,
                    true,
                    |last| last.to_vec(),
                )
                .unwrap();
            let got = model.forward_cols(&ids, from).unwrap();
            assert_eq!(got.len(), want.len());
            assert!(want.iter().any(|v| *v != 0.0) && want.iter().all(|v| v.is_finite()));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{n} positions from {from}: value {i}"
                );
            }
        }
    }

    /// The GEMMs' tasks: 96 rows where there are enough of them for the threads (SmolLM2 on
    /// two), smaller where there are not (sixteen), always dividing every matrix evenly.
    #[test]
    fn gemm_tasks_fit_the_threads() {
        let q41 = GgmlType::Q4_1;
        let (wo, wk) = (matrix(q41, 576, 32, 1), matrix(q41, 192, 32, 2));
        assert_eq!(chunk_rows(&[&wo], 2), 96);
        assert_eq!(chunk_rows(&[&wo, &wk, &wk], 2), 96);
        assert_eq!(chunk_rows(&[&wo], 16), 12);
        assert_eq!(chunk_rows(&[&wo, &wk, &wk], 8), 24);
        // 40 rows split no further than 96: 48 does not divide them.
        let odd = matrix(q41, 40, 32, 3);
        assert_eq!(chunk_rows(&[&odd], 16), 96);
    }

    /// The verifier's teacher-forced pass gives the same logits, bit for bit, on one thread and
    /// on pools of several (smaller GEMM tasks, the pool's other threads kept awake), and the
    /// pool is usable again afterwards (its spinners stopped).
    #[test]
    fn teacher_forced_pass_is_the_same_on_any_number_of_threads() {
        let model = tiny_model(40, 96, 192);
        let cfg = model.cfg;
        let ids: Vec<u32> = (0..37).map(|i| (i * 11 % cfg.vocab) as u32).collect();
        let pass = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            // The pass returns only once its spinners have (the scope waits for them).
            let logits = pool.install(|| model.forward_from(&ids, 3)).unwrap();
            // And the pool runs other work afterwards.
            let sum: usize = pool.install(|| (0..1000).into_par_iter().sum());
            assert_eq!(sum, 499_500);
            logits
        };
        let one = pass(1);
        assert_eq!(one.len(), (ids.len() - 3) * cfg.vocab);
        assert!(one.iter().all(|v| v.is_finite()) && one.iter().any(|v| *v != 0.0));
        let b = &model.blocks[0];
        assert!(chunk_rows(&[&b.wq, &b.wk, &b.wv], 5) < GEMM_CHUNK);
        for threads in [2, 5] {
            let got = pass(threads);
            assert_eq!(got.len(), one.len(), "{threads} threads");
            for (i, (g, w)) in got.iter().zip(&one).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{threads} threads: logit {i}");
            }
        }
    }

    /// Several passes at once on one small pool (as when two roles share a process) all end
    /// and each gives the one-thread logits: a pass's spinners never hold up another pass.
    #[test]
    fn concurrent_passes_on_one_pool_all_end() {
        let model = std::sync::Arc::new(tiny_model(40, 96, 192));
        let ids: Vec<u32> = (0..37).map(|i| (i * 13 % 40) as u32).collect();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| model.forward_from(&ids, 3))
            .unwrap();
        let pool = std::sync::Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap(),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..3 {
            let (model, ids, pool, tx) = (model.clone(), ids.clone(), pool.clone(), tx.clone());
            std::thread::spawn(move || {
                for _ in 0..30 {
                    let got = pool.install(|| model.forward_from(&ids, 3)).unwrap();
                    tx.send(got).unwrap();
                }
            });
        }
        for i in 0..90 {
            let got = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("pass {i} of 90 did not end within a minute"));
            assert_eq!(got.len(), one.len());
            assert!(
                got.iter()
                    .zip(&one)
                    .all(|(g, w)| g.to_bits() == w.to_bits())
            );
        }
    }

    /// Attention of many rows of one sequence (the gemm-crate path, and the AVX-512 tiles where
    /// this CPU has them) equals the decoding path's one row at a time, for SmolLM2's head
    /// shape and a small one, rows in chunks of 16 and a partial one, after cached keys.
    #[test]
    fn attention_of_many_rows_equals_one_row_at_a_time() {
        for (dim, heads, kv_heads, start, n) in [(576, 9, 3, 5, 37), (64, 4, 2, 0, 19)] {
            let cfg = LlamaConfig {
                dim,
                heads,
                kv_heads,
                ..LlamaConfig::new()
            };
            let model = QuantLlama {
                cfg,
                embed: matrix(GgmlType::Q8_0, 1, 32, 1),
                blocks: Vec::new(),
                norm: Vec::new(),
                inv_freq: Vec::new(),
            };
            let (hd, t) = (dim / heads, start + n);
            let kvd = kv_heads * hd;
            let val = |i: usize, k: usize| ((i * 7919 + k * 104_729) % 1000) as f32 / 500.0 - 1.0;
            let q: Vec<f32> = (0..n * dim).map(|i| val(i, 1)).collect();
            let ks: Vec<f32> = (0..t * kvd).map(|i| val(i, 2)).collect();
            let vs: Vec<f32> = (0..t * kvd).map(|i| val(i, 3)).collect();
            #[cfg(target_arch = "x86_64")]
            let tiles = std::arch::is_x86_feature_detected!("avx512f");
            #[cfg(not(target_arch = "x86_64"))]
            let tiles = false;
            if !tiles {
                eprintln!("attention: no AVX-512 here; only the gemm-crate path is checked");
            }
            let scale = 1.0 / (hd as f32).sqrt();
            for path in [false, tiles] {
                let mut att = vec![f32::NAN; n * dim];
                model.attend_rows_with(&q, &ks, &vs, start, n, &mut att, path);
                for i in 0..n {
                    let mut want = vec![0f32; dim];
                    let qi = &q[i * dim..(i + 1) * dim];
                    kernels::attend(
                        qi,
                        &ks,
                        &vs,
                        start + i + 1,
                        heads / kv_heads,
                        hd,
                        scale,
                        &mut want,
                    );
                    for (c, (g, w)) in att[i * dim..(i + 1) * dim].iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                            "{dim}/{heads}, tiles {path}: row {i}, value {c}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
