//! A small decoder-only GPT (GPT-2 style: learned positions, pre-norm blocks, GELU MLP, an
//! untied output head) over bytes, for `train` jobs: Burn modules, the loss and gradient of a
//! batch on any device ([`loss_and_grad`]), plain SGD ([`sgd`]), and checkpoints.
//!
//! Parameters travel as one flat f32 vector in a fixed order ([`GptConfig::shapes`]), so that a
//! gradient is a vector the verifier can compare and average, and a checkpoint file names every
//! tensor ([`Checkpoint`]).
//!
//! A batch is `rows` sequences of `context + 1` token ids: positions `0..context` are the input,
//! `1..=context` the targets. The loss is the mean cross-entropy over all `rows × context`
//! targets, so the gradient of several equal shards' mean is the mean of their gradients: what
//! lets a training step be split into tasks and put back together exactly (up to float
//! rounding).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::{gelu, log_softmax, softmax};
use gleaner_protocol::sampling::SplitMix64;
use gleaner_protocol::tensors::{self, Tensor as FileTensor, Values};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Bytes: the vocabulary of the byte-level GPT.
pub const BYTE_VOCAB: usize = 256;

/// Added to the attention scores of future positions.
const MASKED: f32 = -1e9;

/// Layer-norm epsilon.
const EPS: f64 = 1e-5;

/// Standard deviation of the initial weights (GPT-2's).
const INIT_STD: f64 = 0.02;

/// The format name in a checkpoint's metadata.
pub const CHECKPOINT_FORMAT: &str = "gleaner-gpt-1";

/// The shape of a GPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    /// Vocabulary size ([`BYTE_VOCAB`] for byte-level text).
    pub vocab: usize,
    /// Model width.
    pub dim: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads (dividing `dim`).
    pub heads: usize,
    /// Longest input sequence (learned positions).
    pub context: usize,
}

impl GptConfig {
    /// The default of `gleaner job submit --kind train`: 1.9M parameters.
    pub const DEFAULT: GptConfig = GptConfig {
        vocab: BYTE_VOCAB,
        dim: 192,
        layers: 4,
        heads: 6,
        context: 64,
    };

    /// Refuses shapes that cannot be built.
    pub fn validate(&self) -> Result<()> {
        if self.vocab == 0
            || self.dim == 0
            || self.layers == 0
            || self.heads == 0
            || self.context == 0
        {
            return Err(Error::Shape(format!(
                "a GPT needs positive sizes: {self:?}"
            )));
        }
        if !self.dim.is_multiple_of(self.heads) {
            return Err(Error::Shape(format!(
                "{} heads do not divide the width {}",
                self.heads, self.dim
            )));
        }
        if self.params() > 1 << 28 {
            return Err(Error::Shape(format!(
                "{} parameters is more than a training task carries",
                self.params()
            )));
        }
        Ok(())
    }

    /// Every parameter's name and shape, in the order of the flat vector.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (v, d, c) = (self.vocab, self.dim, self.context);
        let mut s = vec![
            ("tok_emb".to_owned(), vec![v, d]),
            ("pos_emb".to_owned(), vec![c, d]),
        ];
        for i in 0..self.layers {
            let p = |n: &str| format!("blocks.{i}.{n}");
            s.extend([
                (p("ln1.gamma"), vec![d]),
                (p("ln1.beta"), vec![d]),
                (p("attn.w_qkv"), vec![d, 3 * d]),
                (p("attn.b_qkv"), vec![3 * d]),
                (p("attn.w_out"), vec![d, d]),
                (p("attn.b_out"), vec![d]),
                (p("ln2.gamma"), vec![d]),
                (p("ln2.beta"), vec![d]),
                (p("mlp.w_in"), vec![d, 4 * d]),
                (p("mlp.b_in"), vec![4 * d]),
                (p("mlp.w_out"), vec![4 * d, d]),
                (p("mlp.b_out"), vec![d]),
            ]);
        }
        s.extend([
            ("ln_f.gamma".to_owned(), vec![d]),
            ("ln_f.beta".to_owned(), vec![d]),
            ("head".to_owned(), vec![d, v]),
        ]);
        s
    }

    /// Parameters in all.
    pub fn params(&self) -> usize {
        self.shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// FLOPs of one training token (forward and backward): 6 per weight, plus attention's
    /// scores and mixing (12 · layers · context · dim, at full context).
    pub fn train_flops_per_token(&self) -> u64 {
        6 * self.params() as u64 + 12 * (self.layers * self.context * self.dim) as u64
    }

    /// Random initial parameters from `seed` (normal with std 0.02 for weights and
    /// embeddings, ones for norm gains, zeros for biases and norm shifts): the same vector on
    /// every machine.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        let mut out = Vec::with_capacity(self.params());
        for (name, shape) in self.shapes() {
            let n: usize = shape.iter().product();
            if name.ends_with("gamma") {
                out.extend(std::iter::repeat_n(1.0, n));
            } else if name.ends_with("beta") || name.contains(".b_") {
                out.extend(std::iter::repeat_n(0.0, n));
            } else {
                for _ in 0..n {
                    // Box-Muller from two uniforms in (0, 1].
                    let u1 = 1.0 - rng.next_f64();
                    let u2 = rng.next_f64();
                    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                    out.push((z * INIT_STD) as f32);
                }
            }
        }
        out
    }
}

/// A checkpoint: the model's shape, its parameters, the step it is the start of and the
/// mean loss of the step that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Shape.
    pub config: GptConfig,
    /// Parameters, flat ([`GptConfig::shapes`] order).
    pub params: Vec<f32>,
    /// The step this checkpoint starts (0 for the initial one).
    pub step: u32,
    /// Mean training loss of the step before (`None` for the initial checkpoint).
    pub loss: Option<f32>,
}

impl Checkpoint {
    /// The initial checkpoint of `config` from `seed`.
    pub fn init(config: GptConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            params: config.init(seed),
            step: 0,
            loss: None,
        })
    }

    /// The safetensors file: one F32 tensor per parameter, by name, and the shape, step and
    /// loss in the metadata. Canonical: equal checkpoints give equal bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let shapes = self.config.shapes();
        if self.params.len() != self.config.params() {
            return Err(Error::Shape(format!(
                "{} parameters for a model of {}",
                self.params.len(),
                self.config.params()
            )));
        }
        let mut at = 0;
        let tensors: Vec<FileTensor> = shapes
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let t = FileTensor::new(name, shape, Values::F32(self.params[at..at + n].to_vec()));
                at += n;
                t
            })
            .collect();
        let config = serde_json::to_string(&self.config).expect("config serialises");
        let step = self.step.to_string();
        let loss = self.loss.map(|l| format!("{l}"));
        let mut meta = vec![
            ("format", CHECKPOINT_FORMAT),
            ("config", config.as_str()),
            ("step", step.as_str()),
        ];
        if let Some(l) = &loss {
            meta.push(("loss", l.as_str()));
        }
        tensors::encode(&tensors, &meta).map_err(|e| Error::Data(e.to_string()))
    }

    /// Reads a checkpoint file, refusing anything that does not fit its own shape.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| Error::Data(format!("checkpoint: {m}"));
        let file = tensors::decode(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = |k: &str| {
            file.metadata
                .get(k)
                .ok_or_else(|| bad(format!("no {k} in the metadata")))
        };
        if meta("format")? != CHECKPOINT_FORMAT {
            return Err(bad(format!("format is not {CHECKPOINT_FORMAT}")));
        }
        let config: GptConfig =
            serde_json::from_str(meta("config")?).map_err(|e| bad(e.to_string()))?;
        config.validate()?;
        let step = meta("step")?.parse().map_err(|_| bad("bad step".into()))?;
        let loss = match file.metadata.get("loss") {
            Some(l) => Some(l.parse().map_err(|_| bad("bad loss".into()))?),
            None => None,
        };
        let shapes = config.shapes();
        if file.tensors.len() != shapes.len() {
            return Err(bad(format!(
                "{} tensors for a model of {}",
                file.tensors.len(),
                shapes.len()
            )));
        }
        let mut params = Vec::with_capacity(config.params());
        for (name, shape) in shapes {
            let t = file.get(&name).map_err(|e| bad(e.to_string()))?;
            if t.shape != shape {
                return Err(bad(format!("{name} is {:?}, not {shape:?}", t.shape)));
            }
            let Values::F32(v) = &t.values else {
                return Err(bad(format!("{name} is not F32")));
            };
            if v.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!("{name} holds a non-finite value")));
            }
            params.extend_from_slice(v);
        }
        Ok(Self {
            config,
            params,
            step,
            loss,
        })
    }
}

/// The GPT as Burn modules.
#[derive(Module, Debug)]
pub struct Gpt {
    tok_emb: Param<Tensor<2>>,
    pos_emb: Param<Tensor<2>>,
    blocks: Vec<Block>,
    ln_f: Norm,
    head: Param<Tensor<2>>,
    heads: usize,
}

#[derive(Module, Debug)]
struct Norm {
    gamma: Param<Tensor<1>>,
    beta: Param<Tensor<1>>,
}

impl Norm {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let (var, mean) = x.clone().var_mean_bias(1);
        (x - mean).div(var.add_scalar(EPS).sqrt()) * self.gamma.val().unsqueeze_dim(0)
            + self.beta.val().unsqueeze_dim(0)
    }
}

#[derive(Module, Debug)]
struct Block {
    ln1: Norm,
    w_qkv: Param<Tensor<2>>,
    b_qkv: Param<Tensor<1>>,
    w_out: Param<Tensor<2>>,
    b_out: Param<Tensor<1>>,
    ln2: Norm,
    w_in: Param<Tensor<2>>,
    b_in: Param<Tensor<1>>,
    w_mlp: Param<Tensor<2>>,
    b_mlp: Param<Tensor<1>>,
}

fn linear(x: Tensor<2>, w: &Param<Tensor<2>>, b: &Param<Tensor<1>>) -> Tensor<2> {
    x.matmul(w.val()) + b.val().unsqueeze_dim(0)
}

impl Block {
    /// `x`: `[rows * seq, dim]`; `mask`: `[1, 1, seq, seq]`.
    fn forward(
        &self,
        x: Tensor<2>,
        rows: usize,
        seq: usize,
        heads: usize,
        mask: &Tensor<4>,
    ) -> Tensor<2> {
        let [n, d] = x.dims();
        let hd = d / heads;
        let qkv = linear(self.ln1.forward(x.clone()), &self.w_qkv, &self.b_qkv);
        let split = |t: Tensor<2>| t.reshape([rows, seq, heads, hd]).swap_dims(1, 2);
        let q = split(qkv.clone().narrow(1, 0, d));
        let k = split(qkv.clone().narrow(1, d, d));
        let v = split(qkv.narrow(1, 2 * d, d));
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((hd as f64).sqrt()) + mask.clone();
        let att = softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([n, d]);
        let x = x + linear(att, &self.w_out, &self.b_out);
        let h = gelu(linear(self.ln2.forward(x.clone()), &self.w_in, &self.b_in));
        x + linear(h, &self.w_mlp, &self.b_mlp)
    }
}

/// A parameter of either rank, for walking the model in flat order.
enum P<'a> {
    V(&'a Param<Tensor<1>>),
    M(&'a Param<Tensor<2>>),
}

fn floats<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Data(format!("{e:?}")))
}

impl Gpt {
    /// The model of `config` with the flat `params`, its tensors on `device` (an autodiff
    /// device for training).
    pub fn from_flat(config: &GptConfig, params: &[f32], device: &Device) -> Result<Self> {
        config.validate()?;
        if params.len() != config.params() {
            return Err(Error::Shape(format!(
                "{} parameters for a model of {}",
                params.len(),
                config.params()
            )));
        }
        let shapes = config.shapes();
        let mut at = 0;
        let mut it = shapes.iter();
        let mut take = |rank: usize| -> (Vec<f32>, Vec<usize>) {
            let (_, shape) = it.next().expect("one shape per parameter");
            debug_assert_eq!(shape.len(), rank);
            let n: usize = shape.iter().product();
            let v = params[at..at + n].to_vec();
            at += n;
            (v, shape.clone())
        };
        let tok_emb = vec2(take(2), device);
        let pos_emb = vec2(take(2), device);
        let mut blocks = Vec::with_capacity(config.layers);
        for _ in 0..config.layers {
            let ln1 = Norm {
                gamma: vec1(take(1), device),
                beta: vec1(take(1), device),
            };
            let w_qkv = vec2(take(2), device);
            let b_qkv = vec1(take(1), device);
            let w_out = vec2(take(2), device);
            let b_out = vec1(take(1), device);
            let ln2 = Norm {
                gamma: vec1(take(1), device),
                beta: vec1(take(1), device),
            };
            let w_in = vec2(take(2), device);
            let b_in = vec1(take(1), device);
            let w_mlp = vec2(take(2), device);
            let b_mlp = vec1(take(1), device);
            blocks.push(Block {
                ln1,
                w_qkv,
                b_qkv,
                w_out,
                b_out,
                ln2,
                w_in,
                b_in,
                w_mlp,
                b_mlp,
            });
        }
        let ln_f = Norm {
            gamma: vec1(take(1), device),
            beta: vec1(take(1), device),
        };
        let head = vec2(take(2), device);
        Ok(Self {
            tok_emb,
            pos_emb,
            blocks,
            ln_f,
            head,
            heads: config.heads,
        })
    }

    fn walk(&self) -> Vec<P<'_>> {
        let mut out = vec![P::M(&self.tok_emb), P::M(&self.pos_emb)];
        for b in &self.blocks {
            out.extend([
                P::V(&b.ln1.gamma),
                P::V(&b.ln1.beta),
                P::M(&b.w_qkv),
                P::V(&b.b_qkv),
                P::M(&b.w_out),
                P::V(&b.b_out),
                P::V(&b.ln2.gamma),
                P::V(&b.ln2.beta),
                P::M(&b.w_in),
                P::V(&b.b_in),
                P::M(&b.w_mlp),
                P::V(&b.b_mlp),
            ]);
        }
        out.extend([
            P::V(&self.ln_f.gamma),
            P::V(&self.ln_f.beta),
            P::M(&self.head),
        ]);
        out
    }

    /// The parameters, flat.
    pub fn to_flat(&self) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for p in self.walk() {
            out.extend(match p {
                P::V(p) => floats(p.val())?,
                P::M(p) => floats(p.val())?,
            });
        }
        Ok(out)
    }

    /// The gradient of every parameter in `grads`, flat.
    pub fn grads_flat(&self, grads: &burn::tensor::Gradients) -> Result<Vec<f32>> {
        let missing =
            || Error::Data("a parameter has no gradient (is the device autodiff?)".into());
        let mut out = Vec::new();
        for p in self.walk() {
            out.extend(match p {
                P::V(p) => floats(p.val().grad(grads).ok_or_else(missing)?)?,
                P::M(p) => floats(p.val().grad(grads).ok_or_else(missing)?)?,
            });
        }
        Ok(out)
    }

    /// Logits `[rows * seq, vocab]` of `ids` (`[rows, seq]`, `seq` ≤ the context).
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<2> {
        let [rows, seq] = ids.dims();
        let device = ids.device();
        let [_, d] = self.tok_emb.dims();
        let x = self.tok_emb.val().select(0, ids.reshape([rows * seq]));
        let pos = self.pos_emb.val().narrow(0, 0, seq);
        let mut x = (x.reshape([rows, seq, d]) + pos.unsqueeze_dim(0)).reshape([rows * seq, d]);
        let mut m = vec![0f32; seq * seq];
        for i in 0..seq {
            for j in i + 1..seq {
                m[i * seq + j] = MASKED;
            }
        }
        let mask = Tensor::<4>::from_data(TensorData::new(m, [1, 1, seq, seq]), &device);
        for b in &self.blocks {
            x = b.forward(x, rows, seq, self.heads, &mask);
        }
        self.ln_f.forward(x).matmul(self.head.val())
    }

    /// Mean cross-entropy of a batch: `tokens` holds `rows` sequences of `context + 1` ids.
    pub fn loss(&self, tokens: &[u32], rows: usize, device: &Device) -> Result<Tensor<1>> {
        let [vocab_rows, vocab] = [self.tok_emb.dims()[0], self.head.dims()[1]];
        let [context, _] = self.pos_emb.dims();
        check_tokens(tokens, rows, context, vocab_rows.min(vocab))?;
        let seq = context;
        let (mut inp, mut tgt) = (
            Vec::with_capacity(rows * seq),
            Vec::with_capacity(rows * seq),
        );
        for r in tokens.chunks_exact(seq + 1) {
            inp.extend(r[..seq].iter().map(|&t| i64::from(t)));
            tgt.extend(r[1..].iter().map(|&t| i64::from(t)));
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(inp, [rows, seq]), device);
        let tgt = Tensor::<2, Int>::from_data(TensorData::new(tgt, [rows * seq, 1]), device);
        let logp = log_softmax(self.forward(ids), 1);
        Ok(logp.gather(1, tgt).mean().neg())
    }
}

fn vec1((v, s): (Vec<f32>, Vec<usize>), device: &Device) -> Param<Tensor<1>> {
    Param::from_tensor(Tensor::<1>::from_data(TensorData::new(v, [s[0]]), device))
}

fn vec2((v, s): (Vec<f32>, Vec<usize>), device: &Device) -> Param<Tensor<2>> {
    Param::from_tensor(Tensor::<2>::from_data(
        TensorData::new(v, [s[0], s[1]]),
        device,
    ))
}

/// Refuses a batch that is not `rows` sequences of `context + 1` ids below `vocab`.
pub fn check_tokens(tokens: &[u32], rows: usize, context: usize, vocab: usize) -> Result<()> {
    if rows == 0 || tokens.len() != rows * (context + 1) {
        return Err(Error::Shape(format!(
            "{} token ids are not {rows} sequences of {}",
            tokens.len(),
            context + 1
        )));
    }
    if let Some(i) = tokens.iter().position(|&t| t as usize >= vocab) {
        return Err(Error::Input {
            index: i / (context + 1),
            detail: format!("token {} outside the vocabulary of {vocab}", tokens[i]),
        });
    }
    Ok(())
}

/// The mean loss of a batch and its gradient (flat) at `params`, computed on `device` (made an
/// autodiff device here).
pub fn loss_and_grad(
    config: &GptConfig,
    params: &[f32],
    tokens: &[u32],
    rows: usize,
    device: &Device,
) -> Result<(f32, Vec<f32>)> {
    let device = device.clone().autodiff();
    let model = Gpt::from_flat(config, params, &device)?;
    let loss = model.loss(tokens, rows, &device)?;
    let grads = loss.backward();
    let g = model.grads_flat(&grads)?;
    let l = floats(loss.inner())?;
    Ok((l[0], g))
}

/// The mean loss of a batch at `params`, without gradients.
pub fn loss(
    config: &GptConfig,
    params: &[f32],
    tokens: &[u32],
    rows: usize,
    device: &Device,
) -> Result<f32> {
    let model = Gpt::from_flat(config, params, device)?;
    Ok(floats(model.loss(tokens, rows, device)?)?[0])
}

/// One SGD step: `params - lr * grad` (Burn's SGD without momentum or weight decay computes the
/// same f32 values).
pub fn sgd(params: &mut [f32], grad: &[f32], lr: f32) -> Result<()> {
    if params.len() != grad.len() {
        return Err(Error::Shape(format!(
            "a gradient of {} for {} parameters",
            grad.len(),
            params.len()
        )));
    }
    for (p, g) in params.iter_mut().zip(grad) {
        *p -= g * lr;
    }
    Ok(())
}

/// `len` training sequences of `context + 1` bytes from `text`, the ones global indices
/// `first..first + len` name: sequence `i` starts at byte `(i * context) mod (text - context
/// - 1)`, so consecutive sequences tile the text and wrap around. The data order of a run is
/// this function of the step (`first = step * sequences per step`).
pub fn sequences(text: &[u8], context: usize, first: u64, len: usize) -> Result<Vec<u32>> {
    let span = text
        .len()
        .checked_sub(context + 1)
        .filter(|&s| s > 0)
        .ok_or_else(|| Error::Input {
            index: 0,
            detail: format!(
                "a corpus of {} bytes is shorter than one sequence of {}",
                text.len(),
                context + 2
            ),
        })? as u64;
    let mut out = Vec::with_capacity(len * (context + 1));
    for i in first..first + len as u64 {
        let start = (i.wrapping_mul(context as u64) % span) as usize;
        out.extend(
            text[start..start + context + 1]
                .iter()
                .map(|&b| u32::from(b)),
        );
    }
    Ok(out)
}

/// A single-process Burn training run, the reference a distributed run is checked against:
/// `steps` SGD steps (Burn's own optimizer, learning rate `lr`) on whole batches of
/// `per_step` sequences of `text` in the same data order ([`sequences`]), from `params`.
/// Returns the final parameters and each step's loss.
pub fn train_reference(
    config: &GptConfig,
    params: &[f32],
    text: &[u8],
    steps: u32,
    per_step: usize,
    lr: f32,
    device: &Device,
) -> Result<(Vec<f32>, Vec<f32>)> {
    use burn::optim::{GradientsParams, SgdConfig};
    let device = device.clone().autodiff();
    let mut model = Gpt::from_flat(config, params, &device)?;
    let mut optim = SgdConfig::new().init();
    let mut losses = Vec::new();
    for step in 0..steps {
        let tokens = sequences(
            text,
            config.context,
            u64::from(step) * per_step as u64,
            per_step,
        )?;
        let loss = model.loss(&tokens, per_step, &device)?;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        losses.push(floats(loss.inner())?[0]);
        model = optim.step(f64::from(lr), model, grads);
    }
    Ok((model.to_flat()?, losses))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: GptConfig = GptConfig {
        vocab: BYTE_VOCAB,
        dim: 16,
        layers: 2,
        heads: 2,
        context: 8,
    };

    fn text() -> Vec<u8> {
        b"the cat sat on the mat. the dog sat on the log. a cat and a dog. ".repeat(4)
    }

    #[test]
    fn shapes_count_the_parameters_and_the_default_is_about_two_million() {
        let n = GptConfig::DEFAULT.params();
        assert!((1_500_000..3_000_000).contains(&n), "{n}");
        assert_eq!(TINY.init(1).len(), TINY.params());
        assert_eq!(TINY.init(1), TINY.init(1));
        assert_ne!(TINY.init(1), TINY.init(2));
        assert!(GptConfig { heads: 3, ..TINY }.validate().is_err());
    }

    #[test]
    fn checkpoint_round_trips_and_refuses_a_wrong_shape() {
        let c = Checkpoint {
            loss: Some(2.5),
            step: 3,
            ..Checkpoint::init(TINY, 7).unwrap()
        };
        let b = c.to_bytes().unwrap();
        assert_eq!(Checkpoint::from_bytes(&b).unwrap(), c);
        assert_eq!(Checkpoint::from_bytes(&b).unwrap().to_bytes().unwrap(), b);
        let mut short = c.clone();
        short.params.pop();
        assert!(short.to_bytes().is_err());
        let mut nan = c;
        nan.params[0] = f32::NAN;
        let b = nan.to_bytes().unwrap();
        assert!(Checkpoint::from_bytes(&b).is_err());
    }

    /// The analytic gradient matches central differences of the loss on a few parameters.
    #[test]
    fn gradient_matches_finite_differences() {
        let device = Device::flex();
        let params = TINY.init(3);
        let tokens = sequences(&text(), TINY.context, 0, 2).unwrap();
        let (l0, g) = loss_and_grad(&TINY, &params, &tokens, 2, &device).unwrap();
        assert!((l0 - (BYTE_VOCAB as f32).ln()).abs() < 0.1, "{l0}");
        let n = params.len();
        for &i in &[0usize, 256 * 16 + 5, 300 * 16 + 1, n / 2, n - 3] {
            let h = 1e-2f32;
            let mut p = params.clone();
            p[i] += h;
            let up = loss(&TINY, &p, &tokens, 2, &device).unwrap();
            p[i] -= 2.0 * h;
            let down = loss(&TINY, &p, &tokens, 2, &device).unwrap();
            let fd = (up - down) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 2e-3 + 0.05 * g[i].abs(),
                "param {i}: finite difference {fd}, gradient {}",
                g[i]
            );
        }
    }

    /// Two half batches' mean gradient is the whole batch's, and SGD on it lowers the loss.
    #[test]
    fn shard_gradients_average_to_the_batch_gradient_and_sgd_learns() {
        let device = Device::flex();
        let params = TINY.init(5);
        let tokens = sequences(&text(), TINY.context, 0, 4).unwrap();
        let half = tokens.len() / 2;
        let (lw, gw) = loss_and_grad(&TINY, &params, &tokens, 4, &device).unwrap();
        let (la, ga) = loss_and_grad(&TINY, &params, &tokens[..half], 2, &device).unwrap();
        let (lb, gb) = loss_and_grad(&TINY, &params, &tokens[half..], 2, &device).unwrap();
        assert!(((la + lb) / 2.0 - lw).abs() < 1e-5);
        let num: f32 = gw
            .iter()
            .zip(ga.iter().zip(&gb))
            .map(|(w, (a, b))| (w - (a + b) / 2.0).powi(2))
            .sum();
        let den: f32 = gw.iter().map(|w| w * w).sum();
        assert!((num / den).sqrt() < 1e-5, "{}", (num / den).sqrt());
        let mut p = params;
        let mut last = lw;
        for _ in 0..5 {
            let (l, g) = loss_and_grad(&TINY, &p, &tokens, 4, &device).unwrap();
            assert!(l <= last + 1e-4, "{l} after {last}");
            last = l;
            sgd(&mut p, &g, 0.5).unwrap();
        }
        assert!(last < lw - 0.1, "{lw} -> {last}");
    }

    /// Two steps of shard gradients averaged and applied with [`sgd`] (what a distributed run
    /// does) land where Burn's own optimizer on whole batches does.
    #[test]
    fn averaged_shard_steps_match_burns_optimizer() {
        let device = Device::flex();
        let init = TINY.init(9);
        let (want, losses) = train_reference(&TINY, &init, &text(), 2, 4, 0.3, &device).unwrap();
        let mut p = init;
        for step in 0..2u64 {
            let tokens = sequences(&text(), TINY.context, step * 4, 4).unwrap();
            let half = tokens.len() / 2;
            let (la, ga) = loss_and_grad(&TINY, &p, &tokens[..half], 2, &device).unwrap();
            let (lb, gb) = loss_and_grad(&TINY, &p, &tokens[half..], 2, &device).unwrap();
            assert!(((la + lb) / 2.0 - losses[step as usize]).abs() < 1e-5);
            let g: Vec<f32> = ga.iter().zip(&gb).map(|(a, b)| (a + b) / 2.0).collect();
            sgd(&mut p, &g, 0.3).unwrap();
        }
        let worst = p
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "largest difference {worst}");
        assert!(p != TINY.init(9), "nothing was learned");
    }

    #[test]
    fn sequences_tile_and_wrap_and_refuse_short_text() {
        let t = b"abcdefghij";
        let s = sequences(t, 3, 0, 3).unwrap();
        assert_eq!(s.len(), 12);
        assert_eq!(&s[..4], &[97, 98, 99, 100]);
        assert_eq!(&s[4..8], &[100, 101, 102, 103]);
        // span = 10 - 4 = 6: sequence 2 starts at 6 mod 6 = 0.
        assert_eq!(&s[8..12], &s[..4]);
        assert!(sequences(b"abc", 3, 0, 1).is_err());
    }
}
