//! AdamW, gradient clipping and the learning-rate schedule, set up as `SentenceTransformer.fit` sets them up:
//! `torch.optim.AdamW` (betas 0.9/0.999, eps 1e-8), weight decay on every parameter except biases and
//! LayerNorm weights, `clip_grad_norm_` over all parameters, and transformers' linear warmup then linear decay.

use crate::TrainError;
use crate::model::{Params, to_vec};
use candle_core::Tensor;
use candle_core::backprop::GradStore;

/// Hyper-parameters of AdamW.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay for the parameters that get it.
    pub weight_decay: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 2e-5,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// transformers' `get_linear_schedule_with_warmup`: the learning-rate factor for the optimizer step that
/// follows `step` completed steps.
pub fn linear_schedule(step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    (total.saturating_sub(step)) as f64 / (total.saturating_sub(warmup)).max(1) as f64
}

/// Whether a parameter gets weight decay (sentence-transformers' `no_decay` list: bias, LayerNorm).
pub fn decays(name: &str) -> bool {
    !(name.contains("bias") || name.contains("LayerNorm") || name.contains("layer_norm"))
}

/// AdamW state: the moments of every parameter, as plain vectors so checkpoints can save them.
pub struct AdamW {
    /// Settings.
    pub config: AdamWConfig,
    /// Optimizer steps taken.
    pub step: usize,
    /// First moments, in the order of [`Params::names`].
    pub m: Vec<Vec<f32>>,
    /// Second moments.
    pub v: Vec<Vec<f32>>,
    decay: Vec<bool>,
}

impl AdamW {
    /// Fresh state for `params`.
    pub fn new(params: &Params, config: AdamWConfig) -> Self {
        let m: Vec<Vec<f32>> = params
            .vars()
            .iter()
            .map(|v| vec![0.0; v.elem_count()])
            .collect();
        Self {
            config,
            step: 0,
            v: m.clone(),
            m,
            decay: params.names().iter().map(|n| decays(n)).collect(),
        }
    }

    /// Clips the gradients to `max_norm` (total L2 norm over all parameters, as `clip_grad_norm_`) and
    /// applies one AdamW step with learning rate `lr`. Returns the norm before clipping.
    pub fn step(
        &mut self,
        params: &Params,
        grads: &GradStore,
        lr: f64,
        max_norm: Option<f64>,
    ) -> Result<f64, TrainError> {
        let mut gs: Vec<Option<Vec<f32>>> = Vec::with_capacity(params.vars().len());
        let mut sq = 0.0f64;
        for var in params.vars() {
            let g = match grads.get(var.as_tensor()) {
                Some(g) => Some(to_vec(g)?),
                None => None,
            };
            if let Some(g) = &g {
                sq += g.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>();
            }
            gs.push(g);
        }
        let norm = sq.sqrt();
        let clip = match max_norm {
            Some(max) => (max / (norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        self.step += 1;
        let c = &self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = lr / bc1;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        for (i, var) in params.vars().iter().enumerate() {
            // torch skips parameters without a gradient entirely (no decay, no moment update).
            let Some(g) = &gs[i] else { continue };
            let mut p = to_vec(var.as_tensor())?;
            let wd = if self.decay[i] { c.weight_decay } else { 0.0 };
            let decay = (1.0 - lr * wd) as f32;
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            let clip = clip as f32;
            for j in 0..p.len() {
                let gj = g[j] * clip;
                m[j] = b1 * m[j] + (1.0 - b1) * gj;
                v[j] = b2 * v[j] + (1.0 - b2) * gj * gj;
                let denom = f64::from(v[j]).sqrt() / bc2_sqrt + c.eps;
                p[j] = p[j] * decay - (step_size * f64::from(m[j]) / denom) as f32;
            }
            var.set(&Tensor::from_vec(p, var.shape(), var.device())?)?;
        }
        Ok(norm)
    }
}
