//! Progress bars on stderr. indicatif draws nothing when stderr is not a terminal, and `--quiet` hides them
//! everywhere, so machine-readable output on stdout is never mixed with them.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Where a bar draws: stderr, or nowhere with `--quiet`.
pub(crate) fn draw_target(quiet: bool) -> ProgressDrawTarget {
    if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    }
}

/// A bar of `len` items: "⠁ {verb} ████ pos/len {unit} (rate, eta)".
pub(crate) fn bar(len: u64, quiet: bool, verb: &str, unit: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), draw_target(quiet));
    let template =
        format!("{{spinner}} {verb} {{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// The bar of the embedding commands: `len` texts.
pub(crate) fn texts(len: usize, quiet: bool) -> ProgressBar {
    bar(len as u64, quiet, "embedding", "texts")
}

/// A bar over the `len` bytes of an input file, with a message (documents so far) beside the percentage.
pub(crate) fn bytes(len: u64, quiet: bool, verb: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), draw_target(quiet));
    let template = format!(
        "{{spinner}} {verb} {{bar:40}} {{percent:>3}}% {{msg}} ({{binary_bytes_per_sec}}, eta {{eta}})"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// A one-line phase of long work ("MODEL: throughput…") on stderr, where a bar would draw: on a terminal and
/// without `--quiet`.
pub(crate) fn phase(quiet: bool, message: &str) {
    if !quiet && std::io::stderr().is_terminal() {
        eprintln!("{message}");
    }
}
