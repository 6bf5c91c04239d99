//! The verifier's teacher-forced check of a claimed continuation, on any [`Decoder`]: one
//! forward pass over prompt + claim, then each token against the logits at its position.

use gleaner_protocol::sampling::{SplitMix64, reachable};

use super::{Decoder, Sampling};
use crate::{Error, Result};

/// The logit margin within which the verifier accepts a claimed token: a greedy token must be
/// within it of the top logit, a sampled one must be what the seeded sampler could take had
/// every logit moved by half of it ([`gleaner_protocol::sampling::reachable`]). Calibration, from
/// `gleaner bench generate`: our f32 backends differ from each other by ~1e-5 in a logit, the
/// quantized CPU verifier's 16-bit activations by ~1e-2, the f16 wgpu path (`--precision f16`,
/// lavapipe) by 0.103 (test `wgpu_f16_output_is_accepted_by_the_cpu_check`; below a quarter of
/// the margin, and below the half a sampled token is allowed); the smallest top-2 gap on the
/// reference prompt is 0.22, and candle's 8-bit-activation kernels flip that token; substituted
/// tokens sit several logits below the top.
pub const GENERATE_MARGIN: f32 = 0.5;

/// How a generation must have been decoded, for [`verify`].
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

/// Verifies a claimed continuation on `dec` in one teacher-forced pass over `prompt` +
/// `claimed`: its length and stop (at most `max_new` tokens; fewer only when the last is
/// `eos`, which appears nowhere else), then each token against the logits at its position:
/// greedy within the margin of the top (a replica whose floats differ may take the other side
/// of a near-tie; one that substitutes a token may not), or sampled as the seeded sampler
/// could have taken it for its draw.
pub fn verify<D: Decoder + ?Sized>(
    dec: &D,
    prompt: &[u32],
    claimed: &[u32],
    rule: &Decoding,
) -> Result<TokenCheck> {
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
    let v = dec.config().vocab;
    if let Some(k) = claimed.iter().position(|&t| t as usize >= v) {
        return Ok(TokenCheck::reject(format!(
            "token {k} ({}) is outside the vocabulary",
            claimed[k]
        )));
    }
    let mut ids = prompt.to_vec();
    ids.extend_from_slice(&claimed[..n - 1]);
    let from = prompt.len() - 1;
    // Greedy needs two logits a position (the largest, the claimed token's), which a decoder
    // may compute without writing every row; sampling needs whole rows.
    let (logits, tops) = match rule.sampling {
        Some(_) => {
            let logits = dec.forward_from(&ids, from)?;
            let tops = super::tops_of_rows(&logits, v, claimed);
            (logits, tops)
        }
        None => (Vec::new(), dec.forward_tops(&ids, from, claimed)?),
    };
    let mut rng = rule.sampling.map(|s| SplitMix64::new(s.seed));
    let mut gaps = Vec::with_capacity(n);
    let mut reason = None;
    for (k, (&tok, [top, logit])) in claimed.iter().zip(tops).enumerate() {
        let gap = top - logit;
        gaps.push(gap);
        let ok = match (rule.sampling, rng.as_mut()) {
            (Some(s), Some(r)) => {
                let row = &logits[k * v..(k + 1) * v];
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
