//! Routes, request parsing, admission (429), auth, request ids and the path of a request through the queue.

use crate::error::{ApiError, ErrorStyle};
use crate::metrics::Metrics;
use crate::queue::{self, Job};
use crate::{ServedModel, ServerConfig, ServerError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use embedkit_core::Embedder;
use embedkit_model::LocalEmbedder;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

mod compute;
mod openai;
mod rerank;
mod service;
mod tei;

use openai::{openai_embeddings, openai_models};
use service::{drift_route, health, info, metrics_route, openapi};
use tei::{tei_embed, tei_embed_all, tei_rerank, tei_similarity, tei_tokenize};

/// A model with its compute thread.
struct Model {
    name: String,
    kind: Kind,
    tx: std::sync::mpsc::Sender<Job>,
    /// The drift monitor fed with this model's vectors (`--drift-reference`).
    drift: Option<Arc<crate::drift::Monitor>>,
}

enum Kind {
    Local(Arc<LocalEmbedder>),
    Other(Arc<dyn Embedder>),
}

impl Model {
    fn dims(&self) -> usize {
        match &self.kind {
            Kind::Local(m) => m.dims(),
            Kind::Other(m) => m.dims(),
        }
    }
    fn max_tokens(&self) -> Option<usize> {
        match &self.kind {
            Kind::Local(m) => Some(m.tokenizer().max_length()),
            Kind::Other(_) => None,
        }
    }
    /// How many token ids the model takes (ids are `0..vocab`): the smaller of the tokenizer's vocabulary
    /// and the rows of the embedding matrix, so that an accepted id is one the tokenizer can produce and the
    /// model has a vector for.
    fn vocab_size(&self) -> Option<usize> {
        match &self.kind {
            Kind::Local(m) => Some(m.tokenizer().vocab_size().min(m.config().vocab_size)),
            Kind::Other(_) => None,
        }
    }
}

struct AppState {
    models: Vec<Arc<Model>>,
    /// Cross-encoders, for /rerank and /predict.
    cross_encoders: Vec<rerank::ServedCrossEncoder>,
    config: ServerConfig,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    key_hash: Option<[u8; 32]>,
    next_id: AtomicU64,
    started: Instant,
}

type Shared = Arc<AppState>;

/// Builds the app: models get their compute threads, routes their state.
pub fn router(
    models: Vec<(String, ServedModel)>,
    config: ServerConfig,
) -> Result<Router, ServerError> {
    if models.is_empty() {
        return Err(ServerError::NoModels);
    }
    let metrics = Arc::new(Metrics::default());
    let names: Vec<&str> = models.iter().map(|(n, _)| n.as_str()).collect();
    crate::drift::validate(&config.drift, &names)?;
    let cross_encoders = rerank::served(&models)?;
    let mut list: Vec<Arc<Model>> = Vec::new();
    for (name, served) in models {
        if list.iter().any(|m| m.name == name) {
            return Err(ServerError::DuplicateName(name));
        }
        let io = |source| ServerError::Io {
            what: format!("cannot start the compute thread of {name}"),
            source,
        };
        let (kind, tx) = match served {
            ServedModel::Local(m) => {
                let tx = queue::spawn_local(m.clone(), config.max_batch_tokens, metrics.clone())
                    .map_err(io)?;
                (Kind::Local(m), tx)
            }
            ServedModel::Other(m) => {
                let tx = queue::spawn_generic(m.clone()).map_err(io)?;
                (Kind::Other(m), tx)
            }
            ServedModel::CrossEncoder(_) => continue,
        };
        let target = match &kind {
            Kind::Local(m) => crate::drift::Target::Local(m.clone()),
            Kind::Other(_) => crate::drift::Target::Other,
        };
        let dims = match &kind {
            Kind::Local(m) => m.dims(),
            Kind::Other(m) => m.dims(),
        };
        let drift = crate::drift::start(
            &name,
            list.is_empty(),
            &config.drift,
            target,
            tx.clone(),
            dims,
        )?;
        list.push(Arc::new(Model {
            name,
            kind,
            tx,
            drift,
        }));
    }
    let state = Arc::new(AppState {
        models: list,
        cross_encoders,
        permits: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
        key_hash: config
            .api_key
            .as_ref()
            .map(|k| Sha256::digest(k.as_bytes()).into()),
        metrics,
        next_id: AtomicU64::new(0),
        started: Instant::now(),
        config,
    });
    let body_limit = state.config.max_body_bytes;
    Ok(Router::new()
        // TEI answers its root route with the model's own task (`/embed` for an embedding model) and GET / with
        // its health; huggingface_hub's `InferenceClient(base_url=…).feature_extraction` posts there.
        .route("/", post(tei_embed).get(health))
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/embeddings", post(openai_embeddings))
        .route("/v1/models", get(openai_models))
        .route("/embed", post(tei_embed))
        .route("/embed_all", post(tei_embed_all))
        .route("/similarity", post(tei_similarity))
        .route("/rerank", post(tei_rerank))
        .route("/predict", post(rerank::tei_predict))
        .route("/tokenize", post(tei_tokenize))
        .route("/info", get(info))
        .route("/health", get(health))
        .route("/metrics", get(metrics_route))
        .route("/drift", get(drift_route))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            around_request,
        ))
        .with_state(state))
}

fn style_for(path: &str) -> ErrorStyle {
    if path.starts_with("/v1") || path == "/embeddings" {
        ErrorStyle::OpenAi
    } else {
        ErrorStyle::Tei
    }
}

/// Request ids, auth, structured logs and the per-route counters, around every route.
async fn around_request(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    // A caller's id is kept when it is short and printable, so that logs join across services.
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| {
            let n = state.next_id.fetch_add(1, Ordering::Relaxed);
            format!("{:08x}-{n:08x}", state.started.elapsed().as_nanos() as u32)
        });
    let path = req.uri().path().to_string();
    let route = match path.as_str() {
        "/" | "/v1/embeddings" | "/embeddings" | "/v1/models" | "/embed" | "/embed_all"
        | "/similarity" | "/rerank" | "/predict" | "/tokenize" | "/info" | "/health"
        | "/metrics" | "/openapi.json" | "/drift" => path.clone(),
        _ => "other".to_string(),
    };
    let span = tracing::info_span!("request", id = %id, method = %req.method(), path = %route);
    // Liveness needs no key: GET /health, and GET / which is TEI's health route too.
    let liveness = path == "/health" || (path == "/" && req.method() == axum::http::Method::GET);
    let mut resp = if let Some(expected) = &state.key_hash
        && !liveness
        && !authorized(req.headers(), expected)
    {
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API key (send Authorization: Bearer <key>)",
        )
        .style(style_for(&path))
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    } else {
        next.run(req).instrument(span.clone()).await
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let status = resp.status().as_u16();
    state.metrics.count_request(&route, status);
    let took = start.elapsed();
    if !liveness && route != "/metrics" {
        state.metrics.total.observe_duration(took);
    }
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(status, ms = took.as_secs_f64() * 1e3, "answered");
        } else if status >= 400 {
            tracing::warn!(status, ms = took.as_secs_f64() * 1e3, "answered");
        } else {
            tracing::info!(status, ms = took.as_secs_f64() * 1e3, "answered");
        }
    });
    resp
}

/// Compares the Bearer token with the key in constant time: both are hashed first, so neither the content
/// nor the length of the key leaks through timing.
fn authorized(headers: &HeaderMap, expected: &[u8; 32]) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or("")
        .trim();
    let got: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    bool::from(got.ct_eq(expected))
}

async fn not_found(req: Request) -> ApiError {
    let path = req.uri().path().to_string();
    ApiError::new(StatusCode::NOT_FOUND, format!("no route {path}")).style(style_for(&path))
}

async fn method_not_allowed(req: Request) -> ApiError {
    let path = req.uri().path().to_string();
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {path}", req.method()),
    )
    .style(style_for(&path))
}

/// The body as `T`: 413 over the size limit, 415 when it is not declared JSON, 400 when it is not JSON
/// (invalid UTF-8 included), 422 when the JSON has the wrong shape.
fn parse_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    style: ErrorStyle,
) -> Result<T, ApiError> {
    let body = body.map_err(|rej| {
        let status = rej.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is larger than the server's limit (--max-body-bytes)".to_string()
        } else {
            format!("cannot read the request body: {}", rej.body_text())
        };
        ApiError::new(status, message).style(style)
    })?;
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
    if !json_type {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json",
        )
        .style(style));
    }
    serde_json::from_slice(&body).map_err(|e| {
        let status = match e.classify() {
            serde_json::error::Category::Data => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        let what = if status == StatusCode::BAD_REQUEST {
            "the body is not valid JSON"
        } else {
            "the JSON body does not fit the request schema"
        };
        ApiError::new(status, format!("{what}: {e}")).style(style)
    })
}

impl AppState {
    fn model(&self, name: Option<&str>, style: ErrorStyle) -> Result<Arc<Model>, ApiError> {
        match name.filter(|n| !n.is_empty()) {
            None => self.models.first().cloned().ok_or_else(|| {
                ApiError::invalid(
                    "model",
                    "only cross-encoders are served here: use /rerank or /predict",
                )
                .style(style)
            }),
            Some(n) => self
                .models
                .iter()
                .find(|m| m.name == n)
                .cloned()
                .ok_or_else(|| {
                    let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!(
                            "model '{n}' is not served here (served: {})",
                            names.join(", ")
                        ),
                    )
                    .param("model")
                    .style(style)
                }),
        }
    }

    /// A slot for one more request, or 429 with Retry-After when all are taken.
    fn admit(&self, style: ErrorStyle) -> Result<OwnedSemaphorePermit, ApiError> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "the server is at its limit of {} concurrent requests; retry later",
                    self.config.max_concurrent_requests
                ),
            )
            .style(style);
            e.retry_after = Some(self.config.retry_after_s);
            e
        })
    }
}
