//! SmolLM2-135M-Instruct against an independent implementation's greedy output (issue 5):
//! "The capital of France is", 12 new tokens → " Paris.\n\nThe answer is: 201".

use gleaner_models::smollm::Llama;
use gleaner_models::{BackendChoice, Decoder, select_device};
use tokenizers::Tokenizer;

/// SmolLM2 from the model cache on `backend`, with its tokenizer.
fn load(backend: BackendChoice) -> (Llama, Tokenizer) {
    let device = select_device(backend).unwrap().device;
    Llama::load(
        &gleaner_models::ModelPaths::new(gleaner_test_utils::gleaner_home()).smollm_gguf(),
        &device,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The token ids of `text` (no special tokens added).
fn ids(tok: &Tokenizer, text: &str) -> Vec<u32> {
    tok.encode(text, false).unwrap().get_ids().to_vec()
}

#[test]
fn greedy_matches_the_reference_ids() {
    let (model, tok) = load(BackendChoice::Cpu);
    let prompt = ids(&tok, "The capital of France is");
    let out = model.generate_greedy(&prompt, 12, Some(2)).unwrap();
    assert_eq!(
        out,
        vec![7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33],
        "prompt {prompt:?}"
    );
    assert_eq!(
        tok.decode(&out, false).unwrap(),
        " Paris.\n\nThe answer is: 201"
    );
}

/// `LlamaConfig`'s defaults are what the GGUF says.
#[test]
fn defaults_are_the_gguf_values() {
    use gleaner_models::LlamaConfig;
    let g = gleaner_models::gguf::Gguf::open(
        &gleaner_models::ModelPaths::new(gleaner_test_utils::gleaner_home()).smollm_gguf(),
    )
    .unwrap();
    let tok = gleaner_models::smollm::tokenizer_from_gguf(&g).unwrap();
    let cfg = LlamaConfig::from_gguf(&g, tok.get_vocab_size(false)).unwrap();
    assert_eq!(cfg, LlamaConfig::new());
}

/// One teacher-forced pass accepts the honest continuation and rejects a substituted token.
#[test]
fn teacher_forced_check_accepts_honest_and_rejects_substituted_tokens() {
    let (model, tok) = load(BackendChoice::Cpu);
    let prompt = ids(&tok, "The capital of France is");
    let honest = model.generate_greedy(&prompt, 12, Some(2)).unwrap();
    let check = model.check_greedy(&prompt, &honest, 0.1).unwrap();
    assert!(check.accepted, "{check:?}");
    assert!(
        check.max_gap < 1e-3,
        "greedy tokens are the top logit: {check:?}"
    );
    // " London" instead of " Paris".
    let mut forged = honest.clone();
    forged[0] = ids(&tok, " London")[0];
    let check = model.check_greedy(&prompt, &forged, 0.1).unwrap();
    assert!(!check.accepted && check.gaps[0] > 1.0, "{check:?}");
}

/// The `generate` task kind's check, as the verifier runs it on each checker (the Burn model on
/// flex, the quantized CPU decoder on `cpu`): honest greedy and sampled outputs pass (also
/// across CPU backends); a substituted prompt, a different decoding, a truncated output, or
/// text that is not the ids' text is rejected.
#[test]
fn generator_verifies_honest_runs_and_rejects_substitutions() {
    use gleaner_models::Generator;
    use gleaner_protocol::blob::Generation;
    use gleaner_protocol::task::SamplingParams;

    let path = gleaner_models::ModelPaths::new(gleaner_test_utils::gleaner_home()).smollm_gguf();
    let flex = Generator::load(&path, select_device(BackendChoice::Flex).unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(flex.weights_sha256(), gleaner_models::SMOLLM_GGUF_SHA256);
    assert_eq!(flex.checker(), "flex");
    let cpu = Generator::load(&path, select_device(BackendChoice::Cpu).unwrap()).unwrap();
    assert_eq!(cpu.checker(), "quantized-cpu");
    let prompt = "The capital of France is";
    let greedy = flex.decoding(12, None, 0, 0);
    let honest = flex.generate(prompt, &greedy).unwrap();
    assert_eq!(honest.text, " Paris.\n\nThe answer is: 201");
    assert_eq!(cpu.generate(prompt, &greedy).unwrap(), honest);

    // Another backend's floats (Burn on ndarray generating, not the shared quantized CPU
    // decoder).
    let ndarray = Generator::load_with(
        &path,
        select_device(BackendChoice::NdArray).unwrap(),
        gleaner_models::DecoderChoice::Burn,
    )
    .unwrap();
    assert_eq!(ndarray.decoder(), "ndarray");
    let other = ndarray.generate(prompt, &greedy).unwrap();
    let germany = flex.generate("The capital of Germany is", &greedy).unwrap();
    let s = |seed| SamplingParams {
        temperature_milli: 900,
        top_p_milli: 950,
        seed,
    };
    let story = "Once upon a time, in a small village,";
    let sampled = flex.decoding(24, Some(s(7)), 3, 1);
    let run = flex.generate(story, &sampled).unwrap();
    let nd_run = ndarray.generate(story, &sampled).unwrap();

    for v in [&flex, &cpu] {
        let name = v.checker();
        let ok = v.verify(prompt, &honest, &greedy).unwrap();
        assert!(ok.accepted, "{name}: {ok:?}");
        // Another backend's output: accepted, and by a wide margin.
        let cross = v.verify(prompt, &other, &greedy).unwrap();
        assert!(cross.accepted && cross.max_gap < 1e-2, "{name}: {cross:?}");

        // The output of another prompt, claimed for this one.
        let r = v.verify(prompt, &germany, &greedy).unwrap();
        assert!(!r.accepted, "{name}: {r:?}");

        // Truncated without the end-of-sequence token; more tokens than allowed.
        let cut = Generation {
            ids: honest.ids[..6].to_vec(),
            text: v.text(&honest.ids[..6]).unwrap(),
        };
        assert!(!v.verify(prompt, &cut, &greedy).unwrap().accepted, "{name}");
        assert!(
            !v.verify(prompt, &honest, &v.decoding(11, None, 0, 0))
                .unwrap()
                .accepted,
            "{name}"
        );

        // Right ids, wrong text.
        let lie = Generation {
            text: " Berlin.".into(),
            ..honest.clone()
        };
        let r = v.verify(prompt, &lie, &greedy).unwrap();
        assert!(!r.accepted && r.reason.unwrap().contains("text"), "{name}");

        // Seeded sampling: reproducible from the job's parameters; another seed's run, or a
        // sampled run claimed as greedy, is rejected.
        let ok = v.verify(story, &run, &sampled).unwrap();
        assert!(ok.accepted, "{name}: {ok:?}");
        let cross = v.verify(story, &nd_run, &sampled).unwrap();
        assert!(cross.accepted, "{name}: {cross:?}");
        let r = v
            .verify(story, &run, &v.decoding(24, Some(s(8)), 3, 1))
            .unwrap();
        assert!(!r.accepted, "{name}: another seed: {r:?}");
        let r = v.verify(story, &run, &v.decoding(24, None, 3, 1)).unwrap();
        assert!(!r.accepted, "{name}: claimed greedy: {r:?}");
    }
}

/// Prompts of different lengths decoded as one left-padded batch give the tokens each gives
/// alone, greedy and sampled, and stop independently at the end-of-sequence token.
#[test]
fn batched_decoding_equals_one_at_a_time() {
    use gleaner_models::smollm::Sampling;
    let (model, tok) = load(BackendChoice::Cpu);
    let texts = [
        "The capital of France is",
        "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n",
        "Once upon a time, in a small village by the sea, there lived",
    ];
    let prompts: Vec<Vec<u32>> = texts.iter().map(|t| ids(&tok, t)).collect();
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let eos = model.config().eos;
    assert_eq!(eos, Some(2), "SmolLM2's <|im_end|>");
    let rules = [
        None,
        None,
        Some(Sampling {
            temperature: 0.8,
            top_p: 0.9,
            seed: 5,
        }),
    ];
    let batch = model.generate_batch(&refs, 16, eos, &rules).unwrap();
    for (i, p) in refs.iter().enumerate() {
        let alone = model.generate(p, 16, eos, rules[i]).unwrap();
        assert_eq!(batch[i], alone, "prompt {i}");
    }
    // The chat answer stops early ("The answer is 4." then <|im_end|>); the others run on.
    assert!(
        batch[1].len() < 16 && batch[1].last() == Some(&2),
        "{:?}",
        batch[1]
    );
    assert_eq!(batch[0].len(), 16);
}

/// The wgpu path (Mesa lavapipe here, a GPU on a worker) decodes the reference tokens, and the
/// verifier's CPU check accepts its output with a logit gap far inside the margin.
#[test]
fn wgpu_decodes_the_reference_and_the_cpu_check_accepts_it() {
    use gleaner_models::Generator;
    let path = gleaner_models::ModelPaths::new(gleaner_test_utils::gleaner_home()).smollm_gguf();
    let wgpu = Generator::load(&path, select_device(BackendChoice::Wgpu).unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    let rule = wgpu.decoding(5, None, 0, 0);
    let out = wgpu.generate("The capital of France is", &rule).unwrap();
    assert_eq!(out.ids, vec![7042, 30, 198, 198, 504]);
    let cpu = Generator::load(&path, select_device(BackendChoice::Flex).unwrap()).unwrap();
    let check = cpu.verify("The capital of France is", &out, &rule).unwrap();
    assert!(check.accepted && check.max_gap < 1e-2, "{check:?}");
}

/// f16 on wgpu (lavapipe here): an honest f16 worker's greedy output is accepted by the f32 CPU
/// verifier, and its teacher-forced logits stay within a quarter of the verifier's margin of the
/// f32 reference's. The gaps are printed for the docs.
#[test]
fn wgpu_f16_output_is_accepted_by_the_cpu_check() {
    use gleaner_models::{GENERATE_MARGIN, Generator, Precision};
    let path = gleaner_models::ModelPaths::new(gleaner_test_utils::gleaner_home()).smollm_gguf();
    let device = select_device(BackendChoice::Wgpu)
        .and_then(|d| d.with_precision(Precision::F16))
        .unwrap_or_else(|e| panic!("{e}"));
    let half = Generator::load(&path, device).unwrap_or_else(|e| panic!("{e}"));
    let prompt = "The capital of France is";
    let rule = half.decoding(5, None, 0, 0);
    let out = half.generate(prompt, &rule).unwrap();
    let cpu = Generator::load(&path, select_device(BackendChoice::Flex).unwrap()).unwrap();
    let check = cpu.verify(prompt, &out, &rule).unwrap();
    eprintln!("f16 ids {:?}; the f32 check: {check:?}", out.ids);
    assert!(check.accepted, "{check:?}");
    let mut ids = half.prompt_ids(prompt).unwrap();
    ids.extend(&out.ids);
    let want = cpu.model().forward_all(&ids).unwrap();
    let got = half.model().forward_all(&ids).unwrap();
    assert_eq!(want.len(), got.len());
    let d = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!(
        "wgpu f16 vs flex f32: max |logit difference| {d:.3e} over {} positions",
        ids.len()
    );
    // Non-zero: the f16 path ran. An f16 worker's token can trail the f32 top logit by at most
    // 2d; below a quarter of the margin each, 2d stays under half of it (lavapipe: d = 0.103).
    assert!(d > 1e-4 && d < GENERATE_MARGIN / 4.0, "{d}");
}

/// The quantized CPU decoder (what CPU workers generate with) keeps the reference semantics:
/// the reference ids, logits within 1e-3 of the Burn model's, batched rows equal to single
/// ones, and the Burn verifier accepts its sampled output.
#[test]
fn quantized_cpu_decoder_matches_the_reference() {
    use gleaner_models::qcpu::QuantLlama;
    use gleaner_models::smollm::{Decoding, GENERATE_MARGIN, Sampling};
    let (model, tok) = load(BackendChoice::Flex);
    let q = QuantLlama::load(
        &gleaner_models::ModelPaths::new(gleaner_test_utils::gleaner_home()).smollm_gguf(),
        model.config(),
    )
    .unwrap();
    let ids = |t: &str| ids(&tok, t);
    let france = ids("The capital of France is");
    let greedy = q.generate_batch(&[&france], 12, Some(2), &[None]).unwrap();
    assert_eq!(
        greedy[0],
        vec![7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33]
    );
    let mut all = france.clone();
    all.extend_from_slice(&greedy[0]);
    let a = model.forward_all(&all).unwrap();
    let gap = |b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    // With f32 activations (prompts, and the verifier on CPUs without VNNI): float rounding.
    let d = gap(&q.forward_all_exact(&all).unwrap());
    assert!(d < 1e-3, "max |logit difference|, f32 activations: {d}");
    // The verifier's pass (16-bit activations where the CPU has VNNI): a tenth of the margin.
    let d = gap(&q.forward_all(&all).unwrap());
    assert!(
        d < GENERATE_MARGIN / 10.0,
        "max |logit difference|, the verifier's pass: {d}"
    );

    let story = ids("Once upon a time, in a small village by the sea, there lived");
    let chat = ids("<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n");
    let s = Some(Sampling {
        temperature: 0.8,
        top_p: 0.9,
        seed: 9,
    });
    let rules = [None, s, None];
    let prompts: [&[u32]; 3] = [&france, &story, &chat];
    let batch = q.generate_batch(&prompts, 16, Some(2), &rules).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let alone = q.generate_batch(&[p], 16, Some(2), &[rules[i]]).unwrap();
        assert_eq!(batch[i], alone[0], "prompt {i}");
    }
    assert_eq!(
        batch[2].last(),
        Some(&2),
        "the chat answer stops at <|im_end|>"
    );
    let check = model
        .verify(
            &story,
            &batch[1],
            &Decoding {
                max_new: 16,
                eos: Some(2),
                sampling: s,
                margin: GENERATE_MARGIN,
            },
        )
        .unwrap();
    assert!(check.accepted, "{check:?}");
}

/// Two replicas that part at a near-tie are both valid: at the 6th token of the reference
/// prompt the top two logits are ~0.22 apart, so an output that takes the runner-up there and
/// continues greedily is accepted, while the same substitution under a tighter margin is not.
#[test]
fn a_divergence_at_a_near_tie_is_accepted_within_the_margin() {
    use gleaner_models::smollm::{Decoding, GENERATE_MARGIN};
    let (model, tok) = load(BackendChoice::Flex);
    let prompt = ids(&tok, "The capital of France is");
    let honest = model.generate_greedy(&prompt, 12, Some(2)).unwrap();
    // The runner-up at position 5 (0-based), where the reference gap is smallest.
    let mut prefix = prompt.clone();
    prefix.extend_from_slice(&honest[..5]);
    let logits = model.forward(&prefix, &mut model.cache()).unwrap();
    let top = honest[5] as usize;
    let runner = (0..logits.len())
        .filter(|&i| i != top)
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap();
    let gap = logits[top] - logits[runner];
    assert!(gap > 0.0 && gap < GENERATE_MARGIN, "gap {gap}");
    prefix.push(runner as u32);
    let rest = model.generate_greedy(&prefix, 6, Some(2)).unwrap();
    let mut diverged = honest[..5].to_vec();
    diverged.push(runner as u32);
    diverged.extend(rest);
    assert_ne!(diverged, honest);
    let rule = |margin| Decoding {
        max_new: 12,
        eos: Some(2),
        sampling: None,
        margin,
    };
    let ok = model
        .verify(&prompt, &diverged, &rule(GENERATE_MARGIN))
        .unwrap();
    assert!(ok.accepted, "{ok:?}");
    assert!((ok.max_gap - gap).abs() < 1e-3, "{ok:?}");
    let strict = model.verify(&prompt, &diverged, &rule(gap / 2.0)).unwrap();
    assert!(!strict.accepted);
}

/// Decoding and the teacher-forced check run through the `Decoder` trait on either decoder:
/// both give the reference ids, and each accepts its own output with the top logit.
#[test]
fn decoding_and_the_check_run_on_either_decoder() {
    use gleaner_models::qcpu::QuantLlama;
    use gleaner_models::smollm::{Decoding, GENERATE_MARGIN, generate_batch, verify};
    let (model, tok) = load(BackendChoice::Flex);
    let q = QuantLlama::load(
        &gleaner_models::ModelPaths::new(gleaner_test_utils::gleaner_home()).smollm_gguf(),
        model.config(),
    )
    .unwrap();
    let prompt = ids(&tok, "The capital of France is");
    let rule = Decoding {
        max_new: 12,
        eos: Some(2),
        sampling: None,
        margin: GENERATE_MARGIN,
    };
    let decoders: [&dyn Decoder; 2] = [&model, &q];
    for (i, d) in decoders.into_iter().enumerate() {
        let out = generate_batch(d, &[&prompt], 12, Some(2), &[None]).unwrap();
        assert_eq!(
            out[0],
            vec![7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33],
            "decoder {i}"
        );
        let check = verify(d, &prompt, &out[0], &rule).unwrap();
        assert!(
            check.accepted && check.max_gap < 1e-3,
            "decoder {i}: {check:?}"
        );
    }
}

/// The greedy check's two logits a position (`Decoder::forward_tops`, which the quantized
/// decoder computes without writing the output layer's rows) are exactly the largest and the
/// claimed token's logits of the same decoder's full teacher-forced pass, on both decoders,
/// for the honest output and one with a substituted token; the check's gaps are those logits'
/// differences, and it rejects the substitution. Bad arguments are refused.
#[test]
fn greedy_tops_are_the_full_pass_logits() {
    use gleaner_models::qcpu::QuantLlama;
    use gleaner_models::smollm::GENERATE_MARGIN;
    let (model, tok) = load(BackendChoice::Flex);
    let q = QuantLlama::load(
        &gleaner_models::ModelPaths::new(gleaner_test_utils::gleaner_home()).smollm_gguf(),
        model.config(),
    )
    .unwrap();
    let v = model.config().vocab;
    let prompt = ids(&tok, "The capital of France is");
    let honest = q.generate_greedy(&prompt, 12, Some(2)).unwrap();
    let mut forged = honest.clone();
    forged[3] = ids(&tok, " London")[0];
    let decoders: [&dyn Decoder; 2] = [&model, &q];
    for (i, d) in decoders.into_iter().enumerate() {
        for (claim, is_honest) in [(&honest, true), (&forged, false)] {
            let mut all = prompt.clone();
            all.extend_from_slice(&claim[..claim.len() - 1]);
            let from = prompt.len() - 1;
            let full = d.forward_from(&all, from).unwrap();
            let tops = d.forward_tops(&all, from, claim).unwrap();
            assert_eq!(tops.len(), claim.len());
            let check = d.check_greedy(&prompt, claim, GENERATE_MARGIN).unwrap();
            for (k, (row, [top, logit])) in full.chunks_exact(v).zip(&tops).enumerate() {
                let want = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(top.to_bits(), want.to_bits(), "decoder {i}, position {k}");
                assert_eq!(logit.to_bits(), row[claim[k] as usize].to_bits());
                assert_eq!(check.gaps[k], top - logit, "decoder {i}, position {k}");
            }
            assert_eq!(check.accepted, is_honest, "decoder {i}: {check:?}");
        }
        let mut all = prompt.clone();
        all.extend_from_slice(&honest[..honest.len() - 1]);
        let from = prompt.len() - 1;
        assert!(d.forward_tops(&all, from, &honest).is_ok());
        let short = &honest[1..];
        assert!(d.forward_tops(&all, from, short).is_err(), "a token short");
        assert!(
            d.forward_tops(&all, all.len(), &[]).is_err(),
            "no positions"
        );
        let mut outside = honest.clone();
        outside[0] = v as u32;
        assert!(
            d.forward_tops(&all, from, &outside).is_err(),
            "outside the vocabulary"
        );
    }
}
