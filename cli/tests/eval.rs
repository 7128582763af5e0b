//! The evaluation protocol on two tiny images (tests/fixtures/eval/) with the tiny `tiny-w8`
//! model: the library's numbers against a PSNR computed here from scratch (own seed hash, own
//! noise draw, the Denoiser run directly, PSNR by the formula), and the real binary's output.

mod support;

use clipdenoise::inference::{Denoiser, Options};
use clipdenoise::research::eval::{self, EvalConfig, EvalReport, Event};
use clipdenoise::research::noise::{NoiseSpec, TorchRng};
use std::path::{Path, PathBuf};
use support::child::{clipdenoise as bin, RunExt};
use support::fixture;
use tch::{Device, Kind, Tensor};

fn model_path() -> PathBuf {
    fixture("tiny-w8/official_state_dict.safetensors")
}

fn denoiser() -> Denoiser {
    Denoiser::load(&model_path(), Options::default()).unwrap()
}

/// FNV-1a 64 of "{base}/{spec}/{index}", top bit cleared (the documented seed scheme).
fn seed(base: u64, spec: &str, index: usize) -> i64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in format!("{base}/{spec}/{index}").bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    (h & 0x7fff_ffff_ffff_ffff) as i64
}

/// The clean image decoded by the `image` crate directly: (u8 samples HWC, (1,3,H,W) f32 / 255).
fn clean(path: &Path) -> (Vec<u8>, Tensor, usize, usize) {
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.into_raw();
    let t = Tensor::from_slice(&raw)
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1])
        .unsqueeze(0);
    (raw, t.to_kind(Kind::Float) / 255.0, h, w)
}

/// 10 log10(255^2 / mean((out*255 - clean)^2)) with out (1,3,H,W) in [0,1] and clean u8 HWC.
fn psnr_by_hand(out: &Tensor, clean: &[u8], h: usize, w: usize) -> f64 {
    let hwc = out
        .to_kind(Kind::Double)
        .squeeze_dim(0)
        .permute([1, 2, 0])
        .contiguous();
    let mut v = vec![0f64; h * w * 3];
    hwc.copy_data(&mut v, h * w * 3);
    let se: f64 = v
        .iter()
        .zip(clean)
        .map(|(o, c)| (o * 255.0 - *c as f64).powi(2))
        .sum();
    10.0 * (255.0f64 * 255.0 / (se / (h * w * 3) as f64)).log10()
}

fn images() -> Vec<PathBuf> {
    vec![
        fixture("eval/a-cbsd68-101085.png"),
        fixture("eval/b-kodak24-kodim23.png"),
    ]
}

#[test]
fn eval_matches_a_hand_computed_psnr() {
    let d = denoiser();
    let sigma = 25.0;
    let cfg = EvalConfig {
        datasets: vec![fixture("eval")],
        noises: vec![NoiseSpec::Gaussian(sigma), NoiseSpec::Poisson(3.0)],
        ..Default::default()
    };
    let mut events = Vec::new();
    let report = eval::evaluate(&d, &cfg, |e| events.push(e.clone())).unwrap();
    assert_eq!(events.first(), Some(&Event::Started { cases: 4 }));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Case { .. }))
            .count(),
        4
    );

    let ds = &report.datasets[0];
    assert_eq!(ds.name, "eval");
    assert_eq!(ds.images, 2);
    let gauss = &ds.rows[0];
    assert_eq!(gauss.label, "gaussian:25");
    let mut by_hand = Vec::new();
    for (i, path) in images().iter().enumerate() {
        let (raw, x, h, w) = clean(path);
        let s = seed(0, "gaussian:25", i);
        // The generator libtorch's `manual_seed(s)` + `randn_like` would be.
        let normal = TorchRng::new(s as u64).randn_like(&x).unwrap();
        let noisy = &x + normal * (sigma / 255.0);
        let out = d.denoise(&noisy).unwrap();
        let p = psnr_by_hand(&out, &raw, h, w);
        let got = &gauss.images[i];
        assert_eq!(got.image, path.file_name().unwrap().to_str().unwrap());
        assert_eq!(got.seed, Some(s));
        assert!(
            (got.psnr - p).abs() < 1e-9,
            "{}: {} vs {p}",
            got.image,
            got.psnr
        );
        // The noisy input's PSNR, unclipped.
        let np = psnr_by_hand(&noisy, &raw, h, w);
        assert!((got.input_psnr - np).abs() < 1e-9);
        by_hand.push(p);
    }
    let mean = by_hand.iter().sum::<f64>() / 2.0;
    assert!(
        (gauss.mean.psnr - mean).abs() < 1e-9,
        "{} vs {mean}",
        gauss.mean.psnr
    );
    assert!(gauss.mean.ssim > 0.0 && gauss.mean.ssim <= 1.0);

    // Poisson: the protocol's formula written out here (unique_dim) gives the same numbers.
    let pois = &ds.rows[1];
    for (i, path) in images().iter().enumerate() {
        let (raw, x, h, w) = clean(path);
        let noisy = poisson_by_hand(&x, 3.0, seed(0, "poisson:3", i));
        let p = psnr_by_hand(&d.denoise(&noisy).unwrap(), &raw, h, w);
        assert!((pois.images[i].psnr - p).abs() < 1e-9);
    }

    // Deterministic: a second run gives the same report (timing aside).
    let mut again = eval::evaluate(&d, &cfg, |_| {}).unwrap();
    again.seconds = report.seconds;
    assert_eq!(again, report);
    let md = report.to_markdown();
    assert!(md.contains("| Noise | eval PSNR | eval SSIM |"), "{md}");
    assert!(
        md.contains(&format!("| gaussian:25 | {:.2} |", gauss.mean.psnr)),
        "{md}"
    );
}

/// The protocol's Poisson noise of one (1, 3, H, W) image written out: xq = round(255x)/255,
/// v = 2^ceil(log2(distinct values, counted by `unique_dim`)), clip(xq + alpha (P(xq v)/v - xq)).
fn poisson_by_hand(x: &Tensor, alpha: f64, seed: i64) -> Tensor {
    let q = (x * 255.0).round();
    let distinct = q.flatten(0, -1).unique_dim(0, true, false, false).0.size()[0];
    let xq = q / 255.0;
    let v = 2f64.powi((distinct as f64).log2().ceil() as i32);
    let p = TorchRng::new(seed as u64).poisson(&(&xq * v)).unwrap() / v;
    (&xq + (p - &xq) * alpha).clamp(0.0, 1.0)
}

#[test]
fn poisson_fast_path_is_bit_exact() {
    // Few grey levels (distinct counts that are and are not powers of two), noise-like
    // images, and a real crop.
    let mut rng = TorchRng::new(12);
    let levels = rng.randint(7, &[1, 3, 24, 20], Kind::Float).unwrap() / 6.0;
    let two = rng.randint(2, &[1, 3, 16, 16], Kind::Float).unwrap();
    let rand = rng.randint(1 << 24, &[1, 3, 33, 17], Kind::Float).unwrap() / (1 << 24) as f64;
    let (_, real, _, _) = clean(&images()[0]);
    for x in [levels, two, rand, real] {
        for alpha in [2.0, 3.5] {
            let fast = eval::noisy_input(&x, &NoiseSpec::Poisson(alpha), 11).unwrap();
            let reference = poisson_by_hand(&x, alpha, 11);
            assert!(fast.equal(&reference), "alpha {alpha}");
        }
    }
}

#[test]
fn noisy_inputs_are_reproducible_and_unclipped() {
    let x = Tensor::ones([1, 3, 16, 16], (Kind::Float, Device::Cpu)) * 0.98;
    for n in [NoiseSpec::Gaussian(50.0), NoiseSpec::Correlated(55.0)] {
        let a = eval::noisy_input(&x, &n, 5).unwrap();
        assert!(a.equal(&eval::noisy_input(&x, &n, 5).unwrap()));
        assert!(!a.equal(&eval::noisy_input(&x, &n, 6).unwrap()));
        assert!(a.max().double_value(&[]) > 1.0, "{n} must not be clipped");
    }
}

#[test]
fn real_pairs_round_the_output_to_uint8() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["noisy", "clean"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        for p in images() {
            std::fs::copy(&p, dir.path().join(sub).join(p.file_name().unwrap())).unwrap();
        }
    }
    let d = denoiser();
    let cfg = EvalConfig {
        pairs: vec![dir.path().to_path_buf()],
        limit: Some(1),
        ..Default::default()
    };
    let report = eval::evaluate(&d, &cfg, |_| {}).unwrap();
    let p = &report.pairs[0];
    assert_eq!(p.images.len(), 1);
    let (raw, x, h, w) = clean(&images()[0]);
    let out = (d.denoise(&x).unwrap().to_kind(Kind::Double) * 255.0).round() / 255.0;
    let expect = psnr_by_hand(&out, &raw, h, w);
    assert!(
        (p.mean.psnr - expect).abs() < 1e-9,
        "{} vs {expect}",
        p.mean.psnr
    );
    assert_eq!(p.images[0].input_psnr, f64::INFINITY);
    assert!((p.mean.input_ssim.unwrap() - 1.0).abs() < 1e-12);
    assert!(report
        .to_markdown()
        .contains("| Real pairs | Images | noisy PSNR | PSNR | noisy SSIM | SSIM |"));

    // The flat layout (NAME_noisy.png beside NAME_clean.png) scores the same pair alike.
    let flat = tempfile::tempdir().unwrap();
    let src = dir.path().join("noisy/a-cbsd68-101085.png");
    std::fs::copy(&src, flat.path().join("x_noisy.png")).unwrap();
    std::fs::copy(&src, flat.path().join("x_clean.png")).unwrap();
    let flat_cfg = EvalConfig {
        pairs: vec![flat.path().to_path_buf()],
        ..Default::default()
    };
    let fr = eval::evaluate(&d, &flat_cfg, |_| {}).unwrap();
    assert_eq!(fr.pairs[0].images.len(), 1);
    assert_eq!(fr.pairs[0].images[0].psnr, p.images[0].psnr);
    std::fs::remove_file(flat.path().join("x_clean.png")).unwrap();
    let err = eval::evaluate(&d, &flat_cfg, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("x_clean"), "{err}");

    // A noisy image without a clean partner is an error that names it.
    std::fs::remove_file(dir.path().join("clean/a-cbsd68-101085.png")).unwrap();
    let err = eval::evaluate(&d, &cfg, |_| {}).unwrap_err().to_string();
    assert!(err.contains("a-cbsd68-101085.png"), "{err}");
}

#[test]
fn cli_json_parses_and_matches_the_library() {
    let out = bin()
        .args([
            "eval",
            "--device",
            "cpu",
            "--json",
            "--noise",
            "gaussian:15,50",
            "--dataset",
        ])
        .arg(fixture("eval"))
        .arg("--model")
        .arg(model_path())
        .run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: EvalReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report.datasets.len(), 1);
    let rows = &report.datasets[0].rows;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].noise, NoiseSpec::Gaussian(50.0));
    assert_eq!(rows[0].images.len(), 2);
    assert!(rows[0].mean.psnr.is_finite() && rows[0].mean.psnr > rows[1].mean.psnr - 20.0);
    assert!(
        report.model.contains("official_state_dict.safetensors"),
        "{}",
        report.model
    );

    // Same numbers in-process (same device, same seeds).
    let cfg = EvalConfig {
        datasets: vec![fixture("eval")],
        noises: vec![NoiseSpec::Gaussian(15.0), NoiseSpec::Gaussian(50.0)],
        ..Default::default()
    };
    let lib = eval::evaluate(&denoiser(), &cfg, |_| {}).unwrap();
    for (a, b) in lib.datasets[0].rows.iter().zip(rows) {
        assert!(
            (a.mean.psnr - b.mean.psnr).abs() < 1e-6,
            "{} vs {}",
            a.mean.psnr,
            b.mean.psnr
        );
    }
}

#[test]
fn cli_markdown_and_dump() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "eval",
            "--device",
            "cpu",
            "--markdown",
            "--noise",
            "correlated:45",
            "--dataset",
        ])
        .arg(fixture("eval"))
        .arg("--model")
        .arg(model_path())
        .arg("--dump-noisy")
        .arg(dir.path())
        .run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(
        md.starts_with("| Noise | eval PSNR | eval SSIM |\n|---|---:|---:|\n| correlated:45 | "),
        "{md}"
    );

    let manifest: eval::DumpManifest =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest.cases.len(), 2);
    let c = &manifest.cases[1];
    assert_eq!(
        (c.noise.as_str(), c.image.as_str()),
        ("correlated:45", "b-kodak24-kodim23.png")
    );
    assert_eq!(c.noisy, "eval/correlated_45/b-kodak24-kodim23.png.npy");
    // float32 (H, W, 3) after a 64-byte-aligned header; the reference is the exact u8 values.
    let noisy = std::fs::read(dir.path().join(&c.noisy)).unwrap();
    assert_eq!(noisy.len(), 128 + 48 * 40 * 3 * 4);
    assert!(String::from_utf8_lossy(&noisy[..128]).contains("'shape': (48, 40, 3)"));
    let refr = std::fs::read(dir.path().join(&c.clean)).unwrap();
    let (raw, _, _, _) = clean(&images()[1]);
    let first = f32::from_le_bytes(refr[128..132].try_into().unwrap());
    assert_eq!(first, raw[0] as f32);

    // --dump-only needs no model and writes the same noisy inputs.
    let dir2 = tempfile::tempdir().unwrap();
    bin()
        .args([
            "eval",
            "--noise",
            "correlated:45",
            "--dump-only",
            "--dump-noisy",
        ])
        .arg(dir2.path())
        .arg("--dataset")
        .arg(fixture("eval"))
        .assert()
        .success();
    assert_eq!(std::fs::read(dir2.path().join(&c.noisy)).unwrap(), noisy);
}

#[test]
fn cli_errors_are_one_line() {
    for args in [
        vec![
            "eval",
            "--dataset",
            "/nonexistent/folder",
            "--dump-only",
            "--dump-noisy",
            "/tmp/x",
        ],
        vec![
            "eval",
            "--dataset",
            ".",
            "--noise",
            "speckle:3",
            "--dump-only",
            "--dump-noisy",
            "/tmp/x",
        ],
        vec!["eval"],
    ] {
        let out = bin().args(&args).run();
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
    }
    let help = bin().args(["eval", "--help"]).run();
    assert!(String::from_utf8(help.stdout)
        .unwrap()
        .contains("clipdenoise eval --dataset"));
}

#[test]
fn shift_is_reported_and_a_configured_model_keeps_the_input_low_pass() {
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept.safetensors");
    // The shipped model (the tiny-w8 fixture is not a denoiser: its output leaves [0, 1]).
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../weights/clipdenoise-tiny.safetensors");
    let out = bin()
        .args(["weights", "configure"])
        .arg(&shipped)
        .args(["--keep-input-lowpass", "8", "-o"])
        .arg(&kept)
        .run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = Denoiser::load(&kept, Options::default()).unwrap();
    assert_eq!(d.config().keep_input_lowpass, Some(8.0));
    // Clean pictures in (gaussian:0), with the file's setting and with it overridden.
    let eval_json = |model: &Path, extra: &[&str]| -> EvalReport {
        let out = bin()
            .args([
                "eval",
                "--device",
                "cpu",
                "--json",
                "--noise",
                "gaussian:0",
                "--dataset",
            ])
            .arg(fixture("eval"))
            .arg("--model")
            .arg(model)
            .args(extra)
            .run();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let with = eval_json(&kept, &[]);
    let without = eval_json(&kept, &["--keep-input-lowpass", "off"]);
    let (a, b) = (
        &with.datasets[0].rows[0].mean,
        &without.datasets[0].rows[0].mean,
    );
    for c in 0..3 {
        assert!(a.shift.mean[c].abs() < 0.1, "kept: {:?}", a.shift);
        assert!(
            a.shift.lowpass[c] < b.shift.lowpass[c],
            "{:?} vs {:?}",
            a.shift,
            b.shift
        );
    }
    assert!(
        a.psnr > b.psnr,
        "keeping the input's level lost on clean pictures"
    );
    // A bad setting is one line and a failure.
    let out = bin()
        .args(["weights", "configure"])
        .arg(model_path())
        .args(["--keep-input-lowpass", "0", "-o"])
        .arg(dir.path().join("bad.safetensors"))
        .run();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keep-input-lowpass") || err.contains("sigma"),
        "{err}"
    );
    assert!(!dir.path().join("bad.safetensors").exists());
    // PolyU's naming (NAME_real beside NAME_mean) pairs up; each pair reports its noise level.
    let polyu = tempfile::tempdir().unwrap();
    let src = &images()[0];
    std::fs::copy(src, polyu.path().join("cam_1_real.png")).unwrap();
    std::fs::copy(src, polyu.path().join("cam_1_mean.png")).unwrap();
    let cfg = EvalConfig {
        pairs: vec![polyu.path().to_path_buf()],
        ..Default::default()
    };
    let r = eval::evaluate(&d, &cfg, |_| {}).unwrap();
    assert_eq!(r.pairs[0].images.len(), 1);
    let level = r.pairs[0].images[0].noise_level.unwrap();
    assert_eq!(level.actual, [0.0; 3], "a clean pair has no noise");
    assert!(r.to_text().contains("noise sigma R/G/B"), "{}", r.to_text());
}
