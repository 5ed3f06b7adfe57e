//! A local stand-in for the paid APIs: real HTTP/1.1 over loopback (std `TcpListener`, one thread per
//! connection), speaking each provider's documented request and response JSON (see `src/wire.rs` for the
//! references), checking keys and limits the way the APIs do, and injecting faults on request: error statuses
//! with Retry-After, sleeps past the client's timeout, bodies cut short, malformed JSON, wrong vector counts,
//! and OpenAI's `data` out of index order.
//!
//! Vectors are a deterministic function of (input type, text), so tests can check each text got its own vector.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which API the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Azure,
    Cohere,
    Voyage,
}

/// What to do to one request instead of answering it well.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this request well.
    Pass,
    /// Answer with this status, the provider's error JSON, and these extra headers.
    Status(u16, Vec<(String, String)>),
    /// Sleep this long before answering (past the client's timeout).
    Sleep(Duration),
    /// Promise the full Content-Length, send half the body, close.
    Truncate,
    /// 200 with a body that is not JSON.
    Malformed,
    /// 200 with one vector too few.
    MissingVector,
    /// Close the connection without answering.
    Drop,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The texts of this request, whatever the dialect calls them.
    pub fn texts(&self) -> Vec<String> {
        let v = self.body.get("input").or_else(|| self.body.get("texts"));
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Vectors for (input type, texts) in place of [`fake_vector`]: e.g. a real local model behind the fake API.
pub type VectorFn = Arc<dyn Fn(Option<&str>, &[&str]) -> Vec<Vec<f32>> + Send + Sync>;

struct State {
    vectors: Option<VectorFn>,
    dialect: Dialect,
    dims: usize,
    key: Option<String>,
    max_inputs: usize,
    faults: Mutex<VecDeque<Fault>>,
    seen: Mutex<Vec<Seen>>,
    shuffle: AtomicBool,
    report_usage: AtomicBool,
    /// Added to every answer, so that requests overlap.
    delay_ms: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A running fake API server.
pub struct FakeServer {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl FakeServer {
    /// Starts a server speaking `dialect`, returning `dims`-wide vectors and requiring `key` when given.
    pub fn start(dialect: Dialect, dims: usize, key: Option<&str>) -> Self {
        Self::start_with(dialect, dims, key, None)
    }

    /// As [`FakeServer::start`], with vectors from `vectors` when given.
    pub fn start_with(
        dialect: Dialect,
        dims: usize,
        key: Option<&str>,
        vectors: Option<VectorFn>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let max_inputs = match dialect {
            Dialect::OpenAi | Dialect::Azure => 2048,
            Dialect::Cohere => 96,
            Dialect::Voyage => 1000,
        };
        let state = Arc::new(State {
            vectors,
            dialect,
            dims,
            key: key.map(str::to_string),
            max_inputs,
            faults: Mutex::new(VecDeque::new()),
            seen: Mutex::new(Vec::new()),
            shuffle: AtomicBool::new(false),
            report_usage: AtomicBool::new(true),
            delay_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &st);
                });
            }
        });
        Self { addr, state }
    }

    /// `http://127.0.0.1:PORT` plus the dialect's usual path prefix (`/v1` for OpenAI and Voyage).
    pub fn base_url(&self) -> String {
        match self.state.dialect {
            Dialect::OpenAi | Dialect::Voyage => format!("http://{}/v1", self.addr),
            Dialect::Azure | Dialect::Cohere => format!("http://{}", self.addr),
        }
    }

    /// Queues faults for the next requests, one each, in order of arrival.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.faults.lock().unwrap().extend(faults);
    }

    /// Return OpenAI/Voyage `data` in reverse index order.
    pub fn shuffle(&self, on: bool) {
        self.state.shuffle.store(on, Ordering::SeqCst);
    }

    /// Leave `usage` out of responses (as some OpenAI-compatible servers do).
    pub fn report_usage(&self, on: bool) {
        self.state.report_usage.store(on, Ordering::SeqCst);
    }

    /// Delay every answer by `d`.
    pub fn delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// The most requests the server was answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests received so far (every attempt).
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    pub fn reset(&self) {
        self.state.seen.lock().unwrap().clear();
        self.state.faults.lock().unwrap().clear();
    }
}

/// The vector the server gives `text` with `input_type`: unit length, `dims` wide, from a hash of both.
pub fn fake_vector(input_type: Option<&str>, text: &str, dims: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input_type
        .unwrap_or("")
        .bytes()
        .chain([0xff])
        .chain(text.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// Tokens the server bills for a text: words + 1.
pub fn fake_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64 + 1
}

fn serve(conn: TcpStream, st: &State) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let seen = Seen {
        method,
        target,
        headers,
        body,
    };
    st.seen.lock().unwrap().push(seen.clone());
    let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    st.max_in_flight.fetch_max(now, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(st.delay_ms.load(Ordering::SeqCst)));
    // Counted out before the answer is written: once the client has read it, its next request may arrive
    // on another thread before this one gets back here, and the count would then exceed what the client
    // really had in flight (seen as "4 in flight" with a limit of 3 on a loaded CI machine).
    st.in_flight.fetch_sub(1, Ordering::SeqCst);
    reply(conn, st, &seen)
}

fn reply(mut conn: TcpStream, st: &State, seen: &Seen) -> std::io::Result<()> {
    let seen = seen.clone();
    let fault = st.faults.lock().unwrap().pop_front();
    let (status, extra, payload) = match fault {
        Some(Fault::Status(code, extra)) => (
            code,
            extra,
            error_body(st.dialect, code, "injected failure"),
        ),
        Some(Fault::Sleep(d)) => {
            std::thread::sleep(d);
            let (s, b) = answer(st, &seen);
            (s, vec![], b)
        }
        Some(Fault::Truncate) => {
            let (_, b) = answer(st, &seen);
            let bytes = b.to_string().into_bytes();
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            )?;
            conn.write_all(&bytes[..bytes.len() / 2])?;
            conn.flush()?;
            return conn.shutdown(std::net::Shutdown::Both);
        }
        Some(Fault::Malformed) => {
            return respond(
                &mut conn,
                200,
                &[],
                b"{\"object\": \"list\", \"data\": [{\"embedding\": [0.1, ",
            );
        }
        Some(Fault::MissingVector) => {
            let (s, mut b) = answer(st, &seen);
            for key in ["data"] {
                if let Some(a) = b.get_mut(key).and_then(Value::as_array_mut) {
                    a.pop();
                }
            }
            if let Some(a) = b
                .pointer_mut("/embeddings/float")
                .and_then(Value::as_array_mut)
            {
                a.pop();
            }
            (s, vec![], b)
        }
        Some(Fault::Drop) => return conn.shutdown(std::net::Shutdown::Both),
        Some(Fault::Pass) | None => {
            let (s, b) = answer(st, &seen);
            (s, vec![], b)
        }
    };
    respond(&mut conn, status, &extra, payload.to_string().as_bytes())
}

fn respond(
    conn: &mut TcpStream,
    status: u16,
    extra: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Each provider's documented error JSON.
fn error_body(d: Dialect, status: u16, message: &str) -> Value {
    match d {
        Dialect::OpenAi | Dialect::Azure => json!({"error": {
            "message": format!("{message} ({status})"), "type": "server_error", "param": null, "code": null}}),
        Dialect::Cohere => json!({"id": "fake", "message": format!("{message} ({status})")}),
        Dialect::Voyage => json!({"detail": format!("{message} ({status})")}),
    }
}

/// A well-formed answer, or the API's 4xx for a request it would reject.
fn answer(st: &State, seen: &Seen) -> (u16, Value) {
    let d = st.dialect;
    let auth = match d {
        Dialect::Azure => seen.header("api-key").map(str::to_string),
        _ => seen
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string),
    };
    if let Some(key) = &st.key
        && auth.as_deref() != Some(key.as_str())
    {
        return (401, error_body(d, 401, "Incorrect API key provided"));
    }
    let path_ok = match d {
        Dialect::OpenAi | Dialect::Voyage => seen.target == "/v1/embeddings",
        Dialect::Cohere => seen.target == "/v2/embed",
        Dialect::Azure => {
            seen.target.starts_with("/openai/deployments/")
                && seen.target.contains("/embeddings?api-version=")
        }
    };
    if seen.method != "POST" || !path_ok {
        return (
            404,
            error_body(d, 404, &format!("no route {} {}", seen.method, seen.target)),
        );
    }
    let b = &seen.body;
    let (texts_key, dims_key) = match d {
        Dialect::OpenAi | Dialect::Azure => ("input", "dimensions"),
        Dialect::Cohere => ("texts", "output_dimension"),
        Dialect::Voyage => ("input", "output_dimension"),
    };
    let Some(texts) = b.get(texts_key).and_then(Value::as_array) else {
        return (
            400,
            error_body(d, 400, &format!("'{texts_key}' is required")),
        );
    };
    if b.get("model").and_then(Value::as_str).is_none() {
        return (400, error_body(d, 400, "'model' is required"));
    }
    if texts.len() > st.max_inputs {
        return (
            400,
            error_body(d, 400, &format!("at most {} inputs", st.max_inputs)),
        );
    }
    let texts: Vec<&str> = texts.iter().filter_map(Value::as_str).collect();
    if texts.iter().any(|t| t.is_empty()) {
        return (400, error_body(d, 400, "input cannot be an empty string"));
    }
    let input_type = b.get("input_type").and_then(Value::as_str);
    if d == Dialect::Cohere {
        if input_type.is_none() {
            return (
                400,
                error_body(d, 400, "input_type is required for v3 models"),
            );
        }
        if b.get("embedding_types") != Some(&json!(["float"])) {
            return (
                400,
                error_body(d, 400, "expected embedding_types [\"float\"]"),
            );
        }
    }
    let out_dims = b
        .get(dims_key)
        .and_then(Value::as_u64)
        .map_or(st.dims, |x| x as usize);
    let vectors: Vec<Vec<f32>> = if let Some(f) = &st.vectors {
        f(input_type, &texts)
    } else {
        texts
            .iter()
            .map(|t| {
                let mut v = fake_vector(input_type, t, st.dims);
                if out_dims < st.dims {
                    // As OpenAI's `dimensions`: shortened, then unit length again.
                    v.truncate(out_dims);
                    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                    v.iter_mut().for_each(|x| *x /= n);
                }
                v
            })
            .collect()
    };
    let tokens: u64 = texts.iter().map(|t| fake_tokens(t)).sum();
    let usage = st.report_usage.load(Ordering::SeqCst);
    let model = b["model"].clone();
    let body = match d {
        Dialect::OpenAi | Dialect::Azure | Dialect::Voyage => {
            let mut data: Vec<Value> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
                .collect();
            if st.shuffle.load(Ordering::SeqCst) {
                data.reverse();
            }
            let mut r = json!({"object": "list", "data": data, "model": model});
            if usage {
                r["usage"] = if d == Dialect::Voyage {
                    json!({"total_tokens": tokens})
                } else {
                    json!({"prompt_tokens": tokens, "total_tokens": tokens})
                };
            }
            r
        }
        Dialect::Cohere => {
            let mut r = json!({"id": "fake", "embeddings": {"float": vectors}, "texts": texts,
                "response_type": "embeddings_by_type", "meta": {"api_version": {"version": "2"}}});
            if usage {
                r["meta"]["billed_units"] = json!({"input_tokens": tokens});
            }
            r
        }
    };
    (200, body)
}
