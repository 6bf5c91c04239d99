//! The real checkpoint. Needs `scripts/setup` (weights) — a missing model fails with that command.

use gleaner_models::{
    BackendChoice, EMBED_MIN_COSINE, Embedder, MiniLmFiles, Precision, compare_embeddings, cosine,
    select_device,
};

#[derive(serde::Deserialize)]
struct Reference {
    model_sha256: String,
    sentences: Vec<RefSentence>,
}

#[derive(serde::Deserialize)]
struct RefSentence {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/minilm_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[track_caller]
fn files() -> MiniLmFiles {
    let files = gleaner_models::ModelPaths::new(gleaner_test_utils::gleaner_home()).minilm();
    if let Err(e) = files.ensure_present() {
        panic!("{e}");
    }
    files
}

fn embedder(choice: BackendChoice) -> Embedder {
    let device = select_device(choice).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}", device.describe());
    Embedder::load(&files(), device).unwrap()
}

#[track_caller]
fn assert_matches_reference(e: &Embedder, sentences: &[RefSentence], min_cos: f32) {
    let texts: Vec<&str> = sentences.iter().map(|s| s.text.as_str()).collect();
    let got = e.embed(&texts, 4, |_| {}).unwrap();
    for (s, row) in sentences.iter().zip(got.chunks_exact(384)) {
        let c = cosine(row, &s.embedding);
        assert!(
            c >= min_cos,
            "{}: cosine {c} < {min_cos} for {:?}",
            e.device().backend,
            s.text
        );
    }
}

#[test]
fn weights_are_the_pinned_checkpoint() {
    assert_eq!(files().weights_sha256().unwrap(), reference().model_sha256);
}

#[test]
fn tokenizer_matches_reference_ids() {
    let tok = Embedder::tokenizer_from(&files().tokenizer).unwrap();
    for s in reference().sentences {
        assert_eq!(tok.encode(&s.text).unwrap(), s.ids, "{:?}", s.text);
    }
}

#[test]
fn cpu_matches_reference() {
    let r = reference();
    for choice in [
        BackendChoice::Cpu,
        BackendChoice::Flex,
        BackendChoice::NdArray,
    ] {
        assert_matches_reference(&embedder(choice), &r.sentences, 0.99999);
    }
}

/// `cpu` (our kernels, no padding) and `flex` (Burn, padded) give the same vectors on the
/// 1,000-sentence bench corpus at the bench's batch size, well inside the comparator.
#[test]
fn native_cpu_agrees_with_flex_on_the_corpus() {
    let corpus = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bench/corpus-1000.txt"
    ))
    .unwrap();
    let texts: Vec<&str> = corpus
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(200)
        .collect();
    let native = embedder(BackendChoice::Cpu);
    assert_eq!(native.device().backend, "cpu");
    let a = native.embed(&texts, 32, |_| {}).unwrap();
    let b = embedder(BackendChoice::Flex)
        .embed(&texts, 32, |_| {})
        .unwrap();
    let agreement = compare_embeddings(&a, &b, 384, 0.99999).unwrap();
    assert!(agreement.agree, "{agreement:?}");
}

#[test]
fn example_sentence_has_published_values() {
    let e = embedder(BackendChoice::Cpu);
    let v = e
        .embed(&["This is an example sentence"], 1, |_| {})
        .unwrap();
    let want = [0.06766f32, 0.06350, 0.04871, 0.07930];
    for (g, w) in v.iter().zip(want) {
        assert!((g - w).abs() < 5e-5, "got {:?}, want {want:?}", &v[..4]);
    }
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
}

#[test]
fn batched_equals_one_at_a_time() {
    let e = embedder(BackendChoice::Cpu);
    let r = reference();
    let texts: Vec<&str> = r.sentences.iter().map(|s| s.text.as_str()).collect();
    let batched = e.embed(&texts, texts.len(), |_| {}).unwrap();
    let mut single = Vec::new();
    for t in &texts {
        single.extend(e.embed(&[t], 1, |_| {}).unwrap());
    }
    let a = compare_embeddings(&batched, &single, 384, 0.999_999).unwrap();
    assert!(a.agree, "{a:?}");
    let max_diff = batched
        .iter()
        .zip(&single)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(max_diff < 1e-5, "max |batched - single| = {max_diff}");
}

#[test]
fn different_sentences_do_not_agree() {
    let e = embedder(BackendChoice::Cpu);
    let v = e
        .embed(
            &["The cat sat on the mat.", "Quarterly revenue rose 3%."],
            2,
            |_| {},
        )
        .unwrap();
    let a =
        compare_embeddings(&v[..384], &v[384..], 384, gleaner_models::EMBED_MIN_COSINE).unwrap();
    assert!(!a.agree, "{a:?}");
}

/// The wgpu path for real: on machines without a GPU this runs on Mesa's lavapipe, installed by
/// `scripts/test` (`apt-get install mesa-vulkan-drivers`).
#[test]
fn wgpu_matches_reference() {
    let r = reference();
    let e = embedder(BackendChoice::Wgpu);
    // Short sentences keep lavapipe's shader compilation and ~5 GFLOP/s affordable.
    let short: Vec<RefSentence> = r
        .sentences
        .into_iter()
        .filter(|s| s.ids.len() <= 12)
        .collect();
    assert!(short.len() >= 4);
    assert_matches_reference(&e, &short, 0.9999);
}

/// f16 on wgpu (lavapipe here, through cubecl's SPIR-V compiler): every reference sentence stays
/// ten times closer to the float64 reference than the comparator's threshold asks, so an honest
/// f16 worker agrees with an f32 one. The worst cosine is printed for the docs.
#[test]
fn wgpu_f16_stays_far_inside_the_comparator() {
    let r = reference();
    let device = select_device(BackendChoice::Wgpu)
        .and_then(|d| d.with_precision(Precision::F16))
        .unwrap_or_else(|e| panic!("{e}"));
    let e = Embedder::load(&files(), device).unwrap();
    let short: Vec<&RefSentence> = r.sentences.iter().filter(|s| s.ids.len() <= 12).collect();
    assert!(short.len() >= 4);
    let texts: Vec<&str> = short.iter().map(|s| s.text.as_str()).collect();
    let got = e.embed(&texts, 4, |_| {}).unwrap();
    let mut worst = 1f32;
    let mut differs = false;
    for (s, row) in short.iter().zip(got.chunks_exact(384)) {
        worst = worst.min(cosine(row, &s.embedding));
        differs |= row.iter().zip(&s.embedding).any(|(a, b)| a != b);
    }
    eprintln!("wgpu f16 vs the float64 reference: worst cosine {worst:.7}");
    // The f16 path really ran: f32 values would not all match a float64 reference either, but
    // f16 rounding moves them by far more than 1e-7 in cosine.
    assert!(differs);
    let bound = 1.0 - (1.0 - EMBED_MIN_COSINE) / 10.0;
    assert!(worst >= bound, "worst cosine {worst} < {bound}");
}
