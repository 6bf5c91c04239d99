//! Tiny random models built in code: properties that hold for any weights.

use burn::prelude::*;
use gleaner_models::ecpu::CpuBert;
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

/// Our CPU kernels (packed, unpadded) compute what the Burn module computes (padded), for
/// sequences of many lengths in one batch, alone and together.
#[test]
fn native_cpu_matches_burn() {
    let dev = select_device(BackendChoice::Flex).unwrap().device;
    let cfg = BertConfig::tiny();
    let model = cfg.init(&dev);
    let cpu = CpuBert::from_bert(&model, &cfg).unwrap();
    let rows: Vec<Vec<i64>> = (1..=9)
        .map(|n| (0..n).map(|i| (i * 7 + n * 3) % 64).collect())
        .collect();
    let refs: Vec<&[i64]> = rows.iter().map(Vec::as_slice).collect();
    let want = run(&model, &dev, &refs);
    let ids: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| r.iter().map(|&i| i as u32).collect())
        .collect();
    let id_refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let got = cpu.embed(&id_refs).unwrap();
    assert_eq!(got.len(), want.len());
    let d = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-5, "max |cpu - burn| = {d}");
    // One at a time gives the same rows: nothing of a batch leaks into another row.
    for (r, row) in id_refs.iter().enumerate() {
        let alone = cpu.embed(&[row]).unwrap();
        let d = alone
            .iter()
            .zip(&got[r * 16..(r + 1) * 16])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-6, "row {r}: max |alone - batched| = {d}");
    }
}

#[test]
fn native_cpu_refuses_bad_rows_with_their_index() {
    let dev = select_device(BackendChoice::Flex).unwrap().device;
    let cfg = BertConfig::tiny();
    let cpu = CpuBert::from_bert(&cfg.init(&dev), &cfg).unwrap();
    let err = cpu.embed(&[&[1, 2], &[1, 64]]).unwrap_err().to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
    assert!(err.starts_with("input 1:"), "{err}");
    let long = vec![1u32; 33];
    let err = cpu.embed(&[&long]).unwrap_err().to_string();
    assert!(err.contains("33 tokens"), "{err}");
    assert!(cpu.embed(&[&[]]).is_err());
}
