//! The training losses, as sentence-transformers defines them.

use crate::TrainError;
use candle_core::{D, Device, Tensor};

/// Which loss to train with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// `CosineSimilarityLoss`: mean squared error between cos(text1, text2) and the label.
    Cosine,
    /// `MultipleNegativesRankingLoss`: cross-entropy of the anchor against its positive among all positives
    /// (and negatives) in the batch, on cosine similarities times `scale`.
    Mnrl,
}

/// A loss and its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Loss {
    /// The base loss.
    pub kind: LossKind,
    /// MNRL's logit scale (sentence-transformers' default 20).
    pub scale: f64,
    /// MatryoshkaLoss: the base loss summed over the embeddings truncated to each of these widths (weights
    /// 1); empty for the plain loss.
    pub matryoshka_dims: Vec<usize>,
}

impl Loss {
    /// A loss with sentence-transformers' defaults.
    pub fn new(kind: LossKind, matryoshka_dims: Vec<usize>) -> Self {
        Self {
            kind,
            scale: 20.0,
            matryoshka_dims,
        }
    }

    /// The loss of one batch. `columns[c]` is `[batch, dims]`: for `Cosine` (text1, text2) with `labels`, for
    /// `Mnrl` (anchor, positive, negatives…).
    pub fn compute(
        &self,
        columns: &[Tensor],
        labels: Option<&Tensor>,
    ) -> Result<Tensor, TrainError> {
        if self.matryoshka_dims.is_empty() {
            return self.base(columns, labels);
        }
        let width = columns[0].dim(1)?;
        let mut total: Option<Tensor> = None;
        for &d in &self.matryoshka_dims {
            if d == 0 || d > width {
                return Err(TrainError::Config(format!(
                    "Matryoshka dimension {d} is outside 1..={width}"
                )));
            }
            let cut: Vec<Tensor> = columns
                .iter()
                .map(|c| c.narrow(1, 0, d))
                .collect::<candle_core::Result<_>>()?;
            let l = self.base(&cut, labels)?;
            total = Some(match total {
                None => l,
                Some(t) => (t + l)?,
            });
        }
        total.ok_or_else(|| TrainError::Config("no Matryoshka dimensions".into()))
    }

    fn base(&self, columns: &[Tensor], labels: Option<&Tensor>) -> Result<Tensor, TrainError> {
        match self.kind {
            LossKind::Cosine => {
                let labels = labels.ok_or_else(|| {
                    TrainError::Config("CosineSimilarityLoss needs a label per pair".into())
                })?;
                if columns.len() != 2 {
                    return Err(TrainError::Config(
                        "CosineSimilarityLoss needs exactly two texts per example".into(),
                    ));
                }
                let cos = cosine_rows(&columns[0], &columns[1])?;
                Ok((cos - labels)?.sqr()?.mean_all()?)
            }
            LossKind::Mnrl => {
                if columns.len() < 2 {
                    return Err(TrainError::Config(
                        "MultipleNegativesRankingLoss needs an anchor and a positive".into(),
                    ));
                }
                let b = columns[0].dim(0)?;
                let anchors = normalize(&columns[0])?;
                let docs = normalize(&Tensor::cat(&columns[1..], 0)?)?;
                let scores = (anchors.matmul(&docs.t()?)? * self.scale)?; // [b, b·(n-1)]
                let max = scores.max_keepdim(D::Minus1)?.detach();
                let lse = (scores
                    .broadcast_sub(&max)?
                    .exp()?
                    .sum_keepdim(D::Minus1)?
                    .log()?
                    + max)?
                    .squeeze(1)?;
                let eye = Tensor::eye(b, scores.dtype(), scores.device())?;
                let positive = scores.narrow(1, 0, b)?.mul(&eye)?.sum(1)?;
                Ok((lse - positive)?.mean_all()?)
            }
        }
    }
}

/// Rows scaled to unit L2 norm (torch's `F.normalize`, eps 1e-12).
pub fn normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
    x.broadcast_div(&norm)
}

/// Cosine similarity of matching rows (torch's `cosine_similarity`, eps 1e-8 on each norm).
pub fn cosine_rows(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let na = a.sqr()?.sum(1)?.sqrt()?.clamp(1e-8f32, f32::MAX)?;
    let nb = b.sqr()?.sum(1)?.sqrt()?.clamp(1e-8f32, f32::MAX)?;
    (a * b)?.sum(1)? / (na * nb)?
}

/// Labels as a `[batch]` tensor.
pub fn labels_tensor(labels: &[f32], device: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_slice(labels, labels.len(), device)
}
