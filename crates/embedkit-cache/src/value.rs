//! The stored form of a vector: `magic(3) version(1) dtype(1) dims(u32 LE) payload`.
//!
//! The header makes every read self-checking: a value written by another version, at another precision or
//! with another number of dimensions decodes to `None` (a miss) instead of being reinterpreted.

/// First bytes of every value.
pub const VALUE_MAGIC: [u8; 3] = *b"EKV";
/// Layout version of values this build writes and reads.
pub const VALUE_VERSION: u8 = 1;

const HEADER: usize = 3 + 1 + 1 + 4;

/// Element type of a stored vector. Only `F32` is written today; the byte is there so that quantized
/// vectors can be stored later without old readers misreading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Dtype {
    /// Little-endian IEEE 754 single precision.
    F32 = 0,
}

/// Encodes an f32 vector.
pub fn encode_f32(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 4 * v.len());
    out.extend_from_slice(&VALUE_MAGIC);
    out.push(VALUE_VERSION);
    out.push(Dtype::F32 as u8);
    // Vectors have at most a few thousand dims; a length beyond u32 cannot come from a model.
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Decodes a value written by [`encode_f32`] with exactly `dims` dimensions; `None` for anything else.
pub fn decode_f32(bytes: &[u8], dims: usize) -> Option<Vec<f32>> {
    let mut v = vec![0f32; dims];
    decode_f32_into(bytes, &mut v).then_some(v)
}

/// Decodes into `out` (whose length is the expected dims); `false`, leaving `out` unspecified, when the
/// value is not an f32 vector of that length.
pub fn decode_f32_into(bytes: &[u8], out: &mut [f32]) -> bool {
    let Some((header, payload)) = bytes.split_at_checked(HEADER) else {
        return false;
    };
    if header[..3] != VALUE_MAGIC || header[3] != VALUE_VERSION || header[4] != Dtype::F32 as u8 {
        return false;
    }
    let dims = u32::from_le_bytes([header[5], header[6], header[7], header[8]]) as usize;
    if dims != out.len() || payload.len() != dims * 4 {
        return false;
    }
    for (o, c) in out.iter_mut().zip(payload.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_bit_exact() {
        let v = [0.0, -0.0, 1.5, f32::MIN_POSITIVE, -3.25e-12, f32::MAX];
        let bytes = encode_f32(&v);
        assert_eq!(bytes.len(), HEADER + 24);
        let back = decode_f32(&bytes, v.len()).unwrap();
        for (a, b) in v.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn wrong_dims_dtype_version_or_length_is_a_miss() {
        let bytes = encode_f32(&[1.0, 2.0, 3.0]);
        assert!(decode_f32(&bytes, 2).is_none());
        assert!(decode_f32(&bytes, 4).is_none());
        let mut b = bytes.clone();
        b[4] = 1; // another dtype
        assert!(decode_f32(&b, 3).is_none());
        let mut b = bytes.clone();
        b[3] = VALUE_VERSION + 1;
        assert!(decode_f32(&b, 3).is_none());
        let mut b = bytes.clone();
        b[0] = b'X';
        assert!(decode_f32(&b, 3).is_none());
        assert!(decode_f32(&bytes[..bytes.len() - 1], 3).is_none());
        let mut b = bytes.clone();
        b.push(0);
        assert!(decode_f32(&b, 3).is_none());
        assert!(decode_f32(&[], 0).is_none());
        assert!(decode_f32(b"garbage that is long enough", 3).is_none());
        assert_eq!(decode_f32(&encode_f32(&[]), 0), Some(vec![]));
    }
}
