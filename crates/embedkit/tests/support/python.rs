//! The Python venv the client tests run real packages from (`.venv-ci`, made by scripts/test): shared by the
//! test files that need one, so "skip outside CI, fail in CI" is one rule.

use std::path::PathBuf;
use std::process::Command;

/// The venv scripts/test makes for the Python clients (`openai`, `huggingface_hub`, `langchain_openai`) when
/// it can import `modules`; `None` (with a loud message) outside CI when it cannot. In CI a missing package
/// fails the test instead, so a client test never passes by not running.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv-ci/bin/python");
    let import = format!("import {}", modules.join(", "));
    let ok = venv.is_file()
        && Command::new(&venv)
            .args(["-c", &import])
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        return Some(venv);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but {} cannot `{import}`: scripts/test installs these packages",
            venv.display()
        );
    }
    eprintln!(
        "\n\n*** SKIPPED: this Python client test needs {} with `{import}` working (scripts/test makes it) ***\n\n",
        venv.display()
    );
    None
}
