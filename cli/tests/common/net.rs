//! A whole network on anvil for the e2e tests and the chaos suite: the `gleaner` binary runs
//! the coordinator and the verifier and submits and audits jobs; workers run in-process (so one
//! can cheat and one can die) or as `gleaner miner run` processes.
//!
//! Needs `scripts/setup` (model weights, npm anvil); a missing piece fails with its fix.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::{LocalSigner, PrivateKeySigner};
use gleaner_client::Client;
use gleaner_kinds::{ModelSetup, Registry, TaskKind};
use gleaner_models::BackendChoice;
use gleaner_protocol::devnet::Deployment;
use gleaner_test_utils::{DevChain, Options, Roles, e18};
use gleaner_worker::{Worker, WorkerConfig};

pub(crate) const PASSWORD: &str = "e2e-password";

/// Kills its child on drop, and prints the child's log when the test failed.
pub(crate) struct Service {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
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

pub(crate) struct Net {
    pub(crate) chain: DevChain,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) d: Deployment,
    pub(crate) admin: PrivateKeySigner,
    pub(crate) coordinator: PrivateKeySigner,
    pub(crate) verifier: PrivateKeySigner,
    pub(crate) requester: PrivateKeySigner,
    pub(crate) workers: Vec<PrivateKeySigner>,
    pub(crate) api: String,
}

pub(crate) fn gleaner() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gleaner"));
    c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    c
}

impl Net {
    pub(crate) async fn start(workers: usize) -> Self {
        let files = gleaner_models::ModelPaths::new(gleaner_test_utils::gleaner_home()).minilm();
        if let Err(e) = files.ensure_present() {
            panic!("{e}");
        }
        let chain = DevChain::start(Options {
            accounts: u32::try_from(4 + workers).unwrap().max(12),
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
        Self {
            chain,
            dir,
            d,
            admin,
            coordinator,
            verifier,
            requester,
            workers,
            api: free_api(),
        }
    }

    pub(crate) fn env(&self, c: &mut Command, key: &str) {
        c.env("GLEANER_RPC_URL", self.chain.anvil.endpoint())
            .env("GLEANER_MARKET", self.d.market.to_string())
            .env("GLEANER_COORDINATOR_URL", &self.api)
            .env("GLEANER_PASSWORD_FILE", self.dir.path().join("password"))
            .env(
                "GLEANER_KEYSTORE",
                self.dir.path().join(format!("{key}.json")),
            );
    }

    pub(crate) fn spawn(&self, name: &str, key: &str, args: &[&str]) -> Service {
        let log = self.dir.path().join(format!("{name}.log"));
        let mut c = gleaner();
        self.env(&mut c, key);
        // Appended to: a restarted service keeps one log.
        let open = || {
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap()
        };
        c.args(args)
            .stdout(Stdio::from(open()))
            .stderr(Stdio::from(open()));
        Service {
            child: c.spawn().unwrap(),
            log,
        }
    }

    pub(crate) async fn services(&self, lease_secs: u64) -> (Service, Service) {
        let coord = self.coordinator(lease_secs).await;
        (coord, self.verifier(&[]))
    }

    /// `gleaner verifier run` on its SQLite store, with `extra` flags.
    pub(crate) fn verifier(&self, extra: &[&str]) -> Service {
        let vdb = self.sqlite("verifier");
        let mut args = vec!["verifier", "run", "--db", &vdb, "--poll-ms", "300"];
        args.extend_from_slice(extra);
        self.spawn("verifier", "verifier", &args)
    }

    /// `gleaner miner run` as worker `i` on the CPU (its keystore written on first use).
    pub(crate) fn miner(&self, i: usize) -> Service {
        let name = format!("w{i}");
        let keystore = self.dir.path().join(format!("{name}.json"));
        if !keystore.is_file() {
            LocalSigner::encrypt_keystore(
                self.dir.path(),
                &mut rand08::thread_rng(),
                self.workers[i].to_bytes(),
                PASSWORD,
                Some(&format!("{name}.json")),
            )
            .unwrap();
        }
        self.spawn(
            &format!("miner-{name}"),
            &name,
            &["miner", "run", "--backend", "cpu", "--name", &name],
        )
    }

    /// `gleaner coordinator run` on SQLite, once it answers.
    pub(crate) async fn coordinator(&self, lease_secs: u64) -> Service {
        let db = self.sqlite("coordinator");
        self.coordinator_on(&db, lease_secs, &[]).await
    }

    /// A SQLite URL for a database file named `name` in the network's directory.
    pub(crate) fn sqlite(&self, name: &str) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            self.dir.path().join(format!("{name}.db")).display()
        )
    }

    /// `gleaner coordinator run` on database `db` with `extra` flags, once it answers.
    pub(crate) async fn coordinator_on(
        &self,
        db: &str,
        lease_secs: u64,
        extra: &[&str],
    ) -> Service {
        self.coordinator_at(&self.api, "coordinator", db, lease_secs, extra)
            .await
    }

    /// A coordinator serving `api` (logging to `name`.log), once it answers.
    pub(crate) async fn coordinator_at(
        &self,
        api: &str,
        name: &str,
        db: &str,
        lease_secs: u64,
        extra: &[&str],
    ) -> Service {
        let listen = api.trim_start_matches("http://").to_owned();
        let lease = lease_secs.to_string();
        let verifier = self.verifier.address().to_string();
        let mut args = vec![
            "coordinator",
            "run",
            "--listen",
            &listen,
            "--database-url",
            db,
            "--confirmations",
            "0",
            "--lease-secs",
            &lease,
            "--verifier",
            &verifier,
        ];
        args.extend_from_slice(extra);
        let coord = self.spawn(name, "coordinator", &args);
        let deadline = Instant::now() + Duration::from_secs(60);
        while reqwest::get(format!("{api}/healthz")).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "coordinator {name} did not come up"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        coord
    }

    /// Submits a generate job over `prompts` (`extra`: sampling flags and the like).
    pub(crate) fn submit_generate(
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
    pub(crate) fn submit(&self, sentences: usize, batch: u32, redundancy: u16) -> U256 {
        self.submit_with(sentences, batch, redundancy, &[])
    }

    /// [`Net::submit`] with more `job submit` flags.
    pub(crate) fn submit_with(
        &self,
        sentences: usize,
        batch: u32,
        redundancy: u16,
        extra: &[&str],
    ) -> U256 {
        let corpus =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../demo/corpus.txt"))
                .unwrap();
        let input = self.dir.path().join("input.txt");
        let lines: Vec<&str> = corpus.lines().take(sentences).collect();
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        self.run_submit(&input, batch, redundancy, extra)
    }

    /// `gleaner job submit` as the requester; the job id it prints.
    pub(crate) fn run_submit(
        &self,
        input: &Path,
        batch: u32,
        redundancy: u16,
        extra: &[&str],
    ) -> U256 {
        let mut c = gleaner();
        self.env(&mut c, "requester");
        c.args(["job", "submit", "--input"])
            .arg(input)
            .args([
                "--batch",
                &batch.to_string(),
                "--redundancy",
                &redundancy.to_string(),
            ])
            .args(extra)
            .args(["--budget", "90"]);
        if !extra.contains(&"--deadline") {
            c.args(["--deadline", "1h"]);
        }
        let out = c.output().unwrap();
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
    pub(crate) async fn worker(&self, i: usize, cheat: Option<Arc<dyn TaskKind>>) -> Worker {
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

    pub(crate) async fn worker_with(
        &self,
        i: usize,
        kinds: Registry,
        device: &gleaner_models::SelectedDevice,
    ) -> Worker {
        self.worker_at(&self.api, i, kinds, device).await
    }

    /// Worker `i` with `kinds`, talking to the coordinator at `api`.
    pub(crate) async fn worker_at(
        &self,
        api: &str,
        i: usize,
        kinds: Registry,
        device: &gleaner_models::SelectedDevice,
    ) -> Worker {
        let mut cfg = WorkerConfig::new(api, kinds, device);
        cfg.wait_ms = 1_000;
        cfg.name = format!("w{i}");
        Worker::start(cfg, self.workers[i].clone()).await.unwrap()
    }

    pub(crate) async fn wait_state(&self, job: U256, state: &str, secs: u64) {
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

    /// The hash of `job`'s settlement report, once the coordinator has it: the chain watcher
    /// may mark the job settled (from `JobSettled`) a moment before the verifier hands the
    /// coordinator its report.
    pub(crate) async fn report_hash(&self, job: U256, secs: u64) -> B256 {
        let client = Client::new(&self.api).unwrap();
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(h) = client.job_results(job).await.unwrap().report_hash {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "job {job}: no report after {secs}s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(crate) fn audit(&self, job: U256) -> serde_json::Value {
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

/// A free loopback URL (`http://127.0.0.1:PORT`).
pub(crate) fn free_api() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

/// The workers an `audit job --json` report shows paid.
pub(crate) fn paid(audit: &serde_json::Value) -> Vec<Address> {
    audit["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["worker"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// The workers an `audit job --json` report shows slashed.
pub(crate) fn slashed(audit: &serde_json::Value) -> Vec<Address> {
    audit["slashed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().parse().unwrap())
        .collect()
}

pub(crate) fn run_worker(
    w: Worker,
    stop: std::sync::Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<gleaner_worker::Result<gleaner_worker::WorkerStats>> {
    tokio::spawn(async move { w.run(async move { stop.notified().await }).await })
}
