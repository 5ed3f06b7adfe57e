//! The training loop: data order, dropout, AdamW steps, dev evaluation, checkpoints, resume and interruption.

use crate::TrainError;
use crate::data::{DataKind, Dataset, read_dataset};
use crate::eval::spearman;
use crate::loss::{Loss, LossKind, cosine_rows, labels_tensor};
use crate::model::{Batch, Bert, Dropout, Params, pool, to_vec};
use crate::optim::{AdamW, AdamWConfig, linear_schedule};
use crate::rng::SplitMix64;
use crate::save::{
    RawTensor, check_layout, commit_dir, read_safetensors_raw, temp_dir_for, write_model,
    write_safetensors,
};
use candle_core::{Device, Tensor};
use embedkit_model::{EncoderConfig, SentenceTransformerLayout, TextTokenizer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Everything a training run needs.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// The model folder to start from (sentence-transformers layout).
    pub model_dir: PathBuf,
    /// Training data.
    pub train_path: PathBuf,
    /// Dev data evaluated before training and after each epoch.
    pub eval_path: Option<PathBuf>,
    /// The loss.
    pub loss: Loss,
    /// Passes over the training data.
    pub epochs: usize,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Optimizer settings.
    pub adamw: AdamWConfig,
    /// Warmup steps; `None` = 10% of all steps.
    pub warmup_steps: Option<usize>,
    /// Gradient clipping (total L2 norm); `None` = off.
    pub max_grad_norm: Option<f64>,
    /// Seeds data order and dropout.
    pub seed: u64,
    /// Token limit per text; `None` = the model's.
    pub max_seq_length: Option<usize>,
    /// The output folder.
    pub output: PathBuf,
    /// Where checkpoints go; `None` = `<output>.checkpoints`.
    pub checkpoint_dir: Option<PathBuf>,
    /// Save a checkpoint every N steps (0 = only on interruption).
    pub checkpoint_every: usize,
    /// Continue from the newest checkpoint in the checkpoint folder.
    pub resume: bool,
    /// Stop after this many optimizer steps in this run (for benchmarks and tests).
    pub max_steps: Option<usize>,
    /// Worker threads for the tensor ops; `None` = all cores.
    pub threads: Option<usize>,
    /// No progress bar.
    pub quiet: bool,
}

impl TrainConfig {
    /// The checkpoint folder in use.
    pub fn checkpoints(&self) -> PathBuf {
        self.checkpoint_dir.clone().unwrap_or_else(|| {
            let mut s = self.output.clone().into_os_string();
            s.push(".checkpoints");
            PathBuf::from(s)
        })
    }
}

/// A dev-set score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalResult {
    /// Epochs completed when it was measured (0 = before training).
    pub epoch: usize,
    /// `spearman_cosine` for pairs, `triplet_accuracy` or `mnrl_loss` for MNRL data.
    pub metric: String,
    /// The value.
    pub value: f64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// Optimizer steps completed (over all runs when resumed).
    pub steps: usize,
    /// Steps the whole schedule has.
    pub total_steps: usize,
    /// Loss of the last step.
    pub last_loss: f64,
    /// Mean loss over this run's steps.
    pub mean_loss: f64,
    /// Dev scores.
    pub evals: Vec<EvalResult>,
    /// Training examples per second in this run (forward + backward + update).
    pub examples_per_sec: f64,
    /// Stopped by Ctrl-C or `max_steps` before the schedule ended.
    pub interrupted: bool,
    /// The model folder written (when training finished).
    pub output: Option<PathBuf>,
    /// The newest checkpoint written.
    pub checkpoint: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct CheckpointState {
    step: usize,
    rng: u64,
    seed: u64,
    batch_size: usize,
    epochs: usize,
    examples: usize,
    loss: String,
}

type Tokens = (Vec<u32>, Vec<u32>);

/// The model, tokenizer and folder layout being trained.
pub struct Trainee {
    /// The encoder.
    pub bert: Bert,
    /// Its parameters.
    pub params: Params,
    /// The source folder's layout.
    pub layout: SentenceTransformerLayout,
    /// The encoder config.
    pub config: EncoderConfig,
    /// Tokenizer, truncating at the training token limit.
    pub tokenizer: TextTokenizer,
    /// Mean pooling (true) or CLS (false).
    pub mean_pooling: bool,
    /// The token limit.
    pub max_seq_length: usize,
}

impl Trainee {
    /// Loads a sentence-transformers folder for training.
    pub fn load(dir: &Path, max_seq_length: Option<usize>) -> Result<Self, TrainError> {
        let layout = SentenceTransformerLayout::read(dir)?;
        let mean_pooling = check_layout(&layout, dir)?;
        let tdir = layout.transformer_dir.clone();
        let config = EncoderConfig::from_file(&tdir.join("config.json"))?;
        let limit = max_seq_length
            .or(layout.max_seq_length)
            .or_else(|| TextTokenizer::configured_max_length(&tdir))
            .unwrap_or(usize::MAX)
            .min(config.max_tokens());
        let tokenizer = TextTokenizer::load(&tdir, layout.do_lower_case, limit)?;
        let (bert, params) = Bert::load(&tdir, &config, &Device::Cpu)?;
        Ok(Self {
            bert,
            params,
            layout,
            config,
            max_seq_length: tokenizer.max_length(),
            tokenizer,
            mean_pooling,
        })
    }

    /// Token ids of texts.
    pub fn tokenize(&self, texts: &[String]) -> Result<Vec<Tokens>, TrainError> {
        let enc = self
            .tokenizer
            .encode_batch(texts, None)
            .map_err(|(i, m)| TrainError::Tokenizer(format!("text {}: {m}", i + 1)))?;
        Ok(enc.into_iter().map(|e| (e.ids, e.type_ids)).collect())
    }

    /// Sentence embeddings `[n, hidden]` (before any Normalize module) of tokenized texts.
    pub fn embed(
        &self,
        seqs: &[Tokens],
        dropout: Option<&mut Dropout<'_>>,
    ) -> Result<Tensor, TrainError> {
        let batch = Batch::new(seqs, &Device::Cpu)?;
        let hidden = self.bert.forward(&batch, dropout)?;
        pool(&hidden, &batch.mask, self.mean_pooling)
    }

    /// The loss of examples (one token list per column).
    pub fn loss(
        &self,
        loss: &Loss,
        columns: &[Vec<Tokens>],
        labels: Option<&[f32]>,
        mut dropout: Option<&mut Dropout<'_>>,
    ) -> Result<Tensor, TrainError> {
        let mut embs = Vec::with_capacity(columns.len());
        for col in columns {
            embs.push(self.embed(col, dropout.as_deref_mut())?);
        }
        let labels = match labels {
            Some(l) => Some(labels_tensor(l, &Device::Cpu)?),
            None => None,
        };
        loss.compute(&embs, labels.as_ref())
    }

    /// Writes the model in the sentence-transformers layout.
    pub fn save(&self, out: &Path) -> Result<(), TrainError> {
        write_model(
            &self.layout,
            self.max_seq_length,
            self.config.hidden_size,
            &self.params,
            out,
        )
    }
}

struct Tokenized {
    /// `columns[c][example]`.
    columns: Vec<Vec<Tokens>>,
    labels: Option<Vec<f32>>,
}

fn tokenize_dataset(t: &Trainee, data: &Dataset) -> Result<Tokenized, TrainError> {
    let mut columns = Vec::new();
    for c in 0..data.columns() {
        let texts: Vec<String> = data.examples.iter().map(|e| e.texts[c].clone()).collect();
        columns.push(t.tokenize(&texts)?);
    }
    let labels = match data.kind {
        DataKind::Pairs => Some(
            data.examples
                .iter()
                .map(|e| e.label.unwrap_or(0.0))
                .collect(),
        ),
        DataKind::Triplets => None,
    };
    Ok(Tokenized { columns, labels })
}

fn gather(tok: &Tokenized, idx: &[usize]) -> (Vec<Vec<Tokens>>, Option<Vec<f32>>) {
    let cols = tok
        .columns
        .iter()
        .map(|c| idx.iter().map(|&i| c[i].clone()).collect())
        .collect();
    let labels = tok
        .labels
        .as_ref()
        .map(|l| idx.iter().map(|&i| l[i]).collect());
    (cols, labels)
}

/// The dev metric: Spearman of cosine for pairs, accuracy for triplets, mean MNRL loss for (anchor, positive).
fn evaluate(
    t: &Trainee,
    loss: &Loss,
    dev: &Tokenized,
    epoch: usize,
) -> Result<EvalResult, TrainError> {
    const CHUNK: usize = 32;
    let n = dev.columns[0].len();
    let mut embs: Vec<Vec<Tensor>> = vec![Vec::new(); dev.columns.len()];
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        for (c, col) in dev.columns.iter().enumerate() {
            embs[c].push(t.embed(&col[start..end], None)?.detach());
        }
    }
    let cat = |c: usize| Tensor::cat(&embs[c], 0);
    let (metric, value) = if let Some(labels) = &dev.labels {
        let cos = to_vec(&cosine_rows(&cat(0)?, &cat(1)?)?)?;
        let cos: Vec<f64> = cos.into_iter().map(f64::from).collect();
        let gold: Vec<f64> = labels.iter().map(|&l| f64::from(l)).collect();
        ("spearman_cosine", spearman(&cos, &gold))
    } else if dev.columns.len() >= 3 {
        let pos = to_vec(&cosine_rows(&cat(0)?, &cat(1)?)?)?;
        let neg = to_vec(&cosine_rows(&cat(0)?, &cat(2)?)?)?;
        let right = pos.iter().zip(&neg).filter(|(p, n)| p > n).count();
        ("triplet_accuracy", right as f64 / n as f64)
    } else {
        let l = Loss {
            matryoshka_dims: Vec::new(),
            ..loss.clone()
        };
        let v = to_vec(&l.compute(&[cat(0)?, cat(1)?], None)?)?;
        ("mnrl_loss", f64::from(v[0]))
    };
    Ok(EvalResult {
        epoch,
        metric: metric.into(),
        value,
    })
}

fn save_checkpoint(
    dir: &Path,
    t: &Trainee,
    opt: &AdamW,
    state: &CheckpointState,
) -> Result<PathBuf, TrainError> {
    let target = dir.join(format!("checkpoint-{:08}", state.step));
    let tmp = temp_dir_for(&target)?;
    let mut params = BTreeMap::new();
    let mut moments = BTreeMap::new();
    for (i, (name, var)) in t.params.names().iter().zip(t.params.vars()).enumerate() {
        let shape = var.dims().to_vec();
        params.insert(
            name.clone(),
            RawTensor::f32(shape.clone(), &to_vec(var.as_tensor())?),
        );
        moments.insert(
            format!("m.{name}"),
            RawTensor::f32(shape.clone(), &opt.m[i]),
        );
        moments.insert(format!("v.{name}"), RawTensor::f32(shape, &opt.v[i]));
    }
    write_safetensors(&tmp.join("params.safetensors"), &params)?;
    write_safetensors(&tmp.join("optimizer.safetensors"), &moments)?;
    let json = serde_json::to_string_pretty(state).unwrap_or_default();
    std::fs::write(tmp.join("state.json"), json).map_err(|e| TrainError::io(&tmp, e))?;
    commit_dir(&tmp, &target)?;
    // Keep the two newest: the one just written and its predecessor.
    let mut all = list_checkpoints(dir)?;
    all.sort();
    while all.len() > 2 {
        let old = all.remove(0);
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(target)
}

fn list_checkpoints(dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))? {
        let entry = entry.map_err(|e| TrainError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("checkpoint-") && entry.path().join("state.json").is_file() {
            out.push(entry.path());
        }
    }
    Ok(out)
}

fn load_checkpoint(
    path: &Path,
    t: &Trainee,
    opt: &mut AdamW,
) -> Result<CheckpointState, TrainError> {
    let bad = |message: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let state_path = path.join("state.json");
    let text = std::fs::read(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let state: CheckpointState =
        serde_json::from_slice(&text).map_err(|e| bad(format!("state.json: {e}")))?;
    let params = read_safetensors_raw(&path.join("params.safetensors"))?;
    let moments = read_safetensors_raw(&path.join("optimizer.safetensors"))?;
    let floats = |r: &RawTensor| -> Vec<f32> {
        r.data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    for (i, (name, var)) in t.params.names().iter().zip(t.params.vars()).enumerate() {
        let get = |key: &str| {
            moments
                .get(key)
                .or_else(|| params.get(key))
                .filter(|r| r.shape == var.dims() && r.dtype == safetensors::Dtype::F32)
                .ok_or_else(|| bad(format!("no f32 tensor '{key}' of shape {:?}", var.dims())))
        };
        let p = params
            .get(name)
            .filter(|r| r.shape == var.dims())
            .ok_or_else(|| bad(format!("no parameter '{name}' of shape {:?}", var.dims())))?;
        var.set(&Tensor::from_vec(floats(p), var.shape(), var.device())?)?;
        opt.m[i] = floats(get(&format!("m.{name}"))?);
        opt.v[i] = floats(get(&format!("v.{name}"))?);
    }
    opt.step = state.step;
    Ok(state)
}

/// Runs training to the end of the schedule (or until `stop` is set or `max_steps` is reached, which save a
/// checkpoint), writing the output folder when the schedule completes.
pub fn train(cfg: &TrainConfig, stop: Arc<AtomicBool>) -> Result<TrainReport, TrainError> {
    crate::alloc::keep_freed_memory();
    match cfg.threads {
        Some(0) => Err(TrainError::Config("--threads must be at least 1".into())),
        // The fused ops and candle's matmul (gemm) run on the current rayon pool; candle's own element-wise ops
        // use a separate pool sized by CANDLE_NUM_THREADS / RAYON_NUM_THREADS / the core count.
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| TrainError::Config(format!("cannot start {n} threads: {e}")))?
            .install(|| train_in_pool(cfg, stop)),
        None => train_in_pool(cfg, stop),
    }
}

fn train_in_pool(cfg: &TrainConfig, stop: Arc<AtomicBool>) -> Result<TrainReport, TrainError> {
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(TrainError::Config(
            "--epochs and --batch-size must be at least 1".into(),
        ));
    }
    if cfg.loss.kind == LossKind::Mnrl && cfg.batch_size < 2 {
        return Err(TrainError::Config(
            "MultipleNegativesRankingLoss needs --batch-size of at least 2 (in-batch negatives)"
                .into(),
        ));
    }
    let kind = match cfg.loss.kind {
        LossKind::Cosine => DataKind::Pairs,
        LossKind::Mnrl => DataKind::Triplets,
    };
    let train_data = read_dataset(&cfg.train_path, kind)?;
    let dev_data = match &cfg.eval_path {
        Some(p) => Some(read_dataset(p, kind)?),
        None => None,
    };
    let trainee = Trainee::load(&cfg.model_dir, cfg.max_seq_length)?;
    for &d in &cfg.loss.matryoshka_dims {
        if d == 0 || d > trainee.config.hidden_size {
            return Err(TrainError::Config(format!(
                "Matryoshka dimension {d} is outside 1..={}",
                trainee.config.hidden_size
            )));
        }
    }
    let train_tok = tokenize_dataset(&trainee, &train_data)?;
    let dev_tok = match &dev_data {
        Some(d) => Some(tokenize_dataset(&trainee, d)?),
        None => None,
    };
    let n = train_data.examples.len();
    let steps_per_epoch = n.div_ceil(cfg.batch_size);
    let total = steps_per_epoch * cfg.epochs;
    let warmup = cfg.warmup_steps.unwrap_or(total / 10);
    let mut opt = AdamW::new(&trainee.params, cfg.adamw.clone());
    let ckpt_dir = cfg.checkpoints();
    let mut state = CheckpointState {
        step: 0,
        rng: cfg.seed ^ 0xD1B5_4A32_D192_ED03,
        seed: cfg.seed,
        batch_size: cfg.batch_size,
        epochs: cfg.epochs,
        examples: n,
        loss: format!("{:?}", cfg.loss),
    };
    if cfg.resume {
        let mut all = list_checkpoints(&ckpt_dir)?;
        all.sort();
        let latest = all.pop().ok_or_else(|| TrainError::Checkpoint {
            path: ckpt_dir.clone(),
            message: "no checkpoint to resume from".into(),
        })?;
        let saved = load_checkpoint(&latest, &trainee, &mut opt)?;
        let same = |s: &CheckpointState| {
            (s.seed, s.batch_size, s.epochs, s.examples, &s.loss)
                == (
                    state.seed,
                    state.batch_size,
                    state.epochs,
                    state.examples,
                    &state.loss,
                )
        };
        if !same(&saved) {
            return Err(TrainError::Checkpoint {
                path: latest,
                message: "it was made with other data, loss, seed, epochs or batch size".into(),
            });
        }
        state = saved;
    }

    let mut evals = Vec::new();
    if let Some(dev) = &dev_tok
        && state.step == 0
    {
        evals.push(evaluate(&trainee, &cfg.loss, dev, 0)?);
    }

    let bar = if cfg.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} training {bar:30} {pos}/{len} steps, loss {msg} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(state.step as u64);

    let started = Instant::now();
    let (mut examples_seen, mut loss_sum, mut run_steps, mut last_loss) =
        (0usize, 0.0, 0usize, 0.0);
    let mut checkpoint = None;
    let mut interrupted = false;
    let mut rng = SplitMix64::new(state.rng);
    'epochs: for epoch in state.step / steps_per_epoch..cfg.epochs {
        // The order of each epoch depends on the seed and the epoch only, so a resumed run sees the same batches.
        let mut order: Vec<usize> = (0..n).collect();
        SplitMix64::new(
            cfg.seed
                .wrapping_add(epoch as u64)
                .wrapping_mul(0x9E37_79B9),
        )
        .shuffle(&mut order);
        let first = state.step - epoch * steps_per_epoch;
        for b in first..steps_per_epoch {
            if stop.load(Ordering::SeqCst) || cfg.max_steps.is_some_and(|m| run_steps >= m) {
                interrupted = true;
                break 'epochs;
            }
            let idx = &order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(n)];
            let (cols, labels) = gather(&train_tok, idx);
            let mut dropout = Dropout {
                hidden: trainee.bert.hidden_dropout,
                attention: trainee.bert.attention_dropout,
                rng: &mut rng,
            };
            let loss = trainee.loss(&cfg.loss, &cols, labels.as_deref(), Some(&mut dropout))?;
            let grads = loss.backward()?;
            let lr = cfg.adamw.lr * linear_schedule(state.step, warmup, total);
            opt.step(&trainee.params, &grads, lr, cfg.max_grad_norm)?;
            drop(grads);
            last_loss = f64::from(to_vec(&loss)?[0]);
            loss_sum += last_loss;
            run_steps += 1;
            examples_seen += idx.len();
            state.step += 1;
            state.rng = rng.state;
            bar.set_message(format!("{last_loss:.4}"));
            bar.inc(1);
            if cfg.checkpoint_every > 0
                && state.step.is_multiple_of(cfg.checkpoint_every)
                && state.step < total
            {
                checkpoint = Some(save_checkpoint(&ckpt_dir, &trainee, &opt, &state)?);
            }
        }
        if let Some(dev) = &dev_tok {
            let r = evaluate(&trainee, &cfg.loss, dev, epoch + 1)?;
            bar.println(format!(
                "epoch {}: {} = {:.4}",
                epoch + 1,
                r.metric,
                r.value
            ));
            evals.push(r);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let mut output = None;
    if interrupted {
        checkpoint = Some(save_checkpoint(&ckpt_dir, &trainee, &opt, &state)?);
    } else {
        trainee.save(&cfg.output)?;
        output = Some(cfg.output.clone());
    }
    Ok(TrainReport {
        steps: state.step,
        total_steps: total,
        last_loss,
        mean_loss: if run_steps > 0 {
            loss_sum / run_steps as f64
        } else {
            0.0
        },
        evals,
        examples_per_sec: if elapsed > 0.0 {
            examples_seen as f64 / elapsed
        } else {
            0.0
        },
        interrupted,
        output,
        checkpoint,
    })
}
