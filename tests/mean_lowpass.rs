//! Keeping the input's low-pass (issue 23): with `keep_input_lowpass` in the model's config,
//! a clean picture keeps its brightness and colour, and noise is still removed.

use std::path::Path;

use clipdenoise::inference::{Denoiser, Options};
use clipdenoise::lowpass::shift_255;
use clipdenoise::weights::ModelSource;
use tch::{Device, Kind, Tensor};

/// The fixture photo, a 256x384 crop, on the 0..1 scale.
fn photo() -> Tensor {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/wiki001-1024x576.jpg");
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = (img.width() as i64, img.height() as i64);
    (Tensor::from_slice(img.as_raw())
        .view([h, w, 3])
        .permute([2, 0, 1])
        .unsqueeze(0)
        .to_kind(Kind::Float)
        / 255.0)
        .narrow(2, 160, 256)
        .narrow(3, 320, 384)
}

fn denoiser(keep: Option<f64>) -> Denoiser {
    let mut loaded = ModelSource::default().load(Device::Cpu).unwrap();
    loaded.model.config.keep_input_lowpass = keep;
    Denoiser::new(loaded, Options::default()).unwrap()
}

fn psnr(a: &Tensor, b: &Tensor) -> f64 {
    let mse = (a - b).square().mean(Kind::Double).double_value(&[]);
    10.0 * (1.0 / mse).log10()
}

#[test]
fn kept_low_pass_holds_a_clean_picture_level_and_still_denoises() {
    let clean = photo();
    let kept = denoiser(Some(8.0));
    let out = kept.denoise(&clean).unwrap();
    let (mean, low) = shift_255(&out, &clean, 8.0).unwrap();
    for c in 0..3 {
        assert!(mean[c].abs() <= 0.1, "channel {c}: mean shift {mean:?}");
        assert!(low[c] <= 0.2, "channel {c}: low-pass shift {low:?}");
    }
    // Without it the same network moves this picture more (the measured default's shift).
    let (mean_raw, low_raw) =
        shift_255(&denoiser(None).denoise(&clean).unwrap(), &clean, 8.0).unwrap();
    let sum = |v: [f64; 3]| v.iter().map(|x| x.abs()).sum::<f64>();
    assert!(
        sum(low_raw) > sum(low),
        "raw {low_raw:?} kept {low:?} (mean {mean_raw:?})"
    );
    // Noise is still removed.
    let mut rng = clipdenoise::research::noise::TorchRng::new(7);
    let noisy = clipdenoise::research::noise::gaussian(&clean, 25.0, &mut rng).unwrap();
    let den = kept.denoise(&noisy).unwrap();
    let (p_in, p_out) = (psnr(&noisy, &clean), psnr(&den, &clean));
    assert!(p_out > p_in + 4.0, "noisy {p_in:.2} dB -> {p_out:.2} dB");
}
