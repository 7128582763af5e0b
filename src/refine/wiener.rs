//! The refinement without block matching (issue 23, "do no harm"): an empirical Wiener filter of the
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

use tch::{Kind, Tensor};

use super::basis::{into_space, out_of_space, Dct};
use super::{adapted, Adapt, Colour, DcMode, SigmaSource};
use crate::error::{Error, Result};
use crate::noise_level::estimate_sigma;
use crate::pad::pad_reflect;

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
        adapted(
            self.adapt,
            pilot,
            || self.cue(&x, &p, &basis),
            || {
                let variance = self.noise_variance(&x, &p, &basis)?;
                match variance.levels.f_max()?.double_value(&[]) <= 0.0 {
                    true => Ok(noisy.f_to_device(dev)?.f_to_kind(Kind::Float)?),
                    false => {
                        self.filter_in_bands(&x, &p, &variance, &basis, (n, h, w), coefficients)
                    }
                }
            },
        )
    }

    /// The input and the pilot in the filter's space as (N*3, 1, H, W) f32 on the pilot's
    /// device, after checking their sizes.
    pub(super) fn prepare(&self, noisy: &Tensor, pilot: &Tensor) -> Result<(Tensor, Tensor)> {
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
    pub(super) fn noise_variance(&self, x: &Tensor, p: &Tensor, basis: &Dct) -> Result<Variance> {
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
    pub(super) fn cue(&self, x: &Tensor, p: &Tensor, basis: &Dct) -> Result<Vec<f64>> {
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

    pub(super) fn validate(&self) -> Result<()> {
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
            a.check().or_else(bad)?;
        }
        self.sigma.check().or_else(bad)?;
        Ok(())
    }

    fn into_space(self, rgb: &Tensor) -> Result<Tensor> {
        into_space(self.colour, rgb)
    }

    fn out_of_space(self, t: &Tensor) -> Result<Tensor> {
        out_of_space(self.colour, t)
    }
}

/// The noise variance of the windows' coefficients: per image-channel and frequency
/// (`levels`, (N*3, K, 1, 1)) and, with brightness bands, a gain per band ((N*3, levels)).
pub(super) struct Variance {
    pub(super) levels: Tensor,
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

#[cfg(test)]
mod tests {
    use super::super::basis::dct_basis;
    use super::super::testing::{picture, psnr, CPU};
    use super::super::Refine;
    use super::*;
    use tch::Device;

    fn wiener(spec: &str) -> Wiener {
        match spec.parse::<Refine>().unwrap() {
            Refine::Wiener(w) => w,
            r => panic!("{spec} is {r}"),
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
