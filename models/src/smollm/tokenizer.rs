//! SmolLM2's tokenizer, built from the GGUF's metadata, and its chat template.

use tokenizers::Tokenizer;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;

use super::bad;
use crate::gguf::{Gguf, Value};
use crate::{Error, Result};

/// Builds the byte-level BPE tokenizer from `tokenizer.ggml.tokens` and `merges`, with digits
/// split one by one (the `smollm` pre-tokenizer).
pub fn tokenizer_from_gguf(g: &Gguf) -> Result<Tokenizer> {
    let strings = |key: &str| -> Result<Vec<String>> {
        match g.get(key) {
            Some(Value::Array(v)) => v
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad(format!("{key}: not strings")))
                })
                .collect(),
            _ => Err(bad(format!("GGUF has no {key}"))),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| bad(format!("merge {m:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    // Control tokens (type 3: <|im_start|>, <|endoftext|>, ...) are matched whole, never split.
    let control: Vec<String> = match g.get("tokenizer.ggml.token_type") {
        Some(Value::Array(types)) => types
            .iter()
            .zip(&tokens)
            .filter(|(t, _)| t.as_u64() == Some(3))
            .map(|(_, tok)| tok.clone())
            .collect(),
        _ => Vec::new(),
    };
    let vocab: Vocab = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tok.with_decoder(Some(ByteLevel::default()));
    let special: Vec<tokenizers::AddedToken> = control
        .into_iter()
        .map(|t| tokenizers::AddedToken::from(t, true))
        .collect();
    tok.add_special_tokens(special)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    Ok(tok)
}

/// SmolLM2's chat template for one user turn, ready for the assistant's reply.
pub fn chat_prompt(user: &str) -> String {
    format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}
