//! A GGUF (v2/v3) reader: metadata, tensor directory, and dequantisation of F32, F16, Q8_0 and
//! Q4_1 tensors to f32 — what SmolLM2-135M-Instruct's GGUF holds.
//!
//! Layout (little-endian): magic `GGUF`, version u32, tensor count u64, metadata count u64;
//! metadata as (string key, u32 type, value); tensor infos as (string name, u32 rank, u64 dims
//! (innermost first), u32 ggml type, u64 offset); then the data section, aligned to
//! `general.alignment` (default 32). Strings are a u64 length and UTF-8 bytes.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{Error, Result};

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// f32 or f64.
    F64(f64),
    /// bool.
    Bool(bool),
    /// string.
    Str(String),
    /// array.
    Array(Vec<Value>),
}

impl Value {
    /// As an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::U64(v) => Some(*v),
            Self::I64(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// As a float, when numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::F64(v) => Some(*v),
            Self::U64(v) => Some(*v as f64),
            Self::I64(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// As a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// ggml tensor types this reader dequantises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
    /// Blocks of 32: f16 scale `d`, f16 minimum `m`, 16 bytes of 4-bit `q`: x = d·q + m.
    Q4_1,
    /// Blocks of 32: f16 scale `d`, 32 i8 `q`: x = d·q.
    Q8_0,
    /// Any other type (kept by id; not dequantised).
    Other(u32),
}

impl GgmlType {
    fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            other => Self::Other(other),
        }
    }

    /// Bytes taken by `n` elements, when the type is known.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        match self {
            Self::F32 => n.checked_mul(4),
            Self::F16 => n.checked_mul(2),
            Self::Q4_1 => n.is_multiple_of(32).then(|| n / 32 * 20),
            Self::Q8_0 => n.is_multiple_of(32).then(|| n / 32 * 34),
            Self::Other(_) => None,
        }
    }
}

/// One tensor of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name (`blk.0.attn_q.weight`, ...).
    pub name: String,
    /// Dimensions, innermost first, as GGUF stores them.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset in the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn len(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parsed GGUF file held in memory.
#[derive(Debug, Clone)]
pub struct Gguf {
    /// Format version.
    pub version: u32,
    /// Metadata.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor directory in file order.
    pub tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
    data_start: usize,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Weights {
        path: "gguf".into(),
        detail: msg.into(),
    }
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| bad("truncated"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn string(&mut self) -> Result<String> {
        let n = usize::try_from(self.u64()?).map_err(|_| bad("string length"))?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad("string is not UTF-8"))
    }
    fn value(&mut self, ty: u32, depth: u8) -> Result<Value> {
        Ok(match ty {
            0 => Value::U64(u64::from(self.take(1)?[0])),
            1 => Value::I64(i64::from(self.take(1)?[0] as i8)),
            2 => Value::U64(u64::from(u16::from_le_bytes(
                self.take(2)?.try_into().expect("2"),
            ))),
            3 => Value::I64(i64::from(i16::from_le_bytes(
                self.take(2)?.try_into().expect("2"),
            ))),
            4 => Value::U64(u64::from(self.u32()?)),
            5 => Value::I64(i64::from(self.u32()? as i32)),
            6 => Value::F64(f64::from(f32::from_bits(self.u32()?))),
            7 => Value::Bool(self.take(1)?[0] != 0),
            8 => Value::Str(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(bad("arrays nested too deep"));
                }
                let inner = self.u32()?;
                let n = self.u64()?;
                if n > (self.b.len() - self.pos) as u64 {
                    return Err(bad("array longer than the file"));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(inner, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            other => return Err(bad(format!("unknown metadata type {other}"))),
        })
    }
}

/// IEEE 754 half to f32.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let shift = m.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | (((m << shift) & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

impl Gguf {
    /// Reads and parses a file.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::MissingModel {
                path: path.to_path_buf(),
            });
        }
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(bytes)
    }

    /// sha256 of the file's bytes (lowercase hex): what [`crate::sha256_file`] gives for the
    /// file it was read from, without reading it again.
    pub fn sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&self.bytes))
    }

    /// Parses GGUF bytes.
    pub fn parse(bytes: Vec<u8>) -> Result<Self> {
        let mut c = Cursor { b: &bytes, pos: 0 };
        if c.take(4)? != b"GGUF" {
            return Err(bad("not a GGUF file (bad magic)"));
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(bad(format!(
                "GGUF version {version} is not supported (2 or 3)"
            )));
        }
        let n_tensors = c.u64()?;
        let n_kv = c.u64()?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            metadata.insert(key, c.value(ty, 0)?);
        }
        let mut tensors = Vec::new();
        for _ in 0..n_tensors {
            let name = c.string()?;
            let rank = c.u32()?;
            if rank > 4 {
                return Err(bad(format!("tensor {name} has rank {rank}")));
            }
            let dims = (0..rank).map(|_| c.u64()).collect::<Result<Vec<_>>>()?;
            let ty = GgmlType::from_id(c.u32()?);
            let offset = c.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }
        let align = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(32) as usize;
        if align == 0 {
            return Err(bad("alignment 0"));
        }
        let data_start = c.pos.div_ceil(align) * align;
        let g = Self {
            version,
            metadata,
            tensors,
            bytes,
            data_start,
        };
        for t in &g.tensors {
            if let Some(n) = t.ty.bytes_for(t.len()) {
                g.raw(t, n)?;
            }
        }
        Ok(g)
    }

    fn raw(&self, t: &TensorInfo, n: u64) -> Result<&[u8]> {
        let start = u64::try_from(self.data_start)
            .ok()
            .and_then(|s| s.checked_add(t.offset));
        let end = start.and_then(|s| s.checked_add(n));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.bytes.len() as u64 => {
                Ok(&self.bytes[s as usize..e as usize])
            }
            _ => Err(bad(format!("tensor {} lies outside the file", t.name))),
        }
    }

    /// A tensor's directory entry and its raw bytes in storage order (blocks, for quantized
    /// types), for kernels that compute on the quantized form.
    pub fn tensor_bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let t = self
            .tensor(name)
            .ok_or_else(|| bad(format!("no tensor {name}")))?;
        let size =
            t.ty.bytes_for(t.len())
                .ok_or_else(|| bad(format!("{name}: type {:?} is not supported", t.ty)))?;
        Ok((t, self.raw(t, size)?))
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A tensor's directory entry.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Dequantises a tensor to f32, in storage order (innermost dimension fastest).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let t = self
            .tensor(name)
            .ok_or_else(|| bad(format!("no tensor {name}")))?;
        let n = t.len();
        let size =
            t.ty.bytes_for(n)
                .ok_or_else(|| bad(format!("{name}: type {:?} is not supported", t.ty)))?;
        let raw = self.raw(t, size)?;
        let mut out = Vec::with_capacity(n as usize);
        match t.ty {
            GgmlType::F32 => out.extend(
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4"))),
            ),
            GgmlType::F16 => out.extend(
                raw.chunks_exact(2)
                    .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
            ),
            GgmlType::Q8_0 => {
                for block in raw.chunks_exact(34) {
                    let d = f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
                    out.extend(block[2..].iter().map(|&q| d * f32::from(q as i8)));
                }
            }
            GgmlType::Q4_1 => {
                for block in raw.chunks_exact(20) {
                    let d = f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
                    let m = f16_to_f32(u16::from_le_bytes([block[2], block[3]]));
                    let qs = &block[4..];
                    out.extend(qs.iter().map(|&q| d * f32::from(q & 0x0f) + m));
                    out.extend(qs.iter().map(|&q| d * f32::from(q >> 4) + m));
                }
            }
            GgmlType::Other(_) => unreachable!("bytes_for is None for other types"),
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }

    /// A hand-made file: metadata of several types, a Q4_1, a Q8_0 and an F32 tensor.
    pub(crate) fn sample() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(3u64.to_le_bytes()); // tensors
        b.extend(3u64.to_le_bytes()); // kv
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "llama.block_count");
        b.extend(4u32.to_le_bytes());
        b.extend(30u32.to_le_bytes());
        s(&mut b, "tokenizer.ggml.tokens");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        s(&mut b, "a");
        s(&mut b, "b");
        let tensors = [("q41", 3u32, 0u64), ("q80", 8, 20), ("f32", 0, 54)];
        for (name, ty, off) in tensors {
            s(&mut b, name);
            b.extend(1u32.to_le_bytes());
            b.extend(32u64.to_le_bytes());
            b.extend(ty.to_le_bytes());
            b.extend(off.to_le_bytes());
        }
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        // Q4_1: d = 0.5 (0x3800), m = -1.0 (0xbc00), q[j] = j % 16 for the low nibbles and 15 - j
        // for the high ones.
        b.extend(0x3800u16.to_le_bytes());
        b.extend(0xbc00u16.to_le_bytes());
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        // Q8_0: d = 2.0 (0x4000), q = -16..16.
        b.extend(0x4000u16.to_le_bytes());
        for q in -16i8..16 {
            b.push(q as u8);
        }
        for i in 0..32 {
            b.extend((i as f32 * 0.25).to_le_bytes());
        }
        b
    }

    #[test]
    fn hand_made_blocks_dequantise() {
        let g = Gguf::parse(sample()).unwrap();
        assert_eq!(
            g.get("general.architecture").and_then(Value::as_str),
            Some("llama")
        );
        assert_eq!(g.get("llama.block_count").and_then(Value::as_u64), Some(30));
        assert_eq!(
            g.get("tokenizer.ggml.tokens"),
            Some(&Value::Array(vec![
                Value::Str("a".into()),
                Value::Str("b".into())
            ]))
        );
        let q41 = g.dequantize("q41").unwrap();
        for j in 0..16 {
            assert_eq!(q41[j], 0.5 * j as f32 - 1.0);
            assert_eq!(q41[16 + j], 0.5 * (15 - j) as f32 - 1.0);
        }
        let q80 = g.dequantize("q80").unwrap();
        assert_eq!(q80, (-16..16).map(|q| 2.0 * q as f32).collect::<Vec<_>>());
        let f = g.dequantize("f32").unwrap();
        assert_eq!(f[5], 1.25);
    }

    #[test]
    fn malformed_files_are_errors() {
        let good = sample();
        assert!(Gguf::parse(b"GGML".to_vec()).is_err());
        for cut in [3, 10, 40, good.len() - 1] {
            assert!(Gguf::parse(good[..cut].to_vec()).is_err(), "cut at {cut}");
        }
        let mut v = good.clone();
        v[4] = 9; // version
        assert!(Gguf::parse(v).is_err());
    }

    #[test]
    fn halves() {
        for (h, f) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x0000, 0.0),
            (0x7bff, 65504.0),
            (0x0001, 5.960_464_5e-8),
            (0x3555, 0.333_251_95),
        ] {
            assert_eq!(f16_to_f32(h), f, "{h:#x}");
        }
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}
