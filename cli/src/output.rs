//! Writing embeddings: JSON lines or a safetensors file.

use std::io::Write;

/// Writes a row-major `[rows, cols]` f32 matrix as a safetensors file holding one tensor `name`
/// (the format of `embed` output blobs, [`gleaner_protocol::blob::encode_matrix`]).
pub fn write_safetensors(
    mut w: impl Write,
    name: &str,
    data: &[f32],
    rows: usize,
    cols: usize,
    metadata: &[(&str, &str)],
) -> anyhow::Result<()> {
    let bytes = gleaner_protocol::blob::encode_matrix(name, data, rows, cols, metadata)?;
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}

/// Writes one JSON array per row.
pub(crate) fn write_jsonl(mut w: impl Write, data: &[f32], cols: usize) -> std::io::Result<()> {
    for row in data.chunks_exact(cols) {
        serde_json::to_writer(&mut w, row)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_layout() {
        let mut out = Vec::new();
        write_safetensors(
            &mut out,
            "embeddings",
            &[1.0, -2.0, 0.5, 4.0],
            2,
            2,
            &[("model", "m")],
        )
        .unwrap();
        let n = u64::from_le_bytes(out[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header: serde_json::Value = serde_json::from_slice(&out[8..8 + n]).unwrap();
        assert_eq!(header["embeddings"]["shape"], serde_json::json!([2, 2]));
        assert_eq!(
            header["embeddings"]["data_offsets"],
            serde_json::json!([0, 16])
        );
        assert_eq!(header["__metadata__"]["model"], "m");
        let data: Vec<f32> = out[8 + n..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(data, [1.0, -2.0, 0.5, 4.0]);
    }

    #[test]
    fn jsonl_rows() {
        let mut out = Vec::new();
        write_jsonl(&mut out, &[1.0, 2.0, 3.0, 4.5], 2).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "[1.0,2.0]\n[3.0,4.5]\n");
    }
}
