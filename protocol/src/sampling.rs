//! Seeded sampling for `generate` tasks, specified exactly so a replica (or the verifier) can
//! reproduce a sampled run from the same logits.
//!
//! - RNG: SplitMix64 seeded with the task's seed; `next_f64 = (next_u64 >> 11) / 2^53`.
//! - Per token: probabilities `softmax(logits / temperature)` in f64 (max subtracted first);
//!   candidates sorted by probability descending, ties by token id ascending; keep the shortest
//!   prefix whose mass reaches `top_p` (at least one); draw `u = next_f64() × kept mass` and take
//!   the first candidate whose cumulative mass exceeds `u`. One draw per generated token.

/// SplitMix64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The seed of prompt `prompt` of task `task` in a job sampled with `job_seed`: the first
/// output of SplitMix64 seeded with `job_seed ^ (task << 32 | prompt)`, so that every prompt has
/// its own stream and a replica of one task never needs another's state.
pub fn prompt_seed(job_seed: u64, task: u32, prompt: u32) -> u64 {
    SplitMix64::new(job_seed ^ (u64::from(task) << 32 | u64::from(prompt))).next_u64()
}

/// The sampler's candidates for one position: `(token, probability)` sorted by probability
/// descending, ties by token id, cut to the top-p prefix; and the kept mass.
fn nucleus(logits: &[f32], temperature: f64, top_p: f64) -> (Vec<(u32, f64)>, f64) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut p: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, ((l as f64 - max) / temperature).exp()))
        .collect();
    let z: f64 = p.iter().map(|x| x.1).sum();
    p.iter_mut().for_each(|x| x.1 /= z);
    p.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = 0.0;
    let mut n = 0;
    for (_, q) in &p {
        kept += q;
        n += 1;
        if kept >= top_p {
            break;
        }
    }
    p.truncate(n);
    (p, kept)
}

fn greedy_temperature(temperature: f64) -> bool {
    !(temperature.is_finite() && temperature > 0.0)
}

/// Samples one token id from `logits` (see the module docs for the exact procedure).
/// `temperature <= 0` or a non-finite one means greedy (the first maximum).
pub fn sample(logits: &[f32], temperature: f64, top_p: f64, rng: &mut SplitMix64) -> u32 {
    if logits.is_empty() {
        return 0;
    }
    if greedy_temperature(temperature) {
        return argmax(logits);
    }
    pick(logits, temperature, top_p, rng.next_f64())
}

/// The token the sampler takes for the uniform draw `u` in [0, 1).
pub fn pick(logits: &[f32], temperature: f64, top_p: f64, u: f64) -> u32 {
    let (p, kept) = nucleus(logits, temperature, top_p);
    let target = u * kept;
    let mut acc = 0.0;
    for (id, q) in &p {
        acc += q;
        if acc > target {
            return *id;
        }
    }
    p.last().map_or(0, |x| x.0)
}

/// Whether the sampler could have taken `token` for the draw `u` had every logit been off by at
/// most `margin / 2` (the verifier's and a worker's floats differ; the comparison is pairwise,
/// so two logits may move `margin` apart). With `r = margin / temperature`, probabilities move
/// by factors within e^±r, so the token's interval of cumulative mass, whose start is at least
/// the mass of the tokens surely ahead of it and at most that plus the mass of the tokens that
/// could be on either side, may stretch by those factors; `token` is accepted when `u × kept`
/// falls in the widest such interval and the token could be inside the top-p prefix. Greedy
/// (temperature ≤ 0): `token`'s logit is within `margin` of the top.
pub fn reachable(
    logits: &[f32],
    temperature: f64,
    top_p: f64,
    u: f64,
    token: u32,
    margin: f32,
) -> bool {
    let Some(&mine) = logits.get(token as usize) else {
        return false;
    };
    if greedy_temperature(temperature) {
        let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        return top - mine <= margin;
    }
    let r = f64::from(margin) / temperature;
    let mine = f64::from(mine);
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let w: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / temperature).exp())
        .collect();
    let z: f64 = w.iter().sum();
    let p_tok = ((mine - max) / temperature).exp() / z;
    // Mass surely ahead (more than r above in log-probability) and mass that may be either side.
    let (mut ahead, mut either) = (0.0, 0.0);
    for (i, &l) in logits.iter().enumerate() {
        if i == token as usize {
            continue;
        }
        let d = (f64::from(l) - mine) / temperature;
        if d > r {
            ahead += w[i] / z;
        } else if d >= -r {
            either += w[i] / z;
        }
    }
    let (lo_f, hi_f) = ((-r).exp(), r.exp());
    if ahead * lo_f >= top_p {
        return false; // outside the nucleus however the floats fall
    }
    let (_, kept) = nucleus(logits, temperature, top_p);
    // The kept mass itself moves with the probabilities; bound u × kept on both sides.
    let target_lo = u * kept * lo_f;
    let target_hi = u * (kept * hi_f).min(1.0);
    let start_lo = ahead * lo_f;
    let end_hi = ((ahead + either + p_tok) * hi_f).min(1.0);
    target_hi >= start_lo && target_lo < end_hi
}

/// Index of the first maximum.
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // SplitMix64 seeded with 0 (reference sequence from the algorithm's published code).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn sampling_is_reproducible_and_respects_top_p() {
        let logits = [1.0f32, 3.0, 2.0, -1.0];
        let run = |seed| {
            let mut r = SplitMix64::new(seed);
            (0..50)
                .map(|_| sample(&logits, 1.0, 0.9, &mut r))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        // Top-p 0.9 keeps tokens 1, 2, 0 (masses .66, .24, .09): token 3 never appears.
        assert!(run(7).iter().all(|&t| t != 3));
        assert!(run(7).contains(&2));
        // top_p tiny or temperature 0: greedy.
        let mut r = SplitMix64::new(1);
        assert_eq!(sample(&logits, 1.0, 1e-9, &mut r), 1);
        assert_eq!(sample(&logits, 0.0, 0.9, &mut r), 1);
    }

    #[test]
    fn sample_is_pick_of_the_next_draw() {
        let logits = [0.5f32, 1.5, 1.0, -2.0, 0.0];
        let mut a = SplitMix64::new(3);
        let mut b = SplitMix64::new(3);
        for _ in 0..20 {
            let u = b.next_f64();
            assert_eq!(
                sample(&logits, 0.7, 0.95, &mut a),
                pick(&logits, 0.7, 0.95, u)
            );
        }
    }

    #[test]
    fn prompt_seeds_differ_per_task_and_prompt() {
        let s = prompt_seed(7, 0, 0);
        assert_eq!(s, SplitMix64::new(7).next_u64());
        assert_ne!(s, prompt_seed(7, 0, 1));
        assert_ne!(s, prompt_seed(7, 1, 0));
        assert_ne!(s, prompt_seed(8, 0, 0));
        assert_ne!(prompt_seed(7, 1, 0), prompt_seed(7, 0, 1));
    }

    #[test]
    fn reachable_accepts_the_sampled_token_and_near_ties_only() {
        // What the sampler takes is always reachable, at any margin.
        let logits = [1.0f32, 3.0, 2.0, -1.0, 2.9];
        let mut r = SplitMix64::new(11);
        for _ in 0..200 {
            let u = r.next_f64();
            let t = pick(&logits, 1.0, 0.9, u);
            assert!(reachable(&logits, 1.0, 0.9, u, t, 0.0));
            assert!(reachable(&logits, 1.0, 0.9, u, t, 0.05));
        }
        // Tokens 1 (3.0) and 4 (2.9) are a near-tie: the order of their intervals may swap, so
        // for a draw inside token 1's interval token 4 is also reachable at margin 0.2, not at 0.01.
        let u = 0.05;
        assert_eq!(pick(&logits, 1.0, 1.0, u), 1);
        assert!(reachable(&logits, 1.0, 1.0, u, 4, 0.2));
        assert!(!reachable(&logits, 1.0, 1.0, u, 4, 0.01));
        // A token far from the draw's interval is not: token 3 holds ~1% of the mass at the end.
        assert!(!reachable(&logits, 1.0, 1.0, u, 3, 0.2));
        assert!(!reachable(&logits, 1.0, 1.0, u, 0, 0.2));
        // Outside the nucleus: with top-p 0.5 only tokens 1 and 4 are kept.
        assert!(!reachable(&logits, 1.0, 0.5, 0.99, 3, 0.2));
        // Outside the vocabulary.
        assert!(!reachable(&logits, 1.0, 1.0, u, 99, 10.0));
        // Greedy: the top, or within the margin of it.
        assert!(reachable(&logits, 0.0, 1.0, u, 1, 0.0));
        assert!(reachable(&logits, 0.0, 1.0, u, 4, 0.2));
        assert!(!reachable(&logits, 0.0, 1.0, u, 2, 0.5));
    }
}
