//! Routes, request parsing, admission (429), auth, request ids and the path of a request through the queue.

use crate::error::{ApiError, ErrorStyle};
use crate::metrics::Metrics;
use crate::queue::{self, Done, Job, Want, Work};
use crate::{ServedModel, ServerConfig, ServerError};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use embedkit_core::{Embedder, EncodeOptions, l2_normalize};
use embedkit_model::LocalEmbedder;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::Instrument;

#[path = "rerank.rs"]
mod rerank;

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

/// What to embed.
enum Inputs {
    Texts(Vec<String>),
    Ids(Vec<Vec<u32>>),
}

impl Inputs {
    fn len(&self) -> usize {
        match self {
            Inputs::Texts(t) => t.len(),
            Inputs::Ids(t) => t.len(),
        }
    }
    fn chars(&self) -> usize {
        match self {
            Inputs::Texts(t) => t.iter().map(|s| s.chars().count()).sum(),
            Inputs::Ids(_) => 0,
        }
    }
}

/// Options that shape the vectors of a request.
#[derive(Default, Clone)]
struct Params {
    normalize: Option<bool>,
    dims: Option<usize>,
    prompt_name: Option<String>,
    truncate: bool,
}

/// Results of a request and where its time went.
struct Computed {
    vectors: Vec<Vec<f32>>,
    tokens: usize,
    chars: usize,
    tokenize: Duration,
    done: Done,
}

impl Computed {
    /// TEI's timing headers, in milliseconds (`x-compute-time` is tokenization + queue + inference).
    fn headers(&self) -> [(HeaderName, String); 6] {
        let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1e3);
        let compute = self.tokenize + self.done.queue + self.done.inference;
        [
            (HeaderName::from_static("x-compute-time"), ms(compute)),
            (
                HeaderName::from_static("x-tokenization-time"),
                ms(self.tokenize),
            ),
            (HeaderName::from_static("x-queue-time"), ms(self.done.queue)),
            (
                HeaderName::from_static("x-inference-time"),
                ms(self.done.inference),
            ),
            (
                HeaderName::from_static("x-compute-tokens"),
                self.tokens.to_string(),
            ),
            (
                HeaderName::from_static("x-compute-characters"),
                self.chars.to_string(),
            ),
        ]
    }
}

fn with_headers(computed: &Computed, body: impl IntoResponse) -> Response {
    let mut resp = body.into_response();
    for (k, v) in computed.headers() {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

/// Decrements the in-flight gauge however the request ends, and counts a request whose future was dropped
/// before it finished (the client disconnected; its queued texts are skipped by the compute thread).
struct InFlight {
    metrics: Arc<Metrics>,
    finished: bool,
}
impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.finished {
            self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The path of every embedding request: limits, admission, tokenization on a blocking thread, the queue,
/// and finishing (truncation, normalization) of pooled vectors.
async fn compute(
    state: &AppState,
    model: &Model,
    inputs: Inputs,
    params: Params,
    want: Want,
    style: ErrorStyle,
) -> Result<Computed, ApiError> {
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let mut gauge = InFlight {
        metrics: state.metrics.clone(),
        finished: false,
    };
    // When the client disconnects, this future is dropped at an await below and `finished` stays false.
    let result = compute_inner(state, model, inputs, params, want, style).await;
    gauge.finished = true;
    result
}

async fn compute_inner(
    state: &AppState,
    model: &Model,
    inputs: Inputs,
    params: Params,
    want: Want,
    style: ErrorStyle,
) -> Result<Computed, ApiError> {
    let field = if style == ErrorStyle::OpenAi {
        "input"
    } else {
        "inputs"
    };
    let n = inputs.len();
    if n == 0 {
        return Err(ApiError::invalid(field, format!("`{field}` cannot be empty")).style(style));
    }
    if n > state.config.max_client_batch_size {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{n} inputs in one request; the limit is {} (--max-client-batch-size)",
                state.config.max_client_batch_size
            ),
        )
        .param(field)
        .style(style));
    }
    if let Some(d) = params.dims
        && (d == 0 || d > model.dims())
    {
        return Err(ApiError::invalid(
            "dimensions",
            format!(
                "dimensions {d} is outside 1..={} for {}",
                model.dims(),
                model.name
            ),
        )
        .style(style));
    }
    let _permit = state.admit(style)?;
    let chars = inputs.chars();
    let start = Instant::now();
    let map_err = |e: embedkit_core::EmbedError| ApiError::from(e).style(style);
    let (work, tokens) = match (&model.kind, inputs) {
        (Kind::Local(m), inputs) => {
            let m = m.clone();
            let prompt_name = params.prompt_name.clone();
            let prepared = tokio::task::spawn_blocking(move || match inputs {
                Inputs::Texts(texts) => {
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    m.prepare(
                        &refs,
                        &EncodeOptions {
                            prompt_name,
                            ..Default::default()
                        },
                    )
                }
                Inputs::Ids(ids) => m.prepare_ids(ids),
            })
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("tokenization failed: {e}"),
                )
                .style(style)
            })?
            .map_err(map_err)?;
            if !params.truncate
                && let Some(i) = prepared.iter().position(|p| p.truncated)
            {
                return Err(ApiError::invalid(
                    field,
                    format!(
                        "{field}[{i}] is longer than {}'s limit of {} tokens and truncate is false",
                        model.name,
                        model.max_tokens().unwrap_or(0)
                    ),
                )
                .style(style));
            }
            let tokens = prepared.iter().map(|p| p.ids.len()).sum();
            (
                Work::Prepared {
                    texts: prepared,
                    want,
                },
                tokens,
            )
        }
        (Kind::Other(_), Inputs::Ids(_)) => {
            return Err(ApiError::invalid(
                field,
                format!("{} takes texts, not token ids", model.name),
            )
            .style(style));
        }
        (Kind::Other(_), Inputs::Texts(texts)) => {
            // No tokenizer here: count ~4 characters per token for usage, as OpenAI's guidance does.
            let tokens = chars.div_ceil(4);
            (
                Work::Texts {
                    texts,
                    options: EncodeOptions {
                        normalize: params.normalize,
                        truncate_dim: params.dims,
                        prompt_name: params.prompt_name.clone(),
                        ..Default::default()
                    },
                    want,
                },
                tokens,
            )
        }
    };
    let tokenize = start.elapsed();
    state.metrics.tokenize.observe_duration(tokenize);
    let (reply, rx) = oneshot::channel();
    model
        .tx
        .send(Job {
            work,
            reply,
            queued_at: Instant::now(),
        })
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the compute thread of {} has stopped", model.name),
            )
            .style(style)
        })?;
    let done = rx
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the compute thread of {} has stopped", model.name),
            )
            .style(style)
        })?
        .map_err(map_err)?;
    state.metrics.queue.observe_duration(done.queue);
    state.metrics.inference.observe_duration(done.inference);
    state.metrics.texts.fetch_add(n as u64, Ordering::Relaxed);
    if let (Some(d), Want::Pooled) = (&model.drift, want) {
        d.observe(
            &done.vectors,
            params.dims.is_none() && params.normalize.is_none(),
        );
    }
    let mut done = done;
    let vectors = match (&model.kind, want) {
        (Kind::Local(m), Want::Pooled) => std::mem::take(&mut done.vectors)
            .into_iter()
            .map(|v| m.finish_vector(v, params.dims, params.normalize))
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err)?,
        _ => std::mem::take(&mut done.vectors),
    };
    Ok(Computed {
        vectors,
        tokens,
        chars,
        tokenize,
        done,
    })
}

// ---------------------------------------------------------------- OpenAI

/// Token ids are read as any JSON number and checked afterwards (`checked_ids`), so that -1, 2.5 or an id
/// past the vocabulary get a message naming the input and the id instead of serde's "did not match any
/// variant".
#[derive(Deserialize)]
#[serde(untagged)]
enum OpenAiInput {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<serde_json::Number>),
    IdBatches(Vec<Vec<serde_json::Number>>),
}

/// The token ids of a request as `u32`, each checked to be in `0..vocab` (`vocab` is `None` for a model with
/// no tokenizer here; such a model refuses ids later). Ids are used as given, and the usual wrong ones are
/// LangChain's: its `OpenAIEmbeddings` sends tiktoken ids by default (cl100k_base, up to ~100k), far past a
/// BERT vocabulary of ~30k. They stop here with OpenAI's 400 naming `input[i]`, the id and the vocabulary
/// size, before admission (`LocalEmbedder::prepare_ids` checks again, against the tokenizer alone).
/// `batched` says whether the client sent `[[int]]` (errors name `input[i]`) or one `[int]` (`input`).
fn checked_ids(
    lists: Vec<Vec<serde_json::Number>>,
    batched: bool,
    vocab: Option<usize>,
    model: &str,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let limit = vocab.map_or(u32::MAX as u64 + 1, |v| v as u64);
    lists
        .into_iter()
        .enumerate()
        .map(|(i, list)| {
            let which = if batched {
                format!("input[{i}]")
            } else {
                "input".to_string()
            };
            list.into_iter()
                .enumerate()
                .map(|(pos, n)| match n.as_u64() {
                    Some(id) if id < limit => Ok(id as u32),
                    Some(id) => Err(match vocab {
                        Some(v) => format!(
                            "{which} has token id {id} at position {pos}, outside {model}'s vocabulary of {v} \
                             tokens (ids 0..={}); token ids must come from this model's tokenizer \
                             (POST /tokenize), not tiktoken (LangChain: check_embedding_ctx_length=False \
                             sends the texts instead)",
                            v.saturating_sub(1)
                        ),
                        None => format!("{which} has token id {id} at position {pos}, past u32"),
                    }),
                    None => Err(format!(
                        "{which} has {n} at position {pos}, which is not a token id (an integer from 0)"
                    )),
                })
                .collect::<Result<Vec<u32>, String>>()
                .map_err(|message| {
                    ApiError::new(StatusCode::BAD_REQUEST, message)
                        .param("input")
                        .style(ErrorStyle::OpenAi)
                })
        })
        .collect()
}

#[derive(Deserialize)]
struct OpenAiRequest {
    input: OpenAiInput,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    /// Accepted and logged; OpenAI uses it for abuse monitoring.
    #[serde(default)]
    user: Option<String>,
}

async fn openai_embeddings(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let style = ErrorStyle::OpenAi;
    let req: OpenAiRequest = parse_body(&headers, body, style)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("encoding_format '{other}' is not one of float, base64"),
            )
            .style(style));
        }
    };
    if let Some(user) = &req.user {
        tracing::debug!(user = %user, "openai user");
    }
    let model = state.model(req.model.as_deref(), style)?;
    let inputs = match req.input {
        OpenAiInput::Text(t) => Inputs::Texts(vec![t]),
        OpenAiInput::Texts(t) => Inputs::Texts(t),
        OpenAiInput::Ids(ids) => Inputs::Ids(checked_ids(
            vec![ids],
            false,
            model.vocab_size(),
            &model.name,
        )?),
        OpenAiInput::IdBatches(ids) => {
            Inputs::Ids(checked_ids(ids, true, model.vocab_size(), &model.name)?)
        }
    };
    let params = Params {
        dims: req.dimensions,
        truncate: true,
        ..Default::default()
    };
    let computed = compute(&state, &model, inputs, params, Want::Pooled, style).await?;
    let data: Vec<Value> = computed
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "embedding": embedding, "index": i})
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": computed.tokens, "total_tokens": computed.tokens},
    });
    Ok(with_headers(&computed, Json(body)))
}

async fn openai_models(State(state): State<Shared>) -> Json<Value> {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        - state.started.elapsed().as_secs();
    let data: Vec<Value> = state
        .models
        .iter()
        .map(|m| json!({"id": m.name, "object": "model", "created": created, "owned_by": "embedkit"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

// ---------------------------------------------------------------- TEI

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

fn default_true() -> bool {
    true
}

/// TEI's truncation options: embedkit truncates on the right only (as sentence-transformers does).
fn check_direction(direction: Option<&str>) -> Result<(), ApiError> {
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

async fn tei_embed(
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

async fn tei_embed_all(
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

async fn tei_similarity(
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
struct RerankRequest {
    query: String,
    texts: Vec<String>,
    #[serde(default = "default_true")]
    truncate: bool,
    #[serde(default)]
    truncation_direction: Option<String>,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    return_text: bool,
    /// `cosine` (pooled vectors) or `maxsim` (token vectors, late interaction).
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

async fn tei_rerank(
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

async fn tei_tokenize(
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

// ---------------------------------------------------------------- service routes

async fn info(State(state): State<Shared>) -> Json<Value> {
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

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics_route(State(state): State<Shared>) -> Response {
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
async fn drift_route(
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
async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        include_str!("openapi.json"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(v: Value) -> Vec<Vec<serde_json::Number>> {
        serde_json::from_value(v).expect("lists of numbers")
    }

    #[test]
    fn token_ids_inside_the_vocabulary_pass_unchanged() {
        let ids = checked_ids(
            numbers(json!([[101, 0, 30521], [102]])),
            true,
            Some(30522),
            "m",
        );
        assert_eq!(ids.unwrap(), vec![vec![101, 0, 30521], vec![102]]);
    }

    #[test]
    fn a_token_id_past_the_vocabulary_is_a_400_naming_input_id_and_size() {
        // 30522 is the first id all-MiniLM-L6-v2 has no row for; 100257 is tiktoken's <|endoftext|>.
        for (bad, pos) in [(30522u64, 1usize), (100257, 1)] {
            let e = checked_ids(numbers(json!([[101], [7, bad]])), true, Some(30522), "mini")
                .expect_err("an id past the vocabulary is refused");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.style, ErrorStyle::OpenAi);
            assert_eq!(e.param.as_deref(), Some("input"));
            for part in [
                "input[1]".to_string(),
                format!("token id {bad}"),
                format!("position {pos}"),
                "vocabulary of 30522".to_string(),
                "mini".to_string(),
            ] {
                assert!(e.message.contains(&part), "{part:?} not in {:?}", e.message);
            }
        }
        // One flat list is `input`, not `input[0]`.
        let e = checked_ids(numbers(json!([[5, 40000]])), false, Some(30522), "m").unwrap_err();
        assert!(
            e.message.starts_with("input has token id 40000"),
            "{}",
            e.message
        );
    }

    #[test]
    fn negative_fractional_and_huge_numbers_are_not_token_ids() {
        for (bad, shown) in [
            (json!(-1), "-1"),
            (json!(2.5), "2.5"),
            (json!(5_000_000_000u64), "5000000000"),
        ] {
            let e = checked_ids(numbers(json!([[1, bad]])), true, Some(30522), "m").unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(
                e.message.contains("input[0]") && e.message.contains(shown),
                "{}",
                e.message
            );
        }
        // Without a vocabulary, only ids that fit u32 pass.
        assert!(checked_ids(numbers(json!([[4294967295u64]])), true, None, "m").is_ok());
        assert!(checked_ids(numbers(json!([[4294967296u64]])), true, None, "m").is_err());
    }
}
