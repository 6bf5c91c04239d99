//! `gleaner wallet`: keys and balances of requesters and workers.

use std::path::PathBuf;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use gleaner_requester::wallet;

use crate::common::{
    ChainArgs, KeyArgs, format_amount, parse_amount, password_from, provider, runtime,
};

/// Keys and money.
///
/// Keys live in encrypted JSON keystores (scrypt; the format of geth and `cast wallet`):
/// never a plaintext key on disk. Passwords come from a prompt, or for scripts from
/// --password-file / GLEANER_PASSWORD_FILE.
///
/// Examples:
///   gleaner wallet new --keystore ~/.gleaner/requester.json
///   gleaner wallet address --keystore ~/.gleaner/requester.json
///   gleaner wallet balance --keystore ~/.gleaner/requester.json --market 0x...
///   gleaner wallet faucet --amount 1000 --keystore ... --market 0x...   (dev chains only)
///   gleaner wallet withdraw --keystore ... --market 0x...
#[derive(Debug, Subcommand)]
#[command(verbatim_doc_comment)]
pub enum WalletCommand {
    /// Create a new key in an encrypted keystore file.
    New(NewArgs),
    /// Encrypt an existing private key (read from a file or a prompt) into a keystore.
    Import(ImportArgs),
    /// Print the keystore's address.
    Address(KeyArgs),
    /// Show ETH, token, stake and withdrawable balances.
    Balance(ChainKey),
    /// Mint test tokens (chain id 31337 only).
    Faucet(FaucetArgs),
    /// Withdraw earnings and refunds credited by the market.
    Withdraw(ChainKey),
}

/// Options of `wallet new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// Keystore file to create (refuses to overwrite).
    #[arg(long, env = "GLEANER_KEYSTORE")]
    pub keystore: PathBuf,
    /// File whose first line is the new password.
    #[arg(long, env = "GLEANER_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// The password itself (prefer --password-file or the prompt).
    #[arg(
        long = "unsafe-password",
        env = "GLEANER_PASSWORD",
        hide_env_values = true
    )]
    pub unsafe_password: Option<String>,
}

/// Options of `wallet import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    new: NewArgs,
    /// File holding the hex private key (else a prompt). Delete it afterwards.
    #[arg(long)]
    pub private_key_file: Option<PathBuf>,
}

/// A chain and a key.
#[derive(Debug, Args)]
pub struct ChainKey {
    #[command(flatten)]
    chain: ChainArgs,
    #[command(flatten)]
    key: KeyArgs,
}

/// Options of `wallet faucet`.
#[derive(Debug, Args)]
pub struct FaucetArgs {
    #[command(flatten)]
    ck: ChainKey,
    /// Tokens to mint (whole tokens, e.g. 1000).
    #[arg(long, default_value = "1000")]
    pub amount: String,
    /// Recipient (default: the key's address).
    #[arg(long)]
    pub to: Option<Address>,
}

pub(crate) fn run(cmd: WalletCommand) -> anyhow::Result<()> {
    match cmd {
        WalletCommand::New(a) => {
            let signer = PrivateKeySigner::random();
            write_keystore(&a, signer.to_bytes().as_slice())?;
            println!("{}", signer.address());
            Ok(())
        }
        WalletCommand::Import(a) => {
            let hex_key = match &a.private_key_file {
                Some(f) => std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?,
                None => rpassword::prompt_password("Private key (hex): ")?,
            };
            let bytes = hex::decode(hex_key.trim().trim_start_matches("0x"))
                .context("private key is not hex")?;
            let signer = PrivateKeySigner::from_slice(&bytes).context("not a secp256k1 key")?;
            write_keystore(&a.new, &bytes)?;
            println!("{}", signer.address());
            Ok(())
        }
        WalletCommand::Address(key) => {
            println!("{}", key.signer()?.address());
            Ok(())
        }
        WalletCommand::Balance(ck) => runtime()?.block_on(balance(ck)),
        WalletCommand::Faucet(a) => runtime()?.block_on(faucet(a)),
        WalletCommand::Withdraw(ck) => runtime()?.block_on(withdraw(ck)),
    }
}

fn write_keystore(a: &NewArgs, secret: &[u8]) -> anyhow::Result<()> {
    if a.keystore.exists() {
        bail!(
            "{} exists; refusing to overwrite a keystore",
            a.keystore.display()
        );
    }
    let pw = match (&a.password_file, &a.unsafe_password) {
        (None, None) => {
            let p1 = rpassword::prompt_password("New keystore password: ")?;
            let p2 = rpassword::prompt_password("Repeat password: ")?;
            if p1 != p2 {
                bail!("passwords differ");
            }
            p1
        }
        (f, v) => password_from(f.as_deref(), v.as_deref(), "")?,
    };
    if pw.is_empty() {
        bail!("refusing an empty keystore password");
    }
    let dir = a
        .keystore
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = a
        .keystore
        .file_name()
        .and_then(|n| n.to_str())
        .context("keystore needs a file name")?;
    alloy::signers::local::LocalSigner::encrypt_keystore(
        dir,
        &mut rand08::thread_rng(),
        secret,
        pw,
        Some(name),
    )
    .context("cannot write keystore")?;
    eprintln!("wrote {}", a.keystore.display());
    Ok(())
}

async fn balance(ck: ChainKey) -> anyhow::Result<()> {
    let signer = ck.key.signer()?;
    let me = signer.address();
    let p = provider(&ck.chain, signer)?;
    let b = wallet::balances(&p, ck.chain.market, me).await?;
    println!("address       {me}");
    println!("eth           {}", format_amount(b.eth));
    println!("tokens        {}", format_amount(b.tokens));
    println!("staked        {}", format_amount(b.staked));
    println!("unbonding     {}", format_amount(b.unbonding));
    println!("withdrawable  {}", format_amount(b.withdrawable));
    Ok(())
}

async fn faucet(a: FaucetArgs) -> anyhow::Result<()> {
    let signer = a.ck.key.signer()?;
    let to = a.to.unwrap_or(signer.address());
    let amount = parse_amount(&a.amount)?;
    let p = provider(&a.ck.chain, signer)?;
    wallet::faucet(&p, a.ck.chain.market, to, amount).await?;
    println!("minted {} to {to}", format_amount(amount));
    Ok(())
}

async fn withdraw(ck: ChainKey) -> anyhow::Result<()> {
    let signer = ck.key.signer()?;
    let me = signer.address();
    let p = provider(&ck.chain, signer)?;
    let due = wallet::withdraw(&p, ck.chain.market, me).await?;
    if due.is_zero() {
        println!("nothing to withdraw");
    } else {
        println!("withdrew {}", format_amount(due));
    }
    Ok(())
}
