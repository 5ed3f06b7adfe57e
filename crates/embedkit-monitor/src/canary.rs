//! Canaries: a few fixed texts embedded once and recorded with their vectors and the options that made them.
//! Re-embedding them later and comparing says exactly whether the embedding function changed — another model
//! or provider model, pooling, normalization, precision, truncation, a missing prompt — which no statistical test
//! on traffic can say as surely or as early.
//!
//! Equal means: same count and dimensions, every cosine ≥ `min_cosine` (default 0.9999: other thread counts,
//! batch sizes or a cache give identical or near-identical vectors) **and** every norm within 1e-3 relative
//! (cosine cannot see a dropped normalization).

use crate::DriftError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A recorded canary file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    /// File format version.
    pub version: u32,
    /// The model as given when recording.
    pub model: String,
    /// The options that change vectors (compute, prompt, dims, max length …), as given when recording.
    pub options: BTreeMap<String, String>,
    /// The texts.
    pub texts: Vec<String>,
    /// Their vectors, in order.
    pub vectors: Vec<Vec<f32>>,
}

/// The outcome of a canary check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryCheck {
    /// The embedding function changed.
    pub changed: bool,
    /// Smallest cosine between a recorded and a new vector (−1 when the shapes differ).
    pub min_cosine: f64,
    /// Largest relative change of a vector's norm.
    pub max_norm_change: f64,
    /// Largest absolute difference of any component.
    pub max_abs_diff: f64,
    /// Why it changed, in words (empty when equal).
    pub reasons: Vec<String>,
}

impl Canary {
    /// Reads a canary file.
    pub fn read(path: &Path) -> Result<Canary, DriftError> {
        let err = |reason: String| DriftError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let c: Canary =
            serde_json::from_str(&text).map_err(|e| err(format!("not a canary file: {e}")))?;
        if c.version != 1 {
            return Err(err(format!(
                "canary version {} (this embedkit reads 1)",
                c.version
            )));
        }
        if c.texts.len() != c.vectors.len() {
            return Err(err(format!(
                "{} texts but {} vectors",
                c.texts.len(),
                c.vectors.len()
            )));
        }
        Ok(c)
    }

    /// The vector-changing options it was recorded with, as encode options (`compute` is not one: it is the
    /// engine's setting, and a different one is what the check should catch).
    pub fn encode_options(&self) -> embedkit_core::EncodeOptions {
        let get = |k: &str| self.options.get(k).cloned();
        let number = |k: &str| get(k).and_then(|v| v.parse().ok());
        embedkit_core::EncodeOptions {
            prompt: get("prompt"),
            prompt_name: get("prompt_name"),
            truncate_dim: number("truncate_dim"),
            max_length: number("max_length"),
            normalize: get("normalize").and_then(|v| v.parse().ok()),
            ..Default::default()
        }
    }

    /// Compares freshly embedded vectors of the same texts with the recorded ones.
    pub fn check(&self, vectors: &[Vec<f32>], min_cosine: f64) -> CanaryCheck {
        let mut reasons = Vec::new();
        if vectors.len() != self.vectors.len() {
            reasons.push(format!(
                "{} vectors for {} recorded",
                vectors.len(),
                self.vectors.len()
            ));
        }
        let (mut min_cos, mut max_norm, mut max_abs) = (1.0f64, 0.0f64, 0.0f64);
        for (i, (old, new)) in self.vectors.iter().zip(vectors).enumerate() {
            if old.len() != new.len() {
                reasons.push(format!(
                    "text {i}: {} dimensions, recorded {}",
                    new.len(),
                    old.len()
                ));
                min_cos = -1.0;
                continue;
            }
            let (mut dot, mut qa, mut qb) = (0.0f64, 0.0f64, 0.0f64);
            for (&a, &b) in old.iter().zip(new) {
                dot += a as f64 * b as f64;
                qa += a as f64 * a as f64;
                qb += b as f64 * b as f64;
                max_abs = max_abs.max((a as f64 - b as f64).abs());
            }
            let cos = if qa > 0.0 && qb > 0.0 {
                dot / (qa.sqrt() * qb.sqrt())
            } else if qa == qb {
                1.0
            } else {
                0.0
            };
            min_cos = min_cos.min(cos);
            let norm_change = if qa > 0.0 {
                (qb.sqrt() - qa.sqrt()).abs() / qa.sqrt()
            } else {
                qb.sqrt()
            };
            max_norm = max_norm.max(norm_change);
        }
        if min_cos < min_cosine {
            reasons.push(format!(
                "a vector moved: minimum cosine {min_cos:.6} < {min_cosine}"
            ));
        }
        if max_norm > 1e-3 {
            reasons.push(format!(
                "vector norms changed by up to {:.3}% (normalization?)",
                100.0 * max_norm
            ));
        }
        CanaryCheck {
            changed: !reasons.is_empty(),
            min_cosine: min_cos,
            max_norm_change: max_norm,
            max_abs_diff: max_abs,
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> Canary {
        Canary {
            version: 1,
            model: "m".into(),
            options: BTreeMap::new(),
            texts: vec!["a".into(), "b".into()],
            vectors: vec![vec![0.6, 0.8], vec![1.0, 0.0]],
        }
    }

    #[test]
    fn equal_scaled_and_rotated_vectors() {
        let c = canary();
        assert!(!c.check(&c.vectors, 0.9999).changed);
        // Same directions, twice the length: cosine 1 but normalization changed.
        let scaled: Vec<Vec<f32>> = c
            .vectors
            .iter()
            .map(|v| v.iter().map(|x| x * 2.0).collect())
            .collect();
        let r = c.check(&scaled, 0.9999);
        assert!(r.changed && r.min_cosine > 0.99999, "{r:?}");
        let rotated = vec![vec![0.8, 0.6], vec![1.0, 0.0]];
        assert!(c.check(&rotated, 0.9999).changed);
        assert!(c.check(&c.vectors[..1], 0.9999).changed);
    }
}
