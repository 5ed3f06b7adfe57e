//! Byte-identical quantization against sentence-transformers on 1,000 real all-MiniLM-L6-v2 vectors
//! (fixture made by tools/make_quantization_fixture.py).

use embedkit_core::Embeddings;
use embedkit_vectors::npy::read_npy;
use embedkit_vectors::{CalibrationRanges, Precision, quantize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/quantization")
        .join(name)
}

fn embeddings(name: &str) -> Embeddings {
    read_npy(&fixture(name)).unwrap().to_embeddings().unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Index of the first differing byte, for a readable failure.
fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

#[test]
fn fixture_is_large_enough() {
    let e = embeddings("embeddings.npy");
    assert!(e.rows() >= 1000, "{} vectors", e.rows());
    assert_eq!(e.dims(), 384);
}

#[test]
fn ranges_from_data_and_calibration_match_sentence_transformers() {
    let e = embeddings("embeddings.npy");
    let ours = CalibrationRanges::from_embeddings(&e).unwrap();
    let theirs = CalibrationRanges::load(&fixture("ranges.npy")).unwrap();
    assert_eq!(bits(&ours.min), bits(&theirs.min));
    assert_eq!(bits(&ours.max), bits(&theirs.max));

    let cal = embeddings("calibration.npy");
    let ours = CalibrationRanges::from_calibration(&cal).unwrap();
    let saved = CalibrationRanges::load(&fixture("ranges_calibration.json")).unwrap();
    assert_eq!(bits(&ours.min), bits(&saved.min));
    assert_eq!(bits(&ours.max), bits(&saved.max));
}

#[test]
fn whole_outputs_are_byte_identical() {
    let e = embeddings("embeddings.npy");
    let cal = CalibrationRanges::from_calibration(&embeddings("calibration.npy")).unwrap();
    let file_ranges = CalibrationRanges::load(&fixture("ranges_calibration.json")).unwrap();
    let cases: [(&str, Precision, Option<&CalibrationRanges>); 5] = [
        ("int8.npy", Precision::Int8, None),
        ("binary.npy", Precision::Binary, None),
        ("ubinary.npy", Precision::Ubinary, None),
        ("int8_calibration.npy", Precision::Int8, Some(&cal)),
        // The same ranges read back from a saved file.
        ("int8_calibration.npy", Precision::Int8, Some(&file_ranges)),
    ];
    for (file, precision, ranges) in cases {
        let want = read_npy(&fixture(file)).unwrap();
        let got = quantize(&e, precision, ranges).unwrap();
        assert_eq!(want.descr, precision.npy_descr(), "{file}");
        assert_eq!(want.shape, vec![got.rows(), got.values_per_row()], "{file}");
        assert!(
            want.data == got.as_bytes(),
            "{file}: first difference at byte {:?}",
            first_diff(&want.data, got.as_bytes())
        );
        // And the .npy we write is what numpy wrote.
        let mut npy = Vec::new();
        got.write_npy(&mut npy).unwrap();
        assert_eq!(npy, std::fs::read(fixture(file)).unwrap(), "{file} as .npy");
    }
}

#[test]
fn every_precision_matches_the_recorded_digest() {
    let e = embeddings("embeddings.npy");
    let cal = CalibrationRanges::from_calibration(&embeddings("calibration.npy")).unwrap();
    let digests: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("digests.json")).unwrap()).unwrap();
    let cases = [
        ("int8", Precision::Int8, None),
        ("uint8", Precision::Uint8, None),
        ("binary", Precision::Binary, None),
        ("ubinary", Precision::Ubinary, None),
        ("int8_calibration", Precision::Int8, Some(&cal)),
        ("uint8_calibration", Precision::Uint8, Some(&cal)),
        ("float16", Precision::F16, None),
        ("bfloat16", Precision::BF16, None),
    ];
    let recorded = digests.as_object().unwrap();
    assert_eq!(recorded.len(), cases.len(), "a digest without a test case");
    for (name, precision, ranges) in cases {
        let d = &digests[name];
        let got = quantize(&e, precision, ranges).unwrap();
        assert_eq!(d["dtype"], precision.npy_descr(), "{name}");
        assert_eq!(
            d["shape"],
            serde_json::json!([got.rows(), got.values_per_row()]),
            "{name}"
        );
        assert_eq!(d["sha256"], sha256_hex(got.as_bytes()), "{name}");
    }
}

#[test]
fn calibration_ranges_really_differ_from_data_ranges() {
    // Guards the calibration case against silently testing the same thing as the data case.
    let a = read_npy(&fixture("int8.npy")).unwrap();
    let b = read_npy(&fixture("int8_calibration.npy")).unwrap();
    assert_ne!(a.data, b.data);
}
