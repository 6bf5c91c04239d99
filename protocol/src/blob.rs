//! Formats of task input and output blobs, and their content hash (sha256).
//!
//! - `embed` input: UTF-8 text, one sentence per line (`\n`), no empty lines.
//! - `embed` output: a safetensors file with one F32 tensor `embeddings` of shape `[n, dim]`.
//! - `generate` input: JSON lines, one `{"prompt":"..."}` per prompt (the raw text the model
//!   continues; a chat template, if any, is already applied).
//! - `generate` output: compact JSON `{"outputs":[{"ids":[...],"text":"..."},...]}`, one entry
//!   per prompt in input order: the new token ids (ending with the end-of-sequence id when the
//!   model stopped before `max_tokens`) and their decoded text.

use alloy::primitives::B256;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The content address of a blob: sha256 of its bytes.
pub fn blob_hash(bytes: &[u8]) -> B256 {
    B256::from_slice(&Sha256::digest(bytes))
}

/// Encodes an embed task input (at least one text).
pub fn encode_texts(texts: &[&str]) -> Result<Vec<u8>> {
    // An empty list would encode to empty bytes, which `decode_texts` refuses: refuse it here,
    // as `encode_prompts` does, so that what the encoder writes always decodes.
    if texts.is_empty() {
        return Err(Error::Invalid("no texts".into()));
    }
    let mut out = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        if t.trim().is_empty() || t.contains('\n') {
            return Err(Error::Invalid(format!("text {i} is empty or spans lines")));
        }
        out.extend_from_slice(t.as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}

/// Decodes an embed task input.
pub fn decode_texts(bytes: &[u8]) -> Result<Vec<String>> {
    let s = std::str::from_utf8(bytes).map_err(|e| Error::Invalid(format!("input: {e}")))?;
    let body = s.strip_suffix('\n').unwrap_or(s);
    if body.is_empty() {
        return Err(Error::Invalid("input holds no text".into()));
    }
    body.split('\n')
        .enumerate()
        .map(|(i, l)| {
            if l.trim().is_empty() {
                Err(Error::Invalid(format!("input line {} is empty", i + 1)))
            } else {
                Ok(l.to_owned())
            }
        })
        .collect()
}

/// One prompt of a generate input.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    /// The text the model continues.
    pub prompt: String,
}

/// Encodes a generate task input.
pub fn encode_prompts(prompts: &[&str]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        if p.trim().is_empty() {
            return Err(Error::Invalid(format!("prompt {i} is empty")));
        }
        serde_json::to_writer(
            &mut out,
            &Prompt {
                prompt: (*p).to_owned(),
            },
        )
        .expect("a string serialises");
        out.push(b'\n');
    }
    if out.is_empty() {
        return Err(Error::Invalid("no prompts".into()));
    }
    Ok(out)
}

/// Decodes a generate task input (also what `job submit --kind generate` reads: blank lines are
/// refused, so line numbers in errors are the file's).
pub fn decode_prompts(bytes: &[u8]) -> Result<Vec<String>> {
    let s = std::str::from_utf8(bytes).map_err(|e| Error::Invalid(format!("input: {e}")))?;
    let body = s.strip_suffix('\n').unwrap_or(s);
    if body.trim().is_empty() {
        return Err(Error::Invalid("input holds no prompt".into()));
    }
    body.split('\n')
        .enumerate()
        .map(|(i, l)| {
            let p: Prompt = serde_json::from_str(l).map_err(|e| {
                Error::Invalid(format!(
                    "line {}: expected {{\"prompt\": \"...\"}}: {e}",
                    i + 1
                ))
            })?;
            if p.prompt.trim().is_empty() {
                return Err(Error::Invalid(format!("line {}: empty prompt", i + 1)));
            }
            Ok(p.prompt)
        })
        .collect()
}

/// What the model produced for one prompt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    /// New token ids.
    pub ids: Vec<u32>,
    /// Their decoded text.
    pub text: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Generations {
    outputs: Vec<Generation>,
}

/// Encodes a generate task output (equal outputs give equal bytes, so equal hashes).
pub fn encode_generations(outputs: &[Generation]) -> Vec<u8> {
    serde_json::to_vec(&Generations {
        outputs: outputs.to_vec(),
    })
    .expect("generations serialise")
}

/// Decodes a generate task output; bytes that are not exactly what [`encode_generations`] writes
/// are refused.
pub fn decode_generations(bytes: &[u8]) -> Result<Vec<Generation>> {
    let g: Generations = serde_json::from_slice(bytes)
        .map_err(|e| Error::Invalid(format!("generate output: {e}")))?;
    if encode_generations(&g.outputs) != bytes {
        return Err(Error::Invalid(
            "generate output is not in canonical form".into(),
        ));
    }
    Ok(g.outputs)
}

/// Writes a row-major `[rows, cols]` F32 matrix as safetensors with one tensor `name` (any name
/// but `__metadata__`, the key safetensors reserves for the metadata map).
pub fn encode_matrix(
    name: &str,
    data: &[f32],
    rows: usize,
    cols: usize,
    metadata: &[(&str, &str)],
) -> Result<Vec<u8>> {
    // A tensor named `__metadata__` would be overwritten by (or read as) the metadata map.
    if name == "__metadata__" {
        return Err(Error::Invalid(
            "a tensor cannot be named __metadata__".into(),
        ));
    }
    if data.len() != rows.checked_mul(cols).ok_or(Error::Overflow)? {
        return Err(Error::Invalid(format!(
            "{} values are not [{rows}, {cols}]",
            data.len()
        )));
    }
    let bytes = data.len() * 4;
    let mut header = serde_json::json!({
        name: { "dtype": "F32", "shape": [rows, cols], "data_offsets": [0, bytes] },
    });
    if !metadata.is_empty() {
        let meta: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect();
        header["__metadata__"] = serde_json::Value::Object(meta);
    }
    let mut header = serde_json::to_vec(&header).expect("header serialises");
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + bytes);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Reads tensor `name` of a safetensors file written by [`encode_matrix`]: `(data, rows, cols)`.
/// Anything else (other dtype, rank, truncated data) is an error.
pub fn decode_matrix(name: &str, bytes: &[u8]) -> Result<(Vec<f32>, usize, usize)> {
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
    let header: serde_json::Value =
        serde_json::from_slice(bytes.get(8..end).ok_or_else(|| bad("truncated header"))?)
            .map_err(|e| bad(&e.to_string()))?;
    let t = &header[name];
    if t["dtype"] != "F32" {
        return Err(bad(&format!("tensor {name} missing or not F32")));
    }
    let shape: Vec<usize> =
        serde_json::from_value(t["shape"].clone()).map_err(|e| bad(&e.to_string()))?;
    let offs: Vec<usize> =
        serde_json::from_value(t["data_offsets"].clone()).map_err(|e| bad(&e.to_string()))?;
    let [rows, cols] = shape[..] else {
        return Err(bad("tensor is not 2-D"));
    };
    let [start, stop] = offs[..] else {
        return Err(bad("bad data_offsets"));
    };
    let want = rows
        .checked_mul(cols)
        .and_then(|x| x.checked_mul(4))
        .ok_or_else(|| bad("shape overflow"))?;
    if stop.checked_sub(start) != Some(want) {
        return Err(bad("data size does not match the shape"));
    }
    // Offsets come from the file and may be near usize::MAX: slice twice instead of adding them
    // to `end` (`end + start` overflowed, a panic in debug builds, on e.g. offsets [MAX, MAX]).
    let data = bytes
        .get(end..)
        .and_then(|d| d.get(start..stop))
        .ok_or_else(|| bad("truncated data"))?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    Ok((data, rows, cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_round_trip_and_rejects() {
        let m = [1.0f32, -2.0, 0.5, 4.0, 5.0, 6.0];
        let b = encode_matrix("embeddings", &m, 3, 2, &[("k", "v")]).unwrap();
        assert_eq!(decode_matrix("embeddings", &b).unwrap(), (m.to_vec(), 3, 2));
        assert!(decode_matrix("other", &b).is_err());
        assert!(decode_matrix("embeddings", &b[..b.len() - 1]).is_err());
        assert!(decode_matrix("embeddings", &b[..5]).is_err());
        assert!(encode_matrix("e", &m, 4, 2, &[]).is_err());
        assert!(encode_matrix("__metadata__", &m, 3, 2, &[("k", "v")]).is_err());
        // Offsets near usize::MAX are refused, not added up (found by tests/codecs.rs).
        let max = usize::MAX;
        let header =
            format!(r#"{{"e":{{"dtype":"F32","shape":[0,0],"data_offsets":[{max},{max}]}}}}"#);
        let header = header.as_bytes();
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header);
        assert!(decode_matrix("e", &b).is_err());
    }

    #[test]
    fn texts_round_trip_and_rejects() {
        let b = encode_texts(&["a b", "c"]).unwrap();
        assert_eq!(b, b"a b\nc\n");
        assert_eq!(decode_texts(&b).unwrap(), vec!["a b", "c"]);
        assert!(encode_texts(&["a\nb"]).is_err());
        assert!(encode_texts(&[]).is_err());
        assert!(decode_texts(b"a\n\nb\n").is_err());
        assert!(decode_texts(b"\xff\n").is_err());
        assert!(decode_texts(b"").is_err());
    }

    #[test]
    fn prompts_round_trip_and_rejects() {
        let b = encode_prompts(&["The capital of France is", "say \"hi\"\nthen stop"]).unwrap();
        assert_eq!(
            String::from_utf8(b.clone()).unwrap(),
            "{\"prompt\":\"The capital of France is\"}\n{\"prompt\":\"say \\\"hi\\\"\\nthen stop\"}\n"
        );
        assert_eq!(
            decode_prompts(&b).unwrap(),
            vec!["The capital of France is", "say \"hi\"\nthen stop"]
        );
        assert!(encode_prompts(&[" "]).is_err());
        assert!(encode_prompts(&[]).is_err());
        let err = decode_prompts(b"{\"prompt\":\"a\"}\nnot json\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(decode_prompts(b"{\"prompt\":\"a\",\"x\":1}\n").is_err());
        assert!(decode_prompts(b"{\"prompt\":\"\"}\n").is_err());
        assert!(decode_prompts(b"").is_err());
    }

    #[test]
    fn generations_round_trip_and_reject_non_canonical() {
        let g = vec![
            Generation {
                ids: vec![7042, 30, 2],
                text: " Paris.".into(),
            },
            Generation {
                ids: vec![],
                text: String::new(),
            },
        ];
        let b = encode_generations(&g);
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"outputs":[{"ids":[7042,30,2],"text":" Paris."},{"ids":[],"text":""}]}"#
        );
        assert_eq!(decode_generations(&b).unwrap(), g);
        let spaced = String::from_utf8(b).unwrap().replace(",", ", ");
        assert!(decode_generations(spaced.as_bytes()).is_err());
        assert!(decode_generations(b"{\"outputs\":[{\"ids\":[-1],\"text\":\"\"}]}").is_err());
        assert!(decode_generations(b"[]").is_err());
    }

    #[test]
    fn hash_is_sha256() {
        assert_eq!(
            blob_hash(b"abc").to_string(),
            "0xba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
