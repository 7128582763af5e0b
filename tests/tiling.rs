//! Frames above the pixel budget go through overlapping tiles blended without visible seams.

use std::path::Path;

use clipdenoise::inference::{Denoiser, Options};
use clipdenoise::weights::ModelSource;
use tch::{Device, Kind, Tensor};

fn load_image(name: &str) -> Tensor {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/images")
        .join(name);
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = (img.width() as i64, img.height() as i64);
    Tensor::from_slice(img.as_raw())
        .view([h, w, 3])
        .permute([2, 0, 1])
        .unsqueeze(0)
        .to_kind(Kind::Float)
        / 255.0
}

#[test]
fn tiled_and_untiled_outputs_of_a_1024_wide_image_agree() {
    let clean = load_image("wiki001-1024x576.jpg");
    assert_eq!(clean.size(), [1, 3, 576, 1024]);
    let mut rng = clipdenoise::research::noise::TorchRng::new(0);
    let noisy = clipdenoise::research::noise::gaussian(&clean, 25.0, &mut rng).unwrap();
    // TILING_MODEL=path tests another weights file; the default is the shipped model.
    let src = std::env::var("TILING_MODEL")
        .map(|p| ModelSource::File(p.into()))
        .unwrap_or_default();
    let model = || src.load(Device::Cpu).unwrap();
    let whole = Denoiser::new(model(), Options::default()).unwrap();
    let tiled_opts = Options {
        max_pixels: 384 * 384,
        ..Options::default()
    };
    let tiled = Denoiser::new(model(), tiled_opts).unwrap();
    let a = whole.denoise(&noisy).unwrap();
    let b = tiled.denoise(&noisy).unwrap();
    let rms = (&a - &b)
        .square()
        .mean(Kind::Double)
        .sqrt()
        .double_value(&[])
        * 255.0;
    let max = (&a - &b).abs().max().double_value(&[]) * 255.0;
    eprintln!("tiled vs untiled: RMS {rms:.4}/255, max {max:.3}/255");
    assert!(
        rms < 0.5,
        "tiled output differs from untiled by {rms}/255 RMS"
    );
    // And tiling did happen: a different tile budget changes the output a little.
    assert!(max > 0.0, "the tiled path was not taken");
}
