//! `--device cpu|auto|cuda[:N]` on a machine without a usable GPU (CI's, and the one this was written on):
//! `cuda` fails at once with a one-line error and exit status 1, never a panic; `auto` gives the CPU's vectors.
//! Where a GPU is usable these tests say so and check only what still holds (`scripts/gpu-check` covers the
//! GPU itself).

use std::path::PathBuf;
use std::process::{Command, Output};

fn tiny(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn embedkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_embedkit"))
        .args(args)
        // Nothing may be fetched: a model given by name would be, so only folders are used here.
        .env(
            "EMBEDKIT_HOME",
            std::env::temp_dir().join("embedkit-device-test-home"),
        )
        .output()
        .expect("the embedkit binary runs")
}

fn gpu_here() -> bool {
    let usable = embedkit_cuda::probe::available(0);
    if usable {
        eprintln!("a CUDA device is usable here: the no-GPU error paths are not exercised");
    }
    usable
}

/// Exit status 1 and exactly one line on stderr, naming the device and what is missing.
fn one_line_failure(args: &[&str]) -> String {
    let o = embedkit(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {err}"
    );
    assert!(err.starts_with("error: --device cuda"), "{args:?}: {err}");
    assert!(
        err.contains("no NVIDIA driver")
            || err.contains("no CUDA device")
            || err.contains("cannot be loaded"),
        "{args:?}: {err}"
    );
    err
}

#[test]
fn cuda_without_a_gpu_is_a_one_line_error() {
    if gpu_here() {
        return;
    }
    let model = tiny("bert-mean");
    let err = one_line_failure(&["embed", "--model", &model, "--device", "cuda", "a text"]);
    eprintln!("{err}");
    one_line_failure(&[
        "embed",
        "--model",
        &model,
        "--device",
        "cuda:1+bf16",
        "a text",
    ]);
    one_line_failure(&[
        "similarity",
        "--model",
        &model,
        "--device",
        "cuda",
        "a",
        "b",
    ]);
    one_line_failure(&["bench", "--model", &model, "--device", "cuda"]);
    one_line_failure(&[
        "serve", "--model", &model, "--device", "cuda", "--port", "0",
    ]);
}

#[test]
fn auto_without_a_gpu_gives_the_cpu_vectors() {
    if gpu_here() {
        return;
    }
    for model in ["bert-mean", "mpnet-mean", "xlmr-cls"] {
        let model = tiny(model);
        let run = |device: &str| {
            let o = embedkit(&[
                "embed",
                "--model",
                &model,
                "--device",
                device,
                "--no-cache",
                "first",
                "second",
            ]);
            assert!(
                o.status.success(),
                "{device}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            o.stdout
        };
        let cpu = run("cpu");
        assert!(!cpu.is_empty());
        assert_eq!(run("auto"), cpu, "{model}");
        assert_eq!(run("auto+f32"), cpu, "{model}");
    }
}

#[test]
fn a_misspelt_device_is_a_usage_error() {
    let o = embedkit(&["embed", "--device", "gpu", "x"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("expected cpu, auto or cuda"), "{err}");
}
