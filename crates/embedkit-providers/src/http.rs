//! One JSON POST with retries: exponential backoff with jitter on 408, 409, 429, 5xx, timeouts and broken
//! connections (the set the OpenAI SDKs retry), honouring `retry-after-ms` and `Retry-After` (seconds or an
//! HTTP-date). 400, 401, 403, 404 and 422 fail at once: the same request would fail again.

use crate::ProviderError;
use crate::secret::Secret;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// When and how often to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = never retry).
    pub max_retries: u32,
    /// Delay before the first retry; doubles with each retry.
    pub base_delay: Duration,
    /// Cap on the backoff delay.
    pub max_delay: Duration,
    /// Cap on a delay the server asks for with Retry-After.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry number `retry` (0-based): `base·2^retry` capped at `max_delay`, then "equal jitter"
    /// (half fixed, half random) so that parallel clients that failed together do not retry together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max_delay);
        let half = exp / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Whether an HTTP status is worth retrying.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}

/// The delay a response asks for: `retry-after-ms` (OpenAI), else `Retry-After` as delta-seconds or an
/// HTTP-date (RFC 9110 §10.2.3) relative to `now`. `None` when absent or unparsable.
pub fn retry_after(
    retry_after_ms: Option<&str>,
    retry_after: Option<&str>,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(ms) = retry_after_ms.and_then(|v| v.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1e3));
    }
    let v = retry_after?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The parts of a request that stay the same across retries.
pub(crate) struct Endpoint {
    pub provider: &'static str,
    pub url: String,
    /// The key and how it is sent; none for servers that need no key.
    pub auth: Option<Auth>,
}

/// How a key travels.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// `Authorization: Bearer KEY` (OpenAI, Cohere, Voyage).
    Bearer(Secret),
    /// `api-key: KEY` (Azure OpenAI).
    ApiKey(Secret),
}

/// A successful response body, and how many requests it took.
pub(crate) struct Reply {
    pub body: Vec<u8>,
    /// Requests it took (1 + retries).
    pub attempts: u32,
}

/// Largest response body read (a 2048 × 3072 float batch as JSON is ~130 MB).
const BODY_LIMIT: u64 = 1 << 30;

/// POSTs `body` to `endpoint`, retrying as [`RetryPolicy`] says. `requests` counts every attempt.
pub(crate) fn post_json(
    agent: &ureq::Agent,
    endpoint: &Endpoint,
    body: &[u8],
    policy: &RetryPolicy,
    requests: &AtomicU64,
) -> Result<Reply, ProviderError> {
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        requests.fetch_add(1, Ordering::Relaxed);
        let mut req = agent
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("accept", "application/json");
        match &endpoint.auth {
            Some(Auth::Bearer(key)) => {
                req = req.header("authorization", format!("Bearer {}", key.expose()));
            }
            Some(Auth::ApiKey(key)) => req = req.header("api-key", key.expose()),
            None => {}
        }
        let (retry, delay, err) = match req.send(body) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let header = |n: &str| {
                    resp.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let (ms, ra) = (header("retry-after-ms"), header("retry-after"));
                match resp
                    .body_mut()
                    .with_config()
                    .limit(BODY_LIMIT)
                    .read_to_vec()
                {
                    Ok(bytes) if (200..300).contains(&status) => {
                        return Ok(Reply {
                            body: bytes,
                            attempts,
                        });
                    }
                    Ok(bytes) => {
                        let asked = retry_after(ms.as_deref(), ra.as_deref(), SystemTime::now());
                        let err = ProviderError::Http {
                            provider: endpoint.provider,
                            status,
                            message: error_message(&bytes),
                            attempts,
                        };
                        (retryable_status(status), asked, err)
                    }
                    // The body was cut short (connection closed before Content-Length bytes, a broken chunk):
                    // a transport failure, so retried whatever the status.
                    Err(e) => (
                        true,
                        None,
                        ProviderError::Transport {
                            provider: endpoint.provider,
                            message: format!("reading the HTTP {status} response: {e}"),
                            attempts,
                        },
                    ),
                }
            }
            Err(e) => (
                transient(&e),
                None,
                ProviderError::Transport {
                    provider: endpoint.provider,
                    message: e.to_string(),
                    attempts,
                },
            ),
        };
        if !retry || attempts > policy.max_retries {
            return Err(err);
        }
        let wait = match delay {
            Some(d) => d.min(policy.max_retry_after),
            None => policy.backoff(attempts - 1),
        };
        std::thread::sleep(wait);
    }
}

/// Failures that may pass: timeouts, refused/reset connections, protocol breaks from a dying server.
fn transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Timeout(_)
            | ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled
    )
}

/// The provider's message from an error body: `error.message` (OpenAI, Azure), `message` (Cohere), `detail`
/// (Voyage), else the start of the body on one line.
pub(crate) fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let found = v
            .pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .or_else(|| v.get("error"));
        match found {
            Some(serde_json::Value::String(s)) => return one_line(s, 500),
            Some(other) if !other.is_null() => return one_line(&other.to_string(), 500),
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        "(empty body)".to_string()
    } else {
        one_line(&text, 200)
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            retry_after(None, Some("3"), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(None, Some("0.25"), now),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after(None, Some("Sun, 06 Nov 1994 08:49:47 GMT"), now),
            Some(Duration::from_secs(10))
        );
        // A date in the past means "now".
        assert_eq!(
            retry_after(None, Some("Sun, 06 Nov 1994 08:49:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after(Some("1500"), Some("9"), now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after(None, Some("soon"), now), None);
        assert_eq!(retry_after(None, Some("-1"), now), None);
        assert_eq!(retry_after(None, None, now), None);
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        for retry in 0..8 {
            let full = (100u64 << retry).min(1000);
            for _ in 0..50 {
                let d = p.backoff(retry).as_millis() as u64;
                assert!(d >= full / 2 && d <= full, "retry {retry}: {d} ms");
            }
        }
    }

    #[test]
    fn statuses() {
        for s in [408, 409, 429, 500, 502, 503, 504] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(!retryable_status(s), "{s}");
        }
    }

    #[test]
    fn messages() {
        assert_eq!(
            error_message(br#"{"error":{"message":"Rate limit reached","type":"requests"}}"#),
            "Rate limit reached"
        );
        assert_eq!(
            error_message(br#"{"id":"x","message":"invalid api token"}"#),
            "invalid api token"
        );
        assert_eq!(
            error_message(br#"{"detail":"Provided API key is invalid."}"#),
            "Provided API key is invalid."
        );
        assert_eq!(
            error_message(b"<html>\nBad gateway</html>"),
            "<html> Bad gateway</html>"
        );
        assert_eq!(error_message(b""), "(empty body)");
    }
}
