//! A small typed client of the coordinator API (`gleaner_protocol::api`).

use alloy::primitives::B256;
use alloy::primitives::U256;
use gleaner_protocol::api::{
    self, Info, JobResults, JobStatus, Lease, LeaseRequest, RegisterJob, Session, SignIn,
    SubmitResult,
};
use gleaner_protocol::blob::blob_hash;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Coordinator client; cheap to clone.
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

fn transport(e: reqwest::Error) -> Error {
    Error::Transport(e.to_string())
}

impl CoordinatorClient {
    /// A client of the coordinator at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token: None,
        }
    }

    /// Uses `token` as the Bearer token of later requests.
    pub fn with_token(mut self, token: String) -> Self {
        self.token = Some(token);
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn check(what: &str, resp: reqwest::Response) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<api::ApiError>(&body).map_or(body, |e| e.message);
        if status.is_server_error() {
            return Err(Error::Transport(format!("{what}: {status} {message}")));
        }
        Err(Error::Refused {
            what: what.to_owned(),
            status: status.as_u16(),
            message,
        })
    }

    async fn json<T: DeserializeOwned>(what: &str, resp: reqwest::Response) -> Result<T> {
        Self::check(what, resp)
            .await?
            .json()
            .await
            .map_err(transport)
    }

    /// `GET /v1/info`.
    pub async fn info(&self) -> Result<Info> {
        let r = self
            .http
            .get(self.url("/v1/info"))
            .send()
            .await
            .map_err(transport)?;
        Self::json("info", r).await
    }

    /// `POST /v1/sign-in`.
    pub async fn sign_in(&self, body: &SignIn) -> Result<Session> {
        let r = self
            .http
            .post(self.url("/v1/sign-in"))
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        Self::json("sign-in", r).await
    }

    /// `POST /v1/leases`: a lease, or `None` when no work came within `wait_ms`.
    pub async fn lease(&self, wait_ms: u32) -> Result<Option<Lease>> {
        let r = self
            .auth(self.http.post(self.url("/v1/leases")))
            .json(&LeaseRequest { wait_ms })
            .timeout(std::time::Duration::from_millis(
                u64::from(wait_ms) + 30_000,
            ))
            .send()
            .await
            .map_err(transport)?;
        if r.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Self::json("lease", r).await.map(Some)
    }

    /// `POST /v1/leases/{id}/release`.
    pub async fn release(&self, lease_id: &str) -> Result<()> {
        let r = self
            .auth(
                self.http
                    .post(self.url(&format!("/v1/leases/{lease_id}/release"))),
            )
            .send()
            .await
            .map_err(transport)?;
        Self::check("release", r).await.map(|_| ())
    }

    /// `POST /v1/results`.
    pub async fn submit(&self, body: &SubmitResult) -> Result<()> {
        let r = self
            .auth(self.http.post(self.url("/v1/results")))
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        Self::check("result", r).await.map(|_| ())
    }

    /// `GET /v1/blobs/{hash}`, checked against its sha256.
    pub async fn get_blob(&self, hash: B256) -> Result<Vec<u8>> {
        let r = self
            .http
            .get(self.url(&format!("/v1/blobs/{hash:x}")))
            .send()
            .await
            .map_err(transport)?;
        let bytes = Self::check("blob", r)
            .await?
            .bytes()
            .await
            .map_err(transport)?
            .to_vec();
        if blob_hash(&bytes) != hash {
            return Err(Error::BadBlob(format!("{hash:x}")));
        }
        Ok(bytes)
    }

    /// `PUT /v1/blobs/{sha256}`; returns the hash.
    pub async fn put_blob(&self, bytes: Vec<u8>) -> Result<B256> {
        let hash = blob_hash(&bytes);
        let r = self
            .http
            .put(self.url(&format!("/v1/blobs/{hash:x}")))
            .body(bytes)
            .send()
            .await
            .map_err(transport)?;
        Self::check("blob upload", r).await?;
        Ok(hash)
    }

    /// `POST /v1/jobs`.
    pub async fn register_job(&self, body: &RegisterJob) -> Result<JobStatus> {
        let r = self
            .http
            .post(self.url("/v1/jobs"))
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        Self::json("job registration", r).await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job_status(&self, job_id: U256) -> Result<JobStatus> {
        let r = self
            .http
            .get(self.url(&format!("/v1/jobs/{job_id}")))
            .send()
            .await
            .map_err(transport)?;
        Self::json("job status", r).await
    }

    /// `GET /v1/jobs/{id}/results`.
    pub async fn job_results(&self, job_id: U256) -> Result<JobResults> {
        let r = self
            .http
            .get(self.url(&format!("/v1/jobs/{job_id}/results")))
            .send()
            .await
            .map_err(transport)?;
        Self::json("job results", r).await
    }
}
