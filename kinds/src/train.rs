//! `train`: one SGD step of a small byte-level GPT ([`gleaner_models::gpt`]), split into data
//! shards.
//!
//! - Job: one training step. Its model hash is the sha256 of the step's checkpoint file, so the
//!   checkpoint is in every task hash (and the task root on-chain); `params.train` pins the
//!   GPT's shape, the step and the learning rate; `batch` is the sequences per task and
//!   `max_tokens` their length (the context).
//! - Input blob ([`TrainInput`]): a safetensors file holding the checkpoint file verbatim (`U8`
//!   tensor `checkpoint`), the shard's token ids (`U32 [rows, context + 1]`, tensor `tokens`),
//!   and the step and learning rate in the metadata. Units of work = the shard's training
//!   FLOPs (rows × context × [`GptConfig::train_flops_per_token`]).
//! - Output blob ([`Gradient`]): safetensors `grad` (F32, every parameter, flat) and `loss` (F32
//!   `[1]`): the gradient and mean loss of the shard at the checkpoint.
//! - Check: the shape (one finite value per parameter, a finite non-negative loss); a wrong
//!   gradient is well formed, so replicas are compared.
//! - Comparator: relative L2 distance of the gradients ≤ [`TRAIN_MAX_REL_L2`] and losses within
//!   [`TRAIN_MAX_LOSS_DIFF`] (calibrated across flex, ndarray and wgpu in the tests). A scaled,
//!   noised, stale (other checkpoint) or other-shard gradient is far outside.
//! - Accepted output: the confidence-weighted mean of the agreeing cluster (seed 4.1.3), the
//!   same [`formulas::weighted_mean`] embed's aggregation uses.
//! - Results: the next checkpoint: the step's checkpoint minus the learning rate times the
//!   row-weighted mean of the accepted shard gradients ([`gleaner_models::gpt::sgd`]), with the
//!   step's mean loss in its metadata. Anyone holding the inputs and the accepted outputs (the
//!   settlement report names their hashes) rebuilds it bit for bit.

use std::io::Write;
use std::path::Path;

use alloy::primitives::U256;
use gleaner_models::SelectedDevice;
use gleaner_models::gpt::{self, Checkpoint, GptConfig};
use gleaner_protocol::blob::blob_hash;
use gleaner_protocol::formulas;
use gleaner_protocol::task::{JobManifest, KindId, ModelRef, TaskParams, TrainParams};
use gleaner_protocol::tensors::{self, Tensor, Values};

use crate::embed::check_model;
use crate::{
    Checked, Error, Member, Outcome, Output, Result, SplitOptions, TaskBlob, TaskKind, TaskRef,
    Written, create, io_err, outputs_as,
};

/// The model id of train jobs.
pub const TRAIN_MODEL_ID: &str = "gleaner/gpt-bytes";

/// Largest relative L2 distance `|a - b| / max(|a|, |b|)` between two agreeing gradients. Our
/// backends differ by ~1e-6 (`train_backends_agree_within_the_tolerance`); a gradient scaled by
/// 1.01 is 1e-2 away.
pub const TRAIN_MAX_REL_L2: f64 = 1e-3;

/// Largest difference between two agreeing losses.
pub const TRAIN_MAX_LOSS_DIFF: f32 = 1e-3;

/// A train task's input: the checkpoint it starts from, its shard, the step and learning rate.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainInput {
    /// The checkpoint file, verbatim (its sha256 is the job's model hash).
    pub checkpoint: Vec<u8>,
    /// Token ids, `rows × (context + 1)`.
    pub tokens: Vec<u32>,
    /// Sequences.
    pub rows: usize,
    /// Sequence length + 1.
    pub width: usize,
    /// Step of the run.
    pub step: u32,
    /// Learning rate × 10⁶.
    pub lr_micro: u32,
}

impl TrainInput {
    /// The input blob.
    pub fn to_blob(&self) -> Result<Vec<u8>> {
        let step = self.step.to_string();
        let lr = self.lr_micro.to_string();
        Ok(tensors::encode(
            &[
                Tensor::new(
                    "checkpoint",
                    vec![self.checkpoint.len()],
                    Values::U8(self.checkpoint.clone()),
                ),
                Tensor::new(
                    "tokens",
                    vec![self.rows, self.width],
                    Values::U32(self.tokens.clone()),
                ),
            ],
            &[("step", &step), ("lr_micro", &lr)],
        )?)
    }

    /// Reads an input blob.
    pub fn from_blob(bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| Error::Input(format!("train input: {m}"));
        let mut f = tensors::decode(bytes)?;
        let Values::U8(checkpoint) = f.take("checkpoint")?.values else {
            return Err(bad("checkpoint is not U8".into()));
        };
        let t = f.take("tokens")?;
        let (Values::U32(tokens), &[rows, width]) = (t.values, t.shape.as_slice()) else {
            return Err(bad("tokens are not U32 [rows, context + 1]".into()));
        };
        if rows == 0 || width < 2 {
            return Err(bad("no sequences".into()));
        }
        let num = |k: &str| -> Result<u32> {
            f.metadata
                .get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad(format!("no {k} in the metadata")))
        };
        Ok(Self {
            step: num("step")?,
            lr_micro: num("lr_micro")?,
            checkpoint,
            tokens,
            rows,
            width,
        })
    }
}

/// A decoded train output.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradient {
    /// Gradient of every parameter, flat.
    pub grad: Vec<f32>,
    /// Mean loss of the shard.
    pub loss: f32,
}

impl Gradient {
    /// The output blob (no metadata: equal gradients, equal hashes).
    pub fn to_blob(&self) -> Result<Vec<u8>> {
        Ok(tensors::encode(
            &[
                Tensor::new(
                    "grad",
                    vec![self.grad.len()],
                    Values::F32(self.grad.clone()),
                ),
                Tensor::new("loss", vec![1], Values::F32(vec![self.loss])),
            ],
            &[],
        )?)
    }

    /// Reads an output blob of a model with `params` parameters (when known); otherwise the
    /// reason it is malformed.
    pub fn from_blob(bytes: &[u8], params: Option<usize>) -> Result<Self, String> {
        let mut f = tensors::decode(bytes).map_err(|e| e.to_string())?;
        let Values::F32(grad) = f.take("grad").map_err(|e| e.to_string())?.values else {
            return Err("grad is not F32".into());
        };
        let Values::F32(loss) = f.take("loss").map_err(|e| e.to_string())?.values else {
            return Err("loss is not F32".into());
        };
        if !f.tensors.is_empty() {
            return Err("tensors besides grad and loss".into());
        }
        let [loss] = loss[..] else {
            return Err("loss is not one value".into());
        };
        if let Some(n) = params.filter(|&n| n != grad.len()) {
            return Err(format!("{} gradient values for {n} parameters", grad.len()));
        }
        if let Some(i) = grad.iter().position(|v| !v.is_finite()) {
            return Err(format!("non-finite gradient at {i}"));
        }
        if !loss.is_finite() || loss < 0.0 {
            return Err(format!("loss {loss} is not a finite non-negative number"));
        }
        Ok(Self { grad, loss })
    }

    /// Whether two gradients agree ([`TRAIN_MAX_REL_L2`], [`TRAIN_MAX_LOSS_DIFF`]).
    pub fn agrees(&self, other: &Self) -> bool {
        self.grad.len() == other.grad.len()
            && (self.loss - other.loss).abs() <= TRAIN_MAX_LOSS_DIFF
            && rel_l2(&self.grad, &other.grad) <= TRAIN_MAX_REL_L2
    }
}

pub use gleaner_protocol::formulas::rel_l2;

/// The shape a job's params pin.
pub fn config_of(params: &TaskParams) -> Result<GptConfig> {
    let t = params
        .train
        .ok_or_else(|| Error::Input("a train job needs train parameters".into()))?;
    let config = GptConfig {
        vocab: t.vocab as usize,
        dim: t.dim as usize,
        layers: t.layers as usize,
        heads: t.heads as usize,
        context: params.max_tokens as usize,
    };
    config.validate()?;
    Ok(config)
}

/// The train params of a checkpoint's shape at `step` with learning rate `lr_micro`.
pub fn train_params(config: &GptConfig, step: u32, lr_micro: u32) -> Result<TrainParams> {
    let n = |v: usize| u32::try_from(v).map_err(|_| Error::Input(format!("{v} is too large")));
    Ok(TrainParams {
        vocab: n(config.vocab)?,
        dim: n(config.dim)?,
        layers: n(config.layers)?,
        heads: n(config.heads)?,
        step,
        lr_micro,
    })
}

/// The `train` kind: runs on `device` (autodiff is enabled per task).
#[derive(Debug)]
pub struct TrainKind {
    device: SelectedDevice,
}

impl TrainKind {
    /// The kind, computing gradients on `device`.
    pub fn new(device: SelectedDevice) -> Self {
        Self { device }
    }
}

impl TaskKind for TrainKind {
    fn id(&self) -> KindId {
        KindId::TRAIN
    }

    fn model(&self) -> Result<ModelRef> {
        Err(Error::Input(
            "a train job's model is its checkpoint: `gleaner job submit --kind train` prepares \
             each step"
                .into(),
        ))
    }

    /// The step's checkpoint, hashed.
    fn model_for(&self, input: &[u8]) -> Result<ModelRef> {
        let step = TrainInput::from_blob(input)?;
        Ok(ModelRef {
            id: TRAIN_MODEL_ID.into(),
            weights_sha256: blob_hash(&step.checkpoint),
        })
    }

    fn validate(&self, manifest: &JobManifest) -> Result<()> {
        if manifest.params.sampling.is_some() {
            return Err(Error::Input("train jobs take no sampling".into()));
        }
        config_of(&manifest.params)?;
        if manifest.model.id != TRAIN_MODEL_ID {
            return Err(Error::Input(format!(
                "a train job's model is {TRAIN_MODEL_ID}, not {}",
                manifest.model.id
            )));
        }
        Ok(())
    }

    fn params(&self, asked: TaskParams) -> Result<TaskParams> {
        if asked.sampling.is_some() {
            return Err(Error::Input(
                "sampling (--temperature) applies to generate jobs only".into(),
            ));
        }
        config_of(&asked)?;
        Ok(asked)
    }

    /// Cuts a step's input (the format of a task input, with every sequence of the step) into
    /// tasks of `batch` sequences, each with the checkpoint.
    fn split(
        &self,
        input: &[u8],
        params: &TaskParams,
        options: &SplitOptions,
    ) -> Result<Vec<TaskBlob>> {
        if options.chat {
            return Err(Error::Input("--chat applies to generate jobs only".into()));
        }
        let config = config_of(params)?;
        let step = TrainInput::from_blob(input)?;
        let ckpt = Checkpoint::from_bytes(&step.checkpoint)?;
        if ckpt.config != config {
            return Err(Error::Input(format!(
                "the checkpoint is {:?}, the job asks for {config:?}",
                ckpt.config
            )));
        }
        if step.width != config.context + 1 {
            return Err(Error::Input(format!(
                "sequences of {} tokens for a context of {}",
                step.width, config.context
            )));
        }
        let batch = params.batch.max(1) as usize;
        let per_token = config.train_flops_per_token();
        step.tokens
            .chunks(batch * step.width)
            .map(|rows| {
                let n = rows.len() / step.width;
                let cost = per_token
                    .checked_mul((n * config.context) as u64)
                    .ok_or_else(|| Error::Input("the shard's FLOPs overflow".into()))?;
                let bytes = TrainInput {
                    tokens: rows.to_vec(),
                    rows: n,
                    ..step.clone()
                }
                .to_blob()?;
                Ok(TaskBlob { bytes, cost })
            })
            .collect()
    }

    fn run(&self, task: &TaskRef<'_>, input: &[u8]) -> Result<Vec<u8>> {
        let bad = |detail: String| Error::BadInput {
            index: task.index,
            detail,
        };
        let config = config_of(task.params)?;
        let t = task.params.train.expect("config_of checked it");
        let inp = TrainInput::from_blob(input).map_err(|e| bad(e.to_string()))?;
        check_model(task, blob_hash(&inp.checkpoint))?;
        if (inp.step, inp.lr_micro) != (t.step, t.lr_micro) {
            return Err(bad(format!(
                "step {} at lr {}e-6, the job says step {} at {}e-6",
                inp.step, inp.lr_micro, t.step, t.lr_micro
            )));
        }
        let ckpt = Checkpoint::from_bytes(&inp.checkpoint).map_err(|e| bad(e.to_string()))?;
        if ckpt.config != config || inp.width != config.context + 1 {
            return Err(bad(
                "the checkpoint or the sequences do not fit the job".into()
            ));
        }
        let (loss, grad) = gpt::loss_and_grad(
            &config,
            &ckpt.params,
            &inp.tokens,
            inp.rows,
            &self.device.device,
        )?;
        Gradient { grad, loss }.to_blob()
    }

    fn check(&self, task: &TaskRef<'_>, _input: &[u8], output: &[u8]) -> Result<Checked> {
        let params = config_of(task.params).ok().map(|c| c.params());
        Ok(match Gradient::from_blob(output, params) {
            Ok(g) => Checked::Valid(Output::new(g)),
            Err(reason) => Checked::Malformed(reason),
        })
    }

    fn agree(&self, a: &Output, b: &Output) -> bool {
        match (a.get::<Gradient>(), b.get::<Gradient>()) {
            (Some(x), Some(y)) => x.agrees(y),
            _ => false,
        }
    }

    fn accept(&self, members: &[Member<'_>]) -> Result<Vec<u8>> {
        let outputs = outputs_as::<Gradient>(members)?;
        let weights = formulas::confidence_weights(members.iter().map(|m| m.confidence));
        let grads: Vec<&[f32]> = outputs.iter().map(|g| g.grad.as_slice()).collect();
        let losses: Vec<[f32; 1]> = outputs.iter().map(|g| [g.loss]).collect();
        let losses: Vec<&[f32]> = losses.iter().map(|l| l.as_slice()).collect();
        Gradient {
            grad: formulas::weighted_mean(&grads, &weights)?,
            loss: formulas::weighted_mean(&losses, &weights)?[0],
        }
        .to_blob()
    }

    fn results_need_inputs(&self) -> bool {
        true
    }

    /// Writes the next checkpoint (see the module docs).
    fn write_results(&self, job_id: U256, outcomes: &[Outcome<'_>], out: &Path) -> Result<Written> {
        let next = next_checkpoint(outcomes).map_err(|e| match e {
            Error::Input(m) => Error::Input(format!("job {job_id}: {m}")),
            e => e,
        })?;
        let missing = outcomes
            .iter()
            .filter(|o| o.output.is_none())
            .map(|o| o.index)
            .collect();
        let mut w = create(out)?;
        w.write_all(&next.to_bytes()?).map_err(io_err(out))?;
        w.flush().map_err(io_err(out))?;
        Ok(Written {
            items: 1,
            unit: "checkpoint",
            missing,
        })
    }
}

/// The checkpoint after a step: its inputs' checkpoint minus lr × the row-weighted mean of the
/// accepted gradients; the step's loss the row-weighted mean of theirs.
pub fn next_checkpoint(outcomes: &[Outcome<'_>]) -> Result<Checkpoint> {
    let mut start: Option<(Vec<u8>, u32, u32)> = None;
    let (mut grads, mut losses, mut weights) = (Vec::new(), Vec::new(), Vec::new());
    for o in outcomes {
        let inp = TrainInput::from_blob(o.input)?;
        match &start {
            None => start = Some((inp.checkpoint.clone(), inp.step, inp.lr_micro)),
            Some((c, s, l)) if *c == inp.checkpoint && (*s, *l) == (inp.step, inp.lr_micro) => {}
            Some(_) => {
                return Err(Error::Input(format!(
                    "task {} starts from another checkpoint or step",
                    o.index
                )));
            }
        }
        let Some(bytes) = o.output else { continue };
        let g = Gradient::from_blob(bytes, None)
            .map_err(|r| Error::Invalid(format!("task {}: accepted output: {r}", o.index)))?;
        grads.push(g.grad);
        losses.push([g.loss]);
        weights.push(inp.rows as f64);
    }
    let (checkpoint, step, lr_micro) = start.ok_or_else(|| Error::Input("no tasks".into()))?;
    if grads.is_empty() {
        return Err(Error::Input("no task has an accepted gradient".into()));
    }
    let mut ckpt = Checkpoint::from_bytes(&checkpoint)?;
    let slices: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
    let mean = formulas::weighted_mean(&slices, &weights)?;
    let ls: Vec<&[f32]> = losses.iter().map(|l| l.as_slice()).collect();
    let loss = formulas::weighted_mean(&ls, &weights)?[0];
    gpt::sgd(&mut ckpt.params, &mean, lr_micro as f32 / 1e6)?;
    ckpt.step = step + 1;
    ckpt.loss = Some(loss);
    Ok(ckpt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gleaner_models::gpt::{BYTE_VOCAB, sequences};

    const TINY: GptConfig = GptConfig {
        vocab: BYTE_VOCAB,
        dim: 16,
        layers: 1,
        heads: 2,
        context: 8,
    };

    fn text() -> Vec<u8> {
        b"one two three four five six seven eight nine ten. ".repeat(3)
    }

    fn params(step: u32) -> TaskParams {
        TaskParams {
            batch: 2,
            max_tokens: TINY.context as u32,
            sampling: None,
            train: Some(train_params(&TINY, step, 500_000).unwrap()),
        }
    }

    fn step_input(ckpt: &Checkpoint, rows: usize) -> Vec<u8> {
        TrainInput {
            checkpoint: ckpt.to_bytes().unwrap(),
            tokens: sequences(&text(), TINY.context, 0, rows).unwrap(),
            rows,
            width: TINY.context + 1,
            step: 0,
            lr_micro: 500_000,
        }
        .to_blob()
        .unwrap()
    }

    fn kind(device: SelectedDevice) -> TrainKind {
        TrainKind::new(device)
    }

    fn flex() -> SelectedDevice {
        SelectedDevice::cpu(gleaner_models::CpuKind::Flex, "test")
    }

    /// Split, run every shard, accept, write: the checkpoint equals one SGD step on the whole
    /// batch, and the verifier's comparator tells honest from tampered gradients.
    #[test]
    fn a_step_split_run_and_applied_equals_one_whole_batch_step() {
        let k = kind(flex());
        let ckpt = Checkpoint::init(TINY, 1).unwrap();
        let input = step_input(&ckpt, 4);
        let p = params(0);
        let blobs = k.split(&input, &p, &SplitOptions::default()).unwrap();
        assert_eq!(blobs.len(), 2);
        assert_eq!(blobs[0].cost, TINY.train_flops_per_token() * 2 * 8);
        let model = k.model_for(&input).unwrap();
        assert_eq!(model.weights_sha256, blob_hash(&ckpt.to_bytes().unwrap()));
        let mut outs = Vec::new();
        for (i, b) in blobs.iter().enumerate() {
            let t = TaskRef {
                job_id: U256::from(1),
                index: i as u32,
                model: &model,
                params: &p,
            };
            let out = k.run(&t, &b.bytes).unwrap();
            let Checked::Valid(o) = k.check(&t, &b.bytes, &out).unwrap() else {
                panic!("an honest gradient is malformed");
            };
            assert!(k.agree(&o, &o));
            let g = o.get::<Gradient>().unwrap().clone();
            // Tampered copies: scaled, noised, another shard's.
            let scaled = Gradient {
                grad: g.grad.iter().map(|v| v * 1.01).collect(),
                ..g.clone()
            };
            assert!(!g.agrees(&scaled));
            let mut noised = g.clone();
            noised.grad[3] += 0.1 * rel_norm(&g.grad);
            assert!(!g.agrees(&noised));
            outs.push(out);
        }
        let a = Gradient::from_blob(&outs[0], None).unwrap();
        let b = Gradient::from_blob(&outs[1], None).unwrap();
        assert!(!a.agrees(&b), "two shards' gradients agreed");
        // A stale gradient: the same shard at the checkpoint one small SGD step earlier.
        let shard = TrainInput::from_blob(&blobs[0].bytes).unwrap();
        let mut earlier = ckpt.params.clone();
        gpt::sgd(&mut earlier, &a.grad, -0.05).unwrap();
        let (l, g) =
            gpt::loss_and_grad(&TINY, &earlier, &shard.tokens, shard.rows, &flex().device).unwrap();
        assert!(
            !a.agrees(&Gradient { grad: g, loss: l }),
            "a stale gradient agreed"
        );
        // A worker that is told another model hash refuses the task.
        let other = ModelRef {
            weights_sha256: blob_hash(b"stale"),
            ..model.clone()
        };
        let t = TaskRef {
            job_id: U256::from(1),
            index: 0,
            model: &other,
            params: &p,
        };
        assert!(k.run(&t, &blobs[0].bytes).is_err());

        let outcomes: Vec<Outcome<'_>> = blobs
            .iter()
            .zip(&outs)
            .enumerate()
            .map(|(i, (b, o))| Outcome {
                index: i as u32,
                input: &b.bytes,
                output: Some(o),
            })
            .collect();
        let next = next_checkpoint(&outcomes).unwrap();
        let tokens = sequences(&text(), TINY.context, 0, 4).unwrap();
        let (loss, grad) =
            gpt::loss_and_grad(&TINY, &ckpt.params, &tokens, 4, &flex().device).unwrap();
        let mut want = ckpt.params.clone();
        gpt::sgd(&mut want, &grad, 0.5).unwrap();
        assert!(rel_l2(&next.params, &want) < 1e-6);
        assert_eq!(next.step, 1);
        assert!((next.loss.unwrap() - loss).abs() < 1e-5);
        // Written as a file that reads back.
        let dir = std::env::temp_dir().join(format!("gleaner-train-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("next.safetensors");
        let w = k.write_results(U256::from(1), &outcomes, &path).unwrap();
        assert_eq!((w.items, w.unit), (1, "checkpoint"));
        assert_eq!(
            Checkpoint::from_bytes(&std::fs::read(&path).unwrap()).unwrap(),
            next
        );
        let none: Vec<Outcome<'_>> = outcomes
            .iter()
            .map(|o| Outcome { output: None, ..*o })
            .collect();
        assert!(next_checkpoint(&none).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    fn rel_norm(g: &[f32]) -> f32 {
        g.iter().map(|v| v * v).sum::<f32>().sqrt()
    }

    /// The comparator's tolerance holds across the CPU backends (the wgpu path runs in the
    /// `it` tests on lavapipe) with room to spare.
    #[test]
    fn train_backends_agree_within_the_tolerance() {
        let ckpt = Checkpoint::init(TINY, 2).unwrap();
        let tokens = sequences(&text(), TINY.context, 0, 2).unwrap();
        let run = |kind| {
            let d = SelectedDevice::cpu(kind, "test");
            gpt::loss_and_grad(&TINY, &ckpt.params, &tokens, 2, &d.device).unwrap()
        };
        let (la, ga) = run(gleaner_models::CpuKind::Flex);
        let (lb, gb) = run(gleaner_models::CpuKind::NdArray);
        let d = rel_l2(&ga, &gb);
        assert!(d < TRAIN_MAX_REL_L2 / 100.0, "flex vs ndarray: {d}");
        assert!((la - lb).abs() < TRAIN_MAX_LOSS_DIFF / 100.0);
    }

    #[test]
    fn malformed_outputs_and_inputs_are_named() {
        let g = Gradient {
            grad: vec![1.0, f32::NAN],
            loss: 1.0,
        };
        assert!(Gradient::from_blob(&g.to_blob().unwrap(), None).is_err());
        let g = Gradient {
            grad: vec![1.0, 2.0],
            loss: 1.0,
        };
        let e = Gradient::from_blob(&g.to_blob().unwrap(), Some(3)).unwrap_err();
        assert!(e.contains("2 gradient values for 3 parameters"), "{e}");
        assert!(TrainInput::from_blob(b"nonsense").is_err());
        let k = kind(flex());
        assert!(k.model().is_err());
        let mut p = params(0);
        p.train = None;
        assert!(k.params(p).is_err());
    }
}
