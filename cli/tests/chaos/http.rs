//! The coordinator's HTTP face under attack: signatures replayed from other deployments,
//! fuzzed requests to every route, and slow or oversized clients.

use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use alloy::sol_types::Eip712Domain;
use gleaner_client::Client;
use gleaner_protocol::api::{Capabilities, GRANT_HEADER, SubmitResult};
use gleaner_protocol::eip712;
use gleaner_protocol::task::KindId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Found;
use crate::net::Net;

fn caps() -> Capabilities {
    Capabilities {
        adapter: "cpu".into(),
        backend: "flex".into(),
        memory_bytes: 0,
        gflops: 1.0,
        kinds: vec![KindId::EMBED],
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What the coordinator says to a raw request: its status, or 0 when it said nothing.
async fn status_of(http: &reqwest::Client, req: reqwest::RequestBuilder) -> u16 {
    let _ = http;
    match req.send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Sign-ins, results and read grants signed for another chain id or another market are
/// refused (401) and change nothing; the same messages signed for this deployment work.
pub(crate) async fn replay_across_domains() -> Found {
    let mut found = Found::default();
    let net = Net::start(1).await;
    let _coord = net.coordinator(60).await;
    let job = net.submit(4, 2, 1);
    net.wait_state(job, "posted", 60).await;
    let http = reqwest::Client::new();
    let chain_id = net.chain.anvil.chain_id();
    let ours = eip712::domain(chain_id, net.d.market);
    let foreign: [(&str, Eip712Domain); 2] = [
        (
            "another chain id",
            eip712::domain(chain_id + 1, net.d.market),
        ),
        (
            "another market",
            eip712::domain(chain_id, Address::repeat_byte(0x42)),
        ),
    ];
    let worker = &net.workers[0];
    let mut refused = 0;
    let mut tried = 0;
    for (what, domain) in &foreign {
        // Sign-in.
        let body =
            gleaner_client::sign::sign_in(worker, domain, caps(), 1 + tried, now() + 300).unwrap();
        let s = status_of(
            &http,
            http.post(format!("{}/v1/sign-in", net.api)).json(&body),
        )
        .await;
        tried += 1;
        refused += u64::from(s == 401);
        found.row(
            format!("replay: sign-in signed for {what}"),
            "401",
            s.to_string(),
            s == 401,
        );
        // Job registration (of the job this coordinator already serves).
        let manifest = Client::new(&net.api)
            .unwrap()
            .job_results(job)
            .await
            .unwrap()
            .manifest;
        let body = gleaner_client::sign::register_job(
            &net.requester,
            domain,
            job,
            manifest.as_bytes(),
            now() + 300,
        )
        .unwrap();
        let s = status_of(&http, http.post(format!("{}/v1/jobs", net.api)).json(&body)).await;
        tried += 1;
        refused += u64::from(s == 401);
        found.row(
            format!("replay: job registration signed for {what}"),
            "401",
            s.to_string(),
            s == 401,
        );
        // Read grant.
        let grant = gleaner_client::sign::read_grant(
            &net.requester,
            domain,
            job,
            net.requester.address(),
            now() + 300,
        )
        .unwrap();
        let input = {
            let r = Client::new(&net.api)
                .unwrap()
                .job_results(job)
                .await
                .unwrap();
            gleaner_protocol::task::JobManifest::from_canonical(r.manifest.as_bytes())
                .unwrap()
                .tasks[0]
                .input_hash
        };
        let s = status_of(
            &http,
            http.get(format!("{}/v1/blobs/{input}", net.api))
                .header(GRANT_HEADER, grant.token()),
        )
        .await;
        tried += 1;
        refused += u64::from(s == 401);
        found.row(
            format!("replay: read grant signed for {what}"),
            "401",
            s.to_string(),
            s == 401,
        );
    }
    // A result signed for another domain, by a worker holding the lease.
    let mut client = Client::new(&net.api).unwrap();
    client
        .sign_in(worker, &ours, caps(), Duration::from_secs(300))
        .await
        .unwrap();
    let lease = client.lease(5_000).await.unwrap().expect("a lease");
    let out = client.put_blob(b"an output".to_vec()).await.unwrap();
    for (what, domain) in &foreign {
        let body = SubmitResult {
            lease_id: lease.lease_id.clone(),
            task_hash: lease.task_hash,
            result_hash: out,
            signature: gleaner_client::sign::task_result(worker, domain, lease.task_hash, out)
                .unwrap(),
        };
        let err = client.submit(&body).await.err();
        let s = err.as_ref().and_then(|e| e.refused_status()).unwrap_or(204);
        tried += 1;
        refused += u64::from(s == 401);
        found.row(
            format!("replay: result signed for {what}"),
            "401",
            s.to_string(),
            s == 401,
        );
    }
    let st = client.job_status(job).await.unwrap();
    found.row(
        "replay: state after the refusals",
        "unchanged (0 replicas done)",
        format!("{} replicas done", st.replicas_done),
        st.replicas_done == 0,
    );
    found.add("replays_tried", tried);
    found.add("replays_refused", refused);
    found
}

/// A small deterministic generator (xorshift), so a failing case can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// Requests to every route with random methods, path segments, headers and bodies (valid
/// shapes with fields replaced, truncations, random bytes): no 5xx, no dropped connection,
/// and the job's state and the coordinator's counters are the same afterwards.
pub(crate) async fn fuzz() -> Found {
    const REQUESTS: u64 = 5_000;
    let mut found = Found::default();
    let net = Net::start(1).await;
    let _coord = net.coordinator(60).await;
    let job = net.submit(4, 2, 1);
    net.wait_state(job, "posted", 60).await;
    let client = Client::new(&net.api).unwrap();
    let snapshot = || async {
        let st = client.job_status(job).await.unwrap();
        let metrics = reqwest::get(format!("{}/metrics", net.api))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let counters: Vec<String> = metrics
            .lines()
            .filter(|l| {
                [
                    "leases_total",
                    "results_total",
                    "decisions_total",
                    "jobs_registered",
                    "sign_ins",
                ]
                .iter()
                .any(|k| l.contains(k))
                    && !l.starts_with('#')
            })
            .map(str::to_owned)
            .collect();
        (serde_json::to_string(&st).unwrap(), counters)
    };
    let before = snapshot().await;
    assert!(before.1.len() >= 4, "the counters compared: {:?}", before.1);
    let hash = B256::repeat_byte(0x11).to_string();
    let segments = [
        "1".to_owned(),
        job.to_string(),
        "0".into(),
        "-1".into(),
        "1e9".into(),
        "99999999999999999999999999999999999999999999999999999999999999999999999999999999".into(),
        "0x".into(),
        hash.clone(),
        format!("{hash}00"),
        "%FF%FE%00".into(),
        "..%2F..%2Fetc%2Fpasswd".into(),
        "%C3%BCml%C3%A4ut".into(),
        "a".repeat(600),
        String::new(),
    ];
    let routes = [
        "/v1/info",
        "/healthz",
        "/metrics",
        "/v1/jobs",
        "/v1/jobs/{}",
        "/v1/jobs/{}/results",
        "/v1/blobs/{}",
        "/v1/sign-in",
        "/v1/leases",
        "/v1/leases/{}/release",
        "/v1/results",
        "/v1/verifier/work",
        "/v1/verifier/decisions",
        "/v1/verifier/settled",
        "/{}",
        "/v1/{}/{}",
    ];
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"];
    let shapes = [
        serde_json::json!({"address": Address::repeat_byte(1), "capabilities": caps(), "nonce": 1, "expiry": now() + 60, "signature": "0x00"}),
        serde_json::json!({"wait_ms": 10}),
        serde_json::json!({"lease_id": "00", "task_hash": hash, "result_hash": hash, "signature": "0x"}),
        serde_json::json!({"job_id": job, "index": 0, "verdict": "accept", "result": hash, "quorum": []}),
        serde_json::json!({"job_id": job, "report_hash": hash, "tx_hash": hash}),
        serde_json::json!({"job_id": job, "manifest": "{}", "expiry": 1, "signature": "0x"}),
    ];
    let odd = [
        serde_json::json!(null),
        serde_json::json!(-1),
        serde_json::json!(u64::MAX),
        serde_json::json!("99999999999999999999999999999999999999999999"),
        serde_json::json!(1e308),
        serde_json::json!([]),
        serde_json::json!({"a": {"b": [1, 2, {"c": "d"}]}}),
        serde_json::json!("\u{0}\u{ffff}"),
    ];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut rng = Rng(0x5EED_0000_0000_0001);
    let (mut server_errors, mut dropped) = (0u64, 0u64);
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    let mut first_bad = None;
    for n in 0..REQUESTS {
        let mut path = rng.pick(&routes).to_string();
        while path.contains("{}") {
            let seg: &String = rng.pick(&segments[..]);
            path = path.replacen("{}", seg, 1);
        }
        // Mostly a method the route takes, so that most requests reach a handler.
        let method = if rng.next() % 10 < 7 {
            match path.as_str() {
                p if p.starts_with("/v1/blobs/") && rng.next().is_multiple_of(2) => "PUT",
                "/v1/info" | "/healthz" | "/metrics" | "/v1/verifier/work" => "GET",
                p if p.starts_with("/v1/jobs/") || p.starts_with("/v1/blobs/") => "GET",
                _ => "POST",
            }
        } else {
            *rng.pick(&methods)
        };
        let body: Vec<u8> = match rng.next() % 5 {
            0 => Vec::new(),
            1 => (0..rng.next() % 200).map(|_| rng.next() as u8).collect(),
            2 => {
                let s = serde_json::to_vec(rng.pick(&shapes)).unwrap();
                let cut = (rng.next() as usize) % (s.len() + 1);
                s[..cut].to_vec()
            }
            _ => {
                let mut v = rng.pick(&shapes).clone();
                if let Some(obj) = v.as_object_mut() {
                    let keys: Vec<String> = obj.keys().cloned().collect();
                    let k = rng.pick(&keys).clone();
                    obj.insert(k, rng.pick(&odd).clone());
                }
                serde_json::to_vec(&v).unwrap()
            }
        };
        let mut req = http
            .request(method.parse().unwrap(), format!("{}{path}", net.api))
            .body(body);
        if rng.next().is_multiple_of(2) {
            req = req.header("content-type", "application/json");
        }
        match rng.next() % 4 {
            0 => req = req.header("authorization", "Bearer 00"),
            1 => req = req.header("authorization", format!("Bearer {}", "f".repeat(64))),
            2 => req = req.header(GRANT_HEADER, format!("{job}.{}.1.0x00", Address::ZERO)),
            _ => {}
        }
        let s = status_of(&http, req).await;
        *statuses.entry(s).or_default() += 1;
        if s >= 500 || s == 0 {
            if s == 0 {
                dropped += 1;
            } else {
                server_errors += 1;
            }
            first_bad.get_or_insert(format!("#{n}: {method} {path} -> {s}"));
        }
    }
    let after = snapshot().await;
    let alive = reqwest::get(format!("{}/healthz", net.api)).await.is_ok();
    found.add("fuzz_requests", REQUESTS);
    found.add("fuzz_5xx", server_errors);
    found.add("fuzz_dropped", dropped);
    let classes: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
    found.row(
        format!("fuzz: {REQUESTS} random requests, every route"),
        "0 5xx, 0 dropped, alive",
        format!(
            "{server_errors} 5xx, {dropped} dropped, alive {alive} [{}]{}",
            classes.join(" "),
            first_bad
                .map(|b| format!(" first: {b}"))
                .unwrap_or_default()
        ),
        server_errors == 0 && dropped == 0 && alive,
    );
    found.row(
        "fuzz: state afterwards",
        "job and counters unchanged",
        if before == after {
            "unchanged".to_owned()
        } else {
            format!("{before:?} -> {after:?}")
        },
        before == after,
    );
    found
}

/// Reads what the server sends on `s` until it closes or `limit` passes: (status, body).
async fn answer(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Some((status, body))
}

/// 200 slow connections (headers never finished, bodies never sent) while an honest worker
/// signs in and leases; each slow one is answered with a 4xx (or closed) within 5 s; an
/// oversized declaration gets 413 at once and oversized headers 431, with the JSON body.
pub(crate) async fn slow_clients() -> Found {
    let mut found = Found::default();
    let net = Net::start(1).await;
    let _coord = net
        .coordinator_on(
            &net.sqlite("coordinator"),
            60,
            &[
                "--header-timeout-secs",
                "2",
                "--request-timeout-secs",
                "2",
                "--max-wait-ms",
                "1000",
            ],
        )
        .await;
    let job = net.submit(4, 2, 1);
    net.wait_state(job, "posted", 60).await;
    let addr = net.api.trim_start_matches("http://").to_owned();
    let t0 = Instant::now();
    let mut slow = Vec::new();
    for i in 0..200 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = if i % 2 == 0 {
            "GET /v1/info HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_owned()
        } else {
            format!(
                "PUT /v1/blobs/{} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
                B256::ZERO
            )
        };
        s.write_all(head.as_bytes()).await.unwrap();
        slow.push(s);
    }
    // An honest worker is served meanwhile.
    let honest = Instant::now();
    let mut client = Client::new(&net.api).unwrap();
    let ours = eip712::domain(net.chain.anvil.chain_id(), net.d.market);
    let signed = client
        .sign_in(&net.workers[0], &ours, caps(), Duration::from_secs(300))
        .await
        .is_ok();
    let leased = client.lease(1_000).await.is_ok_and(|l| l.is_some());
    let honest_secs = honest.elapsed().as_secs_f64();
    found.row(
        "slow: honest worker beside 200 slow connections",
        "signs in and leases within 5 s",
        format!("sign-in {signed}, lease {leased}, {honest_secs:.2} s"),
        signed && leased && honest_secs < 5.0,
    );
    let mut answered = 0u64;
    let mut worst = 0f64;
    let mut codes = std::collections::BTreeMap::<u16, u64>::new();
    for mut s in slow {
        let left = Duration::from_secs(5).saturating_sub(t0.elapsed()) + Duration::from_millis(500);
        let a = answer(&mut s, left).await;
        let code = a.as_ref().map_or(0, |a| a.0);
        *codes.entry(code).or_default() += 1;
        // A 4xx, or a close without an answer (headers never completed), within the bound.
        let closed = s.read(&mut [0u8; 1]).await.is_ok_and(|n| n == 0);
        if ((400..500).contains(&code) || closed) && t0.elapsed() < Duration::from_secs(6) {
            answered += 1;
        }
        worst = worst.max(t0.elapsed().as_secs_f64());
    }
    found.add("slow_connections", 200);
    found.add("slow_answered", answered);
    let codes: Vec<String> = codes.iter().map(|(c, n)| format!("{c}:{n}")).collect();
    found.row(
        "slow: 100 slow headers + 100 bodies never sent",
        "each 4xx or closed within 5 s",
        format!("{answered}/200 [{}], last at {worst:.1} s", codes.join(" ")),
        answered == 200,
    );
    // Oversized: declared and real.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let t = Instant::now();
    s.write_all(
        format!(
            "PUT /v1/blobs/{} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n",
            B256::ZERO
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let a = answer(&mut s, Duration::from_secs(5)).await;
    let ok = a
        .as_ref()
        .is_some_and(|(c, b)| *c == 413 && b.contains("\"code\""));
    found.row(
        "slow: a body declared at 1 GB",
        "413 with the JSON body at once",
        format!("{:?} in {:.2} s", a.map(|a| a.0), t.elapsed().as_secs_f64()),
        ok && t.elapsed() < Duration::from_secs(5),
    );
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        format!(
            "GET /v1/info HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(32 << 10)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let a = answer(&mut s, Duration::from_secs(5)).await;
    let ok = a
        .as_ref()
        .is_some_and(|(c, b)| *c == 431 && b.contains("\"code\""));
    found.row(
        "slow: 32 KiB of headers",
        "431 with the JSON body",
        format!("{:?}", a.map(|a| a.0)),
        ok,
    );
    let _ = U256::ZERO;
    found
}
