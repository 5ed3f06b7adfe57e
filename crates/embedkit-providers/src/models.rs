//! What each provider documents about its embedding models: dimensions, request limits, the dimension
//! parameter and the price. Unknown model names (an OpenAI-compatible server's own models, an Azure deployment)
//! get the provider's request limits, dimensions from one probe request, and no price.
//!
//! Sources (read 2026-11; prices change — `ProviderConfig::price_usd_per_mtok` overrides them):
//! - OpenAI: API reference "Create embeddings" (<https://platform.openai.com/docs/api-reference/embeddings/create>):
//!   at most 2048 inputs per request, 8192 tokens per input, 300,000 tokens summed over a request; `dimensions`
//!   only for text-embedding-3 and later. Prices from <https://platform.openai.com/docs/pricing>: 3-small
//!   $0.02, 3-large $0.13, ada-002 $0.10 per million tokens.
//! - Cohere: Embed API v2 (<https://docs.cohere.com/reference/embed>): at most 96 texts per call; `input_type`
//!   required for v3 and later; `output_dimension` (256, 512, 1024, 1536) only for embed-v4.0. Prices
//!   (<https://cohere.com/pricing>): Embed 3 $0.10, Embed 4 $0.12 per million text tokens.
//! - Voyage: embeddings API (<https://docs.voyageai.com/reference/embeddings-api>): at most 1,000 texts per
//!   request; at most 1M tokens per request for the lite models, 320K for voyage-3.5 / voyage-3 / voyage-2, 120K
//!   for voyage-3-large, voyage-code-3 and voyage-large-2; `output_dimension` (256, 512, 1024, 2048) for
//!   voyage-3-large, voyage-3.5(-lite), voyage-code-3 and voyage-4*. Prices from <https://docs.voyageai.com/pricing>.

/// Which API a model spec names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI's `/v1/embeddings`, and any server speaking it (`--base-url`).
    OpenAi,
    /// Azure OpenAI: the OpenAI wire format under `/openai/deployments/{deployment}` with an `api-key` header and
    /// an `api-version` query parameter.
    Azure,
    /// Cohere's `/v2/embed`.
    Cohere,
    /// Voyage AI's `/v1/embeddings`.
    Voyage,
}

impl Provider {
    /// The prefix of a model spec (`openai:…`) and the name in errors.
    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Azure => "azure",
            Provider::Cohere => "cohere",
            Provider::Voyage => "voyage",
        }
    }

    /// The environment variables holding the API key, in the order they are read (as each vendor's SDK reads
    /// them).
    pub fn key_env(self) -> &'static [&'static str] {
        match self {
            Provider::OpenAi => &["OPENAI_API_KEY"],
            Provider::Azure => &["AZURE_OPENAI_API_KEY"],
            Provider::Cohere => &["CO_API_KEY", "COHERE_API_KEY"],
            Provider::Voyage => &["VOYAGE_API_KEY"],
        }
    }

    /// The environment variable that overrides the base URL (as the vendor's SDK reads it).
    pub fn base_url_env(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI_BASE_URL",
            Provider::Azure => "AZURE_OPENAI_ENDPOINT",
            Provider::Cohere => "CO_API_URL",
            Provider::Voyage => "VOYAGE_BASE_URL",
        }
    }

    /// The vendor's own base URL; `None` for Azure, whose endpoint is per resource.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            Provider::OpenAi => Some("https://api.openai.com/v1"),
            Provider::Azure => None,
            Provider::Cohere => Some("https://api.cohere.com"),
            Provider::Voyage => Some("https://api.voyageai.com/v1"),
        }
    }

    /// Request limits for models this table does not know.
    pub fn default_limits(self) -> Limits {
        match self {
            Provider::OpenAi | Provider::Azure => Limits {
                max_inputs: 2048,
                max_request_tokens: Some(300_000),
            },
            Provider::Cohere => Limits {
                max_inputs: 96,
                max_request_tokens: None,
            },
            Provider::Voyage => Limits {
                max_inputs: 1000,
                max_request_tokens: Some(120_000),
            },
        }
    }
}

/// Splits `openai:text-embedding-3-small` into its provider and model; `None` when `spec` names no provider
/// (a catalog name, a folder, `hf:…`).
pub fn parse_spec(spec: &str) -> Option<(Provider, &str)> {
    let (prefix, model) = spec.split_once(':')?;
    let provider = match prefix {
        "openai" => Provider::OpenAi,
        "azure" => Provider::Azure,
        "cohere" => Provider::Cohere,
        "voyage" => Provider::Voyage,
        _ => return None,
    };
    Some((provider, model))
}

/// How many texts and tokens one request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Texts per request.
    pub max_inputs: usize,
    /// Tokens summed over a request, where the API limits them.
    pub max_request_tokens: Option<usize>,
}

/// How a model shortens its vectors on the server, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DimsParam {
    /// No parameter: embedkit truncates on the client (and renormalizes).
    None,
    /// Any width from 1 to the model's dimensions (OpenAI `dimensions`).
    Any,
    /// One of these widths (Cohere v4 / Voyage `output_dimension`); other widths are cut on the client.
    OneOf(&'static [usize]),
}

/// One row of the model table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelInfo {
    /// The provider.
    pub provider: Provider,
    /// The model name the API takes.
    pub name: &'static str,
    /// Default output dimensions.
    pub dims: usize,
    /// Request limits.
    pub limits: Limits,
    /// The server-side dimension parameter.
    pub dims_param: DimsParam,
    /// US dollars per million input tokens, where published.
    pub price_usd_per_mtok: Option<f64>,
}

const OPENAI: Limits = Limits {
    max_inputs: 2048,
    max_request_tokens: Some(300_000),
};
const COHERE: Limits = Limits {
    max_inputs: 96,
    max_request_tokens: None,
};
const fn voyage(tokens: usize) -> Limits {
    Limits {
        max_inputs: 1000,
        max_request_tokens: Some(tokens),
    }
}
const VOYAGE_DIMS: DimsParam = DimsParam::OneOf(&[256, 512, 1024, 2048]);
const COHERE_V4_DIMS: DimsParam = DimsParam::OneOf(&[256, 512, 1024, 1536]);

/// Every model embedkit knows the facts of.
pub const MODELS: &[ModelInfo] = &[
    m(
        Provider::OpenAi,
        "text-embedding-3-small",
        1536,
        OPENAI,
        DimsParam::Any,
        Some(0.02),
    ),
    m(
        Provider::OpenAi,
        "text-embedding-3-large",
        3072,
        OPENAI,
        DimsParam::Any,
        Some(0.13),
    ),
    m(
        Provider::OpenAi,
        "text-embedding-ada-002",
        1536,
        OPENAI,
        DimsParam::None,
        Some(0.10),
    ),
    m(
        Provider::Cohere,
        "embed-english-v3.0",
        1024,
        COHERE,
        DimsParam::None,
        Some(0.10),
    ),
    m(
        Provider::Cohere,
        "embed-multilingual-v3.0",
        1024,
        COHERE,
        DimsParam::None,
        Some(0.10),
    ),
    m(
        Provider::Cohere,
        "embed-english-light-v3.0",
        384,
        COHERE,
        DimsParam::None,
        None,
    ),
    m(
        Provider::Cohere,
        "embed-multilingual-light-v3.0",
        384,
        COHERE,
        DimsParam::None,
        None,
    ),
    m(
        Provider::Cohere,
        "embed-v4.0",
        1536,
        COHERE,
        COHERE_V4_DIMS,
        Some(0.12),
    ),
    m(
        Provider::Voyage,
        "voyage-large-2",
        1536,
        voyage(120_000),
        DimsParam::None,
        Some(0.12),
    ),
    m(
        Provider::Voyage,
        "voyage-2",
        1024,
        voyage(320_000),
        DimsParam::None,
        Some(0.10),
    ),
    m(
        Provider::Voyage,
        "voyage-3",
        1024,
        voyage(320_000),
        DimsParam::None,
        Some(0.06),
    ),
    m(
        Provider::Voyage,
        "voyage-3-lite",
        512,
        voyage(1_000_000),
        DimsParam::None,
        Some(0.02),
    ),
    m(
        Provider::Voyage,
        "voyage-3-large",
        1024,
        voyage(120_000),
        VOYAGE_DIMS,
        Some(0.18),
    ),
    m(
        Provider::Voyage,
        "voyage-3.5",
        1024,
        voyage(320_000),
        VOYAGE_DIMS,
        Some(0.06),
    ),
    m(
        Provider::Voyage,
        "voyage-3.5-lite",
        1024,
        voyage(1_000_000),
        VOYAGE_DIMS,
        Some(0.02),
    ),
    m(
        Provider::Voyage,
        "voyage-code-3",
        1024,
        voyage(120_000),
        VOYAGE_DIMS,
        Some(0.18),
    ),
];

const fn m(
    provider: Provider,
    name: &'static str,
    dims: usize,
    limits: Limits,
    dims_param: DimsParam,
    price_usd_per_mtok: Option<f64>,
) -> ModelInfo {
    ModelInfo {
        provider,
        name,
        dims,
        limits,
        dims_param,
        price_usd_per_mtok,
    }
}

/// The table row for `model` of `provider`. Azure deployments are looked up under OpenAI's names, so a
/// deployment named after its model (the usual practice) gets that model's facts.
pub fn lookup(provider: Provider, model: &str) -> Option<&'static ModelInfo> {
    let provider = if provider == Provider::Azure {
        Provider::OpenAi
    } else {
        provider
    };
    MODELS
        .iter()
        .find(|m| m.provider == provider && m.name == model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            parse_spec("openai:text-embedding-3-small"),
            Some((Provider::OpenAi, "text-embedding-3-small"))
        );
        assert_eq!(
            parse_spec("voyage:voyage-large-2"),
            Some((Provider::Voyage, "voyage-large-2"))
        );
        assert_eq!(parse_spec("hf:org/name"), None);
        assert_eq!(parse_spec("all-MiniLM-L6-v2"), None);
        assert_eq!(parse_spec("./models/x"), None);
    }

    #[test]
    fn table() {
        let ada = lookup(Provider::Azure, "text-embedding-ada-002").unwrap();
        assert_eq!(ada.dims, 1536);
        assert_eq!(ada.price_usd_per_mtok, Some(0.10));
        assert_eq!(
            lookup(Provider::Cohere, "embed-english-v3.0").unwrap().dims,
            1024
        );
        assert!(lookup(Provider::OpenAi, "embed-english-v3.0").is_none());
    }
}
