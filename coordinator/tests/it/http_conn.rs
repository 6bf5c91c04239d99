//! The HTTP server over real sockets: slow, idle, oversized and surplus clients each get their
//! answer (status and JSON error body) within a bound, and honest clients keep being served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use axum::http::StatusCode;
use gleaner_coordinator::{ApiSettings, ServerSettings, Store, app, serve_http};
use gleaner_protocol::api::ApiError;
use gleaner_protocol::blob::blob_hash;
use gleaner_protocol::eip712;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::common::*;

/// A coordinator's HTTP server on a free port, over a [`Harness`]'s state.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(h: &Harness, settings: ServerSettings) -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").await.unwrap(), h, settings)
    }

    fn on(listener: TcpListener, h: &Harness, settings: ServerSettings) -> Self {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let router = app(h.state.clone());
        let task = tokio::spawn(serve_http(listener, router, settings, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// Sends `head` (a whole request, `Connection: close`) and reads the answer to the end.
    async fn request(&self, head: &str) -> Answer {
        let mut s = self.connect().await;
        s.write_all(head.as_bytes()).await.unwrap();
        read_answer(&mut s).await
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP answer read off a socket.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    #[track_caller]
    fn error(&self) -> ApiError {
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{}",
            self.head
        );
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: not an ApiError body: {:?}\n{}",
                String::from_utf8_lossy(&self.body),
                self.head
            )
        })
    }
}

/// Reads until the server closes (at most 10 s) and parses one answer.
async fn read_answer(s: &mut TcpStream) -> Answer {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut bytes))
        .await
        .expect("the server closes the connection")
        .expect("read");
    parse_answer(&bytes)
}

#[track_caller]
fn parse_answer(bytes: &[u8]) -> Answer {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let code = head.split(' ').nth(1).expect("a status line");
    Answer {
        status: StatusCode::from_u16(code.parse().unwrap()).unwrap(),
        head,
        body: bytes[end + 4..].to_vec(),
    }
}

/// Reads one keep-alive answer whose body has a `content-length`.
async fn read_one_answer(s: &mut TcpStream) -> Answer {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if bytes.len() >= end + 4 + len {
                return parse_answer(&bytes);
            }
        }
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed mid-answer");
        bytes.extend_from_slice(&buf[..n]);
    }
}

/// Whether the server closed `s` within `within` without sending anything.
async fn closed_silently(s: &mut TcpStream, within: Duration) -> bool {
    let mut rest = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut rest)).await {
        Ok(Ok(_)) | Ok(Err(_)) => rest.is_empty(),
        Err(_) => false,
    }
}

fn settings(header_timeout: Duration) -> ServerSettings {
    ServerSettings {
        header_timeout,
        ..ServerSettings::default()
    }
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
/// The first bytes of a request whose head never finishes.
const PARTIAL_HEAD: &str = "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ";

/// A client that sends its head one byte a second gets 408 with the JSON error body once the
/// header timeout has passed, not never.
#[tokio::test]
async fn a_head_sent_byte_by_byte_gets_408_within_the_header_timeout() {
    let h = Harness::new().await;
    let server = Server::start(&h, settings(Duration::from_secs(1))).await;
    let started = Instant::now();
    let (mut read, mut write) = server.connect().await.into_split();
    let trickle = tokio::spawn(async move {
        for b in HEALTHZ.bytes() {
            if write.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        write
    });
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut bytes))
        .await
        .expect("answered within 5 s")
        .unwrap();
    let elapsed = started.elapsed();
    let answer = parse_answer(&bytes);
    assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT, "{answer:?}");
    assert_eq!(answer.error().code, "request_timeout");
    assert!(answer.error().message.contains("did not arrive within 1 s"));
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(2500),
        "{elapsed:?}"
    );
    trickle.abort();
}

/// A connection that sends nothing, or nothing more after its answer (keep-alive), is closed
/// after the header timeout, so idle connections do not hold a slot for ever.
#[tokio::test]
async fn idle_connections_are_closed_after_the_header_timeout() {
    let h = Harness::new().await;
    let server = Server::start(&h, settings(Duration::from_secs(1))).await;
    let started = Instant::now();
    let mut silent = server.connect().await;
    let mut kept = server.connect().await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let answer = read_one_answer(&mut kept).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(closed_silently(&mut silent, Duration::from_secs(3)).await);
    assert!(closed_silently(&mut kept, Duration::from_secs(3)).await);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// While 200 slow clients hold connections (100 whose head never finishes, 100 whose declared
/// body never comes), an honest worker signs in and polls for a lease at once; then every slow
/// client gets its 408 with the JSON error body within 5 s.
#[tokio::test]
async fn two_hundred_slow_clients_do_not_starve_an_honest_worker() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let h = Harness::with_settings(store, |s| ApiSettings {
        request_secs: 1,
        max_wait_ms: 1000,
        ..s
    })
    .await;
    let server = Server::start(&h, settings(Duration::from_secs(3))).await;
    let started = Instant::now();
    let put = format!(
        "PUT /v1/blobs/{} HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n",
        blob_hash(b"never sent")
    );
    let mut slow = Vec::new();
    for i in 0..200 {
        let mut s = server.connect().await;
        let start = if i % 2 == 0 { PARTIAL_HEAD } else { &put };
        s.write_all(start.as_bytes()).await.unwrap();
        slow.push(s);
    }

    let honest = Instant::now();
    let worker = PrivateKeySigner::random();
    h.chain.eligible.lock().unwrap().insert(worker.address());
    let mut client = gleaner_client::Client::new(&server.url()).unwrap();
    let info = client.info().await.unwrap();
    assert_eq!(info.chain_id, CHAIN_ID);
    client
        .sign_in(
            &worker,
            &eip712::domain(CHAIN_ID, MARKET),
            caps(10.0),
            Duration::from_secs(300),
        )
        .await
        .unwrap();
    assert!(client.lease(0).await.unwrap().is_none());
    assert!(
        honest.elapsed() < Duration::from_secs(2),
        "the honest worker waited {:?}",
        honest.elapsed()
    );

    let answers = futures_util::future::join_all(slow.iter_mut().map(read_answer)).await;
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT, "client {i}");
        assert_eq!(answer.error().code, "request_timeout", "client {i}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// With the cap at 4 and 4 slow connections held, a fifth connection's request gets 503 with
/// the JSON error body and `Retry-After` at once; once the slow ones have timed out, service
/// resumes.
#[tokio::test]
async fn a_connection_beyond_the_cap_gets_503_until_slots_free() {
    let h = Harness::new().await;
    let server = Server::start(
        &h,
        ServerSettings {
            max_connections: 4,
            ..settings(Duration::from_secs(2))
        },
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = server.connect().await;
        s.write_all(PARTIAL_HEAD.as_bytes()).await.unwrap();
        held.push(s);
    }
    // Let the server take them all before the fifth comes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = Instant::now();
    let answer = server.request(HEALTHZ).await;
    assert!(
        refused.elapsed() < Duration::from_secs(1),
        "{:?}",
        refused.elapsed()
    );
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(answer.error().code, "unavailable");
    assert!(answer.error().message.contains("maximum of 4 connections"));
    assert!(
        answer.head.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        answer.head
    );

    // The held ones time out (408), their slots free, and the next request is served.
    for mut s in held {
        assert_eq!(
            read_answer(&mut s).await.status,
            StatusCode::REQUEST_TIMEOUT
        );
    }
    let resumed = Instant::now();
    loop {
        let answer = server.request(HEALTHZ).await;
        if answer.status == StatusCode::OK {
            break;
        }
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            resumed.elapsed() < Duration::from_secs(2),
            "slots did not free"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Headers above the API's limits (16 KiB, 100 headers) get 431 with the JSON error body;
/// heads above hyper's own limit (64 KiB) still get a 431, a bare one.
#[tokio::test]
async fn oversized_headers_get_431_with_the_json_body() {
    let h = Harness::new().await;
    let server = Server::start(&h, settings(Duration::from_secs(5))).await;
    let big = format!(
        "GET /v1/info HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(32 << 10)
    );
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /v1/info HTTP/1.1\r\nHost: t\r\n{many}Connection: close\r\n\r\n");
    for (what, head) in [("32 KiB", big), ("150 headers", many)] {
        let started = Instant::now();
        let answer = server.request(&head).await;
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
        assert_eq!(
            answer.status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "{what}: {answer:?}"
        );
        assert_eq!(answer.error().code, "headers_too_large", "{what}");
    }
    // Just below the limits: served.
    let fits = format!(
        "GET /v1/info HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(15 << 10)
    );
    assert_eq!(server.request(&fits).await.status, StatusCode::OK);
    let huge = format!(
        "GET /v1/info HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(100 << 10)
    );
    assert_eq!(
        server.request(&huge).await.status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
}

/// A path parameter whose percent-encoding is not UTF-8 is 400 with the JSON error body, in
/// process and over a socket.
#[tokio::test]
async fn a_path_that_is_not_utf8_is_400_with_the_json_body() {
    let h = Harness::new().await;
    for (method, uri) in [
        ("GET", "/v1/jobs/%FF"),
        ("GET", "/v1/jobs/%FF/results"),
        ("GET", "/v1/blobs/%C0"),
        ("PUT", "/v1/blobs/%C0"),
        ("POST", "/v1/leases/%FF%FE/release"),
    ] {
        let (s, body) = h
            .call(
                axum::http::Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{method} {uri}");
        let e = crate::http::error(&body);
        assert_eq!(e.code, "bad_request", "{method} {uri}");
        assert!(e.message.contains("UTF-8"), "{method} {uri}: {}", e.message);
    }
    let server = Server::start(&h, settings(Duration::from_secs(5))).await;
    let answer = server
        .request("GET /v1/blobs/%C0%AF HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
    assert_eq!(answer.error().code, "bad_request");
}

/// A client that stops reading its response loses its connection after the write timeout,
/// instead of holding it (and a slot) for ever.
#[tokio::test]
async fn a_client_that_does_not_read_its_response_is_dropped() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let h = Harness::with_settings(store, |s| ApiSettings {
        max_blob_bytes: 4 << 20,
        ..s
    })
    .await;
    let blob = vec![7u8; 4 << 20];
    let hash = h.put_blob(&blob).await;
    // No job names the blob: the verifier reads it (blob_access.rs has the rules).
    let token = h.sign_in(&h.verifier.clone(), 0.0, 1).await;
    // Small socket buffers (accepted sockets inherit the listener's), so that the kernel cannot
    // hold the whole answer.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 << 10).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let server = Server::on(
        socket.listen(16).unwrap(),
        &h,
        ServerSettings {
            write_timeout: Duration::from_secs(1),
            ..settings(Duration::from_secs(5))
        },
    );
    let client = TcpSocket::new_v4().unwrap();
    client.set_recv_buffer_size(16 << 10).unwrap();
    let mut s = client.connect(server.addr).await.unwrap();
    s.write_all(
        format!(
            "GET /v1/blobs/{hash} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("the server dropped the connection")
        .unwrap();
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(
        got.len() < blob.len() / 2,
        "{} of {} bytes arrived",
        got.len(),
        blob.len()
    );
}

/// On shutdown: no new connection is accepted, an idle one is closed, a request in flight
/// finishes, and a client whose head never finishes does not hold the server past the grace.
#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_within_the_grace() {
    let h = Harness::new().await;
    let mut server = Server::start(
        &h,
        ServerSettings {
            shutdown_grace: Duration::from_secs(1),
            ..settings(Duration::from_secs(30))
        },
    )
    .await;
    let mut idle = server.connect().await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_one_answer(&mut idle).await.status, StatusCode::OK);
    let mut stuck = server.connect().await;
    stuck.write_all(PARTIAL_HEAD.as_bytes()).await.unwrap();
    let body = b"in flight";
    let mut in_flight = server.connect().await;
    in_flight
        .write_all(
            format!(
                "PUT /v1/blobs/{} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                blob_hash(body),
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stopped = Instant::now();
    let _ = server.stop.take().unwrap().send(());
    assert!(closed_silently(&mut idle, Duration::from_millis(500)).await);
    in_flight.write_all(body).await.unwrap();
    let answer = read_one_answer(&mut in_flight).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    tokio::time::timeout(Duration::from_secs(3), &mut server.task)
        .await
        .expect("the server stops within the grace despite a stuck client")
        .unwrap();
    assert!(
        stopped.elapsed() < Duration::from_millis(1800),
        "{:?}",
        stopped.elapsed()
    );
    assert!(TcpStream::connect(server.addr).await.is_err());
    assert!(h.state.store().has_blob(blob_hash(body)).await.unwrap());
}

/// A settlement report grows with its job past the blob limit: the verifier (and only it)
/// uploads it under the report limit; it must be a canonical report that hashes to its path;
/// it is then an ordinary blob. (A 20,000-task job's report was 31.9 MB: above the 16 MiB blob
/// limit, so settlement stalled.)
#[tokio::test]
async fn the_verifier_uploads_a_report_larger_than_the_blob_limit() {
    use alloy::primitives::{Address, B256, Bytes, U256};
    use axum::body::Body;
    use axum::http::Request;
    use gleaner_protocol::report::{REPORT_VERSION, ReplicaEntry, SettlementReport, TaskOutcome};
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let h = Harness::with_settings(store, |s| ApiSettings {
        max_blob_bytes: 4096,
        max_report_bytes: 64 << 10,
        ..s
    })
    .await;
    let report = |tasks: u32| {
        SettlementReport {
            version: REPORT_VERSION,
            chain_id: 31337,
            market: Address::repeat_byte(0xaa),
            job_id: U256::from(1),
            spec_hash: B256::repeat_byte(2),
            tasks_root: B256::repeat_byte(3),
            tasks: (0..tasks)
                .map(|i| TaskOutcome {
                    index: i,
                    task_hash: B256::repeat_byte(4),
                    cost: 10,
                    accepted_result: Some(B256::repeat_byte(1)),
                    replicas: vec![ReplicaEntry {
                        worker: Address::repeat_byte(1),
                        result_hash: B256::repeat_byte(1),
                        signature: Bytes::from(vec![7; 65]),
                        in_quorum: true,
                    }],
                })
                .collect(),
            workers: vec![],
            slashes: vec![],
            spot_checks: None,
        }
        .canonical()
    };
    let bytes = report(100);
    assert!((4096..64 << 10).contains(&bytes.len()), "{}", bytes.len());
    let hash = blob_hash(&bytes);
    let put = |uri: String, token: Option<&str>, body: Vec<u8>| {
        let mut b = Request::builder().method("PUT").uri(uri);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(Body::from(body)).unwrap()
    };
    let vt = h.sign_in(&h.verifier.clone(), 0.0, 1).await;
    let wt = h.sign_in(&PrivateKeySigner::random(), 1.0, 1).await;
    let report_uri = format!("/v1/verifier/reports/{hash}");
    // As an ordinary blob it is too large; without the verifier's session it is refused.
    let (s, _) = h
        .call(put(format!("/v1/blobs/{hash}"), None, bytes.clone()))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _) = h.call(put(report_uri.clone(), None, bytes.clone())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = h
        .call(put(report_uri.clone(), Some(&wt), bytes.clone()))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Bytes that are not a report, or that do not hash to the path, are refused.
    let junk = vec![b'x'; 5000];
    let (s, _) = h
        .call(put(
            format!("/v1/verifier/reports/{}", blob_hash(&junk)),
            Some(&vt),
            junk,
        ))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h
        .call(put(report_uri.clone(), Some(&vt), report(101)))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Above the report limit: refused too.
    let huge = report(2_000);
    let (s, _) = h
        .call(put(
            format!("/v1/verifier/reports/{}", blob_hash(&huge)),
            Some(&vt),
            huge,
        ))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, body) = h.call(put(report_uri, Some(&vt), bytes.clone())).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (s, got) = h.get(&format!("/v1/blobs/{hash}"), Some(&vt)).await;
    assert_eq!((s, got), (StatusCode::OK, bytes));
}
