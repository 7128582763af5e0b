//! `clipdenoise image` through the real binary: 16-bit PNG round trip at full precision, bit
//! depths per format, --out-dir, and the usual refusals.

mod support;

use std::path::Path;

use image::{ImageBuffer, Rgb};
use support::child::{clipdenoise, RunExt};

const TINY: &str = "../tests/fixtures/tiny-w8/official_state_dict.safetensors";

/// `clipdenoise image ARGS --model TINY`, asserted.
fn image_cmd(args: &[&str]) -> assert_cmd::assert::Assert {
    clipdenoise()
        .arg("image")
        .args(args)
        .args(["--model", TINY])
        .assert()
}

/// A 16-bit image whose samples use all 16 bits (not multiples of 257 as an 8-bit one would).
fn gradient16(w: u32, h: u32) -> ImageBuffer<Rgb<u16>, Vec<u16>> {
    ImageBuffer::from_fn(w, h, |x, y| {
        let v = |k: u32| ((x * 977 + y * 613 + k * 4099) % 60000 + 2000) as u16;
        Rgb([v(0), v(1), v(2)])
    })
}

fn not_8bit(samples: &[u16]) -> usize {
    samples.iter().filter(|&&s| s % 257 != 0).count()
}

#[test]
fn sixteen_bit_png_round_trips_at_full_precision() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in16.png");
    let src = gradient16(67, 45);
    src.save(&input).unwrap();

    // Strength 0 returns the input: bit-exact 16-bit samples prove no 8-bit step on the way.
    let same = dir.path().join("same16.png");
    image_cmd(&[
        input.to_str().unwrap(),
        "-o",
        same.to_str().unwrap(),
        "--strength",
        "0",
    ])
    .success();
    let back = image::open(&same).unwrap();
    assert_eq!(
        back.color(),
        image::ColorType::Rgb16,
        "16-bit in, 16-bit out"
    );
    assert_eq!(
        back.to_rgb16().into_raw(),
        src.clone().into_raw(),
        "exact round trip"
    );

    // Denoised: still 16-bit, and the values use the full depth.
    let out = dir.path().join("out16.png");
    let assert = image_cmd(&[input.to_str().unwrap(), "-o", out.to_str().unwrap()]).success();
    let err = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(err.contains("67x45 16-bit"), "{err}");
    let den = image::open(&out).unwrap();
    assert_eq!(den.color(), image::ColorType::Rgb16);
    assert_eq!((den.width(), den.height()), (67, 45));
    let samples = den.to_rgb16().into_raw();
    assert!(
        not_8bit(&samples) > samples.len() / 2,
        "output is not 8-bit data in a 16-bit file"
    );
}

#[test]
fn formats_keep_their_depth_and_out_dir_takes_many() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    let img16 = gradient16(40, 32);
    img16.save(inputs.join("a16.tif")).unwrap();
    let img8 = image::DynamicImage::ImageRgb16(img16).to_rgb8();
    img8.save(inputs.join("b8.png")).unwrap();
    img8.save(inputs.join("c8.jpg")).unwrap();
    let out = dir.path().join("out");
    image_cmd(&[inputs.to_str().unwrap(), "--out-dir", out.to_str().unwrap()]).success();
    let depth = |p: &Path| image::open(p).unwrap().color();
    assert_eq!(depth(&out.join("a16.tif")), image::ColorType::Rgb16);
    assert_eq!(depth(&out.join("b8.png")), image::ColorType::Rgb8);
    assert_eq!(depth(&out.join("c8.jpg")), image::ColorType::Rgb8);
    // A second run refuses to overwrite, then --force does.
    let again = image_cmd(&[
        inputs.join("b8.png").to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ])
    .failure();
    let err = String::from_utf8_lossy(&again.get_output().stderr).into_owned();
    assert!(
        err.contains("already exists (use --force to overwrite)"),
        "{err}"
    );
    image_cmd(&[
        inputs.join("b8.png").to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--force",
    ])
    .success();
    // 16-bit into JPEG becomes 8-bit, and says so.
    let j = dir.path().join("a.jpg");
    let a = image_cmd(&[
        inputs.join("a16.tif").to_str().unwrap(),
        "-o",
        j.to_str().unwrap(),
    ])
    .success();
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("16-bit -> 8-bit"));
    assert_eq!(depth(&j), image::ColorType::Rgb8);
}

/// `-o newdir/sub/x.png` creates the missing directories, as `video` does (it used to fail
/// with an error naming a temporary file).
#[test]
fn output_directories_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    gradient16(20, 14).save(&input).unwrap();
    let out = dir.path().join("newdir/sub/x.png");
    image_cmd(&[input.to_str().unwrap(), "-o", out.to_str().unwrap()]).success();
    let back = image::open(&out).unwrap();
    assert_eq!((back.width(), back.height()), (20, 14));
}

/// PNG alpha and grayscale come back as they were (they came back RGB, alpha lost): the
/// alpha plane exactly, gray as gray, 8 and 16 bits; denoised pixels still change.
#[test]
fn png_alpha_and_grayscale_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let rgb = gradient16(33, 21);
    let alpha = |x: u32, y: u32| ((x * 37 + y * 91) % 65536) as u16;
    let rgba16 = ImageBuffer::from_fn(33, 21, |x, y| {
        let p = rgb.get_pixel(x, y);
        image::Rgba([p[0], p[1], p[2], alpha(x, y) * 17])
    });
    let gray8 = image::DynamicImage::ImageRgb16(rgb.clone()).to_luma8();
    let graya8 = image::DynamicImage::ImageRgba16(rgba16.clone()).to_luma_alpha8();
    let cases: Vec<(&str, image::DynamicImage)> = vec![
        (
            "rgba16.png",
            image::DynamicImage::ImageRgba16(rgba16.clone()),
        ),
        ("gray8.png", image::DynamicImage::ImageLuma8(gray8)),
        ("graya8.png", image::DynamicImage::ImageLumaA8(graya8)),
    ];
    for (name, img) in cases {
        let input = dir.path().join(name);
        img.save(&input).unwrap();
        let out = dir.path().join(format!("out-{name}"));
        image_cmd(&[input.to_str().unwrap(), "-o", out.to_str().unwrap()]).success();
        let back = image::open(&out).unwrap();
        assert_eq!(back.color(), img.color(), "{name}");
        if img.color().has_alpha() {
            let a_in: Vec<u16> = img.to_rgba16().pixels().map(|p| p[3]).collect();
            let a_out: Vec<u16> = back.to_rgba16().pixels().map(|p| p[3]).collect();
            assert_eq!(a_in, a_out, "{name}: alpha kept exactly");
        }
        assert_ne!(
            back.to_rgb16().into_raw(),
            img.to_rgb16().into_raw(),
            "{name}: denoised"
        );
    }
}

#[test]
fn refusals_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("x.png");
    gradient16(8, 8).save(&input).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                input.display().to_string(),
                "-o".into(),
                input.display().to_string(),
            ],
            "the output is the input file itself",
        ),
        (
            vec![
                input.display().to_string(),
                input.display().to_string(),
                "-o".into(),
                "y.png".into(),
            ],
            "exactly one input",
        ),
        (
            vec!["missing.png".into(), "-o".into(), "y.png".into()],
            "missing.png: no such file",
        ),
        (
            vec![input.display().to_string(), "-o".into(), "y.gif".into()],
            "unknown image extension",
        ),
        (
            vec![
                input.display().to_string(),
                "-o".into(),
                "y.png".into(),
                "--device".into(),
                "tpu".into(),
            ],
            "unknown device 'tpu'",
        ),
    ];
    for (args, expect) in cases {
        let out = clipdenoise()
            .arg("image")
            .args(&args)
            .args(["--model", TINY])
            .current_dir(dir.path())
            .run();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(!dir.path().join("y.png").exists());
    }
}

/// `jpeg` with an EXIF block whose orientation is `o` (a phone's portrait photo says 6: the
/// stored pixels are shown turned 90 degrees clockwise).
fn with_exif_orientation(jpeg: &[u8], o: u8) -> Vec<u8> {
    let mut tiff = b"II\x2a\x00\x08\x00\x00\x00".to_vec();
    tiff.extend_from_slice(&[1, 0]); // one entry: Orientation (0x0112), SHORT, 1, o
    tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, o, 0, 0, 0]);
    tiff.extend_from_slice(&[0, 0, 0, 0]); // no next IFD
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let len = (app1.len() + 2) as u16;
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A portrait phone photo (landscape pixels, EXIF orientation 6) comes out upright, as
/// viewers show it, and the summary says the EXIF data is not kept.
#[test]
fn exif_orientation_is_applied_and_the_exif_loss_said() {
    let dir = tempfile::tempdir().unwrap();
    let src = ImageBuffer::from_fn(32, 16, |x, y| Rgb([(x * 8) as u8, (y * 16) as u8, 90u8]));
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(src)
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let input = dir.path().join("portrait.jpg");
    std::fs::write(&input, with_exif_orientation(&jpeg, 6)).unwrap();
    // What a viewer shows: the stored pixels turned 90 degrees clockwise.
    let stored = image::load_from_memory(&jpeg).unwrap().to_rgb8();
    let shown = image::imageops::rotate90(&stored);
    let output = dir.path().join("out.png");
    let out = image_cmd(&[
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--strength",
        "0",
    ])
    .success();
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        err.contains(": 16x32 8-bit, turned upright (EXIF orientation 6), EXIF not kept"),
        "{err}"
    );
    let back = image::open(&output).unwrap().to_rgb8();
    assert_eq!(back.dimensions(), (16, 32));
    assert_eq!(
        back.into_raw(),
        shown.into_raw(),
        "upright, sample for sample"
    );
}

/// A grayscale 32-bit float TIFF (written with the tiff crate: the image crate cannot hold
/// one) comes out grayscale float, same size, denoised, its samples in [0, 1], its tags those
/// of a grayscale float TIFF.
#[test]
fn grayscale_float_tiff_stays_grayscale_float() {
    use tiff::decoder::{Decoder, DecodingResult};
    use tiff::encoder::{colortype::Gray32Float, TiffEncoder};
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (96u32, 64u32);
    // A smooth ramp with deterministic noise (+-0.1), within [0.05, 0.95].
    let clean: Vec<f32> = (0..w * h)
        .map(|i| 0.2 + 0.5 * (i % w) as f32 / w as f32 + 0.1 * (i / w) as f32 / h as f32)
        .collect();
    let mut seed = 12345u32;
    let noisy: Vec<f32> = clean
        .iter()
        .map(|c| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let n = ((seed >> 16) as f32 / 65536.0 - 0.5) * 0.2;
            (c + n).clamp(0.05, 0.95)
        })
        .collect();
    let input = dir.path().join("gray-float.tif");
    let mut bytes = Vec::new();
    TiffEncoder::new(std::io::Cursor::new(&mut bytes))
        .unwrap()
        .write_image::<Gray32Float>(w, h, &noisy)
        .unwrap();
    std::fs::write(&input, &bytes).unwrap();
    let out = dir.path().join("out.tif");
    // The shipped model (the test fixture's random weights do not denoise).
    let run = clipdenoise()
        .arg("image")
        .args([input.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .assert()
        .success();
    let err = String::from_utf8_lossy(&run.get_output().stderr).into_owned();
    assert!(err.contains("32-bit float, gray"), "{err}");

    let mut dec = Decoder::new(std::fs::File::open(&out).unwrap()).unwrap();
    assert_eq!(dec.colortype().unwrap(), tiff::ColorType::Gray(32));
    assert_eq!(dec.dimensions().unwrap(), (w, h));
    let DecodingResult::F32(back) = dec.read_image().unwrap() else {
        panic!("the output's samples are not 32-bit float");
    };
    assert_eq!(back.len(), noisy.len());
    assert!(
        back.iter().all(|v| (0.0..=1.0).contains(v)),
        "out of [0, 1]"
    );
    let changed = back
        .iter()
        .zip(&noisy)
        .filter(|(a, b)| (*a - *b).abs() > 1e-4);
    assert!(changed.count() > back.len() / 2, "most samples changed");
    // Denoised: nearer the clean ramp than the noisy input was.
    let mse = |v: &[f32]| {
        v.iter()
            .zip(&clean)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            / v.len() as f32
    };
    let (before, after) = (mse(&noisy), mse(&back));
    eprintln!("MSE to the clean ramp: noisy {before:.6}, denoised {after:.6}");
    assert!(after < before * 0.9, "MSE {before} -> {after}");
    // Not stored as 8 or 16 bits in disguise.
    let off_grid = back
        .iter()
        .filter(|&&v| ((v * 65535.0) - (v * 65535.0).round()).abs() > 1e-3)
        .count();
    assert!(off_grid > back.len() / 2, "float samples on a 16-bit grid");

    // The tags as any TIFF reader sees them, read here byte by byte (FFmpeg 5.1 cannot
    // decode float TIFF): one sample per pixel, 32 bits, IEEE float, black is zero.
    let tags = tiff_tags(&std::fs::read(&out).unwrap());
    for (tag, value) in [(256, w), (257, h), (258, 32), (262, 1), (277, 1), (339, 3)] {
        assert_eq!(tags.get(&tag), Some(&value), "TIFF tag {tag}");
    }
}

/// The first IFD's one-valued SHORT/LONG tags of a little-endian TIFF file.
fn tiff_tags(b: &[u8]) -> std::collections::HashMap<u16, u32> {
    assert_eq!(&b[..4], b"II*\0", "a little-endian TIFF");
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let ifd = u32_at(4) as usize;
    (0..u16_at(ifd) as usize)
        .map(|k| ifd + 2 + 12 * k)
        .filter(|&e| u32_at(e + 4) == 1)
        .filter_map(|e| match u16_at(e + 2) {
            3 => Some((u16_at(e), u16_at(e + 8) as u32)),
            4 => Some((u16_at(e), u32_at(e + 8))),
            _ => None,
        })
        .collect()
}
