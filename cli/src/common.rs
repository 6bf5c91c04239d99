//! Options shared by several subcommands: the chain, the key, and the Gleaner home.

use std::path::PathBuf;
use std::time::Duration;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, bail};
use clap::Args;
use clap::builder::TypedValueParser;

/// Which chain and deployment.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Chain")]
pub struct ChainArgs {
    /// JSON-RPC endpoint of the chain.
    #[arg(
        long = "rpc-url",
        env = "GLEANER_RPC_URL",
        default_value = "http://127.0.0.1:8545"
    )]
    pub rpc_url: String,
    /// JobMarket contract address (the registry and token are read from it).
    #[arg(long, env = "GLEANER_MARKET")]
    pub market: Address,
}

/// Where the model files (and the coordinator's default store) live.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Files")]
pub struct HomeArgs {
    /// Gleaner home: `scripts/setup` puts the weights in its models/ [default: ~/.cache/gleaner].
    /// An empty value means the default.
    #[arg(
        long = "home",
        env = "GLEANER_HOME",
        value_name = "DIR",
        value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from)
    )]
    pub home: Option<PathBuf>,
}

impl HomeArgs {
    /// The home given, else [`gleaner_models::default_home`].
    pub fn home(&self) -> PathBuf {
        self.home
            .clone()
            .filter(|h| !h.as_os_str().is_empty())
            .unwrap_or_else(gleaner_models::default_home)
    }

    /// The model files under the home.
    pub fn models(&self) -> gleaner_models::ModelPaths {
        gleaner_models::ModelPaths::new(self.home())
    }

    /// [`gleaner_models::select_device`], with the GPU's kernel cache (cubecl's autotune
    /// results and compiled kernels) kept in `HOME/gpu-cache`
    /// ([`gleaner_models::select_device_caching`]), so that a miner tunes and compiles each
    /// shape once, from whatever directory it starts. Where the cache is, is logged when the
    /// device is a wgpu one.
    pub fn select_device(
        &self,
        choice: gleaner_models::BackendChoice,
    ) -> anyhow::Result<gleaner_models::SelectedDevice> {
        let device = gleaner_models::select_device_caching(choice, &self.home().join("gpu-cache"))?;
        if let Some(cache) = &device.gpu_cache {
            tracing::info!(target: "gleaner", "{cache}");
        }
        Ok(device)
    }
}

/// Which key signs: an encrypted JSON keystore (as `cast wallet import` and geth write them).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Key")]
pub struct KeyArgs {
    /// Keystore file.
    #[arg(long, env = "GLEANER_KEYSTORE")]
    pub keystore: PathBuf,
    /// File whose first line is the keystore password (for scripts).
    #[arg(long, env = "GLEANER_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// The password itself. Visible to other local users through the process table or
    /// environment: prefer --password-file, or the prompt.
    #[arg(
        long = "unsafe-password",
        env = "GLEANER_PASSWORD",
        hide_env_values = true
    )]
    pub unsafe_password: Option<String>,
}

impl KeyArgs {
    /// The password: the file, the variable, or a prompt on the terminal.
    pub fn password(&self) -> anyhow::Result<String> {
        password_from(
            self.password_file.as_deref(),
            self.unsafe_password.as_deref(),
            "Keystore password: ",
        )
    }

    /// Decrypts the keystore (deliberately slow: scrypt).
    pub fn signer(&self) -> anyhow::Result<PrivateKeySigner> {
        if !self.keystore.is_file() {
            bail!(
                "keystore {} not found; create one with `gleaner wallet new --keystore {}`",
                self.keystore.display(),
                self.keystore.display()
            );
        }
        let pw = self.password()?;
        PrivateKeySigner::decrypt_keystore(&self.keystore, pw).with_context(|| {
            format!(
                "cannot decrypt {} (wrong password?)",
                self.keystore.display()
            )
        })
    }
}

/// Password from a file's first line, a value, or a terminal prompt.
pub fn password_from(
    file: Option<&std::path::Path>,
    value: Option<&str>,
    prompt: &str,
) -> anyhow::Result<String> {
    if let Some(f) = file {
        let s = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read password file {}", f.display()))?;
        return Ok(s.lines().next().unwrap_or("").to_owned());
    }
    if let Some(v) = value {
        return Ok(v.to_owned());
    }
    rpassword::prompt_password(prompt).context(
        "no password: give --password-file FILE (or GLEANER_PASSWORD_FILE), or run in a terminal",
    )
}

/// Reads all of `reader` as one text per line ([`gleaner_kinds::lines::read_lines`]).
pub fn read_all(mut reader: impl std::io::Read) -> anyhow::Result<Vec<String>> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    Ok(gleaner_kinds::lines::read_lines(&bytes)?)
}

/// A multi-threaded tokio runtime for async subcommands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

/// A provider that signs with `signer`, erased to one concrete type.
pub fn provider(
    chain: &ChainArgs,
    signer: PrivateKeySigner,
) -> anyhow::Result<alloy::providers::DynProvider> {
    use alloy::providers::{Provider, ProviderBuilder};
    let url = chain
        .rpc_url
        .parse()
        .with_context(|| format!("bad --rpc-url {}", chain.rpc_url))?;
    Ok(ProviderBuilder::new()
        .wallet(signer)
        .connect_http(url)
        .erased())
}

/// Parses `90s`, `30m`, `2h`, `1d` (or plain seconds).
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.trim().len()),
    );
    let n: u64 = num
        .parse()
        .with_context(|| format!("bad duration {s:?}: use 90s, 30m, 2h or 1d"))?;
    let secs = match unit {
        "" | "s" => n.checked_mul(1),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => bail!("bad duration {s:?}: use 90s, 30m, 2h or 1d"),
    }
    .with_context(|| format!("duration {s:?} is too long"))?;
    if secs == 0 {
        bail!("deadline must be in the future");
    }
    Ok(Duration::from_secs(secs))
}

/// Parses a token amount in whole tokens with up to 18 decimals (`12.5`).
pub fn parse_amount(s: &str) -> anyhow::Result<alloy::primitives::U256> {
    let v = alloy::primitives::utils::parse_units(s, 18)
        .with_context(|| format!("bad amount {s:?}: expected tokens like 12.5"))?;
    Ok(v.into())
}

/// Formats base units as whole tokens.
pub fn format_amount(v: alloy::primitives::U256) -> String {
    alloy::primitives::utils::format_units(v, 18).unwrap_or_else(|_| v.to_string())
}

pub use gleaner_protocol::bindings::confirm;

/// Where the models are and what runs them (the miner and the verifier).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Models")]
pub struct ModelArgs {
    /// Where `scripts/setup` put the weights.
    #[command(flatten)]
    pub home: HomeArgs,
    /// Where the model runs: auto, wgpu, cpu, flex or ndarray.
    #[arg(long, env = "GLEANER_BACKEND", default_value = "auto")]
    pub backend: gleaner_models::BackendChoice,
    /// Float type of the models on wgpu: f32 or f16 (CPU backends refuse f16).
    #[arg(long, env = "GLEANER_PRECISION", default_value = "f32")]
    pub precision: gleaner_models::Precision,
    /// Directory with MiniLM's model.safetensors and tokenizer.json
    /// [default: HOME/models/all-minilm-l6-v2].
    #[arg(long, env = "GLEANER_MINILM_DIR")]
    pub model_dir: Option<PathBuf>,
    /// SmolLM2 GGUF for generate tasks [default: HOME/models/smollm2-135m-instruct/
    /// SmolLM2-135M-Instruct.Q4_1.gguf]. Without the file a miner offers no generate tasks.
    #[arg(long, env = "GLEANER_SMOLLM_GGUF")]
    pub smollm: Option<PathBuf>,
}

impl ModelArgs {
    /// Where the models are, under the home unless a flag says otherwise.
    pub fn setup(&self) -> gleaner_kinds::ModelSetup {
        let mut setup = gleaner_kinds::ModelSetup::new(&self.home.models());
        if let Some(dir) = &self.model_dir {
            setup.minilm = gleaner_models::MiniLmFiles::in_dir(dir);
        }
        if let Some(path) = &self.smollm {
            setup.smollm = path.clone();
        }
        setup
    }

    /// The built-in task kinds on the chosen device (what `auto` picked is logged).
    pub fn kinds(
        &self,
        setup: &gleaner_kinds::ModelSetup,
    ) -> anyhow::Result<(gleaner_kinds::Registry, gleaner_models::SelectedDevice)> {
        let device = self
            .home
            .select_device(self.backend)?
            .with_precision(self.precision)?;
        tracing::info!(target: "gleaner", "{}", device.describe());
        Ok((
            gleaner_kinds::Registry::standard(setup, device.clone()),
            device,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
    }

    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        home: HomeArgs,
    }

    #[test]
    fn home_flag_sets_the_model_paths_and_empty_means_the_default() {
        let t = T::try_parse_from(["t", "--home", "/srv/g"]).unwrap();
        assert_eq!(
            t.home.models().smollm_gguf(),
            PathBuf::from("/srv/g/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        let t = T::try_parse_from(["t", "--home", ""]).unwrap();
        assert_eq!(t.home.home(), gleaner_models::default_home());
    }
}
