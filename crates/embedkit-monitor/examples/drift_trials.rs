//! Runs the drift test's calibration and power trials on the Debian-sections corpus and prints rejections per
//! method — the numbers behind docs/MONITORING.md.
//!
//!     cargo run --release -p embedkit-monitor --example drift_trials -- null 200
//!     cargo run --release -p embedkit-monitor --example drift_trials -- novel 100
//!     cargo run --release -p embedkit-monitor --example drift_trials -- removed 100

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use embedkit_monitor::stats::ks_uniform;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_else(|| "null".into());
    let trials: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(50);
    let c = corpus();
    let start = Instant::now();
    let reports: Vec<_> = (0..trials)
        .map(|t| {
            let trial = match scenario.as_str() {
                "null" => null_trial(&c, t, 1000, 500),
                "novel" => novel_trial(&c, t, 1000, 500, 4, 0.2),
                "removed" => removed_trial(&c, t, 1000, 1000, 2),
                other => panic!("unknown scenario {other} (null, novel, removed)"),
            };
            run(&c, &trial, t)
        })
        .collect();
    let secs = start.elapsed().as_secs_f64();
    let t = tally(&reports);
    println!(
        "scenario {scenario}: {trials} trials in {secs:.1} s ({:.2} s/trial)",
        secs / trials as f64
    );
    for ((name, k), (_, p)) in t.rejections.iter().zip(&t.p_values) {
        let (d, pu) = ks_uniform(p);
        println!(
            "  {name:<11} rejections {k:>4} / {trials}  ({:.3})   p-values vs uniform: D {d:.3}, p {pu:.3}",
            *k as f64 / trials as f64
        );
    }
    let auc: Vec<f64> = reports
        .iter()
        .filter_map(|r| r.methods.get("classifier"))
        .map(|m| m.statistic)
        .collect();
    if !auc.is_empty() {
        println!(
            "  classifier AUC mean {:.3}",
            auc.iter().sum::<f64>() / auc.len() as f64
        );
    }
}
