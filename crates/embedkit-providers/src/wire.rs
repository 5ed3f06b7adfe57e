//! The documented JSON of each API: request bodies and the checks on response bodies.
//!
//! - OpenAI `POST {base}/embeddings` (Azure: `POST {endpoint}/openai/deployments/{d}/embeddings?api-version=…`):
//!   `{"model", "input": [..], "encoding_format": "float", "dimensions"?}` →
//!   `{"object": "list", "data": [{"object": "embedding", "index", "embedding": [..]}], "model",
//!   "usage": {"prompt_tokens", "total_tokens"}}`. `data` is matched to inputs by `index`, never by position.
//!   (<https://platform.openai.com/docs/api-reference/embeddings>)
//! - Cohere `POST {base}/v2/embed`: `{"model", "texts": [..], "input_type", "embedding_types": ["float"],
//!   "output_dimension"?, "max_tokens"?}` → `{"id", "embeddings": {"float": [[..], ..]}, "texts", "meta": {"billed_units":
//!   {"input_tokens"}}, "response_type": "embeddings_by_type"}`, vectors in input order.
//!   (<https://docs.cohere.com/reference/embed>)
//! - Voyage `POST {base}/embeddings`: `{"model", "input": [..], "input_type"?: "query"|"document",
//!   "output_dimension"?}` → `{"object": "list", "data": [{"object": "embedding", "embedding": [..], "index"}],
//!   "model", "usage": {"total_tokens"}}`. (<https://docs.voyageai.com/reference/embeddings-api>)

use crate::Provider;
use serde::Deserialize;
use serde_json::json;

/// What one request asks for.
pub(crate) struct Request<'a> {
    pub model: &'a str,
    pub texts: &'a [&'a str],
    /// Cohere / Voyage `input_type`.
    pub input_type: Option<&'a str>,
    /// OpenAI `dimensions`, Cohere / Voyage `output_dimension`.
    pub dims: Option<usize>,
    /// Cohere `max_tokens` (per text).
    pub max_tokens: Option<usize>,
}

/// The request body for `provider`.
pub(crate) fn request_body(provider: Provider, r: &Request<'_>) -> Vec<u8> {
    let mut body = match provider {
        Provider::OpenAi | Provider::Azure => {
            json!({"model": r.model, "input": r.texts, "encoding_format": "float"})
        }
        Provider::Cohere => json!({
            "model": r.model,
            "texts": r.texts,
            "input_type": r.input_type.unwrap_or("search_document"),
            "embedding_types": ["float"],
        }),
        Provider::Voyage => {
            let mut b = json!({"model": r.model, "input": r.texts});
            if let Some(t) = r.input_type {
                b["input_type"] = json!(t);
            }
            b
        }
    };
    if let Some(d) = r.dims {
        let key = match provider {
            Provider::OpenAi | Provider::Azure => "dimensions",
            Provider::Cohere | Provider::Voyage => "output_dimension",
        };
        body[key] = json!(d);
    }
    if let (Some(n), Provider::Cohere) = (r.max_tokens, provider) {
        body["max_tokens"] = json!(n);
    }
    serde_json::to_vec(&body).expect("a JSON value serializes")
}

/// Vectors in input order and the tokens the provider billed, if it said.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: Option<u64>,
}

#[derive(Deserialize)]
struct DataResponse {
    data: Vec<DataItem>,
    #[serde(default)]
    usage: Option<DataUsage>,
}

#[derive(Deserialize)]
struct DataItem {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct DataUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CohereResponse {
    embeddings: CohereEmbeddings,
    #[serde(default)]
    meta: Option<CohereMeta>,
}

#[derive(Deserialize)]
struct CohereEmbeddings {
    float: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct CohereMeta {
    #[serde(default)]
    billed_units: Option<CohereBilled>,
}

#[derive(Deserialize)]
struct CohereBilled {
    #[serde(default)]
    input_tokens: Option<f64>,
}

/// Parses and checks a success body: `n` vectors, each input exactly once, all `dims` wide (when known).
pub(crate) fn parse_response(
    provider: Provider,
    body: &[u8],
    n: usize,
    dims: Option<usize>,
) -> Result<Parsed, String> {
    let parsed = match provider {
        Provider::Cohere => {
            let r: CohereResponse =
                serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
            Parsed {
                vectors: r.embeddings.float,
                tokens: r
                    .meta
                    .and_then(|m| m.billed_units)
                    .and_then(|b| b.input_tokens)
                    .map(|t| t.max(0.0).round() as u64),
            }
        }
        Provider::OpenAi | Provider::Azure | Provider::Voyage => {
            let r: DataResponse =
                serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
            if r.data.len() != n {
                return Err(format!("{} vectors for {n} inputs", r.data.len()));
            }
            // Sort by `index`: the API does not promise `data` in input order.
            let mut slots: Vec<Option<Vec<f32>>> = vec![None; n];
            for (pos, item) in r.data.into_iter().enumerate() {
                let i = item.index.unwrap_or(pos);
                let slot = slots
                    .get_mut(i)
                    .ok_or_else(|| format!("index {i} out of range for {n} inputs"))?;
                if slot.is_some() {
                    return Err(format!("index {i} appears twice"));
                }
                *slot = Some(item.embedding);
            }
            let vectors = slots
                .into_iter()
                .map(|v| v.expect("n distinct indexes below n fill every slot"))
                .collect();
            Parsed {
                vectors,
                tokens: r.usage.and_then(|u| u.prompt_tokens.or(u.total_tokens)),
            }
        }
    };
    if parsed.vectors.len() != n {
        return Err(format!("{} vectors for {n} inputs", parsed.vectors.len()));
    }
    let want = dims.or_else(|| parsed.vectors.first().map(Vec::len));
    if let Some(want) = want {
        if want == 0 {
            return Err("empty vectors".to_string());
        }
        if let Some((i, v)) = parsed
            .vectors
            .iter()
            .enumerate()
            .find(|(_, v)| v.len() != want)
        {
            return Err(format!(
                "vector {i} has {} dimensions, expected {want}",
                v.len()
            ));
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let texts = ["a", "b"];
        let r = Request {
            model: "m",
            texts: &texts,
            input_type: Some("query"),
            dims: Some(256),
            max_tokens: None,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&request_body(Provider::OpenAi, &r)).unwrap();
        assert_eq!(
            v,
            json!({"model": "m", "input": ["a", "b"], "encoding_format": "float", "dimensions": 256})
        );
        let v: serde_json::Value =
            serde_json::from_slice(&request_body(Provider::Voyage, &r)).unwrap();
        assert_eq!(
            v,
            json!({"model": "m", "input": ["a", "b"], "input_type": "query", "output_dimension": 256})
        );
        let r = Request {
            input_type: None,
            dims: None,
            max_tokens: Some(64),
            ..r
        };
        let v: serde_json::Value =
            serde_json::from_slice(&request_body(Provider::Cohere, &r)).unwrap();
        assert_eq!(
            v,
            json!({"model": "m", "texts": ["a", "b"], "input_type": "search_document", "embedding_types": ["float"], "max_tokens": 64})
        );
    }

    #[test]
    fn openai_order_and_checks() {
        let body = br#"{"object":"list","data":[{"object":"embedding","index":1,"embedding":[0,1]},
            {"object":"embedding","index":0,"embedding":[1,0]}],"model":"m","usage":{"prompt_tokens":7,"total_tokens":7}}"#;
        let p = parse_response(Provider::OpenAi, body, 2, Some(2)).unwrap();
        assert_eq!(p.vectors, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(p.tokens, Some(7));
        let dup = br#"{"data":[{"index":0,"embedding":[1]},{"index":0,"embedding":[2]}]}"#;
        assert!(
            parse_response(Provider::OpenAi, dup, 2, None)
                .unwrap_err()
                .contains("twice")
        );
        let short = br#"{"data":[{"index":0,"embedding":[1]}]}"#;
        assert!(
            parse_response(Provider::OpenAi, short, 2, None)
                .unwrap_err()
                .contains("1 vectors for 2")
        );
        let wide = br#"{"data":[{"index":0,"embedding":[1,2,3]}]}"#;
        assert!(
            parse_response(Provider::Voyage, wide, 1, Some(2))
                .unwrap_err()
                .contains("3 dimensions")
        );
        assert!(
            parse_response(Provider::OpenAi, b"{\"data\":[", 1, None)
                .unwrap_err()
                .contains("malformed")
        );
    }

    #[test]
    fn cohere_tokens() {
        let body = br#"{"id":"x","embeddings":{"float":[[1,2],[3,4]]},"texts":["a","b"],
            "meta":{"api_version":{"version":"2"},"billed_units":{"input_tokens":5}},"response_type":"embeddings_by_type"}"#;
        let p = parse_response(Provider::Cohere, body, 2, None).unwrap();
        assert_eq!(p.vectors[1], vec![3.0, 4.0]);
        assert_eq!(p.tokens, Some(5));
    }
}
