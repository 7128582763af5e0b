//! PSNR / SSIM against the values the authors' evaluation code reports for three image pairs
//! (tests/fixtures/metrics_pairs.safetensors: `pair{i}_reference` / `pair{i}_test`, HWC RGB
//! float32 on 0..255; tests/fixtures/metrics_expected.json).

use std::path::Path;

use clipdenoise::research::metrics::{psnr, ssim, ssim_per_channel};
use clipdenoise::weights::read_safetensors;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

#[test]
fn psnr_and_ssim_match_the_reference_within_1e_6() {
    let (tensors, _) = read_safetensors(&fixtures().join("metrics_pairs.safetensors")).unwrap();
    let expected: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(fixtures().join("metrics_expected.json")).unwrap())
            .unwrap();
    assert_eq!(expected.len(), 3);
    for e in &expected {
        let i = e["pair"].as_u64().unwrap();
        // HWC -> CHW.
        let r = tensors[&format!("pair{i}_reference")].permute([2, 0, 1]);
        let t = tensors[&format!("pair{i}_test")].permute([2, 0, 1]);
        assert_eq!(r.size(), vec![3, 96, 128]);
        let (p, s) = (psnr(&t, &r).unwrap(), ssim(&t, &r).unwrap());
        let (ep, es) = (e["psnr"].as_f64().unwrap(), e["ssim"].as_f64().unwrap());
        assert!((p - ep).abs() < 1e-6, "pair {i}: psnr {p} vs {ep}");
        assert!((s - es).abs() < 1e-6, "pair {i}: ssim {s} vs {es}");
        // Symmetric, and the same with a batch dimension.
        assert!((psnr(&r, &t).unwrap() - p).abs() < 1e-12);
        assert!((ssim(&r.unsqueeze(0), &t.unsqueeze(0)).unwrap() - s).abs() < 1e-12);
        assert_eq!(ssim_per_channel(&t, &r).unwrap().len(), 3);
    }
}
