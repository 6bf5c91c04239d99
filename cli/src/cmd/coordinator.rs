//! `gleaner coordinator`.

use clap::Subcommand;

/// Subcommands of `gleaner coordinator`.
#[derive(Debug, Subcommand)]
pub enum CoordinatorCommand {
    /// Run the coordinator service (not implemented yet).
    Run,
}

pub(crate) fn run(cmd: CoordinatorCommand) -> anyhow::Result<()> {
    match cmd {
        CoordinatorCommand::Run => anyhow::bail!("gleaner coordinator run is not implemented yet"),
    }
}
