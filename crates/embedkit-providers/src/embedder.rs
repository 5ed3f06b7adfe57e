//! [`ApiEmbedder`]: an API model as an [`Embedder`] — batches cut to the API's limits, sent in parallel up to a
//! concurrency limit, retried, reassembled in input order, with usage and cost counted.

use crate::ProviderError;
use crate::http::{Auth, Endpoint, RetryPolicy, post_json};
use crate::models::{DimsParam, Limits, Provider, lookup, parse_spec};
use crate::secret::Secret;
use crate::wire::{Request, parse_response, request_body};
use embedkit_core::{EmbedError, Embedder, Embeddings, EncodeOptions, Usage, l2_normalize};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Azure OpenAI `api-version` used when neither the configuration nor `OPENAI_API_VERSION` gives one (the
/// current GA version of the data-plane API).
pub const AZURE_API_VERSION: &str = "2024-10-21";

/// How to reach and call an API. `Default` reads nothing; [`ProviderConfig::from_env`] fills the key, base URL
/// and API version from the environment as each vendor's SDK does.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// Base URL: `https://api.openai.com/v1` style for OpenAI and Voyage (the path `/embeddings` is appended),
    /// `https://api.cohere.com` for Cohere (`/v2/embed` is appended), the resource endpoint
    /// `https://NAME.openai.azure.com` for Azure (`/openai/deployments/{deployment}/embeddings` is appended
    /// unless the URL already names the deployment). `None`: the vendor's.
    pub base_url: Option<String>,
    /// The API key. Optional for a non-default base URL (a local OpenAI-compatible server).
    pub api_key: Option<Secret>,
    /// Azure's `api-version` query parameter.
    pub api_version: Option<String>,
    /// Per-request timeout (connect, send, wait, read).
    pub timeout: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Requests in flight at once for one `embed` call.
    pub concurrency: usize,
    /// Output dimensions of a model the table does not know; `None` asks the API once (a one-text request).
    pub dims: Option<usize>,
    /// Price override in US dollars per million input tokens.
    pub price_usd_per_mtok: Option<f64>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            api_key: None,
            api_version: None,
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            concurrency: 4,
            dims: None,
            price_usd_per_mtok: None,
        }
    }
}

impl ProviderConfig {
    /// Fills what is unset from `env` (a lookup such as `|k| std::env::var(k).ok()`): the key
    /// (`OPENAI_API_KEY`, `AZURE_OPENAI_API_KEY`, `CO_API_KEY`/`COHERE_API_KEY`, `VOYAGE_API_KEY`), the base URL
    /// (`OPENAI_BASE_URL`, `AZURE_OPENAI_ENDPOINT`, `CO_API_URL`, `VOYAGE_BASE_URL`), Azure's
    /// `OPENAI_API_VERSION`, and `EMBEDKIT_PRICE_USD_PER_MTOK`. Empty values count as unset, as in the SDKs.
    pub fn fill_from_env(
        mut self,
        provider: Provider,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if self.api_key.is_none() {
            self.api_key = provider
                .key_env()
                .iter()
                .find_map(|k| get(k))
                .map(Secret::new);
        }
        if self.base_url.is_none() {
            self.base_url = get(provider.base_url_env());
        }
        if self.api_version.is_none() && provider == Provider::Azure {
            self.api_version = get("OPENAI_API_VERSION");
        }
        if self.price_usd_per_mtok.is_none() {
            self.price_usd_per_mtok =
                get("EMBEDKIT_PRICE_USD_PER_MTOK").and_then(|v| v.trim().parse().ok());
        }
        self
    }
}

/// One answered request, for per-call accounting (see [`ApiEmbedder::with_call_hook`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// Texts in the request.
    pub texts: usize,
    /// Requests sent for it (1 + retries).
    pub attempts: u32,
    /// Input tokens billed (or estimated).
    pub input_tokens: u64,
    /// Its cost in US dollars, where the price is known.
    pub cost_usd: Option<f64>,
    /// Time from the first attempt to the parsed answer, retries and waits included.
    pub elapsed: Duration,
}

/// Called after every answered request, from the thread that sent it.
pub type CallHook = Arc<dyn Fn(&CallRecord) + Send + Sync>;

/// An API embedding model.
pub struct ApiEmbedder {
    spec: String,
    fingerprint: String,
    provider: Provider,
    model: String,
    dims: usize,
    limits: Limits,
    dims_param: DimsParam,
    price: Option<f64>,
    endpoint: Endpoint,
    agent: ureq::Agent,
    retry: RetryPolicy,
    concurrency: usize,
    requests: AtomicU64,
    input_tokens: AtomicU64,
    hook: Option<CallHook>,
}

impl fmt::Debug for ApiEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Field by field, so that no future field can carry the key into logs.
        f.debug_struct("ApiEmbedder")
            .field("spec", &self.spec)
            .field("url", &self.endpoint.url)
            .field("key", &self.endpoint.auth.as_ref().map(|_| "<redacted>"))
            .field("dims", &self.dims)
            .field("limits", &self.limits)
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .finish()
    }
}

impl ApiEmbedder {
    /// An embedder for `spec` (`openai:text-embedding-3-small`, `azure:DEPLOYMENT`, `cohere:embed-english-v3.0`,
    /// `voyage:voyage-large-2`, or `openai:NAME` of any OpenAI-compatible server with a base URL). A model
    /// the table does not know costs one probe request to learn its dimensions, unless `config.dims` says.
    pub fn new(spec: &str, config: &ProviderConfig) -> Result<Self, ProviderError> {
        let (provider, model) = parse_spec(spec).ok_or_else(|| ProviderError::InvalidSpec {
            spec: spec.to_string(),
            reason: "expected openai:, azure:, cohere: or voyage: and a model name".to_string(),
        })?;
        if model.trim().is_empty() {
            return Err(ProviderError::InvalidSpec {
                spec: spec.to_string(),
                reason: "no model name after the provider".to_string(),
            });
        }
        let pname = provider.name();
        let default_base = provider.default_base_url();
        let base = match (&config.base_url, default_base) {
            (Some(b), _) => b.trim().trim_end_matches('/').to_string(),
            (None, Some(d)) => d.to_string(),
            (None, None) => {
                return Err(ProviderError::MissingBaseUrl {
                    provider: pname,
                    env: provider.base_url_env(),
                });
            }
        };
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ProviderError::InvalidBaseUrl {
                provider: pname,
                url: base,
                reason: "must start with http:// or https://".to_string(),
            });
        }
        let is_default = default_base == Some(base.as_str());
        let url = match provider {
            Provider::OpenAi | Provider::Voyage => format!("{base}/embeddings"),
            Provider::Cohere => format!("{base}/v2/embed"),
            Provider::Azure => {
                let version = config.api_version.as_deref().unwrap_or(AZURE_API_VERSION);
                let deployment = if base.contains("/openai/deployments/") {
                    base.clone()
                } else {
                    format!("{base}/openai/deployments/{model}")
                };
                format!("{deployment}/embeddings?api-version={version}")
            }
        };
        // The vendor's own endpoint always needs a key; a self-hosted server may not.
        let auth = match (&config.api_key, provider) {
            (Some(k), Provider::Azure) => Some(Auth::ApiKey(k.clone())),
            (Some(k), _) => Some(Auth::Bearer(k.clone())),
            (None, _) => None,
        };
        if auth.is_none() && (is_default || provider == Provider::Azure) {
            return Err(ProviderError::MissingKey {
                provider: pname,
                env: provider.key_env().join(" or "),
            });
        }
        let known = lookup(provider, model);
        let limits = known.map_or_else(|| provider.default_limits(), |m| m.limits);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .user_agent(concat!("embedkit/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        // Vectors depend on the server as well as the model name (an OpenAI-compatible server may serve anything
        // under any name), so a non-default base URL is part of the fingerprint that keys caches and indexes.
        let fingerprint = if is_default {
            spec.to_string()
        } else {
            format!("{spec}@{base}")
        };
        let mut e = Self {
            spec: spec.to_string(),
            fingerprint,
            provider,
            model: model.to_string(),
            dims: known.map_or(0, |m| m.dims),
            limits,
            dims_param: known.map_or(DimsParam::None, |m| m.dims_param),
            price: config
                .price_usd_per_mtok
                .or(known.and_then(|m| m.price_usd_per_mtok)),
            endpoint: Endpoint {
                provider: pname,
                url,
                auth,
            },
            agent,
            retry: config.retry.clone(),
            concurrency: config.concurrency.max(1),
            requests: AtomicU64::new(0),
            input_tokens: AtomicU64::new(0),
            hook: None,
        };
        if known.is_none() {
            e.dims = match config.dims {
                Some(d) => d,
                None => {
                    let probe = e.send(&["dimension probe"], &Call::default())?;
                    probe.first().map_or(0, Vec::len)
                }
            };
        }
        Ok(e)
    }

    /// Calls `hook` after every answered request with its texts, attempts, tokens, cost and time: usage per
    /// call, where [`Embedder::usage`] gives the running total.
    pub fn with_call_hook(mut self, hook: CallHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The provider.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The model name sent to the API.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The URL requests go to.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// Request limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// US dollars per million input tokens, if known.
    pub fn price_usd_per_mtok(&self) -> Option<f64> {
        self.price
    }

    /// One request (with retries) for `texts`, which fit the limits; vectors in input order.
    fn send(&self, texts: &[&str], call: &Call<'_>) -> Result<Vec<Vec<f32>>, ProviderError> {
        let dims = call.dims;
        let body = request_body(
            self.provider,
            &Request {
                model: &self.model,
                texts,
                input_type: call.input_type,
                dims,
                max_tokens: call.max_tokens,
            },
        );
        let start = Instant::now();
        let reply = post_json(
            &self.agent,
            &self.endpoint,
            &body,
            &self.retry,
            &self.requests,
        )?;
        let expected = dims.or((self.dims > 0).then_some(self.dims));
        let parsed = parse_response(self.provider, &reply.body, texts.len(), expected).map_err(
            |reason| ProviderError::BadResponse {
                provider: self.endpoint.provider,
                reason,
            },
        )?;
        let tokens = parsed
            .tokens
            .unwrap_or_else(|| texts.iter().map(|t| estimate_tokens(t)).sum());
        self.input_tokens.fetch_add(tokens, Ordering::Relaxed);
        if let Some(hook) = &self.hook {
            hook(&CallRecord {
                texts: texts.len(),
                attempts: reply.attempts,
                input_tokens: tokens,
                cost_usd: self.price.map(|p| tokens as f64 * p / 1e6),
                elapsed: start.elapsed(),
            });
        }
        Ok(parsed.vectors)
    }

    /// The `input_type` for a prompt name, or why there is none.
    fn input_type(&self, prompt_name: Option<&str>) -> Result<Option<&'static str>, EmbedError> {
        let Some(name) = prompt_name else {
            return Ok(None);
        };
        let t = match (self.provider, name) {
            (Provider::Cohere, "query" | "search_query") => "search_query",
            (Provider::Cohere, "document" | "passage" | "search_document") => "search_document",
            (Provider::Cohere, "classification") => "classification",
            (Provider::Cohere, "clustering") => "clustering",
            (Provider::Voyage, "query") => "query",
            (Provider::Voyage, "document" | "passage") => "document",
            // OpenAI's models embed queries and documents alike (no prefix, no parameter), so the two roles
            // are accepted and change nothing; callers such as eval can name them for every model.
            (Provider::OpenAi | Provider::Azure, "query" | "document" | "passage") => {
                return Ok(None);
            }
            (Provider::OpenAi | Provider::Azure, other) => {
                return Err(EmbedError::InvalidOption {
                    option: "prompt_name",
                    reason: format!(
                        "{} has no input types ('{other}'); query and document are accepted and change \
                         nothing; use a literal --prompt for a prefix",
                        self.spec
                    ),
                });
            }
            (Provider::Cohere, other) => {
                return Err(EmbedError::InvalidOption {
                    option: "prompt_name",
                    reason: format!(
                        "'{other}' is not a Cohere input type (query, document, classification, clustering)"
                    ),
                });
            }
            (Provider::Voyage, other) => {
                return Err(EmbedError::InvalidOption {
                    option: "prompt_name",
                    reason: format!("'{other}' is not a Voyage input type (query, document)"),
                });
            }
        };
        Ok(Some(t))
    }

    /// Cuts `texts` into requests: at most `max_inputs` texts and, where the API limits it, at most
    /// `max_request_tokens` tokens by an upper bound (UTF-8 bytes + 1: a byte-level BPE token covers at least
    /// one byte), so a request never goes over. A single text over the bound goes alone.
    fn plan(&self, texts: &[&str], batch_size: usize) -> Vec<std::ops::Range<usize>> {
        let max_inputs = self.limits.max_inputs.min(batch_size).max(1);
        let mut out = Vec::new();
        let mut start = 0;
        let mut tokens = 0usize;
        for (i, t) in texts.iter().enumerate() {
            let bound = t.len() + 1;
            let over_tokens = self
                .limits
                .max_request_tokens
                .is_some_and(|max| tokens + bound > max);
            if i > start && (i - start >= max_inputs || over_tokens) {
                out.push(start..i);
                start = i;
                tokens = 0;
            }
            tokens += bound;
        }
        if start < texts.len() {
            out.push(start..texts.len());
        }
        out
    }
}

/// A rough token count (4 characters a token, at least 1) for servers that report no usage.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

impl Embedder for ApiEmbedder {
    fn name(&self) -> &str {
        &self.spec
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn embed(&self, texts: &[&str], options: &EncodeOptions) -> Result<Embeddings, EmbedError> {
        // Cohere takes a per-text token cap (`max_tokens`); the others truncate at their own limit only.
        let max_tokens = match (options.max_length, self.provider) {
            (Some(0), _) => {
                return Err(EmbedError::InvalidOption {
                    option: "max_length",
                    reason: "must be at least 1".to_string(),
                });
            }
            (Some(n), Provider::Cohere) => Some(n),
            (Some(_), _) => {
                return Err(EmbedError::InvalidOption {
                    option: "max_length",
                    reason: format!("{} truncates at its own token limit", self.spec),
                });
            }
            (None, _) => None,
        };
        let input_type = self.input_type(options.prompt_name.as_deref())?;
        let want_dims = match options.truncate_dim {
            Some(0) => {
                return Err(EmbedError::InvalidOption {
                    option: "truncate_dim",
                    reason: "must be at least 1".to_string(),
                });
            }
            Some(d) if d > self.dims => {
                return Err(EmbedError::InvalidOption {
                    option: "truncate_dim",
                    reason: format!("{d} is more than {}'s {} dimensions", self.spec, self.dims),
                });
            }
            Some(d) if d < self.dims => Some(d),
            _ => None,
        };
        // Server-side shortening where the API has it (it returns unit vectors of that width); otherwise the
        // full vector is cut here.
        let server_dims = want_dims.filter(|&d| match self.dims_param {
            DimsParam::None => false,
            DimsParam::Any => true,
            DimsParam::OneOf(ws) => ws.contains(&d),
        });
        if texts.is_empty() {
            return Ok(Embeddings::empty(want_dims.unwrap_or(self.dims)));
        }
        // APIs reject empty inputs (OpenAI: "cannot be an empty string"); a space embeds "nothing" the same way.
        let prompted: Vec<String> = texts
            .iter()
            .map(|t| {
                let t = match options.prompt.as_deref() {
                    Some(p) => format!("{p}{t}"),
                    None => (*t).to_string(),
                };
                if t.is_empty() { " ".to_string() } else { t }
            })
            .collect();
        let refs: Vec<&str> = prompted.iter().map(String::as_str).collect();
        let plan = self.plan(&refs, options.batch_size.unwrap_or(usize::MAX));
        let call = Call {
            input_type,
            dims: server_dims,
            max_tokens,
        };
        let results = self.run(&refs, &plan, &call)?;

        let out_dims = server_dims.unwrap_or(self.dims);
        let mut data = Vec::with_capacity(texts.len() * want_dims.unwrap_or(out_dims));
        for mut v in results.into_iter().flatten() {
            if let Some(d) = want_dims
                && server_dims.is_none()
            {
                v.truncate(d);
                // API vectors come unit length: keep them so after cutting, as the server's parameter would.
                if options.normalize != Some(false) {
                    l2_normalize(&mut v);
                }
            } else if options.normalize == Some(true) {
                l2_normalize(&mut v);
            }
            data.extend_from_slice(&v);
        }
        let dims = want_dims.unwrap_or(out_dims);
        Embeddings::new(data, texts.len(), dims).map_err(|e| EmbedError::Backend(Box::new(e)))
    }

    fn usage(&self) -> Option<Usage> {
        let input_tokens = self.input_tokens.load(Ordering::Relaxed);
        Some(Usage {
            requests: self.requests.load(Ordering::Relaxed),
            input_tokens,
            cost_usd: self.price.map(|p| input_tokens as f64 * p / 1e6),
        })
    }
}

/// What every request of one `embed` call asks for besides its texts.
#[derive(Default)]
struct Call<'a> {
    input_type: Option<&'a str>,
    /// Server-side output width.
    dims: Option<usize>,
    /// Cohere's per-text token cap.
    max_tokens: Option<usize>,
}

/// The vectors of one request, or why it failed.
type BatchResult = Result<Vec<Vec<f32>>, ProviderError>;

impl ApiEmbedder {
    /// Sends every planned request, `concurrency` at a time; results in plan order. The first failure stops
    /// workers from starting new requests and is returned.
    fn run(
        &self,
        texts: &[&str],
        plan: &[std::ops::Range<usize>],
        call: &Call<'_>,
    ) -> Result<Vec<Vec<Vec<f32>>>, ProviderError> {
        if plan.len() == 1 {
            return Ok(vec![self.send(&texts[plan[0].clone()], call)?]);
        }
        let slots: Vec<Mutex<Option<BatchResult>>> =
            plan.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..self.concurrency.min(plan.len()) {
                s.spawn(|| {
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(range) = plan.get(i) else { break };
                        let r = self.send(&texts[range.clone()], call);
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                    }
                });
            }
        });
        let mut out = Vec::with_capacity(plan.len());
        for slot in slots {
            match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
                Some(Ok(v)) => out.push(v),
                Some(Err(e)) => return Err(e),
                // Not started because an earlier request failed; that error is in a later slot.
                None => {}
            }
        }
        if out.len() != plan.len() {
            return Err(ProviderError::BadResponse {
                provider: self.endpoint.provider,
                reason: "a request failed without an error".to_string(),
            });
        }
        Ok(out)
    }
}
