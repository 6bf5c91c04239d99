//! `scripts/chaos`: the fault and adversary suite (issue 12). Real processes on anvil — the
//! `gleaner` binary as coordinator, verifier and miners, in-process workers where one must
//! cheat — under Byzantine workers, SIGKILLs, fuzzed and replayed requests and slow clients.
//!
//! Prints one table (scenario, expected, observed, pass) and a last line of JSON with the
//! counts; exits 1 when any row fails. `cargo test --test chaos -- FILTER` runs the scenarios
//! whose name contains FILTER. A harness of its own (`harness = false`): `cargo test` runs it
//! like any other test target.

#[path = "../e2e/cheats.rs"]
#[allow(dead_code)]
mod cheats;
#[path = "../common/net.rs"]
mod net;

mod byzantine;
mod faults;
mod http;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::ProviderBuilder;
use gleaner_protocol::bindings::{JobMarket, WorkerRegistry};

/// One line of the table.
pub(crate) struct Row {
    scenario: String,
    expected: String,
    observed: String,
    pass: bool,
}

/// What a scenario found: its rows and the counts it adds to the JSON line.
#[derive(Default)]
pub(crate) struct Found {
    rows: Vec<Row>,
    counts: BTreeMap<&'static str, u64>,
}

impl Found {
    /// A row: `pass` decides it; `observed` says what happened.
    pub(crate) fn row(
        &mut self,
        scenario: impl Into<String>,
        expected: impl Into<String>,
        observed: impl Into<String>,
        pass: bool,
    ) {
        self.rows.push(Row {
            scenario: scenario.into(),
            expected: expected.into(),
            observed: observed.into(),
            pass,
        });
    }

    /// Adds `n` to count `name`.
    pub(crate) fn add(&mut self, name: &'static str, n: u64) {
        *self.counts.entry(name).or_default() += n;
    }
}

type Scenario = fn() -> Pin<Box<dyn Future<Output = Found> + Send>>;

/// Every scenario, by name, with its time limit.
fn scenarios() -> Vec<(&'static str, Duration, Scenario)> {
    vec![
        ("replay", Duration::from_secs(120), || {
            Box::pin(http::replay_across_domains())
        }),
        ("fuzz", Duration::from_secs(240), || Box::pin(http::fuzz())),
        ("slow", Duration::from_secs(120), || {
            Box::pin(http::slow_clients())
        }),
        ("byzantine-embed", Duration::from_secs(600), || {
            Box::pin(byzantine::embed())
        }),
        ("byzantine-generate", Duration::from_secs(400), || {
            Box::pin(byzantine::generate())
        }),
        ("miners-killed", Duration::from_secs(300), || {
            Box::pin(faults::miners_killed())
        }),
        (
            "coordinator-killed-sqlite",
            Duration::from_secs(240),
            || Box::pin(faults::coordinator_killed(false)),
        ),
        (
            "coordinator-killed-postgres",
            Duration::from_secs(240),
            || Box::pin(faults::coordinator_killed(true)),
        ),
        ("reorg", Duration::from_secs(300), || {
            Box::pin(faults::reorg())
        }),
        (
            "coordinators-shared-postgres",
            Duration::from_secs(300),
            || Box::pin(faults::shared_database()),
        ),
        ("verifier-killed", Duration::from_secs(240), || {
            Box::pin(faults::verifier_killed())
        }),
    ]
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    for (name, limit, run) in scenarios() {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        eprintln!("chaos: {name} ...");
        let t0 = Instant::now();
        let outcome =
            rt.block_on(async move { tokio::time::timeout(limit, tokio::spawn(run())).await });
        match outcome {
            Ok(Ok(found)) => {
                rows.extend(found.rows);
                for (k, v) in found.counts {
                    *counts.entry(k).or_default() += v;
                }
            }
            Ok(Err(e)) => rows.push(Row {
                scenario: name.into(),
                expected: "runs to the end".into(),
                observed: format!("panicked: {}", panic_text(e)),
                pass: false,
            }),
            Err(_) => rows.push(Row {
                scenario: name.into(),
                expected: format!("done within {} s", limit.as_secs()),
                observed: "timed out".into(),
                pass: false,
            }),
        }
        eprintln!("chaos: {name} took {:.0} s", t0.elapsed().as_secs_f64());
    }
    print_table(&rows);
    let failed = rows.iter().filter(|r| !r.pass).count();
    let mut json = serde_json::Map::new();
    json.insert("rows".into(), rows.len().into());
    json.insert("passed".into(), (rows.len() - failed).into());
    json.insert("failed".into(), failed.into());
    json.insert("seconds".into(), started.elapsed().as_secs().into());
    for (k, v) in counts {
        json.insert(k.into(), v.into());
    }
    println!("{}", serde_json::Value::Object(json));
    println!(
        "chaos result: {}. {} passed; {failed} failed; finished in {:.1}s",
        if failed == 0 { "ok" } else { "FAILED" },
        rows.len() - failed,
        started.elapsed().as_secs_f64()
    );
    std::process::exit(i32::from(failed > 0));
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "(no message)".into())
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect(),
        Err(e) => e.to_string(),
    }
}

fn print_table(rows: &[Row]) {
    let w = |f: fn(&Row) -> &str, min: usize| {
        rows.iter().map(|r| f(r).len()).max().unwrap_or(0).max(min)
    };
    let (a, b, c) = (
        w(|r| &r.scenario, 8),
        w(|r| &r.expected, 8),
        w(|r| &r.observed, 8),
    );
    println!(
        "\n| {:a$} | {:b$} | {:c$} | pass |",
        "scenario", "expected", "observed"
    );
    println!(
        "|{}|{}|{}|------|",
        "-".repeat(a + 2),
        "-".repeat(b + 2),
        "-".repeat(c + 2)
    );
    for r in rows {
        println!(
            "| {:a$} | {:b$} | {:c$} | {} |",
            r.scenario,
            r.expected,
            r.observed,
            if r.pass { "yes " } else { "NO  " }
        );
    }
}

/// Chain facts about one job: how many times it was settled, and who was slashed how often.
pub(crate) struct ChainFacts {
    pub(crate) settled: usize,
    pub(crate) slashes: BTreeMap<Address, usize>,
}

pub(crate) async fn chain_facts(net: &net::Net, job: U256) -> ChainFacts {
    let p = ProviderBuilder::new().connect_http(net.chain.anvil.endpoint_url());
    let settled = JobMarket::new(net.d.market, &p)
        .JobSettled_filter()
        .topic1(job)
        .from_block(0)
        .query()
        .await
        .expect("JobSettled logs")
        .len();
    let mut slashes = BTreeMap::new();
    for (ev, _) in WorkerRegistry::new(net.d.registry, &p)
        .Slashed_filter()
        .from_block(0)
        .query()
        .await
        .expect("Slashed logs")
    {
        if ev.jobId == job {
            *slashes.entry(ev.worker).or_default() += 1;
        }
    }
    ChainFacts { settled, slashes }
}
