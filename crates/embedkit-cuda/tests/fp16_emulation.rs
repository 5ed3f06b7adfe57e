//! A CPU emulation of the CUDA backend's numerics, run on the golden texts of sentence-transformers
//! (tests/fixtures/golden, made by tools/make_golden.py with the original f32 weights on the CPU): it predicts
//! the cosine the GPU's f16 path will reach, and the f32 path fed the f16-rounded weights that
//! `scripts/gpu-check` carries to the GPU machine.
//!
//! What it emulates, point by point (each `round` below is a value the GPU stores in its storage type):
//! weights and embedding tables stored in f16; embeddings summed in f32, LayerNorm statistics f32, output
//! stored; every GEMM accumulates in f32, adds its (stored) bias in f32 and stores (cuBLASLt's epilogue);
//! exact GELU in f32 on the stored value, stored; attention reads stored Q/K/V, keeps scores, softmax and the
//! weighted sum in f32 and stores the context; residual + LayerNorm adds two stored values in f32; pooling
//! sums stored values in f32. What it does not emulate: the order of f32 additions inside cuBLASLt and the
//! kernels (a difference far below f16's rounding), or any GPU bug — only a run on a GPU shows those.

use embedkit_model::{EncoderConfig, EncoderWeights, SafetensorsFiles};
use std::path::PathBuf;

/// Where values are stored between operations.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Storage {
    F32,
    F16,
    Bf16,
}

fn round(s: Storage, x: f32) -> f32 {
    match s {
        Storage::F32 => x,
        Storage::F16 => half::f16::from_f32(x).to_f32(),
        Storage::Bf16 => half::bf16::from_f32(x).to_f32(),
    }
}

fn rounded(s: Storage, v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| round(s, x)).collect()
}

struct Lin {
    w: Vec<f32>,
    b: Vec<f32>,
    n: usize,
    k: usize,
}

impl Lin {
    fn new(l: &embedkit_model::Linear, s: Storage) -> Self {
        let (n, k) = (l.weight.shape[0], l.weight.shape[1]);
        Self {
            w: rounded(s, &l.weight.data),
            b: l.bias
                .as_ref()
                .map_or(vec![0.0; n], |b| rounded(s, &b.data)),
            n,
            k,
        }
    }

    /// `round(x·Wᵀ + b)`, the product accumulated in f32.
    fn forward(&self, x: &[f32], t: usize, out: Storage) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        let mut y = vec![0.0f32; t * n];
        // SAFETY: y is t×n (row stride n), x t×k (row stride k), Wᵀ read from W (n×k) with strides (k, 1).
        unsafe {
            gemm::gemm(
                t,
                n,
                k,
                y.as_mut_ptr(),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                self.w.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for row in y.chunks_mut(n) {
            for (v, b) in row.iter_mut().zip(&self.b) {
                *v = round(out, *v + b);
            }
        }
        y
    }
}

/// LayerNorm of each row with f32 statistics (two passes), stored.
fn layer_norm(x: &mut [f32], h: usize, g: &[f32], b: &[f32], eps: f32, s: Storage) {
    for row in x.chunks_mut(h) {
        let mean = row.iter().sum::<f32>() / h as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(g).zip(b) {
            *v = round(s, (*v - mean) * rstd * g + b);
        }
    }
}

/// erf for the exact GELU (Rust's std has no stable erf): the Maclaurin series in f64, which converges for
/// every |x| < 4 with cancellation well below f32's precision there; beyond, erf is ±1 in f32.
fn erf(x: f32) -> f32 {
    let x = x as f64;
    // erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1)).
    if x.abs() >= 4.0 {
        return x.signum() as f32;
    }
    let mut sum = 0.0f64;
    let mut term = x;
    let mut n = 0.0f64;
    while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 3.0 {
        sum += term / (2.0 * n + 1.0);
        n += 1.0;
        term *= -x * x / n;
        if n > 200.0 {
            break;
        }
    }
    (sum * 2.0 / std::f64::consts::PI.sqrt()) as f32
}

struct Emulated {
    cfg: EncoderConfig,
    s: Storage,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Option<Vec<f32>>,
    weights: EncoderWeights,
    layers: Vec<[Lin; 4]>,
}

impl Emulated {
    /// `weights_in`: how the weights reach the device; `s`: how activations are stored there.
    fn new(cfg: &EncoderConfig, w: &EncoderWeights, weights_in: Storage, s: Storage) -> Self {
        let layers = w
            .layers
            .iter()
            .map(|l| {
                let mut qkv = embedkit_model::Linear {
                    weight: l.query.weight.clone(),
                    bias: l.query.bias.clone(),
                };
                for part in [&l.key, &l.value] {
                    qkv.weight.data.extend_from_slice(&part.weight.data);
                    qkv.weight.shape[0] += part.weight.shape[0];
                    if let (Some(b), Some(pb)) = (&mut qkv.bias, &part.bias) {
                        b.data.extend_from_slice(&pb.data);
                    }
                }
                [
                    Lin::new(&qkv, weights_in),
                    Lin::new(&l.attention_output, weights_in),
                    Lin::new(&l.intermediate, weights_in),
                    Lin::new(&l.output, weights_in),
                ]
            })
            .collect();
        Self {
            cfg: cfg.clone(),
            s,
            word: rounded(weights_in, &w.word_embeddings.data),
            position: rounded(weights_in, &w.position_embeddings.data),
            token_type: w
                .token_type_embeddings
                .as_ref()
                .map(|t| rounded(weights_in, &t.data)),
            weights: w.clone(),
            layers,
        }
    }

    /// The mean-pooled vector of one sequence (every token type 0, as the golden texts are).
    fn embed(&self, ids: &[u32]) -> Vec<f32> {
        let (cfg, s) = (&self.cfg, self.s);
        let (h, t) = (cfg.hidden_size, ids.len());
        let mut x = vec![0.0f32; t * h];
        for (i, &id) in ids.iter().enumerate() {
            let p = i + cfg.position_offset;
            for c in 0..h {
                let mut v = self.word[id as usize * h + c] + self.position[p * h + c];
                if let Some(tt) = &self.token_type {
                    v += tt[c];
                }
                x[i * h + c] = v;
            }
        }
        let en = &self.weights.embedding_norm;
        layer_norm(
            &mut x,
            h,
            &en.weight.data,
            &en.bias.data,
            cfg.layer_norm_eps,
            s,
        );
        let (heads, d) = (cfg.num_heads, cfg.head_dim());
        let scale = 1.0 / (d as f32).sqrt();
        let rel = match (
            &self.weights.relative_attention_bias,
            cfg.relative_attention_num_buckets,
        ) {
            (Some(table), Some(b)) => Some(embedkit_cuda::plan::relative_bias_table(
                &table.data,
                b,
                heads,
                t,
            )),
            _ => None,
        };
        let span = (2 * t).saturating_sub(1);
        for (layer, [qkv_l, o_l, i_l, out_l]) in self.weights.layers.iter().zip(&self.layers) {
            let qkv = qkv_l.forward(&x, t, s);
            let mut ctx = vec![0.0f32; t * h];
            for head in 0..heads {
                for qi in 0..t {
                    let q: Vec<f32> = (0..d)
                        .map(|e| qkv[qi * 3 * h + head * d + e] * scale)
                        .collect();
                    let mut scores: Vec<f32> = (0..t)
                        .map(|kj| {
                            let k = &qkv[kj * 3 * h + h + head * d..][..d];
                            let mut dot: f32 = q.iter().zip(k).map(|(a, b)| a * b).sum();
                            if let Some(r) = &rel {
                                dot += r[head * span + kj + t - 1 - qi];
                            }
                            dot
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let mut l = 0.0;
                    for sc in scores.iter_mut() {
                        *sc = (*sc - m).exp();
                        l += *sc;
                    }
                    for e in 0..d {
                        let acc: f32 = (0..t)
                            .map(|kj| scores[kj] * qkv[kj * 3 * h + 2 * h + head * d + e])
                            .sum();
                        ctx[qi * h + head * d + e] = round(s, acc / l);
                    }
                }
            }
            let mut y = o_l.forward(&ctx, t, s);
            for (v, r) in y.iter_mut().zip(&x) {
                *v += r;
            }
            let an = &layer.attention_norm;
            layer_norm(
                &mut y,
                h,
                &an.weight.data,
                &an.bias.data,
                cfg.layer_norm_eps,
                s,
            );
            let mut ff = i_l.forward(&y, t, s);
            for v in ff.iter_mut() {
                *v = round(
                    s,
                    0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2)),
                );
            }
            let mut out = out_l.forward(&ff, t, s);
            for (v, r) in out.iter_mut().zip(&y) {
                *v += r;
            }
            let on = &layer.output_norm;
            layer_norm(
                &mut out,
                h,
                &on.weight.data,
                &on.bias.data,
                cfg.layer_norm_eps,
                s,
            );
            x = out;
        }
        (0..h)
            .map(|c| (0..t).map(|i| x[i * h + c]).sum::<f32>() / t as f32)
            .collect()
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn model_dir(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("EMBEDKIT_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/embedkit")))?;
    let dir = home.join("models").join(name);
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {} is missing: scripts/test fetches the catalog models first",
        dir.display()
    );
    eprintln!(
        "skipped: {} not fetched (embedkit models fetch {name})",
        dir.display()
    );
    None
}

/// The smallest cosine over `texts` golden texts between the emulation and sentence-transformers.
fn worst_cosine(name: &str, texts: usize, weights_in: Storage, s: Storage) -> Option<f64> {
    let dir = model_dir(name)?;
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../../tests/fixtures/golden/{name}.json")),
        )
        .expect("golden fixture"),
    )
    .expect("golden JSON");
    let cfg = EncoderConfig::from_file(&dir.join("config.json")).expect("config");
    let files = SafetensorsFiles::open_dir(&dir).expect("weights");
    let weights = EncoderWeights::load(&files, &cfg).expect("weights");
    let emu = Emulated::new(&cfg, &weights, weights_in, s);
    let ids = golden["token_ids"].as_array().unwrap();
    let want = golden["embeddings"].as_array().unwrap();
    let mut worst = 1.0f64;
    for (i, (ids, want)) in ids.iter().zip(want).take(texts).enumerate() {
        let ids: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let want: Vec<f32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let c = cosine(&emu.embed(&ids), &want);
        assert!(c.is_finite(), "{name} text {i}: cosine {c}");
        worst = worst.min(c);
    }
    eprintln!(
        "{name}: weights {weights_in:?}, activations {s:?}: worst cosine to sentence-transformers {worst:.7} \
         (1 - cosine = {:.1e}) over {texts} texts",
        1.0 - worst
    );
    Some(worst)
}

/// The reference forward itself is right: in f32 it reproduces sentence-transformers (so the rounding
/// below, not a bug of the emulation, is what moves the cosine).
#[test]
fn minilm_f32_reference_reproduces_sentence_transformers() {
    if let Some(c) = worst_cosine("all-MiniLM-L6-v2", 40, Storage::F32, Storage::F32) {
        assert!(c >= 0.99999, "{c}");
    }
}

/// The GPU's f16 path: the issue asks ≥ 0.999.
#[test]
fn minilm_f16_predicted_cosine() {
    if let Some(c) = worst_cosine("all-MiniLM-L6-v2", 40, Storage::F16, Storage::F16) {
        assert!(c >= 0.999, "predicted f16 cosine {c}");
    }
}

/// `scripts/gpu-check` carries the weights in f16 (the 64 MiB limit): its f32 run then sees f16-rounded
/// weights with f32 arithmetic. The check asks ≥ 0.9999 of it; this predicts whether that holds.
#[test]
fn minilm_f32_with_carried_f16_weights_predicted_cosine() {
    if let Some(c) = worst_cosine("all-MiniLM-L6-v2", 40, Storage::F16, Storage::F32) {
        assert!(c >= 0.9999, "predicted f32-on-f16-weights cosine {c}");
    }
}

/// bf16 has 8 bits of mantissa against f16's 11: reported, with a looser bound.
#[test]
fn minilm_bf16_predicted_cosine() {
    if let Some(c) = worst_cosine("all-MiniLM-L6-v2", 40, Storage::Bf16, Storage::Bf16) {
        assert!(c >= 0.99, "predicted bf16 cosine {c}");
    }
}

/// MPNet (12 layers × 768, relative position bias): a quarter of the golden texts, to keep the test short.
#[test]
fn mpnet_f16_predicted_cosine() {
    if let Some(c) = worst_cosine("all-mpnet-base-v2", 10, Storage::F16, Storage::F16) {
        assert!(c >= 0.999, "predicted f16 cosine {c}");
    }
}
