//! Tokenization with the HF `tokenizers` crate, set up the way sentence-transformers calls it.

use crate::ModelError;
use crate::files::read_json_opt;
use serde::Deserialize;
use std::path::Path;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

/// One tokenized text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Token type (segment) ids.
    pub type_ids: Vec<u32>,
}

/// A model's tokenizer with truncation at the model's limit and no padding (batches are unpadded).
pub struct TextTokenizer {
    inner: Tokenizer,
    lowercase_input: bool,
    max_length: usize,
    /// Whether texts lose leading and trailing whitespace first (see [`TextTokenizer::keep_whitespace`]).
    strip_input: bool,
}

#[derive(Deserialize, Default)]
struct TokenizerConfig {
    do_lower_case: Option<bool>,
    model_max_length: Option<f64>,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` from `dir`, or builds a BERT WordPiece tokenizer from `vocab.txt`.
    ///
    /// `lowercase_input` is sentence_bert_config.json's `do_lower_case` (applied to the text before the
    /// tokenizer, as sentence-transformers does); `max_length` the token limit, special tokens included.
    pub fn load(dir: &Path, lowercase_input: bool, max_length: usize) -> Result<Self, ModelError> {
        let json = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.txt");
        let mut inner = if json.is_file() {
            Tokenizer::from_file(&json).map_err(|e| ModelError::Tokenizer {
                path: json.clone(),
                message: e.to_string(),
            })?
        } else if vocab.is_file() {
            let cfg: TokenizerConfig =
                read_json_opt(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
            bert_from_vocab(&vocab, cfg.do_lower_case.unwrap_or(true))?
        } else {
            return Err(ModelError::MissingTokenizer(dir.to_path_buf()));
        };
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| ModelError::Tokenizer {
                path: dir.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(Self {
            inner,
            lowercase_input,
            max_length,
            strip_input: true,
        })
    }

    /// Tokenizes texts as they are, spaces at the ends included: sentence-transformers 6 strips nothing, and
    /// a byte-level BPE (Qwen, Mistral) turns those spaces into tokens.
    pub fn keep_whitespace(mut self) -> Self {
        self.strip_input = false;
        self
    }

    /// The tokenizer's own `model_max_length` from tokenizer_config.json, when it is a real limit.
    pub fn configured_max_length(dir: &Path) -> Option<usize> {
        let cfg: TokenizerConfig = read_json_opt(&dir.join("tokenizer_config.json")).ok()??;
        // transformers writes 1e30 for "no limit".
        cfg.model_max_length
            .filter(|&m| m > 0.0 && m < 1e9)
            .map(|m| m as usize)
    }

    /// Token limit per text, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The HF tokenizer underneath, for callers in this crate that need more than ids (overflow, offsets).
    pub(crate) fn raw(&self) -> &Tokenizer {
        &self.inner
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `token` (vocabulary or added token), if the tokenizer has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The mask token (`[MASK]` for BERT, `<mask>` for RoBERTa-style vocabularies), if there is one.
    pub fn mask_token(&self) -> Option<String> {
        ["[MASK]", "<mask>"]
            .into_iter()
            .find(|t| self.inner.token_to_id(t).is_some())
            .map(String::from)
    }

    /// The unknown-word token (`[UNK]` or `<unk>`), if there is one.
    pub fn unk_token(&self) -> Option<String> {
        ["[UNK]", "<unk>"]
            .into_iter()
            .find(|t| self.inner.token_to_id(t).is_some())
            .map(String::from)
    }

    /// The text exactly as the tokenizer sees it: stripped (and lowercased when the model says so), as
    /// sentence-transformers' Transformer module prepares it.
    pub fn prepare<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        let trimmed = if self.strip_input { text.trim() } else { text };
        if self.lowercase_input {
            std::borrow::Cow::Owned(trimmed.to_lowercase())
        } else {
            std::borrow::Cow::Borrowed(trimmed)
        }
    }

    /// Tokenizes texts, truncating each to the limit (or to `max_length` if smaller).
    pub fn encode_batch(
        &self,
        texts: &[String],
        max_length: Option<usize>,
    ) -> Result<Vec<Encoded>, (usize, String)> {
        let limit = max_length
            .map_or(self.max_length, |m| m.min(self.max_length))
            .max(1);
        let prepared: Vec<String> = texts.iter().map(|t| self.prepare(t).into_owned()).collect();
        let mut out = Vec::with_capacity(texts.len());
        // encode_batch parallelizes over texts with rayon; a failure is reported for the whole batch, so find
        // the culprit by encoding one by one only on that (rare) path.
        let encodings = match self.inner.encode_batch(prepared.clone(), true) {
            Ok(e) => e,
            Err(_) => {
                for (i, t) in prepared.iter().enumerate() {
                    if let Err(e) = self.inner.encode(t.as_str(), true) {
                        return Err((i, e.to_string()));
                    }
                }
                return Err((0, "tokenizer failed on the batch".into()));
            }
        };
        for enc in encodings {
            let (ids, type_ids) = (enc.get_ids(), enc.get_type_ids());
            if ids.len() <= limit {
                out.push(Encoded {
                    ids: ids.to_vec(),
                    type_ids: type_ids.to_vec(),
                });
                continue;
            }
            // A caller's limit below the model's: cut like the tokenizer's own truncation would, which keeps
            // the closing special token ([SEP], </s>) and drops content tokens before it.
            let keeps_last = enc.get_special_tokens_mask().last() == Some(&1) && limit >= 2;
            let cut = |v: &[u32]| -> Vec<u32> {
                let mut c = v[..if keeps_last { limit - 1 } else { limit }].to_vec();
                if keeps_last {
                    c.push(v[v.len() - 1]);
                }
                c
            };
            out.push(Encoded {
                ids: cut(ids),
                type_ids: cut(type_ids),
            });
        }
        Ok(out)
    }
}

fn bert_from_vocab(vocab: &Path, lowercase: bool) -> Result<Tokenizer, ModelError> {
    let err = |message: String| ModelError::Tokenizer {
        path: vocab.to_path_buf(),
        message,
    };
    let path = vocab
        .to_str()
        .ok_or_else(|| err("path is not valid UTF-8".into()))?;
    let wordpiece = WordPiece::from_file(path)
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| err(e.to_string()))?;
    let token_id = |t: &str| {
        tokenizers::Model::token_to_id(&wordpiece, t)
            .ok_or_else(|| err(format!("vocabulary has no {t} token")))
    };
    let cls = token_id("[CLS]")?;
    let sep = token_id("[SEP]")?;
    let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .into_iter()
        .filter(|t| tokenizers::Model::token_to_id(&wordpiece, t).is_some())
        .map(|t| AddedToken::from(t, true))
        .collect();
    let mut tok = Tokenizer::new(wordpiece);
    // BertTokenizerFast matches its special tokens in the raw text before normalization, so "[MASK]" typed
    // in a text is one token, not "[", "mask", "]".
    tok.add_special_tokens(specials)
        .map_err(|e| err(e.to_string()))?;
    // Like BertTokenizerFast: clean text, split CJK characters, strip accents only when lowercasing.
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
        .map_err(|e| err(e.to_string()))?;
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    Ok(tok)
}
