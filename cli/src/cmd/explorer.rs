//! `gleaner explorer`.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;

use crate::common::{ChainArgs, runtime};

/// Serve the explorer's web pages apart from the coordinator.
///
/// The same pages the coordinator serves at `/`: the network, each job (task grid, replicas,
/// payouts, refund, transactions, audit) and each worker (stake, earnings, reputation,
/// slashes with evidence), live. Money comes from this explorer's own RPC (chain events and
/// contract reads) and from the published settlement report, checked against its on-chain
/// hash; task progress is the coordinator's view, read from its `/explorer/api` routes.
///
/// Examples:
///   gleaner explorer --coordinator-url http://127.0.0.1:8080 --market 0x5FbD...0aa3
///   gleaner explorer --listen 0.0.0.0:8090 --rpc-url https://rpc.example --market 0x... \
///     --coordinator-url https://coordinator.example
#[derive(Debug, Clone, Args)]
#[command(verbatim_doc_comment)]
pub struct ExplorerArgs {
    #[command(flatten)]
    chain: ChainArgs,
    /// The coordinator whose jobs and reports the pages show.
    #[arg(
        long,
        env = "GLEANER_COORDINATOR_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub coordinator_url: String,
    /// Address to serve the pages on.
    #[arg(
        long,
        env = "GLEANER_EXPLORER_LISTEN",
        default_value = "127.0.0.1:8090"
    )]
    pub listen: SocketAddr,
    /// First block to read events from (the market's deployment block).
    #[arg(long, env = "GLEANER_FROM_BLOCK", default_value_t = 0)]
    pub from_block: u64,
}

pub(crate) fn run(args: ExplorerArgs) -> anyhow::Result<()> {
    let config = gleaner_coordinator::ExplorerConfig {
        rpc_url: args.chain.rpc_url.clone(),
        market: args.chain.market,
        from_block: args.from_block,
        coordinator_url: args.coordinator_url.clone(),
    };
    eprintln!("explorer on http://{}/", args.listen);
    runtime()?
        .block_on(gleaner_coordinator::serve_explorer(
            args.listen,
            config,
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        ))
        .context("explorer")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        args: ExplorerArgs,
    }

    #[test]
    fn defaults() {
        let t = T::try_parse_from([
            "t",
            "--market",
            "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        ])
        .unwrap();
        assert_eq!(t.args.listen.to_string(), "127.0.0.1:8090");
        assert_eq!(t.args.coordinator_url, "http://127.0.0.1:8080");
        assert_eq!(t.args.from_block, 0);
    }
}
