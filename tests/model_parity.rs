//! The model computes what the authors' implementation computes (fixtures in tests/fixtures,
//! produced by the reference code: see tests/fixtures/README.md).

use std::path::{Path, PathBuf};

use clipdenoise::weights::{self, Missing};
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn check_io(model: &clipdenoise::ClipDenoise, dir: &str) {
    let (io, _) = weights::read_safetensors(&fixture(&format!("{dir}/io.safetensors"))).unwrap();
    let _g = tch::no_grad_guard();
    let x = &io["batch_input"];
    let feats = model.features(x, false);
    for (k, f) in feats.iter().enumerate() {
        let d = max_abs(f, &io[&format!("batch_feature_{k}")]);
        assert!(d < 1e-4, "{dir}: feature {k} differs by {d}");
    }
    let d = max_abs(&model.forward_t(x, false), &io["batch_output"]);
    assert!(d < 1e-4, "{dir}: output differs by {d}");
}

#[test]
fn official_state_dict_matches_reference_features_and_output() {
    for dir in ["tiny-w16", "tiny-w8"] {
        let m = weights::load_model(
            &fixture(&format!("{dir}/official_state_dict.safetensors")),
            Device::Cpu,
        )
        .unwrap();
        check_io(&m.model, dir);
    }
}

#[test]
fn folded_batchnorm_inference_matches_reference() {
    for dir in ["tiny-w16", "tiny-w8"] {
        let mut m = weights::load_model(
            &fixture(&format!("{dir}/official_state_dict.safetensors")),
            Device::Cpu,
        )
        .unwrap();
        m.model.prepare_inference(Kind::Float, true);
        check_io(&m.model, dir);
    }
}

#[test]
fn missing_and_unexpected_tensors_are_named() {
    let path = fixture("tiny-w8/official_state_dict.safetensors");
    let (mut t, meta) = weights::read_safetensors(&path).unwrap();
    t.remove("last.weight");
    let err = weights::build_model(&t, &meta, &path, Device::Cpu, Missing::Error).unwrap_err();
    assert!(
        err.to_string().contains("missing tensor last.weight"),
        "{err}"
    );
    let (mut t, meta) = weights::read_safetensors(&path).unwrap();
    t.retain(|k, _| k.starts_with("encoder."));
    let err = weights::build_model(&t, &meta, &path, Device::Cpu, Missing::Error).unwrap_err();
    assert!(err.to_string().contains("holds only an encoder"), "{err}");
    let (mut t, meta) = weights::read_safetensors(&path).unwrap();
    t.insert(
        "up_path.9.extra".into(),
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    );
    let err = weights::build_model(&t, &meta, &path, Device::Cpu, Missing::Error).unwrap_err();
    assert!(
        err.to_string()
            .contains("unexpected tensor up_path.9.extra"),
        "{err}"
    );
    let (mut t, meta) = weights::read_safetensors(&path).unwrap();
    t.insert(
        "last.weight".into(),
        Tensor::zeros([3, 8, 3, 3], (Kind::Half, Device::Cpu)),
    );
    let err = weights::build_model(&t, &meta, &path, Device::Cpu, Missing::Error).unwrap_err();
    assert!(err.to_string().contains("last.weight has dtype"), "{err}");
    let (mut t, meta) = weights::read_safetensors(&path).unwrap();
    t.insert(
        "last.weight".into(),
        Tensor::zeros([3, 8, 1, 1], (Kind::Float, Device::Cpu)),
    );
    let err = weights::build_model(&t, &meta, &path, Device::Cpu, Missing::Error).unwrap_err();
    assert!(err.to_string().contains("last.weight has shape"), "{err}");
}

#[test]
fn whole_image_inference_pads_and_crops_like_the_reference() {
    use clipdenoise::inference::{Denoiser, Options};
    for dir in ["tiny-w16", "tiny-w8"] {
        let d = Denoiser::load(
            &fixture(&format!("{dir}/official_state_dict.safetensors")),
            Options::default(),
        )
        .unwrap();
        let (io, _) =
            weights::read_safetensors(&fixture(&format!("{dir}/io.safetensors"))).unwrap();
        for case in ["50x70", "64x64", "33x97"] {
            let out = d.denoise(&io[&format!("padded_{case}_input")]).unwrap();
            let expected = io[&format!("padded_{case}_output")].clamp(0.0, 1.0);
            let diff = max_abs(&out, &expected);
            assert!(diff < 1e-4, "{dir} {case}: {diff}");
        }
    }
}
