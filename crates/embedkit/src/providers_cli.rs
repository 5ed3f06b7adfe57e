//! API models on the command line: `--model openai:…` / `azure:…` / `cohere:…` / `voyage:…` and `--base-url`,
//! and the usage lines `bench` prints for them.

use anyhow::{Context, Result, bail};
use clap::Args;
use embedkit_core::Usage;
use embedkit_providers::models::DimsParam;
use embedkit_providers::{ApiEmbedder, ProviderConfig, RetryPolicy, parse_spec};
use std::time::Duration;

/// Flags for API models.
#[derive(Args, Clone, Debug)]
pub struct ApiArgs {
    /// Server of an API model (--model openai:NAME etc.): an OpenAI-compatible base such as
    /// http://localhost:8080/v1, or an Azure resource endpoint. Default: OPENAI_BASE_URL, AZURE_OPENAI_ENDPOINT,
    /// CO_API_URL, VOYAGE_BASE_URL, else the vendor's.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// API models: retries of a failed request (429, 5xx, timeouts, dropped connections) before giving up.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_retries: u32,
    /// API models: requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub api_concurrency: usize,
    /// API models: seconds one request may take.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub api_timeout: f64,
}

impl Default for ApiArgs {
    fn default() -> Self {
        Self {
            base_url: None,
            max_retries: 5,
            api_concurrency: 4,
            api_timeout: 60.0,
        }
    }
}

/// The API embedder for `spec`, or `None` when `spec` names a local model. Keys and URLs come from the
/// environment as each vendor's SDK reads them; `--base-url` wins over the environment.
pub fn load(spec: &str, args: &ApiArgs) -> Result<Option<ApiEmbedder>> {
    let Some((provider, _)) = parse_spec(spec) else {
        return Ok(None);
    };
    if args.api_concurrency == 0 {
        bail!("--api-concurrency must be at least 1");
    }
    if !(args.api_timeout.is_finite() && args.api_timeout > 0.0) {
        bail!("--api-timeout must be a positive number of seconds");
    }
    let defaults = ProviderConfig::default();
    let config = ProviderConfig {
        base_url: args.base_url.clone(),
        timeout: Duration::from_secs_f64(args.api_timeout),
        concurrency: args.api_concurrency,
        retry: RetryPolicy {
            max_retries: args.max_retries,
            ..defaults.retry.clone()
        },
        ..defaults
    }
    .fill_from_env(provider, &|k| std::env::var(k).ok());
    let model =
        ApiEmbedder::new(spec, &config).with_context(|| format!("cannot use model '{spec}'"))?;
    Ok(Some(model))
}

/// `embedkit models info` for an API model: what the table knows, without a request or a key. `false` when
/// `spec` is not an API model.
pub fn info(spec: &str, json: bool, out: &mut dyn std::io::Write) -> Result<bool> {
    let Some((provider, name)) = parse_spec(spec) else {
        return Ok(false);
    };
    let known = embedkit_providers::models::lookup(provider, name);
    let limits = known.map_or_else(|| provider.default_limits(), |m| m.limits);
    let dims_param = match known.map(|m| m.dims_param) {
        Some(DimsParam::Any) => "any width (dimensions)".to_string(),
        Some(DimsParam::OneOf(ws)) => format!("{ws:?} (output_dimension)"),
        _ => "none (cut on the client)".to_string(),
    };
    let v = serde_json::json!({
        "name": spec,
        "provider": provider.name(),
        "model": name,
        "known": known.is_some(),
        "dims": known.map(|m| m.dims),
        "max_inputs_per_request": limits.max_inputs,
        "max_tokens_per_request": limits.max_request_tokens,
        "server_side_dims": dims_param,
        "price_usd_per_mtok": known.and_then(|m| m.price_usd_per_mtok),
        "default_base_url": provider.default_base_url(),
        "key_env": provider.key_env(),
        "base_url_env": provider.base_url_env(),
    });
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(true);
    }
    let opt = |x: Option<String>, none: &str| x.unwrap_or_else(|| none.to_string());
    let rows = [
        ("name", spec.to_string()),
        ("provider", provider.name().to_string()),
        (
            "dimensions",
            opt(known.map(|m| m.dims.to_string()), "asked of the server"),
        ),
        ("inputs/request", limits.max_inputs.to_string()),
        (
            "tokens/request",
            opt(limits.max_request_tokens.map(|t| t.to_string()), "no limit"),
        ),
        ("shorter vectors", dims_param),
        (
            "price",
            opt(
                known
                    .and_then(|m| m.price_usd_per_mtok)
                    .map(|p| format!("${p} / 1M tokens")),
                "unknown",
            ),
        ),
        (
            "base URL",
            opt(
                provider.default_base_url().map(str::to_string),
                "per resource",
            ),
        ),
        ("key from", provider.key_env().join(" or ")),
        (
            "base URL from",
            format!("--base-url or {}", provider.base_url_env()),
        ),
    ];
    for (k, v) in rows {
        writeln!(out, "{k:<15} {v}")?;
    }
    Ok(true)
}

/// Usage as JSON for reports (`null` for local models).
pub fn usage_json(usage: Option<&Usage>) -> serde_json::Value {
    match usage {
        Some(u) => serde_json::json!({
            "requests": u.requests,
            "input_tokens": u.input_tokens,
            "cost_usd": u.cost_usd,
        }),
        None => serde_json::Value::Null,
    }
}

/// The markdown table of API usage `bench` prints under its speed table (nothing when no model is billed).
pub fn usage_table(rows: &[(String, Option<Usage>)], out: &mut dyn std::io::Write) -> Result<()> {
    let billed: Vec<_> = rows
        .iter()
        .filter_map(|(m, u)| u.as_ref().map(|u| (m, u)))
        .collect();
    if billed.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\nAPI usage, whole run (tokens as the provider billed them; tokens/s above estimate 4 characters a token)\n\
         | model | requests | input tokens | cost USD |\n|---|---:|---:|---:|"
    )?;
    for (m, u) in billed {
        let cost = u
            .cost_usd
            .map_or_else(|| "unknown".to_string(), |c| format!("{c:.6}"));
        writeln!(
            out,
            "| {m} | {} | {} | {cost} |",
            u.requests, u.input_tokens
        )?;
    }
    Ok(())
}

/// A token count for bench's tokens/s figures on API models, which have no local tokenizer: the provider's
/// billed count is exact but per request, so per text it is estimated (4 characters a token).
pub fn count_tokens(text: &str, _max: Option<usize>) -> usize {
    embedkit_providers::estimate_tokens(text) as usize
}

/// The report name of an API model's "backend".
pub fn backend(model: &ApiEmbedder) -> String {
    format!("api ({})", model.provider().name())
}
