//! `/healthz`, `/metrics` and `/v1/info`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use gleaner_protocol::api::Info;

use super::AppState;
use crate::error::Result;

pub(super) async fn healthz() -> &'static str {
    "ok"
}

pub(super) async fn metrics(State(s): State<AppState>) -> Result<Response> {
    let queue = s.store().queue_stats(s.now()).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics().render(queue),
    )
        .into_response())
}

pub(super) async fn info(State(s): State<AppState>) -> Json<Info> {
    Json(s.inner.info.clone())
}
