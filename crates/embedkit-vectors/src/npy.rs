//! Reading and writing numpy `.npy` arrays (format versions 1–3, C order, little-endian numbers).

use embedkit_core::Embeddings;
use std::io::Write;
use std::path::Path;

/// The first bytes of every `.npy` file.
pub const MAGIC: &[u8] = b"\x93NUMPY";

/// Why an `.npy` could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be read.
    #[error("cannot read '{path}': {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not an `.npy`, or a header this reader does not understand.
    #[error("not a valid .npy array: {0}")]
    Format(String),
    /// A valid array of a kind the caller cannot use.
    #[error("unsupported .npy array: {0}")]
    Unsupported(String),
}

/// A parsed `.npy`: dtype string, shape and the raw data bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// numpy `descr`, e.g. `<f4`, `|i1`.
    pub descr: String,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// The element bytes, row-major.
    pub data: Vec<u8>,
}

/// Reads an `.npy` file.
pub fn read_npy(path: &Path) -> Result<NpyArray, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_npy(&bytes)
}

/// Parses `.npy` bytes.
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray, NpyError> {
    let fmt = |m: &str| NpyError::Format(m.to_string());
    if !bytes.starts_with(MAGIC) || bytes.len() < 10 {
        return Err(fmt("missing the \\x93NUMPY magic"));
    }
    let major = bytes[6];
    let (header_len, start): (usize, usize) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(fmt("truncated header"));
            }
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (n as usize, 12)
        }
        v => return Err(NpyError::Format(format!("format version {v} is unknown"))),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| fmt("truncated header"))?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| fmt("header is not text"))?;
    let descr = dict_value(header, "descr")
        .and_then(|v| v.strip_prefix('\'').and_then(|v| v.split('\'').next()))
        .ok_or_else(|| fmt("header has no 'descr'"))?
        .to_string();
    let fortran =
        dict_value(header, "fortran_order").ok_or_else(|| fmt("header has no 'fortran_order'"))?;
    if fortran.starts_with("True") {
        return Err(NpyError::Unsupported(
            "Fortran-ordered arrays (save a C-ordered copy: np.ascontiguousarray)".into(),
        ));
    }
    let shape_text = dict_value(header, "shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| fmt("header has no 'shape'"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| NpyError::Format(format!("bad shape entry '{s}'")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let item = item_size(&descr)?;
    let expected = shape
        .iter()
        .try_fold(item, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| fmt("shape overflows"))?;
    let data = &bytes[end..];
    if data.len() != expected {
        return Err(NpyError::Format(format!(
            "shape {shape:?} of {descr} needs {expected} data bytes, the file has {}",
            data.len()
        )));
    }
    Ok(NpyArray {
        descr,
        shape,
        data: data.to_vec(),
    })
}

/// The text after `'key':` in a header dict.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}':");
    let i = header.find(&pat)?;
    Some(header[i + pat.len()..].trim_start())
}

fn item_size(descr: &str) -> Result<usize, NpyError> {
    let (order, kind) = descr.split_at(descr.len().min(1));
    if order == ">" {
        return Err(NpyError::Unsupported(format!("big-endian dtype {descr}")));
    }
    match kind {
        "f4" | "i4" | "u4" => Ok(4),
        "f2" | "i2" | "u2" => Ok(2),
        "f8" | "i8" | "u8" => Ok(8),
        "i1" | "u1" | "b1" => Ok(1),
        _ => Err(NpyError::Unsupported(format!("dtype {descr}"))),
    }
}

impl NpyArray {
    /// The float32 values (float64 values rounded to float32, float16 widened).
    pub fn to_f32_values(&self) -> Result<Vec<f32>, NpyError> {
        let kind = self.descr.get(1..).unwrap_or("");
        Ok(match kind {
            "f4" => self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            "f8" => self
                .data
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    f64::from_le_bytes(b) as f32
                })
                .collect(),
            "f2" => self
                .data
                .chunks_exact(2)
                .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            _ => {
                return Err(NpyError::Unsupported(format!(
                    "expected a float array, found dtype {}",
                    self.descr
                )));
            }
        })
    }

    /// The array as a float32 matrix. Only float32 input is accepted: quantizing float64 or float16 in
    /// sentence-transformers computes in that dtype, so converting here would not give its bytes.
    pub fn to_embeddings(&self) -> Result<Embeddings, NpyError> {
        if self.descr != "<f4" && self.descr != "=f4" {
            return Err(NpyError::Unsupported(format!(
                "expected float32 embeddings ('<f4'), found dtype '{}' (convert with .astype(np.float32))",
                self.descr
            )));
        }
        let (rows, dims) = match self.shape[..] {
            [rows, dims] => (rows, dims),
            [dims] => (1, dims),
            _ => {
                return Err(NpyError::Unsupported(format!(
                    "expected a 2-D (vectors, dims) array, found shape {:?}",
                    self.shape
                )));
            }
        };
        Embeddings::new(self.to_f32_values()?, rows, dims)
            .map_err(|e| NpyError::Format(e.to_string()))
    }
}

/// Writes a C-ordered `.npy` v1.0 array of `descr` with `shape` from raw little-endian `data`.
pub fn write_npy(
    w: &mut impl Write,
    descr: &str,
    shape: &[usize],
    data: &[u8],
) -> std::io::Result<()> {
    write_npy_header(w, descr, shape)?;
    w.write_all(data)
}

/// Writes only the `.npy` v1.0 header; `shape`'s product of elements must follow.
pub fn write_npy_header(w: &mut impl Write, descr: &str, shape: &[usize]) -> std::io::Result<()> {
    let shape_text = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // magic (6) + version (2) + length (2) + dict + padding + '\n' is a multiple of 64, as numpy writes it.
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header_len = u16::try_from(dict.len() + pad + 1).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "npy header too long")
    })?;
    w.write_all(MAGIC)?;
    w.write_all(&[1, 0])?;
    w.write_all(&header_len.to_le_bytes())?;
    w.write_all(dict.as_bytes())?;
    w.write_all(&vec![b' '; pad])?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_parse() {
        let mut buf = Vec::new();
        write_npy(&mut buf, "|i1", &[2, 3], &[1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!((buf.len() - 6) % 64, 0);
        let a = parse_npy(&buf).unwrap();
        assert_eq!(a.descr, "|i1");
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rejects_short_data_and_wrong_dtype() {
        let mut buf = Vec::new();
        write_npy(&mut buf, "<f4", &[2, 2], &[0; 12]).unwrap();
        assert!(
            parse_npy(&buf)
                .unwrap_err()
                .to_string()
                .contains("needs 16 data bytes")
        );
        let mut buf = Vec::new();
        write_npy(&mut buf, "<f8", &[1, 1], &[0; 8]).unwrap();
        let e = parse_npy(&buf).unwrap().to_embeddings().unwrap_err();
        assert!(e.to_string().contains("float32"), "{e}");
        assert!(parse_npy(b"hello").is_err());
    }
}
