//! Multi-vector (late-interaction) index files: per-document token vectors at f32, int8 and binary precision,
//! exact MaxSim search equal to `maxsim_matrix` on the same vectors, ids per document, crash safety and the
//! version/flag checks.

use embedkit_core::{Embeddings, Metric};
use embedkit_vectors::{
    CalibrationRanges, Index, IndexError, IndexSpec, IndexWriter, MaxSimOptions, Precision,
    maxsim_matrix,
};

/// Deterministic unit token vectors: `n` texts of 0..=12 tokens.
fn texts(n: usize, seed: u64, dims: usize) -> Vec<Embeddings> {
    let mut s = seed;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % 20_000) as f32 / 10_000.0 - 1.0
    };
    (0..n)
        .map(|i| {
            let tokens = if i == 3 { 0 } else { 1 + i % 12 };
            let mut e = Embeddings::new((0..tokens * dims).map(|_| next()).collect(), tokens, dims)
                .unwrap();
            e.normalize();
            e
        })
        .collect()
}

fn build(
    path: &std::path::Path,
    docs: &[Embeddings],
    precision: Precision,
    rescore: Option<Precision>,
) {
    let dims = docs[0].dims();
    let mut all = Embeddings::empty(dims);
    for d in docs {
        all.append(d).unwrap();
    }
    let mut w = IndexWriter::create_multi_vector(
        path,
        IndexSpec {
            model: "m".into(),
            fingerprint: "fp".into(),
            precision,
            rescore,
            metric: Metric::Cosine,
            dims,
            ranges: Some(CalibrationRanges::from_embeddings(&all).unwrap()),
            extra: Default::default(),
        },
    )
    .unwrap();
    for (i, d) in docs.iter().enumerate() {
        w.add_document(&format!("doc-{i}"), d).unwrap();
    }
    let s = w.finish().unwrap();
    assert_eq!((s.documents, s.count), (docs.len(), all.rows()));
}

#[test]
fn maxsim_search_matches_maxsim_matrix_at_every_precision() {
    let dims = 24;
    let docs = texts(40, 7, dims);
    let queries = texts(5, 99, dims)
        .into_iter()
        .filter(|q| q.rows() > 0)
        .collect::<Vec<_>>();
    let want = maxsim_matrix(&queries, &docs, MaxSimOptions::default());
    let dir = tempfile::tempdir().unwrap();
    for (precision, rescore, tol) in [
        (Precision::F32, None, 1e-5),
        (Precision::Int8, None, 0.05),
        (Precision::Binary, Some(Precision::F32), 1e-5),
        (Precision::Binary, Some(Precision::Int8), 0.05),
    ] {
        let path = dir.path().join(format!("{precision}-{rescore:?}.idx"));
        build(&path, &docs, precision, rescore);
        let index = Index::open(&path).unwrap();
        assert_eq!(index.documents(), docs.len());
        assert_eq!(index.id(3).unwrap(), "doc-3");
        assert_eq!(index.document_rows(3).unwrap().len(), 0);
        let hits = index.search_maxsim(&queries, docs.len()).unwrap();
        for (q, h) in hits.iter().enumerate() {
            assert_eq!(h.len(), docs.len());
            for hit in h {
                let w = want[q * docs.len() + hit.row];
                assert!(
                    (hit.score - w).abs() <= tol * w.abs().max(1.0),
                    "{precision} {rescore:?} q{q} d{}: {} vs {w}",
                    hit.row,
                    hit.score
                );
            }
            // The empty document ranks last.
            assert_eq!(h.last().unwrap().row, 3);
        }
        // A single-vector search on a multi-vector index is refused, not misread.
        let err = index.search(&queries[0], &Default::default()).unwrap_err();
        assert!(matches!(err, IndexError::Invalid { .. }), "{err}");
    }
}

#[test]
fn exact_f32_ranking_equals_the_reference_ranking() {
    let dims = 16;
    let docs = texts(30, 3, dims);
    let queries = texts(3, 5, dims);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f32.idx");
    build(&path, &docs, Precision::F32, None);
    let index = Index::open(&path).unwrap();
    let hits = index.search_maxsim(&queries[1..], 5).unwrap();
    let want = maxsim_matrix(&queries[1..], &docs, MaxSimOptions::default());
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.sort_by(|&a, &b| want[b].total_cmp(&want[a]).then(a.cmp(&b)));
    assert_eq!(
        hits[0].iter().map(|h| h.row).collect::<Vec<_>>(),
        order[..5]
    );
}

#[test]
fn unfinished_builds_leave_no_file_and_bad_headers_are_refused() {
    let dims = 8;
    let docs = texts(6, 11, dims);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.idx");
    {
        let mut w = IndexWriter::create_multi_vector(
            &path,
            IndexSpec {
                model: "m".into(),
                fingerprint: "fp".into(),
                precision: Precision::F32,
                rescore: None,
                metric: Metric::Cosine,
                dims,
                ranges: None,
                extra: Default::default(),
            },
        )
        .unwrap();
        w.add_document("a", &docs[0]).unwrap();
        // Whole documents only.
        assert!(w.add(&["b"], &docs[1]).is_err());
        // Dropped without finish: a killed build.
    }
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    build(&path, &docs, Precision::F32, None);
    let mut bytes = std::fs::read(&path).unwrap();
    // Claim version 1 (a single-vector file) while the multi-vector flag is set.
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    let bad = dir.path().join("bad.idx");
    std::fs::write(&bad, &bytes).unwrap();
    assert!(matches!(
        Index::open(&bad),
        Err(IndexError::Version { found: 1, .. })
    ));
    // Clear the flag instead: the checksum catches it.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[31] &= !2;
    std::fs::write(&bad, &bytes).unwrap();
    assert!(Index::open(&bad).is_err());
}
