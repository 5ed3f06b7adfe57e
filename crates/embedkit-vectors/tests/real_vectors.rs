//! Search quality on real all-MiniLM-L6-v2 vectors (the quantization fixture): 200 held-out sentences as
//! queries against 1,000 others. Not the project's retrieval benchmark (that is nDCG on a labelled set), but
//! a check that binary + rescoring keeps the exact ranking's neighbours on real embeddings, not only on
//! synthetic ones.

use embedkit_core::Embeddings;
use embedkit_vectors::npy::read_npy;
use embedkit_vectors::{
    CalibrationRanges, Hit, Index, IndexSpec, IndexWriter, Precision, RescoreWith, SearchOptions,
};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> Embeddings {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/quantization")
        .join(name);
    read_npy(&p).unwrap().to_embeddings().unwrap()
}

fn build(
    path: &Path,
    precision: Precision,
    rescore: Option<Precision>,
    corpus: &Embeddings,
) -> Index {
    let mut w = IndexWriter::create(
        path,
        IndexSpec {
            model: "all-MiniLM-L6-v2".into(),
            fingerprint: "fixture".into(),
            precision,
            rescore,
            metric: embedkit_core::Metric::Cosine,
            dims: corpus.dims(),
            ranges: Some(CalibrationRanges::from_embeddings(corpus).unwrap()),
            extra: Default::default(),
        },
    )
    .unwrap();
    w.add_unnamed(corpus).unwrap();
    w.finish().unwrap();
    Index::open(path).unwrap()
}

fn recall(got: &[Vec<Hit>], want: &[Vec<Hit>]) -> f64 {
    let total: usize = want.iter().map(Vec::len).sum();
    let hit: usize = got
        .iter()
        .zip(want)
        .map(|(g, w)| {
            g.iter()
                .filter(|h| w.iter().any(|x| x.row == h.row))
                .count()
        })
        .sum();
    hit as f64 / total as f64
}

#[test]
fn quantized_search_keeps_the_exact_neighbours_of_real_vectors() {
    let corpus = fixture("embeddings.npy");
    let queries = fixture("calibration.npy");
    let dir = tempfile::tempdir().unwrap();
    let exact = build(&dir.path().join("f.idx"), Precision::F32, None, &corpus);
    let int8 = build(&dir.path().join("i.idx"), Precision::Int8, None, &corpus);
    let binary = build(
        &dir.path().join("b.idx"),
        Precision::Binary,
        Some(Precision::Int8),
        &corpus,
    );
    let opts = |rescore, with| SearchOptions {
        top_k: 10,
        rescore,
        rescore_with: with,
        query_batch: 64,
    };
    let want = exact.search(&queries, &opts(4, None)).unwrap();
    let r_int8 = recall(&int8.search(&queries, &opts(4, None)).unwrap(), &want);
    let r_bin_int8 = recall(
        &binary
            .search(&queries, &opts(4, Some(RescoreWith::Int8)))
            .unwrap(),
        &want,
    );
    let r_bin_bits = recall(
        &binary
            .search(&queries, &opts(4, Some(RescoreWith::Bits)))
            .unwrap(),
        &want,
    );
    let r_hamming = recall(&binary.search(&queries, &opts(0, None)).unwrap(), &want);
    eprintln!(
        "recall@10 vs f32 exact on real vectors: int8 {r_int8:.3}, binary+int8 rescore {r_bin_int8:.3}, \
         binary+bits rescore {r_bin_bits:.3}, Hamming only {r_hamming:.3}"
    );
    assert!(r_int8 >= 0.9, "int8 {r_int8}");
    assert!(r_bin_int8 >= 0.8, "binary + int8 rescoring {r_bin_int8}");
    assert!(
        r_bin_int8 > r_hamming,
        "rescoring must improve on Hamming ranking"
    );
}
