//! The Debian-sections corpus (tests/fixtures/drift/debian-sections, made by tools/make_drift_corpus.py) and the
//! trial designs of the calibration and power checks, shared by tests/calibration.rs and examples/drift_trials.rs.
#![allow(dead_code)]

use embedkit_core::Embeddings;
use embedkit_monitor::rng::SplitMix64;
use embedkit_monitor::{DriftOptions, DriftReport, Method, detect};
use std::path::PathBuf;

/// The corpus: vectors (f16 on disk, widened) and each row's Debian section.
pub struct Corpus {
    pub vectors: Vec<f32>,
    pub dims: usize,
    pub sections: Vec<String>,
}

pub fn corpus() -> Corpus {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/drift/debian-sections");
    let arr =
        embedkit_vectors::npy::read_npy(&dir.join("vectors.f16.npy")).expect("vectors.f16.npy");
    let dims = arr.shape[1];
    let vectors = arr.to_f32_values().expect("float16");
    let sections: Vec<String> = std::fs::read_to_string(dir.join("sections.txt"))
        .expect("sections.txt")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(sections.len() * dims, vectors.len());
    Corpus {
        vectors,
        dims,
        sections,
    }
}

impl Corpus {
    pub fn rows(&self, idx: &[usize]) -> Embeddings {
        let data = idx
            .iter()
            .flat_map(|&i| {
                self.vectors[i * self.dims..(i + 1) * self.dims]
                    .iter()
                    .copied()
            })
            .collect();
        Embeddings::new(data, idx.len(), self.dims).expect("shape")
    }

    fn section_names(&self) -> Vec<String> {
        let mut s = self.sections.clone();
        s.sort();
        s.dedup();
        s
    }
}

/// A trial's two samples as row indices into the corpus.
pub struct Trial {
    pub reference: Vec<usize>,
    pub current: Vec<usize>,
}

/// No drift: `nr + nc` distinct rows drawn at random from the whole corpus, split into reference and current.
pub fn null_trial(c: &Corpus, seed: u64, nr: usize, nc: usize) -> Trial {
    let mut rng = SplitMix64::stream(seed, 0x0A11);
    let mut idx: Vec<usize> = (0..c.sections.len()).collect();
    rng.choose_into(&mut idx, nr + nc);
    Trial {
        reference: idx[..nr].to_vec(),
        current: idx[nr..nr + nc].to_vec(),
    }
}

/// Novel topics: `novel_sections` sections (drawn per trial) are absent from the reference; `share` of the current
/// sample comes from them, the rest from the other sections (rows disjoint from the reference).
pub fn novel_trial(
    c: &Corpus,
    seed: u64,
    nr: usize,
    nc: usize,
    novel_sections: usize,
    share: f64,
) -> Trial {
    let mut rng = SplitMix64::stream(seed, 0x0B22);
    let mut names = c.section_names();
    rng.choose_into(&mut names, novel_sections);
    let novel: Vec<String> = names[..novel_sections].to_vec();
    let (mut seen, mut new): (Vec<usize>, Vec<usize>) =
        (0..c.sections.len()).partition(|&i| !novel.contains(&c.sections[i]));
    let n_new = (nc as f64 * share).round() as usize;
    rng.choose_into(&mut seen, nr + nc - n_new);
    rng.choose_into(&mut new, n_new);
    let reference = seen[..nr].to_vec();
    let mut current = seen[nr..nr + nc - n_new].to_vec();
    current.extend_from_slice(&new[..n_new]);
    Trial { reference, current }
}

/// A subtler shift: the reference from all sections, the current sample from all but `removed` sections.
pub fn removed_trial(c: &Corpus, seed: u64, nr: usize, nc: usize, removed: usize) -> Trial {
    let mut rng = SplitMix64::stream(seed, 0x0C33);
    let mut names = c.section_names();
    rng.choose_into(&mut names, removed);
    let gone: Vec<String> = names[..removed].to_vec();
    let mut all: Vec<usize> = (0..c.sections.len()).collect();
    rng.choose_into(&mut all, nr);
    let reference = all[..nr].to_vec();
    let mut rest: Vec<usize> = all[nr..]
        .iter()
        .copied()
        .filter(|&i| !gone.contains(&c.sections[i]))
        .collect();
    rng.choose_into(&mut rest, nc);
    Trial {
        reference,
        current: rest[..nc].to_vec(),
    }
}

/// The options of the trials: the defaults, without the cluster report, witness ranking and projection (not
/// tested here).
pub fn trial_options(seed: u64) -> DriftOptions {
    let mut o = DriftOptions {
        seed,
        clusters: 0,
        novel: 0,
        projection: false,
        ..Default::default()
    };
    // Exploration knobs for examples/drift_trials (the tests never set them).
    if let Some(v) = std::env::var("DRIFT_L2").ok().and_then(|v| v.parse().ok()) {
        o.classifier.l2 = v;
    }
    if let Some(v) = std::env::var("DRIFT_AUC_FLOOR")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        o.auc_floor = v;
    }
    if let Some(v) = std::env::var("DRIFT_PERMUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        o.permutations = v;
    }
    if let Ok(v) = std::env::var("DRIFT_METHODS") {
        o.methods = v.split(',').map(|m| m.parse().expect("method")).collect();
    }
    o
}

pub fn run(c: &Corpus, t: &Trial, seed: u64) -> DriftReport {
    detect(
        &c.rows(&t.reference),
        &c.rows(&t.current),
        &trial_options(seed),
    )
    .expect("drift test")
}

/// Rejections per method and overall over reports.
pub struct Tally {
    pub rejections: Vec<(String, usize)>,
    pub p_values: Vec<(String, Vec<f64>)>,
}

pub fn tally(reports: &[DriftReport]) -> Tally {
    let mut names: Vec<String> = Method::ALL
        .iter()
        .map(|m| m.name().to_string())
        .filter(|n| reports.first().is_some_and(|r| r.methods.contains_key(n)))
        .collect();
    names.push("overall".into());
    let rejections = names
        .iter()
        .map(|n| {
            let k = reports
                .iter()
                .filter(|r| {
                    if n == "overall" {
                        r.drift
                    } else {
                        r.methods[n].drift
                    }
                })
                .count();
            (n.clone(), k)
        })
        .collect();
    let p_values = names
        .iter()
        .map(|n| {
            let v = reports
                .iter()
                .map(|r| {
                    if n == "overall" {
                        r.p_value
                    } else {
                        r.methods[n].p_value
                    }
                })
                .collect();
            (n.clone(), v)
        })
        .collect();
    Tally {
        rejections,
        p_values,
    }
}
