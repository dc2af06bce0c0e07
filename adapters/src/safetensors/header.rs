//! The JSON header of a safetensors file, parsed and checked against the
//! data it describes before any tensor is touched.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::dtype::Dtype;
use crate::error::Problem;

/// The largest header accepted (the limit of the reference implementation).
pub const MAX_HEADER: u64 = 100_000_000;

/// One tensor's entry: where its data lies and how to read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name.
    pub name: String,
    /// Its element type.
    pub dtype: Dtype,
    /// Its shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// First byte of its data, counted from the start of the data section.
    pub start: u64,
    /// One past its last byte.
    pub end: u64,
}

impl TensorInfo {
    /// Its element count.
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Its data's length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether it holds no data.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// A checked header: the tensors in the order of their data, and the
/// free-form metadata in the order the file gives it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct Header {
    /// The tensors, sorted by data offset (the global index order of
    /// selection).
    pub(crate) tensors: Vec<TensorInfo>,
    /// The `__metadata__` entries.
    pub(crate) metadata: Vec<(String, String)>,
}

/// A header fault: the tensor it concerns (if any) and what is wrong.
pub(crate) type Fault = (Option<String>, Problem);

/// The JSON object's entries in file order, duplicates kept (so they can be
/// refused: a plain map would silently keep the last).
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses `header` (the JSON text after the length field) of a file whose
/// data section holds `data_len` bytes, and checks every entry: known
/// dtype, shape and offsets consistent, data inside the file, no overlap,
/// no gap, nothing after the last tensor.
pub(crate) fn parse(header: &[u8], data_len: u64) -> Result<Header, Fault> {
    let file = |problem| (None, problem);
    let text = std::str::from_utf8(header).map_err(|e| {
        file(Problem::Header {
            message: format!("not UTF-8 ({e})"),
        })
    })?;
    let entries: Entries = serde_json::from_str(text).map_err(|e| {
        file(Problem::Header {
            message: e.to_string(),
        })
    })?;
    let mut out = Header::default();
    let mut seen = std::collections::HashSet::new();
    for (name, value) in entries.0 {
        if !seen.insert(name.clone()) {
            return Err((Some(name), Problem::DuplicateTensor));
        }
        if name == "__metadata__" {
            out.metadata = metadata(value).map_err(file)?;
            continue;
        }
        let info = entry(&name, &value, data_len).map_err(|p| (Some(name.clone()), p))?;
        out.tensors.push(info);
    }
    out.tensors.sort_by_key(|t| (t.start, t.end));
    let mut at = 0u64;
    let mut last: Option<&TensorInfo> = None;
    for t in &out.tensors {
        if t.start < at {
            let other = last.map(|l| l.name.clone()).unwrap_or_default();
            return Err((Some(t.name.clone()), Problem::Overlap { other }));
        }
        if t.start > at {
            return Err((
                Some(t.name.clone()),
                Problem::Gap {
                    bytes: t.start - at,
                },
            ));
        }
        if !t.is_empty() {
            at = t.end;
            last = Some(t);
        }
    }
    if at != data_len {
        return Err(file(Problem::Gap {
            bytes: data_len - at,
        }));
    }
    Ok(out)
}

fn metadata(value: Value) -> Result<Vec<(String, String)>, Problem> {
    let Value::Object(map) = value else {
        return Err(Problem::Metadata {
            message: "not a JSON object".into(),
        });
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(Problem::Metadata {
                message: format!("the value of '{k}' is {other}, not a string"),
            }),
        })
        .collect()
}

fn entry(name: &str, value: &Value, data_len: u64) -> Result<TensorInfo, Problem> {
    let bad = |message: &str| Problem::Entry {
        message: message.into(),
    };
    let obj = value.as_object().ok_or_else(|| bad("not a JSON object"))?;
    let dtype_name = obj
        .get("dtype")
        .ok_or_else(|| bad("no 'dtype'"))?
        .as_str()
        .ok_or_else(|| bad("'dtype' is not a string"))?;
    let dtype = Dtype::parse(dtype_name).ok_or_else(|| Problem::UnknownDtype {
        dtype: dtype_name.into(),
    })?;
    let shape = obj
        .get("shape")
        .ok_or_else(|| bad("no 'shape'"))?
        .as_array()
        .ok_or_else(|| bad("'shape' is not a list"))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| bad("'shape' holds something other than non-negative integers"))?;
    let offsets = obj
        .get("data_offsets")
        .ok_or_else(|| bad("no 'data_offsets'"))?
        .as_array()
        .ok_or_else(|| bad("'data_offsets' is not a list"))?;
    let [start, end] = offsets.as_slice() else {
        return Err(bad("'data_offsets' does not hold two numbers"));
    };
    let (Some(start), Some(end)) = (start.as_u64(), end.as_u64()) else {
        return Err(bad(
            "'data_offsets' holds something other than non-negative integers",
        ));
    };
    if let Some(extra) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "dtype" | "shape" | "data_offsets"))
    {
        return Err(Problem::Entry {
            message: format!("unknown field '{extra}'"),
        });
    }
    if end < start {
        return Err(Problem::ReversedOffsets { start, end });
    }
    let bits = shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .and_then(|n| n.checked_mul(dtype.bits() as u64))
        .ok_or(Problem::ShapeOverflow)?;
    if bits % 8 != 0 {
        return Err(bad("the data is not a whole number of bytes"));
    }
    if end - start != bits / 8 {
        return Err(Problem::SizeMismatch {
            expected: bits / 8,
            found: end - start,
        });
    }
    if end > data_len {
        return Err(Problem::OutOfRange {
            end,
            available: data_len,
        });
    }
    Ok(TensorInfo {
        name: name.into(),
        dtype,
        shape,
        start,
        end,
    })
}

/// The JSON header for `tensors` (in this order, at their `start..end`
/// offsets) and `metadata` (as `__metadata__`, first), padded with spaces
/// to a multiple of 8 bytes so the data section is aligned, as the
/// reference implementation does. A file is its length as 8 bytes
/// little-endian, this header, then the tensors' data.
///
/// ```
/// use prunus_adapters::safetensors::{Checkpoint, Dtype, TensorInfo, write_header};
/// let t = TensorInfo { name: "w".into(), dtype: Dtype::F32, shape: vec![1], start: 0, end: 4 };
/// let header = write_header(&[t], &[("format".into(), "pt".into())]);
/// assert_eq!(header.len() % 8, 0);
/// let mut file = (header.len() as u64).to_le_bytes().to_vec();
/// file.extend_from_slice(&header);
/// file.extend_from_slice(&1.0f32.to_le_bytes());
/// let c = Checkpoint::from_bytes(file)?;
/// assert_eq!(c.metadata()[0].1, "pt");
/// assert_eq!(c.values(0)?, [1.0]);
/// # Ok::<(), prunus_adapters::Error>(())
/// ```
pub fn write(tensors: &[TensorInfo], metadata: &[(String, String)]) -> Vec<u8> {
    let mut s = String::from("{");
    let quote = |x: &str| serde_json::to_string(x).expect("strings serialise");
    if !metadata.is_empty() {
        s.push_str("\"__metadata__\":{");
        for (i, (k, v)) in metadata.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("{}:{}", quote(k), quote(v)));
        }
        s.push('}');
    }
    for (i, t) in tensors.iter().enumerate() {
        if i > 0 || !metadata.is_empty() {
            s.push(',');
        }
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        s.push_str(&format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            quote(&t.name),
            t.dtype.name(),
            shape.join(","),
            t.start,
            t.end
        ));
    }
    s.push('}');
    while !s.len().is_multiple_of(8) {
        s.push(' ');
    }
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, dtype: &str, shape: &[usize], start: u64, end: u64) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dtype: Dtype::parse(dtype).unwrap(),
            shape: shape.to_vec(),
            start,
            end,
        }
    }

    #[test]
    fn written_headers_parse_back_in_data_order() {
        let t = vec![
            info("b", "F32", &[2, 3], 0, 24),
            info("a \"quoted\"", "BF16", &[4], 24, 32),
            info("empty", "F16", &[0, 7], 32, 32),
            info("c", "I64", &[], 32, 40),
        ];
        let meta = vec![("format".to_string(), "pt".to_string())];
        let h = write(&t, &meta);
        assert_eq!(h.len() % 8, 0);
        let back = parse(&h, 40).unwrap();
        assert_eq!(back.metadata, meta);
        assert_eq!(back.tensors.len(), 4);
        assert_eq!(back.tensors[0], t[0]);
        assert_eq!(back.tensors[1], t[1]);
    }

    #[test]
    fn each_fault_is_named() {
        let one = |entry: &str, len: u64| parse(format!("{{{entry}}}").as_bytes(), len);
        let p = |r: Result<Header, Fault>| r.unwrap_err();
        assert_eq!(
            p(one(
                r#""w":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}"#,
                4
            )),
            (
                Some("w".into()),
                Problem::UnknownDtype {
                    dtype: "F99".into()
                }
            )
        );
        assert_eq!(
            p(one(
                r#""w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}"#,
                4
            ))
            .1,
            Problem::SizeMismatch {
                expected: 8,
                found: 4
            }
        );
        assert_eq!(
            p(one(
                r#""w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#,
                6
            ))
            .1,
            Problem::OutOfRange {
                end: 8,
                available: 6
            }
        );
        assert_eq!(
            p(one(
                r#""w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}"#,
                4
            ))
            .1,
            Problem::ReversedOffsets { start: 4, end: 0 }
        );
        assert_eq!(
            p(one(
                r#""w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}"#,
                4
            ))
            .1,
            Problem::ShapeOverflow
        );
        assert_eq!(
            p(one(
                r#""a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}"#,
                8
            )),
            (Some("b".into()), Problem::Overlap { other: "a".into() })
        );
        assert_eq!(
            p(one(
                r#""a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}"#,
                8
            )),
            (Some("a".into()), Problem::DuplicateTensor)
        );
        assert_eq!(
            p(one(
                r#""a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}"#,
                8
            )),
            (Some("a".into()), Problem::Gap { bytes: 4 })
        );
        assert_eq!(
            p(one(
                r#""a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#,
                8
            )),
            (None, Problem::Gap { bytes: 4 })
        );
        assert!(matches!(
            p(one(
                r#""a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}"#,
                4
            ))
            .1,
            Problem::Entry { .. }
        ));
        assert!(matches!(
            p(one(r#""__metadata__":{"k":1}"#, 0)).1,
            Problem::Metadata { .. }
        ));
        assert!(matches!(p(parse(b"[1,2]", 0)).1, Problem::Header { .. }));
        assert!(matches!(
            p(parse(&[0xff, 0xfe], 0)).1,
            Problem::Header { .. }
        ));
    }
}
