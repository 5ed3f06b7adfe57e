//! The embedkit HTTP server: OpenAI-compatible (`/v1/embeddings`, `/v1/models`) and
//! text-embeddings-inference-compatible (`/embed`, `/embed_all`, `/similarity`, `/rerank`, `/tokenize`,
//! `/info`, `/health`, `/metrics`) routes over a cross-request token-budget queue with one compute thread
//! per model, backpressure (429 + Retry-After), body and batch limits, Bearer auth and graceful shutdown.
//!
//! It knows models only as [`LocalEmbedder`] (tokenize once, batch across requests) or as any
//! `Arc<dyn Embedder>` (a cache, an API provider: one call per request).

mod api;
pub mod client;
mod drift;
mod error;
mod metrics;
mod queue;

pub use drift::{
    DEFAULT_ALERT_AFTER, DEFAULT_CANARY_INTERVAL, DEFAULT_MAX_CPU, DEFAULT_WINDOW, DriftConfig,
};
pub use error::{ApiError, ErrorStyle};
pub use metrics::Metrics;

use embedkit_core::Embedder;
use embedkit_model::LocalEmbedder;
use std::net::SocketAddr;
use std::sync::Arc;

/// Limits and settings of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Tokens per forward pass, summed over the texts of all requests in it.
    pub max_batch_tokens: usize,
    /// Requests admitted at once (tokenizing, queued or computing); more get 429.
    pub max_concurrent_requests: usize,
    /// Texts per request; more get 413.
    pub max_client_batch_size: usize,
    /// Request body bytes; more get 413.
    pub max_body_bytes: usize,
    /// When set, every route but `/health` needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Seconds a 429 tells the client to wait.
    pub retry_after_s: u64,
    /// Nice value added to the HTTP and tokenizer threads (Linux; 0 leaves them alone). Inference runs on
    /// its own threads at normal priority; with HTTP work below it, a forward pass split over all cores is
    /// not held up by one core answering requests, and the HTTP work fills the gaps between passes.
    pub io_nice: i32,
    /// Drift monitors of served models (`--drift-reference`); empty = none.
    pub drift: Vec<DriftConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_batch_tokens: 16384,
            max_concurrent_requests: 512,
            max_client_batch_size: 512,
            max_body_bytes: 2 << 20,
            api_key: None,
            retry_after_s: 1,
            io_nice: 10,
            drift: Vec::new(),
        }
    }
}

/// A model to serve under a name.
pub enum ServedModel {
    /// A local model: tokenized on worker threads and batched across requests.
    Local(Arc<LocalEmbedder>),
    /// Anything else that embeds (a cached model, an API provider): one `embed` call per request.
    Other(Arc<dyn Embedder>),
    /// A cross-encoder: scores (query, text) pairs for `/rerank` and `/predict`; it embeds nothing.
    CrossEncoder(Arc<embedkit_model::CrossEncoder>),
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No model was given.
    #[error("no model to serve")]
    NoModels,
    /// Two models were given the same name.
    #[error("two models are named '{0}'; give each --model a different name or path")]
    DuplicateName(String),
    /// A drift monitor that cannot start (a profile of other dimensions, an unknown model …).
    #[error("drift monitor: {0}")]
    Drift(String),
    /// Binding or serving failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A bound server, ready to run.
pub struct Server {
    listener: tokio::net::TcpListener,
    app: axum::Router,
}

impl Server {
    /// Builds the routes for `models` (the first one answers requests without a model name) and binds `addr`
    /// (port 0 picks a free port; see [`Server::local_addr`]). Starts one compute thread per model.
    pub async fn bind(
        addr: SocketAddr,
        models: Vec<(String, ServedModel)>,
        config: ServerConfig,
    ) -> Result<Self, ServerError> {
        let app = api::router(models, config)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Io {
                what: format!("cannot listen on {addr}"),
                source,
            })?;
        Ok(Self { listener, app })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener
            .local_addr()
            .map_err(|source| ServerError::Io {
                what: "cannot read the listening address".into(),
                source,
            })
    }

    /// Serves until `shutdown` completes, then stops accepting and waits for the requests in flight.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        axum::serve(
            self.listener,
            self.app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServerError::Io {
            what: "serving failed".into(),
            source,
        })
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT), logging which.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("interrupted; draining requests in flight"),
        _ = term => tracing::info!("SIGTERM; draining requests in flight"),
    }
}

/// Sends structured logs (one line per request with its id, route, status and time) to stderr: `info`
/// normally, `warn` and worse when `quiet`. Does nothing if a subscriber is already set.
pub fn init_logging(quiet: bool) {
    let level = if quiet {
        tracing::Level::WARN
    } else {
        tracing::Level::INFO
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Raises the calling thread's nice value by `nice` (Linux keeps one per thread). Failure only means the
/// thread keeps its priority, so it is ignored.
fn lower_thread_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: plain syscalls on the calling thread's own id; no memory is passed.
        unsafe {
            let tid = libc::gettid();
            let current = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
            libc::setpriority(
                libc::PRIO_PROCESS,
                tid as libc::id_t,
                (current + nice).min(19),
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Runs a server on its own multi-threaded runtime until SIGTERM or Ctrl-C, then drains the requests in
/// flight. `on_bound` gets the listening address (useful with port 0) before the first request is accepted.
pub fn run_blocking(
    addr: SocketAddr,
    models: Vec<(String, ServedModel)>,
    config: ServerConfig,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    let io_nice = config.io_nice;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("embedkit-http")
        // Worker and blocking (tokenizer) threads alike; the compute threads are started elsewhere.
        .on_thread_start(move || lower_thread_priority(io_nice))
        .build()
        .map_err(|source| ServerError::Io {
            what: "cannot start the async runtime".into(),
            source,
        })?;
    runtime.block_on(async move {
        let server = Server::bind(addr, models, config).await?;
        on_bound(server.local_addr()?);
        server.run(shutdown_signal()).await
    })
}
