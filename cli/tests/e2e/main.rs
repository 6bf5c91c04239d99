//! Whole-system runs on anvil: the `gleaner` binary runs the coordinator and the verifier and
//! submits and audits jobs; workers run in-process (so one can cheat and one can die).
//!
//! Needs `scripts/setup` (model weights, npm anvil); a missing piece fails with its fix.

#[path = "../common/net.rs"]
mod net;

mod bench;
mod cheats;
mod explorer;
mod gpu_cache;
mod reverse;
mod spot;
mod train;

use std::sync::Arc;

use alloy::providers::ProviderBuilder;
use gleaner_kinds::{ModelSetup, TaskKind};
use gleaner_models::BackendChoice;
use gleaner_protocol::bindings::{JobMarket, WorkerRegistry};
use gleaner_test_utils::e18;

use cheats::{Cheat, corrupt_embeddings, substitute_tokens};
use net::*;

/// Redundancy 3 with one worker that returns corrupted embeddings: none of its results is
/// accepted, it is slashed with evidence, the honest workers are paid in proportion to their
/// units, and the audit says OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_worker_is_slashed_and_honest_ones_are_paid() {
    let net = Net::start(3).await;
    let (_c, _v) = net.services(60).await;
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut handles = Vec::new();
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
    for (i, cheat) in [(0, None), (1, None), (2, Some(cheat()))] {
        handles.push(run_worker(net.worker(i, cheat).await, stop.clone()));
    }
    let job = net.submit(12, 4, 3);
    net.wait_state(job, "settled", 240).await;
    stop.notify_waiters();

    let audit = net.audit(job);
    assert_eq!(audit["verdict"], "OK", "{audit}");
    // Gas from the receipts of createJob, postTasks, settle and the slash: 4 transactions.
    assert_eq!(audit["transactions"], 4, "{audit}");
    let gas = audit["gas_used"].as_u64().unwrap();
    assert!(gas > 4 * 21_000, "{audit}");
    assert_eq!(
        audit["gas_per_task"].as_u64().unwrap(),
        gas.div_ceil(3),
        "{audit}"
    );
    let cheat = net.workers[2].address();
    let paid = paid(&audit);
    assert!(!paid.contains(&cheat), "the cheat was paid: {audit}");
    assert_eq!(paid.len(), 2, "{audit}");
    assert_eq!(slashed(&audit), vec![cheat]);

    let p = ProviderBuilder::new().connect_http(net.chain.anvil.endpoint_url());
    let registry = WorkerRegistry::new(net.d.registry, &p);
    assert!(
        registry.stakeOf(cheat).call().await.unwrap() < e18(100),
        "stake not reduced"
    );
    // Honest workers did the same tasks with the same confidence: equal pay.
    let market = JobMarket::new(net.d.market, &p);
    let a = market
        .withdrawable(net.workers[0].address())
        .call()
        .await
        .unwrap();
    let b = market
        .withdrawable(net.workers[1].address())
        .call()
        .await
        .unwrap();
    assert!(!a.is_zero() && a == b, "{a} vs {b}");
    let _ = (&net.admin, &net.coordinator, &net.requester);
}

/// A sampled generate job at redundancy 3, one worker substituting a token in each output: the
/// verifier's teacher-forced check accepts the honest (independently sampled) outputs, rejects
/// and slashes the substitute, the job settles with an OK audit, and `job results` returns what
/// the model generates for each prompt with the job's seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generate_job_settles_and_a_token_substitute_is_slashed() {
    let path = gleaner_models::ModelPaths::new(gleaner_test_utils::gleaner_home()).smollm_gguf();
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup",
        path.display()
    );
    let net = Net::start(3).await;
    let (_c, _v) = net.services(120).await;
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut handles = Vec::new();
    let cheat = || -> Arc<dyn TaskKind> {
        let device = gleaner_models::select_device(BackendChoice::Flex).unwrap();
        Arc::new(Cheat::new(
            gleaner_kinds::GenerateKind::new(
                path.clone(),
                device,
                gleaner_models::DecoderChoice::Auto,
            ),
            substitute_tokens,
        ))
    };
    for (i, cheat) in [(0, None), (1, None), (2, Some(cheat()))] {
        handles.push(run_worker(net.worker(i, cheat).await, stop.clone()));
    }
    let prompts = [
        "The capital of France is",
        "Name three colours.",
        "Once upon a time",
    ];
    let sampling = [
        "--max-tokens",
        "8",
        "--temperature",
        "0.7",
        "--top-p",
        "0.9",
        "--seed",
        "42",
    ];
    let job = net.submit_generate(&prompts, 2, 3, &sampling);
    net.wait_state(job, "settled", 300).await;
    stop.notify_waiters();

    let audit = net.audit(job);
    assert_eq!(audit["verdict"], "OK", "{audit}");
    let cheat = net.workers[2].address();
    let paid = paid(&audit);
    assert_eq!(paid.len(), 2, "{audit}");
    assert!(!paid.contains(&cheat), "the substitute was paid: {audit}");
    assert_eq!(slashed(&audit), vec![cheat], "{audit}");

    // The accepted outputs are the model's, under the job's seeds (task 0 holds prompts 0-1).
    let out = net.dir.path().join("generations.jsonl");
    let mut c = gleaner();
    net.env(&mut c, "requester");
    let r = c
        .args(["job", "results", &job.to_string(), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), prompts.len());
    let g = gleaner_models::Generator::load(
        &path,
        gleaner_models::select_device(BackendChoice::Flex).unwrap(),
    )
    .unwrap();
    let params = gleaner_protocol::task::SamplingParams {
        temperature_milli: 700,
        top_p_milli: 900,
        seed: 42,
    };
    // Workers decode a task's prompts as one batch; so does this check.
    let mut want = Vec::new();
    for (task, chunk) in prompts.chunks(2).enumerate() {
        let rules: Vec<_> = (0..chunk.len() as u32)
            .map(|i| g.decoding(8, Some(params), task as u32, i))
            .collect();
        want.extend(g.generate_many(chunk, &rules).unwrap());
    }
    for (k, line) in lines.iter().enumerate() {
        assert_eq!(line["prompt"], prompts[k]);
        assert_eq!(line["text"], want[k].text.as_str(), "prompt {k}");
        let ids: Vec<u32> = serde_json::from_value(line["ids"].clone()).unwrap();
        assert_eq!(ids, want[k].ids, "prompt {k}");
    }
}

/// A worker dies holding a lease: the lease expires, another worker computes the replica, and
/// the job settles with an OK audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_workers_leases_are_reassigned() {
    let net = Net::start(3).await;
    let (_c, _v) = net.services(3).await;
    let job = net.submit(8, 4, 2);
    net.wait_state(job, "posted", 60).await;
    {
        let doomed = net.worker(2, None).await;
        let lease = doomed.client().lease(5_000).await.unwrap();
        assert!(lease.is_some(), "the doomed worker got no lease");
        // Dropped here without a result: the process "dies" holding the lease.
    }
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let h0 = run_worker(net.worker(0, None).await, stop.clone());
    let h1 = run_worker(net.worker(1, None).await, stop.clone());
    net.wait_state(job, "settled", 240).await;
    stop.notify_waiters();
    let _ = (h0.await, h1.await);
    let audit = net.audit(job);
    assert_eq!(audit["verdict"], "OK", "{audit}");
    assert!(!paid(&audit).contains(&net.workers[2].address()), "{audit}");
}
