//! API models on the command line: `--model openai:…` / `azure:…` / `cohere:…` / `voyage:…` and `--base-url`,
//! and the usage lines `bench` prints for them.

use anyhow::{Context, Result};
use clap::Args;
use embedkit_core::Usage;
use embedkit_providers::{ApiEmbedder, ProviderConfig, parse_spec};

/// Flags for API models.
#[derive(Args, Clone, Debug, Default)]
pub struct ApiArgs {
    /// Server of an API model (--model openai:NAME etc.): an OpenAI-compatible base such as
    /// http://localhost:8080/v1, or an Azure resource endpoint. Default: OPENAI_BASE_URL, AZURE_OPENAI_ENDPOINT,
    /// CO_API_URL, VOYAGE_BASE_URL, else the vendor's.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
}

/// The API embedder for `spec`, or `None` when `spec` names a local model. Keys and URLs come from the
/// environment as each vendor's SDK reads them; `--base-url` wins over the environment.
pub fn load(spec: &str, args: &ApiArgs) -> Result<Option<ApiEmbedder>> {
    let Some((provider, _)) = parse_spec(spec) else {
        return Ok(None);
    };
    let config = ProviderConfig {
        base_url: args.base_url.clone(),
        ..ProviderConfig::default()
    }
    .fill_from_env(provider, &|k| std::env::var(k).ok());
    let model =
        ApiEmbedder::new(spec, &config).with_context(|| format!("cannot use model '{spec}'"))?;
    Ok(Some(model))
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
        "\nAPI usage (whole run)\n| model | requests | input tokens | cost USD |\n|---|---:|---:|---:|"
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
