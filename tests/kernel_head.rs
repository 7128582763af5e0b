//! The kernel head's passes (issue 23): a model with other passes than [1, 2] round-trips
//! through its weights file and runs, in fp32 and bf16, whole and in tiles, and a bad list in a
//! file is refused in one line (that an old model computes what it did: kernel_head_golden.rs).

use std::path::{Path, PathBuf};

use clipdenoise::inference::{Denoiser, Options, Precision};
use clipdenoise::model::{ClipDenoise, Config, Head};
use clipdenoise::weights::{self, Provenance};
use tch::{nn, Device, Kind, Tensor};

/// A width-8 kernel model with `dilations` and random weights (logits scaled so that the
/// kernels differ from pixel to pixel), written with its config.
fn wide_model(dir: &Path, dilations: &[i64]) -> PathBuf {
    let config = Config {
        head: Head::Kernel,
        kernel_dilations: Some(dilations.to_vec()),
        ..Config::new(8, [1, 1, 1])
    };
    tch::manual_seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = ClipDenoise::new(&vs.root(), &config);
    tch::no_grad(|| {
        let _ = vs.variables()["head.logits.weight"]
            .shallow_clone()
            .f_mul_scalar_(30.0);
    });
    let path = dir.join("wide.safetensors");
    let prov = Provenance {
        source: "test".into(),
        training_data: "none".into(),
        steps: 0,
    };
    weights::save_model(&path, &vs, &config, &prov).unwrap();
    path
}

#[test]
fn wider_passes_round_trip_through_the_weights_and_run_in_every_path() {
    let tmp = tempfile::tempdir().unwrap();
    let path = wide_model(tmp.path(), &[1, 2, 4, 8]);
    let (tensors, meta) = weights::read_safetensors(&path).unwrap();
    assert_eq!(tensors["head.logits.weight"].size(), [108, 8, 1, 1]);
    assert!(
        meta[weights::META_CONFIG].contains(r#""kernel_dilations":[1,2,4,8]"#),
        "{meta:?}"
    );
    let load = |o: Options| Denoiser::load(&path, o).unwrap();
    let d = load(Options::default());
    assert_eq!(d.config().kernel_dilations(), &[1, 2, 4, 8]);
    assert_eq!(d.config().head_radius(), 15);
    // A flat colour stays exactly that colour, whatever the kernels.
    let flat = Tensor::ones([1, 3, 70, 90], (Kind::Float, Device::Cpu))
        * Tensor::from_slice(&[0.15f32, 0.5, 0.85]).view([1, 3, 1, 1]);
    let err = (d.denoise(&flat).unwrap() - &flat)
        .abs()
        .max()
        .double_value(&[]);
    assert!(err < 1e-5, "a flat picture changed by {err}");
    // Noisy input: fp32 whole, bf16 and tiles agree with it; every output within the input's
    // range per channel (no new intensities).
    tch::manual_seed(5);
    let x =
        (Tensor::rand([1, 3, 200, 260], (Kind::Float, Device::Cpu)) * 0.5 + 0.25).clamp(0.0, 1.0);
    let a = d.denoise(&x).unwrap();
    for c in 0..3 {
        let (xc, ac) = (x.select(1, c), a.select(1, c));
        assert!(ac.min().double_value(&[]) >= xc.min().double_value(&[]) - 1e-6);
        assert!(ac.max().double_value(&[]) <= xc.max().double_value(&[]) + 1e-6);
    }
    let moved = (&a - &x).abs().mean(Kind::Float).double_value(&[]);
    assert!(moved > 0.01, "the wide head left the noise alone: {moved}");
    let bf16 = load(Options {
        precision: Precision::Bf16,
        ..Options::default()
    });
    let b = bf16.denoise(&x).unwrap();
    let diff = (&b - &a).abs().mean(Kind::Float).double_value(&[]);
    assert!(diff < 0.02, "bf16 off by {diff}");
    // Tiles with a small overlap asked for: the head's 31x31 support raises it (4 x 15 ->
    // 64), and the tiles blend to within the network's own tile error of the whole frame.
    let tiled = load(Options {
        max_pixels: 128 * 128,
        tile_overlap: 8,
        ..Options::default()
    });
    let t = tiled.denoise(&x).unwrap();
    let diff = (&t - &a).abs().mean(Kind::Float).double_value(&[]);
    assert!(diff < 0.01, "tiles off by {diff}");
}

#[test]
fn a_weights_file_with_a_bad_dilation_list_is_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = wide_model(tmp.path(), &[1, 2]);
    for (bad, want) in [
        ("[1,2,0]", "got 0"),
        ("[]", "got 0"),
        ("[1,1,1,1,1,1,1,1,1]", "got 9"),
        ("[1,100]", "got 100"),
    ] {
        let out = tmp.path().join("bad.safetensors");
        let (tensors, mut meta) = weights::read_safetensors(&path).unwrap();
        let cfg = meta[weights::META_CONFIG].replace(
            r#""kernel_dilations":[1,2]"#,
            &format!(r#""kernel_dilations":{bad}"#),
        );
        meta.insert(weights::META_CONFIG.into(), cfg);
        weights::write_safetensors(&out, &tensors, meta).unwrap();
        let err = Denoiser::load(&out, Options::default())
            .expect_err("bad dilations accepted")
            .to_string();
        assert!(
            err.contains("kernel_dilations") && err.contains(want) && !err.contains('\n'),
            "{bad}: {err}"
        );
    }
}
