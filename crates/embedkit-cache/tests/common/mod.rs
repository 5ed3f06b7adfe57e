//! Shared helpers: real tiny models, a counting embedder, and real redis-server processes on loopback.
#![allow(dead_code)]

use embedkit_core::{EmbedError, Embedder, Embeddings, EncodeOptions};
use embedkit_cpu::{CpuBackend, CpuOptions};
use embedkit_model::{Backend, LocalEmbedder};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A tiny model folder from the repository's fixtures.
pub fn tiny(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(name)
}

/// Loads a model folder on the CPU backend.
pub fn load_dir(dir: &Path, threads: usize) -> LocalEmbedder {
    let options = CpuOptions {
        threads: Some(threads),
        ..Default::default()
    };
    LocalEmbedder::load(&dir.display().to_string(), dir, |cfg, w| {
        Ok(Box::new(CpuBackend::new(cfg, w, &options)?) as Box<dyn Backend>)
    })
    .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

/// Loads a tiny fixture model with one thread.
pub fn load_tiny(name: &str) -> LocalEmbedder {
    load_dir(&tiny(name), 1)
}

/// Wraps an embedder and records what reaches it: calls, texts, and each text seen. Optionally sleeps in
/// every call so that concurrent callers overlap.
pub struct Counting<E> {
    pub inner: E,
    pub calls: AtomicUsize,
    pub texts: AtomicUsize,
    pub seen: Mutex<Vec<String>>,
    pub delay: Duration,
}

impl<E: Embedder> Counting<E> {
    pub fn new(inner: E) -> Self {
        Self::slow(inner, Duration::ZERO)
    }

    pub fn slow(inner: E, delay: Duration) -> Self {
        Self {
            inner,
            calls: AtomicUsize::new(0),
            texts: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            delay,
        }
    }

    pub fn texts(&self) -> usize {
        self.texts.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl<E: Embedder> Embedder for Counting<E> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn dims(&self) -> usize {
        self.inner.dims()
    }
    fn fingerprint(&self) -> String {
        self.inner.fingerprint()
    }
    fn embed(&self, texts: &[&str], options: &EncodeOptions) -> Result<Embeddings, EmbedError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        self.seen
            .lock()
            .unwrap()
            .extend(texts.iter().map(|t| t.to_string()));
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.inner.embed(texts, options)
    }
}

/// Asserts two matrices are equal to within `tol` per component.
pub fn assert_close(what: &str, got: &Embeddings, want: &Embeddings, tol: f32) {
    assert_eq!(got.rows(), want.rows(), "{what}: rows");
    assert_eq!(got.dims(), want.dims(), "{what}: dims");
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        let diff = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff <= tol, "{what}: row {i} differs by {diff}");
    }
}

/// A few dozen distinct sentences.
pub fn sentences(n: usize, tag: &str) -> Vec<String> {
    let words = [
        "cache", "vector", "model", "redis", "disk", "batch", "token", "query", "answer", "river",
        "mountain", "orange", "quiet", "signal", "window", "garden",
    ];
    (0..n)
        .map(|i| {
            let a = words[i % words.len()];
            let b = words[(i * 7 + 3) % words.len()];
            let c = words[(i * 11 + 5) % words.len()];
            format!("{tag} {i}: the {a} near the {b} keeps a {c}")
        })
        .collect()
}

pub fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ---------------------------------------------------------------------------------------------------------
// redis-server processes

/// Fails the test with instructions when redis-server is missing: these tests must not pass silently.
pub fn require_redis() {
    for bin in ["redis-server", "redis-cli"] {
        match Command::new(bin).arg("--version").output() {
            Ok(o) if o.status.success() => {}
            _ => panic!(
                "{bin} is not installed: the Redis cache tests need a real server on loopback. \
                 Install it (Debian/Ubuntu: `apt-get install -y redis-server`; scripts/test does this)."
            ),
        }
    }
}

/// A free TCP port on 127.0.0.1 (racy in theory; the server start retries on a new port if it fails).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port on 127.0.0.1")
}

/// One redis-server child process on 127.0.0.1, killed when dropped.
pub struct RedisServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server with no persistence on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra arguments (`--requirepass x`, `--cluster-enabled yes`, …).
    pub fn start_with(extra: &[&str]) -> Self {
        require_redis();
        let mut last = String::new();
        for _ in 0..5 {
            let mut s = Self {
                port: free_port(),
                dir: tempfile::tempdir().expect("temp dir for redis-server"),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                child: None,
            };
            match s.spawn() {
                Ok(()) => return s,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawning redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                self.child = None;
                return Err(format!("redis-server exited with {status}: {log}"));
            }
            if self.ping() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err("redis-server did not answer PING within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)) else {
            return false;
        };
        let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        // A password-protected server answers NOAUTH, which still means it is up.
        match redis::cmd("PING").query::<String>(&mut c) {
            Ok(_) => true,
            Err(e) => e.code() == Some("NOAUTH"),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// A connection for the test's own checks.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("test connection to redis-server")
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty, since nothing is persisted).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.spawn() {
                Ok(()) => return,
                // The old socket may linger a moment.
                Err(e) if Instant::now() > deadline => panic!("restarting redis-server: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Freezes (SIGSTOP) or resumes (SIGCONT) the server: a server that accepts connections and never
    /// answers, i.e. a slow one.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{sig} failed");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            // A stopped process cannot handle SIGKILL until continued on some systems; continue it first.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
        }
        self.kill();
    }
}

/// Polls `f` every 50 ms until it returns true or `limit` passes; returns whether it did.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
