//! The coordinator's HTTP API, as the verifier uses it (`gleaner_protocol::api`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::{B256, Bytes};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use gleaner_protocol::api::{
    ApiError, BlobRef, Capabilities, Decision, Session, Settled, SignIn, VerifierWork,
};
use gleaner_protocol::blob::blob_hash;
use gleaner_protocol::eip712::{self, WorkerSignIn};
use gleaner_protocol::task::TaskKind;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// How long a sign-in signature stays valid (the coordinator accepts at most 10 minutes).
const SIGN_IN_EXPIRY_S: u64 = 300;

/// A client of one coordinator, with the verifier's session once signed in.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    session: Option<Session>,
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn unavailable(e: reqwest::Error) -> Error {
    Error::CoordinatorUnavailable(e.to_string())
}

impl Client {
    /// A client of the coordinator at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base_url: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Invalid(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            session: None,
        })
    }

    /// Whether a session is held that stays valid for at least `margin` more.
    pub fn signed_in(&self, margin: Duration) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.expires_at > now().as_secs().saturating_add(margin.as_secs()))
    }

    /// Forgets the session (after a 401).
    pub fn sign_out(&mut self) {
        self.session = None;
    }

    /// Signs in with the verifier key: an EIP-712 `WorkerSignIn` in the deployment's `domain`.
    pub async fn sign_in(
        &mut self,
        signer: &PrivateKeySigner,
        domain: &Eip712Domain,
    ) -> Result<&Session> {
        let capabilities = Capabilities {
            adapter: "verifier".into(),
            backend: "none".into(),
            memory_bytes: 0,
            gflops: 0.0,
            kinds: vec![TaskKind::Embed],
        };
        let t = now();
        let nonce = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        let expiry = t.as_secs() + SIGN_IN_EXPIRY_S;
        let msg = WorkerSignIn {
            worker: signer.address(),
            capabilitiesHash: capabilities.hash(),
            nonce,
            expiry,
        };
        let sig = signer
            .sign_hash_sync(&eip712::digest(&msg, domain))
            .map_err(|e| Error::Invalid(format!("cannot sign in: {e}")))?;
        let body = SignIn {
            address: signer.address(),
            capabilities,
            nonce,
            expiry,
            signature: Bytes::from(sig.as_bytes().to_vec()),
        };
        let session: Session = self.post_json("sign-in", "/v1/sign-in", &body).await?;
        Ok(self.session.insert(session))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.session {
            Some(s) => req.bearer_auth(&s.token),
            None => req,
        }
    }

    async fn check(what: &str, resp: reqwest::Response) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ApiError>(&text)
            .map(|e| format!("{}: {}", e.code, e.message))
            .unwrap_or(text);
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(Error::CoordinatorUnavailable(format!(
                "{what}: {status} {message}"
            )));
        }
        Err(Error::CoordinatorRefused {
            what: what.to_owned(),
            status: status.as_u16(),
            message,
        })
    }

    async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let resp = self
            .auth(self.http.post(self.url(path)))
            .json(body)
            .send()
            .await
            .map_err(unavailable)?;
        let resp = Self::check(what, resp).await?;
        resp.json().await.map_err(unavailable)
    }

    async fn post_no_content<B: Serialize>(&self, what: &str, path: &str, body: &B) -> Result<()> {
        let resp = self
            .auth(self.http.post(self.url(path)))
            .json(body)
            .send()
            .await
            .map_err(unavailable)?;
        Self::check(what, resp).await.map(drop)
    }

    /// `GET /v1/verifier/work`.
    pub async fn work(&self) -> Result<VerifierWork> {
        let resp = self
            .auth(self.http.get(self.url("/v1/verifier/work")))
            .send()
            .await
            .map_err(unavailable)?;
        Self::check("work", resp)
            .await?
            .json()
            .await
            .map_err(unavailable)
    }

    /// `GET /v1/blobs/{sha256}`: the bytes, `None` when the coordinator does not have them.
    /// Bytes that do not hash to `hash` are returned as they are; callers check.
    pub async fn blob(&self, hash: B256) -> Result<Option<Vec<u8>>> {
        let resp = self
            .http
            .get(self.url(&format!("/v1/blobs/{hash}")))
            .send()
            .await
            .map_err(unavailable)?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = Self::check("blob", resp).await?;
        Ok(Some(resp.bytes().await.map_err(unavailable)?.to_vec()))
    }

    /// `PUT /v1/blobs/{sha256}`: stores `bytes`, returns their sha256.
    pub async fn put_blob(&self, bytes: Vec<u8>) -> Result<B256> {
        let hash = blob_hash(&bytes);
        let resp = self
            .auth(self.http.put(self.url(&format!("/v1/blobs/{hash}"))))
            .body(bytes)
            .send()
            .await
            .map_err(unavailable)?;
        let r: BlobRef = Self::check("put blob", resp)
            .await?
            .json()
            .await
            .map_err(unavailable)?;
        if r.hash != hash {
            return Err(Error::Invalid(format!(
                "coordinator stored blob {} as {}",
                hash, r.hash
            )));
        }
        Ok(hash)
    }

    /// `POST /v1/verifier/decisions`.
    pub async fn decide(&self, decision: &Decision) -> Result<()> {
        self.post_no_content("decision", "/v1/verifier/decisions", decision)
            .await
    }

    /// `POST /v1/verifier/settled`.
    pub async fn settled(&self, settled: &Settled) -> Result<()> {
        self.post_no_content("settled", "/v1/verifier/settled", settled)
            .await
    }
}
