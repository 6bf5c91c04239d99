//! Training end to end: `gleaner job submit --kind train` runs SGD steps of a small GPT as one
//! job per step on three workers, one of which returns a scaled (Byzantine) gradient.

use std::sync::Arc;
use std::time::Instant;

use alloy::primitives::U256;
use gleaner_client::Client;
use gleaner_kinds::{Gradient, TaskKind, TrainKind, rel_l2};
use gleaner_models::BackendChoice;
use gleaner_models::gpt::{BYTE_VOCAB, Checkpoint, GptConfig, train_reference};
use gleaner_protocol::blob::blob_hash;
use gleaner_protocol::task::JobManifest;

use crate::cheats::Cheat;
use crate::net::*;

/// Three steps on three workers, redundancy 2, worker 2 scaling every gradient by 1.5: its
/// gradients are never accepted, it is slashed, every step's audit says OK, the loss goes down,
/// and the final checkpoint equals a single-process Burn run (Burn's SGD on whole batches, same
/// data order) within float rounding.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributed_training_matches_one_process_and_a_byzantine_gradient_is_slashed() {
    let net = Net::start(3).await;
    let (_c, _v) = net.services(60).await;
    let stop = Arc::new(tokio::sync::Notify::new());
    let device = gleaner_models::select_device(BackendChoice::Flex).unwrap();
    let cheat: Arc<dyn TaskKind> = Arc::new(Cheat::new(TrainKind::new(device), |_, out| {
        let mut g = Gradient::from_blob(&out, None).map_err(gleaner_kinds::Error::Invalid)?;
        g.grad.iter_mut().for_each(|v| *v *= 1.5);
        g.to_blob()
    }));
    let mut handles = Vec::new();
    for (i, cheat) in [(0, None), (1, None), (2, Some(cheat))] {
        handles.push(run_worker(net.worker(i, cheat).await, stop.clone()));
    }
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/../demo/train.txt");
    let ckpts = net.dir.path().join("ckpt");
    let (steps, shards, batch, lr) = (3u32, 2usize, 4usize, 1.0f32);
    let mut c = gleaner();
    net.env(&mut c, "requester");
    let out = c
        .args(["job", "submit", "--kind", "train", "--input", corpus])
        .args([
            "--steps",
            &steps.to_string(),
            "--shards",
            &shards.to_string(),
        ])
        .args([
            "--batch",
            &batch.to_string(),
            "--context",
            "32",
            "--dim",
            "32",
        ])
        .args(["--layers", "2", "--heads", "2", "--lr", &lr.to_string()])
        .args([
            "--redundancy",
            "2",
            "--budget",
            "30",
            "--deadline",
            "1h",
            "--json",
        ])
        .arg("--checkpoints")
        .arg(&ckpts)
        .output()
        .unwrap();
    stop.notify_waiters();
    assert!(
        out.status.success(),
        "train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let losses: Vec<f32> = serde_json::from_value(summary["losses"].clone()).unwrap();
    let jobs: Vec<String> = serde_json::from_value(summary["jobs"].clone()).unwrap();
    assert_eq!((losses.len(), jobs.len()), (steps as usize, steps as usize));
    assert!(
        losses[2] < losses[0] - 0.05,
        "the loss did not go down: {losses:?}"
    );

    let cheater = net.workers[2].address();
    let mut slashes = 0;
    for job in &jobs {
        let audit = net.audit(job.parse().unwrap());
        assert_eq!(audit["verdict"], "OK", "{audit}");
        assert!(
            !paid(&audit).contains(&cheater),
            "the cheater was paid: {audit}"
        );
        slashes += slashed(&audit).iter().filter(|w| **w == cheater).count();
        assert!(slashed(&audit).iter().all(|w| *w == cheater), "{audit}");
    }
    assert!(slashes >= 1, "the Byzantine worker was never slashed");

    // The lineage is public: step k's job pins (in every task hash, so on-chain) the checkpoint
    // step k - 1 produced.
    let client = Client::new(&net.api).unwrap();
    for (k, job) in jobs.iter().enumerate() {
        let r = client.job_results(job.parse().unwrap()).await.unwrap();
        let m = JobManifest::from_canonical(r.manifest.as_bytes()).unwrap();
        assert_eq!(m.params.train.unwrap().step, k as u32);
        if k > 0 {
            let file = ckpts.join(format!("step-{k}.safetensors"));
            assert_eq!(
                m.model.weights_sha256,
                blob_hash(&std::fs::read(&file).unwrap()),
                "job {job} does not start from {}",
                file.display()
            );
        }
    }

    let config = GptConfig {
        vocab: BYTE_VOCAB,
        dim: 32,
        layers: 2,
        heads: 2,
        context: 32,
    };
    let last =
        Checkpoint::from_bytes(&std::fs::read(summary["checkpoint"].as_str().unwrap()).unwrap())
            .unwrap();
    assert_eq!((last.config, last.step), (config, steps));
    let text = std::fs::read(corpus).unwrap();
    let (want, want_losses) = train_reference(
        &config,
        &config.init(0),
        &text,
        steps,
        shards * batch,
        lr,
        &gleaner_models::select_device(BackendChoice::Flex)
            .unwrap()
            .device,
    )
    .unwrap();
    let d = rel_l2(&last.params, &want);
    assert!(d < 1e-5, "distributed vs single-process: relative L2 {d}");
    for (a, b) in losses.iter().zip(&want_losses) {
        assert!((a - b).abs() < 1e-4, "losses {losses:?} vs {want_losses:?}");
    }
    eprintln!(
        "train: {steps} steps, losses {losses:?}, cheater slashed {slashes}×, final checkpoint \
         {d:.2e} from a single-process Burn run"
    );
    for h in handles {
        let _ = h.await;
    }
}

/// A worker that dies holding a lease mid-step: the lease expires (3 s here) and another
/// worker computes the shard, so the step settles with an OK audit and the dead worker is not
/// paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_that_dies_mid_step_is_replaced() {
    let net = Net::start(3).await;
    let (_c, _v) = net.services(3).await;
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/../demo/train.txt");
    let mut c = gleaner();
    net.env(&mut c, "requester");
    c.args(["job", "submit", "--kind", "train", "--input", corpus])
        .args([
            "--steps",
            "1",
            "--shards",
            "2",
            "--batch",
            "2",
            "--context",
            "16",
        ])
        .args([
            "--dim",
            "16",
            "--layers",
            "1",
            "--heads",
            "2",
            "--redundancy",
            "2",
        ])
        .args([
            "--budget",
            "10",
            "--deadline",
            "1h",
            "--json",
            "--checkpoints",
        ])
        .arg(net.dir.path().join("ckpt"));
    // The requester's client blocks until the step settles: run it beside the workers.
    let requester = std::thread::spawn(move || c.output().unwrap());
    let job = U256::from(1);
    net.wait_state(job, "posted", 120).await;
    {
        let doomed = net.worker(2, None).await;
        let lease = doomed.client().lease(5_000).await.unwrap();
        assert!(lease.is_some(), "the doomed worker got no lease");
        // Dropped here without a result: the process "dies" holding the lease.
    }
    let died = Instant::now();
    let stop = Arc::new(tokio::sync::Notify::new());
    let h0 = run_worker(net.worker(0, None).await, stop.clone());
    let h1 = run_worker(net.worker(1, None).await, stop.clone());
    let out = tokio::task::spawn_blocking(move || requester.join().unwrap())
        .await
        .unwrap();
    let secs = died.elapsed().as_secs_f64();
    stop.notify_waiters();
    let _ = (h0.await, h1.await);
    assert!(
        out.status.success(),
        "train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit = net.audit(job);
    assert_eq!(audit["verdict"], "OK", "{audit}");
    assert!(!paid(&audit).contains(&net.workers[2].address()), "{audit}");
    eprintln!("train: the step settled {secs:.1} s after a worker died holding a lease");
}
