//! Precision conversion with sentence-transformers' exact semantics.
//!
//! `int8`, `uint8`, `binary` and `ubinary` give the same bytes as
//! `sentence_transformers.quantization.quantize_embeddings` (≥ 5.7) on the same float32 input:
//!
//! * ranges: per-dimension `min` and `max` of the calibration vectors (the input itself when none are given),
//!   as float32;
//! * `step = (max - min) / 255` in float32, and `1` where that is `0`;
//! * `uint8 = clip(floor((x - min) / step), 0, 255)`, computed in float32 in that order;
//!   `int8 = uint8 - 128`;
//! * `ubinary = packbits(x > 0)` along each vector, most significant bit first, the last byte zero-padded;
//!   `binary` is the same bits minus 128 as int8 (the byte XOR 0x80).
//!
//! `float16` and `bfloat16` (which sentence-transformers does not offer) round to nearest, ties to even, like
//! numpy's `astype(np.float16)` and torch's `.to(torch.bfloat16)`.
//!
//! NaN inputs become 0 in int8/uint8 (numpy's cast of NaN is undefined) and a 0 bit in binary (`NaN > 0` is
//! false, as in numpy).

use embedkit_core::Embeddings;
use half::{bf16, f16};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::str::FromStr;

/// The numeric type vectors are stored or sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// 32-bit float, unchanged.
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16 (the top 16 bits of an f32, rounded).
    BF16,
    /// Scalar quantization to -128..=127 with calibration ranges.
    Int8,
    /// Scalar quantization to 0..=255 with calibration ranges.
    Uint8,
    /// Sign bits packed 8 per byte, as int8 (byte − 128).
    Binary,
    /// Sign bits packed 8 per byte, as uint8.
    Ubinary,
}

/// A precision name that is not one of the supported ones.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown precision '{0}': expected float32, float16, bfloat16, int8, uint8, binary or ubinary"
)]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "float32" | "f32" | "fp32" => Ok(Precision::F32),
            "float16" | "f16" | "fp16" | "half" => Ok(Precision::F16),
            "bfloat16" | "bf16" => Ok(Precision::BF16),
            "int8" | "i8" => Ok(Precision::Int8),
            "uint8" | "u8" => Ok(Precision::Uint8),
            "binary" => Ok(Precision::Binary),
            "ubinary" => Ok(Precision::Ubinary),
            _ => Err(UnknownPrecision(s.to_string())),
        }
    }
}

impl std::fmt::Display for Precision {
    /// The sentence-transformers / numpy name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "float32",
            Precision::F16 => "float16",
            Precision::BF16 => "bfloat16",
            Precision::Int8 => "int8",
            Precision::Uint8 => "uint8",
            Precision::Binary => "binary",
            Precision::Ubinary => "ubinary",
        })
    }
}

impl Serialize for Precision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Precision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Precision {
    /// Every precision, in declaration order.
    pub const ALL: [Precision; 7] = [
        Precision::F32,
        Precision::F16,
        Precision::BF16,
        Precision::Int8,
        Precision::Uint8,
        Precision::Binary,
        Precision::Ubinary,
    ];

    /// Values (array elements) per vector of `dims` dimensions: `dims`, or `ceil(dims / 8)` packed bytes.
    pub fn values_per_row(self, dims: usize) -> usize {
        match self {
            Precision::Binary | Precision::Ubinary => dims.div_ceil(8),
            _ => dims,
        }
    }

    /// Bytes per element.
    pub fn element_bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 | Precision::BF16 => 2,
            _ => 1,
        }
    }

    /// Bytes per vector of `dims` dimensions.
    pub fn row_bytes(self, dims: usize) -> usize {
        self.values_per_row(dims) * self.element_bytes()
    }

    /// Whether this precision needs calibration ranges.
    pub fn needs_ranges(self) -> bool {
        matches!(self, Precision::Int8 | Precision::Uint8)
    }

    /// The numpy `descr` of the stored elements. bfloat16 has no numpy dtype and is written as its raw bits,
    /// `<u2` (view it with `ml_dtypes.bfloat16`, or shift into the top half of a uint32 and view as float32).
    pub fn npy_descr(self) -> &'static str {
        match self {
            Precision::F32 => "<f4",
            Precision::F16 => "<f2",
            Precision::BF16 => "<u2",
            Precision::Int8 | Precision::Binary => "|i1",
            Precision::Uint8 | Precision::Ubinary => "|u1",
        }
    }
}

/// Why a quantization (or its ranges) failed.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// int8/uint8 ranges cannot be computed from one vector (sentence-transformers refuses too).
    #[error(
        "cannot compute {0} quantization ranges from a single embedding: give ranges or calibration embeddings"
    )]
    SingleEmbedding(Precision),
    /// int8/uint8 conversion without ranges where they cannot be computed.
    #[error("{0} quantization needs calibration ranges")]
    MissingRanges(Precision),
    /// Calibration data with no vectors.
    #[error("cannot compute quantization ranges from zero embeddings")]
    NoCalibrationData,
    /// The ranges are for another number of dimensions.
    #[error("quantization ranges have {ranges} dimensions but the embeddings have {dims}")]
    RangesDims {
        /// Dimensions of the ranges.
        ranges: usize,
        /// Dimensions of the embeddings.
        dims: usize,
    },
    /// `min` and `max` differ in length.
    #[error("quantization ranges are malformed: {0}")]
    BadRanges(String),
    /// A ranges file could not be read or written.
    #[error("cannot {action} ranges file '{path}': {reason}")]
    RangesFile {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// Per-dimension `min` and `max` that map floats onto the 256 int8/uint8 levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRanges {
    /// Lowest value per dimension (row 0 of sentence-transformers' `ranges` array).
    pub min: Vec<f32>,
    /// Highest value per dimension (row 1).
    pub max: Vec<f32>,
}

impl CalibrationRanges {
    /// Ranges of the vectors themselves ("from the data"). Like sentence-transformers, refuses a single vector.
    pub fn from_embeddings(e: &Embeddings) -> Result<CalibrationRanges, QuantizeError> {
        if e.rows() == 0 {
            return Err(QuantizeError::NoCalibrationData);
        }
        let mut r = CalibrationRanges {
            min: e.row(0).to_vec(),
            max: e.row(0).to_vec(),
        };
        r.update(e)?;
        Ok(r)
    }

    /// Ranges of a calibration set (any number of vectors ≥ 1, as sentence-transformers allows).
    pub fn from_calibration(e: &Embeddings) -> Result<CalibrationRanges, QuantizeError> {
        Self::from_embeddings(e)
    }

    /// Widens the ranges to cover `e` (min/max are exact, so updating batch by batch equals one pass over
    /// all rows). A NaN in a dimension makes that dimension's min/max NaN, as `np.min`/`np.max` do.
    pub fn update(&mut self, e: &Embeddings) -> Result<(), QuantizeError> {
        if e.rows() > 0 && e.dims() != self.dims() {
            return Err(QuantizeError::RangesDims {
                ranges: self.dims(),
                dims: e.dims(),
            });
        }
        for row in e.iter() {
            for ((lo, hi), &x) in self.min.iter_mut().zip(self.max.iter_mut()).zip(row) {
                if !lo.is_nan() && (x.is_nan() || x < *lo) {
                    *lo = x;
                }
                if !hi.is_nan() && (x.is_nan() || x > *hi) {
                    *hi = x;
                }
            }
        }
        Ok(())
    }

    /// Number of dimensions.
    pub fn dims(&self) -> usize {
        self.min.len()
    }

    /// Checks that `min` and `max` have `dims` values each.
    pub fn validate(&self, dims: usize) -> Result<(), QuantizeError> {
        if self.min.len() != self.max.len() {
            return Err(QuantizeError::BadRanges(format!(
                "min has {} values but max has {}",
                self.min.len(),
                self.max.len()
            )));
        }
        if self.min.len() != dims {
            return Err(QuantizeError::RangesDims {
                ranges: self.min.len(),
                dims,
            });
        }
        Ok(())
    }

    /// The float32 quantization step per dimension: `(max - min) / 255`, `1` where that is 0.
    pub fn steps(&self) -> Vec<f32> {
        self.min
            .iter()
            .zip(&self.max)
            .map(|(lo, hi)| {
                let s = (hi - lo) / 255.0;
                if s == 0.0 { 1.0 } else { s }
            })
            .collect()
    }

    /// Writes the ranges: `.npy` gives a float32 array of shape (2, dims) like sentence-transformers' `ranges`
    /// (`np.load` it and pass it as `ranges=`); any other extension gives JSON `{"min": [...], "max": [...]}`
    /// with shortest round-trip floats.
    pub fn save(&self, path: &Path) -> Result<(), QuantizeError> {
        let err = |reason: String| QuantizeError::RangesFile {
            action: "write",
            path: path.display().to_string(),
            reason,
        };
        let bytes = if is_npy(path) {
            let mut data = Vec::with_capacity(self.min.len() * 8);
            for v in self.min.iter().chain(&self.max) {
                data.extend_from_slice(&v.to_le_bytes());
            }
            let mut buf = Vec::new();
            crate::npy::write_npy(&mut buf, "<f4", &[2, self.min.len()], &data)
                .map_err(|e| err(e.to_string()))?;
            buf
        } else {
            let mut s = serde_json::to_string(self).map_err(|e| err(e.to_string()))?;
            s.push('\n');
            s.into_bytes()
        };
        std::fs::write(path, bytes).map_err(|e| err(e.to_string()))
    }

    /// Reads ranges written by [`CalibrationRanges::save`], or a numpy `.npy` of shape (2, dims) in float32
    /// or float64 (converted to float32, as sentence-transformers does).
    pub fn load(path: &Path) -> Result<CalibrationRanges, QuantizeError> {
        let err = |reason: String| QuantizeError::RangesFile {
            action: "read",
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let ranges = if bytes.starts_with(crate::npy::MAGIC) {
            let arr = crate::npy::parse_npy(&bytes).map_err(|e| err(e.to_string()))?;
            if arr.shape.len() != 2 || arr.shape[0] != 2 {
                return Err(err(format!(
                    "expected an array of shape (2, dims), found {:?}",
                    arr.shape
                )));
            }
            let values = arr.to_f32_values().map_err(|e| err(e.to_string()))?;
            let dims = arr.shape[1];
            CalibrationRanges {
                min: values[..dims].to_vec(),
                max: values[dims..].to_vec(),
            }
        } else {
            serde_json::from_slice::<CalibrationRanges>(&bytes)
                .map_err(|e| err(format!("invalid JSON: {e}")))?
        };
        if ranges.min.len() != ranges.max.len() {
            return Err(err(format!(
                "min has {} values but max has {}",
                ranges.min.len(),
                ranges.max.len()
            )));
        }
        Ok(ranges)
    }
}

fn is_npy(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// Vectors converted to one [`Precision`]: `rows` vectors of `dims` source dimensions, stored as
/// `precision.row_bytes(dims)` little-endian bytes each.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedEmbeddings {
    precision: Precision,
    rows: usize,
    dims: usize,
    data: Vec<u8>,
}

impl QuantizedEmbeddings {
    /// The precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }
    /// Number of vectors.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Dimensions of the source vectors (binary rows hold `ceil(dims / 8)` bytes).
    pub fn dims(&self) -> usize {
        self.dims
    }
    /// Array elements per row (`dims`, or the packed byte count for binary).
    pub fn values_per_row(&self) -> usize {
        self.precision.values_per_row(self.dims)
    }
    /// The raw little-endian bytes, row-major.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }
    /// The bytes of row `i`.
    ///
    /// # Panics
    /// When `i >= rows()`, like slice indexing.
    pub fn row_bytes(&self, i: usize) -> &[u8] {
        let n = self.precision.row_bytes(self.dims);
        &self.data[i * n..(i + 1) * n]
    }
    /// Row `i` as numbers: integers for int8/uint8/binary/ubinary, the rounded values for float16/bfloat16.
    pub fn row_values(&self, i: usize) -> Vec<f64> {
        let b = self.row_bytes(i);
        match self.precision {
            Precision::F32 => b
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            Precision::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64())
                .collect(),
            Precision::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64())
                .collect(),
            Precision::Int8 | Precision::Binary => b.iter().map(|&x| f64::from(x as i8)).collect(),
            Precision::Uint8 | Precision::Ubinary => b.iter().map(|&x| f64::from(x)).collect(),
        }
    }
    /// Writes a numpy `.npy` array of shape (rows, values per row) with [`Precision::npy_descr`].
    pub fn write_npy(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        crate::npy::write_npy(
            w,
            self.precision.npy_descr(),
            &[self.rows, self.values_per_row()],
            &self.data,
        )
    }
    /// Consumes the value, returning the bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }
}

/// Converts `e` to `precision`. For int8/uint8, `ranges` are used when given, else computed from `e`
/// ("from the data"; an error for a single vector, as in sentence-transformers). Other precisions ignore
/// `ranges`.
pub fn quantize(
    e: &Embeddings,
    precision: Precision,
    ranges: Option<&CalibrationRanges>,
) -> Result<QuantizedEmbeddings, QuantizeError> {
    let mut data = Vec::with_capacity(e.rows() * precision.row_bytes(e.dims()));
    if e.rows() > 0 {
        let computed;
        let ranges = match (precision.needs_ranges(), ranges) {
            (false, _) => None,
            (true, Some(r)) => Some(r),
            (true, None) => {
                if e.rows() == 1 {
                    return Err(QuantizeError::SingleEmbedding(precision));
                }
                computed = CalibrationRanges::from_embeddings(e)?;
                Some(&computed)
            }
        };
        let quantizer = Quantizer::new(precision, e.dims(), ranges)?;
        for row in e.iter() {
            quantizer.quantize_row(row, &mut data);
        }
    }
    Ok(QuantizedEmbeddings {
        precision,
        rows: e.rows(),
        dims: e.dims(),
        data,
    })
}

/// A precision with its ranges prepared once, for converting rows one at a time (streaming writers).
#[derive(Debug, Clone)]
pub struct Quantizer {
    precision: Precision,
    dims: usize,
    starts: Vec<f32>,
    steps: Vec<f32>,
}

impl Quantizer {
    /// Prepares `precision` for `dims`-dimensional rows; int8/uint8 need `ranges`.
    pub fn new(
        precision: Precision,
        dims: usize,
        ranges: Option<&CalibrationRanges>,
    ) -> Result<Quantizer, QuantizeError> {
        let (starts, steps) = if precision.needs_ranges() {
            let r = ranges.ok_or(QuantizeError::MissingRanges(precision))?;
            r.validate(dims)?;
            (r.min.clone(), r.steps())
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(Quantizer {
            precision,
            dims,
            starts,
            steps,
        })
    }

    /// The precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Appends the converted bytes of `row` (which must have `dims` values) to `out`.
    pub fn quantize_row(&self, row: &[f32], out: &mut Vec<u8>) {
        debug_assert_eq!(row.len(), self.dims);
        match self.precision {
            Precision::F32 => {
                for x in row {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            Precision::F16 => {
                for &x in row {
                    out.extend_from_slice(&f16::from_f32(x).to_bits().to_le_bytes());
                }
            }
            Precision::BF16 => {
                for &x in row {
                    out.extend_from_slice(&bf16::from_f32(x).to_bits().to_le_bytes());
                }
            }
            Precision::Uint8 | Precision::Int8 => {
                let signed = self.precision == Precision::Int8;
                for ((&x, &start), &step) in row.iter().zip(&self.starts).zip(&self.steps) {
                    // Same float32 operations, in the same order, as numpy's
                    // clip(floor((x - starts) / steps), 0, 255). `as u8` maps NaN to 0.
                    let q = ((x - start) / step).floor().clamp(0.0, 255.0);
                    out.push(if signed {
                        (q - 128.0) as i8 as u8
                    } else {
                        q as u8
                    });
                }
            }
            Precision::Ubinary | Precision::Binary => {
                // packbits: most significant bit first; `binary` subtracts 128 (wrapping), i.e. flips bit 7.
                let flip = if self.precision == Precision::Binary {
                    0x80
                } else {
                    0
                };
                for chunk in row.chunks(8) {
                    let mut byte = 0u8;
                    for (i, &x) in chunk.iter().enumerate() {
                        if x > 0.0 {
                            byte |= 0x80 >> i;
                        }
                    }
                    out.push(byte ^ flip);
                }
            }
        }
    }
}

/// Restores int8/uint8 rows to floats in the query's coordinates: `(q [+128]) · step + min`, computed in
/// float64 like sentence-transformers' `_dequantize_embeddings`, then rounded to float32. f16/bf16/f32 rows
/// are widened; binary rows unpack to 0.0/1.0 per bit (padding bits dropped), which is what
/// sentence-transformers' rescoring multiplies the float query with.
pub fn dequantize(
    q: &QuantizedEmbeddings,
    ranges: Option<&CalibrationRanges>,
) -> Result<Embeddings, QuantizeError> {
    let dims = q.dims;
    let mut out = Vec::with_capacity(q.rows * dims);
    let (starts, steps) = if q.precision.needs_ranges() {
        let r = ranges.ok_or(QuantizeError::MissingRanges(q.precision))?;
        r.validate(dims)?;
        (r.min.clone(), r.steps())
    } else {
        (Vec::new(), Vec::new())
    };
    for i in 0..q.rows {
        let b = q.row_bytes(i);
        match q.precision {
            Precision::Int8 | Precision::Uint8 => {
                let offset = if q.precision == Precision::Int8 {
                    128.0
                } else {
                    0.0
                };
                for ((&x, &start), &step) in b.iter().zip(&starts).zip(&steps) {
                    let v = if q.precision == Precision::Int8 {
                        f64::from(x as i8)
                    } else {
                        f64::from(x)
                    };
                    out.push(((v + offset) * f64::from(step) + f64::from(start)) as f32);
                }
            }
            Precision::Binary | Precision::Ubinary => {
                let flip = if q.precision == Precision::Binary {
                    0x80
                } else {
                    0
                };
                for j in 0..dims {
                    let byte = b[j / 8] ^ flip;
                    out.push(f32::from((byte >> (7 - j % 8)) & 1));
                }
            }
            _ => out.extend(q.row_values(i).into_iter().map(|v| v as f32)),
        }
    }
    Embeddings::new(out, q.rows, dims).map_err(|e| QuantizeError::BadRanges(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(rows: Vec<Vec<f32>>) -> Embeddings {
        Embeddings::from_rows(rows).unwrap()
    }

    #[test]
    fn names_round_trip() {
        for p in Precision::ALL {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert!("int4".parse::<Precision>().is_err());
    }

    #[test]
    fn int8_matches_hand_computation() {
        // Column 0: min -1, max 1, step 2/255; column 1 is constant, so its step is 1. The maximum lands on
        // 254, not 255: 2 / (2/255) is just below 255 in float32 and floor keeps it there — numpy gives the
        // same ([0 0 254 0 127 0] from sentence-transformers 6.2).
        let e = emb(vec![vec![-1.0, 0.5], vec![1.0, 0.5], vec![0.0, 0.5]]);
        let u = quantize(&e, Precision::Uint8, None).unwrap();
        assert_eq!(u.as_bytes(), &[0, 0, 254, 0, 127, 0]);
        let i = quantize(&e, Precision::Int8, None).unwrap();
        let v: Vec<i8> = i.as_bytes().iter().map(|&b| b as i8).collect();
        assert_eq!(v, vec![-128, -128, 126, -128, -1, -128]);
    }

    #[test]
    fn binary_packs_msb_first_and_pads() {
        let e = emb(vec![vec![
            1.0,
            -1.0,
            0.0,
            2.0,
            0.0,
            0.0,
            0.0,
            0.1,
            /* next byte */ 3.0,
            f32::NAN,
        ]]);
        let u = quantize(&e, Precision::Ubinary, None).unwrap();
        assert_eq!(u.as_bytes(), &[0b1001_0001, 0b1000_0000]);
        let b = quantize(&e, Precision::Binary, None).unwrap();
        assert_eq!(b.as_bytes(), &[0b0001_0001, 0b0000_0000]);
        assert_eq!(b.values_per_row(), 2);
        let back = dequantize(&b, None).unwrap();
        assert_eq!(
            back.row(0),
            &[1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
        );
    }

    #[test]
    fn single_vector_needs_ranges() {
        let e = emb(vec![vec![1.0, 2.0]]);
        assert!(matches!(
            quantize(&e, Precision::Int8, None),
            Err(QuantizeError::SingleEmbedding(Precision::Int8))
        ));
        let r = CalibrationRanges {
            min: vec![0.0, 0.0],
            max: vec![2.0, 2.0],
        };
        assert!(quantize(&e, Precision::Int8, Some(&r)).is_ok());
        let bad = CalibrationRanges {
            min: vec![0.0],
            max: vec![2.0],
        };
        assert!(matches!(
            quantize(&e, Precision::Int8, Some(&bad)),
            Err(QuantizeError::RangesDims { ranges: 1, dims: 2 })
        ));
    }

    #[test]
    fn dequantize_inverts_within_one_step() {
        let e = emb(vec![
            vec![-0.3, 0.9, 0.1],
            vec![0.2, -0.7, 0.4],
            vec![0.0, 0.0, 0.0],
        ]);
        let r = CalibrationRanges::from_embeddings(&e).unwrap();
        let q = quantize(&e, Precision::Int8, Some(&r)).unwrap();
        let d = dequantize(&q, Some(&r)).unwrap();
        for (a, b) in e.as_slice().iter().zip(d.as_slice()) {
            assert!((a - b).abs() <= 1.6 / 255.0 + 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn ranges_save_and_load_json_and_npy() {
        let dir = tempfile::tempdir().unwrap();
        let r = CalibrationRanges {
            min: vec![-0.123_456_79, 1e-30, -3.0],
            max: vec![0.987_654_3, 2.5, f32::MAX],
        };
        for name in ["r.json", "r.npy"] {
            let p = dir.path().join(name);
            r.save(&p).unwrap();
            assert_eq!(CalibrationRanges::load(&p).unwrap(), r, "{name}");
        }
        let p = dir.path().join("bad.json");
        std::fs::write(&p, "{\"min\": [1], \"max\": []}").unwrap();
        let e = CalibrationRanges::load(&p).unwrap_err().to_string();
        assert!(e.contains("bad.json") && e.contains("min has 1"), "{e}");
    }
}
