//! A task kind defined here, in the test, runs end to end through the coordinator, workers and
//! the verifier on anvil: adding a kind is one `impl TaskKind` and one registration.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::B256;
use alloy::providers::ProviderBuilder;
use gleaner_kinds::{
    Checked, Error, Member, Outcome, Output, Registry, Result, SplitOptions, TaskBlob, TaskKind,
    TaskRef, Written,
};
use gleaner_protocol::task::{KindId, ModelRef, TaskParams};

use super::{Net, paid, run_worker};

/// "Reverse the bytes": one task per input line; the output is the line backwards. The
/// verifier can check an output without recomputing anything else.
struct Reverse;

fn reversed(b: &[u8]) -> Vec<u8> {
    b.iter().rev().copied().collect()
}

impl TaskKind for Reverse {
    fn id(&self) -> KindId {
        KindId::from_static("reverse")
    }
    fn model(&self) -> Result<ModelRef> {
        Ok(ModelRef {
            id: "reverse-the-bytes".into(),
            weights_sha256: B256::repeat_byte(0x52),
        })
    }
    fn split(&self, input: &[u8], _: &TaskParams, _: &SplitOptions) -> Result<Vec<TaskBlob>> {
        Ok(input
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| TaskBlob {
                bytes: l.to_vec(),
                cost: l.len() as u64,
            })
            .collect())
    }
    fn prepare(&self) -> Result<Option<f64>> {
        Ok(Some(1.0))
    }
    fn run(&self, _: &TaskRef<'_>, input: &[u8]) -> Result<Vec<u8>> {
        Ok(reversed(input))
    }
    fn check(&self, _: &TaskRef<'_>, input: &[u8], output: &[u8]) -> Result<Checked> {
        Ok(if output == reversed(input) {
            Checked::Valid(Output::new(output.to_vec()))
        } else {
            Checked::Malformed("not the input reversed".into())
        })
    }
    fn agree(&self, a: &Output, b: &Output) -> bool {
        a.get::<Vec<u8>>() == b.get::<Vec<u8>>()
    }
    fn accept(&self, members: &[Member<'_>]) -> Result<Vec<u8>> {
        members
            .first()
            .and_then(|m| m.output.get::<Vec<u8>>())
            .cloned()
            .ok_or_else(|| Error::Invalid("nothing to accept".into()))
    }
    fn write_results(
        &self,
        _: alloy::primitives::U256,
        outcomes: &[Outcome<'_>],
        out: &Path,
    ) -> Result<Written> {
        let io = |e| Error::Io {
            path: out.to_owned(),
            source: e,
        };
        let mut f = std::fs::File::create(out).map_err(io)?;
        let mut w = Written {
            unit: "lines",
            ..Written::default()
        };
        for o in outcomes {
            match o.output {
                Some(b) => {
                    f.write_all(b)
                        .and_then(|()| f.write_all(b"\n"))
                        .map_err(io)?;
                    w.items += 1;
                }
                None => w.missing.push(o.index),
            }
        }
        Ok(w)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kind_defined_in_a_test_runs_end_to_end() {
    let net = Net::start(2).await;
    let _coordinator = net.coordinator(60).await;
    let kinds = || Registry::new().with(Reverse);

    // The verifier, in-process, knowing only this kind.
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut config = gleaner_verifier::Config::new(
        &net.api,
        net.chain.anvil.endpoint().as_str(),
        net.d.market,
        kinds(),
    );
    config.db_url = format!(
        "sqlite://{}?mode=rwc",
        net.dir.path().join("verifier.db").display()
    );
    config.poll_interval = Duration::from_millis(300);
    let verifier = {
        let (signer, stop) = (net.verifier.clone(), stop.clone());
        tokio::spawn(async move {
            gleaner_verifier::run(config, signer, async move { stop.notified().await }).await
        })
    };
    let device = gleaner_models::SelectedDevice::cpu(gleaner_models::CpuKind::Flex, "test");
    let mut workers = Vec::new();
    for i in 0..2 {
        let w = net.worker_with(i, kinds(), &device).await;
        assert_eq!(w.capabilities().kinds, [KindId::from_static("reverse")]);
        workers.push(run_worker(w, stop.clone()));
    }

    // The requester, through the library, with the same registration.
    let request = gleaner_requester::JobRequest {
        kind: KindId::from_static("reverse"),
        batch: 1,
        max_tokens: 1,
        sampling: None,
        chat: false,
        spot_checks: None,
        train: None,
    };
    let job = gleaner_requester::prepare(&kinds(), &request, b"hello\nworld\ngleaner\n").unwrap();
    assert_eq!(job.manifest.tasks.len(), 3);
    let client = gleaner_client::Client::new(&net.api).unwrap();
    let p = ProviderBuilder::new()
        .wallet(net.requester.clone())
        .connect_http(net.chain.anvil.endpoint_url());
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let submitted = gleaner_requester::submit(
        &client,
        &p,
        &net.requester,
        net.d.market,
        &job,
        2,
        gleaner_test_utils::e18(30),
        deadline,
        |_| {},
    )
    .await
    .unwrap();
    let settled = tokio::time::timeout(
        Duration::from_secs(180),
        gleaner_requester::wait(
            &client,
            submitted.job_id,
            Duration::from_millis(300),
            |_| {},
        ),
    )
    .await
    .expect("settled within 3 minutes")
    .unwrap();
    assert_eq!(settled.tasks_accepted, 3);
    stop.notify_waiters();
    for w in workers {
        assert!(w.await.unwrap().unwrap().submitted > 0);
    }
    verifier.await.unwrap().unwrap();

    let out = net.dir.path().join("reversed.txt");
    // Blobs are not public: without the requester's grant the outputs are refused.
    let refused = gleaner_requester::results(&client, &kinds(), submitted.job_id, &out)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    let grant = gleaner_requester::read_grant(
        &client,
        &net.requester,
        submitted.job_id,
        net.requester.address(),
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    let client = client.with_grant(&grant);
    let written = gleaner_requester::results(&client, &kinds(), submitted.job_id, &out)
        .await
        .unwrap();
    assert_eq!((written.items, written.missing.len()), (3, 0));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "olleh\ndlrow\nrenaelg\n"
    );
    let audit = net.audit(submitted.job_id);
    assert_eq!(audit["verdict"], "OK", "{audit}");
    assert_eq!(paid(&audit).len(), 2, "{audit}");
}
