//! The cross-encoder routes: TEI's `POST /rerank` when the model is a cross-encoder (pairs scored as
//! sentence-transformers' `CrossEncoder.predict`, sorted best first) and `POST /predict` (scores of pairs, one
//! per label, each pair's labels best first). A cross-encoder runs on the blocking pool, one request at a
//! time per call, inside the server's admission limit.

use super::tei::{RerankRequest, check_direction, default_true};
use super::{AppState, Shared, parse_body};
use crate::error::{ApiError, ErrorStyle};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use embedkit_model::{CrossEncoder, DenseActivation, PredictOptions};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A cross-encoder served under a name.
pub(super) struct ServedCrossEncoder {
    pub(super) name: String,
    pub(super) model: Arc<CrossEncoder>,
}

impl AppState {
    /// The cross-encoder a request names; without a name, the first one served (if any).
    pub(super) fn cross_encoder(&self, name: Option<&str>) -> Option<&ServedCrossEncoder> {
        match name.filter(|n| !n.is_empty()) {
            None => self.cross_encoders.first(),
            Some(n) => self.cross_encoders.iter().find(|c| c.name == n),
        }
    }
}

/// Scores `pairs` on the blocking pool, as `CrossEncoder.predict` (raw logits with `raw_scores`).
async fn predict(
    state: &Shared,
    ce: &ServedCrossEncoder,
    pairs: Vec<(String, String)>,
    raw_scores: bool,
    truncate: bool,
) -> Result<Vec<Vec<f32>>, ApiError> {
    if pairs.len() > state.config.max_client_batch_size {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} pairs are more than this server's limit of {} per request",
                pairs.len(),
                state.config.max_client_batch_size
            ),
        ));
    }
    let _permit = state.admit(ErrorStyle::Tei)?;
    let model = ce.model.clone();
    let options = PredictOptions {
        activation: raw_scores.then_some(DenseActivation::Identity),
        refuse_truncation: !truncate,
        ..Default::default()
    };
    let n = pairs.len();
    let scores = tokio::task::spawn_blocking(move || {
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        model.predict(&refs, &options)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| match e {
        embedkit_core::EmbedError::InvalidOption {
            option: "truncate", ..
        } => ApiError::invalid("texts", format!("{e}; truncate is false")),
        other => ApiError::from(other),
    })?;
    state.metrics.texts.fetch_add(n as u64, Ordering::Relaxed);
    Ok(scores)
}

/// `/rerank` with a cross-encoder: TEI's `[{"index", "score", "text"?}]`, best first.
pub(super) async fn rerank(
    state: &Shared,
    ce: &ServedCrossEncoder,
    req: RerankRequest,
) -> Result<Response, ApiError> {
    if req.method.is_some() {
        return Err(ApiError::invalid(
            "method",
            format!(
                "'{}' is a cross-encoder: it scores (query, text) pairs itself; leave out `method`",
                ce.name
            ),
        ));
    }
    if ce.model.num_labels() != 1 {
        return Err(ApiError::invalid(
            "model",
            format!(
                "'{}' has {} labels ({}); /rerank needs one score per pair (use /predict)",
                ce.name,
                ce.model.num_labels(),
                ce.model.labels().join(", ")
            ),
        ));
    }
    let pairs: Vec<(String, String)> = req
        .texts
        .iter()
        .map(|t| (req.query.clone(), t.clone()))
        .collect();
    let scores = predict(state, ce, pairs, req.raw_scores, req.truncate).await?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Best first; equal scores keep the texts' order (CrossEncoder.rank sorts stably too).
    order.sort_by(|&a, &b| scores[b][0].total_cmp(&scores[a][0]));
    let body: Vec<Value> = order
        .into_iter()
        .map(|i| {
            let mut row = json!({"index": i, "score": scores[i][0]});
            if req.return_text {
                row["text"] = Value::String(req.texts[i].clone());
            }
            row
        })
        .collect();
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
struct PredictRequest {
    inputs: Value,
    #[serde(default = "default_true")]
    truncate: bool,
    #[serde(default)]
    truncation_direction: Option<String>,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    model: Option<String>,
}

/// TEI's `inputs`: one pair `[a, b]`, or a batch `[[a, b], …]`; `true` for a batch.
fn pairs_of(inputs: &Value) -> Result<(Vec<(String, String)>, bool), ApiError> {
    let bad = |m: String| ApiError::invalid("inputs", m);
    let pair = |v: &Value, at: &str| -> Result<(String, String), ApiError> {
        match v.as_array().map(Vec::as_slice) {
            Some([Value::String(a), Value::String(b)]) => Ok((a.clone(), b.clone())),
            Some([Value::String(_)]) => Err(bad(format!(
                "{at} is a single text; a cross-encoder scores pairs [text, text_pair]"
            ))),
            _ => Err(bad(format!(
                "{at} is not a pair of strings [text, text_pair]"
            ))),
        }
    };
    match inputs {
        Value::String(_) => Err(bad(
            "inputs is a single text; a cross-encoder scores pairs: [text, text_pair] or [[text, text_pair], …]"
                .into(),
        )),
        Value::Array(items) if items.is_empty() => Err(bad("inputs cannot be empty".into())),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            pair(inputs, "inputs").map(|p| (vec![p], false))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| pair(v, &format!("inputs[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(|p| (p, true)),
        _ => Err(bad(
            "inputs must be a pair [text, text_pair] or a batch [[text, text_pair], …]".into(),
        )),
    }
}

/// `POST /predict`: each pair's scores as `[{"label", "score"}]`, best first (a list of those for a batch).
pub(super) async fn tei_predict(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: PredictRequest = parse_body(&headers, body, ErrorStyle::Tei)?;
    check_direction(req.truncation_direction.as_deref())?;
    let Some(ce) = state.cross_encoder(req.model.as_deref()) else {
        let served: Vec<&str> = state
            .cross_encoders
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        return Err(ApiError::invalid(
            "model",
            match (&req.model, served.is_empty()) {
                (_, true) => {
                    "/predict needs a cross-encoder (a *ForSequenceClassification model); \
                              none is served here"
                        .to_string()
                }
                (Some(n), false) => format!(
                    "'{n}' is not a cross-encoder served here (cross-encoders: {})",
                    served.join(", ")
                ),
                (None, false) => "no cross-encoder".to_string(),
            },
        ));
    };
    let (pairs, batch) = pairs_of(&req.inputs)?;
    let scores = predict(&state, ce, pairs, req.raw_scores, req.truncate).await?;
    let labels = ce.model.labels();
    let rows: Vec<Value> = scores
        .iter()
        .map(|s| {
            let mut order: Vec<usize> = (0..s.len()).collect();
            order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
            Value::Array(
                order
                    .into_iter()
                    .map(|l| json!({"label": labels[l], "score": s[l]}))
                    .collect(),
            )
        })
        .collect();
    let body = if batch {
        Value::Array(rows)
    } else {
        rows.into_iter().next().unwrap_or(Value::Array(Vec::new()))
    };
    Ok(Json(body).into_response())
}

/// The cross-encoders in `/info`.
pub(super) fn info(state: &AppState) -> Vec<Value> {
    state
        .cross_encoders
        .iter()
        .map(|c| {
            let i = c.model.info();
            let id2label: serde_json::Map<String, Value> = i
                .labels
                .iter()
                .enumerate()
                .map(|(k, l)| (k.to_string(), Value::String(l.clone())))
                .collect();
            json!({
                "model_id": c.name,
                "model_type": {"reranker": {"id2label": id2label}},
                "architecture": i.architecture,
                "num_labels": i.num_labels,
                "activation": i.activation,
                "max_input_length": i.max_tokens,
                "backend": i.backend,
            })
        })
        .collect()
}

/// The cross-encoders among `models`; a name given twice is an error.
pub(super) fn served(
    models: &[(String, crate::ServedModel)],
) -> Result<Vec<ServedCrossEncoder>, crate::ServerError> {
    let mut out = Vec::new();
    for (i, (name, served)) in models.iter().enumerate() {
        if models[..i].iter().any(|(n, _)| n == name) {
            return Err(crate::ServerError::DuplicateName(name.clone()));
        }
        if let crate::ServedModel::CrossEncoder(m) = served {
            out.push(ServedCrossEncoder {
                name: name.clone(),
                model: m.clone(),
            });
        }
    }
    Ok(out)
}

/// `/info` of a server that serves only cross-encoders: TEI's shape for a reranker, about the first one.
pub(super) fn info_only(state: &AppState) -> Value {
    let all = info(state);
    let first = all.first().cloned().unwrap_or(Value::Null);
    json!({
        "model_id": first["model_id"],
        "model_type": first["model_type"],
        "max_concurrent_requests": state.config.max_concurrent_requests,
        "max_input_length": first["max_input_length"],
        "max_client_batch_size": state.config.max_client_batch_size,
        "max_body_bytes": state.config.max_body_bytes,
        "auth_required": state.key_hash.is_some(),
        "version": env!("CARGO_PKG_VERSION"),
        "models": [],
        "cross_encoders": all,
    })
}
