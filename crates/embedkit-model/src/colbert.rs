//! ColBERT models: a projection head over the token vectors, [Q]/[D] markers, [MASK] query expansion and a
//! punctuation skiplist for documents — as PyLate's `ColBERT` and Stanford's `ColBERT.query`/`ColBERT.doc` do.
//!
//! Two folder layouts are recognized:
//!
//! * **PyLate**: a sentence-transformers folder whose modules.json has a Transformer and Dense modules but no
//!   Pooling, with `query_prefix` ("[Q] "), `document_prefix` ("[D] "), `query_length` (32),
//!   `document_length` (180), `attend_to_expansion_tokens` (false), `skiplist_words` (punctuation) and
//!   `do_query_expansion` (true) in config_sentence_transformers.json (defaults in brackets are PyLate's).
//! * **Stanford ColBERT**: a HF BERT checkpoint (`architectures: ["HF_ColBERT"]`, or a `linear.weight` next to
//!   the encoder's weights) whose bias-free `linear` layer is the projection; `artifact.metadata` gives
//!   `query_maxlen` (32), `doc_maxlen` (180), `mask_punctuation` (true), `attend_to_mask_tokens` (false) and
//!   the marker tokens (`[unused0]` for [Q], `[unused1]` for [D]). Queries are always expanded.
//!
//! Both libraries tokenize the same way: truncate to `length − 1` tokens, put the marker right after the
//! first special token (Stanford tokenizes ". text" and overwrites the "." — the same ids), and pad queries
//! to `length` with [MASK], which the other tokens do not attend to unless `attend` is set (every query token
//! is still returned). Documents drop the skiplist's tokens. Every token vector is projected and L2-normalized.

use crate::ModelError;
use crate::files::{read_json, read_json_opt};
use crate::layout::{DenseActivation, PostPoolingStep, SentenceTransformerLayout};
use crate::tokenizer::TextTokenizer;
use crate::weights::{Linear, SafetensorsFiles};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;

/// Which library's folder layout a ColBERT model came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ColbertLayout {
    /// PyLate (sentence-transformers layout, Dense projection module).
    PyLate,
    /// Stanford ColBERT (HF checkpoint with `linear.weight`).
    Stanford,
}

/// A ColBERT model's head and tokenization rules, before token ids are known.
#[derive(Debug, Clone)]
pub(crate) struct ColbertSpec {
    layout: ColbertLayout,
    projection: Vec<PostPoolingStep>,
    query_marker: Option<String>,
    document_marker: Option<String>,
    query_length: usize,
    document_length: usize,
    query_expansion: bool,
    attend_to_expansion: bool,
    skiplist_words: Vec<String>,
}

/// A loaded ColBERT head: what `embed_tokens` does differently for a ColBERT model.
#[derive(Debug, Clone)]
pub struct ColbertHead {
    /// The layout it was read from.
    pub layout: ColbertLayout,
    /// Dense steps applied to every token vector, in order.
    pub projection: Vec<PostPoolingStep>,
    /// Token id inserted after the first token of a query.
    pub query_marker: Option<u32>,
    /// Token id inserted after the first token of a document.
    pub document_marker: Option<u32>,
    /// Tokens per query, markers and expansion included.
    pub query_length: usize,
    /// Most tokens per document, markers included.
    pub document_length: usize,
    /// Pad queries to `query_length` with `expansion_token`.
    pub query_expansion: bool,
    /// Whether the other tokens attend to the expansion tokens.
    pub attend_to_expansion: bool,
    /// The [MASK] token queries are padded with.
    pub expansion_token: u32,
    /// Token ids dropped from documents (punctuation by default).
    pub skiplist: BTreeSet<u32>,
}

#[derive(Deserialize, Default)]
struct PylateConfig {
    query_prefix: Option<String>,
    document_prefix: Option<String>,
    query_length: Option<usize>,
    document_length: Option<usize>,
    attend_to_expansion_tokens: Option<bool>,
    skiplist_words: Option<Vec<String>>,
    do_query_expansion: Option<bool>,
}

#[derive(Deserialize, Default)]
struct StanfordMetadata {
    query_maxlen: Option<usize>,
    doc_maxlen: Option<usize>,
    mask_punctuation: Option<bool>,
    attend_to_mask_tokens: Option<bool>,
    query_token_id: Option<String>,
    doc_token_id: Option<String>,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    module_type: String,
}

#[derive(Deserialize, Default)]
struct Architectures {
    #[serde(default)]
    architectures: Vec<String>,
}

/// Python's `string.punctuation`, PyLate's and Stanford's default skiplist.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

fn punctuation() -> Vec<String> {
    PUNCTUATION.chars().map(String::from).collect()
}

impl ColbertSpec {
    /// Recognizes a ColBERT folder; `None` for any other model.
    pub(crate) fn detect(
        dir: &Path,
        layout: &SentenceTransformerLayout,
        files: &SafetensorsFiles,
    ) -> Result<Option<Self>, ModelError> {
        if layout.has_modules_json {
            let modules: Vec<ModuleEntry> = read_json(&dir.join("modules.json"))?;
            let class = |m: &ModuleEntry| {
                m.module_type
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            };
            let has_pooling = modules.iter().any(|m| class(m) == "Pooling");
            let dense: Vec<PostPoolingStep> = layout
                .post_pooling
                .iter()
                .filter(|s| matches!(s, PostPoolingStep::Dense { .. }))
                .cloned()
                .collect();
            if has_pooling || dense.is_empty() {
                return Ok(None);
            }
            let cfg: PylateConfig =
                read_json_opt(&dir.join("config_sentence_transformers.json"))?.unwrap_or_default();
            let non_empty = |p: Option<String>, default: &str| {
                let p = p.unwrap_or_else(|| default.to_string());
                (!p.is_empty()).then_some(p)
            };
            let expansion = cfg.do_query_expansion.unwrap_or(true);
            return Ok(Some(ColbertSpec {
                layout: ColbertLayout::PyLate,
                projection: dense,
                query_marker: non_empty(cfg.query_prefix, "[Q] "),
                document_marker: non_empty(cfg.document_prefix, "[D] "),
                query_length: cfg.query_length.unwrap_or(32),
                document_length: cfg.document_length.unwrap_or(180),
                query_expansion: expansion,
                // PyLate: without expansion there is nothing to attend to.
                attend_to_expansion: expansion && cfg.attend_to_expansion_tokens.unwrap_or(false),
                skiplist_words: cfg.skiplist_words.unwrap_or_else(punctuation),
            }));
        }
        let arch: Architectures =
            read_json_opt(&layout.transformer_dir.join("config.json"))?.unwrap_or_default();
        let is_stanford = arch.architectures.iter().any(|a| a == "HF_ColBERT");
        if !is_stanford && !files.contains("linear.weight") {
            return Ok(None);
        }
        let weight = files.get("linear.weight")?;
        if weight.shape.len() != 2 {
            return Err(ModelError::TensorShape {
                name: "linear.weight".into(),
                expected: vec![0, 0],
                found: weight.shape,
            });
        }
        let meta: StanfordMetadata =
            read_json_opt(&dir.join("artifact.metadata"))?.unwrap_or_default();
        let attend = meta.attend_to_mask_tokens.unwrap_or(false);
        Ok(Some(ColbertSpec {
            layout: ColbertLayout::Stanford,
            projection: vec![PostPoolingStep::Dense {
                linear: Linear { weight, bias: None },
                activation: DenseActivation::Identity,
            }],
            query_marker: Some(meta.query_token_id.unwrap_or_else(|| "[unused0]".into())),
            document_marker: Some(meta.doc_token_id.unwrap_or_else(|| "[unused1]".into())),
            query_length: meta.query_maxlen.unwrap_or(32),
            document_length: meta.doc_maxlen.unwrap_or(180),
            query_expansion: true,
            attend_to_expansion: attend,
            skiplist_words: if meta.mask_punctuation.unwrap_or(true) {
                punctuation()
            } else {
                Vec::new()
            },
        }))
    }

    /// The longest sequence the tokenizer must allow.
    pub(crate) fn max_tokens(&self) -> usize {
        self.query_length.max(self.document_length)
    }

    /// Resolves marker, expansion and skiplist tokens to ids with the model's tokenizer.
    pub(crate) fn resolve(
        self,
        dir: &Path,
        tokenizer: &TextTokenizer,
    ) -> Result<ColbertHead, ModelError> {
        let config_err = |field: &str, message: String| ModelError::Config {
            path: dir.to_path_buf(),
            field: field.into(),
            message,
        };
        let marker = |m: &Option<String>, field: &str| -> Result<Option<u32>, ModelError> {
            match m {
                None => Ok(None),
                Some(t) => tokenizer.token_to_id(t).map(Some).ok_or_else(|| {
                    config_err(
                        field,
                        format!("names token {t:?}, which the tokenizer does not have"),
                    )
                }),
            }
        };
        let query_marker = marker(&self.query_marker, "query_prefix")?;
        let document_marker = marker(&self.document_marker, "document_prefix")?;
        let expansion_token = tokenizer
            .mask_token()
            .and_then(|t| tokenizer.token_to_id(&t))
            .ok_or_else(|| {
                config_err(
                    "tokenizer",
                    "has no mask token to expand ColBERT queries with".into(),
                )
            })?;
        // transformers' convert_tokens_to_ids maps a word outside the vocabulary to the unknown token, so
        // PyLate's skiplist then holds [UNK]; do the same.
        let unk = tokenizer
            .unk_token()
            .and_then(|t| tokenizer.token_to_id(&t));
        let skiplist = self
            .skiplist_words
            .iter()
            .filter_map(|w| tokenizer.token_to_id(w).or(unk))
            .collect();
        let min_len = 2 + usize::from(query_marker.is_some());
        for (len, field) in [
            (self.query_length, "query_length"),
            (self.document_length, "document_length"),
        ] {
            if len < min_len {
                return Err(config_err(
                    field,
                    format!("is {len}; it must leave room for the special tokens and the marker"),
                ));
            }
        }
        Ok(ColbertHead {
            layout: self.layout,
            projection: self.projection,
            query_marker,
            document_marker,
            query_length: self.query_length,
            document_length: self.document_length,
            query_expansion: self.query_expansion,
            attend_to_expansion: self.attend_to_expansion,
            expansion_token,
            skiplist,
        })
    }
}

/// One text prepared for a ColBERT forward pass.
pub(crate) struct ColbertInput {
    /// Token ids fed to the encoder.
    pub ids: Vec<u32>,
    /// Token type ids (all 0, like the tokenizer's for one sequence).
    pub type_ids: Vec<u32>,
    /// Tokens the others attend to (a prefix of `ids`).
    pub keys: usize,
    /// Positions whose vectors are returned.
    pub keep: Vec<usize>,
}

impl ColbertHead {
    /// Output dimensions of the projection.
    pub fn dims(&self) -> usize {
        self.projection
            .iter()
            .rev()
            .find_map(|s| match s {
                PostPoolingStep::Dense { linear, .. } => Some(linear.weight.shape[0]),
                PostPoolingStep::Normalize => None,
            })
            .unwrap_or(0)
    }

    /// The token-count limit passed to the tokenizer: room is left for the marker.
    pub(crate) fn token_limit(&self, is_query: bool, cap: Option<usize>) -> usize {
        let len = if is_query {
            self.query_length
        } else {
            self.document_length
        };
        let marker = if is_query {
            self.query_marker
        } else {
            self.document_marker
        };
        let len = cap.map_or(len, |c| c.min(len));
        len.saturating_sub(usize::from(marker.is_some())).max(1)
    }

    /// Inserts the marker, pads queries with [MASK] and decides which tokens attend and which are kept.
    /// `ids`/`type_ids` are the tokenizer's output truncated to [`ColbertHead::token_limit`].
    pub(crate) fn prepare(
        &self,
        mut ids: Vec<u32>,
        mut type_ids: Vec<u32>,
        is_query: bool,
    ) -> ColbertInput {
        let marker = if is_query {
            self.query_marker
        } else {
            self.document_marker
        };
        if let Some(m) = marker {
            let at = 1.min(ids.len());
            ids.insert(at, m);
            type_ids.insert(at, 0);
        }
        let real = ids.len();
        if is_query && self.query_expansion {
            ids.resize(self.query_length.max(real), self.expansion_token);
            type_ids.resize(ids.len(), 0);
            let keys = if self.attend_to_expansion {
                ids.len()
            } else {
                real
            };
            let keep = (0..ids.len()).collect();
            return ColbertInput {
                ids,
                type_ids,
                keys,
                keep,
            };
        }
        let keep = if is_query {
            (0..real).collect()
        } else {
            (0..real)
                .filter(|&i| !self.skiplist.contains(&ids[i]))
                .collect()
        };
        ColbertInput {
            ids,
            type_ids,
            keys: real,
            keep,
        }
    }
}
