//! Realistic camera-and-codec noise for training: what a phone or a camera leaves in a file.
//!
//! A clean sRGB crop is "unprocessed" to a raw Bayer image (Brooks et al., "Unprocessing
//! Images for Learned Raw Denoising", CVPR 2019: inverse tone curve, inverse gamma, inverse
//! colour matrix, inverse white balance, mosaic), gets Poisson-Gaussian sensor noise in linear
//! raw, and is developed again by a randomised camera: bilinear demosaic (the noise becomes
//! spatially and cross-channel correlated), white balance, colour matrix, gamma, tone curve,
//! in-camera noise reduction (luma and chroma), sharpening, optional downscaling, 4:2:0 chroma
//! subsampling, 8-bit quantisation and JPEG. Every stage is drawn per crop.
//!
//! The target is the clean crop developed by the same camera without noise and without the
//! mosaic: sharpening, 4:2:0 chroma and a downscale are part of the picture, not of the noise,
//! so the model learns to remove noise, demosaic artefacts and JPEG artefacts, and neither to
//! undo the camera's look nor to invent chroma detail.
//! All randomness comes from the caller's generator: the same seed gives the same pair,
//! whatever else runs in the process.

use rand::rngs::StdRng;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::research::camera_ops::{
    area_resize, bayer_mask, demosaic, even, from_ycbcr, gains_tensor, gaussian_blur, invert3,
    is_range, jpeg, lerp, mix, randn, subsample_420, to_ycbcr,
};
use crate::research::unbias::unbiased_target;

/// The randomised camera: each field is a range drawn uniformly per crop (shot noise
/// log-uniformly), or a probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IspNoise {
    /// Shot-noise gain range in linear raw (variance = shot * x + read), drawn log-uniformly.
    pub shot: [f64; 2],
    /// Spread (std of log) of the read-noise variance around Brooks et al.'s fit
    /// log(read) = 2.18 log(shot) + 1.2.
    pub read_spread: f64,
    /// Display gamma range.
    pub gamma: [f64; 2],
    /// Share of crops whose camera uses the smoothstep tone curve.
    pub tone_prob: f64,
    /// White-balance gain ranges (red, blue; green is 1).
    pub wb_red: [f64; 2],
    pub wb_blue: [f64; 2],
    /// Largest off-diagonal weight of the random sRGB-to-camera matrix (rows sum to 1, entries
    /// not negative: a camera sees less saturated colours; its inverse, the camera's colour
    /// matrix, saturates them again and mixes the noise across channels). 0 = identity.
    pub ccm: f64,
    /// In-camera luma noise reduction: share of crops, and the std (px) of the Gaussian
    /// that low-passes the luma noise (what is left looks blotchy, as after a camera's NR).
    pub luma_nr_prob: f64,
    pub luma_nr_sigma: [f64; 2],
    /// In-camera chroma noise reduction: share and Gaussian std (px) on the chroma noise.
    pub chroma_nr_prob: f64,
    pub chroma_nr_sigma: [f64; 2],
    /// Unsharp mask on luma (applied to noisy and target alike): share, amount, radius.
    pub sharpen_prob: f64,
    pub sharpen_amount: [f64; 2],
    pub sharpen_sigma: [f64; 2],
    /// Share of crops recorded at a higher resolution and downscaled by a factor in
    /// `downscale` (the noise gets finer and weaker, as in a 4K sensor's 1080p video).
    pub downscale_prob: f64,
    pub downscale: [f64; 2],
    /// Share of crops recorded at a lower resolution and scaled up by a factor in `upscale`
    /// (binning, digital zoom, a small sensor's low-light mode: the noise gets coarse, a
    /// grain of several pixels). Not with `downscale`; 0 (the default) draws nothing, so
    /// earlier configs keep their random streams.
    pub upscale_prob: f64,
    pub upscale: [f64; 2],
    /// Share of crops whose chroma is subsampled 4:2:0 (as in every video and most JPEGs).
    pub subsample_prob: f64,
    /// Share of crops saved as JPEG, and the quality range (1..=100).
    pub jpeg_prob: f64,
    pub jpeg_quality: [f64; 2],
    /// Mean-preserving targets (issue 23; 0, the default, keeps the old, biased ones): the
    /// target is corrected by the mean of noisy - target per channel and brightness
    /// ([`crate::research::unbias`]) over this many extra noisy captures of the crop, so the
    /// noisy input's expected value is the target. The codec pool corrects with its clip's own
    /// frames instead (no extra captures) when this is above 0.
    pub unbiased_draws: usize,
}

impl Default for IspNoise {
    fn default() -> Self {
        IspNoise {
            shot: [1e-4, 1.2e-2],
            read_spread: 0.26,
            gamma: [1.8, 2.4],
            tone_prob: 0.7,
            wb_red: [1.6, 2.4],
            wb_blue: [1.4, 2.0],
            ccm: 0.25,
            luma_nr_prob: 0.5,
            luma_nr_sigma: [0.4, 1.2],
            chroma_nr_prob: 0.8,
            chroma_nr_sigma: [1.0, 3.0],
            sharpen_prob: 0.6,
            sharpen_amount: [0.2, 1.0],
            sharpen_sigma: [0.6, 1.5],
            downscale_prob: 0.3,
            downscale: [1.2, 2.0],
            upscale_prob: 0.0,
            upscale: [1.3, 2.5],
            subsample_prob: 0.8,
            jpeg_prob: 0.5,
            jpeg_quality: [40.0, 95.0],
            unbiased_draws: 0,
        }
    }
}

impl IspNoise {
    pub fn validate(&self) -> Result<()> {
        for (name, r) in [
            ("shot", self.shot),
            ("gamma", self.gamma),
            ("wb_red", self.wb_red),
            ("wb_blue", self.wb_blue),
            ("luma_nr_sigma", self.luma_nr_sigma),
            ("chroma_nr_sigma", self.chroma_nr_sigma),
            ("sharpen_amount", self.sharpen_amount),
            ("sharpen_sigma", self.sharpen_sigma),
            ("downscale", self.downscale),
            ("upscale", self.upscale),
            ("jpeg_quality", self.jpeg_quality),
        ] {
            if !is_range(r) {
                return Err(Error::Input(format!(
                    "noise isp.{name} range {r:?} must be 0 <= lo <= hi"
                )));
            }
        }
        for (name, p) in [
            ("tone_prob", self.tone_prob),
            ("luma_nr_prob", self.luma_nr_prob),
            ("chroma_nr_prob", self.chroma_nr_prob),
            ("sharpen_prob", self.sharpen_prob),
            ("downscale_prob", self.downscale_prob),
            ("upscale_prob", self.upscale_prob),
            ("subsample_prob", self.subsample_prob),
            ("jpeg_prob", self.jpeg_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::Input(format!(
                    "noise isp.{name} {p} must be in [0, 1]"
                )));
            }
        }
        let positive = self.shot[0] > 0.0 && self.gamma[0] > 0.0;
        let gains = self.wb_red[0] > 0.0 && self.wb_blue[0] > 0.0;
        let scales = self.downscale[0] >= 1.0 && self.upscale[0] >= 1.0;
        if !(positive && gains && scales && self.ccm >= 0.0 && self.ccm < 0.5) {
            return Err(Error::Input(
                "noise isp: shot, gamma and gains must be > 0, downscale and upscale >= 1, ccm in [0, 0.5)"
                    .into(),
            ));
        }
        if !(self.read_spread >= 0.0 && self.read_spread.is_finite()) {
            return Err(Error::Input("noise isp.read_spread must be >= 0".into()));
        }
        if !self.jpeg_quality.iter().all(|q| (1.0..=100.0).contains(q)) {
            return Err(Error::Input(
                "noise isp.jpeg_quality must be within [1, 100]".into(),
            ));
        }
        Ok(())
    }

    /// One (noisy, target) pair from a clean (1, 3, H, W) crop in [0, 1] (H, W even), both
    /// (1, 3, H, W) on the crop's device: a camera drawn for this crop captures it.
    pub fn apply(&self, clean: &Tensor, rng: &mut StdRng) -> Result<(Tensor, Tensor)> {
        let cam = Camera::draw(self, rng);
        let (noisy, target) = cam.capture(clean, rng)?;
        if self.unbiased_draws == 0 {
            return Ok((noisy, target));
        }
        let target = unbiased_target(&target, self.unbiased_draws, || {
            Ok(cam.capture(clean, rng)?.0)
        })?;
        Ok((noisy, target))
    }
}

/// One camera drawn from the ranges of [`IspNoise`]: keep it to film several frames with the
/// same settings (a video), each with its own noise.
pub struct Camera {
    shot: f64,
    read: f64,
    gamma: f64,
    tone: bool,
    wb: [f64; 3],
    /// sRGB -> camera RGB (rows sum to 1) and its inverse.
    rgb2cam: [[f64; 3]; 3],
    cam2rgb: [[f64; 3]; 3],
    bayer_phase: (i64, i64),
    luma_nr: Option<f64>,
    chroma_nr: Option<f64>,
    sharpen: Option<(f64, f64)>,
    downscale: Option<f64>,
    upscale: Option<f64>,
    subsample: bool,
    jpeg_quality: Option<u8>,
}

impl Camera {
    /// (noisy, target) for a clean (1, 3, H, W) image in [0, 1] (H, W even), noise drawn
    /// from `rng`.
    pub fn capture(&self, clean: &Tensor, rng: &mut StdRng) -> Result<(Tensor, Tensor)> {
        let cam = self;
        let (h, w) = (clean.size()[2], clean.size()[3]);
        let dev = clean.device();
        let x = clean.to_device(Device::Cpu).to_kind(Kind::Float);
        // Recorded at a higher resolution, then scaled down to the crop size; or at a lower
        // one, then scaled up.
        let x = match (cam.downscale, cam.upscale) {
            (Some(f), _) => {
                let (hu, wu) = (even(h as f64 * f), even(w as f64 * f));
                x.f_upsample_bicubic2d([hu, wu], false, None, None)?
                    .f_clamp(0.0, 1.0)?
            }
            (None, Some(f)) => area_resize(&x, even(h as f64 / f), even(w as f64 / f))?,
            (None, None) => x,
        };
        let raw = cam.unprocess(&x)?;
        let mosaic = bayer_mask(raw.size()[2], raw.size()[3], cam.bayer_phase);
        let sensed = (&raw * &mosaic).f_sum_dim_intlist(1, true, Kind::Float)?;
        let var = &sensed * cam.shot + cam.read;
        let noisy_raw = (&sensed + randn(rng, &sensed.size()) * var.f_sqrt()?).f_clamp(0.0, 1.0)?;
        let noisy_cam = demosaic(&(&noisy_raw * &mosaic))?;

        // The target is the scene developed without noise and without the mosaic: the model
        // learns to remove the noise and the demosaic's zipper artefacts (a real camera's
        // demosaic leaves far fewer than this bilinear one).
        let target = cam.develop(&raw)?;
        let developed = cam.develop(&noisy_cam)?;
        let noisy = cam.noise_reduction(&target, &developed)?;
        let (target, noisy) = (cam.sharpen(&target)?, cam.sharpen(&noisy)?);
        let (target, noisy) = match (cam.downscale, cam.upscale) {
            (Some(_), _) => (area_resize(&target, h, w)?, area_resize(&noisy, h, w)?),
            (None, Some(_)) => {
                let up = |t: &Tensor| t.f_upsample_bicubic2d([h, w], false, None, None);
                (up(&target)?, up(&noisy)?)
            }
            (None, None) => (target, noisy),
        };
        // 4:2:0 on both: the model removes noise and keeps the chroma resolution it is given
        // (a video's output is 4:2:0 again), rather than inventing chroma detail.
        let (target, noisy) = if cam.subsample {
            (subsample_420(&target)?, subsample_420(&noisy)?)
        } else {
            (target, noisy)
        };
        let target = target.f_clamp(0.0, 1.0)?;
        let noisy = match cam.jpeg_quality {
            Some(q) => jpeg(&noisy, q)?,
            None => noisy.f_clamp(0.0, 1.0)?.f_mul_scalar(255.0)?.f_round()? / 255.0,
        };
        Ok((noisy.f_to_device(dev)?, target.f_to_device(dev)?))
    }

    /// Draw a camera from the ranges of `c`.
    pub fn draw(c: &IspNoise, rng: &mut StdRng) -> Camera {
        let mut u = || rng.random::<f64>();
        let log_shot = lerp([c.shot[0].ln(), c.shot[1].ln()], u());
        let gauss = (-2.0 * (1.0 - u()).ln()).sqrt() * (std::f64::consts::TAU * u()).cos();
        let read = (2.18 * log_shot + 1.2 + c.read_spread * gauss).exp();
        let gamma = lerp(c.gamma, u());
        let tone = u() < c.tone_prob;
        let wb = [lerp(c.wb_red, u()), 1.0, lerp(c.wb_blue, u())];
        let mut m = [[0.0; 3]; 3];
        for (i, row) in m.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = if i == j { 1.0 } else { c.ccm * u() };
            }
            let s: f64 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= s);
        }
        let bayer_phase = ((u() * 2.0) as i64 % 2, (u() * 2.0) as i64 % 2);
        let maybe = |p: f64, r: [f64; 2], u: &mut dyn FnMut() -> f64| {
            let on = u() < p;
            let v = lerp(r, u());
            on.then_some(v)
        };
        let luma_nr = maybe(c.luma_nr_prob, c.luma_nr_sigma, &mut u);
        let chroma_nr = maybe(c.chroma_nr_prob, c.chroma_nr_sigma, &mut u);
        let sharpen = maybe(c.sharpen_prob, c.sharpen_amount, &mut u)
            .map(|a| (a, lerp(c.sharpen_sigma, u())));
        let downscale = maybe(c.downscale_prob, c.downscale, &mut u);
        let upscale = if c.upscale_prob > 0.0 {
            maybe(c.upscale_prob, c.upscale, &mut u).filter(|_| downscale.is_none())
        } else {
            None
        };
        let subsample = u() < c.subsample_prob;
        let jpeg_quality = maybe(c.jpeg_prob, c.jpeg_quality, &mut u).map(|q| q.round() as u8);
        Camera {
            shot: log_shot.exp(),
            read,
            gamma,
            tone,
            wb,
            rgb2cam: m,
            cam2rgb: invert3(&m),
            bayer_phase,
            luma_nr,
            chroma_nr,
            sharpen,
            downscale,
            upscale,
            subsample,
            jpeg_quality,
        }
    }

    /// sRGB -> linear camera raw (full RGB, before the mosaic), in [0, 1].
    fn unprocess(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.f_clamp(0.0, 1.0)?;
        let x = if self.tone {
            // Inverse of the smoothstep 3x^2 - 2x^3.
            (((x * -2.0 + 1.0).f_clamp(-1.0, 1.0)?.f_asin()? / 3.0).f_sin()? * -1.0) + 0.5
        } else {
            x
        };
        let lin = x.f_clamp_min(1e-8)?.f_pow_tensor_scalar(self.gamma)?;
        let cam = mix(&lin, &self.rgb2cam)?;
        let gains = gains_tensor(&[1.0 / self.wb[0], 1.0, 1.0 / self.wb[2]]);
        Ok((cam * gains).f_clamp(0.0, 1.0)?)
    }

    /// Linear camera RGB -> sRGB: white balance, colour matrix, gamma, tone curve.
    fn develop(&self, cam: &Tensor) -> Result<Tensor> {
        let x = (cam * gains_tensor(&self.wb)).f_clamp(0.0, 1.0)?;
        let lin = mix(&x, &self.cam2rgb)?.f_clamp(1e-8, 1.0)?;
        let x = lin.f_pow_tensor_scalar(1.0 / self.gamma)?;
        Ok(if self.tone {
            &x * &x * (x.f_mul_scalar(-2.0)? + 3.0)
        } else {
            x
        })
    }

    /// In-camera noise reduction on the developed noisy image: the luma and chroma noise
    /// (difference to the developed clean image) are low-passed, so what is left is the
    /// blotchy, correlated noise of a processed file. Image detail is untouched.
    fn noise_reduction(&self, target: &Tensor, noisy: &Tensor) -> Result<Tensor> {
        if self.luma_nr.is_none() && self.chroma_nr.is_none() {
            return Ok(noisy.shallow_clone());
        }
        let n = to_ycbcr(&(noisy - target))?;
        let y = n.narrow(1, 0, 1);
        let c = n.narrow(1, 1, 2);
        let y = match self.luma_nr {
            Some(s) => gaussian_blur(&y, s)?,
            None => y,
        };
        let c = match self.chroma_nr {
            Some(s) => gaussian_blur(&c, s)?,
            None => c,
        };
        Ok(target + from_ycbcr(&Tensor::f_cat(&[y, c], 1)?)?)
    }

    /// Unsharp mask on the luma.
    fn sharpen(&self, x: &Tensor) -> Result<Tensor> {
        let Some((amount, sigma)) = self.sharpen else {
            return Ok(x.shallow_clone());
        };
        let ycc = to_ycbcr(x)?;
        let y = ycc.narrow(1, 0, 1);
        let y = &y + (&y - gaussian_blur(&y, sigma)?) * amount;
        from_ycbcr(&Tensor::f_cat(&[y, ycc.narrow(1, 1, 2)], 1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn photo_like(h: i64) -> Tensor {
        // Smooth gradients plus an edge: something a camera can develop.
        let ramp = Tensor::arange(h, (Kind::Float, Device::Cpu)) / h as f64;
        let r = ramp.view([1, h]).repeat([h, 1]);
        let g = ramp.view([h, 1]).repeat([1, h]);
        let b = (&r * 0.5 + 0.25).where_self(&r.lt(0.5), &(&g * 0.3 + 0.6));
        Tensor::stack(&[r * 0.8 + 0.1, g * 0.7 + 0.15, b], 0).unsqueeze(0)
    }

    #[test]
    fn unprocess_then_develop_is_the_identity() {
        let mut rng = StdRng::seed_from_u64(3);
        let cfg = IspNoise::default();
        let x = photo_like(32);
        for _ in 0..8 {
            let cam = Camera::draw(&cfg, &mut rng);
            let back = cam.develop(&cam.unprocess(&x).unwrap()).unwrap();
            let err = (back - &x).abs().max().double_value(&[]);
            // Highlights clipped by the inverse white balance are the only loss.
            assert!(err < 0.02, "round trip error {err}");
        }
    }

    #[test]
    fn pairs_are_reproducible_and_noise_is_luma_dominant_after_chroma_nr() {
        let x = photo_like(64);
        let cfg = IspNoise {
            shot: [4e-3, 4e-3],
            chroma_nr_prob: 1.0,
            luma_nr_prob: 0.0,
            sharpen_prob: 0.0,
            downscale_prob: 0.0,
            subsample_prob: 1.0,
            jpeg_prob: 0.0,
            ..Default::default()
        };
        cfg.validate().unwrap();
        let run = |seed| cfg.apply(&x, &mut StdRng::seed_from_u64(seed)).unwrap();
        let (a, ta) = run(9);
        let (b, tb) = run(9);
        assert!(a.equal(&b) && ta.equal(&tb));
        assert_eq!(a.size(), x.size());
        let n = to_ycbcr(&(&a - &ta)).unwrap();
        let sy = n.narrow(1, 0, 1).std(true).double_value(&[]);
        let sc = n.narrow(1, 1, 2).std(true).double_value(&[]);
        assert!(sy > 2.0 / 255.0, "luma noise std {sy}");
        assert!(sc < 0.7 * sy, "chroma {sc} vs luma {sy}");
        let (c, _) = run(10);
        assert!(!a.equal(&c));
    }

    #[test]
    fn every_stage_on_gives_valid_pairs_of_the_crop_size() {
        let x = photo_like(48);
        let cfg = IspNoise {
            tone_prob: 1.0,
            luma_nr_prob: 1.0,
            chroma_nr_prob: 1.0,
            sharpen_prob: 1.0,
            downscale_prob: 1.0,
            subsample_prob: 1.0,
            jpeg_prob: 1.0,
            ..Default::default()
        };
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..4 {
            let (n, t) = cfg.apply(&x, &mut rng).unwrap();
            assert_eq!(n.size(), x.size());
            assert_eq!(t.size(), x.size());
            for v in [&n, &t] {
                assert!(v.min().double_value(&[]) >= 0.0 && v.max().double_value(&[]) <= 1.0);
            }
            // The target is the same picture (sharpened or rescaled at most).
            let diff = (&t - &x).abs().mean(Kind::Float).double_value(&[]);
            assert!(diff < 0.05, "target drifted by {diff}");
        }
    }

    #[test]
    fn an_upscaling_camera_gives_coarse_grain_of_the_crop_size() {
        let x = photo_like(64);
        // Horizontal lag-1 correlation of the luma-ish noise (mean over channels).
        let lag1 = |n: &Tensor, t: &Tensor| {
            let d = (n - t).mean_dim(1, false, Kind::Float);
            let d = &d - d.mean(Kind::Float);
            let a = d.narrow(2, 1, 63);
            let b = d.narrow(2, 0, 63);
            (&a * &b).mean(Kind::Float).double_value(&[])
                / (&d * &d).mean(Kind::Float).double_value(&[])
        };
        let base = IspNoise {
            shot: [0.02, 0.02],
            luma_nr_prob: 0.0,
            chroma_nr_prob: 0.0,
            sharpen_prob: 0.0,
            downscale_prob: 0.0,
            subsample_prob: 0.0,
            jpeg_prob: 0.0,
            ..Default::default()
        };
        let up = IspNoise {
            upscale_prob: 1.0,
            upscale: [2.0, 2.0],
            ..base.clone()
        };
        let (mut fine, mut coarse) = (0.0, 0.0);
        for seed in 0..3 {
            let (n, t) = base.apply(&x, &mut StdRng::seed_from_u64(seed)).unwrap();
            fine += lag1(&n, &t) / 3.0;
            let (n, t) = up.apply(&x, &mut StdRng::seed_from_u64(seed)).unwrap();
            assert_eq!((n.size(), t.size()), (x.size(), x.size()));
            coarse += lag1(&n, &t) / 3.0;
        }
        assert!(coarse > fine + 0.2, "lag-1 correlation {coarse} vs {fine}");
    }

    #[test]
    fn bad_ranges_are_refused_naming_the_field() {
        let bad = IspNoise {
            downscale: [0.5, 2.0],
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = IspNoise {
            jpeg_prob: 1.5,
            ..Default::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("jpeg_prob"), "{e}");
    }
}
