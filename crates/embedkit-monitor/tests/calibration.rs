//! Calibration and power of the drift test on real, topic-labelled data: Debian package descriptions with their
//! archive Section, embedded by all-MiniLM-L6-v2 (tests/fixtures/drift/debian-sections; tools/make_drift_corpus.py).
//! Every trial is seeded, so a run is reproducible; `cargo run --release --example drift_trials` prints the same
//! numbers (and the subtler "two sections removed" scenario of docs/MONITORING.md).

mod common;

use common::*;
use embedkit_monitor::stats::ks_uniform;

/// 200 no-drift trials (reference 1,000, current 500, drawn from one pool): at α = 0.05 each method and the
/// overall verdict must reject between 3 and 17 times (5% ± about 2.3 standard deviations), and the p-values
/// must look uniform.
#[test]
fn no_drift_trials_reject_at_the_nominal_rate() {
    let c = corpus();
    let reports: Vec<_> = (0..200)
        .map(|t| run(&c, &null_trial(&c, t, 1000, 500), t))
        .collect();
    let tally = tally(&reports);
    assert_eq!(
        tally.rejections.len(),
        5,
        "four methods and the overall verdict"
    );
    for ((name, k), (_, p)) in tally.rejections.iter().zip(&tally.p_values) {
        let (d, p_uniform) = ks_uniform(p);
        eprintln!("{name}: {k}/200 rejections, p-values vs uniform D {d:.3} p {p_uniform:.3}");
        assert!(
            (3..=17).contains(k),
            "{name}: {k} rejections in 200 no-drift trials"
        );
        assert!(
            p_uniform > 0.01,
            "{name}: p-values not uniform (KS D {d:.3}, p {p_uniform:.4})"
        );
    }
}

/// 100 trials where 20% of the current sample (500) comes from 4 sections absent from the reference (1,000).
#[test]
fn novel_topics_are_found() {
    let c = corpus();
    let reports: Vec<_> = (0..100)
        .map(|t| run(&c, &novel_trial(&c, t, 1000, 500, 4, 0.2), t))
        .collect();
    let tally = tally(&reports);
    let power = |name: &str| {
        tally
            .rejections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| *k)
            .unwrap_or(0)
    };
    for (name, k) in &tally.rejections {
        eprintln!("{name}: power {k}/100");
    }
    assert!(power("mmd") >= 95, "MMD power {}/100", power("mmd"));
    assert!(
        power("classifier") >= 90,
        "classifier power {}/100",
        power("classifier")
    );
}
