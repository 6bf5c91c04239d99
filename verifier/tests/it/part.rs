//! The embed kind's part check against the real all-MiniLM-L6-v2 (weights from `scripts/setup`):
//! an honest output passes whichever row is picked; a faked row is found when it is the one
//! recomputed, and a wholly faked output whichever row is picked.

use gleaner_kinds::{EmbedKind, Matrix, ModelSetup, TaskKind, TaskRef};
use gleaner_models::{BackendChoice, ModelPaths};
use gleaner_protocol::blob::encode_texts;
use gleaner_protocol::task::TaskParams;

#[test]
fn a_recomputed_row_finds_a_faked_one_and_passes_honest_rows() {
    let setup = ModelSetup::new(&ModelPaths::new(gleaner_test_utils::gleaner_home()));
    let device = gleaner_models::select_device(BackendChoice::Flex).unwrap();
    let kind = EmbedKind::new(setup.minilm, device);
    let model = kind.model().unwrap();
    let params = TaskParams {
        batch: 4,
        max_tokens: 128,
        sampling: None,
        train: None,
    };
    let task = TaskRef {
        job_id: alloy::primitives::U256::from(1),
        index: 0,
        model: &model,
        params: &params,
    };
    let texts = [
        "The cat sat on the mat.",
        "A quick brown fox jumps over the lazy dog.",
        "Volunteers lend idle GPUs to a market.",
        "Rain is expected tomorrow afternoon.",
    ];
    let input = encode_texts(&texts).unwrap();
    // The honest output, computed as a worker does (batch of 4, padded together).
    let honest_blob = kind.run(&task, &input).unwrap();
    let honest = kind.check(&task, &input, &honest_blob).unwrap();
    let out = honest.output().expect("the honest output is well formed");
    for pick in 0..8 {
        assert_eq!(kind.check_part(&task, &input, out, pick).unwrap(), None);
    }

    // Row 2 replaced by row 0's embedding: plausible (unit length), but not row 2's.
    let mut m: Matrix = out.get::<Matrix>().unwrap().clone();
    let cols = m.cols;
    let first: Vec<f32> = m.data[..cols].to_vec();
    m.data[2 * cols..3 * cols].copy_from_slice(&first);
    let faked = kind.check(&task, &input, &m.to_blob().unwrap()).unwrap();
    let faked = faked.output().expect("a faked row is still well formed");
    for pick in 0..8u64 {
        let found = kind.check_part(&task, &input, faked, pick).unwrap();
        if pick % 4 == 2 {
            let reason = found.expect("the faked row is recomputed and differs");
            assert!(reason.starts_with("row 2 recomputed"), "{reason}");
        } else {
            assert_eq!(found, None, "pick {pick} recomputes an honest row");
        }
    }

    // Every row shifted by one: a wholly faked output is found whichever row is picked.
    let mut shifted = out.get::<Matrix>().unwrap().clone();
    shifted.data.rotate_left(cols);
    let shifted = kind
        .check(&task, &input, &shifted.to_blob().unwrap())
        .unwrap();
    let shifted = shifted.output().unwrap();
    for pick in 0..4 {
        assert!(
            kind.check_part(&task, &input, shifted, pick)
                .unwrap()
                .is_some()
        );
    }
    // Without the input (the coordinator could not serve it) nothing can be recomputed.
    assert_eq!(kind.check_part(&task, &[], out, 0).unwrap(), None);
}
