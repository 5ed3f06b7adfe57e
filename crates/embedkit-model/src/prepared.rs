//! `LocalEmbedder` in two steps, for servers that batch across requests: [`LocalEmbedder::prepare`]
//! tokenizes on any thread, [`LocalEmbedder::forward_prepared`] runs one forward pass over texts that may come
//! from many requests, and [`LocalEmbedder::pool_prepared`] / [`LocalEmbedder::finish_vector`] turn a text's
//! token states into exactly the vector [`Embedder::embed`] returns for it.
//!
//! Batches are unpadded, so which texts share a forward pass does not change any text's vector.

use crate::LocalEmbedder;
use crate::backend::TokenBatch;
use crate::embedder::apply_linear;
use crate::layout::PostPoolingStep;
use embedkit_core::{EmbedError, Embedder, EncodeOptions, l2_normalize};

/// One text tokenized for the model, ready to join any batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedText {
    /// Token ids, special tokens (and the prompt) included.
    pub ids: Vec<u32>,
    /// Token type ids, aligned with `ids`.
    pub type_ids: Vec<u32>,
    /// Leading (prompt) tokens that pooling skips.
    pub skip: usize,
    /// Whether the text was longer than the model's token limit and was cut.
    pub truncated: bool,
}

/// One token of a text as the tokenizer made it, for `/tokenize`-style answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    /// Token id.
    pub id: u32,
    /// The token's string in the vocabulary.
    pub text: String,
    /// Whether it is a special token ([CLS], [SEP], <s>, …).
    pub special: bool,
    /// Byte offset of the token's start in the prepared (stripped, maybe lowercased) text.
    pub start: Option<usize>,
    /// Byte offset of the token's end in the prepared text.
    pub stop: Option<usize>,
}

impl LocalEmbedder {
    /// ColBERT models mark queries and documents and expand queries with unattended [MASK] tokens; the step
    /// API knows none of that, so it refuses them rather than give unmarked token vectors.
    fn refuse_colbert(&self) -> Result<(), EmbedError> {
        if self.colbert().is_some() {
            return Err(EmbedError::Unsupported(format!(
                "{} is a ColBERT model: the batching step API does not serve it (use embed_tokens)",
                self.info().name
            )));
        }
        Ok(())
    }

    /// Tokenizes `texts` as [`Embedder::embed`] would with `options` (prompt, `max_length`), and says which
    /// texts were longer than the token limit.
    pub fn prepare(
        &self,
        texts: &[&str],
        options: &EncodeOptions,
    ) -> Result<Vec<PreparedText>, EmbedError> {
        self.refuse_colbert()?;
        let (encoded, skip) = self.tokenize(texts, options)?;
        let limit = options
            .max_length
            .map_or(self.tokenizer().max_length(), |m| {
                m.min(self.tokenizer().max_length())
            })
            .max(1);
        let prompt = self.resolve_prompt(options)?;
        let mut out = Vec::with_capacity(encoded.len());
        for (i, e) in encoded.into_iter().enumerate() {
            // Only a text that fills the limit can have been cut: tokenize just those again and ask the
            // tokenizer whether it overflowed (or, below the model's limit, whether it is longer).
            let truncated = e.ids.len() >= limit && {
                let text = match &prompt {
                    Some(p) => format!("{p}{}", texts[i]),
                    None => texts[i].to_string(),
                };
                let prepared = self.tokenizer().prepare(&text).into_owned();
                match self.tokenizer().raw().encode(prepared.as_str(), true) {
                    Ok(full) => full.get_ids().len() > limit || !full.get_overflowing().is_empty(),
                    Err(err) => {
                        return Err(EmbedError::Tokenize {
                            index: i,
                            message: err.to_string(),
                        });
                    }
                }
            };
            out.push(PreparedText {
                ids: e.ids,
                type_ids: e.type_ids,
                skip,
                truncated,
            });
        }
        Ok(out)
    }

    /// Token ids given by the caller (OpenAI's `input: [[int]]`), used as they are: no special tokens are
    /// added, no prompt. Ids outside the vocabulary are an error naming the text and position; sequences
    /// longer than the token limit are cut to it and marked truncated.
    pub fn prepare_ids(&self, ids: Vec<Vec<u32>>) -> Result<Vec<PreparedText>, EmbedError> {
        self.refuse_colbert()?;
        let vocab = self.tokenizer().vocab_size();
        let limit = self.tokenizer().max_length().max(1);
        let mut out = Vec::with_capacity(ids.len());
        for (i, mut seq) in ids.into_iter().enumerate() {
            if seq.is_empty() {
                return Err(EmbedError::InvalidOption {
                    option: "input",
                    reason: format!("token list {i} is empty"),
                });
            }
            if let Some((pos, bad)) = seq
                .iter()
                .enumerate()
                .find(|(_, t)| (**t as usize) >= vocab)
            {
                return Err(EmbedError::InvalidOption {
                    option: "input",
                    reason: format!(
                        "token id {bad} at position {pos} of token list {i} is outside the vocabulary (0..{vocab})"
                    ),
                });
            }
            let truncated = seq.len() > limit;
            seq.truncate(limit);
            let n = seq.len();
            out.push(PreparedText {
                ids: seq,
                type_ids: vec![0; n],
                skip: 0,
                truncated,
            });
        }
        Ok(out)
    }

    /// Runs one forward pass over `texts` (all of them, however many; the caller bounds the batch) and calls
    /// `per_text(i, token_states)` with the `tokens × hidden_size` last hidden states of `texts[i]`.
    pub fn forward_prepared(
        &self,
        texts: &[&PreparedText],
        mut per_text: impl FnMut(usize, &[f32]),
    ) -> Result<(), EmbedError> {
        if texts.is_empty() {
            return Ok(());
        }
        let total: usize = texts.iter().map(|t| t.ids.len()).sum();
        let mut ids = Vec::with_capacity(total);
        let mut types = Vec::with_capacity(total);
        let mut seq_lens = Vec::with_capacity(texts.len());
        for t in texts {
            ids.extend_from_slice(&t.ids);
            types.extend_from_slice(&t.type_ids);
            seq_lens.push(t.ids.len());
        }
        let states = self
            .backend
            .forward(&TokenBatch {
                input_ids: &ids,
                type_ids: &types,
                seq_lens: &seq_lens,
                // Prepared texts never carry ColBERT's unattended [MASK] tail: `prepare` refuses ColBERT models.
                key_lens: None,
            })
            .map_err(EmbedError::Backend)?;
        let hidden = self.config().hidden_size;
        let mut offset = 0;
        for (i, &len) in seq_lens.iter().enumerate() {
            per_text(i, &states[offset * hidden..(offset + len) * hidden]);
            offset += len;
        }
        Ok(())
    }

    /// Pooling and every post-pooling module except a trailing Normalize (which [`Self::finish_vector`]
    /// applies after Matryoshka truncation, as `embed` does): `dims()` values.
    pub fn pool_prepared(&self, text: &PreparedText, states: &[f32]) -> Vec<f32> {
        let layout = self.layout();
        let steps = match layout.post_pooling.split_last() {
            Some((PostPoolingStep::Normalize, rest)) => rest,
            _ => &layout.post_pooling[..],
        };
        let mut pooled = Vec::with_capacity(self.dims());
        layout
            .pooling
            .pool(states, self.config().hidden_size, text.skip, &mut pooled);
        for step in steps {
            match step {
                PostPoolingStep::Dense { linear, activation } => {
                    pooled = apply_linear(linear, &pooled, |x| activation.apply(x));
                }
                PostPoolingStep::Normalize => l2_normalize(&mut pooled),
            }
        }
        pooled
    }

    /// Matryoshka truncation then normalization (`None` follows the model), as `embed` finishes a vector.
    pub fn finish_vector(
        &self,
        mut pooled: Vec<f32>,
        truncate_dim: Option<usize>,
        normalize: Option<bool>,
    ) -> Result<Vec<f32>, EmbedError> {
        let dims = self.dims();
        if let Some(d) = truncate_dim {
            if d == 0 || d > dims {
                return Err(EmbedError::InvalidOption {
                    option: "truncate_dim",
                    reason: format!("{d} is outside 1..={dims} (the model's dimensions)"),
                });
            }
            pooled.truncate(d);
        }
        if normalize.unwrap_or(self.layout().normalizes()) {
            l2_normalize(&mut pooled);
        }
        Ok(pooled)
    }

    /// The tokens of `text` (prepared as the model prepares it), with or without special tokens, untruncated.
    pub fn token_info(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<TokenInfo>, EmbedError> {
        let prepared = self.tokenizer().prepare(text).into_owned();
        let raw = self.tokenizer().raw();
        let enc = raw
            .encode(prepared.as_str(), add_special_tokens)
            .map_err(|e| EmbedError::Tokenize {
                index: 0,
                message: e.to_string(),
            })?;
        // The tokenizer truncates at the model's limit and keeps the rest as overflow (each part with its own
        // special tokens): put the content back together between the first part's special tokens.
        let tokens = |e: &tokenizers::Encoding| -> Vec<TokenInfo> {
            e.get_ids()
                .iter()
                .zip(e.get_tokens())
                .zip(e.get_special_tokens_mask())
                .zip(e.get_offsets())
                .map(|(((&id, tok), &special), &(start, stop))| {
                    let special = special == 1;
                    TokenInfo {
                        id,
                        text: tok.clone(),
                        special,
                        start: (!special).then_some(start),
                        stop: (!special).then_some(stop),
                    }
                })
                .collect()
        };
        let mut out = tokens(&enc);
        let tail_start = out
            .iter()
            .rposition(|t| !t.special)
            .map_or(out.len(), |p| p + 1);
        let tail = out.split_off(tail_start);
        for part in enc.get_overflowing() {
            out.extend(tokens(part).into_iter().filter(|t| !t.special));
        }
        out.extend(tail);
        Ok(out)
    }
}
