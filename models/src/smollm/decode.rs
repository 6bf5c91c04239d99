//! Decoding, written once for every SmolLM2 decoder: a [`Decoder`] runs forward passes (the
//! Burn [`Llama`], the quantized CPU [`crate::qcpu::QuantLlama`]); [`generate_batch`] owns the
//! rules: batch argument checks, one sampling rule per prompt, greedy or seeded sampling as
//! `gleaner_protocol::sampling` specifies it, and each sequence stopping at the
//! end-of-sequence token or after `max_new` tokens while the others go on.

use gleaner_protocol::sampling::{SplitMix64, argmax, sample};

use super::{Decoding, KvCache, Llama, LlamaConfig, TokenCheck, verify};
use crate::{Error, Result};

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

/// A SmolLM2 forward pass: what differs between decoders. Logits are f32, row-major
/// `[rows, vocab]`; every decoder gives the reference's values up to float rounding.
pub trait Decoder: Send + Sync {
    /// The hyper-parameters.
    fn config(&self) -> LlamaConfig;

    /// Starts decoding a batch: runs every prompt (none empty) and returns the batch's
    /// key/value state with the next-token logits of each prompt, `[prompts.len(), vocab]`.
    fn prefill<'a>(&'a self, prompts: &[&[u32]]) -> Result<(Box<dyn Session + 'a>, Vec<f32>)>;

    /// Teacher forcing: the logits of positions `from..` of `ids` in one pass,
    /// `[ids.len() - from, vocab]`; an error when `from >= ids.len()`.
    fn forward_from(&self, ids: &[u32], from: usize) -> Result<Vec<f32>>;

    /// Teacher forcing for a greedy check: for each position `from + k` of `ids`, the largest
    /// logit (NaNs passed over) and the logit of `tokens[k]`, where `tokens` holds one token
    /// (inside the vocabulary) per position from `from`. The values of
    /// [`Decoder::forward_from`]'s rows; a decoder may get them without writing those rows.
    fn forward_tops(&self, ids: &[u32], from: usize, tokens: &[u32]) -> Result<Vec<[f32; 2]>> {
        let v = self.config().vocab;
        check_tops_args(ids, from, tokens, v)?;
        Ok(tops_of_rows(&self.forward_from(ids, from)?, v, tokens))
    }

    /// [`generate_batch`] on this decoder.
    fn generate_batch(
        &self,
        prompts: &[&[u32]],
        max_new: usize,
        eos: Option<u32>,
        sampling: &[Option<Sampling>],
    ) -> Result<Vec<Vec<u32>>> {
        generate_batch(self, prompts, max_new, eos, sampling)
    }

    /// Decoding one prompt: greedy, or seeded sampling.
    fn generate(
        &self,
        prompt: &[u32],
        max_new: usize,
        eos: Option<u32>,
        sampling: Option<Sampling>,
    ) -> Result<Vec<u32>> {
        let mut out = generate_batch(self, &[prompt], max_new, eos, &[sampling])?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Greedy decoding: up to `max_new` tokens after `prompt`, stopping at `eos`.
    fn generate_greedy(
        &self,
        prompt: &[u32],
        max_new: usize,
        eos: Option<u32>,
    ) -> Result<Vec<u32>> {
        self.generate(prompt, max_new, eos, None)
    }

    /// [`verify`] on this decoder.
    fn verify(&self, prompt: &[u32], claimed: &[u32], rule: &Decoding) -> Result<TokenCheck> {
        verify(self, prompt, claimed, rule)
    }

    /// Greedy [`verify`] with `margin` of up to `claimed.len()` tokens, no stop token.
    fn check_greedy(&self, prompt: &[u32], claimed: &[u32], margin: f32) -> Result<TokenCheck> {
        let rule = Decoding {
            max_new: claimed.len(),
            eos: None,
            sampling: None,
            margin,
        };
        verify(self, prompt, claimed, &rule)
    }
}

/// A batch being decoded: each sequence's key/value cache.
pub trait Session {
    /// Appends `tokens[i]` to sequence `seqs[i]` (distinct, ascending; sequences not listed
    /// have stopped) and returns the next-token logits of those sequences,
    /// `[tokens.len(), vocab]`.
    fn step(&mut self, tokens: &[u32], seqs: &[usize]) -> Result<Vec<f32>>;
}

/// For each row `k` of `logits` (`[tokens.len(), vocab]`), its largest value (NaNs passed
/// over) and its value at `tokens[k]` (each below `vocab`).
pub(crate) fn tops_of_rows(logits: &[f32], vocab: usize, tokens: &[u32]) -> Vec<[f32; 2]> {
    logits
        .chunks_exact(vocab)
        .zip(tokens)
        .map(|(row, &t)| [crate::ecpu::kernels::max8(row), row[t as usize]])
        .collect()
}

/// [`Decoder::forward_tops`]'s arguments: some positions from `from`, one token inside the
/// vocabulary (`vocab`) for each.
pub(crate) fn check_tops_args(
    ids: &[u32],
    from: usize,
    tokens: &[u32],
    vocab: usize,
) -> Result<()> {
    if from >= ids.len() || tokens.len() != ids.len() - from {
        return Err(Error::Input {
            index: from,
            detail: format!(
                "{} tokens for positions {from}.. of {} ids",
                tokens.len(),
                ids.len()
            ),
        });
    }
    if let Some(k) = tokens.iter().position(|&t| t as usize >= vocab) {
        return Err(Error::Input {
            index: k,
            detail: format!("token {} outside the vocabulary", tokens[k]),
        });
    }
    Ok(())
}

/// The rules every batch checks: no empty prompt, one sampling rule per prompt.
fn check_batch(prompts: &[&[u32]], sampling: &[Option<Sampling>]) -> Result<()> {
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

/// Decodes several prompts together on `dec`: one batched forward per step, so the weights
/// are read once for all sequences. `sampling[i]` is prompt `i`'s rule (greedy when `None`);
/// a sequence stops after `eos` or `max_new` tokens while the others go on. Each sequence's
/// tokens are what decoding it alone gives (up to float rounding).
pub fn generate_batch<D: Decoder + ?Sized>(
    dec: &D,
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
    let mut rngs: Vec<Option<SplitMix64>> = sampling
        .iter()
        .map(|s| s.map(|s| SplitMix64::new(s.seed)))
        .collect();
    let (mut session, mut logits) = dec.prefill(prompts)?;
    let v = dec.config().vocab;
    let mut live: Vec<usize> = (0..b).collect();
    loop {
        let mut next = Vec::with_capacity(live.len());
        let mut still = Vec::with_capacity(live.len());
        for (k, &s) in live.iter().enumerate() {
            let row = &logits[k * v..(k + 1) * v];
            let tok = match (&sampling[s], rngs[s].as_mut()) {
                (Some(sp), Some(g)) => sample(row, sp.temperature, sp.top_p, g),
                _ => argmax(row),
            };
            outs[s].push(tok);
            if Some(tok) != eos && outs[s].len() < max_new {
                next.push(tok);
                still.push(s);
            }
        }
        if still.is_empty() {
            break;
        }
        logits = session.step(&next, &still)?;
        live = still;
    }
    Ok(outs)
}

/// The Burn decoder's batch: rows left-padded to the longest prompt and masked, stepping
/// together; a stopped row is fed a filler token and its logits dropped.
struct LlamaSession<'a> {
    model: &'a Llama,
    cache: KvCache,
    rows: usize,
}

impl Session for LlamaSession<'_> {
    fn step(&mut self, tokens: &[u32], seqs: &[usize]) -> Result<Vec<f32>> {
        if tokens.len() != seqs.len() || seqs.iter().any(|&s| s >= self.rows) {
            return Err(Error::Input {
                index: 0,
                detail: "one token per sequence of the batch".into(),
            });
        }
        if seqs.len() == self.rows {
            return self
                .model
                .forward_batch(tokens, self.rows, &mut self.cache, None);
        }
        // Rows are computed independently (masking is per row), so the filler changes nothing.
        let mut all = vec![self.model.config().eos.unwrap_or(0); self.rows];
        for (&t, &s) in tokens.iter().zip(seqs) {
            all[s] = t;
        }
        let logits = self
            .model
            .forward_batch(&all, self.rows, &mut self.cache, None)?;
        let v = self.model.config().vocab;
        Ok(seqs
            .iter()
            .flat_map(|&s| logits[s * v..(s + 1) * v].iter().copied())
            .collect())
    }
}

impl Decoder for Llama {
    fn config(&self) -> LlamaConfig {
        Llama::config(self)
    }

    fn prefill<'a>(&'a self, prompts: &[&[u32]]) -> Result<(Box<dyn Session + 'a>, Vec<f32>)> {
        let b = prompts.len();
        let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
        let mut ids = Vec::with_capacity(b * longest);
        for (p, &pad) in prompts.iter().zip(&pads) {
            let Some(&first) = p.first() else {
                return Err(Error::Input {
                    index: 0,
                    detail: "empty prompt".into(),
                });
            };
            ids.extend(std::iter::repeat_n(first, pad));
            ids.extend_from_slice(p);
        }
        let mut cache = self.batch_cache(pads);
        let logits = self.forward_batch(&ids, b, &mut cache, None)?;
        let session = LlamaSession {
            model: self,
            cache,
            rows: b,
        };
        Ok((Box::new(session), logits))
    }

    fn forward_from(&self, ids: &[u32], from: usize) -> Result<Vec<f32>> {
        Llama::forward_from(self, ids, from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendChoice, select_device};

    /// A tiny random model: batched sequences equal single ones (greedy and sampled), stop
    /// independently, and the argument checks hold.
    #[test]
    fn batched_equals_alone_on_a_tiny_model() {
        let device = select_device(BackendChoice::Cpu).unwrap().device;
        let model = LlamaConfig::tiny().init(&device);
        let prompts: [&[u32]; 3] = [&[5, 6, 7], &[9], &[1, 2, 3, 4, 5, 6]];
        let s = Some(Sampling {
            temperature: 0.8,
            top_p: 0.9,
            seed: 4,
        });
        let rules = [None, s, None];
        // eos 3 may or may not come: either way each row equals its run alone.
        for eos in [None, Some(3)] {
            let batch = model.generate_batch(&prompts, 8, eos, &rules).unwrap();
            for (i, p) in prompts.iter().enumerate() {
                let alone = model.generate(p, 8, eos, rules[i]).unwrap();
                assert_eq!(batch[i], alone, "prompt {i}, eos {eos:?}");
                assert!(alone.len() == 8 || alone.last() == eos.as_ref());
            }
        }
        let empty: [&[u32]; 2] = [&[1], &[]];
        assert!(
            model
                .generate_batch(&empty, 4, None, &[None, None])
                .is_err()
        );
        assert!(model.generate_batch(&prompts, 4, None, &[None]).is_err());
        assert!(
            model
                .generate_batch(&prompts, 0, None, &rules)
                .unwrap()
                .iter()
                .all(Vec::is_empty)
        );
    }
}
