//! The explorer: read-only, server-rendered web pages of the network, a job and a worker, live
//! while things change. The coordinator serves them at `/` next to its API; `gleaner explorer`
//! serves the same pages apart from any coordinator ([`serve_explorer`]).
//!
//! | route | what |
//! |---|---|
//! | `/` | the network: jobs with progress and escrow, workers, throughput, totals paid and slashed |
//! | `/jobs/{id}` | a job: task grid and replicas, payouts, refund, report, transactions, audit |
//! | `/workers/{address}` | a worker: stake, earnings, reputation over time, slashes with evidence |
//! | `/explorer/style.css`, `/explorer/live.js` | the only assets (nothing is fetched from elsewhere) |
//! | `/explorer/api/{network,jobs/{id},workers/{address}}` | the coordinator's view as JSON, for a standalone explorer |
//!
//! Where numbers come from, and the pages label each section so:
//! - **money** (escrow, payouts, refunds, fees, stakes, slashes) from chain events and contract
//!   reads through the RPC ([`chain`]), and from the settlement report the verifier published,
//!   fetched from the coordinator and kept only if its keccak256 is the on-chain `reportHash`;
//! - **the audit's verdict** from `gleaner_audit::audit_job`, the code `gleaner audit job` runs;
//! - **task and replica progress** from the coordinator ([`source`]): its own store, or another
//!   coordinator's `/explorer/api` routes.
//!
//! Pages work without JavaScript; `live.js` re-fetches a page every two seconds and swaps its
//! `<main>` while the page says it can still change. Bad input in a URL gets an HTML 400 (not a
//! number, too large, not an address) or 404 (no such job or worker).

mod chain;
mod html;
mod pages;
mod source;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use source::{Distance, JobData, NetworkData, ReplicaData, WorkerData};

use self::chain::{ChainBook, Report};
use self::pages::{JobLine, JobPage, Token, WorkerPage};
use self::source::{Source, unix_now};
use crate::db::Store;
use crate::error::{Error, Result};

/// Longest a page may take to gather its data.
const PAGE_SECS: u64 = 30;
/// Settled jobs whose audit the network page runs per visit (the rest show once audited).
const AUDITS_PER_VISIT: usize = 5;

/// Where the explorer reads the chain and the coordinator.
#[derive(Debug, Clone)]
pub struct ExplorerConfig {
    /// JSON-RPC endpoint of the chain.
    pub rpc_url: String,
    /// JobMarket address (registry and token are read from it).
    pub market: Address,
    /// First block to read events from (the market's deployment block, or 0).
    pub from_block: u64,
    /// The coordinator whose published reports the pages check and audit (and, for a standalone
    /// explorer, whose view of tasks they show).
    pub coordinator_url: String,
}

/// The explorer's state (cheap to clone).
#[derive(Clone)]
pub struct Explorer {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    chain: ChainBook,
    token: Token,
}

impl std::fmt::Debug for Explorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Explorer")
            .field("source", &self.inner.source)
            .field("chain", &self.inner.chain)
            .finish()
    }
}

impl Explorer {
    /// The explorer of a coordinator: its view from `store`, where workers seen within
    /// `active_secs` count as active.
    pub async fn for_store(
        store: Store,
        active_secs: u64,
        config: &ExplorerConfig,
    ) -> Result<Self> {
        Self::new(Source::store(store, active_secs), config).await
    }

    /// A standalone explorer: the coordinator's view from `config.coordinator_url`'s
    /// `/explorer/api` routes.
    pub async fn standalone(config: &ExplorerConfig) -> Result<Self> {
        Self::new(Source::http(&config.coordinator_url)?, config).await
    }

    async fn new(source: Source, config: &ExplorerConfig) -> Result<Self> {
        let chain = ChainBook::connect(
            &config.rpc_url,
            config.market,
            config.from_block,
            &config.coordinator_url,
        )
        .await?;
        let token = Token {
            symbol: chain.symbol.clone(),
            decimals: chain.decimals,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                source,
                chain,
                token,
            }),
        })
    }

    /// The pages and assets, and (for a coordinator's explorer) the `/explorer/api` routes.
    pub fn router(&self) -> Router {
        let mut r = Router::new()
            .route("/", get(network_page))
            .route("/jobs/{id}", get(job_page))
            .route("/workers/{address}", get(worker_page))
            .route("/explorer/style.css", get(style))
            .route("/explorer/live.js", get(script));
        if matches!(self.inner.source, Source::Store { .. }) {
            r = r
                .route("/explorer/api/network", get(api_network))
                .route("/explorer/api/jobs/{id}", get(api_job))
                .route("/explorer/api/workers/{address}", get(api_worker));
        }
        r.with_state(self.clone())
    }
}

/// Serves the explorer alone on `listen` until `shutdown` (`gleaner explorer`).
pub async fn serve_explorer(
    listen: SocketAddr,
    config: ExplorerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let explorer = Explorer::standalone(&config).await?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::BadRequest(format!(
            "cannot listen on {listen}: {e}; choose another --listen address"
        ))
    })?;
    tracing::info!(target: "coordinator::explorer", addr = %listen, coordinator = %config.coordinator_url, "explorer listening");
    let router = explorer
        .router()
        .fallback(|| async {
            PageError::NotFound("No such page".into(), "Try the network page.".into())
        })
        .layer(tower_http::trace::TraceLayer::new_for_http());
    crate::serve_http(listener, router, crate::ServerSettings::default(), shutdown).await;
    Ok(())
}

/// What a page handler can fail with: an HTML page with the status.
#[derive(Debug)]
enum PageError {
    /// 400: the URL is malformed.
    BadRequest(String, String),
    /// 404: nothing there.
    NotFound(String, String),
    /// 5xx: the chain or the coordinator failed (logged).
    Internal(Error),
}

impl From<Error> for PageError {
    fn from(e: Error) -> Self {
        Self::Internal(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, detail) = match self {
            Self::BadRequest(t, d) => (StatusCode::BAD_REQUEST, t, d),
            Self::NotFound(t, d) => (StatusCode::NOT_FOUND, t, d),
            Self::Internal(e) => {
                tracing::error!(target: "coordinator::explorer", error = %e, "page failed");
                (
                    StatusCode::BAD_GATEWAY,
                    "The chain or the coordinator did not answer".into(),
                    "The explorer could not read what this page shows. Retry in a moment.".into(),
                )
            }
        };
        html_response(status, pages::error(status.as_u16(), &title, &detail))
    }
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(h);
    r
}

/// No caching, no sniffing, nothing loaded from elsewhere.
fn secure(h: &mut axum::http::HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", html::STYLE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", html::SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Runs a page's work within [`PAGE_SECS`].
async fn timed<T>(work: impl Future<Output = Result<T, PageError>>) -> Result<T, PageError> {
    tokio::time::timeout(Duration::from_secs(PAGE_SECS), work)
        .await
        .unwrap_or_else(|_| {
            Err(PageError::Internal(Error::Chain(format!(
                "page took over {PAGE_SECS} s"
            ))))
        })
}

/// The path parameter, or 400 when it does not decode.
fn param(p: Result<Path<String>, PathRejection>) -> Result<String, PageError> {
    p.map(|Path(s)| s).map_err(|e| {
        PageError::BadRequest(
            "Malformed address".into(),
            format!(
                "{}; percent-encode path parameters as UTF-8.",
                e.body_text()
            ),
        )
    })
}

/// A job id from a URL: decimal digits only, below 2^256.
fn parse_job_id(text: &str) -> Result<U256, PageError> {
    let shown: String = text.chars().take(40).collect();
    let shown = if shown.len() < text.len() {
        format!("{shown}…")
    } else {
        shown
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PageError::BadRequest(
            "Not a job id".into(),
            format!("“{shown}” is not a job id: job ids are decimal numbers, as in /jobs/1."),
        ));
    }
    U256::from_str_radix(text, 10).map_err(|_| {
        PageError::BadRequest(
            "Job id too large".into(),
            format!(
                "{shown} is larger than any job id can be (job ids are below 2^256); check the link."
            ),
        )
    })
}

/// A worker address from a URL: `0x` and 40 hex digits.
fn parse_address(text: &str) -> Result<Address, PageError> {
    let ok = text.len() == 42
        && text.starts_with("0x")
        && text[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        let shown: String = text.chars().take(50).collect();
        return Err(PageError::BadRequest(
            "Not an address".into(),
            format!(
                "“{shown}” is not a worker address: use 0x followed by 40 hex digits, as in /workers/0x70997970C51812dc3A010C7d01b50e0d17dc79C8."
            ),
        ));
    }
    text.parse().map_err(|_| {
        PageError::BadRequest("Not an address".into(), format!("“{text}” does not parse."))
    })
}

async fn network_page(State(x): State<Explorer>) -> Result<Response, PageError> {
    timed(async {
        let i = &x.inner;
        let net = i.source.network().await?;
        let ledger = i.chain.ledger().await?;
        let totals = i.chain.totals().await?;
        let mut ids: Vec<U256> = net.jobs.iter().map(|j| j.job_id).collect();
        ids.extend(ledger.jobs.keys().rev().take(200).copied());
        ids.sort_by(|a, b| b.cmp(a));
        ids.dedup();
        let mut lines = Vec::new();
        let mut audits = 0;
        for id in ids {
            let chain = ledger.jobs.get(&id);
            let mut verdict = None;
            if let Some(s) = chain.and_then(|c| c.settled.as_ref()) {
                verdict = i.chain.cached_verdict(id, s.tx).await;
                if verdict.is_none() && audits < AUDITS_PER_VISIT {
                    audits += 1;
                    verdict = Some(i.chain.verdict(id, s.tx).await);
                }
            }
            lines.push(JobLine {
                id,
                coord: net.jobs.iter().find(|j| j.job_id == id),
                chain,
                verdict,
            });
        }
        Ok(html_response(
            StatusCode::OK,
            pages::network(i.chain.market, &net, &ledger, &totals, &lines, &i.token),
        ))
    })
    .await
}

async fn job_page(
    State(x): State<Explorer>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, PageError> {
    let id = parse_job_id(&param(id)?)?;
    timed(async {
        let i = &x.inner;
        let coord = i.source.job(id).await?;
        let ledger = i.chain.ledger().await?;
        let chain = ledger.jobs.get(&id);
        if coord.is_none() && chain.is_none_or(|c| c.created.is_none()) {
            let known = ledger.jobs.keys().next_back().copied().unwrap_or_default();
            return Err(PageError::NotFound(
                format!("No job {id}"),
                format!(
                    "Job {id} is neither on the chain nor registered with this coordinator (the newest job on the chain is {known})."
                ),
            ));
        }
        let (mut report, mut verdict, mut settled_at) = (None, None, None);
        if let Some(s) = chain.and_then(|c| c.settled.as_ref()) {
            report = Some(i.chain.report(id, s.ev.reportHash).await);
            verdict = Some(i.chain.verdict(id, s.tx).await);
            settled_at = i.chain.block_time(s.block).await;
        }
        let p = JobPage {
            id,
            coord: coord.as_ref(),
            chain,
            report: report.as_ref(),
            verdict: verdict.as_ref(),
            settled_at,
            now: unix_now(),
        };
        Ok(html_response(StatusCode::OK, pages::job(&p, &i.token)))
    })
    .await
}

async fn worker_page(
    State(x): State<Explorer>,
    address: Result<Path<String>, PathRejection>,
) -> Result<Response, PageError> {
    let address = parse_address(&param(address)?)?;
    timed(async {
        let i = &x.inner;
        let coord = i.source.worker(address).await?;
        let ledger = i.chain.ledger().await?;
        let chain = ledger.workers.get(&address);
        let stake = i.chain.stake_now(address).await?;
        if coord.worker.is_none()
            && coord.replicas.is_empty()
            && chain.is_none()
            && stake.stake.is_zero()
            && stake.unbonding.is_zero()
        {
            return Err(PageError::NotFound(
                "No such worker".into(),
                format!(
                    "{address} never staked on this market and never signed in to this coordinator."
                ),
            ));
        }
        // Settled jobs the worker took part in, oldest first (at most the newest 50).
        let mut jobs: Vec<U256> = coord.replicas.iter().map(|r| r.job_id).collect();
        if let Some(c) = chain {
            jobs.extend(c.paid.iter().map(|p| p.ev.jobId));
            jobs.extend(c.slashes.iter().map(|s| s.ev.jobId));
        }
        jobs.sort();
        jobs.dedup();
        let settled: Vec<(
            U256,
            &chain::At<gleaner_protocol::bindings::JobMarket::JobSettled>,
        )> = jobs
            .iter()
            .filter_map(|j| {
                ledger
                    .jobs
                    .get(j)
                    .and_then(|c| c.settled.as_ref())
                    .map(|s| (*j, s))
            })
            .collect();
        let mut reports = Vec::new();
        let skip = settled.len().saturating_sub(50);
        for (job, s) in settled.iter().skip(skip) {
            if let Report::Verified(r) = i.chain.report(*job, s.ev.reportHash).await {
                reports.push((*job, i.chain.block_time(s.block).await, r));
            }
        }
        let mut slash_reports = Vec::new();
        for s in chain.map(|c| c.slashes.as_slice()).unwrap_or_default() {
            let job = s.ev.jobId;
            if let Some(settled) = ledger.jobs.get(&job).and_then(|c| c.settled.as_ref()) {
                let r = i.chain.report(job, settled.ev.reportHash).await;
                slash_reports.push((job, settled.ev.reportHash, r));
            }
        }
        let p = WorkerPage {
            address,
            coord: &coord,
            chain,
            stake: &stake,
            reports,
            slash_reports,
            chain_id: i.chain.chain_id,
            market: i.chain.market,
        };
        Ok(html_response(StatusCode::OK, pages::worker(&p, &i.token)))
    })
    .await
}

/// JSON of the coordinator's view, for a standalone explorer; errors as the API's JSON.
async fn api_network(State(x): State<Explorer>) -> Result<axum::Json<NetworkData>> {
    Ok(axum::Json(x.inner.source.network().await?))
}

async fn api_job(
    State(x): State<Explorer>,
    id: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<JobData>> {
    let id = api_param(id).and_then(|s| {
        parse_job_id(&s).map_err(|_| Error::BadRequest(format!("{s:?} is not a decimal job id")))
    })?;
    x.inner
        .source
        .job(id)
        .await?
        .map(axum::Json)
        .ok_or_else(|| Error::NotFound(format!("job {id} is not registered")))
}

async fn api_worker(
    State(x): State<Explorer>,
    address: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<WorkerData>> {
    let address = api_param(address).and_then(|s| {
        parse_address(&s).map_err(|_| Error::BadRequest(format!("{s:?} is not an address")))
    })?;
    Ok(axum::Json(x.inner.source.worker(address).await?))
}

fn api_param(p: Result<Path<String>, PathRejection>) -> Result<String> {
    p.map(|Path(s)| s)
        .map_err(|e| Error::BadRequest(e.body_text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_in_urls() {
        assert_eq!(parse_job_id("7").unwrap(), U256::from(7));
        assert_eq!(parse_job_id("007").unwrap(), U256::from(7));
        let max = U256::MAX.to_string();
        assert_eq!(parse_job_id(&max).unwrap(), U256::MAX);
        for bad in ["", "abc", "-1", "1.5", " 1", "0x10", "１"] {
            assert!(
                matches!(parse_job_id(bad), Err(PageError::BadRequest(t, _)) if t == "Not a job id"),
                "{bad:?}"
            );
        }
        let huge = "9".repeat(100);
        assert!(matches!(
            parse_job_id(&huge),
            Err(PageError::BadRequest(t, d)) if t == "Job id too large" && d.contains('…')
        ));
    }

    #[test]
    fn addresses_in_urls() {
        let a = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
        assert_eq!(parse_address(a).unwrap(), a.parse::<Address>().unwrap());
        assert_eq!(
            parse_address(&a.to_lowercase()).unwrap(),
            a.parse::<Address>().unwrap()
        );
        for bad in [
            "",
            "0x12",
            "hello",
            &a[2..],
            &format!("{a}00"),
            "0xZZ997970C51812dc3A010C7d01b50e0d17dc79C8",
        ] {
            assert!(
                matches!(parse_address(bad), Err(PageError::BadRequest(..))),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn error_pages_are_html_with_their_status() {
        let r = PageError::NotFound("No job 9".into(), "none".into()).into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("No job 9") && body.contains("404"));
    }
}
