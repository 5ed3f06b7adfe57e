//! `embedkit bench`'s reading against the machine: the CPU's name, the SIMD path, the measured peak and the
//! linear layers' achieved rate and share of it, in the table and in JSON; and `--compute bf16` either runs
//! (AVX512_BF16 present) or fails with one line naming what is missing. Shapes only, never speed.

use std::path::PathBuf;
use std::process::{Command, Output};

fn tiny(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// `embedkit bench --quiet` on the tiny BERT with a small corpus, plus `extra` arguments.
fn bench(extra: &[&str]) -> Output {
    bench_with(&["--quiet"], extra)
}

/// `embedkit bench` with `global` arguments (`--quiet` or none) on the tiny BERT, plus `extra` arguments.
fn bench_with(global: &[&str], extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "a short text\nanother one, a little longer\nthird\n",
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_embedkit"))
        .arg("bench")
        .args(global)
        .args(["--model", tiny("bert-mean").as_str(), "--input"])
        .arg(&corpus)
        .args(["--latency-runs", "3", "--no-sweeps", "--threads", "1"])
        .args(extra)
        // Nothing may be fetched: the model is a folder.
        .env("EMBEDKIT_HOME", dir.path().join("home"))
        .output()
        .expect("the embedkit binary runs")
}

fn has_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
            && !matches!(
                std::env::var("EMBEDKIT_SIMD").as_deref(),
                Ok("avx2" | "scalar" | "baseline")
            )
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[test]
fn json_names_the_machine_and_the_linear_layers_share_of_peak() {
    let o = bench(&["--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = &v[0]["machine"];
    assert!(!m["cpu"].as_str().unwrap().is_empty(), "{m}");
    assert!(
        ["Baseline", "Avx2", "Avx512"].contains(&m["simd"].as_str().unwrap()),
        "{m}"
    );
    assert_eq!(m["threads"], 1);
    for key in [
        "f32_avx512_gflops",
        "f32_avx2_gflops",
        "int8_vnni_gmacs",
        "bf16_gflops",
    ] {
        let p = &m["peak"][key];
        assert!(p.is_null() || p.as_f64().unwrap() > 0.0, "{key}: {p}");
    }
    let lin = &v[0]["linear"];
    assert_eq!(lin["compute"], "f32");
    assert_eq!(lin["unit"], "GFLOP/s");
    // The tiny BERT: 2 layers of hidden 32, intermediate 37 → 2 · (4·32² + 2·32·37) multiply-adds per token.
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(tiny("bert-mean")).join("config.json")).unwrap(),
    )
    .unwrap();
    let (h, i, l) = (
        cfg["hidden_size"].as_f64().unwrap(),
        cfg["intermediate_size"].as_f64().unwrap(),
        cfg["num_hidden_layers"].as_f64().unwrap(),
    );
    assert_eq!(
        lin["macs_per_token"].as_f64().unwrap(),
        l * (4.0 * h * h + 2.0 * h * i)
    );
    assert!(lin["achieved"].as_f64().unwrap() > 0.0, "{lin}");
    if m["peak"]["f32_avx2_gflops"].is_number() {
        assert!(lin["share_of_peak"].as_f64().unwrap() > 0.0, "{lin}");
    }
}

#[test]
fn table_prints_the_cpu_and_the_share_of_peak() {
    let o = bench(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\nCPU: "), "{out}");
    assert!(out.contains("SIMD path "), "{out}");
    assert!(
        out.contains("| model | MMAC/token | achieved | share of peak |"),
        "{out}"
    );
}

#[test]
fn no_peak_leaves_the_machine_out() {
    let o = bench(&["--json", "--no-peak"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v[0].get("machine").is_none() && v[0].get("linear").is_none(),
        "{v}"
    );
}

#[test]
fn bf16_runs_where_the_cpu_has_it_and_is_a_one_line_error_elsewhere() {
    let o = bench(&["--json", "--compute", "bf16"]);
    let err = String::from_utf8_lossy(&o.stderr);
    if has_bf16() {
        assert!(o.status.success(), "{err}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        // AMX tiles where the CPU has them and the kernel grants their state, `vdpbf16ps` otherwise.
        let want = if embedkit_cpu::amx::status() == embedkit_cpu::amx::AmxStatus::On {
            "cpu-bf16-amx"
        } else {
            "cpu-bf16"
        };
        assert_eq!(v[0]["backend"], want);
        assert_eq!(v[0]["linear"]["compute"], "bf16");
    } else {
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("--compute bf16 needs a CPU with AVX512_BF16"),
            "{err}"
        );
    }
}

/// On an AVX2-only CPU (QEMU's Haswell, where `qemu-x86_64` is installed): bf16 is the one-line error, f32
/// still runs.
#[test]
#[cfg(target_arch = "x86_64")]
fn bf16_is_refused_on_an_avx2_cpu_under_qemu() {
    let Ok(qemu) = which("qemu-x86_64") else {
        eprintln!("skipped: no qemu-x86_64 here");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, "a short text\nanother one\n").unwrap();
    let run = |compute: &str| {
        Command::new(&qemu)
            .args(["-cpu", "Haswell", env!("CARGO_BIN_EXE_embedkit")])
            .args(["bench", "--quiet", "--json", "--no-peak", "--no-sweeps"])
            .args(["--model", tiny("bert-mean").as_str(), "--input"])
            .arg(&corpus)
            .args([
                "--latency-runs",
                "2",
                "--threads",
                "1",
                "--compute",
                compute,
            ])
            .env("EMBEDKIT_HOME", dir.path().join("home"))
            .output()
            .expect("qemu runs")
    };
    let o = run("bf16");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    // QEMU itself warns about CPUID bits it cannot emulate; embedkit's own output is one line.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("qemu-x86_64: warning"))
        .collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(
        err.contains("--compute bf16 needs a CPU with AVX512_BF16"),
        "{err}"
    );
    let o = run("f32");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["backend"], "cpu-f32");
}

/// The path of `tool` on PATH.
#[cfg(target_arch = "x86_64")]
fn which(tool: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(tool))
                .find(|f| f.is_file())
        })
        .ok_or(())
}

/// Its phases ("MODEL: throughput…") are progress: not written when stderr is not a terminal (here, a pipe),
/// even without `--quiet`, so logs and captured output get only the results.
#[test]
fn phases_stay_off_a_stderr_that_is_not_a_terminal() {
    let o = bench_with(&[], &["--json", "--no-peak"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !stderr.contains("throughput…") && !stderr.contains("latency…"),
        "phase lines on a piped stderr: {stderr}"
    );
    let _: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
}
