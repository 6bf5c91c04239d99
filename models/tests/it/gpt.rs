//! The training GPT's gradient on wgpu (lavapipe here, a GPU on a worker) against the CPU
//! backends: the calibration of the `train` comparator (`TRAIN_MAX_REL_L2` = 1e-3 in the kinds
//! crate) across every backend a worker may run.

use gleaner_models::gpt::{BYTE_VOCAB, GptConfig, loss_and_grad, sequences};
use gleaner_models::{BackendChoice, select_device};
use gleaner_protocol::formulas::rel_l2;

const SMALL: GptConfig = GptConfig {
    vocab: BYTE_VOCAB,
    dim: 32,
    layers: 2,
    heads: 4,
    context: 16,
};

#[test]
fn train_gradients_agree_across_wgpu_flex_and_ndarray() {
    let params = SMALL.init(11);
    let text = b"Once upon a time, Tom went to the park. Tom found a red ball. ".repeat(3);
    let tokens = sequences(&text, SMALL.context, 0, 3).unwrap();
    let run = |b| {
        let d = select_device(b).unwrap();
        loss_and_grad(&SMALL, &params, &tokens, 3, &d.device).unwrap()
    };
    let (lf, gf) = run(BackendChoice::Flex);
    for b in [BackendChoice::Wgpu, BackendChoice::NdArray] {
        let (l, g) = run(b);
        let d = rel_l2(&g, &gf);
        eprintln!("{b} vs flex: gradient relative L2 {d:.2e}, loss {l} vs {lf}");
        assert!(
            d < 1e-4,
            "{b}: relative L2 {d} (the comparator allows 1e-3)"
        );
        assert!((l - lf).abs() < 1e-4, "{b}: loss {l} vs {lf}");
    }
}
