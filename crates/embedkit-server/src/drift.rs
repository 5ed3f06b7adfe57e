//! Live drift monitoring of the vectors a model serves (`embedkit serve --drift-reference PROFILE`).
//!
//! The request path only offers each text's vector to a bounded channel (`try_send`: when the monitor is
//! behind, the vector is dropped and counted, never waited for). One thread per monitored model, at the lowest
//! CPU priority (nice 19) with a one-thread rayon pool of its own, collects them into a window and, every
//! `window` vectors, runs embedkit-monitor's calibrated drift test of the window against the profile's
//! reference sample, with the profile's cluster centres. The alert is raised after `alert_after` (2)
//! consecutive drifting windows and cleared by a window without drift. Every `canary_interval` the profile's
//! canary texts are re-embedded through the model's own queue and compared with their recorded vectors.
//! The results go to `/metrics` (Prometheus gauges) and `GET /drift` (JSON).

use crate::ServerError;
use crate::error::ApiError;
use crate::queue::{Job, Want, Work};
use axum::http::StatusCode;
use embedkit_core::{EmbedError, Embeddings, EncodeOptions};
use embedkit_model::LocalEmbedder;
use embedkit_monitor::rng::SplitMix64;
use embedkit_monitor::{CanaryCheck, DriftOptions, DriftReport, Profile, detect};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod prometheus;
pub(crate) use prometheus::render;

/// Vectors per checked window unless told otherwise.
pub const DEFAULT_WINDOW: usize = 500;
/// Consecutive drifting windows that raise the alert.
pub const DEFAULT_ALERT_AFTER: usize = 2;
/// Seconds between canary re-embeds unless told otherwise.
pub const DEFAULT_CANARY_INTERVAL: Duration = Duration::from_secs(60);
/// Share of one core the checks may take unless told otherwise (`scripts/bench-serve-drift`: without a
/// limit, checks running in the gaps between forward passes cost a loaded 2-core server 40% of its throughput).
pub const DEFAULT_MAX_CPU: f64 = 0.05;
/// Smallest canary cosine that counts as unchanged (as `embedkit drift canary check`).
const CANARY_MIN_COSINE: f64 = 0.9999;
/// Upper bounds of the vector-norm histogram.
const NORM_BUCKETS: [f64; 17] = [
    0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.001, 1.01, 1.1, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0,
];

/// Drift monitoring of one served model.
#[derive(Debug, Clone)]
pub struct DriftConfig {
    /// The served model's name; `None` = the first model.
    pub model: Option<String>,
    /// The reference profile (`embedkit drift profile`).
    pub profile: Arc<Profile>,
    /// Vectors per checked window (at least the test's minimum current sample, 50).
    pub window: usize,
    /// Consecutive drifting windows that raise the alert.
    pub alert_after: usize,
    /// Time between canary re-embeds (`None` = never); the first runs at start.
    pub canary_interval: Option<Duration>,
    /// The drift test's options (α, permutations, methods); the profile's centres are used for clusters.
    pub options: DriftOptions,
    /// At most this share of one core goes to checks: after a check of t seconds the monitor rests
    /// t·(1/share − 1) (vectors offered meanwhile are dropped once the channel is full). 1 = no rest.
    pub max_cpu: f64,
}

impl DriftConfig {
    /// Monitoring with the defaults: windows of 500, alert after 2, canary every minute, the CLI's test options
    /// (α = 0.05, 500 permutations, every method) and the profile's cluster centres.
    pub fn new(profile: Profile) -> Self {
        let options = DriftOptions {
            projection: false,
            centres: Some(profile.centres.clone()),
            ..Default::default()
        };
        Self {
            model: None,
            profile: Arc::new(profile),
            window: DEFAULT_WINDOW,
            alert_after: DEFAULT_ALERT_AFTER,
            canary_interval: Some(DEFAULT_CANARY_INTERVAL),
            options,
            max_cpu: DEFAULT_MAX_CPU,
        }
    }
}

/// The served model a monitor watches: how its vectors are finished and how canaries reach it.
pub(crate) enum Target {
    /// A local model: the queue returns pooled vectors, finished here with the model's defaults.
    Local(Arc<LocalEmbedder>),
    /// Any other embedder: the queue returns finished vectors.
    Other,
}

/// Checks that every monitor names a served model (at most one monitor a model) before any thread starts.
pub(crate) fn validate(configs: &[DriftConfig], names: &[&str]) -> Result<(), ServerError> {
    let mut seen = Vec::new();
    for c in configs {
        let name = match &c.model {
            Some(m) if !names.contains(&m.as_str()) => {
                return Err(ServerError::Drift(format!(
                    "--drift-reference names model '{m}', which is not served ({})",
                    names.join(", ")
                )));
            }
            Some(m) => m.as_str(),
            None => names.first().copied().unwrap_or_default(),
        };
        if seen.contains(&name) {
            return Err(ServerError::Drift(format!(
                "two drift references for model '{name}'"
            )));
        }
        seen.push(name);
        if c.window < c.options.min_current.max(2) {
            return Err(ServerError::Drift(format!(
                "a drift window of {} vectors is below the test's minimum of {}",
                c.window, c.options.min_current
            )));
        }
        if !(c.max_cpu > 0.0 && c.max_cpu <= 1.0) {
            return Err(ServerError::Drift(format!(
                "the drift monitor's CPU share must be in (0, 1], got {}",
                c.max_cpu
            )));
        }
        if c.alert_after == 0 {
            return Err(ServerError::Drift(
                "the alert needs at least one drifting window".into(),
            ));
        }
    }
    Ok(())
}

/// The drift monitor of one model: the request path's end of it.
pub(crate) struct Monitor {
    model: String,
    local: bool,
    tx: SyncSender<Vec<f32>>,
    shared: Arc<Shared>,
}

/// What the monitor thread and the routes share.
struct Shared {
    config: DriftConfig,
    /// Vectors offered by requests.
    offered: AtomicU64,
    /// Of those, dropped because the monitor was behind (channel full).
    dropped: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Vectors in the window being filled.
    filled: usize,
    /// Vectors taken out of the channel and kept (dimension mismatches are not).
    received: u64,
    /// Vectors of other dimensions than the profile (a request's `dimensions`), not tested.
    wrong_dims: u64,
    checked: u64,
    drifting: u64,
    consecutive: usize,
    alert: bool,
    alerts_raised: u64,
    errors: u64,
    last_error: Option<String>,
    last: Option<(DriftReport, Value)>,
    last_check_seconds: f64,
    last_checked_unix: f64,
    norm_counts: Vec<u64>,
    norm_sum: f64,
    norm_count: u64,
    canary: Option<CanaryState>,
}

struct CanaryState {
    texts: usize,
    checks: u64,
    last: Option<CanaryCheck>,
    error: Option<String>,
    checked_unix: f64,
}

/// Starts the monitor of `name` if a config asks for it. `first` says whether it is the first served model.
pub(crate) fn start(
    name: &str,
    first: bool,
    configs: &[DriftConfig],
    target: Target,
    jobs: Sender<Job>,
    dims: usize,
) -> Result<Option<Arc<Monitor>>, ServerError> {
    let Some(config) = configs
        .iter()
        .find(|c| c.model.as_deref() == Some(name) || (c.model.is_none() && first))
    else {
        return Ok(None);
    };
    let profile = &config.profile;
    if profile.dims() != dims {
        return Err(ServerError::Drift(format!(
            "the drift profile has {} dimensions and model '{name}' {dims}: not this model's profile",
            profile.dims()
        )));
    }
    let (tx, rx) = sync_channel(2 * config.window.max(DEFAULT_WINDOW));
    let shared = Arc::new(Shared {
        config: config.clone(),
        offered: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        state: Mutex::new(State {
            norm_counts: vec![0; NORM_BUCKETS.len()],
            canary: profile.canary.as_ref().map(|c| CanaryState {
                texts: c.texts.len(),
                checks: 0,
                last: None,
                error: None,
                checked_unix: 0.0,
            }),
            ..Default::default()
        }),
    });
    let local = matches!(target, Target::Local(_));
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("embedkit-drift-{name}"))
        .spawn(move || run(rx, &thread_shared, &target, &jobs))
        .map_err(|source| ServerError::Io {
            what: format!("cannot start the drift monitor of {name}"),
            source,
        })?;
    Ok(Some(Arc::new(Monitor {
        model: name.to_string(),
        local,
        tx,
        shared,
    })))
}

impl Monitor {
    /// Offers a request's vectors: pooled ones for a local model, finished ones otherwise (those count only when
    /// the request kept the model's default dimensions and normalization, `default_shape`). Never blocks.
    pub(crate) fn observe(&self, vectors: &[Vec<f32>], default_shape: bool) {
        if !self.local && !default_shape {
            return;
        }
        let n = vectors.len() as u64;
        self.shared.offered.fetch_add(n, Ordering::Relaxed);
        for (i, v) in vectors.iter().enumerate() {
            if self.tx.try_send(v.clone()).is_err() {
                // Full (the monitor is behind) or gone: the rest would not fit either.
                self.shared
                    .dropped
                    .fetch_add(n - i as u64, Ordering::Relaxed);
                return;
            }
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The monitor thread: fill windows, test them, re-embed the canary when due.
fn run(rx: Receiver<Vec<f32>>, shared: &Shared, target: &Target, jobs: &Sender<Job>) {
    // Below the HTTP threads (nice 10 by default) and far below inference: monitoring takes what is idle.
    crate::lower_thread_priority(19);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "embedkit-drift-test".into())
        .start_handler(|_| crate::lower_thread_priority(19))
        .build()
        .map_err(|e| {
            tracing::warn!("drift monitor: no thread pool of its own ({e}); using the global one")
        })
        .ok();
    let config = &shared.config;
    let profile = &config.profile;
    let d = profile.dims();
    let mut window: Vec<f32> = Vec::with_capacity(config.window * d);
    let mut windows = 0u64;
    let mut canary_due = config
        .canary_interval
        .filter(|_| profile.canary.is_some())
        .map(|_| Instant::now());
    loop {
        let wait = canary_due.map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok(v) => {
                let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
                let v = match target {
                    Target::Local(m) => m.finish_vector(v, None, None).ok(),
                    Target::Other => Some(v),
                };
                let mut st = lock(shared);
                st.received += 1;
                if let Some(b) = NORM_BUCKETS.iter().position(|&b| norm <= b) {
                    st.norm_counts[b] += 1;
                }
                st.norm_sum += norm;
                st.norm_count += 1;
                match v.filter(|v| v.len() == d && v.iter().all(|x| x.is_finite())) {
                    Some(v) => {
                        window.extend_from_slice(&v);
                        st.filled += 1;
                    }
                    None => st.wrong_dims += 1,
                }
                let full = st.filled >= config.window;
                drop(st);
                if full {
                    let start = Instant::now();
                    check(shared, &window, windows, pool.as_ref());
                    windows += 1;
                    window.clear();
                    lock(shared).filled = 0;
                    let share = config.max_cpu.clamp(1e-3, 1.0);
                    if share < 1.0 {
                        std::thread::sleep(start.elapsed().mul_f64(1.0 / share - 1.0));
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return, // the server is gone
        }
        if let (Some(due), Some(interval)) = (canary_due, config.canary_interval)
            && Instant::now() >= due
        {
            run_canary(shared, target, jobs);
            canary_due = Some(Instant::now() + interval);
        }
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the counters inconsistent enough to matter: keep going.
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Tests one full window against the reference and updates the verdicts and the alert.
fn check(shared: &Shared, window: &[f32], number: u64, pool: Option<&rayon::ThreadPool>) {
    let config = &shared.config;
    let d = config.profile.dims();
    let start = Instant::now();
    let mut options = config.options.clone();
    // Fresh relabellings for every window, the same for the same window number: reproducible, and windows
    // do not share their random errors.
    options.seed = SplitMix64::stream(options.seed, number).next_u64();
    let result = Embeddings::new(window.to_vec(), window.len() / d, d)
        .map_err(|e| e.to_string())
        .and_then(|current| {
            let test = || detect(&config.profile.reference, &current, &options);
            match pool {
                Some(p) => p.install(test),
                None => test(),
            }
            .map_err(|e| e.to_string())
        });
    let took = start.elapsed().as_secs_f64();
    let mut st = lock(shared);
    st.last_check_seconds = took;
    st.last_checked_unix = unix_now();
    match result {
        Ok(report) => {
            st.checked += 1;
            if report.drift {
                st.drifting += 1;
                st.consecutive += 1;
            } else {
                st.consecutive = 0;
            }
            let alert = st.consecutive >= config.alert_after;
            if alert && !st.alert {
                st.alerts_raised += 1;
                tracing::warn!(
                    p_value = report.p_value,
                    windows = st.consecutive,
                    "drift alert: {} consecutive windows of served vectors differ from the reference",
                    st.consecutive
                );
            } else if !alert && st.alert {
                tracing::info!("drift alert cleared: a window without drift");
            }
            st.alert = alert;
            st.last_error = None;
            let json = embedkit_monitor::report::to_json(&report, None, None);
            st.last = Some((report, json));
        }
        Err(e) => {
            st.errors += 1;
            tracing::warn!("drift check failed: {e}");
            st.last_error = Some(e);
        }
    }
}

/// Re-embeds the profile's canary texts through the model's queue, as a request would, and compares.
fn run_canary(shared: &Shared, target: &Target, jobs: &Sender<Job>) {
    let Some(canary) = shared.config.profile.canary.as_ref() else {
        return;
    };
    let result = embed_through_queue(target, jobs, &canary.texts, &canary.encode_options())
        .map(|v| canary.check(&v, CANARY_MIN_COSINE));
    let mut st = lock(shared);
    if let Some(c) = st.canary.as_mut() {
        c.checks += 1;
        c.checked_unix = unix_now();
        match result {
            Ok(check) => {
                if check.changed {
                    tracing::warn!("canary changed: {}", check.reasons.join("; "));
                }
                c.last = Some(check);
                c.error = None;
            }
            Err(e) => {
                tracing::warn!("canary re-embed failed: {e}");
                c.error = Some(e.to_string());
            }
        }
    }
}

fn embed_through_queue(
    target: &Target,
    jobs: &Sender<Job>,
    texts: &[String],
    options: &EncodeOptions,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let work = match target {
        Target::Local(m) => {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            Work::Prepared {
                texts: m.prepare(&refs, options)?,
                want: Want::Pooled,
            }
        }
        Target::Other => Work::Texts {
            texts: texts.to_vec(),
            options: options.clone(),
            want: Want::Pooled,
        },
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    let gone = || EmbedError::Backend("the model's compute thread has stopped".into());
    jobs.send(Job {
        work,
        reply,
        queued_at: Instant::now(),
    })
    .map_err(|_| gone())?;
    let done = rx.blocking_recv().map_err(|_| gone())??;
    match target {
        Target::Local(m) => done
            .vectors
            .into_iter()
            .map(|v| m.finish_vector(v, options.truncate_dim, options.normalize))
            .collect(),
        Target::Other => Ok(done.vectors),
    }
}

/// `GET /drift`: the monitor of `model` (default: the first monitored one) as JSON.
pub(crate) fn report<'a>(
    mut monitors: impl Iterator<Item = &'a Monitor>,
    model: Option<&str>,
) -> Result<Value, ApiError> {
    let found = match model {
        Some(name) => monitors.find(|m| m.model == name),
        None => monitors.next(),
    };
    let Some(m) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            match model {
                Some(name) => format!("model '{name}' is not drift-monitored"),
                None => "drift monitoring is off: start the server with --drift-reference PROFILE"
                    .to_string(),
            },
        ));
    };
    Ok(m.json())
}

impl Monitor {
    /// The last window's `embedkit drift --json` document, with the window counters, alert and canary.
    fn json(&self) -> Value {
        let s = &self.shared;
        let st = lock(s);
        let mut out = match &st.last {
            Some((_, json)) => json.clone(),
            None => json!({"drift": false, "p_value": null, "alpha": s.config.options.alpha,
                           "methods": {}, "clusters": [], "cluster_shift": null, "novel": [], "emptied": []}),
        };
        let window = json!({
            "size": s.config.window,
            "filled": st.filled,
            "checked": st.checked,
            "drifting": st.drifting,
            "errors": st.errors,
            "last_error": st.last_error,
            "vectors_offered": s.offered.load(Ordering::Relaxed),
            "vectors_dropped": s.dropped.load(Ordering::Relaxed),
            "vectors_received": st.received,
            "vectors_other_dims": st.wrong_dims,
            "last_check_seconds": st.last_check_seconds,
            "last_checked_unix": st.last_checked_unix,
        });
        let alert = json!({
            "active": st.alert,
            "consecutive_drifting_windows": st.consecutive,
            "after": s.config.alert_after,
            "raised": st.alerts_raised,
        });
        let canary = st.canary.as_ref().map(|c| {
            json!({
                "texts": c.texts,
                "checks": c.checks,
                "changed": c.last.as_ref().map(|l| l.changed),
                "min_cosine": c.last.as_ref().map(|l| l.min_cosine),
                "max_norm_change": c.last.as_ref().map(|l| l.max_norm_change),
                "reasons": c.last.as_ref().map_or_else(Vec::new, |l| l.reasons.clone()),
                "error": c.error,
                "checked_unix": c.checked_unix,
            })
        });
        if let Some(o) = out.as_object_mut() {
            o.insert("model".into(), json!(self.model));
            o.insert("window".into(), window);
            o.insert("alert".into(), alert);
            o.insert("canary".into(), json!(canary));
            o.insert(
                "reference".into(),
                json!({"rows": s.config.profile.reference.rows(), "dims": s.config.profile.dims(),
                       "clusters": s.config.profile.meta.clusters, "source": s.config.profile.meta.source}),
            );
        }
        out
    }
}
