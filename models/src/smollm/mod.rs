//! SmolLM2-135M-Instruct (Llama architecture) from GGUF.
//!
//! - [`config`](LlamaConfig): hyper-parameters, defaults SmolLM2-135M's, read from the GGUF.
//! - [`model`](Llama): the decoder as Burn modules with a KV cache; reference semantics
//!   (weights dequantised to f32, activations in f32).
//! - [`tokenizer`](tokenizer_from_gguf): the byte-level BPE tokenizer from the GGUF's metadata,
//!   and the [`chat_prompt`] template.
//! - [`decode`](Decoder): the [`Decoder`] trait both decoders implement (this one and
//!   [`crate::qcpu::QuantLlama`]), whose provided methods (`generate_batch`, `generate`,
//!   `verify`, ...) run [`generate_batch`], the one decoding loop (batch checks, greedy or
//!   seeded sampling per prompt, stop at the end-of-sequence token), and [`verify()`].
//! - [`verify`](verify()): the verifier's teacher-forced check ([`TokenCheck`],
//!   [`GENERATE_MARGIN`]), on any [`Decoder`].

use crate::Error;

mod config;
mod decode;
mod model;
mod tokenizer;
mod verify;

pub use config::LlamaConfig;
pub use decode::{Decoder, Sampling, Session, generate_batch};
pub(crate) use decode::{check_tops_args, tops_of_rows};
pub use model::{Attention, Block, KvCache, Llama, Mlp};
pub use tokenizer::{chat_prompt, tokenizer_from_gguf};
pub use verify::{Decoding, GENERATE_MARGIN, TokenCheck, verify};

/// A GGUF that does not hold what SmolLM2 needs.
pub(crate) fn bad(msg: impl Into<String>) -> Error {
    Error::Weights {
        path: "gguf".into(),
        detail: msg.into(),
    }
}
