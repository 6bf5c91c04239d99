//! SmolLM2-135M-Instruct against an independent implementation's greedy output (issue 5):
//! "The capital of France is", 12 new tokens → " Paris.\n\nThe answer is: 201".

use gleaner_models::smollm::Llama;
use gleaner_models::{BackendChoice, model_cache, select_device};

#[test]
fn greedy_matches_the_reference_ids() {
    let path = model_cache()
        .join("smollm2-135m-instruct")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let device = select_device(BackendChoice::Cpu).unwrap().device;
    let (model, tok) = Llama::load(&path, &device).unwrap_or_else(|e| panic!("{e}"));
    let prompt = tok
        .encode("The capital of France is", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let ids = model.generate_greedy(&prompt, 12, Some(2)).unwrap();
    assert_eq!(
        ids,
        vec![7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33],
        "prompt {prompt:?}"
    );
    assert_eq!(
        tok.decode(&ids, false).unwrap(),
        " Paris.\n\nThe answer is: 201"
    );
}

/// One teacher-forced pass accepts the honest continuation and rejects a substituted token.
#[test]
fn teacher_forced_check_accepts_honest_and_rejects_substituted_tokens() {
    let path = model_cache()
        .join("smollm2-135m-instruct")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let device = select_device(BackendChoice::Cpu).unwrap().device;
    let (model, tok) = Llama::load(&path, &device).unwrap_or_else(|e| panic!("{e}"));
    let prompt = tok
        .encode("The capital of France is", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let honest = model.generate_greedy(&prompt, 12, Some(2)).unwrap();
    let check = model.check_greedy(&prompt, &honest, 0.1).unwrap();
    assert!(check.accepted, "{check:?}");
    assert!(
        check.max_gap < 1e-3,
        "greedy tokens are the top logit: {check:?}"
    );
    // " London" instead of " Paris".
    let mut forged = honest.clone();
    forged[0] = tok.encode(" London", false).unwrap().get_ids()[0];
    let check = model.check_greedy(&prompt, &forged, 0.1).unwrap();
    assert!(!check.accepted && check.gaps[0] > 1.0, "{check:?}");
}
