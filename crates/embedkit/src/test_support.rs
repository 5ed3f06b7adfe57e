//! Test helpers of the vector commands: a toy embedder and index-build flags.

use crate::index_cli::{IndexBuildArgs, RescoreStore};
use embedkit_core::{EmbedError, Embedder, Embeddings, EncodeOptions, Metric};
use std::path::Path;

/// A deterministic toy embedder: a hash of the text spread over 8 dimensions.
pub(crate) struct Toy {
    pub(crate) fp: &'static str,
}
impl Embedder for Toy {
    fn name(&self) -> &str {
        "toy"
    }
    fn dims(&self) -> usize {
        8
    }
    fn fingerprint(&self) -> String {
        self.fp.to_string()
    }
    fn embed(&self, texts: &[&str], _: &EncodeOptions) -> Result<Embeddings, EmbedError> {
        let rows = texts
            .iter()
            .map(|t| {
                let mut v = vec![0.0f32; 8];
                for (i, b) in t.bytes().enumerate() {
                    v[(b as usize + i) % 8] += f32::from(b) / 255.0 - 0.4;
                }
                v
            })
            .collect();
        Embeddings::from_rows(rows).map_err(|e| EmbedError::Backend(Box::new(e)))
    }
}

/// `index build` flags for a float32/int8/binary index of `input` at `output`, ranges from 3 documents.
pub(crate) fn build_args(input: &Path, output: &Path, precision: &str) -> IndexBuildArgs {
    IndexBuildArgs {
        input: input.to_path_buf(),
        input_format: None,
        output: output.to_path_buf(),
        precision: precision.parse().unwrap(),
        rescore_vectors: RescoreStore::Int8,
        metric: Metric::Cosine,
        ranges: None,
        calibration_size: 3,
        save_ranges: None,
        id_field: "_id".into(),
        text_field: "text".into(),
        title_field: "title".into(),
        multi_vector: false,
    }
}
