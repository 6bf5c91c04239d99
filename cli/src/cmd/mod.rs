//! One module per subcommand.

pub(crate) mod audit;
pub(crate) mod bench;
pub(crate) mod coordinator;
pub(crate) mod devnet;
pub(crate) mod embed;
pub(crate) mod explorer;
pub(crate) mod generate;
pub(crate) mod job;
pub(crate) mod miner;
pub(crate) mod sim;
pub(crate) mod verifier;
pub(crate) mod wallet;

/// `gleaner backends`: what wgpu sees and what `auto` would pick.
pub(crate) fn backends() -> anyhow::Result<()> {
    let adapters = gleaner_models::probe_adapters();
    if adapters.is_empty() {
        println!("no wgpu adapter");
    }
    for a in &adapters {
        println!(
            "wgpu adapter: {a}{}",
            if a.is_gpu { "" } else { " [software]" }
        );
    }
    let chosen = gleaner_models::select_device(gleaner_models::BackendChoice::Auto)?;
    println!("auto: {}", chosen.describe());
    Ok(())
}
