//! The `generate` task kind: SmolLM2 with its tokenizer, what a worker runs for one prompt and
//! what the verifier checks a claimed output with.
//!
//! A prompt is tokenized without special tokens (a chat template, if wanted, is already in the
//! text). The output's `text` is the decoding of its ids without the end-of-sequence token and
//! with special tokens skipped; the verifier recomputes it, so text and ids cannot disagree.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use gleaner_protocol::blob::Generation;
use gleaner_protocol::sampling::prompt_seed;
use gleaner_protocol::task::SamplingParams;
use tokenizers::Tokenizer;

use crate::gguf::Gguf;
use crate::qcpu::QuantLlama;
use crate::smollm::{
    Decoder, Decoding, GENERATE_MARGIN, Llama, Sampling, TokenCheck, generate_batch, verify,
};
use crate::{Error, Result, SelectedDevice};

/// Which decoder generates. Verification always runs the Burn model on the chosen device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DecoderChoice {
    /// The quantized CPU decoder on a CPU device, Burn on a GPU.
    #[default]
    Auto,
    /// The quantized CPU decoder ([`QuantLlama`]), whatever the device.
    Quantized,
    /// The Burn decoder ([`Llama`]) on the device.
    Burn,
}

impl DecoderChoice {
    /// The names [`FromStr`] accepts.
    pub const NAMES: [&'static str; 3] = ["auto", "quantized", "burn"];

    /// Whether generation runs on the quantized CPU decoder on `device`.
    pub fn quantized_on(self, device: &SelectedDevice) -> bool {
        match self {
            Self::Auto => device.adapter.is_none(),
            Self::Quantized => true,
            Self::Burn => false,
        }
    }
}

impl fmt::Display for DecoderChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Quantized => "quantized",
            Self::Burn => "burn",
        })
    }
}

impl FromStr for DecoderChoice {
    type Err = String;

    /// `auto`, `quantized` (or `quantized-cpu`) or `burn`, any case; empty is `auto` (an empty
    /// `GLEANER_DECODER` always meant the default).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Self::Auto),
            "quantized" | "quantized-cpu" => Ok(Self::Quantized),
            "burn" => Ok(Self::Burn),
            other => Err(format!(
                "unknown decoder {other:?}: expected one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// SmolLM2 ready to generate and verify.
pub struct Generator {
    /// The Burn model on the device.
    model: Arc<Llama>,
    /// What generation runs on: the same model, or the quantized CPU decoder.
    decoder: Arc<dyn Decoder>,
    /// What the teacher-forced check runs on: the quantized CPU decoder on a `cpu` device (the
    /// same f32 weight values as the Burn model, one batched pass through packed GEMMs), the
    /// Burn model elsewhere.
    checker: Arc<dyn Decoder>,
    quantized: bool,
    tokenizer: Tokenizer,
    device: SelectedDevice,
    weights_sha256: String,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("backend", &self.device.backend)
            .field("decoder", &self.decoder())
            .field("weights_sha256", &self.weights_sha256)
            .finish_non_exhaustive()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Data(format!("tokenizer: {e}"))
}

impl Generator {
    /// [`Generator::load_with`] with [`DecoderChoice::Auto`].
    pub fn load(path: &Path, device: SelectedDevice) -> Result<Self> {
        Self::load_with(path, device, DecoderChoice::Auto)
    }

    /// Loads the GGUF at `path` on `device`; a missing file is an error naming `scripts/setup`.
    /// `choice` picks what generates; verification runs the quantized CPU decoder on a `cpu`
    /// device and the Burn model on any other.
    pub fn load_with(path: &Path, device: SelectedDevice, choice: DecoderChoice) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::MissingModel {
                path: path.to_path_buf(),
            });
        }
        // One read of the file serves the hash and both decoders.
        let g = Gguf::open(path)?;
        let weights_sha256 = g.sha256();
        let (model, tokenizer) = Llama::from_gguf(&g, &device.device)?;
        let model = Arc::new(model.into_precision(device.precision.dtype()));
        let quantized = choice.quantized_on(&device);
        let q: Option<Arc<dyn Decoder>> = if quantized || device.native_cpu() {
            Some(Arc::new(QuantLlama::from_gguf(&g, model.config())?))
        } else {
            None
        };
        let burn: Arc<dyn Decoder> = model.clone();
        let decoder = match &q {
            Some(q) if quantized => q.clone(),
            _ => burn.clone(),
        };
        let checker = match &q {
            Some(q) if device.native_cpu() => q.clone(),
            _ => burn,
        };
        Ok(Self {
            model,
            decoder,
            checker,
            quantized,
            tokenizer,
            device,
            weights_sha256,
        })
    }

    /// What generation runs on: `quantized-cpu`, or the Burn backend's name.
    pub fn decoder(&self) -> &'static str {
        if self.quantized {
            "quantized-cpu"
        } else {
            self.device.backend
        }
    }

    /// The device it runs on.
    pub fn device(&self) -> &SelectedDevice {
        &self.device
    }

    /// sha256 of the GGUF file (lowercase hex): the model hash of generate tasks.
    pub fn weights_sha256(&self) -> &str {
        &self.weights_sha256
    }

    /// The Burn model on the device.
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// What the teacher-forced check runs on: `quantized-cpu` or the Burn backend's name.
    pub fn checker(&self) -> &'static str {
        if self.device.native_cpu() {
            "quantized-cpu"
        } else {
            self.device.backend
        }
    }

    /// The prompt's token ids (no special tokens added).
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        let ids = self
            .tokenizer
            .encode(prompt, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec();
        if ids.is_empty() {
            return Err(Error::Input {
                index: 0,
                detail: "the prompt has no tokens".into(),
            });
        }
        Ok(ids)
    }

    /// The text of generated ids: special tokens skipped, the end-of-sequence token dropped.
    pub fn text(&self, ids: &[u32]) -> Result<String> {
        let eos = self.model.config().eos;
        let shown: Vec<u32> = ids.iter().copied().filter(|&i| Some(i) != eos).collect();
        self.tokenizer.decode(&shown, true).map_err(tok_err)
    }

    /// How prompt `prompt` of task `task` is decoded under a job's parameters.
    pub fn decoding(
        &self,
        max_new: u32,
        sampling: Option<SamplingParams>,
        task: u32,
        prompt: u32,
    ) -> Decoding {
        Decoding {
            max_new: max_new as usize,
            eos: self.model.config().eos,
            sampling: sampling.map(|s| Sampling {
                temperature: s.temperature(),
                top_p: s.top_p(),
                seed: prompt_seed(s.seed, task, prompt),
            }),
            margin: GENERATE_MARGIN,
        }
    }

    /// Generates a continuation of `prompt` as `rule` says.
    pub fn generate(&self, prompt: &str, rule: &Decoding) -> Result<Generation> {
        let mut out = self.generate_many(&[prompt], std::slice::from_ref(rule))?;
        out.pop().ok_or_else(|| Error::Data("no generation".into()))
    }

    /// Generates continuations of several prompts in one batch (rules differ only in their
    /// sampling seeds; length and stop come from the first).
    pub fn generate_many(&self, prompts: &[&str], rules: &[Decoding]) -> Result<Vec<Generation>> {
        let Some(first) = rules.first() else {
            return Ok(Vec::new());
        };
        if rules.len() != prompts.len()
            || rules
                .iter()
                .any(|r| r.max_new != first.max_new || r.eos != first.eos)
        {
            return Err(Error::Input {
                index: 0,
                detail: "one rule per prompt, all with the same length and stop".into(),
            });
        }
        let ids = prompts
            .iter()
            .map(|p| self.prompt_ids(p))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let sampling: Vec<_> = rules.iter().map(|r| r.sampling).collect();
        let outs = generate_batch(
            self.decoder.as_ref(),
            &refs,
            first.max_new,
            first.eos,
            &sampling,
        )?;
        outs.into_iter()
            .map(|ids| {
                Ok(Generation {
                    text: self.text(&ids)?,
                    ids,
                })
            })
            .collect()
    }

    /// Checks a claimed generation for `prompt`: its text must be its ids' text, and its ids
    /// must pass [`verify`] on the checker (one teacher-forced pass; see [`Generator::checker`]).
    pub fn verify(
        &self,
        prompt: &str,
        claimed: &Generation,
        rule: &Decoding,
    ) -> Result<TokenCheck> {
        let ids = self.prompt_ids(prompt)?;
        let check = verify(self.checker.as_ref(), &ids, &claimed.ids, rule)?;
        if check.accepted {
            let text = self.text(&claimed.ids)?;
            if text != claimed.text {
                return Ok(TokenCheck {
                    accepted: false,
                    reason: Some("the text is not the decoding of the ids".into()),
                    ..check
                });
            }
        }
        Ok(check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_choice_names_round_trip() {
        for (text, want) in [
            ("auto", DecoderChoice::Auto),
            ("", DecoderChoice::Auto),
            ("quantized", DecoderChoice::Quantized),
            ("quantized-cpu", DecoderChoice::Quantized),
            ("Burn", DecoderChoice::Burn),
        ] {
            assert_eq!(text.parse::<DecoderChoice>(), Ok(want), "{text:?}");
        }
        for name in DecoderChoice::NAMES {
            let c: DecoderChoice = name.parse().unwrap();
            assert_eq!(c.to_string(), name);
        }
        let err = "fast".parse::<DecoderChoice>().unwrap_err();
        assert!(err.contains("auto, quantized, burn"), "{err}");
    }
}
