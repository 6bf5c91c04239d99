//! Byzantine workers: a fifth of the workers lie at redundancy 3, each with one strategy. No
//! lie may be accepted or aggregated; each liar is slashed once, with evidence, and unpaid;
//! the honest workers are paid by their units (the audit recomputes every payout).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use gleaner_client::Client;
use gleaner_kinds::{EMBED_TENSOR, EmbedKind, GenerateKind, ModelSetup, TaskKind, TaskRef};
use gleaner_models::{BackendChoice, DecoderChoice, ModelPaths};
use gleaner_protocol::blob::{
    decode_generations, decode_matrix, encode_generations, encode_matrix, encode_texts,
};
use gleaner_protocol::task::{JobManifest, SamplingParams, TaskParams};

use crate::cheats::{Cheat, Tamper, substitute_tokens};
use crate::net::{Net, paid, run_worker, slashed};
use crate::{Found, chain_facts};

fn device() -> gleaner_models::SelectedDevice {
    gleaner_models::select_device(BackendChoice::Flex).expect("the CPU backend")
}

fn setup() -> ModelSetup {
    ModelSetup::new(&ModelPaths::new(gleaner_test_utils::gleaner_home()))
}

fn rows_of(out: &[u8]) -> gleaner_kinds::Result<(Vec<f32>, usize, usize)> {
    Ok(decode_matrix(EMBED_TENSOR, out)?)
}

fn matrix(data: &[f32], rows: usize, cols: usize) -> gleaner_kinds::Result<Vec<u8>> {
    Ok(encode_matrix(EMBED_TENSOR, data, rows, cols, &[])?)
}

/// The six embed strategies, by name.
fn embed_strategies() -> Vec<(&'static str, Tamper<EmbedKind>)> {
    let copied: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    vec![
        (
            "noise just past the cosine tolerance",
            Box::new(|_, _, _, out| {
                let (mut d, r, c) = rows_of(&out)?;
                // Unit rows plus noise of norm 0.07: cosine ~0.9976 < 0.999.
                let mut x = 0x9E37_79B9_u32;
                let step = 0.07 / (c as f32).sqrt();
                for v in &mut d {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    *v += if x & 1 == 0 { step } else { -step };
                }
                matrix(&d, r, c)
            }),
        ),
        (
            "rows rotated",
            Box::new(|_, _, _, out| {
                let (mut d, r, c) = rows_of(&out)?;
                d.rotate_left(c);
                matrix(&d, r, c)
            }),
        ),
        (
            "another text's embedding",
            Box::new(|k, task, _, out| {
                let (_, r, _) = rows_of(&out)?;
                let other = vec!["A completely different sentence about turnips."; r];
                k.run(task, &encode_texts(&other)?)
            }),
        ),
        (
            "a copy of another result",
            Box::new(move |_, _, _, out| {
                let mut last = copied.lock().unwrap();
                let lie = match last.take() {
                    Some(previous) if previous != out => previous,
                    _ => {
                        let (mut d, r, c) = rows_of(&out)?;
                        d.reverse();
                        matrix(&d, r, c)?
                    }
                };
                *last = Some(out);
                Ok(lie)
            }),
        ),
        (
            "zeros and NaN",
            Box::new(|_, _, _, out| {
                let (d, r, c) = rows_of(&out)?;
                let mut z = vec![0.0; d.len()];
                z[0] = f32::NAN;
                matrix(&z, r, c)
            }),
        ),
        (
            "a missing row",
            Box::new(|_, _, _, out| {
                let (d, r, c) = rows_of(&out)?;
                matrix(&d[..(r - 1) * c], r - 1, c)
            }),
        ),
    ]
}

/// The accepted outputs of `job` with their inputs, read as the requester (with its grant).
async fn accepted(net: &Net, job: U256) -> (JobManifest, Vec<(u32, Vec<u8>, Vec<u8>)>, u32) {
    let client = Client::new(&net.api).unwrap();
    let grant = gleaner_requester::read_grant(
        &client,
        &net.requester,
        job,
        net.requester.address(),
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    let client = client.with_grant(&grant);
    let r = client.job_results(job).await.unwrap();
    let manifest = JobManifest::from_canonical(r.manifest.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut missing = 0;
    for t in &r.tasks {
        match t.result {
            Some(h) => {
                let input = client
                    .blob(manifest.tasks[t.index as usize].input_hash)
                    .await
                    .unwrap();
                out.push((t.index, input, client.blob(h).await.unwrap()));
            }
            None => missing += 1,
        }
    }
    (manifest, out, missing)
}

/// Runs one network: `honest` honest workers and one liar per strategy; returns the rows.
async fn run<K: TaskKind + 'static>(
    found: &mut Found,
    kind: &str,
    honest: usize,
    liars: Vec<(&'static str, Arc<Cheat<K>>)>,
    submit: impl FnOnce(&Net) -> U256,
    is_right: impl Fn(&JobManifest, u32, &[u8], &[u8]) -> bool,
) {
    let n = honest + liars.len();
    let net = Net::start(n).await;
    let (_c, _v) = net.services(60).await;
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut handles = Vec::new();
    // Liars first, so that none starts after the work is gone.
    let liar_ids: Vec<usize> = (honest..n).collect();
    for (i, (_, cheat)) in liar_ids.iter().zip(&liars) {
        let k: Arc<dyn TaskKind> = cheat.clone();
        handles.push(run_worker(net.worker(*i, Some(k)).await, stop.clone()));
    }
    for i in 0..honest {
        handles.push(run_worker(net.worker(i, None).await, stop.clone()));
    }
    let job = submit(&net);
    net.wait_state(job, "settled", 420).await;
    stop.notify_waiters();
    for h in handles {
        let _ = h.await;
    }
    let audit = net.audit(job);
    let facts = chain_facts(&net, job).await;
    let paid = paid(&audit);
    let slashed = slashed(&audit);
    let (manifest, outputs, missing) = accepted(&net, job).await;
    let report: gleaner_protocol::report::SettlementReport = {
        let client = Client::new(&net.api).unwrap();
        let h = net.report_hash(job, 30).await;
        serde_json::from_slice(&client.blob(h).await.unwrap()).unwrap()
    };
    // A liar's replica in a quorum is fine only when it is the accepted output (a tamper that
    // changed nothing, e.g. an early stop of an output that was one token long).
    let quorum_of = |a: &Address| -> (usize, usize) {
        let mut same = 0;
        let mut differ = 0;
        for t in &report.tasks {
            for r in t.replicas.iter().filter(|r| r.worker == *a && r.in_quorum) {
                if Some(r.result_hash) == t.accepted_result {
                    same += 1;
                } else {
                    differ += 1;
                }
            }
        }
        (same, differ)
    };
    let wrong = outputs
        .iter()
        .filter(|(i, input, out)| !is_right(&manifest, *i, input, out))
        .count() as u64;
    let liar_addrs: Vec<Address> = liar_ids.iter().map(|i| net.workers[*i].address()).collect();
    let honest_paid = liar_addrs.iter().all(|a| quorum_of(a).1 == 0);
    found.add("jobs", 1);
    found.add("tasks", manifest.tasks.len() as u64);
    found.add("wrong_accepted", wrong);
    found.add("tasks_without_result", u64::from(missing));
    found.row(
        format!("byzantine {kind}: {n} workers, {} liars, r=3", liars.len()),
        "0 wrong accepted; audit OK; no lie paid",
        format!(
            "{wrong} wrong of {} accepted ({missing} failed); audit {}; {} paid; a lie paid: {}",
            outputs.len(),
            audit["verdict"].as_str().unwrap_or("?"),
            paid.len(),
            !honest_paid
        ),
        wrong == 0 && audit["verdict"] == "OK" && honest_paid && facts.settled == 1,
    );
    for ((name, cheat), addr) in liars.iter().zip(&liar_addrs) {
        let lies = cheat.lies.load(Ordering::Relaxed);
        let times = facts.slashes.get(addr).copied().unwrap_or(0);
        found.add("liars", 1);
        found.add("liars_slashed_once", u64::from(times == 1));
        found.add("liar_results", lies);
        let (same, differ) = quorum_of(addr);
        let slashed_note = if slashed.contains(addr) {
            " (in report)"
        } else {
            ""
        };
        let unchanged = if same > 0 {
            format!(" (and for {same} outputs its tamper left unchanged)")
        } else {
            String::new()
        };
        found.row(
            format!("  {kind} liar: {name}"),
            "refused, slashed once with evidence, no lie paid",
            format!("lied on {lies} tasks; slashed {times}x{slashed_note}; paid for {differ} lies{unchanged}"),
            lies > 0 && times == 1 && slashed.contains(addr) && differ == 0,
        );
    }
}

/// Three networks of ten workers (eight honest, two liars), the six embed strategies.
pub(crate) async fn embed() -> Found {
    let mut found = Found::default();
    let mut strategies = embed_strategies().into_iter();
    let reference = EmbedKind::new(setup().minilm, device());
    while let (Some(a), Some(b)) = (strategies.next(), strategies.next()) {
        let liars: Vec<(&'static str, Arc<Cheat<EmbedKind>>)> = [a, b]
            .into_iter()
            .map(|(name, tamper)| {
                let k = EmbedKind::new(setup().minilm, device());
                (name, Arc::new(Cheat::with(k, tamper)))
            })
            .collect();
        run(
            &mut found,
            "embed",
            8,
            liars,
            |net| net.submit(60, 2, 3),
            |m, i, input, out| {
                let task = TaskRef {
                    job_id: U256::ZERO,
                    index: i,
                    model: &m.model,
                    params: &m.params,
                };
                let (Ok(want), Ok((got, r, c))) = (reference.run(&task, input), rows_of(out))
                else {
                    return false;
                };
                let (want, ..) = rows_of(&want).unwrap();
                gleaner_models::compare_embeddings(&want, &got, c, gleaner_models::EMBED_MIN_COSINE)
                    .is_ok_and(|g| g.agree)
                    && want.len() == r * c
            },
        )
        .await;
    }
    found
}

/// One network of fifteen workers (twelve honest, three liars) on a greedy generate job.
pub(crate) async fn generate() -> Found {
    let mut found = Found::default();
    let gguf = ModelPaths::new(gleaner_test_utils::gleaner_home()).smollm_gguf();
    assert!(
        gguf.is_file(),
        "{} is missing: run scripts/setup",
        gguf.display()
    );
    let kind = || GenerateKind::new(gguf.clone(), device(), DecoderChoice::Auto);
    let strategies: Vec<(&'static str, Tamper<GenerateKind>)> = vec![
        (
            "a token substituted",
            Box::new(|k, _, _, out| substitute_tokens(k, out)),
        ),
        (
            "a sampled output claimed as greedy",
            Box::new(|k, task, input, _| {
                let params = TaskParams {
                    sampling: Some(SamplingParams {
                        temperature_milli: 1500,
                        top_p_milli: 1000,
                        seed: 7,
                    }),
                    ..task.params.clone()
                };
                let sampled = TaskRef {
                    params: &params,
                    ..*task
                };
                k.run(&sampled, input)
            }),
        ),
        (
            "an early stop",
            Box::new(|k, _, _, out| {
                let g = k.generator()?;
                let mut outputs = decode_generations(&out)?;
                for o in &mut outputs {
                    o.ids.truncate(1);
                    o.text = g.text(&o.ids)?;
                }
                Ok(encode_generations(&outputs))
            }),
        ),
    ];
    let liars = strategies
        .into_iter()
        .map(|(name, tamper)| (name, Arc::new(Cheat::with(kind(), tamper))))
        .collect();
    let reference = kind();
    let prompts: Vec<String> = (0..15)
        .map(|i| format!("Write one short sentence about the number {i}."))
        .collect();
    run(
        &mut found,
        "generate",
        12,
        liars,
        |net| {
            let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
            net.submit_generate(&refs, 1, 3, &["--chat", "--max-tokens", "8"])
        },
        |m, i, input, out| {
            let task = TaskRef {
                job_id: U256::ZERO,
                index: i,
                model: &m.model,
                params: &m.params,
            };
            match (reference.run(&task, input), decode_generations(out)) {
                (Ok(want), Ok(got)) => decode_generations(&want).is_ok_and(|w| w == got),
                _ => false,
            }
        },
    )
    .await;
    found
}
