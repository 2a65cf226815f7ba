//! Element types, owned tensors and the exact-enough conversions between element types.
//!
//! A request may send any numeric datatype; the model declares one. [`cast`] converts between them
//! and refuses any value that would change meaning (a fraction into an integer, an out-of-range
//! integer, a non-finite float, a number into a string).

use half::f16;
use std::fmt;

/// The element type of a tensor, as ONNX and the Open Inference Protocol name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `BOOL`
    Bool,
    /// `UINT8`
    U8,
    /// `UINT16`
    U16,
    /// `UINT32`
    U32,
    /// `UINT64`
    U64,
    /// `INT8`
    I8,
    /// `INT16`
    I16,
    /// `INT32`
    I32,
    /// `INT64`
    I64,
    /// `FP16`
    F16,
    /// `FP32`
    F32,
    /// `FP64`
    F64,
    /// `BYTES` (UTF-8 strings in ONNX)
    String,
}

impl DataType {
    /// Every datatype, in the order the protocol lists them.
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::U8,
        DataType::U16,
        DataType::U32,
        DataType::U64,
        DataType::I8,
        DataType::I16,
        DataType::I32,
        DataType::I64,
        DataType::F16,
        DataType::F32,
        DataType::F64,
        DataType::String,
    ];

    /// The Open Inference Protocol name (`FP32`, `INT64`, `BYTES`, ...).
    pub fn protocol_name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::U8 => "UINT8",
            DataType::U16 => "UINT16",
            DataType::U32 => "UINT32",
            DataType::U64 => "UINT64",
            DataType::I8 => "INT8",
            DataType::I16 => "INT16",
            DataType::I32 => "INT32",
            DataType::I64 => "INT64",
            DataType::F16 => "FP16",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
            DataType::String => "BYTES",
        }
    }

    /// Parses a protocol name; `None` for anything the gateway does not know.
    pub fn from_protocol_name(name: &str) -> Option<DataType> {
        DataType::ALL
            .into_iter()
            .find(|dtype| dtype.protocol_name() == name)
    }

    /// Bytes per element in the binary tensor encoding; `None` for variable-size `BYTES`.
    pub fn element_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::U8 | DataType::I8 => Some(1),
            DataType::U16 | DataType::I16 | DataType::F16 => Some(2),
            DataType::U32 | DataType::I32 | DataType::F32 => Some(4),
            DataType::U64 | DataType::I64 | DataType::F64 => Some(8),
            DataType::String => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.protocol_name())
    }
}

/// The elements of a tensor, row-major, one variant per [`DataType`].
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `BOOL`
    Bool(Vec<bool>),
    /// `UINT8`
    U8(Vec<u8>),
    /// `UINT16`
    U16(Vec<u16>),
    /// `UINT32`
    U32(Vec<u32>),
    /// `UINT64`
    U64(Vec<u64>),
    /// `INT8`
    I8(Vec<i8>),
    /// `INT16`
    I16(Vec<i16>),
    /// `INT32`
    I32(Vec<i32>),
    /// `INT64`
    I64(Vec<i64>),
    /// `FP16`
    F16(Vec<f16>),
    /// `FP32`
    F32(Vec<f32>),
    /// `FP64`
    F64(Vec<f64>),
    /// `BYTES`
    String(Vec<String>),
}

/// Expands `$body` once per variant, binding the vector to `$v`.
#[macro_export]
#[doc(hidden)]
macro_rules! each_tensor_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::engine::TensorData::Bool($v) => $body,
            $crate::engine::TensorData::U8($v) => $body,
            $crate::engine::TensorData::U16($v) => $body,
            $crate::engine::TensorData::U32($v) => $body,
            $crate::engine::TensorData::U64($v) => $body,
            $crate::engine::TensorData::I8($v) => $body,
            $crate::engine::TensorData::I16($v) => $body,
            $crate::engine::TensorData::I32($v) => $body,
            $crate::engine::TensorData::I64($v) => $body,
            $crate::engine::TensorData::F16($v) => $body,
            $crate::engine::TensorData::F32($v) => $body,
            $crate::engine::TensorData::F64($v) => $body,
            $crate::engine::TensorData::String($v) => $body,
        }
    };
}

impl TensorData {
    /// The element type of these values.
    pub fn dtype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::U8(_) => DataType::U8,
            TensorData::U16(_) => DataType::U16,
            TensorData::U32(_) => DataType::U32,
            TensorData::U64(_) => DataType::U64,
            TensorData::I8(_) => DataType::I8,
            TensorData::I16(_) => DataType::I16,
            TensorData::I32(_) => DataType::I32,
            TensorData::I64(_) => DataType::I64,
            TensorData::F16(_) => DataType::F16,
            TensorData::F32(_) => DataType::F32,
            TensorData::F64(_) => DataType::F64,
            TensorData::String(_) => DataType::String,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each_tensor_data!(self, v => v.len())
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements `start..end` as a new tensor data of the same type (used to split batches).
    pub fn slice(&self, start: usize, end: usize) -> TensorData {
        match self {
            TensorData::Bool(v) => TensorData::Bool(v[start..end].to_vec()),
            TensorData::U8(v) => TensorData::U8(v[start..end].to_vec()),
            TensorData::U16(v) => TensorData::U16(v[start..end].to_vec()),
            TensorData::U32(v) => TensorData::U32(v[start..end].to_vec()),
            TensorData::U64(v) => TensorData::U64(v[start..end].to_vec()),
            TensorData::I8(v) => TensorData::I8(v[start..end].to_vec()),
            TensorData::I16(v) => TensorData::I16(v[start..end].to_vec()),
            TensorData::I32(v) => TensorData::I32(v[start..end].to_vec()),
            TensorData::I64(v) => TensorData::I64(v[start..end].to_vec()),
            TensorData::F16(v) => TensorData::F16(v[start..end].to_vec()),
            TensorData::F32(v) => TensorData::F32(v[start..end].to_vec()),
            TensorData::F64(v) => TensorData::F64(v[start..end].to_vec()),
            TensorData::String(v) => TensorData::String(v[start..end].to_vec()),
        }
    }

    /// Appends `other`'s elements; false (and nothing appended) when the types differ.
    pub fn extend_from(&mut self, other: &TensorData) -> bool {
        macro_rules! extend {
            ($($variant:ident),*) => {
                match (self, other) {
                    $((TensorData::$variant(mine), TensorData::$variant(theirs)) => {
                        mine.extend_from_slice(theirs);
                        true
                    })*
                    _ => false,
                }
            };
        }
        extend!(
            Bool, U8, U16, U32, U64, I8, I16, I32, I64, F16, F32, F64, String
        )
    }

    /// Element `index` as an `f64`, for numeric data (`None` for strings or out of range).
    pub fn get_f64(&self, index: usize) -> Option<f64> {
        Some(match self {
            TensorData::Bool(v) => f64::from(u8::from(*v.get(index)?)),
            TensorData::U8(v) => f64::from(*v.get(index)?),
            TensorData::U16(v) => f64::from(*v.get(index)?),
            TensorData::U32(v) => f64::from(*v.get(index)?),
            TensorData::U64(v) => *v.get(index)? as f64,
            TensorData::I8(v) => f64::from(*v.get(index)?),
            TensorData::I16(v) => f64::from(*v.get(index)?),
            TensorData::I32(v) => f64::from(*v.get(index)?),
            TensorData::I64(v) => *v.get(index)? as f64,
            TensorData::F16(v) => f64::from(*v.get(index)?),
            TensorData::F32(v) => f64::from(*v.get(index)?),
            TensorData::F64(v) => *v.get(index)?,
            TensorData::String(_) => return None,
        })
    }

    /// Element `index` rendered as text: strings as they are, numbers in their shortest form.
    pub fn get_text(&self, index: usize) -> Option<String> {
        match self {
            TensorData::String(v) => v.get(index).cloned(),
            TensorData::Bool(v) => v.get(index).map(|b| b.to_string()),
            TensorData::I64(v) => v.get(index).map(|x| x.to_string()),
            TensorData::I32(v) => v.get(index).map(|x| x.to_string()),
            TensorData::U64(v) => v.get(index).map(|x| x.to_string()),
            other => other.get_f64(index).map(|x| x.to_string()),
        }
    }
}

/// A tensor: shape plus row-major elements. `shape.iter().product() == data.len()` always holds
/// for tensors built through [`Tensor::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// The tensors stacked along their first dimension (rows); `None` when they differ in type
    /// or in any other dimension, or when there are none.
    pub fn concat_rows(parts: &[&Tensor]) -> Option<Tensor> {
        let (first, rest) = parts.split_first()?;
        let tail = first.shape.get(1..)?;
        let mut shape = first.shape.clone();
        let mut data = first.data.clone();
        for part in rest {
            if part.shape.get(1..)? != tail || !data.extend_from(&part.data) {
                return None;
            }
            shape[0] += part.shape[0];
        }
        Tensor::new(shape, data).ok()
    }

    /// The tensor cut along its first dimension into pieces of `rows` rows each; `None` when
    /// the rows do not add up to its first dimension.
    pub fn split_rows(&self, rows: &[usize]) -> Option<Vec<Tensor>> {
        let total = *self.shape.first()?;
        if rows.iter().sum::<usize>() != total {
            return None;
        }
        let per_row = element_count(&self.shape[1..])?;
        let mut start = 0;
        rows.iter()
            .map(|&count| {
                let end = start + count * per_row;
                let mut shape = self.shape.clone();
                shape[0] = count;
                let piece = Tensor::new(shape, self.data.slice(start, end)).ok();
                start = end;
                piece
            })
            .collect()
    }

    /// Builds a tensor, checking that the shape holds exactly the given elements.
    ///
    /// # Errors
    /// [`ShapeError`] when the element count does not match the shape (or the product overflows).
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, ShapeError> {
        let expected = element_count(&shape).ok_or(ShapeError {
            shape: shape.clone(),
            found: data.len(),
        })?;
        if expected != data.len() {
            return Err(ShapeError {
                shape,
                found: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }

    /// A one-dimensional tensor holding `data` (infallible: the shape is the element count).
    pub fn vector(data: TensorData) -> Tensor {
        Tensor {
            shape: vec![data.len()],
            data,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// Splits into shape and elements.
    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }

    /// Element type.
    pub fn dtype(&self) -> DataType {
        self.data.dtype()
    }
}

/// The product of a shape's dimensions, `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |count, &dim| count.checked_mul(dim))
}

/// A shape that does not hold the number of elements given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shape {shape:?} does not hold {found} elements")]
pub struct ShapeError {
    /// The shape asked for.
    pub shape: Vec<usize>,
    /// The number of elements given.
    pub found: usize,
}

/// A value that cannot be converted to the model's element type without changing its meaning.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("element {index} ({value}) cannot be converted from {from} to {to}: {why}")]
pub struct CastError {
    /// Position of the offending element, row-major.
    pub index: usize,
    /// The value, as text.
    pub value: String,
    /// The datatype sent.
    pub from: DataType,
    /// The datatype the model needs.
    pub to: DataType,
    /// Why it cannot be converted.
    pub why: &'static str,
}

/// One element on its way between types: integers widened to `i128`, floats to `f64`.
#[derive(Clone, Copy)]
enum Scalar {
    Bool(bool),
    Int(i128),
    Float(f64),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
        }
    }
}

fn scalars(data: &TensorData) -> Option<Vec<Scalar>> {
    Some(match data {
        TensorData::Bool(v) => v.iter().map(|&b| Scalar::Bool(b)).collect(),
        TensorData::U8(v) => v.iter().map(|&x| Scalar::Int(x.into())).collect(),
        TensorData::U16(v) => v.iter().map(|&x| Scalar::Int(x.into())).collect(),
        TensorData::U32(v) => v.iter().map(|&x| Scalar::Int(x.into())).collect(),
        TensorData::U64(v) => v.iter().map(|&x| Scalar::Int(x.into())).collect(),
        TensorData::I8(v) => v.iter().map(|&x| Scalar::Int(x.into())).collect(),
        TensorData::I16(v) => v.iter().map(|&x| Scalar::Int(x.into())).collect(),
        TensorData::I32(v) => v.iter().map(|&x| Scalar::Int(x.into())).collect(),
        TensorData::I64(v) => v.iter().map(|&x| Scalar::Int(x.into())).collect(),
        TensorData::F16(v) => v.iter().map(|&x| Scalar::Float(x.into())).collect(),
        TensorData::F32(v) => v.iter().map(|&x| Scalar::Float(x.into())).collect(),
        TensorData::F64(v) => v.iter().map(|&x| Scalar::Float(x)).collect(),
        TensorData::String(_) => return None,
    })
}

/// Largest integer magnitude a float type holds exactly (2^mantissa bits).
fn exact_integer_limit(to: DataType) -> i128 {
    match to {
        DataType::F16 => 1 << 11,
        DataType::F32 => 1 << 24,
        _ => 1 << 53,
    }
}

fn to_float(scalar: Scalar, to: DataType) -> Result<f64, &'static str> {
    match scalar {
        Scalar::Bool(b) => Ok(f64::from(u8::from(b))),
        Scalar::Int(i) if i.abs() <= exact_integer_limit(to) => Ok(i as f64),
        Scalar::Int(_) => Err("the integer is too large to be represented exactly"),
        Scalar::Float(x) if !x.is_finite() => Err("the model needs finite numbers"),
        Scalar::Float(x) => {
            let fits = match to {
                DataType::F16 => f16::from_f64(x).is_finite(),
                DataType::F32 => (x as f32).is_finite(),
                _ => true,
            };
            if fits {
                Ok(x)
            } else {
                Err("the value is outside the range of the model's float type")
            }
        }
    }
}

fn to_int(scalar: Scalar) -> Result<i128, &'static str> {
    match scalar {
        Scalar::Bool(b) => Ok(i128::from(u8::from(b))),
        Scalar::Int(i) => Ok(i),
        Scalar::Float(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1.8e19 => Ok(x as i128),
        Scalar::Float(_) => Err("the model needs integers"),
    }
}

fn to_bool(scalar: Scalar) -> Result<bool, &'static str> {
    match scalar {
        Scalar::Bool(b) => Ok(b),
        Scalar::Int(0) => Ok(false),
        Scalar::Int(1) => Ok(true),
        Scalar::Float(0.0) => Ok(false),
        Scalar::Float(1.0) => Ok(true),
        _ => Err("the model needs booleans (0 or 1)"),
    }
}

/// Converts `data` to the element type `to`, refusing any element whose meaning would change.
///
/// # Errors
/// [`CastError`] naming the first element that cannot be converted.
pub fn cast(data: TensorData, to: DataType) -> Result<TensorData, CastError> {
    let from = data.dtype();
    if from == to {
        return match data {
            TensorData::F32(v) => check_finite(v, from).map(TensorData::F32),
            TensorData::F64(v) => check_finite(v, from).map(TensorData::F64),
            TensorData::F16(v) => {
                if let Some(index) = v.iter().position(|x| !x.is_finite()) {
                    return Err(non_finite(index, f64::from(v[index]), from));
                }
                Ok(TensorData::F16(v))
            }
            other => Ok(other),
        };
    }
    let Some(values) = scalars(&data) else {
        return Err(CastError {
            index: 0,
            value: data.get_text(0).unwrap_or_default(),
            from,
            to,
            why: "text cannot be converted to numbers",
        });
    };
    let fail = |index: usize, scalar: Scalar, why: &'static str| CastError {
        index,
        value: scalar.to_string(),
        from,
        to,
        why,
    };
    macro_rules! convert_float {
        ($variant:ident, $conv:expr) => {{
            let mut out = Vec::with_capacity(values.len());
            for (index, &scalar) in values.iter().enumerate() {
                let x = to_float(scalar, to).map_err(|why| fail(index, scalar, why))?;
                out.push($conv(x));
            }
            Ok(TensorData::$variant(out))
        }};
    }
    macro_rules! convert_int {
        ($variant:ident) => {{
            let mut out = Vec::with_capacity(values.len());
            for (index, &scalar) in values.iter().enumerate() {
                let wide = to_int(scalar).map_err(|why| fail(index, scalar, why))?;
                let narrow = wide.try_into().map_err(|_| {
                    fail(
                        index,
                        scalar,
                        "the value is outside the model's integer range",
                    )
                })?;
                out.push(narrow);
            }
            Ok(TensorData::$variant(out))
        }};
    }
    match to {
        DataType::F32 => convert_float!(F32, |x: f64| x as f32),
        DataType::F64 => convert_float!(F64, |x: f64| x),
        DataType::F16 => convert_float!(F16, f16::from_f64),
        DataType::U8 => convert_int!(U8),
        DataType::U16 => convert_int!(U16),
        DataType::U32 => convert_int!(U32),
        DataType::U64 => convert_int!(U64),
        DataType::I8 => convert_int!(I8),
        DataType::I16 => convert_int!(I16),
        DataType::I32 => convert_int!(I32),
        DataType::I64 => convert_int!(I64),
        DataType::Bool => {
            let mut out = Vec::with_capacity(values.len());
            for (index, &scalar) in values.iter().enumerate() {
                out.push(to_bool(scalar).map_err(|why| fail(index, scalar, why))?);
            }
            Ok(TensorData::Bool(out))
        }
        DataType::String => Err(CastError {
            index: 0,
            value: data.get_text(0).unwrap_or_default(),
            from,
            to,
            why: "numbers cannot be converted to text",
        }),
    }
}

fn non_finite(index: usize, value: f64, dtype: DataType) -> CastError {
    CastError {
        index,
        value: value.to_string(),
        from: dtype,
        to: dtype,
        why: "the model needs finite numbers",
    }
}

fn check_finite<T: Copy + Into<f64>>(values: Vec<T>, dtype: DataType) -> Result<Vec<T>, CastError> {
    match values.iter().position(|&x| !x.into().is_finite()) {
        Some(index) => Err(non_finite(index, values[index].into(), dtype)),
        None => Ok(values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_become_floats_exactly() {
        let out = cast(TensorData::I64(vec![1, -3, 1 << 24]), DataType::F32).expect("exact");
        assert_eq!(out, TensorData::F32(vec![1.0, -3.0, 16_777_216.0]));
    }

    #[test]
    fn integer_too_large_for_f32_is_refused() {
        let err = cast(TensorData::I64(vec![0, (1 << 24) + 1]), DataType::F32).unwrap_err();
        assert_eq!(err.index, 1);
    }

    #[test]
    fn fractions_are_refused_for_integer_models() {
        let err = cast(TensorData::F32(vec![1.0, 2.5]), DataType::I64).unwrap_err();
        assert_eq!((err.index, err.why), (1, "the model needs integers"));
        let ok = cast(TensorData::F64(vec![1.0, -2.0]), DataType::I8).expect("integral");
        assert_eq!(ok, TensorData::I8(vec![1, -2]));
    }

    #[test]
    fn out_of_range_integers_are_refused() {
        assert!(cast(TensorData::I32(vec![300]), DataType::U8).is_err());
        assert!(cast(TensorData::I32(vec![-1]), DataType::U32).is_err());
        assert_eq!(
            cast(TensorData::U64(vec![u64::MAX]), DataType::U64).expect("same type"),
            TensorData::U64(vec![u64::MAX])
        );
    }

    #[test]
    fn non_finite_floats_are_refused_even_without_conversion() {
        assert!(cast(TensorData::F32(vec![1.0, f32::NAN]), DataType::F32).is_err());
        assert!(cast(TensorData::F64(vec![f64::INFINITY]), DataType::F32).is_err());
        assert!(cast(TensorData::F64(vec![1e39]), DataType::F32).is_err());
        assert!(cast(TensorData::F16(vec![f16::INFINITY]), DataType::F16).is_err());
    }

    #[test]
    fn half_precision_and_bools_convert() {
        let out = cast(TensorData::F16(vec![f16::from_f32(0.5)]), DataType::F32).expect("exact");
        assert_eq!(out, TensorData::F32(vec![0.5]));
        let out = cast(TensorData::Bool(vec![true, false]), DataType::F64).expect("0/1");
        assert_eq!(out, TensorData::F64(vec![1.0, 0.0]));
        assert!(cast(TensorData::I32(vec![2]), DataType::Bool).is_err());
    }

    #[test]
    fn strings_and_numbers_do_not_mix() {
        assert!(cast(TensorData::String(vec!["a".into()]), DataType::F32).is_err());
        assert!(cast(TensorData::F32(vec![1.0]), DataType::String).is_err());
    }

    #[test]
    fn tensor_checks_element_count() {
        assert!(Tensor::new(vec![2, 2], TensorData::F32(vec![0.0; 4])).is_ok());
        assert!(Tensor::new(vec![2, 3], TensorData::F32(vec![0.0; 4])).is_err());
        assert!(Tensor::new(vec![usize::MAX, 2], TensorData::F32(vec![])).is_err());
    }
}
