//! `/v1/blobs/{hash}`: content-addressed uploads and downloads.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gleaner_protocol::api::BlobRef;
use gleaner_protocol::blob::blob_hash;

use super::{ApiPath, AppState, parse_hash};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

pub(super) async fn put_blob(
    State(s): State<AppState>,
    ApiPath(hash): ApiPath<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<BlobRef>> {
    let hash = parse_hash(&hash)?;
    let limit = s.settings().max_blob_bytes;
    let too_large = || Error::TooLarge(format!("blob larger than {limit} bytes"));
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
    s.store().put_blob(hash, &body).await?;
    Metrics::inc(&s.metrics().blobs);
    Ok(Json(BlobRef {
        hash,
        size: body.len() as u64,
    }))
}

pub(super) async fn get_blob(
    State(s): State<AppState>,
    ApiPath(hash): ApiPath<String>,
) -> Result<Response> {
    let hash = parse_hash(&hash)?;
    let bytes = s
        .store()
        .blob(hash)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no blob {hash}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
