//! The greedy check's output layer on AVX-512 VNNI, without the full 16-bit product: a
//! prefilter in 8 bits picks the rows that can hold a position's largest output, and only
//! those are computed as the 16-bit kernel computes them.
//!
//! The check reads two outputs a position ([`QMat::tops`](super::QMat)): the largest and the
//! claimed token's. The output layer is 49,152 rows (SmolLM2's Q8_0 embedding), about a seventh
//! of the pass's multiply-adds, and only a handful of rows can be a position's largest. So:
//!
//! 1. **Prefilter.** Every row against the activations rounded from 16 to 8 bits (`X8 =
//!    round(X16 / 258)`), with `vpdpbusd` (four multiply-adds a lane, twice `vpdpwssd`'s): an
//!    approximation `a` of each output. The activations' rounding `v = s · (X16 - 258 X8)` (each
//!    `|X16 - 258 X8| ≤ 129`, `s` its block's scale) is known exactly, so by Cauchy–Schwarz
//!    `|y - a| ≤ ‖w‖ · ‖v‖` for the 16-bit output `y` of a row `w`, plus the float roundings of
//!    both sums ([`slack_scale`]): a bound `B` per row and position from one norm of each. On
//!    SmolLM2's output layer it leaves about six rows a position (measured on the bench's
//!    check: 374 of 64 × 49,152); `129 · s_max · Σ|w|`, the bound from the largest
//!    rounding, left 210,421, because a few of the activations' blocks are far larger than
//!    the rest.
//! 2. **Candidates.** With `lo` the largest `a - B` of a position, its largest `y` is at least
//!    `lo`, so every row whose `a + B` is below `lo` is beaten: the rest are the candidates.
//! 3. **Exact.** Each candidate, and the claimed row, computed with the 16-bit kernel's integer
//!    sums and float operations in its order ([`exact`]), so the check's two values are the
//!    full product's, bit for bit (tested).

use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use rayon::prelude::*;

use super::{GEMM_CHUNK, QMat, SCRATCH, Xq};
use crate::gguf::GgmlType;

/// Per-row and per-block sums of a Q8_0 matrix's weights, for the prefilter.
pub(super) struct RowSums {
    /// Per row: `Σ |w|`, rounded up (for the bound's float roundings).
    abs: Vec<f32>,
    /// Per row: `‖w‖ = (Σ w²)^½`, rounded up.
    norm: Vec<f32>,
    /// Per block: `128 · Σ q` (the prefilter's activations are offset by 128 to be unsigned).
    offset: Vec<i32>,
}

impl RowSums {
    /// The sums of `m`, a Q8_0 matrix.
    pub(super) fn of(m: &QMat) -> Self {
        assert_eq!(m.ty, GgmlType::Q8_0);
        let nb = m.cols / 32;
        // One pass over each row's blocks: its sums, and its blocks' offsets.
        let mut offset = vec![0i32; m.rows * nb];
        let (abs, norm) = offset
            .par_chunks_mut(nb)
            .enumerate()
            .map(|(r, offset)| {
                let blocks = &m.quants[r * nb * 32..(r + 1) * nb * 32];
                let (mut abs, mut sq) = (0f64, 0f64);
                // Per block, the integer sums of `q`, `|q|` and `q²` (exact), then scaled by `d`.
                for ((q, &d), o) in blocks
                    .chunks_exact(32)
                    .zip(&m.scales[r * nb..(r + 1) * nb])
                    .zip(offset)
                {
                    let (mut sum, mut sum_abs, mut sum_sq) = (0i32, 0i32, 0i32);
                    for &v in q {
                        let v = i32::from(v as i8);
                        (sum, sum_abs, sum_sq) = (sum + v, sum_abs + v.abs(), sum_sq + v * v);
                    }
                    let d = f64::from(d);
                    abs += d.abs() * f64::from(sum_abs);
                    sq += d * d * f64::from(sum_sq);
                    *o = 128 * sum;
                }
                // Rounded up, so that the f32s never fall below the sums.
                (up(abs), up(sq.sqrt()))
            })
            .unzip();
        Self { abs, norm, offset }
    }
}

/// Whether [`tops`] runs for `m` here: a Q8_0 matrix on a CPU with the int16 kernel.
pub(super) fn runs(m: &QMat) -> bool {
    m.ty == GgmlType::Q8_0 && super::avx512q::runs()
}

/// `x` as an f32 at least as large (a relative 1e-6 up: more than f32's rounding).
fn up(x: f64) -> f32 {
    (x * (1.0 + 1e-6)) as f32
}

/// The multiple of `Σ|w| · s_max` (`s_max` a position's largest block scale) that bounds the
/// float roundings of both sums for `cols` columns: each term of a sum (a block's
/// `cvt(Σ q X) · s · d`, at most `Σ_b |w| · 32767 s`) rounds three times and the running sum
/// once per block, so each sum is within `(blocks + 3) · ε · Σ|w| · 32767 s_max` of its real
/// value; twice that for the two sums, doubled again for room.
fn slack_scale(cols: usize) -> f32 {
    let blocks = (cols / 32) as f32;
    4.0 * (blocks + 3.0) * f32::EPSILON * 32767.0
}

/// The activations of `xq` rounded to 8 bits for `vpdpbusd`: `[cols / 4, np]` words of four
/// columns' `X8 + 128` (unsigned bytes, column order), `X8 = round(X16 / 258)` (halves away
/// from zero), whose scale is `258 s`; and each block's and position's sum of the rounding's
/// squares, `Σ (X16 - 258 X8)²` (`[cols / 32, np]`, for [`rounding`]).
fn round_to_8_bits(xq: &Xq, cols: usize) -> (Vec<i32>, Vec<i64>) {
    let np = xq.np;
    let mut words = vec![0i32; cols / 4 * np];
    let mut squares = vec![0i64; cols / 32 * np];
    // One task per block of 32 columns: its 8 rows of words and its row of squares.
    words
        .par_chunks_mut(8 * np)
        .zip(squares.par_chunks_mut(np))
        .enumerate()
        .for_each(|(b, (out, sq))| {
            for (i, out) in out.chunks_exact_mut(np).enumerate() {
                let j = 8 * b + i;
                let (lo, hi) = (&xq.words[2 * j * np..], &xq.words[(2 * j + 1) * np..]);
                for (((o, sq), &wa), &wb) in out.iter_mut().zip(sq.iter_mut()).zip(lo).zip(hi) {
                    let mut word = 0u32;
                    let four = [wa as i16, (wa >> 16) as i16, wb as i16, (wb >> 16) as i16];
                    for (k, v) in four.into_iter().enumerate() {
                        let (v, q) = (i32::from(v), rounded(i32::from(v)));
                        let r = i64::from(v - 258 * q);
                        *sq += r * r;
                        word |= ((q + 128) as u32) << (8 * k);
                    }
                    *o = word as i32;
                }
            }
        });
    (words, squares)
}

/// Position `p`'s `[‖v‖, slack]` ([`tops`]): the norm of its activations' rounding to 8 bits
/// (from the blocks' sums of squares `squares`, [`round_to_8_bits`]; rounded up), and
/// [`slack_scale`] times its largest block scale; both NaN where a block's scale is NaN.
fn rounding(xq: &Xq, squares: &[i64], cols: usize, p: usize) -> [f32; 2] {
    let np = xq.np;
    let mut sq = 0f64;
    let mut smax = 0f32;
    for b in 0..cols / 32 {
        let s = xq.scale[b * np + p];
        if s.is_nan() {
            return [f32::NAN; 2];
        }
        smax = smax.max(s);
        sq += f64::from(s) * f64::from(s) * squares[b * np + p] as f64;
    }
    [up(sq.sqrt()), slack_scale(cols) * smax]
}

/// `round(v / 258)`, halves away from zero: `|v - 258 · rounded(v)| ≤ 129`.
fn rounded(v: i32) -> i32 {
    if v >= 0 {
        (v + 129) / 258
    } else {
        -((129 - v) / 258)
    }
}

/// The output of row `j` at position `p` as the 16-bit kernel ([`super::avx512q::block`])
/// computes it for a Q8_0 matrix: per block the exact integer sum, converted, times the
/// activations' scale, then added with the weights' scale in one rounding, block after block.
pub(super) fn exact(m: &QMat, xq: &Xq, j: usize, p: usize) -> f32 {
    let (nb, np) = (m.cols / 32, xq.np);
    let mut y = 0f32;
    for b in 0..nb {
        let q = &m.quants[(j * nb + b) * 32..(j * nb + b + 1) * 32];
        let mut acc = 0i32;
        for (i, pair) in q.chunks_exact(2).enumerate() {
            let w = xq.words[(16 * b + i) * np + p];
            acc += i32::from(pair[0] as i8) * i32::from(w as i16)
                + i32::from(pair[1] as i8) * i32::from((w >> 16) as i16);
        }
        let t = acc as f32 * xq.scale[b * np + p];
        y = t.mul_add(m.scales[j * nb + b], y);
    }
    y
}

/// For each of the `xq.n` positions, the largest output of `m · x` (NaNs passed over) and the
/// output at row `tokens[i]`, exactly the 16-bit product's ([`super::tops_xt`]) where
/// [`runs`] says so. Also returns how many outputs it computed exactly.
pub(super) fn tops(m: &QMat, xq: &Xq, tokens: &[u32]) -> (Vec<[f32; 2]>, usize) {
    let (n, np, cols) = (xq.n, xq.np, m.cols);
    assert!(runs(m) && tokens.len() == n && tokens.iter().all(|&t| (t as usize) < m.rows));
    let sums = m.row_sums();
    let (x8, squares) = round_to_8_bits(xq, cols);
    let s8: Vec<f32> = xq.scale.iter().map(|&s| 258.0 * s).collect();
    // Each position's `‖v‖` and float slack per unit of `Σ|w|`, so that a row's bound is
    // `‖w‖ · ‖v‖ + Σ|w| · slack`: NaN where a block's scale is NaN (the position's outputs
    // are then all NaN: no candidates, as the full product's largest is -inf).
    let (v2, slack): (Vec<f32>, Vec<f32>) = (0..n)
        .into_par_iter()
        .map(|p| {
            let [v, s] = rounding(xq, &squares, cols, p);
            (v, s)
        })
        .unzip();
    // Each position's largest `a - B` so far, over all threads.
    let lo: Vec<AtomicU32> = (0..n)
        .map(|_| AtomicU32::new(f32::NEG_INFINITY.to_bits()))
        .collect();
    // Rows whose `a + B` reached the position's `lo` when their chunk ran: (row, position,
    // `a + B`); `lo` only grows, so this holds every final candidate.
    let found: Mutex<Vec<(u32, u32, f32)>> = Mutex::new(Vec::new());
    (0..m.rows.div_ceil(GEMM_CHUNK))
        .into_par_iter()
        .for_each(|c| {
            SCRATCH.with_borrow_mut(|(_, slab, _)| {
                let first = c * GEMM_CHUNK;
                let rows = GEMM_CHUNK.min(m.rows - first);
                if slab.len() < rows * np {
                    slab.resize(rows * np, 0.0);
                }
                let slab = &mut slab[..rows * np];
                // SAFETY: `runs` found AVX-512F, BW and VNNI; `x8` is `[cols / 4, np]`, `s8`
                // `[nb, np]`, the rows exist, and `slab` holds `rows` rows of `np`.
                unsafe { block8(m, first, rows, &x8, &s8, &sums.offset, np, slab) };
                // Row `r`'s bound at each position, into `b`.
                let bound = |r: usize, b: &mut [f32]| {
                    let (w2, w1) = (sums.norm[first + r], sums.abs[first + r]);
                    for ((b, &v), &s) in b.iter_mut().zip(&v2).zip(&slack) {
                        *b = w2 * v + w1 * s;
                    }
                };
                let mut b = vec![0f32; n];
                let mut chunk_lo = vec![f32::NEG_INFINITY; n];
                for (r, row) in slab.chunks_exact(np).enumerate() {
                    bound(r, &mut b);
                    for ((l, &v), &b) in chunk_lo.iter_mut().zip(row).zip(&b) {
                        *l = l.max(v - b);
                    }
                }
                let now: Vec<f32> = chunk_lo
                    .iter()
                    .zip(&lo)
                    .map(|(&l, g)| {
                        let old = g
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                                (l > f32::from_bits(b)).then_some(l.to_bits())
                            })
                            .unwrap_or_else(|b| b);
                        l.max(f32::from_bits(old))
                    })
                    .collect();
                let mut mine = Vec::new();
                for (r, row) in slab.chunks_exact(np).enumerate() {
                    // A row whose bound is not finite is always a candidate.
                    let finite =
                        sums.norm[first + r].is_finite() && sums.abs[first + r].is_finite();
                    bound(r, &mut b);
                    let mut any = !finite;
                    for ((&v, &b), &l) in row.iter().zip(&b).zip(&now) {
                        any |= v + b >= l;
                    }
                    if !any {
                        continue;
                    }
                    for (p, ((&v, &b), &l)) in row.iter().zip(&b).zip(&now).enumerate() {
                        let hi = if finite { v + b } else { f32::INFINITY };
                        if hi >= l {
                            mine.push(((first + r) as u32, p as u32, hi));
                        }
                    }
                }
                found.lock().expect("no panics while held").extend(mine);
            });
        });
    let lo: Vec<f32> = lo
        .iter()
        .map(|g| f32::from_bits(g.load(Ordering::Relaxed)))
        .collect();
    let mut found = found.into_inner().expect("no panics while held");
    found.retain(|&(_, p, hi)| hi >= lo[p as usize]);
    let values: Vec<f32> = found
        .par_iter()
        .map(|&(j, p, _)| exact(m, xq, j as usize, p as usize))
        .collect();
    let mut out: Vec<[f32; 2]> = tokens
        .iter()
        .enumerate()
        .map(|(p, &t)| [f32::NEG_INFINITY, exact(m, xq, t as usize, p)])
        .collect();
    for (&(_, p, _), v) in found.iter().zip(values) {
        let top = &mut out[p as usize][0];
        *top = top.max(v);
    }
    (out, found.len())
}

/// The prefilter's approximations of rows `first..first + rows` of `m` (Q8_0) at every
/// position, into `out` (`[rows, np]`): per block, `vpdpbusd` of the 8-bit activations `x8`
/// ([`round_to_8_bits`], offset by 128) with the weights as signed bytes straight from the
/// matrix, less the offset's `128 · Σ q` (`offset`), converted, times `s8` and the block's `d`.
/// 6 rows × 32 positions a micro-kernel call.
///
/// # Safety
/// AVX-512F, BW and VNNI; `x8` is `[cols / 4, np]`, `s8` is `[cols / 32, np]`, `offset` holds
/// every block of `m`, rows `first..first + rows` exist, `out` holds `rows * np`, and `np` is a
/// multiple of 16.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn block8(
    m: &QMat,
    first: usize,
    rows: usize,
    x8: &[i32],
    s8: &[f32],
    offset: &[i32],
    np: usize,
    out: &mut [f32],
) {
    let (cols, nb) = (m.cols, m.cols / 32);
    assert!(
        np.is_multiple_of(16)
            && x8.len() >= cols / 4 * np
            && s8.len() >= nb * np
            && offset.len() >= (first + rows) * nb
            && m.scales.len() >= (first + rows) * nb
            && m.quants.len() >= (first + rows) * cols
            && out.len() >= rows * np
    );
    const R: usize = 6;
    let mut r = 0;
    while r < rows {
        let nr = if rows - r >= R { R } else { 1 };
        // The next rows' weights into L1 while these are multiplied.
        let next = &m.quants[((first + r + nr) * cols).min(m.quants.len())..];
        for line in (0..next.len().min(R * cols)).step_by(64) {
            // SAFETY: inside `next`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(next.as_ptr().add(line).cast()) };
        }
        let row = first + r;
        let mut p = 0;
        while p < np {
            let v = if np - p >= 32 { 2 } else { 1 };
            // SAFETY: rows `r..r + nr` and positions `p..p + 16 v` lie inside the bounds
            // asserted above.
            let a = unsafe {
                Args8 {
                    w: m.quants.as_ptr().add(row * cols),
                    cols,
                    x: x8.as_ptr().add(p),
                    s: s8.as_ptr().add(p),
                    np,
                    offset: offset.as_ptr().add(row * nb),
                    d: m.scales.as_ptr().add(row * nb),
                    nb,
                    out: out.as_mut_ptr().add(r * np + p),
                }
            };
            // SAFETY: as above.
            unsafe {
                match (nr, v) {
                    (R, 2) => micro8::<R, 2>(&a),
                    (R, _) => micro8::<R, 1>(&a),
                    (_, 2) => micro8::<1, 2>(&a),
                    _ => micro8::<1, 1>(&a),
                }
            }
            p += 16 * v;
        }
        r += nr;
    }
}

/// One [`micro8`] call's pointers, each at its tile's first row, position and block.
struct Args8 {
    /// The first row's Q8_0 bytes; rows `cols` apart.
    w: *const u8,
    cols: usize,
    /// 8-bit activation words and their scales at the tile's first position; rows `np` apart.
    x: *const i32,
    s: *const f32,
    np: usize,
    /// The first row's block offsets and scales; rows `nb` apart.
    offset: *const i32,
    d: *const f32,
    nb: usize,
    /// Results, rows `np` apart.
    out: *mut f32,
}

/// `NR` rows × `16 V` positions over every block.
///
/// # Safety
/// AVX-512F, BW and VNNI; every pointer of `a` addresses what [`Args8`] says for `NR` rows,
/// `16 V` positions and `nb` blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn micro8<const NR: usize, const V: usize>(a: &Args8) {
    use std::arch::x86_64::*;
    let mut y = [_mm512_setzero_ps(); 12];
    for b in 0..a.nb {
        let mut acc = [_mm512_setzero_si512(); 12];
        for g in 8 * b..8 * b + 8 {
            // SAFETY: the caller's bounds.
            unsafe {
                let x: [__m512i; V] =
                    std::array::from_fn(|v| _mm512_loadu_si512(a.x.add(g * a.np + 16 * v).cast()));
                for r in 0..NR {
                    let w = a.w.add(r * a.cols + 4 * g).cast::<i32>().read_unaligned();
                    let wv = _mm512_set1_epi32(w);
                    for v in 0..V {
                        acc[r * V + v] = _mm512_dpbusd_epi32(acc[r * V + v], x[v], wv);
                    }
                }
            }
        }
        // SAFETY: the caller's bounds.
        unsafe {
            let s: [__m512; V] =
                std::array::from_fn(|v| _mm512_loadu_ps(a.s.add(b * a.np + 16 * v)));
            for r in 0..NR {
                let off = _mm512_set1_epi32(*a.offset.add(r * a.nb + b));
                let d = _mm512_set1_ps(*a.d.add(r * a.nb + b));
                for v in 0..V {
                    let t = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r * V + v], off));
                    y[r * V + v] = _mm512_fmadd_ps(_mm512_mul_ps(t, s[v]), d, y[r * V + v]);
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

#[cfg(test)]
mod tests {
    use super::super::tests::matrix;
    use super::super::{Acts, tops_full};
    use super::*;

    /// Activations `[n, m.cols]` as [`Xq`] (the int16 kernel runs on this CPU).
    fn quantised(x: &[f32], n: usize, m: &QMat) -> Xq {
        match Acts::new(x, n, &[m], true) {
            Some(Acts::I16(xq)) => xq,
            _ => panic!("the int16 path runs where the prefilter does"),
        }
    }

    /// The prefilter's approximations of every row of `m` (`[rows, np]`).
    fn approximations(m: &QMat, xq: &Xq) -> Vec<f32> {
        let (x8, _) = round_to_8_bits(xq, m.cols);
        let s8: Vec<f32> = xq.scale.iter().map(|&s| 258.0 * s).collect();
        let mut out = vec![0f32; m.rows * xq.np];
        // SAFETY: `runs` (checked by the callers) found AVX-512F, BW and VNNI; the buffers
        // have the shapes `block8` asks for.
        unsafe {
            block8(
                m,
                0,
                m.rows,
                &x8,
                &s8,
                &m.row_sums().offset,
                xq.np,
                &mut out,
            )
        };
        out
    }

    /// Each approximation lies within its bound of the 16-bit output, and activations whose
    /// rounding to 8 bits is made proportional to a row's weights bring that row's error to
    /// over 90% of its bound: so no smaller multiple of `‖w‖ · ‖v‖` would be safe.
    #[test]
    fn prefilter_is_within_its_bound_and_reaches_it() {
        let m = matrix(GgmlType::Q8_0, 40, 576, 3);
        if !runs(&m) {
            eprintln!("prefilter: this CPU has no AVX-512 VNNI; the full product runs here");
            return;
        }
        let (n, cols) = (21, m.cols);
        let nb = cols / 32;
        let w = |j: usize, c: usize| {
            m.scales[j * nb + c / 32] * f32::from(m.quants[j * cols + c] as i8)
        };
        // Block maxima of 1 (scale 1/32767); position `p`'s other values `258 k + ρ` units,
        // `k` from `p`, `ρ` (within ±128, so rounding to 8 bits leaves exactly `ρ`) in
        // proportion to row `p`'s weight.
        let x: Vec<f32> = (0..n * cols)
            .map(|i| {
                let (p, c) = (i / cols, i % cols);
                if c % 32 == 0 {
                    return 1.0;
                }
                let wmax = (0..cols).map(|c| w(p, c).abs()).fold(0f32, f32::max);
                let rho = (128.0 * w(p, c) / wmax).round();
                (258.0 * (p % 100) as f32 + rho) / 32767.0
            })
            .collect();
        let xq = quantised(&x, n, &m);
        let np = xq.np;
        let a = approximations(&m, &xq);
        let (_, squares) = round_to_8_bits(&xq, cols);
        let sums = m.row_sums();
        let mut worst = 0f32;
        for p in 0..n {
            let [v2, slack] = rounding(&xq, &squares, cols, p);
            for j in 0..m.rows {
                let y = exact(&m, &xq, j, p);
                let b = sums.norm[j] * v2 + sums.abs[j] * slack;
                let err = (y - a[j * np + p]).abs();
                assert!(
                    err <= b,
                    "row {j}, position {p}: |{y} - approximation| = {err} > {b}"
                );
                if j == p {
                    worst = worst.max(err / (sums.norm[j] * v2));
                }
            }
        }
        assert!(
            worst > 0.9,
            "the adversarial rows reach {worst} of the bound"
        );
    }

    /// The prefiltered largest and chosen outputs are the full 16-bit product's, bit for bit:
    /// over several chunks and a partial one, with eleven near-equal rows (a row with ten
    /// copies, each one weight off) that must all be computed wherever they lead, and a
    /// position whose NaN makes its outputs NaN. Rows far below a position's largest are not
    /// computed.
    #[test]
    fn prefiltered_tops_equal_the_full_products() {
        let (rows, cols) = (1000, 64);
        let mut m = matrix(GgmlType::Q8_0, rows, cols, 11);
        if !runs(&m) {
            eprintln!("prefilter: this CPU has no AVX-512 VNNI; the full product runs here");
            return;
        }
        let nb = cols / 32;
        for b in 0..nb {
            m.scales[7 * nb + b] *= 10.0;
        }
        for (i, r) in (500..510).enumerate() {
            let q: Vec<u8> = m.quants[7 * cols..8 * cols].to_vec();
            m.quants[r * cols..(r + 1) * cols].copy_from_slice(&q);
            let c = r * cols + 3 * i;
            m.quants[c] = (m.quants[c] as i8).saturating_add(1 - 2 * (i % 2) as i8) as u8;
            let s: Vec<f32> = m.scales[7 * nb..8 * nb].to_vec();
            m.scales[r * nb..(r + 1) * nb].copy_from_slice(&s);
        }
        for n in [8, 21, 64] {
            let mut x: Vec<f32> = (0..n * cols)
                .map(|i| ((i * 37 + i / 7) % 101) as f32 / 50.0 - 1.0)
                .collect();
            x[2 * cols + 9] = f32::NAN;
            let tokens: Vec<u32> = (0..n).map(|i| ((i * 613) % rows) as u32).collect();
            let xq = quantised(&x, n, &m);
            let want = tops_full(&m, &Acts::I16(quantised(&x, n, &m)), &tokens);
            let (got, computed) = tops(&m, &xq, &tokens);
            let mut led = 0;
            for (p, ([t, c], [wt, wc])) in got.iter().zip(&want).enumerate() {
                assert_eq!(t.to_bits(), wt.to_bits(), "n {n}, position {p}: largest");
                assert!(
                    c.to_bits() == wc.to_bits() || (c.is_nan() && wc.is_nan()),
                    "n {n}, position {p}: chosen {c} vs {wc}"
                );
                let group = std::iter::once(7).chain(500..510);
                if group.map(|j| exact(&m, &xq, j, p)).any(|v| v == *wt) {
                    led += 1;
                }
            }
            assert!(got[2][0] == f32::NEG_INFINITY && got[2][1].is_nan());
            assert!(led > 0, "n {n}: the near-equal rows lead somewhere");
            assert!(
                computed >= 11 * led && computed < rows * n / 20,
                "n {n}: {computed} outputs computed exactly, {led} positions led by the group"
            );
        }
    }
}
