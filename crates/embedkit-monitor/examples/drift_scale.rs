//! The scale check of docs/MONITORING.md: 10,000 reference and 2,000 current vectors of 768 dimensions, every
//! method with the defaults (500 permutations, at most 2,000 vectors a side, 16 clusters), on 2 threads; prints
//! the wall time of each part and the peak resident memory.
//!
//!     cargo run --release -p embedkit-monitor --example drift_scale
//!
//! The vectors are synthetic (seeded): 64 Gaussian topics on the unit sphere, the current sample with a tenth
//! from 8 topics the reference lacks — a realistic amount of structure for the kernel, the k-means and the
//! classifier, at the sizes that set the cost.

use embedkit_core::Embeddings;
use embedkit_monitor::rng::SplitMix64;
use embedkit_monitor::{DriftOptions, Method, detect};
use std::time::Instant;

fn gaussian(rng: &mut SplitMix64) -> f32 {
    // Box–Muller; one value per call is plenty here.
    let (u, v) = (rng.next_f64().max(1e-300), rng.next_f64());
    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
}

fn sample(
    rng: &mut SplitMix64,
    centres: &[Vec<f32>],
    topics: std::ops::Range<usize>,
    n: usize,
) -> Embeddings {
    let d = centres[0].len();
    let mut data = Vec::with_capacity(n * d);
    for _ in 0..n {
        let c = &centres[topics.start + rng.below(topics.len())];
        let mut v: Vec<f32> = c.iter().map(|&x| x + 0.05 * gaussian(rng)).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        data.extend(v);
    }
    Embeddings::new(data, n, d).expect("shape")
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()
        .expect("2 threads");
    let d = 768;
    let mut rng = SplitMix64::new(16);
    let centres: Vec<Vec<f32>> = (0..72)
        .map(|_| {
            let v: Vec<f32> = (0..d).map(|_| gaussian(&mut rng)).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / n).collect()
        })
        .collect();
    let reference = sample(&mut rng, &centres, 0..64, 10_000);
    let mut current = sample(&mut rng, &centres, 0..64, 1_800);
    current
        .append(&sample(&mut rng, &centres, 64..72, 200))
        .expect("same dims");
    println!(
        "reference {} × {d}, current {} × {d}, 2 threads",
        reference.rows(),
        current.rows()
    );
    let mut total = 0.0;
    for m in Method::ALL {
        let opts = DriftOptions {
            methods: vec![m],
            clusters: 0,
            ..Default::default()
        };
        let t = Instant::now();
        let r = detect(&reference, &current, &opts).expect("drift test");
        let s = t.elapsed().as_secs_f64();
        total += s;
        let res = &r.methods[m.name()];
        println!(
            "  {:<11} {s:>6.2} s   p = {:.4}  statistic = {:.5}",
            m.name(),
            res.p_value,
            res.statistic
        );
    }
    let t = Instant::now();
    let r = detect(&reference, &current, &DriftOptions::default()).expect("drift test");
    let all = t.elapsed().as_secs_f64();
    println!(
        "  every method + 16 clusters + witness in one call: {all:.2} s (sum of the parts {total:.2} s); drift = {}",
        r.drift
    );
    println!("  peak resident memory {:.0} MiB", peak_rss_mib());
}
