//! text-embeddings-inference's routes for an embedding model: `/embed` (and `POST /`), `/embed_all`,
//! `/similarity`, `/rerank` (bi-encoder scores; cross-encoders are answered in [`super::rerank`]) and
//! `/tokenize`, with TEI's error bodies.

use super::compute::{Inputs, Params, compute, with_headers};
use super::{Kind, Model, Shared, parse_body, rerank};
use crate::error::{ApiError, ErrorStyle};
use crate::queue::Want;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use embedkit_core::l2_normalize;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(untagged)]
enum TeiInput {
    Text(String),
    Texts(Vec<String>),
}

impl TeiInput {
    fn into_vec(self) -> Vec<String> {
        match self {
            TeiInput::Text(t) => vec![t],
            TeiInput::Texts(t) => t,
        }
    }
}

pub(super) fn default_true() -> bool {
    true
}

/// TEI's truncation options: embedkit truncates on the right only (as sentence-transformers does).
pub(super) fn check_direction(direction: Option<&str>) -> Result<(), ApiError> {
    match direction.map(str::to_ascii_lowercase).as_deref() {
        None | Some("right") => Ok(()),
        Some("left") => Err(ApiError::invalid(
            "truncation_direction",
            "truncation_direction 'left' is not supported; embedkit truncates on the right, as sentence-transformers does",
        )),
        Some(other) => Err(ApiError::invalid(
            "truncation_direction",
            format!("truncation_direction '{other}' is not one of left, right"),
        )),
    }
}

#[derive(Deserialize)]
struct EmbedRequest {
    inputs: TeiInput,
    #[serde(default = "default_true")]
    normalize: bool,
    #[serde(default = "default_true")]
    truncate: bool,
    #[serde(default)]
    truncation_direction: Option<String>,
    #[serde(default)]
    prompt_name: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    /// float32 (default), float16, bfloat16, int8, uint8, binary, ubinary (sentence-transformers' rules;
    /// int8/uint8 take their ranges from the request's own vectors, so they need at least two inputs).
    #[serde(default)]
    precision: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

pub(super) async fn tei_embed(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let style = ErrorStyle::Tei;
    let req: EmbedRequest = parse_body(&headers, body, style)?;
    check_direction(req.truncation_direction.as_deref())?;
    let precision = match req.precision.as_deref() {
        None => embedkit_vectors::Precision::F32,
        Some(p) => p.parse().map_err(|_| {
            ApiError::invalid(
                "precision",
                format!("precision '{p}' is not one of float32, float16, bfloat16, int8, uint8, binary, ubinary"),
            )
        })?,
    };
    let model = state.model(req.model.as_deref(), style)?;
    let params = Params {
        normalize: Some(req.normalize),
        dims: req.dimensions,
        prompt_name: req.prompt_name,
        truncate: req.truncate,
    };
    let computed = compute(
        &state,
        &model,
        Inputs::Texts(req.inputs.into_vec()),
        params,
        Want::Pooled,
        style,
    )
    .await?;
    if precision == embedkit_vectors::Precision::F32 {
        return Ok(with_headers(&computed, Json(json!(computed.vectors))));
    }
    let body = quantized(&computed.vectors, precision)?;
    Ok(with_headers(&computed, Json(body)))
}

/// Vectors at a lower precision as JSON numbers: float16/bfloat16 as the floats they round to, int8/binary
/// as signed bytes, uint8/ubinary as unsigned bytes (binary packs 8 dimensions per byte).
fn quantized(
    vectors: &[Vec<f32>],
    precision: embedkit_vectors::Precision,
) -> Result<Value, ApiError> {
    use embedkit_vectors::Precision as P;
    let e = embedkit_core::Embeddings::from_rows(vectors.to_vec())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let q = embedkit_vectors::quantize(&e, precision, None)
        .map_err(|err| ApiError::invalid("precision", err.to_string()))?;
    let per_row = q.values_per_row();
    Ok(match precision {
        P::F16 | P::BF16 => {
            let d = embedkit_vectors::dequantize(&q, None)
                .map_err(|err| ApiError::invalid("precision", err.to_string()))?;
            json!(d.iter().map(<[f32]>::to_vec).collect::<Vec<_>>())
        }
        P::Int8 | P::Binary => json!(
            q.as_bytes()
                .chunks(per_row.max(1))
                .map(|r| r.iter().map(|&b| b as i8).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        ),
        _ => json!(
            q.as_bytes()
                .chunks(per_row.max(1))
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        ),
    })
}

#[derive(Deserialize)]
struct EmbedAllRequest {
    inputs: TeiInput,
    #[serde(default = "default_true")]
    truncate: bool,
    #[serde(default)]
    truncation_direction: Option<String>,
    #[serde(default)]
    prompt_name: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

pub(super) async fn tei_embed_all(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let style = ErrorStyle::Tei;
    let req: EmbedAllRequest = parse_body(&headers, body, style)?;
    check_direction(req.truncation_direction.as_deref())?;
    let model = state.model(req.model.as_deref(), style)?;
    let params = Params {
        prompt_name: req.prompt_name,
        truncate: req.truncate,
        ..Default::default()
    };
    let computed = compute(
        &state,
        &model,
        Inputs::Texts(req.inputs.into_vec()),
        params,
        Want::Tokens,
        style,
    )
    .await?;
    let hidden = token_width(&model);
    let body: Vec<Vec<&[f32]>> = computed
        .vectors
        .iter()
        .map(|states| states.chunks(hidden.max(1)).collect())
        .collect();
    Ok(with_headers(&computed, Json(json!(body))))
}

fn token_width(model: &Model) -> usize {
    match &model.kind {
        Kind::Local(m) => m.config().hidden_size,
        Kind::Other(m) => m.dims(),
    }
}

#[derive(Deserialize)]
struct SimilarityInputs {
    source_sentence: String,
    sentences: Vec<String>,
}

#[derive(Deserialize)]
struct SimilarityRequest {
    inputs: SimilarityInputs,
    #[serde(default = "default_true")]
    truncate: bool,
    #[serde(default)]
    truncation_direction: Option<String>,
    #[serde(default)]
    prompt_name: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

pub(super) async fn tei_similarity(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let style = ErrorStyle::Tei;
    let req: SimilarityRequest = parse_body(&headers, body, style)?;
    check_direction(req.truncation_direction.as_deref())?;
    if req.inputs.sentences.is_empty() {
        return Err(ApiError::invalid(
            "inputs.sentences",
            "`sentences` cannot be empty",
        ));
    }
    let model = state.model(req.model.as_deref(), style)?;
    let mut texts = Vec::with_capacity(req.inputs.sentences.len() + 1);
    texts.push(req.inputs.source_sentence);
    texts.extend(req.inputs.sentences);
    let params = Params {
        normalize: Some(true),
        prompt_name: req.prompt_name,
        truncate: req.truncate,
        ..Default::default()
    };
    let computed = compute(
        &state,
        &model,
        Inputs::Texts(texts),
        params,
        Want::Pooled,
        style,
    )
    .await?;
    let (source, rest) = computed
        .vectors
        .split_first()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no vectors came back"))?;
    let scores: Vec<f32> = rest.iter().map(|v| dot(source, v)).collect();
    Ok(with_headers(&computed, Json(json!(scores))))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[derive(Deserialize)]
pub(super) struct RerankRequest {
    pub(super) query: String,
    pub(super) texts: Vec<String>,
    #[serde(default = "default_true")]
    pub(super) truncate: bool,
    #[serde(default)]
    pub(super) truncation_direction: Option<String>,
    #[serde(default)]
    pub(super) raw_scores: bool,
    #[serde(default)]
    pub(super) return_text: bool,
    /// `cosine` (pooled vectors) or `maxsim` (token vectors, late interaction).
    #[serde(default)]
    pub(super) method: Option<String>,
    #[serde(default)]
    pub(super) model: Option<String>,
}

pub(super) async fn tei_rerank(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let style = ErrorStyle::Tei;
    let req: RerankRequest = parse_body(&headers, body, style)?;
    check_direction(req.truncation_direction.as_deref())?;
    if req.texts.is_empty() {
        return Err(ApiError::invalid("texts", "`texts` cannot be empty"));
    }
    if let Some(ce) = state.cross_encoder(req.model.as_deref()) {
        return rerank::rerank(&state, ce, req).await;
    }
    let maxsim = match req.method.as_deref() {
        None | Some("cosine") => false,
        Some("maxsim") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "method",
                format!("method '{other}' is not one of cosine, maxsim"),
            ));
        }
    };
    let model = state.model(req.model.as_deref(), style)?;
    let mut texts = Vec::with_capacity(req.texts.len() + 1);
    texts.push(req.query);
    texts.extend(req.texts.iter().cloned());
    let params = Params {
        normalize: Some(true),
        truncate: req.truncate,
        ..Default::default()
    };
    let want = if maxsim { Want::Tokens } else { Want::Pooled };
    let computed = compute(&state, &model, Inputs::Texts(texts), params, want, style).await?;
    let (query, docs) = computed
        .vectors
        .split_first()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no vectors came back"))?;
    let mut ranks: Vec<(usize, f32)> = if maxsim {
        let width = token_width(&model).max(1);
        let unit = |states: &[f32]| -> Vec<Vec<f32>> {
            states
                .chunks(width)
                .map(|t| {
                    let mut t = t.to_vec();
                    l2_normalize(&mut t);
                    t
                })
                .collect()
        };
        let q = unit(query);
        docs.iter()
            .enumerate()
            .map(|(i, d)| {
                let d = unit(d);
                // MaxSim: each query token's best cosine over the document's tokens, summed; divided by the
                // query's token count unless raw scores are asked for, so scores stay in [-1, 1].
                let sum: f32 = q
                    .iter()
                    .map(|qt| {
                        d.iter()
                            .map(|dt| dot(qt, dt))
                            .fold(f32::NEG_INFINITY, f32::max)
                    })
                    .sum();
                let score = if req.raw_scores {
                    sum
                } else {
                    sum / q.len().max(1) as f32
                };
                (i, score)
            })
            .collect()
    } else {
        docs.iter()
            .enumerate()
            .map(|(i, d)| (i, dot(query, d)))
            .collect()
    };
    ranks.sort_by(|a, b| b.1.total_cmp(&a.1));
    let body: Vec<Value> = ranks
        .into_iter()
        .map(|(i, score)| {
            if req.return_text {
                json!({"index": i, "score": score, "text": req.texts[i]})
            } else {
                json!({"index": i, "score": score})
            }
        })
        .collect();
    Ok(with_headers(&computed, Json(json!(body))))
}

#[derive(Deserialize)]
struct TokenizeRequest {
    inputs: TeiInput,
    #[serde(default = "default_true")]
    add_special_tokens: bool,
    #[serde(default)]
    model: Option<String>,
}

pub(super) async fn tei_tokenize(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let style = ErrorStyle::Tei;
    let req: TokenizeRequest = parse_body(&headers, body, style)?;
    let model = state.model(req.model.as_deref(), style)?;
    let Kind::Local(m) = &model.kind else {
        return Err(ApiError::invalid(
            "model",
            format!("{} has no tokenizer here", model.name),
        ));
    };
    let texts = req.inputs.into_vec();
    if texts.len() > state.config.max_client_batch_size {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} inputs in one request; the limit is {}",
                texts.len(),
                state.config.max_client_batch_size
            ),
        ));
    }
    let _permit = state.admit(style)?;
    let m = m.clone();
    let add = req.add_special_tokens;
    let out = tokio::task::spawn_blocking(move || {
        texts
            .iter()
            .map(|t| m.token_info(t, add))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(ApiError::from)?;
    Ok(Json(json!(out)).into_response())
}
