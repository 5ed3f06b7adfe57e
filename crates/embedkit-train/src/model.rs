//! A BERT encoder on candle-core's autograd, its element-wise parts as fused ops with hand-written backward.
//!
//! candle-nn's fused `layer_norm` and `softmax_last_dim` have no backward pass (candle-transformers' BERT gets
//! no gradient at all), and spelled out from candle ops each LayerNorm, softmax or GELU is 5–10 allocating
//! passes forward and as many backward. So the matmuls stay candle's and everything between them is one of the
//! custom ops in [`crate::fused`]: bias + split into heads for query/key/value, masked scaled softmax with the
//! attention dropout inside, bias + dropout + residual, LayerNorm, bias + exact (erf) GELU. Each is tested
//! against the candle-op composition it replaces (`tests/fused_ops.rs`) and the whole model against PyTorch
//! (`tests/grad_parity.rs`). Parameters are candle `Var`s keyed by their names in the model's safetensors
//! file, so the trained model is written back under the names it was read with.

use crate::TrainError;
use crate::fused;
use crate::rng::SplitMix64;
use candle_core::{DType, Device, Tensor, Var};
use embedkit_model::{Activation, Architecture, EncoderConfig, SafetensorsFiles};
use std::collections::HashMap;
use std::path::Path;

/// Masked-out attention logits get this added; exp() of it is exactly 0.
const MASK_BIAS: f32 = -1.0e30;

/// Reads one named tensor of a given shape into a new `Var`.
type LoadFn<'a> = dyn FnMut(&str, &[usize]) -> Result<Tensor, TrainError> + 'a;

/// The trainable parameters: one `Var` per tensor, under its name in the model file.
pub struct Params {
    names: Vec<String>,
    vars: Vec<Var>,
    index: HashMap<String, usize>,
}

impl Params {
    /// Parameter names, in a fixed order (the order the model reads them).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The parameters, in the order of [`Params::names`].
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The parameter called `name`, if it is one.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.index.get(name).map(|&i| &self.vars[i])
    }

    /// Number of scalars over all parameters.
    pub fn num_scalars(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    fn push(&mut self, name: String, var: Var) -> Tensor {
        let t = var.as_tensor().clone();
        self.index.insert(name.clone(), self.names.len());
        self.names.push(name);
        self.vars.push(var);
        t
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        fused::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// A dense layer; the forward pass applies the bias inside the fused op that follows the matmul.
struct Linear {
    /// `[out, in]`, PyTorch's layout.
    weight: Tensor,
    bias: Tensor,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// Token ids of a padded batch, as tensors.
pub struct Batch {
    /// `[batch, seq]` u32 token ids (0 past each sequence's end).
    pub ids: Tensor,
    /// `[batch, seq]` u32 token type ids.
    pub type_ids: Tensor,
    /// `[batch, seq]` f32, 1 for real tokens and 0 for padding.
    pub mask: Tensor,
}

impl Batch {
    /// Pads token sequences to the longest one.
    pub fn new(seqs: &[(Vec<u32>, Vec<u32>)], device: &Device) -> Result<Self, TrainError> {
        let b = seqs.len();
        let t = seqs.iter().map(|s| s.0.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; b * t];
        let mut types = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        for (i, (s_ids, s_types)) in seqs.iter().enumerate() {
            ids[i * t..i * t + s_ids.len()].copy_from_slice(s_ids);
            types[i * t..i * t + s_types.len()].copy_from_slice(s_types);
            mask[i * t..i * t + s_ids.len()].fill(1.0);
        }
        Ok(Self {
            ids: Tensor::from_vec(ids, (b, t), device)?,
            type_ids: Tensor::from_vec(types, (b, t), device)?,
            mask: Tensor::from_vec(mask, (b, t), device)?,
        })
    }
}

/// Dropout probabilities and the generator that draws the masks; `None` in [`Bert::forward`] means eval mode.
pub struct Dropout<'a> {
    /// After embeddings, attention output and feed-forward output (`hidden_dropout_prob`).
    pub hidden: f32,
    /// On the attention probabilities (`attention_probs_dropout_prob`).
    pub attention: f32,
    /// Draws the masks.
    pub rng: &'a mut SplitMix64,
}

impl Dropout<'_> {
    fn apply(&mut self, x: &Tensor, p: f32) -> candle_core::Result<Tensor> {
        match self.mask(x.dims(), p)? {
            Some(mask) => x.mul(&mask),
            None => Ok(x.clone()),
        }
    }

    /// A dropout mask of `shape` (0 or 1/(1−p)), `None` when `p` is 0; the fused ops take it as an input.
    fn mask(&mut self, shape: &[usize], p: f32) -> candle_core::Result<Option<Tensor>> {
        if p <= 0.0 {
            return Ok(None);
        }
        let keep = 1.0 / (1.0 - p);
        let mut mask = vec![0f32; shape.iter().product()];
        self.rng.dropout_mask(&mut mask, p, keep);
        Ok(Some(Tensor::from_vec(mask, shape, &Device::Cpu)?))
    }
}

/// The differentiable BERT (also XLM-RoBERTa, which differs only in names and position ids).
pub struct Bert {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Option<Tensor>,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    position_offset: usize,
    max_positions: usize,
    /// `hidden_dropout_prob` from config.json.
    pub hidden_dropout: f32,
    /// `attention_probs_dropout_prob` from config.json.
    pub attention_dropout: f32,
}

fn find_prefix(files: &SafetensorsFiles) -> Option<&'static str> {
    ["", "bert.", "roberta.", "model."]
        .into_iter()
        .find(|p| files.contains(&format!("{p}embeddings.word_embeddings.weight")))
}

impl Bert {
    /// Loads the encoder of a model folder (the transformer module's folder) as trainable `Var`s.
    pub fn load(
        dir: &Path,
        config: &EncoderConfig,
        device: &Device,
    ) -> Result<(Self, Params), TrainError> {
        let unsupported = |reason: String| TrainError::Unsupported {
            dir: dir.to_path_buf(),
            reason,
        };
        if !matches!(
            config.architecture,
            Architecture::Bert | Architecture::XlmRoberta
        ) {
            return Err(unsupported(format!(
                "{} models are not trainable yet (BERT and XLM-RoBERTa are)",
                config.architecture
            )));
        }
        if config.activation != Activation::Gelu {
            return Err(unsupported(
                "only the exact GELU activation (hidden_act \"gelu\") is trainable".into(),
            ));
        }
        let files = SafetensorsFiles::open_dir(dir)?;
        let prefix = find_prefix(&files).ok_or_else(|| {
            unsupported("no embeddings.word_embeddings.weight tensor in the weights".into())
        })?;
        let mut params = Params {
            names: Vec::new(),
            vars: Vec::new(),
            index: HashMap::new(),
        };
        let h = config.hidden_size;
        let mut load = |name: &str, shape: &[usize]| -> Result<Tensor, TrainError> {
            // Old checkpoints name LayerNorm parameters gamma/beta.
            let mut full = format!("{prefix}{name}");
            if !files.contains(&full) {
                let alt = full
                    .replace("LayerNorm.weight", "LayerNorm.gamma")
                    .replace("LayerNorm.bias", "LayerNorm.beta");
                if files.contains(&alt) {
                    full = alt;
                }
            }
            let t = files.get_shaped(&full, shape)?;
            let var = Var::from_vec(t.data, shape, device)?;
            Ok(params.push(full, var))
        };
        let norm = |load: &mut LoadFn<'_>, base: &str| -> Result<LayerNorm, TrainError> {
            Ok(LayerNorm {
                weight: load(&format!("{base}.weight"), &[h])?,
                bias: load(&format!("{base}.bias"), &[h])?,
                eps: config.layer_norm_eps,
            })
        };
        let word_embeddings = load("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position_embeddings = load(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type_embeddings = if config.type_vocab_size > 0 {
            Some(load(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?)
        } else {
            None
        };
        let embedding_norm = norm(&mut load, "embeddings.LayerNorm")?;
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let base = format!("encoder.layer.{i}");
            let linear = |load: &mut LoadFn<'_>,
                          name: &str,
                          out: usize,
                          inp: usize|
             -> Result<Linear, TrainError> {
                Ok(Linear {
                    weight: load(&format!("{base}.{name}.weight"), &[out, inp])?,
                    bias: load(&format!("{base}.{name}.bias"), &[out])?,
                })
            };
            let ff = config.intermediate_size;
            let query = linear(&mut load, "attention.self.query", h, h)?;
            let key = linear(&mut load, "attention.self.key", h, h)?;
            let value = linear(&mut load, "attention.self.value", h, h)?;
            let attention_output = linear(&mut load, "attention.output.dense", h, h)?;
            let attention_norm = norm(&mut load, &format!("{base}.attention.output.LayerNorm"))?;
            let intermediate = linear(&mut load, "intermediate.dense", ff, h)?;
            let output = linear(&mut load, "output.dense", h, ff)?;
            let output_norm = norm(&mut load, &format!("{base}.output.LayerNorm"))?;
            layers.push(Layer {
                query,
                key,
                value,
                attention_output,
                attention_norm,
                intermediate,
                output,
                output_norm,
            });
        }
        let dropouts = read_dropout(dir);
        let bert = Bert {
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            embedding_norm,
            layers,
            heads: config.num_heads,
            head_dim: config.head_dim(),
            hidden: h,
            position_offset: config.position_offset,
            max_positions: config.max_position_embeddings,
            hidden_dropout: dropouts.0,
            attention_dropout: dropouts.1,
        };
        Ok((bert, params))
    }

    /// The last hidden state, `[batch, seq, hidden]`. `dropout: None` is evaluation mode.
    pub fn forward(
        &self,
        batch: &Batch,
        mut dropout: Option<&mut Dropout<'_>>,
    ) -> Result<Tensor, TrainError> {
        let (b, t) = batch.ids.dims2()?;
        if self.position_offset + t > self.max_positions {
            return Err(TrainError::Config(format!(
                "sequences of {t} tokens exceed the model's {} positions",
                self.max_positions - self.position_offset
            )));
        }
        let device = batch.ids.device();
        let h = self.hidden;
        let ids = batch.ids.flatten_all()?;
        let mut x = self.word_embeddings.index_select(&ids, 0)?; // [b*t, h]
        if let Some(tt) = &self.token_type_embeddings {
            x = (x + tt.index_select(&batch.type_ids.flatten_all()?, 0)?)?;
        }
        let pos_ids = Tensor::arange(
            self.position_offset as u32,
            (self.position_offset + t) as u32,
            device,
        )?;
        let pos = self.position_embeddings.index_select(&pos_ids, 0)?; // [t, h]
        let x = x.reshape((b, t, h))?.broadcast_add(&pos)?;
        let mut x = self.embedding_norm.forward(&x)?.reshape((b * t, h))?;
        if let Some(d) = dropout.as_deref_mut() {
            let p = d.hidden;
            x = d.apply(&x, p)?;
        }
        // [b, t]: 0 for real keys, MASK_BIAS for padding.
        let mask_bias = ((batch.mask.ones_like()? - &batch.mask)? * f64::from(MASK_BIAS))?;
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        for layer in &self.layers {
            // Projection without bias, then bias + split into heads in one pass.
            let split = |l: &Linear| -> candle_core::Result<Tensor> {
                fused::bias_split_heads(&x.matmul(&l.weight.t()?)?, &l.bias, b, t, self.heads)
            };
            let q = split(&layer.query)?;
            let k = split(&layer.key)?;
            let v = split(&layer.value)?;
            let attention_drop = match dropout.as_deref_mut() {
                Some(d) => {
                    let p = d.attention;
                    d.mask(&[b, self.heads, t, t], p)?
                }
                None => None,
            };
            let bh = b * self.heads;
            let (d, nh) = (self.head_dim, self.heads);
            let scores =
                fused::batched_matmul(&q.reshape((bh, t, d))?, &k.reshape((bh, t, d))?, true)?
                    .reshape((b, nh, t, t))?;
            let probs = fused::masked_softmax(&scores, &mask_bias, scale, attention_drop.as_ref())?;
            let ctx =
                fused::batched_matmul(&probs.reshape((bh, t, t))?, &v.reshape((bh, t, d))?, false)?
                    .reshape((b, nh, t, d))?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((b * t, h))?;
            let hidden_drop = |dropout: &mut Option<&mut Dropout<'_>>, cols: usize| match dropout
                .as_deref_mut()
            {
                Some(d) => {
                    let p = d.hidden;
                    d.mask(&[b * t, cols], p)
                }
                None => Ok(None),
            };
            // Bias, dropout and the residual in one pass before each LayerNorm.
            let drop = hidden_drop(&mut dropout, h)?;
            let x1 = layer.attention_norm.forward(&fused::bias_dropout_add(
                &ctx.matmul(&layer.attention_output.weight.t()?)?,
                &layer.attention_output.bias,
                drop.as_ref(),
                &x,
            )?)?;
            let inter = fused::bias_gelu(
                &x1.matmul(&layer.intermediate.weight.t()?)?,
                &layer.intermediate.bias,
            )?;
            let drop = hidden_drop(&mut dropout, h)?;
            x = layer.output_norm.forward(&fused::bias_dropout_add(
                &inter.matmul(&layer.output.weight.t()?)?,
                &layer.output.bias,
                drop.as_ref(),
                &x1,
            )?)?;
        }
        Ok(x.reshape((b, t, h))?)
    }
}

/// `(hidden_dropout_prob, attention_probs_dropout_prob)` from config.json; BERT's 0.1 where absent.
fn read_dropout(dir: &Path) -> (f32, f32) {
    let read = || -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).ok()?).ok()
    };
    let v = read().unwrap_or(serde_json::Value::Null);
    let get = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(0.1) as f32;
    (
        get("hidden_dropout_prob"),
        get("attention_probs_dropout_prob"),
    )
}

/// Pools `[batch, seq, hidden]` token states with the attention mask into `[batch, hidden]`.
pub fn pool(hidden: &Tensor, mask: &Tensor, mean: bool) -> Result<Tensor, TrainError> {
    if !mean {
        return Ok(hidden.narrow(1, 0, 1)?.squeeze(1)?);
    }
    let m = mask.unsqueeze(2)?; // [b, t, 1]
    let summed = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = mask.sum_keepdim(1)?.clamp(1e-9f32, f32::MAX)?;
    Ok(summed.broadcast_div(&count)?)
}

/// The f32 values of a tensor, row-major.
pub fn to_vec(t: &Tensor) -> Result<Vec<f32>, TrainError> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}
