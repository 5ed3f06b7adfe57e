//! The statistics against numpy / scipy / scikit-learn: tests/fixtures/drift/reference.json, made by
//! tools/make_drift_fixtures.py (never against numbers of this crate).

use embedkit_monitor::cluster::share_tests;
use embedkit_monitor::ks::ks_test;
use embedkit_monitor::logistic::LogisticModel;
use embedkit_monitor::mmd::KernelMatrix;
use embedkit_monitor::stats::{
    bh_adjust, chi2_sf, ks_pvalue_exact, ks_statistic_sorted, ks_uniform, normal_sf, roc_auc,
};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

fn fixture() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/drift/reference.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
    })
}

/// The fixture's cases of one kind; never empty (a loop over nothing would pass without checking anything).
fn cases(name: &str) -> &'static Vec<Value> {
    let v = fixture()[name]
        .as_array()
        .unwrap_or_else(|| panic!("fixture has no '{name}'"));
    assert!(!v.is_empty(), "fixture '{name}' is empty");
    v
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    f64s(v).into_iter().map(|x| x as f32).collect()
}

fn matrix(v: &Value) -> Vec<f32> {
    v.as_array().expect("rows").iter().flat_map(f32s).collect()
}

fn bools(v: &Value) -> Vec<bool> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_bool().expect("bool"))
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn mmd2_and_bandwidth_match_alibi_detect() {
    for case in cases("mmd") {
        let (nx, ny, d) = (
            case["nx"].as_u64().unwrap() as usize,
            case["ny"].as_u64().unwrap() as usize,
            case["d"].as_u64().unwrap() as usize,
        );
        let km = KernelMatrix::new(&matrix(&case["x"]), nx, &matrix(&case["y"]), ny, d, None);
        let (sigma, mmd2) = (
            case["sigma"].as_f64().unwrap(),
            case["mmd2"].as_f64().unwrap(),
        );
        assert!(rel(km.sigma, sigma) < 1e-6, "sigma {} vs {sigma}", km.sigma);
        assert!(
            rel(km.mmd2(), mmd2) < 1e-6,
            "mmd2 {} vs {mmd2} ({nx}×{ny}×{d})",
            km.mmd2()
        );
    }
}

#[test]
fn ks_matches_scipy_exact() {
    for case in cases("ks") {
        let (mut a, mut b) = (f32s(&case["a"]), f32s(&case["b"]));
        let (want_d, want_p) = (
            case["statistic"].as_f64().unwrap(),
            case["p_value"].as_f64().unwrap(),
        );
        // Through the per-dimension test (one dimension) and through the scalar functions.
        let r = ks_test(&a, a.len(), &b, b.len(), 1, &[]);
        a.sort_by(f32::total_cmp);
        b.sort_by(f32::total_cmp);
        let h = ks_statistic_sorted(&a, &b);
        let p = ks_pvalue_exact(a.len(), b.len(), h);
        assert!(
            (r.statistics[0] - want_d).abs() < 1e-12,
            "D {} vs {want_d}",
            r.statistics[0]
        );
        assert!(
            rel(p, want_p) < 1e-9 || (p - want_p).abs() < 1e-15,
            "p {p} vs {want_p} ({}×{})",
            a.len(),
            b.len()
        );
        assert_eq!(r.p_values[0], p);
    }
}

#[test]
fn bh_matches_scipy() {
    for case in cases("bh") {
        let got = bh_adjust(&f64s(&case["p"]));
        for (g, w) in got.iter().zip(f64s(&case["adjusted"])) {
            assert!((g - w).abs() < 1e-14, "{g} vs {w}");
        }
    }
}

#[test]
fn auc_matches_sklearn() {
    for case in cases("auc") {
        let got = roc_auc(&f64s(&case["scores"]), &bools(&case["labels"])).unwrap();
        let want = case["auc"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
}

#[test]
fn chi2_matches_scipy() {
    for case in cases("chi2") {
        let cx: Vec<usize> = f64s(&case["cx"]).into_iter().map(|v| v as usize).collect();
        let cy: Vec<usize> = f64s(&case["cy"]).into_iter().map(|v| v as usize).collect();
        let (_, chi2, p) = share_tests(&cx, &cy);
        assert!(rel(chi2, case["chi2"].as_f64().unwrap()) < 1e-10);
        assert!(
            rel(p, case["p_value"].as_f64().unwrap()) < 1e-9,
            "{p} vs {}",
            case["p_value"]
        );
    }
    for case in cases("chi2_sf") {
        let got = chi2_sf(case["x"].as_f64().unwrap(), case["dof"].as_f64().unwrap());
        assert!(
            rel(got, case["sf"].as_f64().unwrap()) < 1e-10,
            "{got} vs {}",
            case["sf"]
        );
    }
    for case in cases("normal_sf") {
        let got = normal_sf(case["z"].as_f64().unwrap());
        assert!(
            rel(got, case["sf"].as_f64().unwrap()) < 1e-12,
            "{got} vs {}",
            case["sf"]
        );
    }
}

#[test]
fn uniformity_test_is_close_to_scipy_kstest() {
    for case in cases("ks_uniform") {
        let (d, p) = ks_uniform(&f64s(&case["u"]));
        assert!((d - case["statistic"].as_f64().unwrap()).abs() < 1e-12);
        // Asymptotic against scipy's exact distribution: close, not equal.
        assert!(
            (p - case["p_value"].as_f64().unwrap()).abs() < 0.01,
            "{p} vs {}",
            case["p_value"]
        );
    }
}

#[test]
fn logistic_regression_matches_sklearn() {
    let c = &fixture()["logistic"];
    let xtr = c["x_train"]
        .as_array()
        .unwrap()
        .iter()
        .map(f32s)
        .collect::<Vec<_>>();
    let rows: Vec<&[f32]> = xtr.iter().map(|r| r.as_slice()).collect();
    let model = LogisticModel::fit(
        &rows,
        &bools(&c["y_train"]),
        c["l2"].as_f64().unwrap(),
        1000,
    );
    for (g, w) in model.coef.iter().zip(f64s(&c["coef"])) {
        assert!((g - w).abs() < 1e-4, "coef {g} vs {w}");
    }
    assert!((model.intercept - c["intercept"].as_f64().unwrap()).abs() < 1e-4);
    let scores: Vec<f64> = c["x_test"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| model.decision(&f32s(r)))
        .collect();
    for (g, w) in scores.iter().zip(f64s(&c["test_scores"])) {
        assert!((g - w).abs() < 1e-3, "score {g} vs {w}");
    }
    let auc = roc_auc(&scores, &bools(&c["y_test"])).unwrap();
    assert!(
        (auc - c["test_auc"].as_f64().unwrap()).abs() < 1e-3,
        "{auc} vs {}",
        c["test_auc"]
    );
}
