//! The fused inference path (conv + bias + activation + residual add as one oneDNN primitive,
//! weights prepacked at load: src/model/fused.rs) against the separate passes the network ran
//! before: at most 1 LSB apart on u8 frames, in fp32 and bf16, on the shipped default model
//! and on the paper-size clip-rn50 shape (random weights), on a real noisy photo.

use std::path::Path;

use clipdenoise::frame::{FrameFormat, PixelFormat};
use clipdenoise::inference::{Denoiser, Options, Precision};
use clipdenoise::model::{fusion_runs, ClipDenoise, Config};
use clipdenoise::weights::{LoadedModel, ModelSource, Provenance};
use tch::{Device, Kind, Tensor};

/// A (w x h) crop of the fixture photo with gaussian noise (sigma 25), as packed u8 RGB.
fn noisy_frame(w: i64, h: i64) -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/wiki001-1024x576.jpg");
    let img = image::open(path).unwrap().to_rgb8();
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let clean = Tensor::from_slice(img.as_raw())
        .view([ih, iw, 3])
        .narrow(0, 0, h)
        .narrow(1, 0, w)
        .to_kind(Kind::Float)
        / 255.0;
    let mut rng = clipdenoise::research::noise::TorchRng::new(7);
    let noisy = clipdenoise::research::noise::gaussian(&clean, 25.0, &mut rng).unwrap();
    let u8s = (noisy * 255.0)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
        .contiguous();
    Vec::<u8>::try_from(u8s.view([-1])).unwrap()
}

/// The model's u8 output on `frame` in `precision`, fused or not.
fn run(
    load: &dyn Fn() -> LoadedModel,
    precision: Precision,
    fused: bool,
    frame: &[u8],
    fmt: &FrameFormat,
) -> Vec<u8> {
    let opts = Options {
        precision,
        ..Options::default()
    };
    let mut d = Denoiser::new(load(), opts).unwrap();
    d.set_fused(fused);
    if fused {
        // The comparison is vacuous unless the fused path really runs here; on this project's
        // machines (libtorch from PyPI: oneDNN; AVX512-BF16) it does in both precisions.
        assert!(
            fusion_runs(Device::Cpu, precision.kind()),
            "{precision}: fusion does not run"
        );
    }
    assert_eq!(
        d.is_fused(),
        fused,
        "{precision}: fused path taken: {}",
        d.is_fused()
    );
    let out = d.denoise_frames(&[frame], fmt, 1.0).unwrap().remove(0);
    // The network did something: most of the output is not the input.
    assert!(out.iter().zip(frame).filter(|(x, y)| x != y).count() > out.len() / 2);
    out
}

/// Largest and mean absolute difference in u8 levels.
fn diff(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len());
    let max = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    let sum: u64 = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as u64).sum();
    (max, sum as f64 / a.len() as f64)
}

/// fp32: fused within 1 LSB of the unfused path. bf16: the unfused path rounds to bf16 after
/// the conv, again after the activation and after the add, the fused one once, so they
/// differ by about one bf16 step (up to `bf16_max` LSB); the fused output must be about as
/// close to the fp32 result as the unfused one (mean error at most `err_ratio` times its), and
/// the two bf16 outputs at most 1 LSB apart on average.
fn check(
    name: &str,
    load: &dyn Fn() -> LoadedModel,
    (w, h): (i64, i64),
    bf16_max: u8,
    err_ratio: f64,
) {
    let frame = noisy_frame(w, h);
    let fmt = FrameFormat::new(PixelFormat::Rgb, w as usize, h as usize);
    let f32_fused = run(load, Precision::Fp32, true, &frame, &fmt);
    let f32_plain = run(load, Precision::Fp32, false, &frame, &fmt);
    let (max, mean) = diff(&f32_fused, &f32_plain);
    eprintln!("{name} {w}x{h} fp32 fused vs unfused: max {max} LSB, mean {mean:.5}");
    assert!(
        max <= 1,
        "{name} fp32: fused output is {max} LSB off the unfused one"
    );
    let bf16_fused = run(load, Precision::Bf16, true, &frame, &fmt);
    let bf16_plain = run(load, Precision::Bf16, false, &frame, &fmt);
    let (max, mean) = diff(&bf16_fused, &bf16_plain);
    let (max_f, err_f) = diff(&bf16_fused, &f32_plain);
    let (max_p, err_p) = diff(&bf16_plain, &f32_plain);
    eprintln!(
        "{name} {w}x{h} bf16 fused vs unfused: max {max} LSB, mean {mean:.4}; vs fp32: fused max \
         {max_f} mean {err_f:.4}, unfused max {max_p} mean {err_p:.4}"
    );
    assert!(
        max <= bf16_max,
        "{name} bf16: fused output is {max} LSB off the unfused one"
    );
    assert!(
        mean <= 1.0,
        "{name} bf16: fused output is {mean} LSB off on average"
    );
    assert!(
        err_f <= err_p * err_ratio,
        "{name} bf16: fused is farther from fp32 ({err_f}) than unfused ({err_p})"
    );
}

#[test]
fn fused_default_model_matches_the_unfused_path() {
    let load = || ModelSource::Default.load(Device::Cpu).unwrap();
    check("default", &load, (640, 360), 2, 1.25);
}

#[test]
fn fused_clip_rn50_matches_the_unfused_path() {
    // The paper's shape with random weights (the CLIP weights cannot be shipped): He-scaled
    // normal conv weights from the project's own seeded generator (the global one is shared
    // with the tests running beside this one), made once and copied into every model loaded.
    let master = tch::nn::VarStore::new(Device::Cpu);
    let _init = ClipDenoise::new(&master.root(), &Config::clip_rn50());
    let mut rng = clipdenoise::research::noise::TorchRng::new(11);
    tch::no_grad(|| {
        let mut vars: Vec<_> = master.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut t) in vars {
            if name.ends_with("weight") && t.dim() == 4 {
                let fan_in = (t.size()[1] * t.size()[2] * t.size()[3]) as f64;
                let w = rng.randn_like(&t).unwrap() * (2.0 / fan_in).sqrt();
                t.copy_(&w);
            }
        }
    });
    let load = || {
        let mut vs = tch::nn::VarStore::new(Device::Cpu);
        let model = ClipDenoise::new(&vs.root(), &Config::clip_rn50());
        vs.copy(&master).unwrap();
        LoadedModel {
            vs,
            model,
            provenance: Provenance::default(),
        }
    };
    // Random weights drive some outputs far outside [0, 1], where one bf16 step is many u8
    // levels: the largest difference says little there, the averages do.
    check("clip-rn50", &load, (320, 192), 255, 1.5);
}

/// The decoder's upsample + cat in one pass (src/model/upsample_cat.rs) against libtorch's
/// two ops, on seeded random tensors: odd and even sizes, one image and two, a channels_last
/// and an NCHW skip, 3 and 16 skip channels; f32 within float rounding, bf16 within one bf16
/// step of the value (both round a float sum once). Everything it refuses runs the two ops.
#[test]
fn upsample_cat_matches_libtorch() {
    use clipdenoise::model::{to_layout, upsample_cat};
    let mut rng = clipdenoise::research::noise::TorchRng::new(5);
    for &(n, c1, c2, h, w) in &[(1, 16, 3, 5, 7), (2, 32, 16, 6, 4), (1, 8, 8, 1, 3)] {
        for skip_last in [true, false] {
            let x = rng.randn_like(&Tensor::zeros([n, c1, h, w], (Kind::Float, Device::Cpu)));
            let s = rng.randn_like(&Tensor::zeros(
                [n, c2, 2 * h, 2 * w],
                (Kind::Float, Device::Cpu),
            ));
            let (x, s) = (x.unwrap(), s.unwrap());
            for kind in [Kind::Float, Kind::BFloat16] {
                let xk = to_layout(&x.to_kind(kind), true);
                let sk = to_layout(&s.to_kind(kind), skip_last);
                let want = upsample_cat::unfused(&xk, &sk).to_kind(Kind::Float);
                let got = upsample_cat::fused(&xk, &sk).unwrap();
                assert_eq!(got.size(), want.size());
                assert_eq!(got.kind(), kind);
                assert_eq!(got.stride()[1], 1, "channels_last output");
                let got = got.to_kind(Kind::Float);
                let tol = match kind {
                    Kind::Float => 1e-6,
                    _ => 2f64.powi(-7),
                };
                let excess = ((&got - &want).abs() - want.abs() * tol - 1e-6)
                    .max()
                    .double_value(&[]);
                assert!(
                    excess <= 0.0,
                    "{kind:?} n{n} c{c1}+{c2} {h}x{w} skip channels_last {skip_last}: off by {excess} beyond tolerance"
                );
                // The skip's channels are copied exactly.
                assert!(got.narrow(1, c1, c2).equal(&sk.to_kind(Kind::Float)));
            }
        }
    }
    // Refused (the caller runs the two ops): an NCHW x, a skip of the wrong size.
    let x = Tensor::ones([1, 4, 3, 3], (Kind::Float, Device::Cpu));
    let s = Tensor::ones([1, 2, 6, 6], (Kind::Float, Device::Cpu));
    assert!(upsample_cat::fused(&x, &s).is_err());
    assert!(upsample_cat::fused(&to_layout(&x, true), &s.narrow(2, 0, 5)).is_err());
    assert!(upsample_cat::fused(&to_layout(&x, true), &s).is_ok());
}

/// The direct few-output 3x3 conv (src/model/conv_small_out.rs, the pixel head's last conv)
/// against libtorch's conv2d on seeded random tensors: 1 to 4 outputs, 16 and 32 inputs, with
/// and without bias, frames down to 1x1 (every border case); within float rounding.
#[test]
fn conv_small_out_matches_conv2d() {
    use clipdenoise::model::{conv_small_out, to_layout};
    let mut rng = clipdenoise::research::noise::TorchRng::new(9);
    let randn = |rng: &mut clipdenoise::research::noise::TorchRng, s: &[i64]| {
        rng.randn_like(&Tensor::zeros(s, (Kind::Float, Device::Cpu)))
            .unwrap()
    };
    let mut ran = 0;
    for &(n, ic, oc, h, w) in &[
        (1, 16, 3, 5, 7),
        (2, 32, 1, 3, 2),
        (1, 16, 4, 1, 1),
        (1, 16, 2, 8, 3),
    ] {
        let x = to_layout(&randn(&mut rng, &[n, ic, h, w]), true);
        let wt = randn(&mut rng, &[oc, ic, 3, 3]);
        let b = randn(&mut rng, &[oc]);
        for bias in [None, Some(&b)] {
            let Some(packed) = conv_small_out::prepare(&wt, 1, 1) else {
                // Not an AVX-512 CPU: the usual conv runs; nothing to compare.
                continue;
            };
            let got = conv_small_out::forward(&x, &packed, bias).unwrap();
            let want = x.conv2d(&wt, bias, [1, 1], [1, 1], [1, 1], 1);
            assert_eq!(got.size(), want.size());
            assert_eq!(got.stride()[1], 1, "channels_last output");
            let excess = ((&got - &want).abs() - want.abs() * 1e-5 - 1e-4)
                .max()
                .double_value(&[]);
            assert!(
                excess <= 0.0,
                "n{n} {ic}->{oc} {h}x{w}: off by {excess} beyond rounding"
            );
            ran += 1;
        }
    }
    let avx512 = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains(" avx512f"));
    assert!(
        !avx512 || ran == 8,
        "the kernel ran {ran} of 8 cases on an AVX-512 CPU"
    );
    // Not taken: stride 2, 5 outputs, 8 inputs, bf16; refused at run time: an NCHW input.
    let w3 = randn(&mut rng, &[3, 16, 3, 3]);
    assert!(conv_small_out::prepare(&w3, 2, 1).is_none());
    assert!(conv_small_out::prepare(&randn(&mut rng, &[5, 16, 3, 3]), 1, 1).is_none());
    assert!(conv_small_out::prepare(&randn(&mut rng, &[3, 8, 3, 3]), 1, 1).is_none());
    assert!(conv_small_out::prepare(&w3.to_kind(Kind::BFloat16), 1, 1).is_none());
    if let Some(p) = conv_small_out::prepare(&w3, 1, 1) {
        let nchw = randn(&mut rng, &[1, 16, 4, 4]);
        assert!(conv_small_out::forward(&nchw, &p, None).is_err());
    }
}
