//! Measuring embedders: how fast (the speed benchmark behind `embedkit bench`), and — as the evaluation issue
//! lands — how good. Works on any [`embedkit_core::Embedder`]: a local model, an API provider, a cached one.

pub mod speed;
