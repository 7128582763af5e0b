//! Noise synthesis: the evaluation protocol's noise models (MODEL.md, "Evaluation protocol")
//! and the training mix (adds camera-like noise through an inverse ISP and JPEG). All functions
//! take clean images (N, 3, H, W) f32 in [0, 1] and draw from the caller's [`TorchRng`] (the
//! numbers libtorch's generator gives after `tch::manual_seed` with the same seed, without its
//! process-wide state), so the same seed gives the same noise whatever else runs meanwhile.

use rand::rngs::StdRng;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::research::camera_ops::{is_range, jpeg, lerp};
pub use crate::research::isp_noise::IspNoise;
pub use crate::research::torch_rng::TorchRng;
use crate::research::unbias::unbiased_target;

/// Additive white Gaussian noise, sigma on the 0..255 scale; not clipped.
pub fn gaussian(x: &Tensor, sigma: f64, rng: &mut TorchRng) -> Result<Tensor> {
    Ok(x + rng.randn_like(x)? * (sigma / 255.0))
}

/// Spatially correlated Gaussian noise: i.i.d. N(0, (sigma/255)^2) filtered per channel by a
/// 3x3 box (mean) filter with reflect borders; effective std sigma/3. Not clipped.
pub fn correlated(x: &Tensor, sigma: f64, rng: &mut TorchRng) -> Result<Tensor> {
    let n = rng.randn_like(x)? * (sigma / 255.0);
    Ok(x + box3(&n))
}

/// 3x3 mean filter per channel, reflect-padded.
pub fn box3(x: &Tensor) -> Tensor {
    let c = x.size()[1];
    let k = Tensor::full([c, 1, 3, 3], 1.0 / 9.0, (x.kind(), x.device()));
    x.pad([1, 1, 1, 1], "reflect", None)
        .conv2d(&k, None::<Tensor>, [1, 1], [0, 0], [1, 1], c)
}

/// Poisson noise of the evaluation protocol: xq = round(255x)/255, v = 2^ceil(log2(number of
/// distinct values of xq)), y = clip(xq + alpha * (Poisson(xq v)/v - xq), 0, 1). Per image.
pub fn poisson(x: &Tensor, alpha: f64, rng: &mut TorchRng) -> Result<Tensor> {
    let n = x.size()[0];
    let outs = (0..n)
        .map(|i| {
            let xi = x.get(i);
            let q = (&xi * 255.0).round();
            let distinct = distinct_values(&q);
            let xq = q / 255.0;
            let v = 2f64.powi((distinct as f64).log2().ceil() as i32);
            let p = rng.poisson(&(&xq * v))? / v;
            Ok((&xq + (p - &xq) * alpha).clamp(0.0, 1.0))
        })
        .collect::<Result<Vec<Tensor>>>()?;
    Ok(Tensor::stack(&outs, 0))
}

/// Number of distinct values of `q` (whole numbers): a 256-bin histogram when they are all in
/// 0..=255 (the usual case, and far faster than sorting), else `unique`.
fn distinct_values(q: &Tensor) -> i64 {
    let flat = q.flatten(0, -1);
    let (lo, hi) = (flat.min().double_value(&[]), flat.max().double_value(&[]));
    if lo >= 0.0 && hi <= 255.0 {
        let counts = flat.to_kind(Kind::Int64).bincount(None::<Tensor>, 256);
        counts.gt(0).sum(Kind::Int64).int64_value(&[])
    } else {
        flat.unique_dim(0, true, false, false).0.size()[0]
    }
}

/// Camera-like noise: sRGB -> linear (inverse gamma), Poisson-Gaussian noise with signal
/// dependent variance `shot * x + read^2` per pixel and channel, -> sRGB. Clipped like a camera.
pub fn camera(x: &Tensor, shot: f64, read: f64, rng: &mut TorchRng) -> Result<Tensor> {
    let lin = x.clamp(0.0, 1.0).pow_tensor_scalar(2.2);
    let var = &lin * shot + read * read;
    let noisy = (&lin + rng.randn_like(&lin)? * var.sqrt()).clamp(0.0, 1.0);
    Ok(noisy.pow_tensor_scalar(1.0 / 2.2))
}

/// One noise model of the evaluation grid, parsed from `gaussian:25`, `correlated:50`, `poisson:3`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "level", rename_all = "lowercase")]
pub enum NoiseSpec {
    Gaussian(f64),
    Correlated(f64),
    Poisson(f64),
}

impl NoiseSpec {
    /// `x` with this noise, drawn from `rng`.
    pub fn apply(&self, x: &Tensor, rng: &mut TorchRng) -> Result<Tensor> {
        match *self {
            NoiseSpec::Gaussian(s) => gaussian(x, s, rng),
            NoiseSpec::Correlated(s) => correlated(x, s, rng),
            NoiseSpec::Poisson(a) => poisson(x, a, rng),
        }
    }

    /// Parse `TYPE:L1,L2,...` into one spec per level.
    pub fn parse_list(s: &str) -> Result<Vec<NoiseSpec>> {
        let (kind, levels) = s
            .split_once(':')
            .ok_or_else(|| Error::Input(format!("noise '{s}': expected TYPE:LEVEL[,LEVEL...]")))?;
        levels
            .split(',')
            .map(|l| {
                let v: f64 = l
                    .trim()
                    .parse()
                    .map_err(|_| Error::Input(format!("noise '{s}': '{l}' is not a number")))?;
                if !(v.is_finite() && v >= 0.0) {
                    return Err(Error::Input(format!("noise '{s}': level {v} must be >= 0")));
                }
                match kind.trim() {
                    "gaussian" | "g" => Ok(NoiseSpec::Gaussian(v)),
                    "correlated" | "c" => Ok(NoiseSpec::Correlated(v)),
                    "poisson" | "p" => Ok(NoiseSpec::Poisson(v)),
                    k => Err(Error::Input(format!(
                        "unknown noise type '{k}' (expected gaussian, correlated or poisson)"
                    ))),
                }
            })
            .collect()
    }
}

impl std::fmt::Display for NoiseSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoiseSpec::Gaussian(s) => write!(f, "gaussian:{s}"),
            NoiseSpec::Correlated(s) => write!(f, "correlated:{s}"),
            NoiseSpec::Poisson(a) => write!(f, "poisson:{a}"),
        }
    }
}

/// The training noise mix: one model drawn per image, levels drawn uniformly from ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseMix {
    /// Relative weights of gaussian, correlated, poisson, camera and (optional fifth)
    /// camera-and-codec ([`IspNoise`]) noise. Four weights draw exactly as before the fifth
    /// type existed, so earlier configs reproduce.
    #[serde(default = "default_weights")]
    pub weights: Vec<f64>,
    /// Gaussian sigma range (0..255 scale). `[15, 15]` is the paper's fixed sigma.
    #[serde(default = "default_gaussian")]
    pub gaussian_sigma: [f64; 2],
    /// Correlated sigma range (before the 3x3 box filter).
    #[serde(default = "default_correlated")]
    pub correlated_sigma: [f64; 2],
    /// Poisson alpha range.
    #[serde(default = "default_poisson")]
    pub poisson_alpha: [f64; 2],
    /// Camera shot-noise gain range and read-noise std range (linear light).
    #[serde(default = "default_shot")]
    pub camera_shot: [f64; 2],
    #[serde(default = "default_read")]
    pub camera_read: [f64; 2],
    /// Probability of a JPEG re-compression (4:2:2 chroma) after the noise.
    #[serde(default)]
    pub jpeg_prob: f64,
    /// JPEG quality range of that re-compression (1..=100).
    #[serde(default = "default_jpeg_quality")]
    pub jpeg_quality: [f64; 2],
    /// The randomised camera of the fifth noise type (`[noise.isp]` in a config).
    #[serde(default)]
    pub isp: IspNoise,
    /// Mean-preserving targets for the poisson and camera types (issue 23; 0, the default,
    /// keeps the clean crop as their target): the target is corrected by the mean of noisy -
    /// clean per channel and brightness over this many extra noisy draws
    /// ([`crate::research::unbias`]), so clipping and the camera's gamma no longer leave the
    /// noisy input darker or brighter than its target. The camera-and-codec type has its own
    /// (`isp.unbiased_draws`).
    #[serde(default)]
    pub unbiased_draws: usize,
}

fn default_weights() -> Vec<f64> {
    vec![1.0, 0.0, 0.0, 0.0]
}
fn default_gaussian() -> [f64; 2] {
    [15.0, 15.0]
}
fn default_correlated() -> [f64; 2] {
    [30.0, 60.0]
}
fn default_poisson() -> [f64; 2] {
    [1.5, 4.0]
}
fn default_shot() -> [f64; 2] {
    [0.0005, 0.02]
}
fn default_read() -> [f64; 2] {
    [0.002, 0.03]
}
fn default_jpeg_quality() -> [f64; 2] {
    [60.0, 95.0]
}

impl Default for NoiseMix {
    fn default() -> Self {
        NoiseMix {
            weights: default_weights(),
            gaussian_sigma: default_gaussian(),
            correlated_sigma: default_correlated(),
            poisson_alpha: default_poisson(),
            camera_shot: default_shot(),
            camera_read: default_read(),
            jpeg_prob: 0.0,
            jpeg_quality: default_jpeg_quality(),
            isp: IspNoise::default(),
            unbiased_draws: 0,
        }
    }
}

impl NoiseMix {
    pub fn validate(&self) -> Result<()> {
        let total: f64 = self.weights.iter().sum();
        if self.weights.iter().any(|w| *w < 0.0 || !w.is_finite()) || total <= 0.0 {
            return Err(Error::Input(
                "noise weights must be >= 0 with a positive sum".into(),
            ));
        }
        if !(4..=5).contains(&self.weights.len()) {
            return Err(Error::Input(format!(
                "noise weights: 4 or 5 values (gaussian, correlated, poisson, camera[, isp]), got {}",
                self.weights.len()
            )));
        }
        if self.weights.get(4).is_some_and(|w| *w > 0.0) {
            self.isp.validate()?;
        }
        for (name, r) in [
            ("gaussian_sigma", self.gaussian_sigma),
            ("correlated_sigma", self.correlated_sigma),
            ("poisson_alpha", self.poisson_alpha),
            ("camera_shot", self.camera_shot),
            ("camera_read", self.camera_read),
            ("jpeg_quality", self.jpeg_quality),
        ] {
            if !is_range(r) {
                return Err(Error::Input(format!(
                    "noise {name} range {r:?} must be 0 <= lo <= hi"
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.jpeg_prob) {
            return Err(Error::Input("noise jpeg_prob must be in [0, 1]".into()));
        }
        if !self.jpeg_quality.iter().all(|q| (1.0..=100.0).contains(q)) {
            return Err(Error::Input(
                "noise jpeg_quality must be within [1, 100]".into(),
            ));
        }
        Ok(())
    }

    /// Add noise to each image of a clean batch, drawing the per-image choices (and the
    /// camera-and-codec noise) from `rng` and the other noise fields from `noise_rng`; returns
    /// (noisy, target). The target is the clean batch itself except for camera-and-codec
    /// noise, whose camera also sharpens or rescales the picture.
    pub fn apply(
        &self,
        clean: &Tensor,
        rng: &mut StdRng,
        noise_rng: &mut TorchRng,
    ) -> Result<(Tensor, Tensor)> {
        let total: f64 = self.weights.iter().sum();
        let last = self.weights.len() - 1;
        let n = clean.size()[0];
        let mut noisy = Vec::with_capacity(n as usize);
        let mut target = Vec::with_capacity(n as usize);
        for i in 0..n {
            let x = clean.narrow(0, i, 1);
            let mut u = || rng.random::<f64>();
            let mut pick = u() * total;
            let mut which = 0;
            while which < last && pick >= self.weights[which] {
                pick -= self.weights[which];
                which += 1;
            }
            let (y, t) = match which {
                0 => (gaussian(&x, lerp(self.gaussian_sigma, u()), noise_rng)?, x),
                1 => (
                    correlated(&x, lerp(self.correlated_sigma, u()), noise_rng)?,
                    x,
                ),
                2 => {
                    let alpha = lerp(self.poisson_alpha, u());
                    let y = poisson(&x, alpha, noise_rng)?;
                    let t =
                        unbiased_target(&x, self.unbiased_draws, || poisson(&x, alpha, noise_rng))?;
                    (y, t)
                }
                3 => {
                    let (shot, read) = (lerp(self.camera_shot, u()), lerp(self.camera_read, u()));
                    let y = camera(&x, shot, read, noise_rng)?;
                    let t = unbiased_target(&x, self.unbiased_draws, || {
                        camera(&x, shot, read, noise_rng)
                    })?;
                    (y, t)
                }
                _ => {
                    // The camera draws its own JPEG; the mix's applies to the old types.
                    let (y, t) = self.isp.apply(&x, rng)?;
                    noisy.push(y);
                    target.push(t);
                    continue;
                }
            };
            let y = if rng.random::<f64>() < self.jpeg_prob {
                jpeg(&y, lerp(self.jpeg_quality, rng.random::<f64>()) as u8)?
            } else {
                y
            };
            noisy.push(y);
            target.push(t);
        }
        Ok((Tensor::cat(&noisy, 0), Tensor::cat(&target, 0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn flat(v: f64, h: i64) -> Tensor {
        Tensor::full([1, 3, h, h], v, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn gaussian_has_the_right_mean_and_std() {
        let x = flat(0.5, 512);
        let n = gaussian(&x, 25.0, &mut TorchRng::new(1)).unwrap() - &x;
        let (m, s) = (
            n.mean(Kind::Double).double_value(&[]),
            n.std(true).double_value(&[]),
        );
        assert!(m.abs() < 0.01 * 25.0 / 255.0, "mean {m}");
        assert!((s / (25.0 / 255.0) - 1.0).abs() < 0.01, "std {s}");
    }

    #[test]
    fn correlated_noise_has_std_sigma_over_3() {
        let x = flat(0.5, 512);
        let n = correlated(&x, 50.0, &mut TorchRng::new(2)).unwrap() - &x;
        let s = n.std(true).double_value(&[]);
        assert!((s / (50.0 / 255.0 / 3.0) - 1.0).abs() < 0.01, "std {s}");
        assert!(n.mean(Kind::Double).double_value(&[]).abs() < 0.01 * 50.0 / 255.0 / 3.0);
    }

    #[test]
    fn poisson_follows_the_variance_law() {
        // Two grey levels -> 2 distinct values -> v = 2, so Var(y) = alpha^2 * x / v.
        let x = Tensor::cat(&[flat(0.2, 256), flat(0.6, 256)], 3);
        let xq = (&x * 255.0).round() / 255.0;
        let alpha = 0.05;
        let y = poisson(&x, alpha, &mut TorchRng::new(3)).unwrap();
        for (half, level) in [(0, 0.2f64), (1, 0.6)] {
            let d = (&y - &xq).narrow(3, half * 256, 256);
            let lq = (level * 255.0).round() / 255.0;
            let var = d.var(true).double_value(&[]);
            let expect = alpha * alpha * lq / 2.0;
            assert!(
                (var / expect - 1.0).abs() < 0.02,
                "level {level}: var {var} vs {expect}"
            );
            assert!(d.mean(Kind::Double).double_value(&[]).abs() < 0.01 * lq);
        }
    }

    #[test]
    fn distinct_values_agree_with_unique() {
        let mut rng = TorchRng::new(4);
        for x in [
            rng.randint(7, &[1, 3, 9, 5], Kind::Float).unwrap(),
            rng.randint(256, &[1, 3, 20, 20], Kind::Float).unwrap(),
            (rng.randn(&[1, 3, 20, 20]).unwrap() * 300.0).round(),
        ] {
            let unique = x.flatten(0, -1).unique_dim(0, true, false, false).0.size()[0];
            assert_eq!(distinct_values(&x), unique);
        }
    }

    #[test]
    fn parse_lists() {
        let v = NoiseSpec::parse_list("gaussian:15,25,50").unwrap();
        assert_eq!(
            v,
            vec![
                NoiseSpec::Gaussian(15.0),
                NoiseSpec::Gaussian(25.0),
                NoiseSpec::Gaussian(50.0)
            ]
        );
        assert!(NoiseSpec::parse_list("speckle:3").is_err());
        assert!(NoiseSpec::parse_list("gaussian:x").is_err());
    }

    #[test]
    fn jpeg_quality_range_is_checked_and_lower_quality_loses_more() {
        let bad = |q: [f64; 2]| NoiseMix {
            jpeg_quality: q,
            ..Default::default()
        };
        assert!(bad([0.0, 50.0]).validate().is_err());
        assert!(bad([50.0, 120.0]).validate().is_err());
        assert!(bad([70.0, 40.0]).validate().is_err());
        assert!(bad([20.0, 90.0]).validate().is_ok());
        let x = gaussian(
            &Tensor::full([1, 3, 64, 64], 0.5, (Kind::Float, Device::Cpu)),
            25.0,
            &mut TorchRng::new(5),
        )
        .unwrap()
        .clamp(0.0, 1.0);
        let err = |q: u8| {
            let y = jpeg(&x, q).unwrap();
            (y - &x).square().mean(Kind::Float).double_value(&[])
        };
        assert!(err(20) > 1.5 * err(90), "q20 {} q90 {}", err(20), err(90));
    }

    #[test]
    fn the_mix_is_reproducible_and_valid() {
        let mix = NoiseMix {
            weights: vec![1.0, 1.0, 1.0, 1.0, 1.0],
            jpeg_prob: 0.3,
            ..Default::default()
        };
        mix.validate().unwrap();
        let x = TorchRng::new(6)
            .randint(256, &[10, 3, 32, 32], Kind::Float)
            .unwrap()
            / 255.0;
        let run = || {
            use rand::SeedableRng;
            mix.apply(&x, &mut StdRng::seed_from_u64(7), &mut TorchRng::new(7))
                .unwrap()
        };
        let ((a, ta), (b, tb)) = (run(), run());
        assert_eq!(a.size(), x.size());
        assert_eq!(ta.size(), x.size());
        assert!(a.equal(&b) && ta.equal(&tb));
        let bad = NoiseMix {
            weights: vec![1.0, 1.0],
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert!((&a - &x).abs().mean(Kind::Float).double_value(&[]) > 1e-3);
    }
}
