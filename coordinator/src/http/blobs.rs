//! `/v1/blobs/{hash}`: content-addressed uploads (anyone) and downloads (those the blob's jobs
//! name: the access rules are in `gleaner_protocol::api`).

use alloy::primitives::{Address, B256};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gleaner_protocol::api::{BlobRef, GRANT_HEADER, JobState, MAX_GRANT_SECS, ReadGrant};
use gleaner_protocol::blob::blob_hash;
use gleaner_protocol::eip712;

use super::sessions::{VERIFIER, WORKER};
use super::{ApiPath, AppState, parse_hash};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

pub(super) async fn put_blob(
    State(s): State<AppState>,
    ApiPath(hash): ApiPath<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<BlobRef>> {
    let hash = parse_hash(&hash)?;
    let body = addressed_body(body, hash, s.settings().max_blob_bytes, "blob")?;
    s.store().put_blob(hash, &body).await?;
    Metrics::inc(&s.metrics().blobs);
    Ok(Json(BlobRef {
        hash,
        size: body.len() as u64,
    }))
}

/// An upload's body: at most `limit` bytes (else 413, naming `what`), hashing to `hash` (else
/// 400).
pub(super) fn addressed_body(
    body: std::result::Result<Bytes, BytesRejection>,
    hash: B256,
    limit: u64,
    what: &str,
) -> Result<Bytes> {
    let too_large = || Error::TooLarge(format!("{what} larger than {limit} bytes"));
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            Error::BadRequest(e.body_text())
        }
    })?;
    if body.len() as u64 > limit {
        return Err(too_large());
    }
    let actual = blob_hash(&body);
    if actual != hash {
        return Err(Error::BadRequest(format!(
            "the bytes hash to {actual}, not {hash}"
        )));
    }
    Ok(body)
}

pub(super) async fn get_blob(
    State(s): State<AppState>,
    ApiPath(hash): ApiPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let hash = parse_hash(&hash)?;
    may_read(&s, hash, &headers, query.as_deref()).await?;
    let bytes = s
        .store()
        .blob(hash)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no blob {hash}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// Whether the caller may read blob `hash`: a report is public; the verifier reads
/// everything; a worker, the input of a task it holds a live lease on; the requester (showing
/// a grant it signed for itself), its job's inputs and outputs; anyone with a shared grant,
/// the job's outputs once it is settled. Refusals say what would have opened it.
async fn may_read(
    s: &AppState,
    hash: B256,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<()> {
    let uses = s.store().blob_uses(hash).await?;
    if !uses.report_of.is_empty() {
        return Ok(());
    }
    if let Some((address, role)) = s.caller(headers).await? {
        if role == VERIFIER {
            return Ok(());
        }
        if role == WORKER
            && !uses.input_of.is_empty()
            && s.store().leases_input(address, hash, s.now()).await?
        {
            return Ok(());
        }
    }
    if let Some(token) = grant_token(headers, query)? {
        let grant = ReadGrant::parse(&token).map_err(|e| Error::BadRequest(e.to_string()))?;
        if let Some(job) = s.store().job(grant.job_id).await? {
            s.verify(&grant.message(), &grant.signature, job.requester)?;
            eip712::check_expiry(grant.expiry, s.now(), MAX_GRANT_SECS)
                .map_err(|e| Error::Unauthorized(format!("read grant: {e}")))?;
            let output = uses.output_of.contains(&job.job_id);
            if grant.grantee == job.requester {
                if output || uses.input_of.contains(&job.job_id) {
                    return Ok(());
                }
            } else if grant.grantee == Address::ZERO {
                if output && job.state == JobState::Settled {
                    return Ok(());
                }
                if output {
                    return Err(Error::Forbidden(format!(
                        "a shared grant opens job {}'s outputs once it is settled",
                        job.job_id
                    )));
                }
            } else {
                return Err(Error::BadRequest(
                    "a read grant names the requester itself or 0x0 (whoever holds it)".into(),
                ));
            }
        }
    }
    if uses.is_empty() {
        return Err(Error::NotFound(format!("no blob {hash}")));
    }
    Err(Error::Forbidden(format!(
        "blob {hash} is readable only by its job's requester (with a read grant), the verifier, \
         and workers leasing its task; sign in, or show a grant in `{GRANT_HEADER}`"
    )))
}

/// The grant token from the header, or else from `?grant=`.
fn grant_token(headers: &HeaderMap, query: Option<&str>) -> Result<Option<String>> {
    if let Some(v) = headers.get(GRANT_HEADER) {
        let text = v
            .to_str()
            .map_err(|_| Error::BadRequest(format!("`{GRANT_HEADER}` is not ASCII")))?;
        return Ok(Some(text.to_owned()));
    }
    Ok(query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("grant="))
        .map(str::to_owned))
}
