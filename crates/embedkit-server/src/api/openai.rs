//! OpenAI's embeddings API: `POST /v1/embeddings` (texts, or token ids as LangChain sends them; float or
//! base64 vectors; `dimensions`) and `GET /v1/models`, with OpenAI's error bodies.

use super::compute::{Inputs, Params, compute, with_headers};
use super::{Shared, parse_body};
use crate::error::{ApiError, ErrorStyle};
use crate::queue::Want;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

/// Token ids are read as any JSON number and checked afterwards (`checked_ids`), so that -1, 2.5 or an id
/// past the vocabulary get a message naming the input and the id instead of serde's "did not match any
/// variant".
#[derive(Deserialize)]
#[serde(untagged)]
enum OpenAiInput {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<serde_json::Number>),
    IdBatches(Vec<Vec<serde_json::Number>>),
}

/// The token ids of a request as `u32`, each checked to be in `0..vocab` (`vocab` is `None` for a model with
/// no tokenizer here; such a model refuses ids later). Ids are used as given, and the usual wrong ones are
/// LangChain's: its `OpenAIEmbeddings` sends tiktoken ids by default (cl100k_base, up to ~100k), far past a
/// BERT vocabulary of ~30k. They stop here with OpenAI's 400 naming `input[i]`, the id and the vocabulary
/// size, before admission (`LocalEmbedder::prepare_ids` checks again, against the tokenizer alone).
/// `batched` says whether the client sent `[[int]]` (errors name `input[i]`) or one `[int]` (`input`).
pub(super) fn checked_ids(
    lists: Vec<Vec<serde_json::Number>>,
    batched: bool,
    vocab: Option<usize>,
    model: &str,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let limit = vocab.map_or(u32::MAX as u64 + 1, |v| v as u64);
    lists
        .into_iter()
        .enumerate()
        .map(|(i, list)| {
            let which = if batched {
                format!("input[{i}]")
            } else {
                "input".to_string()
            };
            list.into_iter()
                .enumerate()
                .map(|(pos, n)| match n.as_u64() {
                    Some(id) if id < limit => Ok(id as u32),
                    Some(id) => Err(match vocab {
                        Some(v) => format!(
                            "{which} has token id {id} at position {pos}, outside {model}'s vocabulary of {v} \
                             tokens (ids 0..={}); token ids must come from this model's tokenizer \
                             (POST /tokenize), not tiktoken (LangChain: check_embedding_ctx_length=False \
                             sends the texts instead)",
                            v.saturating_sub(1)
                        ),
                        None => format!("{which} has token id {id} at position {pos}, past u32"),
                    }),
                    None => Err(format!(
                        "{which} has {n} at position {pos}, which is not a token id (an integer from 0)"
                    )),
                })
                .collect::<Result<Vec<u32>, String>>()
                .map_err(|message| {
                    ApiError::new(StatusCode::BAD_REQUEST, message)
                        .param("input")
                        .style(ErrorStyle::OpenAi)
                })
        })
        .collect()
}

#[derive(Deserialize)]
struct OpenAiRequest {
    input: OpenAiInput,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    /// Accepted and logged; OpenAI uses it for abuse monitoring.
    #[serde(default)]
    user: Option<String>,
}

pub(super) async fn openai_embeddings(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let style = ErrorStyle::OpenAi;
    let req: OpenAiRequest = parse_body(&headers, body, style)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("encoding_format '{other}' is not one of float, base64"),
            )
            .style(style));
        }
    };
    if let Some(user) = &req.user {
        tracing::debug!(user = %user, "openai user");
    }
    let model = state.model(req.model.as_deref(), style)?;
    let inputs = match req.input {
        OpenAiInput::Text(t) => Inputs::Texts(vec![t]),
        OpenAiInput::Texts(t) => Inputs::Texts(t),
        OpenAiInput::Ids(ids) => Inputs::Ids(checked_ids(
            vec![ids],
            false,
            model.vocab_size(),
            &model.name,
        )?),
        OpenAiInput::IdBatches(ids) => {
            Inputs::Ids(checked_ids(ids, true, model.vocab_size(), &model.name)?)
        }
    };
    let params = Params {
        dims: req.dimensions,
        truncate: true,
        ..Default::default()
    };
    let computed = compute(&state, &model, inputs, params, Want::Pooled, style).await?;
    let data: Vec<Value> = computed
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "embedding": embedding, "index": i})
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": computed.tokens, "total_tokens": computed.tokens},
    });
    Ok(with_headers(&computed, Json(body)))
}

pub(super) async fn openai_models(State(state): State<Shared>) -> Json<Value> {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        - state.started.elapsed().as_secs();
    let data: Vec<Value> = state
        .models
        .iter()
        .map(|m| json!({"id": m.name, "object": "model", "created": created, "owned_by": "embedkit"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn numbers(v: Value) -> Vec<Vec<serde_json::Number>> {
        serde_json::from_value(v).expect("lists of numbers")
    }

    #[test]
    fn token_ids_inside_the_vocabulary_pass_unchanged() {
        let ids = checked_ids(
            numbers(json!([[101, 0, 30521], [102]])),
            true,
            Some(30522),
            "m",
        );
        assert_eq!(ids.unwrap(), vec![vec![101, 0, 30521], vec![102]]);
    }

    #[test]
    fn a_token_id_past_the_vocabulary_is_a_400_naming_input_id_and_size() {
        // 30522 is the first id all-MiniLM-L6-v2 has no row for; 100257 is tiktoken's <|endoftext|>.
        for (bad, pos) in [(30522u64, 1usize), (100257, 1)] {
            let e = checked_ids(numbers(json!([[101], [7, bad]])), true, Some(30522), "mini")
                .expect_err("an id past the vocabulary is refused");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.style, ErrorStyle::OpenAi);
            assert_eq!(e.param.as_deref(), Some("input"));
            for part in [
                "input[1]".to_string(),
                format!("token id {bad}"),
                format!("position {pos}"),
                "vocabulary of 30522".to_string(),
                "mini".to_string(),
            ] {
                assert!(e.message.contains(&part), "{part:?} not in {:?}", e.message);
            }
        }
        // One flat list is `input`, not `input[0]`.
        let e = checked_ids(numbers(json!([[5, 40000]])), false, Some(30522), "m").unwrap_err();
        assert!(
            e.message.starts_with("input has token id 40000"),
            "{}",
            e.message
        );
    }

    #[test]
    fn negative_fractional_and_huge_numbers_are_not_token_ids() {
        for (bad, shown) in [
            (json!(-1), "-1"),
            (json!(2.5), "2.5"),
            (json!(5_000_000_000u64), "5000000000"),
        ] {
            let e = checked_ids(numbers(json!([[1, bad]])), true, Some(30522), "m").unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(
                e.message.contains("input[0]") && e.message.contains(shown),
                "{}",
                e.message
            );
        }
        // Without a vocabulary, only ids that fit u32 pass.
        assert!(checked_ids(numbers(json!([[4294967295u64]])), true, None, "m").is_ok());
        assert!(checked_ids(numbers(json!([[4294967296u64]])), true, None, "m").is_err());
    }
}
