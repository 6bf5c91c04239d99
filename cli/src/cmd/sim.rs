//! `gleaner sim`: the economic simulator of adaptive replication (gleaner_verifier::sim).

use clap::Args;
use gleaner_protocol::replication::{self, SpotChecks};
use gleaner_verifier::sim::{SimConfig, Strategy, StrategyRow, simulate};

/// Options of `gleaner sim` (its help text is on the `Sim` command in `lib.rs`).
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Jobs per strategy.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub jobs: u32,
    /// Tasks per job.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub tasks: u32,
    /// Honest workers besides the strategic one(s).
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(2..=10_000))]
    pub honest: u32,
    /// Replicas a checked task is computed (and the escrow covers).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..=16))]
    pub redundancy: u16,
    /// Share of a trusted worker's tasks checked anyway (0-1).
    #[arg(long, default_value_t = 0.05)]
    pub spot_check: f64,
    /// Checked-and-agreed results before a worker is trusted.
    #[arg(long, default_value_t = replication::DEFAULT_TRUST_AFTER, value_parser = clap::value_parser!(u32).range(1..))]
    pub trust_after: u32,
    /// Replicate every task --redundancy times instead (no spot checks).
    #[arg(long)]
    pub full: bool,
    /// What computing a replica costs its worker, as a share of what it pays (0-1).
    #[arg(long, default_value_t = 0.8)]
    pub cost: f64,
    /// Slash per caught worker and job, in replica prices (default: the verifier's rule for a
    /// job with spot checks, just above one price / q, which makes faking a loss for any cost).
    #[arg(long)]
    pub slash: Option<f64>,
    /// Rows (inputs) per task; the verifier's part check recomputes one of them per output.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rows: u32,
    /// Model a verifier without part checks (`gleaner verifier run --no-part-checks`, or a kind
    /// without one): fakes are found only by comparing replicas.
    #[arg(long)]
    pub no_part_checks: bool,
    /// Seed of the simulation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object per strategy instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Base units of one replica's price in the simulation.
const PRICE: u128 = 1_000_000;

pub(crate) fn run(a: SimArgs) -> anyhow::Result<()> {
    if !(a.spot_check > 0.0 && a.spot_check <= 1.0) {
        anyhow::bail!("--spot-check must be in (0, 1], e.g. 0.05");
    }
    if !(a.cost >= 0.0 && a.cost <= 1.0) {
        anyhow::bail!("--cost must be in [0, 1]: a worker does not work at a loss");
    }
    let spot = SpotChecks {
        check_ppm: (a.spot_check * 1e6).round().max(1.0) as u32,
        trust_after: a.trust_after,
    };
    let cost = (a.cost * PRICE as f64).round() as u128;
    let slash = match a.slash {
        Some(s) if s >= 0.0 && s.is_finite() => (s * PRICE as f64).round() as u128,
        Some(_) => anyhow::bail!("--slash must be a non-negative number of replica prices"),
        None => replication::min_slash(PRICE, spot.check_ppm)?,
    };
    let config = SimConfig {
        jobs: a.jobs,
        tasks: a.tasks,
        honest: a.honest,
        redundancy: a.redundancy,
        spot: (!a.full).then_some(spot),
        price: PRICE,
        cost,
        slash,
        seed: a.seed,
        rows: a.rows,
        part_checks: !a.no_part_checks,
        ..SimConfig::default()
    };
    let started = std::time::Instant::now();
    let rows = simulate(&config, &Strategy::all())?;
    if a.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    print_table(&config, &rows);
    eprintln!(
        "{} strategies x {} jobs x {} tasks in {:.1} s",
        rows.len(),
        a.jobs,
        a.tasks,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_table(c: &SimConfig, rows: &[StrategyRow]) {
    match &c.spot {
        Some(s) => println!(
            "spot checks {:.2}% of a trusted worker's tasks, trust after {} checked results, redundancy {}",
            s.q() * 100.0,
            s.trust_after,
            c.redundancy
        ),
        None => println!("full replication: every task {} times", c.redundancy),
    }
    if c.part_checks {
        println!(
            "part checks: the verifier recomputes 1 of {} rows of every output (a whole fake is always caught, one faked row with p = 1/{})",
            c.rows, c.rows
        );
    } else {
        println!("no part checks: fakes are found only by comparing replicas");
    }
    println!(
        "{} honest workers; a replica costs {:.2} of its price; slash {:.1} prices per caught worker and job; {} jobs of {} tasks",
        c.honest,
        c.cost as f64 / c.price as f64,
        c.slash as f64 / c.price as f64,
        c.jobs,
        c.tasks
    );
    println!(
        "{:<24} {:>12} {:>18} {:>10} {:>13} {:>9} {:>9} {:>10} {:>8}",
        "strategy",
        "profit/task",
        "vs honest (±se)",
        "P(fake)",
        "fakes acc/all",
        "overhead",
        "slash/job",
        "settle",
        "(full)"
    );
    for r in rows {
        println!(
            "{:<24} {:>12.4} {:>18} {:>10.2e} {:>13} {:>8.3}x {:>9.2} {:>10.0} {:>8.0}",
            r.strategy,
            r.profit_per_task,
            format!("{:+.4} ±{:.4}", r.profit_per_task_vs_honest, r.stderr),
            r.p_fake_accepted_per_job,
            format!("{}/{}", r.fakes_accepted, r.fakes),
            r.overhead,
            r.slashes_per_job,
            r.settle_time,
            r.full_replication_time,
        );
    }
    println!(
        "profit/task: the strategic worker's (payouts - compute - slashes) per replica leased, in replica prices; \
         P(fake): probability a job accepts a fake; settle: replica-times to settle a job (full replication beside it)"
    );
}
