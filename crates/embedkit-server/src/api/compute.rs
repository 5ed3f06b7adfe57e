//! The path of every embedding request: input limits, admission, tokenization on the blocking pool, the
//! model's queue, finishing of pooled vectors (truncation, normalization), TEI's timing headers, and the
//! in-flight gauge that also counts requests whose clients went away.

use super::{AppState, Kind, Model};
use crate::error::{ApiError, ErrorStyle};
use crate::metrics::Metrics;
use crate::queue::{Done, Job, Want, Work};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use embedkit_core::EncodeOptions;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What to embed.
pub(super) enum Inputs {
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
pub(super) struct Params {
    pub(super) normalize: Option<bool>,
    pub(super) dims: Option<usize>,
    pub(super) prompt_name: Option<String>,
    pub(super) truncate: bool,
}

/// Results of a request and where its time went.
pub(super) struct Computed {
    pub(super) vectors: Vec<Vec<f32>>,
    pub(super) tokens: usize,
    pub(super) chars: usize,
    pub(super) tokenize: Duration,
    pub(super) done: Done,
}

impl Computed {
    /// TEI's timing headers, in milliseconds (`x-compute-time` is tokenization + queue + inference).
    pub(super) fn headers(&self) -> [(HeaderName, String); 6] {
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

pub(super) fn with_headers(computed: &Computed, body: impl IntoResponse) -> Response {
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
pub(super) async fn compute(
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
