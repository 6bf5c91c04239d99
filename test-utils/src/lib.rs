//! Test fixtures shared by every crate's chain tests: [`DevChain`] starts anvil, deploys the
//! contracts and hands out keys; [`e18`] writes whole tokens in base units; [`Postgres`] runs a
//! throwaway PostgreSQL.
//!
//! A dev-dependency only: no production crate depends on it, so it changes no feature of the
//! crates it builds on (nothing is compiled twice for tests).
//!
//! anvil comes from `scripts/setup` (npm `@foundry-rs/anvil`) or `GLEANER_ANVIL`; a missing one
//! fails with the command that installs it.

mod pg;

use std::path::{Path, PathBuf};

use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use gleaner_protocol::bindings::{GleanerToken, confirm};
use gleaner_protocol::devnet::{DeployParams, Deployment, deploy, fund_and_stake};

pub use pg::Postgres;

/// The anvil binary: `$GLEANER_ANVIL`, else `node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil`
/// under the first ancestor of `start` that has one, else `anvil` on the `PATH`; panics with the
/// command that installs it ([`gleaner_protocol::devnet::find_anvil`]).
pub fn find_anvil(start: &Path) -> PathBuf {
    gleaner_protocol::devnet::find_anvil(start)
        .unwrap_or_else(|| panic!("{}", gleaner_protocol::devnet::ANVIL_MISSING))
}

/// Where the tests find the model weights, as `scripts/setup` put them and the `gleaner`
/// binary reads them: `$GLEANER_HOME`, else `$HOME/.cache/gleaner` (library code reads no
/// such variable; tests, like the binary's flags, may).
pub fn gleaner_home() -> PathBuf {
    if let Some(h) = std::env::var_os("GLEANER_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("gleaner")
}

/// `n` whole tokens (18 decimals) in base units.
pub fn e18(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18))
}

/// Who holds the market's roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    /// Key 0 is admin, coordinator and verifier (one process does everything).
    Admin,
    /// Key 0 admin, key 1 coordinator, key 2 verifier, key 3 requester; workers from key 4.
    Separate,
}

/// How to start a [`DevChain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// anvil accounts (funded keys).
    pub accounts: u32,
    /// The registry's minimum stake.
    pub min_stake: U256,
    /// Seconds between an unstake request and its withdrawal.
    pub unbonding_delay: u64,
    /// Who holds the roles.
    pub roles: Roles,
}

impl Default for Options {
    /// 10 accounts, a minimum stake of 100 tokens, 60 s unbonding, every role on key 0.
    fn default() -> Self {
        Self {
            accounts: 10,
            min_stake: e18(100),
            unbonding_delay: 60,
            roles: Roles::Admin,
        }
    }
}

/// anvil with the contracts deployed; dropping it stops anvil.
pub struct DevChain {
    /// The node.
    pub anvil: AnvilInstance,
    /// The contracts.
    pub d: Deployment,
    /// anvil's funded keys, in order.
    pub keys: Vec<PrivateKeySigner>,
    /// How it was started.
    pub options: Options,
}

impl std::fmt::Debug for DevChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevChain")
            .field("endpoint", &self.anvil.endpoint())
            .field("market", &self.d.market)
            .finish_non_exhaustive()
    }
}

impl DevChain {
    /// Starts anvil (found from this crate's checkout) and deploys the contracts.
    pub async fn start(options: Options) -> Self {
        let bin = find_anvil(Path::new(env!("CARGO_MANIFEST_DIR")));
        let anvil = Anvil::at(bin)
            .arg("--accounts")
            .arg(options.accounts.to_string())
            .try_spawn()
            .expect("anvil starts");
        let keys: Vec<PrivateKeySigner> = anvil.keys().iter().map(|k| k.clone().into()).collect();
        let admin = keys[0].address();
        let (coordinator, verifier) = match options.roles {
            Roles::Admin => (admin, admin),
            Roles::Separate => (keys[1].address(), keys[2].address()),
        };
        let provider = ProviderBuilder::new()
            .wallet(keys[0].clone())
            .connect_http(anvil.endpoint_url());
        let d = deploy(
            &provider,
            &DeployParams {
                admin,
                coordinator,
                verifier,
                min_stake: options.min_stake,
                unbonding_delay: options.unbonding_delay,
            },
        )
        .await
        .expect("the contracts deploy (run scripts/build-contracts if the artifacts are stale)");
        Self {
            anvil,
            d,
            keys,
            options,
        }
    }

    /// Key 0: deployer and admin.
    pub fn admin(&self) -> &PrivateKeySigner {
        &self.keys[0]
    }

    /// A provider that signs with `key`.
    pub fn provider(&self, key: &PrivateKeySigner) -> DynProvider {
        ProviderBuilder::new()
            .wallet(key.clone())
            .connect_http(self.anvil.endpoint_url())
            .erased()
    }

    /// Mints `amount` test tokens to `to` (the token's dev faucet).
    pub async fn faucet(&self, to: Address, amount: U256) {
        let p = self.provider(self.admin());
        let token = GleanerToken::new(self.d.token, &p);
        confirm("faucet", token.faucet(to, amount).send().await)
            .await
            .expect("faucet");
    }

    /// Each of `workers` gets `funds` tokens and stakes `stake` of them.
    pub async fn stake(&self, workers: &[PrivateKeySigner], funds: U256, stake: U256) {
        for w in workers {
            fund_and_stake(self.anvil.endpoint().as_str(), &self.d, w, funds, stake)
                .await
                .expect("fund and stake");
        }
    }
}
