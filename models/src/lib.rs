//! Burn models that Gleaner workers run, and what the verifier needs to judge their outputs.
//!
//! - [`BertConfig`] / [`Bert`]: the all-MiniLM-L6-v2 sentence encoder (6-layer BERT, 384 dims,
//!   masked mean pooling, L2 normalisation), loaded from the Hugging Face safetensors checkpoint.
//! - [`Embedder`]: tokenizer + encoder + length-sorted batching, the `embed` task kind.
//! - [`select_device`]: wgpu on a real GPU, else a CPU backend, and why.
//! - [`compare_embeddings`]: the `embed` comparator (row cosine ≥ [`EMBED_MIN_COSINE`]).
//! - [`gguf`]: a GGUF reader (metadata, F32/F16/Q8_0/Q4_1 dequantisation) for the SmolLM2 decoder.
//! - [`smollm`]: SmolLM2-135M-Instruct (Llama) from GGUF with a KV cache; the [`Decoder`]
//!   trait and the one decoding loop (greedy and seeded) both decoders share; the verifier's
//!   teacher-forced check.
//! - [`qcpu`]: SmolLM2 decoding on the CPU from the GGUF's quantized weights (same f32 values,
//!   f32 activations), what CPU workers generate with.
//! - [`Generator`]: SmolLM2 + tokenizer, the `generate` task kind (run and verify one prompt),
//!   generating on the decoder a [`DecoderChoice`] picks.
//! - [`gpt`]: a small byte-level GPT as Burn modules for `train` jobs: loss and gradient of a
//!   batch, SGD, checkpoints.
//! - [`MiniLmFiles`]: where `scripts/setup` put the weights, and their sha256.
//!
//! ```no_run
//! use gleaner_models::{BackendChoice, Embedder, MiniLmFiles, select_device};
//! let device = select_device(BackendChoice::Auto)?;
//! let embedder = Embedder::load(&MiniLmFiles::from_cache(), device)?;
//! let v = embedder.embed(&["This is an example sentence"], 32, |_| {})?;
//! assert_eq!(v.len(), 384);
//! # Ok::<(), gleaner_models::Error>(())
//! ```

mod backend;
mod cache;
mod compare;
pub mod ecpu;
mod embed;
mod error;
mod generate;
pub mod gguf;
pub mod gpt;
mod minilm;
pub mod qcpu;
pub mod smollm;
mod tokenize;

pub use backend::{
    AdapterSummary, BackendChoice, CpuKind, GpuCache, Precision, SelectedDevice, probe_adapters,
    select_device, select_device_caching,
};
/// The old name of [`default_home`], kept for its callers. It no longer reads `GLEANER_HOME`
/// (the CLI does, through `--home`).
pub use cache::default_home as gleaner_home;
pub use cache::{
    MINILM_DIR, MINILM_WEIGHTS_SHA256, MiniLmFiles, ModelPaths, SMOLLM_DIR, SMOLLM_GGUF_SHA256,
    default_home, model_cache, sha256_file, smollm_gguf,
};
pub use compare::{Agreement, EMBED_MIN_COSINE, compare_embeddings, cosine};
pub use embed::{EMBED_DIM, Embedder};
pub use error::{Error, Result};
pub use generate::{DecoderChoice, Generator};
pub use minilm::{Bert, BertConfig};
pub use smollm::{Decoder, Decoding, GENERATE_MARGIN, Llama, LlamaConfig, chat_prompt};
pub use tokenize::{MAX_TOKENS, TextTokenizer};
