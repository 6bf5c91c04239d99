//! `gleaner verifier`.

use clap::Subcommand;

/// Subcommands of `gleaner verifier`.
#[derive(Debug, Subcommand)]
pub enum VerifierCommand {
    /// Run the verifier service (not implemented yet).
    Run,
}

pub(crate) fn run(cmd: VerifierCommand) -> anyhow::Result<()> {
    match cmd {
        VerifierCommand::Run => anyhow::bail!("gleaner verifier run is not implemented yet"),
    }
}
