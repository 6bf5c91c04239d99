//! Crashes: miners, the coordinator (SQLite and PostgreSQL) and the verifier SIGKILLed mid-job.
//! Nothing may be lost, nothing paid twice, nothing paid for work that never arrived.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::{Provider, ProviderBuilder};
use gleaner_client::Client;
use gleaner_protocol::api::JobStatus;

use crate::net::{Net, Service, paid, run_worker};
use crate::{Found, chain_facts};

async fn status(net: &Net, job: U256) -> Option<JobStatus> {
    Client::new(&net.api).unwrap().job_status(job).await.ok()
}

/// Waits until `job` has at least `n` replicas done.
async fn wait_replicas(net: &Net, job: U256, n: u32, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if status(net, job).await.is_some_and(|s| s.replicas_done >= n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {job}: {n} replicas not done after {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGKILL (std's `Child::kill` on Unix), and reaped.
fn sigkill(s: &mut Service) {
    let _ = s.child.kill();
    let _ = s.child.wait();
}

/// The common end: settled once, every task accepted, the audit OK.
async fn settled_row(found: &mut Found, net: &Net, job: U256, scenario: &str, t0: Instant) {
    let facts = chain_facts(net, job).await;
    let st = status(net, job).await.expect("job status");
    let audit = net.audit(job);
    let lost = st.tasks.saturating_sub(st.tasks_accepted);
    found.add("jobs", 1);
    found.add("tasks", u64::from(st.tasks));
    found.add("tasks_lost", u64::from(lost));
    found.add("paid_twice", facts.settled.saturating_sub(1) as u64);
    found.row(
        scenario,
        "settles once, 0 tasks lost, audit OK",
        format!(
            "settled {}x in {:.0} s, {}/{} tasks accepted, audit {}",
            facts.settled,
            t0.elapsed().as_secs_f64(),
            st.tasks_accepted,
            st.tasks,
            audit["verdict"].as_str().unwrap_or("?")
        ),
        facts.settled == 1 && lost == 0 && audit["verdict"] == "OK",
    );
}

/// Ten `gleaner miner run` processes; three are SIGKILLed while the job runs. Their leases
/// expire and go to the others; the job settles before its deadline; the dead are paid only
/// for what they returned (the audit checks every payout against the report).
pub(crate) async fn miners_killed() -> Found {
    let mut found = Found::default();
    let net = Net::start(10).await;
    let coord = net.coordinator(4).await;
    let _ver = net.verifier(&[]);
    let mut miners: Vec<Service> = (0..10).map(|i| net.miner(i)).collect();
    let t0 = Instant::now();
    let job = net.submit(120, 2, 2);
    wait_replicas(&net, job, 20, 240).await;
    for m in &mut miners[..3] {
        sigkill(m);
    }
    found.add("miners_killed", 3);
    net.wait_state(job, "settled", 240).await;
    let audit = net.audit(job);
    let paid = paid(&audit);
    let dead_paid = net.workers[..3]
        .iter()
        .filter(|w| paid.contains(&w.address()))
        .count();
    settled_row(
        &mut found,
        &net,
        job,
        "3 of 10 miners SIGKILLed mid-job",
        t0,
    )
    .await;
    found.row(
        "  the killed miners",
        "paid only for results they returned",
        format!(
            "{dead_paid} of 3 paid for earlier results; audit {}",
            audit["verdict"]
        ),
        audit["verdict"] == "OK",
    );
    drop(coord);
    found
}

/// The coordinator SIGKILLed with results in flight and restarted on the same database.
pub(crate) async fn coordinator_killed(postgres: bool) -> Found {
    let mut found = Found::default();
    let pg = postgres.then(gleaner_test_utils::Postgres::start);
    let net = Net::start(3).await;
    let db = match &pg {
        Some(pg) => pg.url.clone(),
        None => net.sqlite("coordinator"),
    };
    let mut coord = net.coordinator_on(&db, 10, &[]).await;
    let _ver = net.verifier(&[]);
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut handles = Vec::new();
    for i in 0..3 {
        handles.push(run_worker(net.worker(i, None).await, stop.clone()));
    }
    let t0 = Instant::now();
    let job = net.submit(60, 2, 2);
    wait_replicas(&net, job, 10, 120).await;
    sigkill(&mut coord);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _coord = net.coordinator_on(&db, 10, &[]).await;
    net.wait_state(job, "settled", 200).await;
    stop.notify_waiters();
    for h in handles {
        let _ = h.await;
    }
    let backend = if postgres { "PostgreSQL" } else { "SQLite" };
    settled_row(
        &mut found,
        &net,
        job,
        &format!("coordinator SIGKILLed mid-job, restarted ({backend})"),
        t0,
    )
    .await;
    found
}

async fn rpc<T: serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + Unpin + 'static>(
    p: &impl Provider,
    method: &'static str,
    params: serde_json::Value,
) -> T {
    p.raw_request(method.into(), params)
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"))
}

/// The verifier settles in chunks of one worker; anvil mines only when told, so the verifier is
/// SIGKILLed exactly after its second chunk is sent. A new verifier resumes from the contract's
/// cursor: the job is settled once, every worker paid once (the audit checks the sums).
pub(crate) async fn verifier_killed() -> Found {
    let mut found = Found::default();
    let net = Net::start(4).await;
    let _coord = net.coordinator(30).await;
    let mut ver = net.verifier(&["--settle-chunk", "1"]);
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut handles = Vec::new();
    for i in 0..4 {
        handles.push(run_worker(net.worker(i, None).await, stop.clone()));
    }
    let t0 = Instant::now();
    let job = net.submit(24, 2, 2);
    net.wait_state(job, "posted", 60).await;
    let p = ProviderBuilder::new().connect_http(net.chain.anvil.endpoint_url());
    let () = rpc(&p, "evm_setAutomine", serde_json::json!([false])).await;
    // Mine each transaction the verifier sends: beginSettlement, chunk 1; kill it once chunk 2
    // is waiting in the pool.
    let mut mined = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    while mined < 3 {
        assert!(
            Instant::now() < deadline,
            "the verifier sent {mined} settlement transactions"
        );
        let pool: serde_json::Value = rpc(&p, "txpool_status", serde_json::json!([])).await;
        let pending = u64::from_str_radix(
            pool["pending"]
                .as_str()
                .unwrap_or("0x0")
                .trim_start_matches("0x"),
            16,
        )
        .unwrap_or(0);
        if pending == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        mined += 1;
        if mined == 3 {
            sigkill(&mut ver);
        }
        let _: serde_json::Value = rpc(&p, "evm_mine", serde_json::json!([])).await;
    }
    let () = rpc(&p, "evm_setAutomine", serde_json::json!([true])).await;
    let market = gleaner_protocol::bindings::JobMarket::new(net.d.market, &p);
    let mid = market.getJob(job).call().await.unwrap().status;
    let _ver = net.verifier(&["--settle-chunk", "1"]);
    net.wait_state(job, "settled", 120).await;
    stop.notify_waiters();
    for h in handles {
        let _ = h.await;
    }
    settled_row(
        &mut found,
        &net,
        job,
        "verifier SIGKILLed between settlement chunks",
        t0,
    )
    .await;
    found.row(
        "  the killed verifier",
        "left the job mid-settlement",
        format!(
            "on-chain status {mid} when it died (settling = {})",
            gleaner_protocol::bindings::job_status::SETTLING
        ),
        mid == gleaner_protocol::bindings::job_status::SETTLING,
    );
    found
}

/// The number of the block holding `job`'s last `TasksPosted` (`posted`) or `JobSettled`
/// event, and how many such events the canonical chain has.
async fn event_block(net: &Net, job: U256, posted: bool) -> (Option<u64>, usize) {
    let p = ProviderBuilder::new().connect_http(net.chain.anvil.endpoint_url());
    let market = gleaner_protocol::bindings::JobMarket::new(net.d.market, &p);
    let logs: Vec<alloy::rpc::types::Log> = if posted {
        market
            .TasksPosted_filter()
            .topic1(job)
            .from_block(0)
            .query()
            .await
            .unwrap()
            .into_iter()
            .map(|(_, l)| l)
            .collect()
    } else {
        market
            .JobSettled_filter()
            .topic1(job)
            .from_block(0)
            .query()
            .await
            .unwrap()
            .into_iter()
            .map(|(_, l)| l)
            .collect()
    };
    (logs.last().and_then(|l| l.block_number), logs.len())
}

/// Replaces the blocks from `from` to the head (at least three) with empty ones: the
/// transactions in them are gone.
async fn reorg_from(net: &Net, from: u64) -> u64 {
    let p = ProviderBuilder::new().connect_http(net.chain.anvil.endpoint_url());
    while p.get_block_number().await.unwrap() < from + 2 {
        let _: serde_json::Value = rpc(&p, "evm_mine", serde_json::json!([])).await;
    }
    let depth = p.get_block_number().await.unwrap() - from + 1;
    let _: serde_json::Value = rpc(&p, "anvil_reorg", serde_json::json!([depth, []])).await;
    depth
}

async fn chain_status(net: &Net, job: U256) -> u8 {
    let p = ProviderBuilder::new().connect_http(net.chain.anvil.endpoint_url());
    gleaner_protocol::bindings::JobMarket::new(net.d.market, &p)
        .getJob(job)
        .call()
        .await
        .unwrap()
        .status
}

/// A reorg of depth ≥ 3 removes the block with the coordinator's `postTasks`, and later the
/// one with the verifier's settlement: the coordinator posts again, the verifier settles again,
/// once each on the canonical chain, and the audit is OK.
pub(crate) async fn reorg() -> Found {
    use gleaner_protocol::bindings::job_status;
    let mut found = Found::default();
    let net = Net::start(2).await;
    let (_c, _v) = net.services(30).await;
    let t0 = Instant::now();
    let job = net.submit(8, 2, 2);
    net.wait_state(job, "posted", 60).await;
    let (Some(at), 1) = event_block(&net, job, true).await else {
        panic!("no single TasksPosted event");
    };
    let depth = reorg_from(&net, at).await;
    let after = chain_status(&net, job).await;
    found.add("reorgs", 1);
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut handles = Vec::new();
    for i in 0..2 {
        handles.push(run_worker(net.worker(i, None).await, stop.clone()));
    }
    net.wait_state(job, "settled", 180).await;
    let (_, posts) = event_block(&net, job, true).await;
    found.row(
        format!("reorg of depth {depth} removing postTasks"),
        "posted again, once on the canonical chain",
        format!("status {after} after the reorg; {posts} TasksPosted on chain"),
        after == job_status::OPEN && posts == 1,
    );

    let (Some(at), 1) = event_block(&net, job, false).await else {
        panic!("no single JobSettled event");
    };
    let depth = reorg_from(&net, at).await;
    let after = chain_status(&net, job).await;
    found.add("reorgs", 1);
    let deadline = Instant::now() + Duration::from_secs(120);
    while chain_status(&net, job).await != job_status::SETTLED {
        assert!(
            Instant::now() < deadline,
            "job {job} not settled again after the reorg"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    net.wait_state(job, "settled", 60).await;
    stop.notify_waiters();
    for h in handles {
        let _ = h.await;
    }
    let (_, settles) = event_block(&net, job, false).await;
    found.row(
        format!("reorg of depth {depth} removing the settlement"),
        "settled again, once on the canonical chain",
        format!("status {after} after the reorg; {settles} JobSettled on chain"),
        after == job_status::POSTED && settles == 1,
    );
    settled_row(&mut found, &net, job, "  the job after both reorgs", t0).await;
    found
}

/// Whether the coordinator at `api` says it leads (its `leader` gauge).
async fn leads(api: &str) -> bool {
    match reqwest::get(format!("{api}/metrics")).await {
        Ok(r) => r
            .text()
            .await
            .unwrap_or_default()
            .lines()
            .any(|l| l == "gleaner_coordinator_leader 1"),
        Err(_) => false,
    }
}

/// Two coordinator processes on one PostgreSQL, workers spread over them: one job settles
/// with every replica on a distinct worker, every task decided once, one root posted and one
/// settlement; then the leader is SIGKILLed and the other takes the lead within its lease and
/// posts the next job.
pub(crate) async fn shared_database() -> Found {
    const LEADER_SECS: u64 = 3;
    let mut found = Found::default();
    let pg = gleaner_test_utils::Postgres::start();
    let net = Net::start(4).await;
    let flags = ["--leader-secs", "3", "--poll-ms", "200"];
    // B first, so that it leads; A (the verifier's and the requester's) follows.
    let api_b = crate::net::free_api();
    let mut b = net
        .coordinator_at(&api_b, "coordinator-b", &pg.url, 30, &flags)
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !leads(&api_b).await {
        assert!(Instant::now() < deadline, "coordinator B never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _a = net
        .coordinator_at(&net.api, "coordinator-a", &pg.url, 30, &flags)
        .await;
    let _ver = net.verifier(&[]);
    let device = gleaner_models::select_device(gleaner_models::BackendChoice::Flex).unwrap();
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut handles = Vec::new();
    for i in 0..4 {
        let api = if i < 2 {
            net.api.clone()
        } else {
            api_b.clone()
        };
        let kinds = gleaner_kinds::Registry::standard(
            &gleaner_kinds::ModelSetup::new(&gleaner_models::ModelPaths::new(
                gleaner_test_utils::gleaner_home(),
            )),
            device.clone(),
        );
        handles.push(run_worker(
            net.worker_at(&api, i, kinds, &device).await,
            stop.clone(),
        ));
    }
    let t0 = Instant::now();
    let job = net.submit(40, 2, 2);
    net.wait_state(job, "settled", 180).await;
    let (_, posts) = event_block(&net, job, true).await;
    let report: gleaner_protocol::report::SettlementReport = {
        let client = Client::new(&net.api).unwrap();
        let h = net.report_hash(job, 30).await;
        serde_json::from_slice(&client.blob(h).await.unwrap()).unwrap()
    };
    let twice = report
        .tasks
        .iter()
        .filter(|t| {
            let mut w: Vec<_> = t.replicas.iter().map(|r| r.worker).collect();
            w.sort();
            w.dedup();
            w.len() != t.replicas.len()
        })
        .count();
    let decided = report
        .tasks
        .iter()
        .filter(|t| t.accepted_result.is_some())
        .count();
    let paid = paid(&net.audit(job));
    let on_b = net.workers[2..]
        .iter()
        .filter(|w| paid.contains(&w.address()))
        .count();
    found.add("coordinators", 2);
    found.add("replicas_leased_twice", twice as u64);
    found.row(
        "2 coordinators on one PostgreSQL, workers split",
        "0 leased twice to a worker, each task decided once, 1 root, 1 settlement",
        format!(
            "{twice} leased twice; {decided}/{} decided; {posts} root(s); workers of B paid: {on_b}/2",
            report.tasks.len()
        ),
        twice == 0 && decided == report.tasks.len() && posts == 1 && on_b > 0,
    );
    settled_row(&mut found, &net, job, "  its job", t0).await;

    // The leader dies: A takes over within the lease and posts the next job.
    sigkill(&mut b);
    let killed = Instant::now();
    while !leads(&net.api).await {
        assert!(
            killed.elapsed() < Duration::from_secs(LEADER_SECS + 10),
            "A never took the lead"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let handover = killed.elapsed().as_secs_f64();
    let next = net.submit(8, 2, 2);
    net.wait_state(next, "settled", 120).await;
    stop.notify_waiters();
    for h in handles {
        let _ = h.await;
    }
    let (_, posts) = event_block(&net, next, true).await;
    found.row(
        "  the leader SIGKILLed",
        format!("the other leads within {LEADER_SECS} s + a poll, posts and settles the next job"),
        format!("led after {handover:.1} s; next job: {posts} root, settled"),
        handover < (LEADER_SECS + 2) as f64 && posts == 1,
    );
    settled_row(&mut found, &net, next, "  the next job", killed).await;
    found
}
