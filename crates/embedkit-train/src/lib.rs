//! Fine-tuning sentence-transformers models on candle's autograd: pair and triplet data files,
//! CosineSimilarityLoss, MultipleNegativesRankingLoss and MatryoshkaLoss, AdamW with linear warmup and decay,
//! dev evaluation, checkpoints with resume, and the trained model written back as a sentence-transformers
//! folder that embedkit and sentence-transformers both load.
//!
//! The differentiable BERT lives here (`model`), not in a separate `embedkit-candle` crate: training is today
//! its only user, and the forward pass is shaped by what autograd needs (padded batches, every op
//! differentiable, dropout). When a candle GPU inference path is built, `model` is the piece to move out.

mod alloc;
mod data;
mod error;
mod eval;
pub mod fused;
mod loss;
mod model;
mod optim;
mod rng;
mod save;
mod trainer;

pub use data::{DataKind, Dataset, Example, read_dataset};
pub use error::TrainError;
pub use eval::{pearson, spearman};
pub use loss::{Loss, LossKind, cosine_rows, normalize};
pub use model::{Batch, Bert, Dropout, Params, pool, to_vec};
pub use optim::{AdamW, AdamWConfig, decays, linear_schedule};
pub use rng::SplitMix64;
pub use save::{check_layout, write_model};
pub use trainer::{EvalResult, TrainConfig, TrainReport, Trainee, train};
