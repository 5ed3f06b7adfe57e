//! The service routes: `/info` (TEI's fields plus every model served), `/health`, Prometheus `/metrics`,
//! `/drift` and `/openapi.json`.

use super::{Kind, Shared, rerank};
use crate::error::ApiError;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use embedkit_core::Embedder;
use serde_json::{Value, json};

pub(super) async fn info(State(state): State<Shared>) -> Json<Value> {
    if state.models.is_empty() {
        return Json(rerank::info_only(&state));
    }
    let models: Vec<Value> = state
        .models
        .iter()
        .map(|m| match &m.kind {
            Kind::Local(l) => {
                let i = l.info();
                json!({
                    "model_id": m.name,
                    "model_dtype": "float32",
                    "backend": i.backend,
                    "dims": i.dims,
                    "max_input_length": i.max_tokens,
                    "pooling": i.pooling,
                    "normalize": i.normalize,
                    "prompts": i.prompts.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                    "fingerprint": l.fingerprint(),
                })
            }
            Kind::Other(o) => json!({
                "model_id": m.name,
                "dims": o.dims(),
                "fingerprint": o.fingerprint(),
            }),
        })
        .collect();
    let first = &state.models[0];
    Json(json!({
        "model_id": first.name,
        "model_type": {"embedding": {"pooling": match &first.kind {
            Kind::Local(l) => l.info().pooling,
            Kind::Other(_) => "unknown".to_string(),
        }}},
        "max_concurrent_requests": state.config.max_concurrent_requests,
        "max_input_length": first.max_tokens(),
        "max_batch_tokens": state.config.max_batch_tokens,
        "max_client_batch_size": state.config.max_client_batch_size,
        "max_body_bytes": state.config.max_body_bytes,
        "auth_required": state.key_hash.is_some(),
        "version": env!("CARGO_PKG_VERSION"),
        "models": models,
        "cross_encoders": rerank::info(&state),
    }))
}

pub(super) async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn metrics_route(State(state): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        {
            let mut body = state.metrics.render();
            crate::drift::render(
                state.models.iter().filter_map(|m| m.drift.as_deref()),
                &mut body,
            );
            body
        },
    )
        .into_response()
}

/// `GET /drift[?model=NAME]`: the drift monitor's last window, counters, alert and canary.
pub(super) async fn drift_route(
    State(state): State<Shared>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    crate::drift::report(
        state.models.iter().filter_map(|m| m.drift.as_deref()),
        query.get("model").map(String::as_str),
    )
    .map(Json)
}

/// The OpenAPI 3.1 description of the routes.
pub(super) async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        include_str!("../openapi.json"),
    )
        .into_response()
}
