//! The real SmolLM2-135M-Instruct GGUF (fetched by `scripts/setup`): what the file holds.

use gleaner_models::gguf::{GgmlType, Gguf, Value};

#[test]
fn smollm2_gguf_holds_the_documented_model() {
    let path = gleaner_models::model_cache()
        .join("smollm2-135m-instruct")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let g = Gguf::open(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.version, 3);
    assert_eq!(g.tensors.len(), 272);
    let u = |k: &str| {
        g.get(k)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    assert_eq!(
        g.get("general.architecture").and_then(Value::as_str),
        Some("llama")
    );
    assert_eq!(u("llama.block_count"), 30);
    assert_eq!(u("llama.embedding_length"), 576);
    assert_eq!(u("llama.attention.head_count"), 9);
    assert_eq!(u("llama.attention.head_count_kv"), 3);
    assert_eq!(u("llama.feed_forward_length"), 1536);
    assert_eq!(
        g.get("llama.rope.freq_base").and_then(Value::as_f64),
        Some(100_000.0)
    );
    let eps = g
        .get("llama.attention.layer_norm_rms_epsilon")
        .and_then(Value::as_f64)
        .unwrap();
    assert!((eps - 1e-5).abs() < 1e-9);
    let Some(Value::Array(tokens)) = g.get("tokenizer.ggml.tokens") else {
        panic!("no tokens")
    };
    assert_eq!(tokens.len(), 49_152);
    assert_eq!(u("tokenizer.ggml.bos_token_id"), 1);
    assert_eq!(u("tokenizer.ggml.eos_token_id"), 2);

    let count = |ty| g.tensors.iter().filter(|t| t.ty == ty).count();
    assert_eq!(
        (
            count(GgmlType::Q4_1),
            count(GgmlType::F32),
            count(GgmlType::Q8_0)
        ),
        (210, 61, 1)
    );
    let emb = g.tensor("token_embd.weight").unwrap();
    assert_eq!(emb.dims, vec![576, 49_152]);
    assert_eq!(emb.ty, GgmlType::Q8_0);

    // Dequantised weights are finite and of the magnitudes trained weights have.
    for name in [
        "token_embd.weight",
        "blk.0.attn_q.weight",
        "blk.29.ffn_down.weight",
        "output_norm.weight",
    ] {
        let w = g.dequantize(name).unwrap();
        assert_eq!(w.len() as u64, g.tensor(name).unwrap().len());
        assert!(w.iter().all(|x| x.is_finite()), "{name}");
        let rms = (w.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        assert!(rms > 1e-3 && rms < 10.0, "{name}: rms {rms}");
    }
}
