//! Pooling: turning a sequence's token vectors into one vector, as sentence-transformers' Pooling module does.

use crate::ModelError;
use crate::files::read_json;
use serde::Deserialize;
use std::path::Path;

/// One way of pooling token vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    /// The first token's vector ([CLS] / `<s>`).
    Cls,
    /// Element-wise maximum over tokens.
    Max,
    /// Mean over tokens.
    Mean,
    /// Sum over tokens divided by √(token count).
    MeanSqrtLen,
    /// Mean weighted by position (1, 2, …, n), as in SGPT.
    WeightedMean,
    /// The last token's vector.
    LastToken,
}

impl PoolingMode {
    /// sentence-transformers' name for the mode.
    pub fn name(self) -> &'static str {
        match self {
            PoolingMode::Cls => "cls",
            PoolingMode::Max => "max",
            PoolingMode::Mean => "mean",
            PoolingMode::MeanSqrtLen => "mean_sqrt_len_tokens",
            PoolingMode::WeightedMean => "weightedmean",
            PoolingMode::LastToken => "lasttoken",
        }
    }
}

/// 1_Pooling/config.json: which modes (concatenated in sentence-transformers' fixed order) and whether prompt
/// tokens take part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolingConfig {
    /// Modes in output order.
    pub modes: Vec<PoolingMode>,
    /// When false, the prompt's tokens (and the leading special token) are left out of pooling.
    pub include_prompt: bool,
}

#[derive(Deserialize)]
struct RawPooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    /// Newer configs may name one mode as a string.
    pooling_mode: Option<String>,
    #[serde(default = "default_true")]
    include_prompt: bool,
}

fn default_true() -> bool {
    true
}

impl PoolingConfig {
    /// A single mode, prompts included.
    pub fn single(mode: PoolingMode) -> Self {
        Self {
            modes: vec![mode],
            include_prompt: true,
        }
    }

    /// Reads 1_Pooling/config.json.
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let raw: RawPooling = read_json(path)?;
        let mut modes = Vec::new();
        if let Some(name) = raw.pooling_mode.as_deref() {
            modes.push(match name {
                "cls" => PoolingMode::Cls,
                "max" => PoolingMode::Max,
                "mean" => PoolingMode::Mean,
                "mean_sqrt_len_tokens" => PoolingMode::MeanSqrtLen,
                "weightedmean" => PoolingMode::WeightedMean,
                "lasttoken" => PoolingMode::LastToken,
                other => {
                    return Err(ModelError::Config {
                        path: path.to_path_buf(),
                        field: "pooling_mode".into(),
                        message: format!(
                            "'{other}' is not one of cls, max, mean, mean_sqrt_len_tokens, weightedmean, lasttoken"
                        ),
                    });
                }
            });
        } else {
            // sentence-transformers concatenates the enabled modes in exactly this order.
            for (on, mode) in [
                (raw.pooling_mode_cls_token, PoolingMode::Cls),
                (raw.pooling_mode_max_tokens, PoolingMode::Max),
                (raw.pooling_mode_mean_tokens, PoolingMode::Mean),
                (
                    raw.pooling_mode_mean_sqrt_len_tokens,
                    PoolingMode::MeanSqrtLen,
                ),
                (
                    raw.pooling_mode_weightedmean_tokens,
                    PoolingMode::WeightedMean,
                ),
                (raw.pooling_mode_lasttoken, PoolingMode::LastToken),
            ] {
                if on {
                    modes.push(mode);
                }
            }
        }
        if modes.is_empty() {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                field: "pooling_mode_*".into(),
                message: "enables no pooling mode".into(),
            });
        }
        Ok(Self {
            modes,
            include_prompt: raw.include_prompt,
        })
    }

    /// Width of the pooled vector.
    pub fn output_dims(&self, hidden_size: usize) -> usize {
        self.modes.len() * hidden_size
    }

    /// A short description, e.g. `mean` or `cls+mean`.
    pub fn describe(&self) -> String {
        self.modes
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join("+")
    }

    /// Pools one sequence. `tokens` is `n × hidden` row-major; tokens before `skip` (the leading special token
    /// and prompt when `include_prompt` is false) are left out of every mode but `cls`.
    pub fn pool(&self, tokens: &[f32], hidden: usize, skip: usize, out: &mut Vec<f32>) {
        let n = tokens.len() / hidden;
        let rows = || tokens.chunks_exact(hidden).enumerate().skip(skip);
        // sentence-transformers divides by the mask sum clamped at 1e-9; an all-masked sequence pools to zeros.
        let counted = n.saturating_sub(skip);
        for mode in &self.modes {
            let start = out.len();
            match mode {
                PoolingMode::Cls => out.extend_from_slice(&tokens[..hidden.min(tokens.len())]),
                PoolingMode::Max => {
                    // Masked positions are set to -1e9 before the max in sentence-transformers.
                    out.resize(
                        start + hidden,
                        if counted == 0 {
                            -1e9
                        } else {
                            f32::NEG_INFINITY
                        },
                    );
                    for (_, r) in rows() {
                        for (o, &x) in out[start..].iter_mut().zip(r) {
                            *o = o.max(x);
                        }
                    }
                }
                PoolingMode::Mean | PoolingMode::MeanSqrtLen => {
                    out.resize(start + hidden, 0.0);
                    for (_, r) in rows() {
                        for (o, &x) in out[start..].iter_mut().zip(r) {
                            *o += x;
                        }
                    }
                    let denom = if *mode == PoolingMode::Mean {
                        (counted as f32).max(1e-9)
                    } else {
                        (counted as f32).max(1e-9).sqrt()
                    };
                    out[start..].iter_mut().for_each(|o| *o /= denom);
                }
                PoolingMode::WeightedMean => {
                    out.resize(start + hidden, 0.0);
                    let mut total = 0.0f32;
                    for (i, r) in rows() {
                        let w = (i + 1) as f32;
                        total += w;
                        for (o, &x) in out[start..].iter_mut().zip(r) {
                            *o += w * x;
                        }
                    }
                    let denom = total.max(1e-9);
                    out[start..].iter_mut().for_each(|o| *o /= denom);
                }
                PoolingMode::LastToken => {
                    if n > skip {
                        out.extend_from_slice(&tokens[(n - 1) * hidden..n * hidden]);
                    } else {
                        out.resize(start + hidden, 0.0);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(mode: PoolingMode, tokens: &[f32], skip: usize) -> Vec<f32> {
        let mut out = Vec::new();
        PoolingConfig::single(mode).pool(tokens, 2, skip, &mut out);
        out
    }

    #[test]
    fn every_mode_on_a_known_sequence() {
        let t = [1.0, 4.0, 3.0, 2.0, 5.0, 0.0];
        assert_eq!(pool(PoolingMode::Cls, &t, 0), vec![1.0, 4.0]);
        assert_eq!(pool(PoolingMode::Max, &t, 0), vec![5.0, 4.0]);
        assert_eq!(pool(PoolingMode::Mean, &t, 0), vec![3.0, 2.0]);
        let s = 3f32.sqrt();
        assert_eq!(
            pool(PoolingMode::MeanSqrtLen, &t, 0),
            vec![9.0 / s, 6.0 / s]
        );
        // weights 1, 2, 3
        assert_eq!(
            pool(PoolingMode::WeightedMean, &t, 0),
            vec![22.0 / 6.0, 8.0 / 6.0]
        );
        assert_eq!(pool(PoolingMode::LastToken, &t, 0), vec![5.0, 0.0]);
        assert_eq!(pool(PoolingMode::Mean, &t, 1), vec![4.0, 1.0]);
    }

    #[test]
    fn concatenated_modes() {
        let cfg = PoolingConfig {
            modes: vec![PoolingMode::Cls, PoolingMode::Mean],
            include_prompt: true,
        };
        let mut out = Vec::new();
        cfg.pool(&[1.0, 3.0], 1, 0, &mut out);
        assert_eq!(out, vec![1.0, 2.0]);
        assert_eq!(cfg.output_dims(384), 768);
    }
}
