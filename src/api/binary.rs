//! The binary tensor extension: raw little-endian, row-major tensor bytes after the JSON header
//! (`BYTES` elements as a 4-byte little-endian length followed by the bytes).

use crate::engine::{DataType, TensorData};
use half::f16;

macro_rules! decode_fixed {
    ($bytes:expr, $ty:ty, $variant:ident) => {
        TensorData::$variant(
            $bytes
                .chunks_exact(std::mem::size_of::<$ty>())
                .map(|chunk| {
                    let mut raw = [0u8; std::mem::size_of::<$ty>()];
                    raw.copy_from_slice(chunk);
                    <$ty>::from_le_bytes(raw)
                })
                .collect(),
        )
    };
}

/// Decodes `count` elements of `dtype` from `bytes`, which must hold exactly that many.
///
/// # Errors
/// A message saying how many bytes were expected or what is malformed.
pub fn decode(bytes: &[u8], dtype: DataType, count: usize) -> Result<TensorData, String> {
    let Some(size) = dtype.element_size() else {
        return decode_strings(bytes, count);
    };
    let expected = count.checked_mul(size).ok_or("the tensor is too large")?;
    if bytes.len() != expected {
        return Err(format!(
            "{count} {dtype} elements need {expected} bytes, got {}",
            bytes.len()
        ));
    }
    Ok(match dtype {
        DataType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DataType::U8 => TensorData::U8(bytes.to_vec()),
        DataType::I8 => TensorData::I8(bytes.iter().map(|&b| i8::from_le_bytes([b])).collect()),
        DataType::U16 => decode_fixed!(bytes, u16, U16),
        DataType::I16 => decode_fixed!(bytes, i16, I16),
        DataType::F16 => TensorData::F16(
            bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        DataType::U32 => decode_fixed!(bytes, u32, U32),
        DataType::I32 => decode_fixed!(bytes, i32, I32),
        DataType::F32 => decode_fixed!(bytes, f32, F32),
        DataType::U64 => decode_fixed!(bytes, u64, U64),
        DataType::I64 => decode_fixed!(bytes, i64, I64),
        DataType::F64 => decode_fixed!(bytes, f64, F64),
        DataType::String => return decode_strings(bytes, count),
    })
}

fn decode_strings(mut bytes: &[u8], count: usize) -> Result<TensorData, String> {
    let mut out = Vec::with_capacity(count.min(bytes.len() / 4));
    while !bytes.is_empty() {
        if bytes.len() < 4 {
            return Err("a BYTES element is cut short in its 4-byte length".into());
        }
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let rest = &bytes[4..];
        if rest.len() < len {
            return Err(format!(
                "a BYTES element declares {len} bytes but {} remain",
                rest.len()
            ));
        }
        let text = std::str::from_utf8(&rest[..len])
            .map_err(|_| "BYTES elements must be UTF-8 text for ONNX string inputs")?;
        out.push(text.to_string());
        bytes = &rest[len..];
    }
    if out.len() != count {
        return Err(format!(
            "the shape needs {count} BYTES elements, got {}",
            out.len()
        ));
    }
    Ok(TensorData::String(out))
}

/// Appends the binary encoding of `data` to `out`.
pub fn encode(data: &TensorData, out: &mut Vec<u8>) {
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        TensorData::U8(v) => out.extend_from_slice(v),
        TensorData::I8(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        TensorData::U16(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        TensorData::I16(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        TensorData::F16(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        TensorData::U32(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        TensorData::I32(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        TensorData::F32(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        TensorData::U64(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        TensorData::I64(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        TensorData::F64(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        TensorData::String(v) => {
            for s in v {
                let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips() {
        let samples = vec![
            TensorData::Bool(vec![true, false]),
            TensorData::U8(vec![1, 255]),
            TensorData::I8(vec![-1, 7]),
            TensorData::U16(vec![1, 65535]),
            TensorData::I16(vec![-300, 2]),
            TensorData::F16(vec![f16::from_f32(1.5), f16::from_f32(-2.0)]),
            TensorData::U32(vec![1, u32::MAX]),
            TensorData::I32(vec![-5, 6]),
            TensorData::F32(vec![0.25, -1e10]),
            TensorData::U64(vec![u64::MAX, 0]),
            TensorData::I64(vec![i64::MIN, 3]),
            TensorData::F64(vec![1e-300, 2.0]),
            TensorData::String(vec!["setosa".into(), String::new()]),
        ];
        for data in samples {
            let mut bytes = Vec::new();
            encode(&data, &mut bytes);
            assert_eq!(
                decode(&bytes, data.dtype(), 2),
                Ok(data.clone()),
                "{:?}",
                data.dtype()
            );
        }
    }

    #[test]
    fn wrong_sizes_are_explained() {
        let err = decode(&[0u8; 7], DataType::F32, 2).unwrap_err();
        assert!(err.contains("need 8 bytes, got 7"), "{err}");
        let err = decode(&[5, 0, 0, 0, b'a'], DataType::String, 1).unwrap_err();
        assert!(err.contains("declares 5 bytes"), "{err}");
    }
}
