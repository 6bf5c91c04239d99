//! A small safetensors codec for files of several tensors (F32, U32 and U8): training
//! checkpoints, gradients and training task inputs. [`crate::blob::encode_matrix`] stays the
//! one-tensor form embed outputs use.
//!
//! Encoding is canonical: the header is compact JSON with keys in sorted order, padded with
//! spaces to a multiple of 8 bytes, and the data of the tensors follows in the order given, so
//! equal tensors and metadata always give equal bytes (and equal content hashes).

use std::collections::BTreeMap;

use crate::{Error, Result};

/// A tensor's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// `F32`, little-endian.
    F32(Vec<f32>),
    /// `U32`, little-endian.
    U32(Vec<u32>),
    /// `U8`.
    U8(Vec<u8>),
}

impl Values {
    fn dtype(&self) -> &'static str {
        match self {
            Self::F32(_) => "F32",
            Self::U32(_) => "U32",
            Self::U8(_) => "U8",
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::U8(v) => v.len(),
        }
    }

    fn byte_len(&self) -> usize {
        match self {
            Self::F32(v) => v.len() * 4,
            Self::U32(v) => v.len() * 4,
            Self::U8(v) => v.len(),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::U32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::U8(v) => out.extend_from_slice(v),
        }
    }
}

/// One named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Its name in the file.
    pub name: String,
    /// Its shape (row-major).
    pub shape: Vec<usize>,
    /// Its values (as many as the shape holds).
    pub values: Values,
}

impl Tensor {
    /// A tensor; `values` must hold as many values as `shape` (checked when encoding).
    pub fn new(name: impl Into<String>, shape: Vec<usize>, values: Values) -> Self {
        Self {
            name: name.into(),
            shape,
            values,
        }
    }
}

/// A decoded file: its tensors in data order and its metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tensors {
    /// Tensors, in the order of their data.
    pub tensors: Vec<Tensor>,
    /// The `__metadata__` strings.
    pub metadata: BTreeMap<String, String>,
}

impl Tensors {
    /// The tensor named `name`, or an error naming it.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::Invalid(format!("safetensors: no tensor {name}")))
    }

    /// Removes and returns the tensor named `name`.
    pub fn take(&mut self, name: &str) -> Result<Tensor> {
        let i = self
            .tensors
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| Error::Invalid(format!("safetensors: no tensor {name}")))?;
        Ok(self.tensors.remove(i))
    }
}

fn count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or(Error::Overflow)
}

/// The canonical safetensors bytes of `tensors` (data in the given order) and `metadata`.
pub fn encode(tensors: &[Tensor], metadata: &[(&str, &str)]) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for t in tensors {
        if t.name == "__metadata__" || t.name.is_empty() {
            return Err(Error::Invalid(format!(
                "a tensor cannot be named {:?}",
                t.name
            )));
        }
        if count(&t.shape)? != t.values.len() {
            return Err(Error::Invalid(format!(
                "tensor {}: {} values are not {:?}",
                t.name,
                t.values.len(),
                t.shape
            )));
        }
        let end = offset
            .checked_add(t.values.byte_len())
            .ok_or(Error::Overflow)?;
        let entry = serde_json::json!({
            "dtype": t.values.dtype(),
            "shape": t.shape,
            "data_offsets": [offset, end],
        });
        if header.insert(t.name.clone(), entry).is_some() {
            return Err(Error::Invalid(format!("tensor {} appears twice", t.name)));
        }
        offset = end;
    }
    if !metadata.is_empty() {
        let meta: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    }
    let mut header = serde_json::to_vec(&header).expect("header serialises");
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for t in tensors {
        t.values.write(&mut out);
    }
    Ok(out)
}

/// Reads a safetensors file of F32, U32 and U8 tensors. Anything else (another dtype, a
/// truncated or overlapping data region, bytes no tensor covers, a bad header) is an error.
pub fn decode(bytes: &[u8]) -> Result<Tensors> {
    let bad = |m: &str| Error::Invalid(format!("safetensors: {m}"));
    let n = u64::from_le_bytes(
        bytes
            .get(..8)
            .ok_or_else(|| bad("too short"))?
            .try_into()
            .expect("8 bytes"),
    );
    let n = usize::try_from(n).map_err(|_| bad("header length"))?;
    let end = 8usize.checked_add(n).ok_or_else(|| bad("header length"))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..end).ok_or_else(|| bad("truncated header"))?)
            .map_err(|e| bad(&e.to_string()))?;
    let data = &bytes[end..];
    let mut out = Tensors::default();
    let mut spans = Vec::new();
    for (name, t) in header {
        if name == "__metadata__" {
            out.metadata = serde_json::from_value(t).map_err(|e| bad(&e.to_string()))?;
            continue;
        }
        let shape: Vec<usize> =
            serde_json::from_value(t["shape"].clone()).map_err(|e| bad(&format!("{name}: {e}")))?;
        let offs: Vec<usize> = serde_json::from_value(t["data_offsets"].clone())
            .map_err(|e| bad(&format!("{name}: {e}")))?;
        let [start, stop] = offs[..] else {
            return Err(bad(&format!("{name}: bad data_offsets")));
        };
        let size = match t["dtype"].as_str() {
            Some("F32" | "U32") => 4,
            Some("U8") => 1,
            other => return Err(bad(&format!("{name}: dtype {other:?} is not supported"))),
        };
        let want = count(&shape)?
            .checked_mul(size)
            .ok_or_else(|| bad("shape overflow"))?;
        if stop.checked_sub(start) != Some(want) {
            return Err(bad(&format!("{name}: data size does not match the shape")));
        }
        let raw = data
            .get(start..stop)
            .ok_or_else(|| bad(&format!("{name}: truncated data")))?;
        let values = match t["dtype"].as_str() {
            Some("F32") => Values::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
            ),
            Some("U32") => Values::U32(
                raw.chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
            ),
            _ => Values::U8(raw.to_vec()),
        };
        spans.push((start, stop));
        out.tensors.push(Tensor {
            name,
            shape,
            values,
        });
    }
    // The data region is covered exactly, without overlaps or holes (as safetensors requires).
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| spans[i]);
    let mut at = 0;
    for &i in &order {
        if spans[i].0 != at {
            return Err(bad("tensor data overlaps or leaves a hole"));
        }
        at = spans[i].1;
    }
    if at != data.len() {
        return Err(bad("bytes after the last tensor"));
    }
    let mut tensors: Vec<Option<Tensor>> = out.tensors.into_iter().map(Some).collect();
    out.tensors = order.iter().filter_map(|&i| tensors[i].take()).collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Tensor> {
        vec![
            Tensor::new("w", vec![2, 2], Values::F32(vec![1.0, -2.0, 0.5, 3.25])),
            Tensor::new("ids", vec![3], Values::U32(vec![7, 0, u32::MAX])),
            Tensor::new("raw", vec![2], Values::U8(vec![1, 255])),
        ]
    }

    #[test]
    fn round_trip_keeps_order_values_and_metadata() {
        let b = encode(&sample(), &[("k", "v")]).unwrap();
        let d = decode(&b).unwrap();
        assert_eq!(d.tensors, sample());
        assert_eq!(d.metadata.get("k").map(String::as_str), Some("v"));
        // Canonical: encoding the decoded tensors again gives the same bytes.
        assert_eq!(encode(&d.tensors, &[("k", "v")]).unwrap(), b);
        assert_eq!(d.get("ids").unwrap().shape, vec![3]);
        assert!(d.get("nope").is_err());
    }

    #[test]
    fn refuses_what_is_not_well_formed() {
        let mut t = sample();
        t[0].shape = vec![3, 2];
        assert!(encode(&t, &[]).is_err());
        let mut t = sample();
        t[1].name = "w".into();
        assert!(encode(&t, &[]).is_err());
        let b = encode(&sample(), &[]).unwrap();
        assert!(decode(&b[..b.len() - 1]).is_err(), "truncated");
        let mut longer = b.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "trailing bytes");
        assert!(decode(&b[..4]).is_err());
        // Two tensors claiming the same bytes.
        let header = br#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header);
        f.extend_from_slice(&[1, 2]);
        assert!(decode(&f).is_err(), "overlap");
        // An unsupported dtype.
        let header = br#"{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}"#;
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header);
        f.extend_from_slice(&[1, 2]);
        assert!(decode(&f).is_err(), "F16");
    }
}
