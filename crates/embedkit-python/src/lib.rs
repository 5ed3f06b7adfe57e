//! `embedkit._embedkit`: the native half of the `embedkit` Python package.
//!
//! Thin by design: it converts arguments and arrays, releases the GIL, and calls the same crates as the
//! `embedkit` command. sentence-transformers' semantics (prompt rules, `truncate_dim` after normalization,
//! precision, 1-D output for one string) live in the pure-Python `embedkit/__init__.py`, which wraps
//! [`model::Model`]; everything that touches vectors in bulk stays here.

mod cross;
mod device;
mod errors;
mod model;
mod per_process;
mod vectors;

use pyo3::prelude::*;

#[pymodule]
fn _embedkit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<model::Model>()?;
    m.add_class::<cross::CrossModel>()?;
    m.add_class::<vectors::Index>()?;
    m.add_function(wrap_pyfunction!(vectors::quantize_embeddings, m)?)?;
    m.add_function(wrap_pyfunction!(vectors::pairwise_scores, m)?)?;
    m.add_function(wrap_pyfunction!(vectors::maxsim, m)?)?;
    m.add_function(wrap_pyfunction!(model::resolve_threads, m)?)?;
    Ok(())
}
