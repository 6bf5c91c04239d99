//! `generate`: text generation with SmolLM2-135M-Instruct.
//!
//! - Input blob: prompts ([`encode_prompts`]), `batch` per task; a requester's `--chat` wraps
//!   each in the model's chat template first. Units of work = the blob's bytes plus 4 per token
//!   each prompt may generate.
//! - Output blob: one generation (token ids and their text) per prompt ([`encode_generations`]).
//! - Check: the teacher-forced pass ([`Generator::verify`]): every claimed token must be within
//!   the margin of what the model (greedy, or the job's seeded sampler) would pick, and the text
//!   must be the decoding of the ids. The verifier can tell right from wrong without a second
//!   replica.
//! - Comparator: any two outputs that passed the check agree (both are outputs the model could
//!   have produced, even where they part at a near-tie).
//! - Accepted output: the output of the member with the greatest confidence (the first in
//!   ascending worker order on a tie), since token sequences have no mean.
//! - Results: JSON lines `{"prompt", "ids", "text"}` in input order.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gleaner_models::smollm::chat_prompt;
use gleaner_models::{DecoderChoice, Generator, SMOLLM_GGUF_SHA256, SelectedDevice};
use gleaner_protocol::blob::{
    Generation, decode_generations, decode_prompts, encode_generations, encode_prompts,
};
use gleaner_protocol::task::{JobManifest, KindId, ModelRef, TaskParams};

use crate::embed::{check_model, parse_sha};
use crate::{
    Checked, Error, Member, Outcome, Output, Result, SplitOptions, TaskBlob, TaskKind, TaskRef,
    Written, create, io_err, outputs_as,
};

/// Most new tokens a prompt may ask for.
const MAX_NEW_TOKENS: u32 = 2048;

/// What a GPU miner decodes at start-up ([`GenerateKind`]'s `prepare`), greedy.
const WARM_PROMPT: &str = "Warm-up: name three colours of the rainbow.";

/// New tokens of the start-up decode: every decoding kernel runs, and little else.
const WARM_TOKENS: u32 = 8;

/// The `generate` kind; loads SmolLM2 on first use.
pub struct GenerateKind {
    gguf: PathBuf,
    device: SelectedDevice,
    decoder: DecoderChoice,
    generator: Mutex<Option<Arc<Generator>>>,
}

impl std::fmt::Debug for GenerateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateKind")
            .field("gguf", &self.gguf)
            .field("decoder", &self.decoder)
            .finish_non_exhaustive()
    }
}

impl GenerateKind {
    /// The kind with SmolLM2's GGUF at `gguf`, run on `device`; `decoder` says what generates
    /// (checks run as [`Generator::checker`] says).
    pub fn new(gguf: PathBuf, device: SelectedDevice, decoder: DecoderChoice) -> Self {
        Self {
            gguf,
            device,
            decoder,
            generator: Mutex::new(None),
        }
    }

    /// SmolLM2, loaded once.
    pub fn generator(&self) -> Result<Arc<Generator>> {
        let mut slot = self
            .generator
            .lock()
            .map_err(|_| Error::Invalid("generate model lock poisoned".into()))?;
        if let Some(g) = slot.as_ref() {
            return Ok(Arc::clone(g));
        }
        tracing::info!(target: "kinds", path = %self.gguf.display(), "loading SmolLM2");
        let g = Generator::load_with(&self.gguf, self.device.clone(), self.decoder)?;
        Ok(Arc::clone(slot.insert(Arc::new(g))))
    }

    fn checked_generator(&self, task: &TaskRef<'_>) -> Result<Arc<Generator>> {
        let g = self.generator()?;
        check_model(task, parse_sha(g.weights_sha256())?)?;
        Ok(g)
    }
}

fn bad_input(task: &TaskRef<'_>, e: impl std::fmt::Display) -> Error {
    Error::BadInput {
        index: task.index,
        detail: e.to_string(),
    }
}

impl TaskKind for GenerateKind {
    fn id(&self) -> KindId {
        KindId::GENERATE
    }

    /// On a wgpu device: loads SmolLM2 and decodes a short prompt once, before the first
    /// task, so that the first task finds the weights on the GPU and the decoding kernels
    /// compiled (from the on-disk kernel cache, on later starts), and logs how long that took.
    /// CPU devices load the model at the first task, as before: there is nothing to compile.
    fn prepare(&self) -> Result<Option<f64>> {
        if self.device.adapter.is_none() {
            return Ok(None);
        }
        let start = std::time::Instant::now();
        tracing::info!(
            target: "kinds",
            "warming up the GPU for generate: loading SmolLM2, then decoding {WARM_TOKENS} tokens"
        );
        let generator = self.generator()?;
        let loaded = start.elapsed().as_secs_f64();
        let rule = generator.decoding(WARM_TOKENS, None, 0, 0);
        generator.generate(WARM_PROMPT, &rule)?;
        tracing::info!(
            target: "kinds",
            load_secs = format!("{loaded:.1}"),
            secs = format!("{:.1}", start.elapsed().as_secs_f64()),
            "GPU warm-up for generate done"
        );
        Ok(None)
    }

    fn model(&self) -> Result<ModelRef> {
        Ok(ModelRef {
            id: "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, dequantised to f32)".into(),
            weights_sha256: parse_sha(SMOLLM_GGUF_SHA256)?,
        })
    }

    fn validate(&self, manifest: &JobManifest) -> Result<()> {
        self.params(manifest.params.clone()).map(drop)
    }

    fn params(&self, asked: TaskParams) -> Result<TaskParams> {
        if !(1..=MAX_NEW_TOKENS).contains(&asked.max_tokens) {
            return Err(Error::Input(format!(
                "max_tokens {} is outside 1..={MAX_NEW_TOKENS}",
                asked.max_tokens
            )));
        }
        Ok(asked)
    }

    fn split(
        &self,
        input: &[u8],
        params: &TaskParams,
        options: &SplitOptions,
    ) -> Result<Vec<TaskBlob>> {
        let prompts = decode_prompts(input)?;
        let prompts: Vec<String> = if options.chat {
            prompts.iter().map(|p| chat_prompt(p)).collect()
        } else {
            prompts
        };
        prompts
            .chunks(params.batch.max(1) as usize)
            .map(|c| {
                let bytes = encode_prompts(&c.iter().map(String::as_str).collect::<Vec<_>>())?;
                let most = c.len() as u64 * u64::from(params.max_tokens) * 4;
                Ok(TaskBlob {
                    cost: bytes.len() as u64 + most,
                    bytes,
                })
            })
            .collect()
    }

    fn available(&self) -> bool {
        self.gguf.is_file()
    }

    /// Each prompt decoded as the job's params say (greedy, or seeded per task and prompt), all
    /// of the task's prompts in one batch: the weights are read once per step.
    fn run(&self, task: &TaskRef<'_>, input: &[u8]) -> Result<Vec<u8>> {
        let generator = self.checked_generator(task)?;
        let prompts = decode_prompts(input).map_err(|e| bad_input(task, e))?;
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let rules: Vec<_> = (0..prompts.len() as u32)
            .map(|i| {
                generator.decoding(task.params.max_tokens, task.params.sampling, task.index, i)
            })
            .collect();
        Ok(encode_generations(&generator.generate_many(&refs, &rules)?))
    }

    /// The format first (no model needed to reject garbage), then one teacher-forced pass per
    /// prompt.
    fn check(&self, task: &TaskRef<'_>, input: &[u8], output: &[u8]) -> Result<Checked> {
        let prompts = decode_prompts(input).map_err(|e| bad_input(task, e))?;
        let outputs = match decode_generations(output) {
            Ok(o) => o,
            Err(e) => return Ok(Checked::Malformed(e.to_string())),
        };
        if outputs.len() != prompts.len() {
            return Ok(Checked::Malformed(format!(
                "{} outputs for {} prompts",
                outputs.len(),
                prompts.len()
            )));
        }
        let generator = self.checked_generator(task)?;
        for (i, (prompt, claimed)) in prompts.iter().zip(&outputs).enumerate() {
            let rule = generator.decoding(
                task.params.max_tokens,
                task.params.sampling,
                task.index,
                i as u32,
            );
            if let Some(reason) = generator.verify(prompt, claimed, &rule)?.reason {
                return Ok(Checked::Malformed(format!("prompt {i}: {reason}")));
            }
        }
        Ok(Checked::Valid(Output::new(outputs)))
    }

    fn agree(&self, a: &Output, b: &Output) -> bool {
        match (a.get::<Vec<Generation>>(), b.get::<Vec<Generation>>()) {
            (Some(x), Some(y)) => x.len() == y.len(),
            _ => false,
        }
    }

    fn accept(&self, members: &[Member<'_>]) -> Result<Vec<u8>> {
        let outputs = outputs_as::<Vec<Generation>>(members)?;
        let best = (0..members.len())
            .max_by_key(|&i| (members[i].confidence, std::cmp::Reverse(members[i].worker)))
            .ok_or_else(|| Error::Invalid("nothing to accept".into()))?;
        Ok(encode_generations(outputs[best]))
    }

    fn results_need_inputs(&self) -> bool {
        true
    }

    fn write_results(
        &self,
        _job_id: alloy::primitives::U256,
        outcomes: &[Outcome<'_>],
        out: &Path,
    ) -> Result<Written> {
        let mut w = create(out)?;
        let (mut items, mut missing) = (0, Vec::new());
        for o in outcomes {
            let Some(bytes) = o.output else {
                missing.push(o.index);
                continue;
            };
            let prompts = decode_prompts(o.input)?;
            let outputs = decode_generations(bytes)?;
            for (p, g) in prompts.iter().zip(&outputs) {
                let line = serde_json::json!({ "prompt": p, "ids": g.ids, "text": g.text });
                writeln!(w, "{line}").map_err(io_err(out))?;
                items += 1;
            }
        }
        w.flush().map_err(io_err(out))?;
        Ok(Written {
            items,
            unit: "generations",
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::Address;

    use super::*;

    fn kind() -> GenerateKind {
        GenerateKind::new(
            PathBuf::from("/nonexistent/smollm.gguf"),
            SelectedDevice::cpu(gleaner_models::CpuKind::Flex, "test"),
            DecoderChoice::Auto,
        )
    }

    fn generation(ids: &[u32]) -> Generation {
        Generation {
            ids: ids.to_vec(),
            text: format!("{ids:?}"),
        }
    }

    /// A CPU miner loads SmolLM2 at its first task, as before: `prepare` reads nothing (the
    /// path here does not exist).
    #[test]
    fn prepare_on_a_cpu_device_loads_nothing() {
        let k = kind();
        assert_eq!(k.prepare().unwrap(), None);
        assert!(k.generator.lock().unwrap().is_none());
    }

    /// On wgpu (lavapipe here) `prepare` loads the model and decodes once, before any task.
    #[test]
    fn prepare_on_wgpu_loads_smollm_before_the_first_task() {
        let gguf =
            gleaner_models::ModelPaths::new(gleaner_test_utils::gleaner_home()).smollm_gguf();
        assert!(
            gguf.is_file(),
            "{} is missing: run scripts/setup",
            gguf.display()
        );
        let device = gleaner_models::select_device(gleaner_models::BackendChoice::Wgpu)
            .unwrap_or_else(|e| panic!("{e}"));
        let k = GenerateKind::new(gguf, device, DecoderChoice::Auto);
        assert_eq!(k.prepare().unwrap(), None);
        let loaded = k.generator.lock().unwrap().clone();
        let g = loaded.expect("prepare loaded the model");
        assert_eq!(g.device().backend, "wgpu");
    }

    #[test]
    fn malformed_outputs_are_rejected_before_any_model_is_loaded() {
        let k = kind();
        let (model, params) = (
            k.model().unwrap(),
            TaskParams {
                batch: 2,
                max_tokens: 8,
                sampling: None,
                train: None,
            },
        );
        let t = TaskRef {
            job_id: alloy::primitives::U256::from(1),
            index: 3,
            model: &model,
            params: &params,
        };
        let input = encode_prompts(&["a", "b"]).unwrap();
        let one = encode_generations(&[generation(&[1])]);
        let c = k.check(&t, &input, &one).unwrap();
        assert_eq!(c.malformed(), Some("1 outputs for 2 prompts"));
        assert!(k.check(&t, &input, b"junk").unwrap().malformed().is_some());
        // Well formed: now the model is needed, and it is missing (the checker's own problem).
        let two = encode_generations(&[generation(&[1]), generation(&[2])]);
        let err = k.check(&t, &input, &two).unwrap_err();
        assert!(err.to_string().contains("scripts/setup"), "{err}");
        // An unreadable input is not the worker's fault either.
        assert!(matches!(
            k.check(&t, b"junk", &two),
            Err(Error::BadInput { index: 3, .. })
        ));
    }

    #[test]
    fn the_most_trusted_member_is_accepted_ties_to_the_lowest_address() {
        let k = kind();
        let (a, b) = (
            Output::new(vec![generation(&[1, 2])]),
            Output::new(vec![generation(&[1, 3])]),
        );
        assert!(k.agree(&a, &b));
        assert!(!k.agree(&a, &Output::new(vec![generation(&[1]), generation(&[2])])));
        let member = |n, confidence, output| Member {
            worker: Address::repeat_byte(n),
            confidence,
            output,
        };
        let pick = |m: &[Member<'_>]| decode_generations(&k.accept(m).unwrap()).unwrap();
        assert_eq!(
            pick(&[member(1, 5_000, &a), member(2, 9_000, &b)])[0].ids,
            [1, 3]
        );
        assert_eq!(
            pick(&[member(1, 9_000, &a), member(2, 9_000, &b)])[0].ids,
            [1, 2]
        );
    }

    #[test]
    fn chat_wraps_prompts_and_cost_counts_the_tokens_asked_for() {
        let k = kind();
        let params = TaskParams {
            batch: 2,
            max_tokens: 10,
            sampling: None,
            train: None,
        };
        let input = b"{\"prompt\":\"hi\"}\n{\"prompt\":\"yo\"}\n{\"prompt\":\"x\"}\n";
        let plain = k.split(input, &params, &SplitOptions::default()).unwrap();
        assert_eq!(plain.len(), 2);
        assert_eq!(plain[0].cost, plain[0].bytes.len() as u64 + 2 * 10 * 4);
        let chat = k
            .split(input, &params, &SplitOptions { chat: true })
            .unwrap();
        assert_eq!(decode_prompts(&chat[1].bytes).unwrap(), [chat_prompt("x")]);
        assert!(
            k.params(TaskParams {
                max_tokens: 0,
                ..params.clone()
            })
            .is_err()
        );
        assert!(
            k.params(TaskParams {
                max_tokens: 4096,
                ..params
            })
            .is_err()
        );
    }
}
