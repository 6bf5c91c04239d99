//! Tiny random models built in code: properties that hold for any weights.

use burn::prelude::*;
use gleaner_models::{BackendChoice, BertConfig, select_device};

fn run(model: &gleaner_models::Bert, device: &Device, rows: &[&[i64]]) -> Vec<f32> {
    let seq = rows.iter().map(|r| r.len()).max().unwrap();
    let mut ids = vec![0i64; rows.len() * seq];
    let mut mask = vec![0f32; rows.len() * seq];
    for (r, row) in rows.iter().enumerate() {
        for (c, &id) in row.iter().enumerate() {
            ids[r * seq + c] = id;
            mask[r * seq + c] = 1.0;
        }
    }
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [rows.len(), seq]), device);
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [rows.len(), seq]), device);
    model
        .embed(ids, mask)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap()
}

#[test]
fn padding_does_not_change_a_row() {
    let dev = select_device(BackendChoice::Cpu).unwrap().device;
    let cfg = BertConfig::tiny();
    let model = cfg.init(&dev);
    let short: &[i64] = &[1, 5, 9, 2];
    let long: &[i64] = &[1, 7, 7, 3, 8, 11, 40, 2];
    let alone = run(&model, &dev, &[short]);
    let padded = run(&model, &dev, &[short, long]);
    let h = cfg.hidden_size;
    for (a, b) in alone.iter().zip(&padded[..h]) {
        assert!(
            (a - b).abs() < 1e-5,
            "alone {alone:?} vs padded {:?}",
            &padded[..h]
        );
    }
    // And the padded row is not simply a copy: the longer input gives another vector.
    assert!(
        alone
            .iter()
            .zip(&padded[h..])
            .any(|(a, b)| (a - b).abs() > 1e-3)
    );
}

#[test]
fn rows_are_unit_length() {
    let dev = select_device(BackendChoice::Cpu).unwrap().device;
    let model = BertConfig::tiny().init(&dev);
    let out = run(&model, &dev, &[&[1, 2, 3], &[4, 5, 6, 7, 8]]);
    for row in out.chunks_exact(16) {
        let n: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "norm {n}");
    }
}

#[test]
fn flex_and_ndarray_agree() {
    let flex = select_device(BackendChoice::Flex).unwrap().device;
    let nd = select_device(BackendChoice::NdArray).unwrap().device;
    let cfg = BertConfig::tiny();
    let model = cfg.init(&flex);
    // Same weights on the other backend: save to bytes and load.
    let model_nd = model.clone().to_device(&nd);
    let rows: &[&[i64]] = &[&[1, 2, 3, 4], &[9, 8]];
    let a = run(&model, &flex, rows);
    let b = run(&model_nd, &nd, rows);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5);
    }
}
