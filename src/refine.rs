//! Refinement after the network (issue 23, "do no harm"): an empirical Wiener filter of the
//! *noisy input* with the network's output as its pilot, the second stage of BM3D (Dabov et
//! al., 2007) without the block matching.
//!
//! In a decorrelated colour space, for overlapping `block` x `block` windows (every `stride`
//! pixels) of each channel, the orthonormal 2-D DCT of the noisy window `X` and of the pilot's
//! `P` are taken; each noisy coefficient is scaled by `w = P² / (P² + σ²)` (σ² the noise
//! variance of that channel, and with [`SigmaSource::Psd`] of that frequency); the windows are
//! transformed back and averaged where they overlap, each weighted by `1 / Σ w²` as BM3D does.
//! In tch: a (separable) conv2d with the DCT basis as filters, elementwise gains, its
//! conv_transpose2d and a
//! division by the summed weights, on the tensors' own device (CPU or CUDA alike).
//!
//! What follows from the construction:
//! - it only keeps or shrinks the input's coefficients: it cannot invent texture the input does
//!   not have, whatever the pilot holds;
//! - where the pilot's local mean is well above the noise, the DC gain is ~1: the output's local
//!   mean follows the input's, so a pilot that shifts brightness or colour does not pass it on
//!   ([`DcMode::Input`] keeps every window's DC exactly);
//! - mild noise (small σ) gets mild filtering: σ = 0 returns the input exactly.
//!
//! The noise level comes from the input-minus-pilot residual by default ([`SigmaSource::Psd`]:
//! per image, channel and DCT frequency, the median of the squared residual coefficients of
//! non-overlapping windows, so spatially correlated camera noise gets a coloured-noise Wiener
//! filter; frames smaller than a window use the white residual level), optionally per brightness band ([`Wiener::levels`]: signal-dependent noise); or from
//! the noisy image alone ([`crate::noise_level`]), or fixed. Large frames run in bands of rows
//! whose results are exactly those of the whole frame ([`Wiener::apply`]).

use std::fmt;
use std::str::FromStr;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::noise_level::estimate_sigma;
use crate::pad::pad_reflect;

/// What runs after the network (`--refine`, the element's `refine`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Refine {
    /// The network's output as it is.
    #[default]
    Off,
    /// The empirical Wiener filter of the input with the output as pilot.
    Wiener(Wiener),
}

/// Colour space the Wiener filter works in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// R, G, B as they are.
    Rgb,
    /// The orthonormal opponent transform: (R+G+B)/√3, (R−B)/√2, (R−2G+B)/√6. White noise of
    /// equal level in R, G and B stays white and equal; luma and chroma noise separate.
    Opponent,
}

/// Where the noise level σ comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SigmaSource {
    /// The residual input − pilot, per image, channel and DCT frequency (its power spectrum in
    /// the window transform): median of the squared coefficients of non-overlapping windows
    /// over the median of a χ²₁ (0.4549).
    Psd,
    /// The residual, per image and channel, white: 1.4826 × its median absolute deviation.
    Residual,
    /// The noisy input alone ([`crate::noise_level::estimate_sigma`] in the filter's colour
    /// space), per image and channel, white.
    Estimate,
    /// The noisy input's own spectrum where the pilot is flat, per image, channel and
    /// frequency: over the quarter of non-overlapping windows with the least pilot detail
    /// (AC energy), the median of the noisy AC coefficients squared over 0.4549 (the DC from
    /// the residual, as [`SigmaSource::Psd`]). Does not depend on how much noise the pilot
    /// removed.
    Flat,
    /// This standard deviation, in levels of 255, for every channel.
    Fixed(f64),
}

/// How the windows' DC coefficient (their mean) is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DcMode {
    /// Like every other coefficient.
    Wiener,
    /// Kept as the input's (gain 1): the output's local means are the input's.
    Input,
}

/// The Wiener stage's parameters; [`Wiener::default`] is `--refine wiener`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wiener {
    /// Window side: 4, 8 or 16.
    pub block: i64,
    /// Step between windows: divides `block`.
    pub stride: i64,
    pub colour: Colour,
    pub sigma: SigmaSource,
    /// σ is multiplied by this (> 0).
    pub scale: f64,
    /// Brightness bands for signal-dependent noise (1: one σ per channel and frequency;
    /// n > 1: [`SigmaSource::Psd`] and [`SigmaSource::Residual`] scaled per band of the pilot's
    /// local luma, 0..1 cut in n equal bands).
    pub levels: i64,
    pub dc: DcMode,
    /// The noise cue driving the stage's strength ([`Adapt`]); none: the full stage.
    pub adapt: Option<Adapt>,
}

/// How much of the Wiener stage an image gets, from its estimated noise level σ̂
/// ([`Wiener::noise_cue`], levels of 255): the output is `pilot + α (wiener − pilot)` with
/// α = 0 at or below `lo`, 1 at or above `hi`, linear between. Mild noise keeps the network's
/// output; strong noise gets the full stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adapt {
    pub lo: f64,
    pub hi: f64,
}

impl Adapt {
    /// α for a noise level `sigma` (levels of 255).
    pub fn weight(&self, sigma: f64) -> f64 {
        if sigma <= self.lo {
            0.0
        } else if sigma >= self.hi {
            1.0
        } else {
            (sigma - self.lo) / (self.hi - self.lo)
        }
    }
}

impl Default for Wiener {
    fn default() -> Self {
        Wiener {
            block: 8,
            stride: 2,
            colour: Colour::Opponent,
            sigma: SigmaSource::Psd,
            scale: 1.0,
            levels: 1,
            dc: DcMode::Wiener,
            adapt: None,
        }
    }
}

impl Wiener {
    /// `--refine adaptive`: `wiener:sigma=flat,scale=2,dc=input,adapt=3:5`, the stage driven
    /// by the noise cue (weights/README.md, issue 23 session 11: LO chosen on PolyU-dev, HI on
    /// ViDeNN; the training side's noise could not choose them).
    pub fn adaptive() -> Wiener {
        Wiener {
            sigma: SigmaSource::Flat,
            scale: 2.0,
            dc: DcMode::Input,
            adapt: Some(Adapt { lo: 3.0, hi: 5.0 }),
            ..Wiener::default()
        }
    }
}

/// Median of a χ² variable with one degree of freedom: E[z²] / median(z²) for Gaussian z.
const CHI2_1_MEDIAN: f64 = 0.454_936_4;
/// Standard deviation over median absolute deviation, for a Gaussian.
const MAD_TO_STD: f64 = 1.482_602_2;
/// Windows' coefficients held at once in a band of rows (per tensor; a handful are alive).
const BAND_COEFFICIENTS: i64 = 1 << 23;
/// A brightness band needs this many windows for its own noise scale (else its neighbour's).
const MIN_WINDOWS_PER_LEVEL: i64 = 16;

impl Refine {
    /// Refine `out` (the network's output) against `input`, both (N, 3, H, W) on the 0..1
    /// scale; the result is on `out`'s device, f32, not clamped.
    pub fn apply(&self, input: &Tensor, out: &Tensor) -> Result<Tensor> {
        match self {
            Refine::Off => Ok(out.shallow_clone()),
            Refine::Wiener(w) => w.apply(input, out),
        }
    }

    pub fn is_off(&self) -> bool {
        matches!(self, Refine::Off)
    }
}

impl Wiener {
    /// The filtered `noisy`, with `pilot` as the estimate of the clean image: (N, 3, H, W) f32
    /// on the 0..1 scale, on `pilot`'s device, not clamped. Frames are filtered in bands of
    /// rows (at most [`BAND_COEFFICIENTS`] window coefficients at a time) whose windows lie
    /// on the whole frame's grid, so banding changes nothing.
    pub fn apply(&self, noisy: &Tensor, pilot: &Tensor) -> Result<Tensor> {
        self.apply_in_bands(noisy, pilot, BAND_COEFFICIENTS)
    }

    /// [`Wiener::apply`] with at most about `coefficients` window coefficients per band.
    fn apply_in_bands(&self, noisy: &Tensor, pilot: &Tensor, coefficients: i64) -> Result<Tensor> {
        self.validate()?;
        let size = pilot.size();
        let (x, p) = self.prepare(noisy, pilot)?;
        let (n, h, w) = (size[0], size[2], size[3]);
        let dev = pilot.device();
        let basis = Dct::new(self.block, dev)?;
        let pilot = pilot.f_to_kind(Kind::Float)?;
        // The noise cue: how much of the stage each image gets (none: all of it).
        let alpha = match self.adapt {
            None => None,
            Some(a) => Some(
                self.cue(&x, &p, &basis)?
                    .into_iter()
                    .map(|sigma| a.weight(sigma))
                    .collect::<Vec<f64>>(),
            ),
        };
        if alpha.as_ref().is_some_and(|a| a.iter().all(|v| *v == 0.0)) {
            return Ok(pilot);
        }
        let variance = self.noise_variance(&x, &p, &basis)?;
        let y = if variance.levels.f_max()?.double_value(&[]) <= 0.0 {
            noisy.f_to_device(dev)?.f_to_kind(Kind::Float)?
        } else {
            self.filter_in_bands(&x, &p, &variance, &basis, (n, h, w), coefficients)?
        };
        let Some(alpha) = alpha else {
            return Ok(y);
        };
        let a = Tensor::f_from_slice(&alpha)?
            .f_to_kind(Kind::Float)?
            .f_to_device(dev)?
            .f_view([n, 1, 1, 1])?;
        Ok(&pilot + (y - &pilot) * a)
    }

    /// The input and the pilot in the filter's space as (N*3, 1, H, W) f32 on the pilot's
    /// device, after checking their sizes.
    fn prepare(&self, noisy: &Tensor, pilot: &Tensor) -> Result<(Tensor, Tensor)> {
        let size = pilot.size();
        if size.len() != 4 || size[1] != 3 || noisy.size() != size {
            return Err(Error::Input(format!(
                "wiener refinement: expected an input and a pilot of one (N, 3, H, W) size, got {:?} and {size:?}",
                noisy.size()
            )));
        }
        let noisy = noisy.f_to_device(pilot.device())?.f_to_kind(Kind::Float)?;
        let pilot = pilot.f_to_kind(Kind::Float)?;
        let (n, h, w) = (size[0], size[2], size[3]);
        Ok((
            self.into_space(&noisy)?.f_reshape([n * 3, 1, h, w])?,
            self.into_space(&pilot)?.f_reshape([n * 3, 1, h, w])?,
        ))
    }

    /// The Wiener filter proper of the prepared channels, back in RGB: (N, 3, H, W).
    fn filter_in_bands(
        &self,
        x: &Tensor,
        p: &Tensor,
        variance: &Variance,
        basis: &Dct,
        (n, h, w): (i64, i64, i64),
        coefficients: i64,
    ) -> Result<Tensor> {
        let (b, s) = (self.block, self.stride);
        let dev = x.device();
        // Every pixel in as many windows as any other: b - s before, at least b - s after and
        // the padded side a whole number of strides past one window.
        let grow = |len: i64| {
            let after = b - s;
            let rest = (len + (b - s) + after - b).rem_euclid(s);
            after + (s - rest) % s
        };
        let (right, bottom) = (grow(w), grow(h));
        let pad = [b - s, right, b - s, bottom];
        let xp = pad_reflect(x, pad)?;
        let pp = pad_reflect(p, pad)?;
        let (hp, wp) = (xp.size()[2], xp.size()[3]);
        let ones = Tensor::f_ones([1, 1, b, b], (Kind::Float, dev))?;
        let per_row = n * 3 * b * b * ((wp - b) / s + 1);
        let rows = (coefficients / per_row.max(1)).clamp(1, hp) * s;
        let mut parts = Vec::new();
        let mut r0 = 0;
        while r0 < hp {
            let r1 = (r0 + rows).min(hp);
            let a = (r0 - (b - s)).max(0);
            let e = (r1 + b - s).min(hp);
            let band = |t: &Tensor| t.f_narrow(2, a, e - a);
            let (num, den) = self.band(&band(&xp)?, &band(&pp)?, variance, basis, &ones)?;
            parts.push((num / den).f_narrow(2, r0 - a, r1 - r0)?);
            r0 = r1;
        }
        let y = Tensor::f_cat(&parts, 2)?
            .f_narrow(2, b - s, h)?
            .f_narrow(3, b - s, w)?
            .f_reshape([n, 3, h, w])?;
        self.out_of_space(&y)
    }

    /// The weighted sums of the windows of one band of padded rows (starting on the stride's
    /// grid): (numerator, denominator) over the band's rows.
    fn band(
        &self,
        x: &Tensor,
        p: &Tensor,
        variance: &Variance,
        basis: &Dct,
        ones: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let s = self.stride;
        let conv = |t: &Tensor| basis.forward(t, s);
        let cx = conv(x)?;
        let cp = conv(p)?;
        let p2 = cp.f_square()?;
        let var = variance.at(&cp, self)?;
        // Where the noise variance is 0 the gain is 1, whatever the pilot.
        let gain = (&p2 + 1e-12) / (&p2 + var + 1e-12);
        if self.dc == DcMode::Input {
            let _ = gain.f_narrow(1, 0, 1)?.f_fill_(1.0)?;
        }
        let weight = gain
            .f_square()?
            .f_sum_dim_intlist([1i64].as_slice(), true, Kind::Float)?
            .f_clamp_min(1e-6)?
            .f_reciprocal()?;
        let coeffs = cx * gain * &weight;
        let num = basis.inverse(&coeffs, s)?;
        let den =
            weight.f_conv_transpose2d(ones, None::<Tensor>, [s, s], [0, 0], [0, 0], 1, [1, 1])?;
        // The band's last rows past its windows get none: pad to the band's height.
        let missing = x.size()[2] - num.size()[2];
        let missing_w = x.size()[3] - num.size()[3];
        Ok((
            num.f_pad([0, missing_w, 0, missing], "constant", Some(0.0))?,
            den.f_pad([0, missing_w, 0, missing], "constant", Some(1.0))?,
        ))
    }

    /// The noise variance of every window coefficient, on the 0..1 scale squared.
    fn noise_variance(&self, x: &Tensor, p: &Tensor, basis: &Dct) -> Result<Variance> {
        let (nc, k) = (x.size()[0], self.block * self.block);
        let dev = x.device();
        let scale2 = self.scale * self.scale;
        let flat = |v: Vec<f64>| -> Result<Tensor> {
            Ok(Tensor::f_from_slice(&v)?
                .f_to_kind(Kind::Float)?
                .f_to_device(dev)?
                .f_view([nc, 1, 1, 1])?
                .f_expand([nc, k, 1, 1], false)?
                .f_contiguous()?)
        };
        let b = self.block;
        let small = x.size()[2] < b || x.size()[3] < b;
        let source = match self.sigma {
            SigmaSource::Psd | SigmaSource::Flat if small => SigmaSource::Residual,
            source => source,
        };
        let levels = match source {
            SigmaSource::Fixed(v) => flat(vec![(v / 255.0).powi(2) * scale2; nc as usize])?,
            SigmaSource::Estimate => {
                let mut v = Vec::with_capacity(nc as usize);
                for i in 0..nc {
                    let e = estimate_sigma(&x.f_narrow(0, i, 1)?)?[0];
                    v.push(e * e * scale2);
                }
                flat(v)?
            }
            SigmaSource::Residual => (residual_variance(x, p)? * scale2)
                .f_view([nc, 1, 1, 1])?
                .f_expand([nc, k, 1, 1], false)?
                .f_contiguous()?,
            SigmaSource::Psd => {
                let r = basis.forward(&(x - p), b)?;
                let r2 = r.f_square()?.f_reshape([nc, k, -1])?;
                (r2.f_median_dim(2, false)?.0 / CHI2_1_MEDIAN * scale2).f_view([nc, k, 1, 1])?
            }
            SigmaSource::Flat => (flat_variance(x, p, basis)? * scale2).f_view([nc, k, 1, 1])?,
        };
        let bands = match (self.levels > 1 && !small, source) {
            (true, SigmaSource::Psd | SigmaSource::Flat | SigmaSource::Residual) => {
                Some(self.level_gains(x, p, basis, &levels)?)
            }
            _ => None,
        };
        Ok(Variance { levels, bands })
    }

    /// Per image of the batch, the estimated noise level σ̂ (levels of 255, the root mean
    /// square over the three channels, so comparable with the std of noisy − clean): the
    /// noisy input's own spectrum where the pilot is flat ([`SigmaSource::Flat`]'s AC
    /// frequencies, whatever `sigma` says; frames smaller than a window: the white residual
    /// level), not scaled. It does not depend on the pilot's brightness.
    /// This is the cue [`Adapt`] reads.
    pub fn noise_cue(&self, noisy: &Tensor, pilot: &Tensor) -> Result<Vec<f64>> {
        self.validate()?;
        let (x, p) = self.prepare(noisy, pilot)?;
        self.cue(&x, &p, &Dct::new(self.block, x.device())?)
    }

    /// [`Wiener::noise_cue`] of the (N*3, 1, H, W) channels in the filter's space.
    fn cue(&self, x: &Tensor, p: &Tensor, basis: &Dct) -> Result<Vec<f64>> {
        let nc = x.size()[0];
        let small = x.size()[2] < self.block || x.size()[3] < self.block;
        let per_channel = match small {
            true => residual_variance(x, p)?,
            // The AC frequencies only: the DC's level comes from the residual, which a
            // pilot that shifts brightness would inflate.
            false => flat_variance(x, p, basis)?
                .f_narrow(1, 1, self.block * self.block - 1)?
                .f_mean_dim([1i64].as_slice(), false, Kind::Float)?,
        };
        let per_image = per_channel
            .f_reshape([nc / 3, 3])?
            .f_mean_dim([1i64].as_slice(), false, Kind::Double)?
            .f_clamp_min(0.0)?
            .f_sqrt()?
            * 255.0;
        Ok(Vec::<f64>::try_from(
            per_image.f_to_device(tch::Device::Cpu)?,
        )?)
    }

    /// Signal-dependent noise: per image, channel and brightness band of the pilot's local
    /// luma, the median over the band's non-overlapping windows of their residual energy
    /// relative to `levels` (mean over frequencies of residual² / variance), over the same
    /// median on all windows. (N*3, levels) gains on the variance; a band with fewer than
    /// [`MIN_WINDOWS_PER_LEVEL`] windows takes its nearest populated band's gain.
    fn level_gains(&self, x: &Tensor, p: &Tensor, basis: &Dct, levels: &Tensor) -> Result<Tensor> {
        let b = self.block;
        let nc = x.size()[0];
        let r = basis.forward(&(x - p), b)?;
        let energy = (r.f_square()? / levels)
            .f_mean_dim([1i64].as_slice(), false, Kind::Float)?
            .f_reshape([nc, -1])?
            .f_to_device(tch::Device::Cpu)?;
        let cp = basis.forward(p, b)?;
        let band = luma_band(&cp, self)?.f_to_device(tch::Device::Cpu)?;
        let energy = Vec::<Vec<f32>>::try_from(energy)?;
        let band = Vec::<Vec<i64>>::try_from(band)?;
        let mut gains = Vec::with_capacity((nc * self.levels) as usize);
        for (e, l) in energy.iter().zip(&band) {
            let all = median(e.clone());
            let mut g: Vec<Option<f64>> = (0..self.levels)
                .map(|lev| {
                    let v: Vec<f32> = e
                        .iter()
                        .zip(l)
                        .filter(|(_, li)| **li == lev)
                        .map(|(ei, _)| *ei)
                        .collect();
                    match v.len() as i64 >= MIN_WINDOWS_PER_LEVEL && all > 0.0 {
                        true => Some(median(v) / all),
                        false => None,
                    }
                })
                .collect();
            fill_from_neighbours(&mut g);
            gains.extend(g.into_iter().map(|v| v.unwrap_or(1.0) as f32));
        }
        Ok(Tensor::f_from_slice(&gains)?
            .f_view([nc, self.levels])?
            .f_to_device(x.device())?)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(format!("wiener refinement: {m}")));
        if ![4, 8, 16].contains(&self.block) {
            return bad(format!("block {} (expected 4, 8 or 16)", self.block));
        }
        if self.stride < 1 || self.block % self.stride != 0 {
            return bad(format!(
                "stride {} does not divide block {}",
                self.stride, self.block
            ));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return bad(format!("scale {} (expected > 0)", self.scale));
        }
        if !(1..=64).contains(&self.levels) {
            return bad(format!("levels {} (expected 1..64)", self.levels));
        }
        if let Some(a) = self.adapt {
            if !(a.lo.is_finite() && a.hi.is_finite() && a.lo >= 0.0 && a.hi > a.lo) {
                return bad(format!(
                    "adapt {}:{} (expected 0 <= LO < HI levels of 255)",
                    a.lo, a.hi
                ));
            }
        }
        if let SigmaSource::Fixed(v) = self.sigma {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("sigma {v} (expected >= 0 levels of 255)"));
            }
        }
        Ok(())
    }

    fn into_space(self, rgb: &Tensor) -> Result<Tensor> {
        match self.colour {
            Colour::Rgb => Ok(rgb.shallow_clone()),
            Colour::Opponent => mix(rgb, &OPPONENT),
        }
    }

    fn out_of_space(self, t: &Tensor) -> Result<Tensor> {
        match self.colour {
            Colour::Rgb => Ok(t.shallow_clone()),
            Colour::Opponent => mix(t, &transpose3(&OPPONENT)),
        }
    }
}

/// The noise variance of the windows' coefficients: per image-channel and frequency
/// (`levels`, (N*3, K, 1, 1)) and, with brightness bands, a gain per band ((N*3, levels)).
struct Variance {
    levels: Tensor,
    bands: Option<Tensor>,
}

impl Variance {
    /// The variance for the windows whose pilot coefficients are `cp` (N*3, K, rows, cols).
    fn at(&self, cp: &Tensor, w: &Wiener) -> Result<Tensor> {
        let Some(gains) = &self.bands else {
            return Ok(self.levels.shallow_clone());
        };
        let (nc, rows, cols) = (cp.size()[0], cp.size()[2], cp.size()[3]);
        let band = luma_band(cp, w)?;
        let g = gains
            .f_gather(1, &band, false)?
            .f_view([nc, 1, rows, cols])?;
        Ok(&self.levels * g)
    }
}

/// The brightness band (0..levels) of the pilot's mean luma (R+G+B)/3 in each window, from
/// the windows' DC coefficients `cp` (N*3, K, rows, cols): (N*3, rows*cols), the same for the
/// three channels of a frame. A window's DC is its mean times the block side; the opponent Y
/// is (R+G+B)/√3.
fn luma_band(cp: &Tensor, w: &Wiener) -> Result<Tensor> {
    let (nc, rows, cols) = (cp.size()[0], cp.size()[2], cp.size()[3]);
    let dc = cp.f_narrow(1, 0, 1)?.f_reshape([nc / 3, 3, rows, cols])?;
    let mean = match w.colour {
        Colour::Opponent => dc.f_narrow(1, 0, 1)? / (3f64.sqrt() * w.block as f64),
        Colour::Rgb => dc.f_mean_dim([1i64].as_slice(), true, Kind::Float)? / w.block as f64,
    };
    Ok((mean * w.levels as f64)
        .f_floor()?
        .f_clamp(0.0, (w.levels - 1) as f64)?
        .f_to_kind(Kind::Int64)?
        .f_expand([nc / 3, 3, rows, cols], false)?
        .f_reshape([nc, rows * cols])?)
}

/// The orthonormal opponent transform's rows (Y, R−B, R−2G+B).
const OPPONENT: [[f64; 3]; 3] = [
    [
        0.577_350_269_189_625_8,
        0.577_350_269_189_625_8,
        0.577_350_269_189_625_8,
    ],
    [0.707_106_781_186_547_5, 0.0, -0.707_106_781_186_547_5],
    [
        0.408_248_290_463_863,
        -0.816_496_580_927_726,
        0.408_248_290_463_863,
    ],
];

fn transpose3(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut t = [[0.0; 3]; 3];
    for (i, row) in m.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            t[j][i] = *v;
        }
    }
    t
}

/// `m` applied to the channels of (N, 3, H, W).
fn mix(x: &Tensor, m: &[[f64; 3]; 3]) -> Result<Tensor> {
    let flat: Vec<f32> = m.iter().flatten().map(|v| *v as f32).collect();
    let k = Tensor::f_from_slice(&flat)?
        .f_view([3, 3, 1, 1])?
        .f_to_device(x.device())?;
    Ok(x.f_conv2d(&k, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)?)
}

/// The orthonormal 2-D DCT-II of `b` x `b` windows, separably: a conv of the 1-D basis along
/// the rows, then along the columns (b³/s² + b²/s multiply-adds a pixel at stride s, against
/// b⁴/s² for the 2-D basis as filters).
struct Dct {
    /// The 1-D basis as (b, 1, b, 1) and (b, 1, 1, b) filters.
    vertical: Tensor,
    horizontal: Tensor,
    b: i64,
}

impl Dct {
    fn new(b: i64, dev: tch::Device) -> Result<Dct> {
        let v = dct_1d(b);
        let t = Tensor::f_from_slice(&v)?.f_to_device(dev)?;
        Ok(Dct {
            vertical: t.f_view([b, 1, b, 1])?,
            horizontal: t.f_view([b, 1, 1, b])?,
            b,
        })
    }

    /// (C, 1, H, W) to the coefficients of the windows every `s` pixels: (C, b², rows, cols),
    /// channel `u * b + v` for vertical frequency u and horizontal v ([`dct_basis`]'s order).
    fn forward(&self, t: &Tensor, s: i64) -> Result<Tensor> {
        let (c, b) = (t.size()[0], self.b);
        let v = t.f_conv2d(&self.vertical, None::<Tensor>, [s, 1], [0, 0], [1, 1], 1)?;
        let (rows, w) = (v.size()[2], v.size()[3]);
        let h = v.f_reshape([c * b, 1, rows, w])?.f_conv2d(
            &self.horizontal,
            None::<Tensor>,
            [1, s],
            [0, 0],
            [1, 1],
            1,
        )?;
        let cols = h.size()[3];
        Ok(h.f_reshape([c, b * b, rows, cols])?)
    }

    /// The sum of the windows rebuilt from `coeffs` (C, b², rows, cols) at stride `s`:
    /// (C, 1, (rows-1)s+b, (cols-1)s+b).
    fn inverse(&self, coeffs: &Tensor, s: i64) -> Result<Tensor> {
        let (c, b) = (coeffs.size()[0], self.b);
        let (rows, cols) = (coeffs.size()[2], coeffs.size()[3]);
        let h = coeffs
            .f_reshape([c * b, b, rows, cols])?
            .f_conv_transpose2d(
                &self.horizontal,
                None::<Tensor>,
                [1, s],
                [0, 0],
                [0, 0],
                1,
                [1, 1],
            )?;
        let w = h.size()[3];
        Ok(h.f_reshape([c, b, rows, w])?.f_conv_transpose2d(
            &self.vertical,
            None::<Tensor>,
            [s, 1],
            [0, 0],
            [0, 0],
            1,
            [1, 1],
        )?)
    }
}

/// The orthonormal 1-D DCT-II basis of length `b`, frequency-major (b x b).
fn dct_1d(b: i64) -> Vec<f32> {
    let n = b as usize;
    let mut v = Vec::with_capacity(n * n);
    for u in 0..n {
        let a = if u == 0 {
            1.0 / n as f64
        } else {
            2.0 / n as f64
        };
        for i in 0..n {
            let arg = std::f64::consts::PI * (2 * i + 1) as f64 * u as f64 / (2 * n) as f64;
            v.push((a.sqrt() * arg.cos()) as f32);
        }
    }
    v
}

/// The orthonormal 2-D DCT-II basis of `b` x `b` windows as conv filters (b², 1, b, b), in
/// order of rows then columns of frequencies: filter 0 is the DC (every tap 1/b).
pub fn dct_basis(b: i64) -> Result<Tensor> {
    let one = Tensor::f_from_slice(&dct_1d(b))?.f_view([b, b])?;
    // Filter (u, v) at tap (i, j): c_u(i) c_v(j).
    Ok(one
        .f_view([b, 1, b, 1])?
        .f_mul(&one.f_view([1, b, 1, b])?)?
        .f_reshape([b * b, 1, b, b])?)
}

fn median(mut v: Vec<f32>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[(v.len() - 1) / 2] as f64
}

/// The residual x − p's white noise variance per channel (N*3), on the 0..1 scale squared:
/// (1.4826 × its median absolute deviation)².
fn residual_variance(x: &Tensor, p: &Tensor) -> Result<Tensor> {
    let nc = x.size()[0];
    let r = (x - p).f_reshape([nc, -1])?;
    let med = r.f_median_dim(1, true)?.0;
    let mad = (r - med).f_abs()?.f_median_dim(1, false)?.0;
    Ok((mad * MAD_TO_STD).f_square()?)
}

/// [`SigmaSource::Flat`]'s variance per channel and frequency (N*3, K), on the 0..1 scale
/// squared, not scaled: over the quarter of non-overlapping windows with the least pilot
/// detail, the median of the noisy AC coefficients squared over 0.4549 (the DC from the
/// residual's windows).
fn flat_variance(x: &Tensor, p: &Tensor, basis: &Dct) -> Result<Tensor> {
    let (nc, b) = (x.size()[0], basis.b);
    let k = b * b;
    let conv = |t: &Tensor| -> Result<Tensor> { Ok(basis.forward(t, b)?.f_reshape([nc, k, -1])?) };
    let (cx, cp) = (conv(x)?, conv(p)?);
    let detail = cp.f_narrow(1, 1, k - 1)?.f_square()?.f_sum_dim_intlist(
        [1i64].as_slice(),
        false,
        Kind::Float,
    )?;
    let windows = detail.size()[1];
    let keep = (windows / 4).max(1);
    let (_, flat) = detail.f_topk(keep, 1, false, true)?;
    let flat = flat.f_unsqueeze(1)?.f_expand([nc, k, keep], false)?;
    let ac = cx.f_gather(2, &flat, false)?.f_square()?;
    let dc = (&cx - &cp).f_narrow(1, 0, 1)?.f_square()?;
    let ac = ac.f_median_dim(2, false)?.0.f_narrow(1, 1, k - 1)?;
    let dc = dc.f_median_dim(2, false)?.0;
    Ok(Tensor::f_cat(&[dc, ac], 1)? / CHI2_1_MEDIAN)
}

/// Empty entries take the nearest filled one's value (ties: the lower band).
fn fill_from_neighbours(g: &mut [Option<f64>]) {
    let filled: Vec<(usize, f64)> = g
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (i, v)))
        .collect();
    if filled.is_empty() {
        return;
    }
    for (i, slot) in g.iter_mut().enumerate() {
        if slot.is_none() {
            let nearest = filled
                .iter()
                .min_by_key(|(j, _)| (*j as i64 - i as i64).abs())
                .expect("not empty");
            *slot = Some(nearest.1);
        }
    }
}

/// The names of an enum's values in `--refine` specs: the first entry of a value is how it is
/// written, later ones are accepted aliases. One table serves parsing and printing.
struct Names<T: 'static>(&'static [(T, &'static str)]);

impl<T: Copy + PartialEq + 'static> Names<T> {
    fn parse(&self, s: &str) -> Option<T> {
        self.0.iter().find(|(_, n)| *n == s).map(|(v, _)| *v)
    }

    fn name(&self, v: T) -> &'static str {
        self.0
            .iter()
            .find(|(t, _)| *t == v)
            .map(|(_, n)| *n)
            .expect("every value is named")
    }

    /// "a, b or c" of the written names.
    fn expected(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for (v, n) in self.0 {
            if self.name(*v) == *n {
                names.push(n);
            }
        }
        match names.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

const COLOURS: Names<Colour> = Names(&[
    (Colour::Opponent, "opponent"),
    (Colour::Opponent, "opp"),
    (Colour::Rgb, "rgb"),
]);
/// The named sources; [`SigmaSource::Fixed`] is written as its number.
const SIGMAS: Names<SigmaSource> = Names(&[
    (SigmaSource::Psd, "psd"),
    (SigmaSource::Flat, "flat"),
    (SigmaSource::Residual, "residual"),
    (SigmaSource::Estimate, "estimate"),
]);
const DCS: Names<DcMode> = Names(&[(DcMode::Wiener, "wiener"), (DcMode::Input, "input")]);

impl SigmaSource {
    fn parse(v: &str) -> Option<SigmaSource> {
        SIGMAS.parse(v).or_else(|| {
            v.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(SigmaSource::Fixed)
        })
    }

    fn spec(&self) -> String {
        match self {
            SigmaSource::Fixed(v) => v.to_string(),
            named => SIGMAS.name(*named).to_string(),
        }
    }
}

impl FromStr for Refine {
    type Err = Error;

    /// `off`, `wiener`, or `wiener:KEY=VALUE,...` (`adaptive[:KEY=VALUE,...]` starts from
    /// [`Wiener::adaptive`] instead of the defaults) with keys `block` (4, 8, 16), `stride`,
    /// `colour` (opponent, rgb), `sigma` (psd, flat, residual, estimate, or a level of 255),
    /// `scale`, `levels`, `dc` (wiener, input), `adapt` (LO:HI levels of 255 of the noise cue,
    /// or off).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = |m: String| Error::Input(format!("refine '{s}': {m}"));
        let (name, rest) = s.split_once(':').unwrap_or((s, ""));
        let mut w = match name.to_ascii_lowercase().as_str() {
            "off" | "none" if rest.is_empty() => return Ok(Refine::Off),
            "wiener" => Wiener::default(),
            "adaptive" => Wiener::adaptive(),
            _ => {
                return Err(bad(
                    "expected off, wiener[:KEY=VALUE,...] or adaptive[:KEY=VALUE,...]".into(),
                ))
            }
        };
        for kv in rest.split(',').filter(|kv| !kv.trim().is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad(format!("'{kv}' is not KEY=VALUE")))?;
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            let int = |v: &str| {
                v.parse::<i64>()
                    .map_err(|_| bad(format!("{k}: '{v}' is not a whole number")))
            };
            let number = |v: &str| {
                v.parse::<f64>()
                    .map_err(|_| bad(format!("{k}: '{v}' is not a number")))
            };
            let named =
                |what: &str, expected: String| bad(format!("{what} '{v}' (expected {expected})"));
            match k.as_str() {
                "block" => w.block = int(&v)?,
                "stride" => w.stride = int(&v)?,
                "levels" => w.levels = int(&v)?,
                "scale" => w.scale = number(&v)?,
                "colour" | "color" => {
                    w.colour = COLOURS
                        .parse(&v)
                        .ok_or_else(|| named("colour", COLOURS.expected()))?
                }
                "sigma" => {
                    w.sigma = SigmaSource::parse(&v).ok_or_else(|| {
                        named("sigma", format!("{} or a level of 255", SIGMAS.expected()))
                    })?
                }
                "dc" => w.dc = DCS.parse(&v).ok_or_else(|| named("dc", DCS.expected()))?,
                "adapt" => {
                    w.adapt = match v.split_once(':') {
                        None if v == "off" => None,
                        None => return Err(named("adapt", "LO:HI or off".into())),
                        Some((lo, hi)) => Some(Adapt {
                            lo: number(lo)?,
                            hi: number(hi)?,
                        }),
                    }
                }
                _ => {
                    return Err(bad(format!(
                        "unknown key '{k}' (block, stride, colour, sigma, scale, levels, dc, adapt)"
                    )))
                }
            }
        }
        w.validate().map_err(|e| bad(e.to_string()))?;
        Ok(Refine::Wiener(w))
    }
}

impl fmt::Display for Refine {
    /// `off`, `wiener` for the defaults, else `wiener:` and the keys that differ from them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Refine::Wiener(w) = self else {
            return f.write_str("off");
        };
        let d = Wiener::default();
        let mut keys = Vec::new();
        if w.block != d.block {
            keys.push(format!("block={}", w.block));
        }
        if w.stride != d.stride {
            keys.push(format!("stride={}", w.stride));
        }
        if w.colour != d.colour {
            keys.push(format!("colour={}", COLOURS.name(w.colour)));
        }
        if w.sigma != d.sigma {
            keys.push(format!("sigma={}", w.sigma.spec()));
        }
        if w.scale != d.scale {
            keys.push(format!("scale={}", w.scale));
        }
        if w.levels != d.levels {
            keys.push(format!("levels={}", w.levels));
        }
        if w.dc != d.dc {
            keys.push(format!("dc={}", DCS.name(w.dc)));
        }
        if let Some(a) = w.adapt {
            keys.push(format!("adapt={}:{}", a.lo, a.hi));
        }
        match keys.is_empty() {
            true => f.write_str("wiener"),
            false => write!(f, "wiener:{}", keys.join(",")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    const CPU: (Kind, Device) = (Kind::Float, Device::Cpu);

    fn wiener(spec: &str) -> Wiener {
        match spec.parse::<Refine>().unwrap() {
            Refine::Wiener(w) => w,
            Refine::Off => panic!("{spec} is off"),
        }
    }

    /// A test picture with edges, smooth ramps and fine texture, on 0.1..0.9.
    fn picture(h: i64, w: i64) -> Tensor {
        let y = Tensor::arange(h, CPU).view([1, 1, h, 1]);
        let x = Tensor::arange(w, CPU).view([1, 1, 1, w]);
        let ramp = &x / w as f64 * 0.3 + &y / h as f64 * 0.2;
        let texture = ((&x * 0.9).sin() * (&y * 0.45).cos()) * 0.12;
        let square = (x.ge(w / 3).logical_and(&x.lt(2 * w / 3)))
            .logical_and(&y.ge(h / 4).logical_and(&y.lt(3 * h / 4)))
            .to_kind(Kind::Float)
            * 0.25;
        let base = ramp + texture + square + 0.2;
        let tint = Tensor::from_slice(&[1.0f32, 0.8, 1.15]).view([1, 3, 1, 1]);
        (base * tint).clamp(0.1, 0.9)
    }

    fn psnr(a: &Tensor, b: &Tensor) -> f64 {
        let mse = (a - b).square().mean(Kind::Double).double_value(&[]);
        10.0 * (1.0 / mse).log10()
    }

    #[test]
    fn specs_parse_and_print() {
        assert_eq!("off".parse::<Refine>().unwrap(), Refine::Off);
        assert_eq!(
            "wiener".parse::<Refine>().unwrap(),
            Refine::Wiener(Wiener::default())
        );
        for spec in [
            "off",
            "wiener",
            "wiener:block=16,stride=4,colour=rgb,sigma=residual,scale=1.5,levels=4,dc=input",
            "wiener:sigma=estimate",
            "wiener:sigma=flat",
            "wiener:sigma=7.5",
            "wiener:sigma=flat,scale=2,dc=input,adapt=3:8.5",
        ] {
            let r: Refine = spec.parse().unwrap();
            assert_eq!(r.to_string(), spec);
            assert_eq!(r.to_string().parse::<Refine>().unwrap(), r);
        }
        assert_eq!(
            "adaptive".parse::<Refine>().unwrap(),
            "wiener:sigma=flat,scale=2,dc=input,adapt=3:5"
                .parse::<Refine>()
                .unwrap()
        );
        assert_eq!(
            "adaptive:adapt=off".parse::<Refine>().unwrap().to_string(),
            "wiener:sigma=flat,scale=2,dc=input"
        );
        assert_eq!(
            "wiener:colour=opp,color=rgb,adapt=2:4,adapt=off"
                .parse::<Refine>()
                .unwrap()
                .to_string(),
            "wiener:colour=rgb"
        );
        for bad in [
            "wiener:block=7",
            "wiener:stride=3",
            "wiener:scale=0",
            "wiener:sigma=-1",
            "wiener:levels=0",
            "wiener:colour=lab",
            "wiener:size=8",
            "wiener:block",
            "bm3d",
            "off:block=8",
            "wiener:adapt=5:2",
            "wiener:adapt=-1:2",
            "wiener:adapt=x",
            "wiener:adapt=1:y",
        ] {
            let e = bad.parse::<Refine>().unwrap_err().to_string();
            assert!(e.contains(bad) && !e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn the_dct_is_orthonormal_and_the_separable_one_is_the_2d_basis() {
        tch::manual_seed(16);
        for b in [4, 8, 16] {
            let m = dct_basis(b).unwrap().view([b * b, b * b]);
            let eye = Tensor::eye(b * b, CPU);
            let err = (m.matmul(&m.tr()) - eye).abs().max().double_value(&[]);
            assert!(err < 1e-5, "block {b}: {err}");
            let dct = Dct::new(b, Device::Cpu).unwrap();
            let x = Tensor::rand([2, 1, 3 * b + 1, 2 * b + 3], CPU);
            for s in [1, b / 2, b] {
                let want = x.conv2d(
                    &dct_basis(b).unwrap(),
                    None::<Tensor>,
                    [s, s],
                    [0, 0],
                    [1, 1],
                    1,
                );
                let got = dct.forward(&x, s).unwrap();
                assert_eq!(got.size(), want.size());
                assert!(
                    (&got - &want).abs().max().double_value(&[]) < 1e-5,
                    "b {b} s {s}"
                );
                let back = want.conv_transpose2d(
                    &dct_basis(b).unwrap(),
                    None::<Tensor>,
                    [s, s],
                    [0, 0],
                    [0, 0],
                    1,
                    [1, 1],
                );
                let got = dct.inverse(&want, s).unwrap();
                assert_eq!(got.size(), back.size());
                let scale = back.abs().max().double_value(&[]);
                let err = (&got - &back).abs().max().double_value(&[]) / scale;
                assert!(err < 1e-5, "b {b} s {s}: relative error {err}");
            }
        }
    }

    #[test]
    fn white_noise_on_a_flat_patch_drops_by_the_windows_averaging_factor() {
        // A flat pilot has no AC energy: every window keeps only its (noisy) mean, and at
        // stride 1 each pixel averages the 64 means of the windows over it, a 15x15 triangle
        // whose weights' squares sum to (344 / 4096)² in 2-D: std x 0.0840.
        tch::manual_seed(11);
        let (h, w) = (256, 256);
        let flat = Tensor::full([2, 3, h, w], 0.5, CPU);
        let sigma = 10.0 / 255.0;
        let noisy = &flat + Tensor::randn([2, 3, h, w], CPU) * sigma;
        let out = wiener("wiener:stride=1,colour=rgb,sigma=10")
            .apply(&noisy, &flat)
            .unwrap();
        let inner = |t: &Tensor| t.narrow(2, 16, h - 32).narrow(3, 16, w - 32);
        let ratio = (inner(&out) - 0.5).std(true).double_value(&[]) / sigma;
        let want = 344.0 / 4096.0;
        assert!(
            (ratio / want - 1.0).abs() < 0.12,
            "noise x {ratio:.4}, expected x {want:.4}"
        );
        // At stride 2 the same 64 windows' offsets are sampled every other pixel: still about
        // the same factor, and far below the input's.
        let out2 = wiener("wiener:colour=rgb,sigma=10")
            .apply(&noisy, &flat)
            .unwrap();
        let ratio2 = (inner(&out2) - 0.5).std(true).double_value(&[]) / sigma;
        assert!(ratio2 < 0.15, "stride 2: noise x {ratio2:.4}");
    }

    #[test]
    fn a_clean_pilot_gives_the_oracle_wiener_result_well_above_the_input() {
        tch::manual_seed(12);
        let clean = picture(96, 128);
        let noisy = &clean + Tensor::randn([1, 3, 96, 128], CPU) * (20.0 / 255.0);
        let before = psnr(&noisy, &clean);
        for spec in ["wiener", "wiener:sigma=20", "wiener:colour=rgb,stride=1"] {
            let out = wiener(spec).apply(&noisy, &clean).unwrap();
            let after = psnr(&out, &clean);
            assert!(after > before + 8.0, "{spec}: {before:.2} -> {after:.2} dB");
        }
    }

    #[test]
    fn a_clean_picture_keeps_its_mean_under_a_shifted_blurred_pilot() {
        // A pilot as a biased network makes it: blurred, 2 levels brighter. The output of the
        // clean picture must keep its mean within 0.1 level per channel.
        let clean = picture(128, 160);
        let pilot = crate::lowpass::gaussian_blur(&clean, 1.0).unwrap() + 2.0 / 255.0;
        for spec in ["wiener", "wiener:dc=input", "wiener:levels=4"] {
            let out = wiener(spec).apply(&clean, &pilot).unwrap();
            let shift =
                (&out - &clean).mean_dim([0i64, 2, 3].as_slice(), false, Kind::Double) * 255.0;
            let shift = Vec::<f64>::try_from(shift).unwrap();
            assert!(
                shift.iter().all(|s| s.abs() <= 0.1),
                "{spec}: mean shift {shift:?}"
            );
        }
    }

    #[test]
    fn sigma_zero_returns_the_input_exactly() {
        tch::manual_seed(13);
        let noisy = Tensor::rand([2, 3, 40, 33], CPU);
        let pilot = Tensor::rand([2, 3, 40, 33], CPU);
        let out = wiener("wiener:sigma=0").apply(&noisy, &pilot).unwrap();
        assert!(out.equal(&noisy));
        // A pilot equal to the input leaves no residual, so no noise.
        let out = wiener("wiener").apply(&noisy, &noisy).unwrap();
        assert!(out.equal(&noisy));
    }

    #[test]
    fn it_cannot_invent_texture_the_input_lacks() {
        let flat = Tensor::full([1, 3, 48, 64], 0.4, CPU);
        let pilot = picture(48, 64);
        let out = wiener("wiener:sigma=10").apply(&flat, &pilot).unwrap();
        let dev = (&out - 0.4).abs().max().double_value(&[]) * 255.0;
        assert!(dev < 0.1, "{dev} levels of texture from the pilot");
    }

    #[test]
    fn bands_of_rows_give_the_whole_frames_result() {
        tch::manual_seed(14);
        let clean = picture(70, 45);
        let noisy = &clean + Tensor::randn([1, 3, 70, 45], CPU) * 0.05;
        let pilot = crate::lowpass::gaussian_blur(&noisy, 1.5).unwrap();
        for spec in [
            "wiener",
            "wiener:stride=1,levels=3",
            "wiener:block=16,stride=8",
        ] {
            let w = wiener(spec);
            let whole = w.apply_in_bands(&noisy, &pilot, i64::MAX).unwrap();
            let banded = w.apply_in_bands(&noisy, &pilot, 3000).unwrap();
            let diff = (&whole - &banded).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{spec}: {diff}");
            assert_eq!(whole.size(), [1, 3, 70, 45]);
        }
    }

    #[test]
    fn the_noise_cue_measures_white_noise_against_a_clean_pilot() {
        // The cue reads the flattest quarter of the windows: a picture with smooth areas (the
        // test picture's texture blurred away, its ramps and square's edges kept).
        tch::manual_seed(17);
        let clean = crate::lowpass::gaussian_blur(&picture(128, 128), 3.0).unwrap();
        for sigma in [3.0, 12.0, 30.0] {
            let noisy = &clean + Tensor::randn([1, 3, 128, 128], CPU) * (sigma / 255.0);
            let cue = Wiener::default().noise_cue(&noisy, &clean).unwrap();
            assert_eq!(cue.len(), 1);
            assert!(
                (cue[0] / sigma - 1.0).abs() < 0.25,
                "sigma {sigma}: cue {cue:?}"
            );
        }
        // Tiny frames: the white residual level, still one value per image.
        let tiny = Tensor::rand([2, 3, 5, 6], CPU);
        let cue = Wiener::default().noise_cue(&tiny, &(&tiny * 0.5)).unwrap();
        assert_eq!(cue.len(), 2);
        assert!(cue.iter().all(|c| c.is_finite() && *c > 0.0), "{cue:?}");
    }

    #[test]
    fn adapt_keeps_the_pilot_under_mild_noise_and_gives_strong_noise_the_full_stage() {
        tch::manual_seed(18);
        let clean = crate::lowpass::gaussian_blur(&picture(96, 128), 3.0).unwrap();
        let sigmas = [2.0, 30.0, 9.0];
        let noisy = Tensor::cat(
            &sigmas.map(|s| &clean + Tensor::randn([1, 3, 96, 128], CPU) * (s / 255.0)),
            0,
        );
        let pilot = crate::lowpass::gaussian_blur(&noisy, 1.2).unwrap();
        let full = wiener("wiener:sigma=flat,dc=input")
            .apply(&noisy, &pilot)
            .unwrap();
        let adapt = wiener("wiener:sigma=flat,dc=input,adapt=5:15");
        let cue = adapt.noise_cue(&noisy, &pilot).unwrap();
        assert!(
            cue[0] < 5.0 && cue[1] > 15.0 && cue[2] > 5.0 && cue[2] < 15.0,
            "{cue:?}"
        );
        let out = adapt.apply(&noisy, &pilot).unwrap();
        let img = |t: &Tensor, i: i64| t.narrow(0, i, 1);
        // Mild: the network's output exactly; strong: the whole stage.
        assert!(img(&out, 0).equal(&img(&pilot, 0)));
        let diff = (img(&out, 1) - img(&full, 1)).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "strong noise: {diff} from the full stage");
        // Between: the linear blend at the cue's weight.
        let a = (cue[2] - 5.0) / 10.0;
        let want = img(&pilot, 2) + (img(&full, 2) - img(&pilot, 2)) * a;
        let diff = (img(&out, 2) - want).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "blend at {a:.3}: {diff}");
        // A batch of mild frames alone never runs the filter: the pilot comes back as it is.
        let mild = adapt.apply(&img(&noisy, 0), &img(&pilot, 0)).unwrap();
        assert!(mild.equal(&img(&pilot, 0)));
    }

    #[test]
    fn odd_and_tiny_frames_and_bad_shapes() {
        let w = Wiener::default();
        for (h, wd) in [(1, 1), (3, 5), (9, 17)] {
            let x = Tensor::rand([1, 3, h, wd], CPU);
            let out = wiener("wiener:sigma=5").apply(&x, &x).unwrap();
            assert_eq!(out.size(), [1, 3, h, wd]);
        }
        let e = w
            .apply(
                &Tensor::rand([1, 3, 4, 4], CPU),
                &Tensor::rand([1, 3, 4, 5], CPU),
            )
            .unwrap_err();
        assert!(e.to_string().contains("wiener"), "{e}");
        // Below a window's side the noise spectrum falls back to the white residual level.
        tch::manual_seed(15);
        let tiny = Tensor::rand([1, 3, 5, 5], CPU);
        let out = wiener("wiener:levels=4")
            .apply(&tiny, &(&tiny * 0.5))
            .unwrap();
        assert_eq!(out.size(), [1, 3, 5, 5]);
        assert!(out.isfinite().all().int64_value(&[]) == 1);
    }
}
