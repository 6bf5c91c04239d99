//! The explorer in a real browser: a coordinator on anvil, a job with a cheating worker, and
//! Debian's headless Chromium (`scripts/explorer-browser.mjs`, playwright-core) opening the
//! network page, following the job live to settled, checking the payouts shown equal the
//! chain's, and following the slashed worker to its evidence. Screenshots go to
//! `$CARGO_TARGET_DIR/explorer-screenshots/`. Bad ids in URLs are checked with plain HTTP.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::ProviderBuilder;
use gleaner_kinds::{ModelSetup, TaskKind};
use gleaner_models::BackendChoice;
use gleaner_protocol::bindings::{JobMarket, WorkerRegistry};

use crate::cheats::{Cheat, corrupt_embeddings};
use crate::net::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Where the screenshots go: `$CARGO_TARGET_DIR/explorer-screenshots` (cargo's target dir).
fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap()
                .to_owned()
        },
        PathBuf::from,
    );
    target.join("explorer-screenshots")
}

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Chromium and playwright-core are there, or the test fails with how to get them.
fn browser_prerequisites() {
    assert!(
        std::path::Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: run `sudo apt-get install -y chromium` (scripts/setup does it as root)"
    );
    assert!(
        repo()
            .join("node_modules/playwright-core/package.json")
            .is_file(),
        "node_modules/playwright-core is missing: run `npm ci` in the repository (scripts/setup does)"
    );
}

/// The job's payouts, refund and slashes, read from the chain's events (not from the explorer).
async fn chain_money(net: &Net, job: U256) -> serde_json::Value {
    let p = ProviderBuilder::new().connect_http(net.chain.anvil.endpoint_url());
    let market = JobMarket::new(net.d.market, &p);
    let mut payouts = BTreeMap::new();
    for (ev, _) in market
        .WorkerPaid_filter()
        .topic1(job)
        .from_block(0)
        .query()
        .await
        .unwrap()
    {
        payouts.insert(ev.worker.to_string(), ev.amount.to_string());
    }
    let settled = market
        .JobSettled_filter()
        .topic1(job)
        .from_block(0)
        .query()
        .await
        .unwrap();
    assert_eq!(settled.len(), 1, "one JobSettled");
    let mut slashed = BTreeMap::new();
    for (ev, _) in WorkerRegistry::new(net.d.registry, &p)
        .Slashed_filter()
        .from_block(0)
        .query()
        .await
        .unwrap()
    {
        if ev.jobId == job {
            slashed.insert(ev.worker.to_string(), ev.amount.to_string());
        }
    }
    serde_json::json!({
        "payouts": payouts,
        "refund": settled[0].0.refund.to_string(),
        "slashed": slashed,
    })
}

/// GET `url`: (status, content type, body).
async fn get(url: &str) -> (u16, String, String) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ct, r.text().await.unwrap())
}

/// Unknown jobs, non-numeric and huge ids, malformed addresses: clear HTML 400/404 pages.
async fn bad_urls_get_clear_pages(api: &str) {
    let huge = "9".repeat(100);
    let cases: [(String, u16, &str); 8] = [
        ("/jobs/abc".into(), 400, "is not a job id"),
        ("/jobs/-1".into(), 400, "is not a job id"),
        ("/jobs/1.5".into(), 400, "is not a job id"),
        (format!("/jobs/{huge}"), 400, "larger than any job id"),
        (
            "/jobs/424242".into(),
            404,
            "neither on the chain nor registered",
        ),
        ("/jobs/%FF".into(), 400, "percent-encode"),
        ("/workers/0x1234".into(), 400, "is not a worker address"),
        (
            "/workers/0x00000000000000000000000000000000000000aa".into(),
            404,
            "never staked",
        ),
    ];
    for (path, status, says) in cases {
        let (got, ct, body) = get(&format!("{api}{path}")).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(ct.starts_with("text/html"), "{path}: {ct}");
        assert!(body.contains(says), "{path} does not say {says:?}: {body}");
        assert!(
            !body.contains(&huge[..50]) || body.contains('…'),
            "{path}: the page echoes the whole input"
        );
    }
    // The API keeps its JSON errors.
    let (status, ct, _) = get(&format!("{api}/v1/jobs/abc")).await;
    assert_eq!((status, ct.as_str()), (400, "application/json"));
}

/// A job with a corrupting worker, followed in Chromium from the network page to settlement;
/// the payouts shown equal the chain's, the slashed worker's page shows the evidence, and
/// `gleaner explorer` serves the same pages apart from the coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explorer_follows_a_job_to_settlement_in_chromium() {
    browser_prerequisites();
    let net = Net::start(3).await;
    let (_c, _v) = net.services(60).await;
    bad_urls_get_clear_pages(&net.api).await;

    // The job first, no worker yet: the browser sees it open, then live until settled.
    let job = net.submit(36, 3, 3);
    net.wait_state(job, "posted", 60).await;
    let out = screenshots();
    let _ = std::fs::remove_dir_all(&out);
    let expected = net.dir.path().join("expected.json");
    let mut browser = Command::new("node")
        .current_dir(repo())
        .arg("scripts/explorer-browser.mjs")
        .args(["--url", &net.api, "--job", &job.to_string(), "--out"])
        .arg(&out)
        .arg("--expected")
        .arg(&expected)
        .args(["--timeout-s", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();
    let opened = lines
        .next()
        .expect("the browser script printed nothing")
        .unwrap();
    assert_eq!(opened, format!("opened job {job}"));

    let stop = Arc::new(tokio::sync::Notify::new());
    let cheat = || -> Arc<dyn TaskKind> {
        let device = gleaner_models::select_device(BackendChoice::Flex).unwrap();
        let setup = ModelSetup::new(&gleaner_models::ModelPaths::new(
            gleaner_test_utils::gleaner_home(),
        ));
        Arc::new(Cheat::new(
            gleaner_kinds::EmbedKind::new(setup.minilm, device),
            corrupt_embeddings,
        ))
    };
    let mut handles = Vec::new();
    for (i, cheat) in [(0, None), (1, None), (2, Some(cheat()))] {
        handles.push(run_worker(net.worker(i, cheat).await, stop.clone()));
    }
    net.wait_state(job, "settled", 300).await;
    stop.notify_waiters();
    let money = chain_money(&net, job).await;
    assert_eq!(money["payouts"].as_object().unwrap().len(), 2, "{money}");
    assert_eq!(money["slashed"].as_object().unwrap().len(), 1, "{money}");
    std::fs::write(&expected, money.to_string()).unwrap();

    // The browser's verdict: one JSON line with the screenshots.
    let deadline = Instant::now() + Duration::from_secs(300);
    let summary = lines
        .next()
        .expect("the browser script ended without a summary")
        .unwrap();
    let status = loop {
        if let Some(s) = browser.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the browser script hangs");
        std::thread::sleep(Duration::from_millis(200));
    };
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert!(status.success() && summary["ok"] == true, "{summary}");
    let shots: Vec<&str> = summary["screenshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for name in [
        "1-network.png",
        "4-job-settled.png",
        "5-job-payouts.png",
        "6-worker-slashed.png",
        "7-slash-evidence.png",
        "9-unknown-job.png",
        "10-network-after.png",
    ] {
        assert!(
            shots.iter().any(|s| s.ends_with(name)),
            "no {name}: {summary}"
        );
    }
    for s in &shots {
        eprintln!("screenshot: {s}");
    }

    // `gleaner explorer` serves the same job page from the coordinator's API and its own RPC.
    let listen = free_api();
    let mut c = gleaner();
    net.env(&mut c, "requester");
    let mut standalone = c
        .args(["explorer", "--listen", listen.trim_start_matches("http://")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        if let Ok(r) = reqwest::get(format!("{listen}/jobs/{job}")).await {
            break r.text().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "gleaner explorer did not come up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = standalone.kill();
    let _ = standalone.wait();
    for (worker, amount) in money["payouts"].as_object().unwrap() {
        let row = format!(
            r#"data-worker="{worker}" data-amount="{}""#,
            amount.as_str().unwrap()
        );
        assert!(page.contains(&row), "standalone page lacks {row}");
    }
    assert!(page.contains(r#"data-verdict="OK""#));
    assert!(page.contains(r#"class="cell s-agreed""#), "no task grid");
    let _ = futures_join(handles).await;
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
