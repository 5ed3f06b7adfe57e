//! Cache keys: a namespace and a sha256 over everything that changes a vector.

use embedkit_core::EncodeOptions;
use sha2::{Digest, Sha256};
use std::fmt;

/// The namespace keys get when none is configured.
pub const DEFAULT_NAMESPACE: &str = "embedkit";

/// Bumped whenever the fields hashed into a key change, so old entries become unreachable instead of
/// being read under a different meaning.
const KEY_DOMAIN: &[u8] = b"embedkit-cache-key-v1";

/// The options of an encode call that change the vector, in the form keys hash them.
///
/// `batch_size` is deliberately absent: it changes speed, not vectors. A literal `prompt` wins over
/// `prompt_name` (as in [`EncodeOptions`]), so `prompt_name` is dropped when `prompt` is set and two calls
/// that mean the same thing share entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyOptions {
    /// L2 normalization as asked; `None` means "as the model says", which the fingerprint pins down.
    pub normalize: Option<bool>,
    /// Matryoshka truncation.
    pub truncate_dim: Option<usize>,
    /// Literal prompt (`Some("")` = explicitly none).
    pub prompt: Option<String>,
    /// Named prompt of the model, when no literal prompt is given.
    pub prompt_name: Option<String>,
    /// Token cap per text.
    pub max_length: Option<usize>,
    /// Output precision of the stored vector (`f32` today).
    pub precision: String,
}

impl KeyOptions {
    /// The key-relevant part of `options`, at `f32` precision.
    pub fn from_encode(options: &EncodeOptions) -> Self {
        Self {
            normalize: options.normalize,
            truncate_dim: options.truncate_dim,
            prompt: options.prompt.clone(),
            prompt_name: if options.prompt.is_some() {
                None
            } else {
                options.prompt_name.clone()
            },
            max_length: options.max_length,
            precision: "f32".to_string(),
        }
    }
}

/// A full cache key: `namespace:hex(sha256(…))`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a stored key as is (for stores and tests; [`KeyBuilder`] makes real ones).
    pub fn from_raw(key: impl Into<String>) -> Self {
        Self(key.into())
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds the keys of one model and one set of options; hashing the shared prefix once makes each key one
/// sha256 over the text.
///
/// Every field is length-prefixed (and every optional field tagged present/absent), so that no two
/// different field tuples can produce the same byte stream: `("ab", "c")` and `("a", "bc")` differ.
#[derive(Clone)]
pub struct KeyBuilder {
    namespace: String,
    prefix: Sha256,
}

impl KeyBuilder {
    /// Keys under `namespace` for vectors from the embedder with `fingerprint` and these options.
    pub fn new(namespace: &str, fingerprint: &str, options: &KeyOptions) -> Self {
        let mut h = Sha256::new();
        field(&mut h, KEY_DOMAIN);
        field(&mut h, fingerprint.as_bytes());
        match options.normalize {
            None => h.update([0u8]),
            Some(false) => h.update([1u8]),
            Some(true) => h.update([2u8]),
        }
        opt_usize(&mut h, options.truncate_dim);
        opt_str(&mut h, options.prompt.as_deref());
        opt_str(&mut h, options.prompt_name.as_deref());
        opt_usize(&mut h, options.max_length);
        field(&mut h, options.precision.as_bytes());
        Self {
            namespace: namespace.to_string(),
            prefix: h,
        }
    }

    /// The key of `text`.
    pub fn key(&self, text: &str) -> CacheKey {
        let mut h = self.prefix.clone();
        field(&mut h, text.as_bytes());
        let digest = h.finalize();
        let mut s = String::with_capacity(self.namespace.len() + 1 + 64);
        s.push_str(&self.namespace);
        s.push(':');
        for b in digest.iter() {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        CacheKey(s)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn opt_usize(h: &mut Sha256, v: Option<usize>) {
    match v {
        None => h.update([0u8]),
        Some(v) => {
            h.update([1u8]);
            h.update((v as u64).to_le_bytes());
        }
    }
}

fn opt_str(h: &mut Sha256, v: Option<&str>) {
    match v {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            field(h, s.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fp: &str, o: &EncodeOptions, text: &str) -> CacheKey {
        KeyBuilder::new("ns", fp, &KeyOptions::from_encode(o)).key(text)
    }

    #[test]
    fn key_shape() {
        let k = key("fp", &EncodeOptions::default(), "hello");
        let (ns, hex) = k.as_str().split_once(':').unwrap();
        assert_eq!(ns, "ns");
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(k, key("fp", &EncodeOptions::default(), "hello"));
    }

    #[test]
    fn every_vector_changing_field_changes_the_key() {
        let base = EncodeOptions::default();
        let variants = [
            EncodeOptions {
                normalize: Some(true),
                ..base.clone()
            },
            EncodeOptions {
                normalize: Some(false),
                ..base.clone()
            },
            EncodeOptions {
                truncate_dim: Some(8),
                ..base.clone()
            },
            EncodeOptions {
                prompt: Some("query: ".into()),
                ..base.clone()
            },
            EncodeOptions {
                prompt: Some(String::new()),
                ..base.clone()
            },
            EncodeOptions {
                prompt_name: Some("query".into()),
                ..base.clone()
            },
            EncodeOptions {
                max_length: Some(16),
                ..base.clone()
            },
        ];
        let mut keys = vec![
            key("fp", &base, "t"),
            key("fp2", &base, "t"),
            key("fp", &base, "u"),
        ];
        for v in &variants {
            keys.push(key("fp", v, "t"));
        }
        let mut fp32 = KeyOptions::from_encode(&base);
        fp32.precision = "int8".into();
        keys.push(KeyBuilder::new("ns", "fp", &fp32).key("t"));
        keys.push(KeyBuilder::new("other", "fp", &KeyOptions::from_encode(&base)).key("t"));
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{keys:#?}");
    }

    #[test]
    fn batch_size_does_not_change_the_key() {
        let a = EncodeOptions::default();
        let b = EncodeOptions {
            batch_size: Some(7),
            ..a.clone()
        };
        assert_eq!(key("fp", &a, "t"), key("fp", &b, "t"));
    }

    #[test]
    fn prompt_name_is_ignored_when_a_literal_prompt_wins() {
        let a = EncodeOptions {
            prompt: Some("q: ".into()),
            ..Default::default()
        };
        let b = EncodeOptions {
            prompt_name: Some("query".into()),
            ..a.clone()
        };
        assert_eq!(key("fp", &a, "t"), key("fp", &b, "t"));
    }

    #[test]
    fn field_boundaries_cannot_collide() {
        // Same concatenation, different split between prompt and text / fingerprint and text.
        let p = |s: &str| EncodeOptions {
            prompt: Some(s.into()),
            ..Default::default()
        };
        assert_ne!(key("fp", &p("ab"), "c"), key("fp", &p("a"), "bc"));
        assert_ne!(
            key("ab", &EncodeOptions::default(), "c"),
            key("a", &EncodeOptions::default(), "bc")
        );
    }
}
