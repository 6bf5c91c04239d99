//! Whole-system runs on anvil: the `gleaner` binary runs the coordinator and the verifier and
//! submits and audits jobs; workers run in-process (so one can cheat and one can die).
//!
//! Needs `scripts/setup` (model weights, npm anvil); a missing piece fails with its fix.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::ProviderBuilder;
use alloy::signers::local::{LocalSigner, PrivateKeySigner};
use gleaner_client::Client;
use gleaner_kinds::{ModelSetup, Registry, TaskKind};
use gleaner_models::BackendChoice;
use gleaner_protocol::bindings::{JobMarket, WorkerRegistry};
use gleaner_protocol::devnet::Deployment;
use gleaner_test_utils::{DevChain, Options, Roles, e18};
use gleaner_worker::{Worker, WorkerConfig};

mod cheats;
mod reverse;

use cheats::{Cheat, corrupt_embeddings, substitute_tokens};

const PASSWORD: &str = "e2e-password";

/// Kills its child on drop, and prints the child's log when the test failed.
struct Service {
    child: Child,
    log: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- {} ---", self.log.display());
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

struct Net {
    chain: DevChain,
    dir: tempfile::TempDir,
    d: Deployment,
    admin: PrivateKeySigner,
    coordinator: PrivateKeySigner,
    verifier: PrivateKeySigner,
    requester: PrivateKeySigner,
    workers: Vec<PrivateKeySigner>,
    api: String,
}

fn gleaner() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gleaner"));
    c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    c
}

impl Net {
    async fn start(workers: usize) -> Self {
        let files = gleaner_models::ModelPaths::new(gleaner_test_utils::gleaner_home()).minilm();
        if let Err(e) = files.ensure_present() {
            panic!("{e}");
        }
        let chain = DevChain::start(Options {
            accounts: 12,
            roles: Roles::Separate,
            ..Options::default()
        })
        .await;
        let keys = chain.keys.clone();
        let (admin, coordinator, verifier, requester) = (
            keys[0].clone(),
            keys[1].clone(),
            keys[2].clone(),
            keys[3].clone(),
        );
        let workers: Vec<PrivateKeySigner> = keys[4..4 + workers].to_vec();
        chain.faucet(requester.address(), e18(1_000)).await;
        chain.stake(&workers, e18(1_000), e18(100)).await;
        let d = chain.d;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("password"), PASSWORD).unwrap();
        for (name, k) in [
            ("coordinator", &coordinator),
            ("verifier", &verifier),
            ("requester", &requester),
        ] {
            LocalSigner::encrypt_keystore(
                dir.path(),
                &mut rand08::thread_rng(),
                k.to_bytes(),
                PASSWORD,
                Some(&format!("{name}.json")),
            )
            .unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            chain,
            dir,
            d,
            admin,
            coordinator,
            verifier,
            requester,
            workers,
            api: format!("http://127.0.0.1:{port}"),
        }
    }

    fn env(&self, c: &mut Command, key: &str) {
        c.env("GLEANER_RPC_URL", self.chain.anvil.endpoint())
            .env("GLEANER_MARKET", self.d.market.to_string())
            .env("GLEANER_COORDINATOR_URL", &self.api)
            .env("GLEANER_PASSWORD_FILE", self.dir.path().join("password"))
            .env(
                "GLEANER_KEYSTORE",
                self.dir.path().join(format!("{key}.json")),
            );
    }

    fn spawn(&self, name: &str, key: &str, args: &[&str]) -> Service {
        let log = self.dir.path().join(format!("{name}.log"));
        let mut c = gleaner();
        self.env(&mut c, key);
        c.args(args)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::options()
                    .append(true)
                    .open(&log)
                    .unwrap_or_else(|_| std::fs::File::create(&log).unwrap()),
            ));
        Service {
            child: c.spawn().unwrap(),
            log,
        }
    }

    async fn services(&self, lease_secs: u64) -> (Service, Service) {
        let coord = self.coordinator(lease_secs).await;
        let vdb = format!(
            "sqlite://{}?mode=rwc",
            self.dir.path().join("verifier.db").display()
        );
        let ver = self.spawn(
            "verifier",
            "verifier",
            &["verifier", "run", "--db", &vdb, "--poll-ms", "300"],
        );
        (coord, ver)
    }

    /// `gleaner coordinator run`, once it answers.
    async fn coordinator(&self, lease_secs: u64) -> Service {
        let listen = self.api.trim_start_matches("http://").to_owned();
        let db = format!(
            "sqlite://{}?mode=rwc",
            self.dir.path().join("coordinator.db").display()
        );
        let coord = self.spawn(
            "coordinator",
            "coordinator",
            &[
                "coordinator",
                "run",
                "--listen",
                &listen,
                "--database-url",
                &db,
                "--confirmations",
                "0",
                "--lease-secs",
                &lease_secs.to_string(),
                "--verifier",
                &self.verifier.address().to_string(),
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while reqwest::get(format!("{}/healthz", self.api)).await.is_err() {
            assert!(Instant::now() < deadline, "coordinator did not come up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        coord
    }

    /// Submits a generate job over `prompts` (`extra`: sampling flags and the like).
    fn submit_generate(
        &self,
        prompts: &[&str],
        batch: u32,
        redundancy: u16,
        extra: &[&str],
    ) -> U256 {
        let input = self.dir.path().join("prompts.jsonl");
        let lines: Vec<String> = prompts
            .iter()
            .map(|p| serde_json::json!({ "prompt": p }).to_string() + "\n")
            .collect();
        std::fs::write(&input, lines.concat()).unwrap();
        let mut args = vec!["--kind", "generate"];
        args.extend_from_slice(extra);
        self.run_submit(&input, batch, redundancy, &args)
    }

    /// Submits an embed job over the first `sentences` lines of the demo corpus.
    fn submit(&self, sentences: usize, batch: u32, redundancy: u16) -> U256 {
        let corpus =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../demo/corpus.txt"))
                .unwrap();
        let input = self.dir.path().join("input.txt");
        let lines: Vec<&str> = corpus.lines().take(sentences).collect();
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        self.run_submit(&input, batch, redundancy, &[])
    }

    /// `gleaner job submit` as the requester; the job id it prints.
    fn run_submit(&self, input: &Path, batch: u32, redundancy: u16, extra: &[&str]) -> U256 {
        let mut c = gleaner();
        self.env(&mut c, "requester");
        let out = c
            .args(["job", "submit", "--input"])
            .arg(input)
            .args([
                "--batch",
                &batch.to_string(),
                "--redundancy",
                &redundancy.to_string(),
            ])
            .args(extra)
            .args(["--budget", "90", "--deadline", "1h"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "submit failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Worker `i` with the built-in kinds on the CPU, `cheat` registered over its honest kind.
    async fn worker(&self, i: usize, cheat: Option<Arc<dyn TaskKind>>) -> Worker {
        let device = gleaner_models::select_device(BackendChoice::Flex).unwrap();
        let mut kinds = Registry::standard(
            &ModelSetup::new(&gleaner_models::ModelPaths::new(
                gleaner_test_utils::gleaner_home(),
            )),
            device.clone(),
        );
        if let Some(k) = cheat {
            kinds.register(k);
        }
        self.worker_with(i, kinds, &device).await
    }

    async fn worker_with(
        &self,
        i: usize,
        kinds: Registry,
        device: &gleaner_models::SelectedDevice,
    ) -> Worker {
        let mut cfg = WorkerConfig::new(&self.api, kinds, device);
        cfg.wait_ms = 1_000;
        cfg.name = format!("w{i}");
        Worker::start(cfg, self.workers[i].clone()).await.unwrap()
    }

    async fn wait_state(&self, job: U256, state: &str, secs: u64) {
        let client = Client::new(&self.api).unwrap();
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(s) = client.job_status(job).await
                && s.state == state
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} not {state} after {secs}s"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn audit(&self, job: U256) -> serde_json::Value {
        let mut c = gleaner();
        self.env(&mut c, "requester");
        let out = c
            .args(["audit", "job", &job.to_string(), "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "audit printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert!(out.status.success(), "audit failed: {v}");
        v
    }
}

/// The workers an `audit job --json` report shows paid.
fn paid(audit: &serde_json::Value) -> Vec<Address> {
    audit["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["worker"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// The workers an `audit job --json` report shows slashed.
fn slashed(audit: &serde_json::Value) -> Vec<Address> {
    audit["slashed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().parse().unwrap())
        .collect()
}

fn run_worker(
    w: Worker,
    stop: std::sync::Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<gleaner_worker::Result<gleaner_worker::WorkerStats>> {
    tokio::spawn(async move { w.run(async move { stop.notified().await }).await })
}

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
        Arc::new(Cheat {
            honest: gleaner_kinds::EmbedKind::new(setup.minilm, device),
            tamper: corrupt_embeddings,
        })
    };
    for (i, cheat) in [(0, None), (1, None), (2, Some(cheat()))] {
        handles.push(run_worker(net.worker(i, cheat).await, stop.clone()));
    }
    let job = net.submit(12, 4, 3);
    net.wait_state(job, "settled", 240).await;
    stop.notify_waiters();

    let audit = net.audit(job);
    assert_eq!(audit["verdict"], "OK", "{audit}");
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
        Arc::new(Cheat {
            honest: gleaner_kinds::GenerateKind::new(
                path.clone(),
                device,
                gleaner_models::DecoderChoice::Auto,
            ),
            tamper: substitute_tokens,
        })
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
