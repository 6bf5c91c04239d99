//! `/v1/sign-in`: a worker (staked) or the verifier signs in and gets a bearer session.

use axum::Json;
use axum::extract::State;
use gleaner_protocol::api::{Session, SignIn};
use gleaner_protocol::eip712::WorkerSignIn;

use super::{ApiJson, AppState};
use crate::db::codec::random_hex;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The role of a worker's session.
pub(super) const WORKER: &str = "worker";
/// The role of the verifier's session.
pub(super) const VERIFIER: &str = "verifier";

pub(super) async fn sign_in(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<SignIn>,
) -> Result<Json<Session>> {
    let now = s.now();
    s.check_expiry(req.expiry, now)?;
    if !req.capabilities.gflops.is_finite() || req.capabilities.gflops < 0.0 {
        return Err(Error::BadRequest(
            "gflops must be finite and non-negative".into(),
        ));
    }
    let msg = WorkerSignIn {
        worker: req.address,
        capabilitiesHash: req.capabilities.hash(),
        nonce: req.nonce,
        expiry: req.expiry,
    };
    s.verify(&msg, &req.signature, req.address)?;
    if let Some(last) = s.store().last_nonce(req.address).await?
        && req.nonce <= last
    {
        return Err(Error::Unauthorized(format!(
            "nonce {} was already used (last {last}); sign a larger one",
            req.nonce
        )));
    }
    let role = if Some(req.address) == s.settings().verifier {
        VERIFIER
    } else if s.inner.chain.is_eligible(req.address).await? {
        WORKER
    } else {
        return Err(Error::Forbidden(format!(
            "{} is not staked in the WorkerRegistry; stake first",
            req.address
        )));
    };
    let token = random_hex();
    let expires_at = now.saturating_add(s.settings().session_secs);
    let capabilities = serde_json::to_string(&req.capabilities)
        .map_err(|e| Error::Internal(format!("capabilities json: {e}")))?;
    s.store()
        .sign_in(
            req.address,
            &capabilities,
            req.capabilities.gflops,
            req.nonce,
            now,
            &token,
            role,
            expires_at,
        )
        .await?;
    Metrics::inc(&s.metrics().sign_ins);
    tracing::debug!(target: "coordinator::api", address = %req.address, role, "signed in");
    Ok(Json(Session {
        token,
        expires_at,
        role: role.to_owned(),
    }))
}
