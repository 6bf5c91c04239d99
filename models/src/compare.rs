//! The `embed` task kind's comparator: when do two replicas' embeddings agree?
//!
//! Float outputs differ across backends and GPU vendors, so equality of bytes is not the test.
//! Two replicas agree when every row's cosine similarity reaches a threshold calibrated from
//! measured backend differences (see [`EMBED_MIN_COSINE`]). The verifier uses this one function.

use crate::{Error, Result};

/// Replicas of an embedding agree when every row's cosine similarity is at least this.
///
/// Calibration (tests `wgpu_matches_reference` and `cpu_matches_reference`, `gleaner bench embed`):
/// CPU backends and wgpu on lavapipe agree with a float64 reference to cosine ≥ 0.99999 on every
/// row measured, and wgpu in f16 (`--precision f16`, lavapipe) to 0.9999974 (test
/// `wgpu_f16_stays_far_inside_the_comparator`); honest replicas therefore sit within ~1e-5 of 1.
/// A corrupted or substituted embedding (another model, another input, noise) lands far below
/// (cosines of unrelated sentences under this model are < 0.9). 0.999 leaves two orders of
/// magnitude of headroom for GPU drivers while rejecting any meaningful tampering.
pub const EMBED_MIN_COSINE: f32 = 0.999;

/// How two embedding matrices compare.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    /// The smallest row cosine similarity.
    pub min_cosine: f32,
    /// The row where it occurred.
    pub worst_row: usize,
    /// Whether every row reached the threshold.
    pub agree: bool,
}

/// Cosine similarity of two vectors; 0 when either is all zeros.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        dot += f64::from(x) * f64::from(y);
        na += f64::from(x) * f64::from(x);
        nb += f64::from(y) * f64::from(y);
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}

/// Compares two row-major `[n, dim]` embedding matrices row by row against `min_cosine`.
///
/// Non-finite values never agree. Mismatched shapes are an error, not a disagreement, so callers
/// can tell a malformed output from a dishonest one.
pub fn compare_embeddings(a: &[f32], b: &[f32], dim: usize, min_cosine: f32) -> Result<Agreement> {
    if dim == 0 || !a.len().is_multiple_of(dim) || a.len() != b.len() {
        return Err(Error::Shape(format!(
            "cannot compare {} and {} values as rows of {dim}",
            a.len(),
            b.len()
        )));
    }
    let mut worst = Agreement {
        min_cosine: 1.0,
        worst_row: 0,
        agree: true,
    };
    for (row, (ra, rb)) in a.chunks_exact(dim).zip(b.chunks_exact(dim)).enumerate() {
        let finite = ra.iter().chain(rb).all(|v| v.is_finite());
        let c = if finite {
            cosine(ra, rb)
        } else {
            f32::NEG_INFINITY
        };
        if c < worst.min_cosine {
            worst.min_cosine = c;
            worst.worst_row = row;
        }
    }
    worst.agree = worst.min_cosine >= min_cosine;
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let v = [0.6f32, 0.8, 0.0];
        let near = [0.6001f32, 0.7999, 0.0];
        let ortho = [0.0f32, 0.0, 1.0];
        let cases: [(&[f32], &[f32], bool); 5] = [
            (&v, &v, true),
            (&v, &near, true),
            (&v, &ortho, false),
            (
                &[0.6, 0.8, 0.0, 0.0, 0.0, 1.0],
                &[0.6, 0.8, 0.0, 1.0, 0.0, 0.0],
                false,
            ),
            (&v, &[f32::NAN, 0.8, 0.0], false),
        ];
        for (i, (a, b, want)) in cases.into_iter().enumerate() {
            let got = compare_embeddings(a, b, 3, EMBED_MIN_COSINE).unwrap();
            assert_eq!(got.agree, want, "case {i}: {got:?}");
        }
    }

    #[test]
    fn worst_row_is_reported() {
        let a = [1.0f32, 0.0, 1.0, 0.0];
        let b = [1.0f32, 0.0, 0.0, 1.0];
        let got = compare_embeddings(&a, &b, 2, 0.5).unwrap();
        assert_eq!(got.worst_row, 1);
        assert!(!got.agree);
        assert!(got.min_cosine.abs() < 1e-6);
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        assert!(compare_embeddings(&[1.0; 6], &[1.0; 3], 3, 0.9).is_err());
        assert!(compare_embeddings(&[1.0; 5], &[1.0; 5], 3, 0.9).is_err());
        assert!(compare_embeddings(&[], &[], 0, 0.9).is_err());
    }
}
