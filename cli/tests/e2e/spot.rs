//! Spot checks end to end: a trusted honest worker, a new worker, and a worker that starts
//! cheating once it is trusted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use alloy::primitives::{Address, B256};
use gleaner_client::Client;
use gleaner_kinds::{EmbedKind, ModelSetup, TaskKind};
use gleaner_models::BackendChoice;
use gleaner_protocol::blob::blob_hash;
use gleaner_protocol::report::SettlementReport;

use crate::cheats::{Cheat, corrupt_embeddings};
use crate::net::*;

/// Job 1 (full replication, r = 2, 8 tasks) gives workers 0 and 2 a streak of 8 checked
/// results; worker 2 then lies on everything. Job 2 (40 tasks, r = 2, spot checks at 50%,
/// `--trust-after 8`) runs on workers 0, 2 and a new worker 1. The verifier runs without part
/// checks, so a spot check is what catches worker 2: it is slashed, its provisional results are
/// computed again, no lie is accepted, the requester is refunded the replicas not needed, and
/// the audit recomputes the spot-check selection from chain data and says OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spot_checks_catch_a_cheater_that_earned_trust() {
    let net = Net::start(3).await;
    let _c = net.coordinator(60).await;
    let _v = net.verifier(&["--no-part-checks"]);
    let stop = Arc::new(tokio::sync::Notify::new());
    let honest_runs = 8;
    let (cheat, runs, lies) = liar_after(honest_runs);
    let mut handles = vec![
        run_worker(net.worker(0, None).await, stop.clone()),
        run_worker(net.worker(2, Some(cheat)).await, stop.clone()),
    ];
    // 8 tasks, both replicas on workers 0 and 2: each earns a streak of 8.
    let warm = net.submit(16, 2, 2);
    net.wait_state(warm, "settled", 240).await;
    assert_eq!(runs.load(Ordering::SeqCst), honest_runs);
    assert_eq!(net.audit(warm)["verdict"], "OK");

    handles.push(run_worker(net.worker(1, None).await, stop.clone()));
    let tasks = 40u64;
    let job = net.submit_with(
        2 * tasks as usize,
        2,
        2,
        &["--spot-check", "0.5", "--trust-after", "8"],
    );
    net.wait_state(job, "settled", 300).await;
    stop.notify_waiters();
    for h in handles {
        let _ = h.await;
    }

    let audit = net.audit(job);
    assert_eq!(audit["verdict"], "OK", "{audit}");
    let cheater = net.workers[2].address();
    assert_eq!(slashed(&audit), vec![cheater], "{audit}");
    assert!(!paid(&audit).contains(&cheater), "{audit}");

    let client = Client::new(&net.api).unwrap();
    let sha = net.report_hash(job, 30).await;
    let report = SettlementReport::from_canonical(&client.blob(sha).await.unwrap()).unwrap();
    let spot = report
        .spot_checks
        .expect("the report carries the spot checks");
    assert_eq!((spot.redundancy, spot.policy.trust_after), (2, 8));
    assert_eq!(report.tasks.len() as u64, tasks);
    let lies = lies.lock().unwrap().clone();
    assert!(!lies.is_empty(), "the cheater never lied");
    let mut singles = 0;
    for t in &report.tasks {
        assert!(t.accepted_result.is_some(), "task {} not accepted", t.index);
        let quorum: Vec<&Address> = t
            .replicas
            .iter()
            .filter(|r| r.in_quorum)
            .map(|r| &r.worker)
            .collect();
        // No lie in any accepted quorum.
        for r in t.replicas.iter().filter(|r| r.in_quorum) {
            assert!(
                !lies.contains(&r.result_hash),
                "task {}: a lie was accepted",
                t.index
            );
        }
        if quorum.len() == 1 {
            singles += 1;
            assert!(
                !spot.seed.is_checked(t.task_hash, spot.policy.check_ppm),
                "task {} was drawn for a check but accepted alone",
                t.index
            );
            assert_ne!(*quorum[0], cheater, "task {}", t.index);
        }
    }
    assert!(paid(&audit).contains(&net.workers[1].address()), "{audit}");
    // The explorer's job page shows the policy, the revealed seed and the draw.
    let drawn = report
        .tasks
        .iter()
        .filter(|t| spot.seed.is_checked(t.task_hash, spot.policy.check_ppm))
        .count();
    let page = reqwest::get(format!("{}/jobs/{job}", net.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!(
            "{drawn} of {tasks} tasks drawn for a check; {singles} accepted on a single replica"
        )),
        "the job page does not show the draw ({drawn} drawn, {singles} alone)"
    );
    // The requester paid for the replicas used (the escrow of 90 tokens covers 2 per task) and
    // got the rest back.
    let paid_replicas = audit["paid_replicas"].as_u64().unwrap();
    assert_eq!(paid_replicas, tasks + replicated_tasks(&report), "{audit}");
    assert!(singles > 0 && paid_replicas < 2 * tasks, "{audit}");
    let pool: u128 = audit["pool"].as_str().unwrap().parse().unwrap();
    let refund: u128 = audit["refund"].as_str().unwrap().parse().unwrap();
    let budget = 90 * 10u128.pow(18);
    assert_eq!(
        pool,
        budget * u128::from(paid_replicas) / u128::from(2 * tasks),
        "{audit}"
    );
    assert!(refund >= budget - pool, "{audit}");
    eprintln!(
        "spot checks: {tasks} tasks, {singles} accepted on one replica, {paid_replicas} of {} \
         replicas paid, {} lies all refused, refund {refund} of {budget}",
        2 * tasks,
        lies.len()
    );
}

/// With part checks (the verifier's default) a trusted cheater is caught by a recomputed row,
/// whether or not its task was drawn for a spot check: workers 0 and 2 earn trust in a fully
/// replicated job, then worker 2 lies on every task of a job with rare spot checks (5%). Its
/// lies are all found malformed ("recomputed by the verifier" in the verifier's log), it is
/// slashed once and unpaid, and every accepted result is an honest one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn part_checks_catch_a_trusted_cheater_without_a_second_replica() {
    let net = Net::start(3).await;
    let _c = net.coordinator(60).await;
    let v = net.verifier(&[]);
    let stop = Arc::new(tokio::sync::Notify::new());
    let honest_runs = 8;
    let (cheat, runs, lies) = liar_after(honest_runs);
    let mut handles = vec![
        run_worker(net.worker(0, None).await, stop.clone()),
        run_worker(net.worker(2, Some(cheat)).await, stop.clone()),
    ];
    let warm = net.submit(16, 2, 2);
    net.wait_state(warm, "settled", 240).await;
    assert_eq!(runs.load(Ordering::SeqCst), honest_runs);

    // A third worker, so that a task whose lie was refused still finds two honest replicas.
    handles.push(run_worker(net.worker(1, None).await, stop.clone()));
    let tasks = 20u64;
    let job = net.submit_with(
        2 * tasks as usize,
        2,
        2,
        &["--spot-check", "0.05", "--trust-after", "8"],
    );
    net.wait_state(job, "settled", 300).await;
    stop.notify_waiters();
    for h in handles {
        let _ = h.await;
    }

    let audit = net.audit(job);
    assert_eq!(audit["verdict"], "OK", "{audit}");
    let cheater = net.workers[2].address();
    assert_eq!(slashed(&audit), vec![cheater], "{audit}");
    assert!(!paid(&audit).contains(&cheater), "{audit}");
    let client = Client::new(&net.api).unwrap();
    let sha = net.report_hash(job, 30).await;
    let report = SettlementReport::from_canonical(&client.blob(sha).await.unwrap()).unwrap();
    let lies = lies.lock().unwrap().clone();
    assert!(!lies.is_empty(), "the cheater never lied");
    for t in &report.tasks {
        assert!(t.accepted_result.is_some(), "task {} not accepted", t.index);
        for r in t.replicas.iter().filter(|r| r.in_quorum) {
            assert!(
                !lies.contains(&r.result_hash),
                "task {}: a lie was accepted",
                t.index
            );
        }
    }
    let log = std::fs::read_to_string(&v.log).unwrap();
    let found = log.matches("recomputed by the verifier").count();
    assert!(found > 0, "no lie was found by a part check");
    eprintln!(
        "part checks: {} lies, {found} found by a recomputed row, {tasks} tasks accepted",
        lies.len()
    );
}

/// The result hashes of a cheater's lies.
type Lies = Arc<std::sync::Mutex<Vec<B256>>>;

/// An embed kind that computes its first `honest_runs` tasks honestly and then lies on every
/// one (rows reversed and negated), with its count of runs and the result hashes of its lies.
fn liar_after(honest_runs: u64) -> (Arc<dyn TaskKind>, Arc<AtomicU64>, Lies) {
    let runs = Arc::new(AtomicU64::new(0));
    let lies: Lies = Arc::default();
    let device = gleaner_models::select_device(BackendChoice::Flex).unwrap();
    let setup = ModelSetup::new(&gleaner_models::ModelPaths::new(
        gleaner_test_utils::gleaner_home(),
    ));
    let (r, l) = (runs.clone(), lies.clone());
    let cheat = Arc::new(Cheat::with(
        EmbedKind::new(setup.minilm, device),
        Box::new(move |k, _, _, out| {
            if r.fetch_add(1, Ordering::SeqCst) < honest_runs {
                return Ok(out);
            }
            let lie = corrupt_embeddings(k, out)?;
            l.lock().unwrap().push(blob_hash(&lie));
            Ok(lie)
        }),
    ));
    (cheat, runs, lies)
}

/// Tasks accepted with two or more quorum members (each pays one replica more than a lone one).
fn replicated_tasks(report: &SettlementReport) -> u64 {
    report
        .tasks
        .iter()
        .filter(|t| t.replicas.iter().filter(|r| r.in_quorum).count() >= 2)
        .count() as u64
}

/// Provisional results are not lost at the deadline. Workers 0 and 2 earn trust in a fully
/// replicated job, then compute only tasks 0–3 of a spot-checked job of 8 tasks (the others
/// fail, so the job never completes). At the deadline the verifier decides what is in: every
/// trusted worker's lone result is accepted and paid, the tasks never computed stay
/// unaccepted, and the audit says OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provisional_results_in_by_the_deadline_are_accepted() {
    let net = Net::start(3).await;
    let (_c, _v) = net.services(60).await;
    let stop = Arc::new(tokio::sync::Notify::new());
    // Jobs from this id on fail every task from index 4 (set once the warm-up job is in).
    let fail_from = Arc::new(AtomicU64::new(u64::MAX));
    let flaky = |fail_from: Arc<AtomicU64>| -> Arc<dyn TaskKind> {
        let device = gleaner_models::select_device(BackendChoice::Flex).unwrap();
        let setup = ModelSetup::new(&gleaner_models::ModelPaths::new(
            gleaner_test_utils::gleaner_home(),
        ));
        Arc::new(Cheat::with(
            EmbedKind::new(setup.minilm, device),
            Box::new(move |_, task, _, out| {
                let job = u64::try_from(task.job_id).unwrap_or(u64::MAX);
                if job >= fail_from.load(Ordering::SeqCst) && task.index >= 4 {
                    // Not a spin: the task goes back to the pool and comes round again.
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    return Err(gleaner_kinds::Error::Invalid("out of memory (test)".into()));
                }
                Ok(out)
            }),
        ))
    };
    let handles = vec![
        run_worker(
            net.worker(0, Some(flaky(fail_from.clone()))).await,
            stop.clone(),
        ),
        run_worker(
            net.worker(2, Some(flaky(fail_from.clone()))).await,
            stop.clone(),
        ),
    ];
    let warm = net.submit(16, 2, 2);
    net.wait_state(warm, "settled", 240).await;
    fail_from.store(u64::try_from(warm).unwrap() + 1, Ordering::SeqCst);

    let started = std::time::Instant::now();
    let job = net.submit_with(
        16,
        2,
        2,
        &[
            "--spot-check",
            "0.1",
            "--trust-after",
            "8",
            "--deadline",
            "45s",
        ],
    );
    net.wait_state(job, "settled", 240).await;
    let settled_after = started.elapsed();
    stop.notify_waiters();
    for h in handles {
        let _ = h.await;
    }

    let audit = net.audit(job);
    assert_eq!(audit["verdict"], "OK", "{audit}");
    assert!(slashed(&audit).is_empty(), "{audit}");
    let client = Client::new(&net.api).unwrap();
    let sha = net.report_hash(job, 30).await;
    let report = SettlementReport::from_canonical(&client.blob(sha).await.unwrap()).unwrap();
    let accepted: Vec<u32> = report
        .tasks
        .iter()
        .filter(|t| t.accepted_result.is_some())
        .map(|t| t.index)
        .collect();
    assert_eq!(accepted, vec![0, 1, 2, 3], "{audit}");
    let singles = report
        .tasks
        .iter()
        .filter(|t| t.replicas.iter().filter(|r| r.in_quorum).count() == 1)
        .count();
    assert!(
        singles > 0,
        "every task was drawn for a check (p = 1e-4): nothing was held"
    );
    // Each computed task was either held provisionally (accepted alone) or drawn for a check
    // (accepted on both workers); the escrow pays exactly those replicas.
    assert_eq!(
        audit["paid_replicas"].as_u64().unwrap(),
        4 + replicated_tasks(&report),
        "{audit}"
    );
    for w in paid(&audit) {
        assert!(
            [net.workers[0].address(), net.workers[2].address()].contains(&w),
            "{audit}"
        );
    }
    assert!(!paid(&audit).is_empty(), "{audit}");
    eprintln!(
        "deadline: settled {:.1} s after submission (deadline 45 s), accepted {accepted:?}, \
         {singles} on one replica",
        settled_after.as_secs_f64()
    );
}
