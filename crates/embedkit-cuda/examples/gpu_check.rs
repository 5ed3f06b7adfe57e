//! The GPU side of `scripts/gpu-check`: one small binary (no CLI, server or Python) so that it and a model fit
//! the 64 MiB a device run may carry.
//!
//! ```text
//! gpu_check golden DIR GOLDEN.json DEVICE MIN_COSINE       vectors of the golden texts vs sentence-transformers'
//! gpu_check speed DIR TEXTS.txt DEVICE BATCH               texts/s end to end, and tokens/s of the model alone
//! ```
//! DEVICE is `cuda`, `cuda+f32`, `cuda:1+bf16`, … Exit status 1 when a check fails.

use embedkit_core::{Embedder, EncodeOptions};
use embedkit_cuda::{CudaBackend, CudaOptions, Device};
use embedkit_model::{EncoderConfig, EncoderWeights, SafetensorsFiles, TokenBatch, plan_batches};
use std::path::{Path, PathBuf};
use std::time::Instant;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("golden") if args.len() == 5 => golden(&args[1], &args[2], &args[3], &args[4]),
        Some("speed") if args.len() == 5 => speed(&args[1], &args[2], &args[3], &args[4]),
        _ => Err("usage: gpu_check golden DIR GOLDEN.json DEVICE MIN_COSINE | speed DIR TEXTS DEVICE BATCH".into()),
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

fn options(device: &str) -> Result<CudaOptions> {
    let device = match device.parse::<Device>()? {
        Device::Cuda(d) => d,
        other => return Err(format!("device {other}: give cuda[:N][+f16|+bf16|+f32]").into()),
    };
    let home = std::env::var_os("EMBEDKIT_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("embedkit-gpu-check"));
    Ok(CudaOptions {
        device,
        workers: 1,
        cache_dir: Some(home.join("cuda")),
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn golden(dir: &str, golden: &str, device: &str, min: &str) -> Result<bool> {
    let min: f64 = min.parse()?;
    let golden: serde_json::Value = serde_json::from_slice(&std::fs::read(golden)?)?;
    let texts: Vec<&str> = golden["texts"]
        .as_array()
        .ok_or("golden: no texts")?
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    let want = golden["embeddings"]
        .as_array()
        .ok_or("golden: no embeddings")?;
    let start = Instant::now();
    let model = embedkit_cuda::load_model(dir, Path::new(dir), &options(device)?)?;
    let load_s = start.elapsed().as_secs_f64();
    // As the golden vectors were made: all texts in one call, batches of 64.
    let opts = EncodeOptions {
        batch_size: Some(64),
        ..Default::default()
    };
    let got = model.embed(&texts, &opts)?;
    let mut worst = (f64::INFINITY, 0);
    let mut sum = 0.0;
    for (i, w) in want.iter().enumerate() {
        let w: Vec<f32> = w
            .as_array()
            .ok_or("golden: bad row")?
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN) as f32)
            .collect();
        let c = cosine(got.row(i), &w);
        sum += c;
        // A NaN cosine (a broken vector) must count as the worst.
        if c.is_nan() || c < worst.0 {
            worst = (if c.is_nan() { f64::NEG_INFINITY } else { c }, i);
        }
    }
    let ok = worst.0 >= min;
    println!(
        "golden {} {device}: {} texts, worst cosine {:.7} (text {}), mean {:.7}, required {min}: {} (load {load_s:.2} s)",
        Path::new(dir)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy(),
        texts.len(),
        worst.0,
        worst.1,
        sum / texts.len() as f64,
        if ok { "PASS" } else { "FAIL" }
    );
    Ok(ok)
}

fn speed(dir: &str, texts: &str, device: &str, batch: &str) -> Result<bool> {
    let batch: usize = batch.parse()?;
    let texts: Vec<String> = std::fs::read_to_string(texts)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let opts = options(device)?;
    let model = embedkit_cuda::load_model(dir, Path::new(dir), &opts)?;
    let enc = EncodeOptions {
        batch_size: Some(batch),
        ..Default::default()
    };
    model.embed(&refs, &enc)?; // warm-up: kernels loaded, buffers grown, cuBLASLt heuristics cached
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        model.embed(&refs, &enc)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "speed {device} batch {batch}: end to end (tokenize + forward + pool) {:.0} texts/s over {} texts",
        texts.len() as f64 / best,
        texts.len()
    );

    // The model alone: pre-tokenized batches (as the end-to-end plan cuts them), forward + pooling on the
    // device, only the pooled vectors copied back.
    let encoded = model
        .tokenizer()
        .encode_batch(&texts, None)
        .map_err(|(i, e)| format!("tokenizing text {i}: {e}"))?;
    let cfg = EncoderConfig::from_file(&Path::new(dir).join("config.json"))?;
    let files = SafetensorsFiles::open_dir(Path::new(dir))?;
    let backend = CudaBackend::new(&cfg, EncoderWeights::load(&files, &cfg)?, &opts)?;
    let lengths: Vec<usize> = encoded.iter().map(|e| e.ids.len()).collect();
    let plan = plan_batches(&lengths, batch, None);
    let batches: Vec<(Vec<u32>, Vec<u32>, Vec<usize>)> = plan
        .iter()
        .map(|b| {
            let ids = b
                .iter()
                .flat_map(|&i| encoded[i].ids.iter().copied())
                .collect();
            let types = b
                .iter()
                .flat_map(|&i| encoded[i].type_ids.iter().copied())
                .collect();
            (ids, types, b.iter().map(|&i| lengths[i]).collect())
        })
        .collect();
    let tokens: usize = lengths.iter().sum();
    let run = || -> Result<()> {
        for (ids, types, lens) in &batches {
            let b = TokenBatch {
                input_ids: ids,
                type_ids: types,
                seq_lens: lens,
                key_lens: None,
            };
            backend.forward_pooled(&b, false, true)?;
        }
        Ok(())
    };
    run()?;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        run()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "speed {device} batch {batch}: model alone {:.0} tokens/s ({:.0} texts/s, {tokens} tokens, {} batches) on {}",
        tokens as f64 / best,
        texts.len() as f64 / best,
        batches.len(),
        backend.device_name()
    );
    Ok(true)
}
