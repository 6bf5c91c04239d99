//! `gleaner audit`: rebuild settlements from chain events and the published report (the audit
//! library does the work; this prints it).

use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, ProviderBuilder};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use gleaner_audit::AuditReport;
use gleaner_client::Client;

use crate::common::{format_amount, runtime};

/// Check settlements independently: anyone can run this.
///
/// `audit job ID` replays the job's chain events, fetches the settlement report the verifier
/// published (by its sha256, from the coordinator), checks the report against the on-chain
/// report hash (keccak256), spec hash and task root, re-verifies every replica signature,
/// recomputes each worker's units with the contribution formula and each payout with the
/// payout formula, and prints OK or every difference (exit status 1 on a mismatch).
///
/// Examples:
///   gleaner audit job 1 --market 0x...
///   gleaner audit events --from-block 0 --market 0x... --json
#[derive(Debug, Subcommand)]
#[command(verbatim_doc_comment)]
pub enum AuditCommand {
    /// Recompute one job's settlement.
    Job(JobAudit),
    /// List the market's and registry's events.
    Events(EventsArgs),
}

/// Read-only chain access.
#[derive(Debug, Clone, Args)]
pub(crate) struct ReadChain {
    /// JSON-RPC endpoint.
    #[arg(
        long = "rpc-url",
        env = "GLEANER_RPC_URL",
        default_value = "http://127.0.0.1:8545"
    )]
    pub rpc_url: String,
    /// JobMarket address.
    #[arg(long, env = "GLEANER_MARKET")]
    pub market: Address,
}

/// Options of `audit job`.
#[derive(Debug, Args)]
pub struct JobAudit {
    /// Job id.
    pub job_id: U256,
    #[command(flatten)]
    chain: ReadChain,
    /// Coordinator that serves the report blob.
    #[arg(
        long,
        env = "GLEANER_COORDINATOR_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub coordinator_url: String,
    /// First block to scan.
    #[arg(long, default_value_t = 0)]
    pub from_block: u64,
    /// Print one JSON object: verdict, differences, each worker's tasks, units and payout.
    #[arg(long)]
    pub json: bool,
}

/// Options of `audit events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    chain: ReadChain,
    /// First block to scan.
    #[arg(long, default_value_t = 0)]
    pub from_block: u64,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    let rt = runtime()?;
    match cmd {
        AuditCommand::Job(a) => {
            let report = rt.block_on(audit_job(&a))?;
            if a.json {
                println!("{}", serde_json::to_string(&json(&report))?);
            } else {
                print_report(&report);
            }
            if !report.ok() {
                bail!(
                    "job {}: {} difference(s)",
                    a.job_id,
                    report.differences.len()
                );
            }
            Ok(())
        }
        AuditCommand::Events(a) => rt.block_on(events(a)),
    }
}

fn read_provider(chain: &ReadChain) -> anyhow::Result<impl Provider> {
    let url = chain.rpc_url.parse().context("bad --rpc-url")?;
    Ok(ProviderBuilder::new().connect_http(url))
}

/// How long `audit job` waits for the coordinator to learn a settled job's report.
const REPORT_WAIT_SECS: u32 = 60;

async fn audit_job(a: &JobAudit) -> anyhow::Result<AuditReport> {
    let p = read_provider(&a.chain)?;
    let client = Client::new(&a.coordinator_url)?;
    // Right after a settlement the coordinator may not know the report yet (the verifier names
    // it once its settlement and slash transactions are mined): wait for it a little.
    let mut waited = 0;
    let r = loop {
        match gleaner_audit::audit_job(&p, a.chain.market, &client, a.job_id, a.from_block).await {
            Err(gleaner_audit::Error::ReportPending(_)) if waited < REPORT_WAIT_SECS => {
                if waited == 0 {
                    eprintln!(
                        "job {}: settled, waiting for the coordinator to name the report",
                        a.job_id
                    );
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                waited += 1;
            }
            r => break r?,
        }
    };
    eprintln!(
        "job {}: {} tasks, {} accepted, {} workers paid, {} slashed, status {}; gas {} in {} \
         transactions ({} per task)",
        r.job_id,
        r.task_count,
        r.accepted_tasks,
        r.workers.len(),
        r.slashed.len(),
        r.status,
        r.gas_used,
        r.transactions,
        r.gas_per_task()
    );
    Ok(r)
}

/// The `--json` object: verdict, differences, each worker's tasks, units and payout. Every
/// amount is exact: an integer of base units as a decimal string (`payout`), with the same
/// amount in whole tokens beside it (`payout_tokens`); units are decimal strings too.
fn json(r: &AuditReport) -> serde_json::Value {
    let workers: Vec<_> = r
        .workers
        .iter()
        .map(|w| {
            serde_json::json!({
                "worker": w.worker,
                "tasks": w.tasks,
                "units": w.units.to_string(),
                "payout": w.payout.to_string(),
                "payout_tokens": tokens(w.payout),
            })
        })
        .collect();
    serde_json::json!({
        "job_id": r.job_id.to_string(),
        "verdict": if r.ok() { "OK" } else { "MISMATCH" },
        "differences": r.differences.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "difference_kinds": r.differences,
        "workers": workers,
        "pool": r.pool.to_string(),
        "pool_tokens": tokens(r.pool),
        "fee": r.fee.to_string(),
        "fee_tokens": tokens(r.fee),
        "refund": r.refund.to_string(),
        "refund_tokens": tokens(r.refund),
        "slashed": r.slashed,
        "gas_used": r.gas_used,
        "transactions": r.transactions,
        "gas_per_task": r.gas_per_task(),
        "paid_replicas": r.paid_replicas,
    })
}

/// Base units as an exact decimal number of whole tokens (18 decimals), trailing zeros cut:
/// `104523531786980130000` → `104.52353178698013`.
fn tokens(v: U256) -> String {
    let s = format_amount(v);
    match s.split_once('.') {
        Some((whole, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                whole.to_owned()
            } else {
                format!("{whole}.{frac}")
            }
        }
        None => s,
    }
}

fn print_report(r: &AuditReport) {
    for w in &r.workers {
        println!(
            "{}  tasks {:>4}  units {:>12}  payout {}",
            w.worker,
            w.tasks,
            w.units,
            format_amount(w.payout)
        );
    }
    if let Some(n) = r.paid_replicas {
        println!("spot checks: {n} replicas paid for (the rest of the escrow was refunded)");
    }
    println!("refund to requester {}", format_amount(r.refund));
    if r.ok() {
        println!(
            "OK: job {} settlement matches the report and the formulas",
            r.job_id
        );
    }
    for d in &r.differences {
        println!("MISMATCH: {d}");
    }
}

async fn events(a: EventsArgs) -> anyhow::Result<()> {
    let p = read_provider(&a.chain)?;
    for e in gleaner_audit::events(&p, a.chain.market, a.from_block).await? {
        if a.json {
            println!(
                "{}",
                serde_json::json!({"block": e.block, "tx": e.tx, "event": e.event})
            );
        } else {
            println!("{:>8}  {}", e.block, e.event);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gleaner_audit::WorkerLine;

    #[test]
    fn json_amounts_are_exact_decimal_strings_with_tokens_beside() {
        let payout = U256::from(104_523_531_786_980_130_000u128);
        let r = AuditReport {
            job_id: U256::from(7),
            differences: Vec::new(),
            workers: vec![WorkerLine {
                worker: Address::repeat_byte(1),
                tasks: 3,
                units: U256::from(310_630_000u64),
                payout,
            }],
            pool: U256::from(300u64) * U256::from(10u64).pow(U256::from(18)),
            fee: U256::ZERO,
            refund: U256::from(1u64),
            slashed: Vec::new(),
            task_count: 3,
            accepted_tasks: 3,
            status: 4,
            gas_used: 301,
            transactions: 3,
            paid_replicas: None,
        };
        let j = json(&r);
        assert_eq!(j["job_id"], "7");
        assert_eq!(
            (j["gas_used"].as_u64(), j["gas_per_task"].as_u64()),
            (Some(301), Some(101))
        );
        assert_eq!(j["workers"][0]["payout"], "104523531786980130000");
        assert_eq!(j["workers"][0]["payout_tokens"], "104.52353178698013");
        assert_eq!(j["workers"][0]["units"], "310630000");
        assert_eq!(
            (j["pool"].as_str(), j["pool_tokens"].as_str()),
            (Some("300000000000000000000"), Some("300"))
        );
        assert_eq!(
            (j["refund"].as_str(), j["refund_tokens"].as_str()),
            (Some("1"), Some("0.000000000000000001"))
        );
        assert_eq!(j["fee_tokens"], "0");
        // Exactly the chain's integer, whatever its size: no float anywhere.
        let max = AuditReport {
            refund: U256::MAX,
            ..r
        };
        assert_eq!(json(&max)["refund"], U256::MAX.to_string());
    }
}
