//! Tokenization with Hugging Face `tokenizers` (pure Rust, `fancy-regex`).

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use crate::{Error, Result};

/// all-MiniLM-L6-v2 was trained on sequences of at most 256 tokens; longer inputs are truncated.
pub const MAX_TOKENS: usize = 256;

/// A BERT WordPiece tokenizer with padding off and truncation at [`MAX_TOKENS`].
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json`. Its own padding (to 128) is switched off: batches are padded to
    /// their longest member, and padding never changes a result.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::MissingModel {
                path: path.to_path_buf(),
            });
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| Error::Tokenizer(e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Token ids with `[CLS]` and `[SEP]`, truncated to [`MAX_TOKENS`].
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }
}
