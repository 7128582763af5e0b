//! The paper's evaluation protocol (MODEL.md, "Evaluation protocol"), on folders of images.
//!
//! Synthetic noise, for each dataset folder, each image (PNG/JPEG/TIFF files directly in the
//! folder, sorted by file name, optionally only the first `limit`), each noise spec:
//! 1. clean `x = sample / max` (f32, exactly NumPy's `float32(img) / 255` for 8-bit images) and
//!    the reference `x * 255` in f64 (the exact integers for 8-bit images);
//! 2. the noise is drawn on the CPU from a [`TorchRng`] seeded with [`image_seed`] (the numbers
//!    libtorch's generator gives after `tch::manual_seed(seed)`), so the noisy input does not
//!    depend on the device, the machine, or what other threads draw meanwhile:
//!    `noisy = NoiseSpec::apply(x)` in f32, not clipped for gaussian and correlated noise
//!    (poisson is clipped by its definition);
//! 3. the whole image is denoised ([`Denoiser::denoise`]: reflect-pad to multiples of 32, run,
//!    crop, clamp to [0, 1]), the output is scaled by 255 in f64 and NOT rounded;
//! 4. PSNR and SSIM ([`crate::research::metrics`]) against the reference; per dataset and noise spec the
//!    means over the images are reported.
//!
//! Seeds: `image_seed(base, noise, index)` is the 64-bit FNV-1a hash of the UTF-8 string
//! `"{base}/{noise}/{index}"` with the top bit cleared, where `noise` is the spec as
//! [`NoiseSpec`]'s `Display` writes it (`gaussian:15`, `poisson:2.5`), `index` the 0-based
//! position of the image in its sorted folder and `base` the run's seed (0 unless chosen). The
//! same image index and spec give the same noise field in every dataset and every run, and
//! adding or removing a spec does not change the other specs' noise.
//!
//! Real noise, for each pairs folder (`noisy/` and `clean/` subfolders, files matched by file
//! name, else by file stem; or one folder of `NAME_noisy.png` with `NAME_clean.png`): the noisy image as the input (`sample / max`, f32), the output
//! rounded to the clean image's integer levels (uint8 for 8-bit sRGB sets, as the protocol says),
//! then PSNR/SSIM on the 0..255 scale.
//!
//! Progress is reported through a callback ([`Event`]); results are an [`EvalReport`]
//! (serde-serialisable, rendered by [`EvalReport::to_markdown`] and [`EvalReport::to_text`]).
//! Optionally the exact noisy inputs are dumped for other tools ([`EvalConfig::dump_noisy`],
//! [`dump_noisy`]; layout in [`DumpManifest`]).
//!
//! Here: the protocol's pieces and the report types; `folders` lists the inputs, `run` runs
//! the cases, `render` writes the report as text.

mod folders;
mod render;
mod run;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::inference::Denoiser;
use crate::research::imageio::{RgbImage, Samples};
use crate::research::noise::{NoiseSpec, TorchRng};

pub use folders::list_pairs;
use run::run;

/// What to evaluate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalConfig {
    /// Folders of clean images, evaluated with every spec of `noises`.
    pub datasets: Vec<PathBuf>,
    /// The synthetic noise grid.
    pub noises: Vec<NoiseSpec>,
    /// Folders of real noisy/clean pairs (`noisy/` and `clean/` inside).
    pub pairs: Vec<PathBuf>,
    /// Only the first N images (sorted by name) of each folder.
    pub limit: Option<usize>,
    /// Base seed of [`image_seed`] (0 for the published numbers).
    pub seed: u64,
    /// Also write the exact noisy inputs under this folder (see [`DumpManifest`]).
    pub dump_noisy: Option<PathBuf>,
}

/// The seed of one image's noise: FNV-1a 64 of `"{base}/{noise}/{index}"`, top bit cleared.
pub fn image_seed(base: u64, noise: &NoiseSpec, index: usize) -> i64 {
    let h = crate::research::video_eval::seed_of(&format!("{base}/{noise}/{index}"));
    (h & (i64::MAX as u64)) as i64
}

/// The protocol's noisy input for a clean (1, 3, H, W) f32 image: noise drawn on the CPU from
/// a [`TorchRng`] seeded with `seed` (`seed` >= 0, as [`image_seed`] makes them). Returns an
/// f32 CPU tensor.
pub fn noisy_input(clean: &Tensor, noise: &NoiseSpec, seed: i64) -> Result<Tensor> {
    let x = clean.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?;
    noise.apply(&x, &mut TorchRng::new(seed as u64))
}

/// A clean image as the 0..255 f64 reference of the metrics (exact for 8-bit samples).
pub fn reference_255(img: &RgbImage) -> Result<Tensor> {
    Ok(match &img.samples {
        Samples::U8(_) => {
            let t = img.to_tensor(Kind::Double)?;
            // sample / 255 * 255 is not always exact in floating point: use the integers.
            (t * 255.0).f_round()?
        }
        _ => img.to_tensor(Kind::Double)? * 255.0,
    })
}

/// Scores of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageScore {
    pub image: String,
    /// The noise seed ([`image_seed`]); none for real pairs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub seed: Option<i64>,
    pub psnr: f64,
    pub ssim: f64,
    /// PSNR of the noisy input itself (synthetic: as fed to the model, unclipped; real pairs:
    /// the noisy file's exact samples).
    pub input_psnr: f64,
    /// SSIM of the noisy input (real pairs only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub input_ssim: Option<f64>,
    /// The output's shift against its own input: [`Shift`].
    #[serde(default)]
    pub shift: Shift,
    /// Real pairs: the noise per channel (0..255), estimated from the noisy image alone
    /// ([`crate::noise_level::estimate_sigma`]) and true (std of noisy - clean).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub noise_level: Option<NoiseLevel>,
}

/// The noise of a real pair per RGB channel, on the 0..255 scale.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct NoiseLevel {
    pub estimated: [f64; 3],
    pub actual: [f64; 3],
}

impl NoiseLevel {
    /// Estimated from `noisy255` alone, and measured against `clean255` ((1, 3, H, W)).
    pub fn measure(noisy255: &Tensor, clean255: &Tensor) -> Result<NoiseLevel> {
        let three = |v: Vec<f64>| -> Result<[f64; 3]> {
            v.try_into()
                .map_err(|_| Error::Input("noise level: expected 3 channels".into()))
        };
        let est = three(crate::noise_level::estimate_sigma(noisy255)?)?;
        let d = (noisy255 - clean255).f_to_kind(Kind::Double)?;
        let std = d.f_transpose(0, 1)?.f_reshape([3, -1])?.f_std_correction(
            Some([1i64].as_slice()),
            0,
            false,
        )?;
        Ok(NoiseLevel {
            estimated: est,
            actual: three(Vec::<f64>::try_from(std)?)?,
        })
    }
}

/// How far the output moved from its input, per RGB channel, on the 0..255 scale: `mean` is
/// the signed mean of output - input over the image (a brightness or colour shift), `lowpass`
/// the mean absolute Gaussian low-pass (sigma [`SHIFT_SIGMA`]) of output - input (a local
/// shift at scales far above the noise; 0 for a model that keeps the input's local mean).
/// Needs no ground truth: on clean images (`--noise gaussian:0`) any shift is a loss.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Shift {
    pub mean: [f64; 3],
    pub lowpass: [f64; 3],
}

/// The low-pass of [`Shift::lowpass`], in pixels.
pub const SHIFT_SIGMA: f64 = 8.0;

impl Shift {
    /// The shift of `out255` against `input255` (both (N, 3, H, W) on the 0..255 scale).
    pub fn measure(out255: &Tensor, input255: &Tensor) -> Result<Shift> {
        let (mean, lowpass) =
            crate::lowpass::shift_255(&(out255 / 255.0), &(input255 / 255.0), SHIFT_SIGMA)?;
        Ok(Shift { mean, lowpass })
    }

    /// The mean of several shifts (of images, frames, sets).
    pub fn mean_of<'a>(shifts: impl Iterator<Item = &'a Shift>) -> Shift {
        let mut sum = Shift::default();
        let mut n = 0.0;
        for s in shifts {
            for c in 0..3 {
                sum.mean[c] += s.mean[c];
                sum.lowpass[c] += s.lowpass[c];
            }
            n += 1.0;
        }
        if n > 0.0 {
            for c in 0..3 {
                sum.mean[c] /= n;
                sum.lowpass[c] /= n;
            }
        }
        sum
    }
}

/// Means over a set of images.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Scores {
    pub psnr: f64,
    pub ssim: f64,
    pub input_psnr: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub input_ssim: Option<f64>,
    /// The mean of the images' shifts.
    #[serde(default)]
    pub shift: Shift,
}

impl Scores {
    fn mean(images: &[ImageScore]) -> Scores {
        let n = images.len().max(1) as f64;
        Scores {
            psnr: images.iter().map(|s| s.psnr).sum::<f64>() / n,
            ssim: images.iter().map(|s| s.ssim).sum::<f64>() / n,
            input_psnr: images.iter().map(|s| s.input_psnr).sum::<f64>() / n,
            input_ssim: images
                .iter()
                .map(|s| s.input_ssim)
                .sum::<Option<f64>>()
                .map(|t| t / n),
            shift: Shift::mean_of(images.iter().map(|s| &s.shift)),
        }
    }
}

/// One noise spec on one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseRow {
    pub noise: NoiseSpec,
    /// `noise` as text (`gaussian:15`).
    pub label: String,
    pub mean: Scores,
    pub images: Vec<ImageScore>,
}

/// One dataset folder under the synthetic noise grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetReport {
    pub name: String,
    pub path: PathBuf,
    pub images: usize,
    pub rows: Vec<NoiseRow>,
}

/// One folder of real noisy/clean pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairsReport {
    pub name: String,
    pub path: PathBuf,
    pub mean: Scores,
    pub images: Vec<ImageScore>,
}

/// Everything an evaluation measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The model (set by the caller; [`evaluate`] writes its config name and source).
    pub model: String,
    pub device: String,
    pub precision: String,
    /// Base seed of [`image_seed`].
    pub seed: u64,
    pub datasets: Vec<DatasetReport>,
    pub pairs: Vec<PairsReport>,
    /// Wall time of the whole evaluation.
    pub seconds: f64,
}

/// Progress of an evaluation or a dump.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Everything is listed: `cases` (image, noise) evaluations will follow.
    Started { cases: usize },
    /// A dataset or pairs folder begins.
    Folder {
        name: String,
        images: usize,
        noises: usize,
    },
    /// One image under one noise spec (`None` for a real pair) is done; `score` is `None` when
    /// only dumping.
    Case {
        folder: String,
        image: String,
        noise: Option<NoiseSpec>,
        /// Boxed: the scores are much larger than the other events.
        score: Option<Box<ImageScore>>,
        done: usize,
        total: usize,
    },
}

/// The index of a noisy-input dump (`manifest.json` at the dump's root). Files, relative to the
/// root: `<dataset>/clean/<image file name>.npy` (the 0..255 f32 reference, (H, W, 3)) and
/// `<dataset>/<noise slug>/<image file name>.npy` (the exact f32 noisy input in [0, 1] scale,
/// unclipped, (H, W, 3)); real pairs use the slug `real`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DumpManifest {
    pub seed: u64,
    pub cases: Vec<DumpCase>,
}

/// One dumped noisy input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DumpCase {
    pub dataset: String,
    pub image: String,
    /// `gaussian:15` …, or `real`.
    pub noise: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub seed: Option<i64>,
    pub noisy: String,
    pub clean: String,
    pub height: usize,
    pub width: usize,
    /// Real pairs: the protocol rounds the output to the clean image's levels (uint8).
    pub round_output: bool,
}

/// The folder-name form of a noise spec: `gaussian_15`, `poisson_2.5`.
pub fn noise_slug(noise: &NoiseSpec) -> String {
    noise.to_string().replace(':', "_")
}

/// Run the protocol with a model. Also dumps the noisy inputs when `cfg.dump_noisy` is set.
/// The denoiser is used as configured: the protocol's whole-image inference wants
/// `Options::max_pixels = 0` (no tiling), as `clipdenoise eval` sets it.
pub fn evaluate(
    denoiser: &Denoiser,
    cfg: &EvalConfig,
    on_event: impl FnMut(&Event),
) -> Result<EvalReport> {
    let mut report = run(Some(denoiser), cfg, on_event)?;
    let c = denoiser.config();
    report.model = format!("{} ({})", c.name(), denoiser.provenance().source);
    report.device = format!("{:?}", denoiser.device()).to_lowercase();
    report.precision = denoiser.options().precision.to_string();
    Ok(report)
}

/// Only write the noisy inputs (and references) of the protocol under `dir`, no model.
pub fn dump_noisy(
    cfg: &EvalConfig,
    dir: &Path,
    on_event: impl FnMut(&Event),
) -> Result<DumpManifest> {
    let cfg = EvalConfig {
        dump_noisy: Some(dir.to_path_buf()),
        ..cfg.clone()
    };
    run(None, &cfg, on_event)?;
    let path = dir.join("manifest.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::format(&path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn seeds_are_stable_and_distinct() {
        let g = NoiseSpec::Gaussian(15.0);
        // FNV-1a 64 of "0/gaussian:15/0", top bit cleared: pinned so the protocol never drifts.
        assert_eq!(image_seed(0, &g, 0), 7625522456713690082);
        assert_eq!(
            image_seed(0, &NoiseSpec::Poisson(2.5), 3),
            2252339230121141472
        );
        let mut all = BTreeSet::new();
        for n in [
            g,
            NoiseSpec::Gaussian(25.0),
            NoiseSpec::Correlated(15.0),
            NoiseSpec::Poisson(2.5),
        ] {
            for i in 0..50 {
                assert!(all.insert(image_seed(0, &n, i)));
                assert!(image_seed(0, &n, i) >= 0);
            }
        }
        assert_ne!(image_seed(1, &g, 0), image_seed(0, &g, 0));
        assert_eq!(noise_slug(&NoiseSpec::Poisson(2.5)), "poisson_2.5");
    }
}
