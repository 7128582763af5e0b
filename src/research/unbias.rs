//! Mean-preserving training targets (issue 23): a camera-like noise pipeline develops the
//! noisy raw through concave curves (gamma, tone curve) and clips it, so the noisy picture's
//! expected value is not the noise-free development: by Jensen's inequality it is darker in the
//! mid-tones, and clipping makes it brighter in the shadows and darker in the highlights. A
//! model trained on such pairs learns to move the picture's level. Real pairs do not have that
//! bias (their clean image is the mean of many noisy shots), so neither should synthetic ones.
//!
//! [`BiasTable`] measures the bias as a function of the reference's brightness, per channel:
//! the mean of noisy - reference over the pixels whose reference value falls in each of
//! [`BINS`] bins, from one or more noisy draws of the same picture; [`BiasTable::correct`] adds
//! it to the reference. Over the pixels of each bin, the corrected reference then has exactly
//! the noisy draws' mean, so noisy - target is zero-mean at every brightness (up to the
//! sampling error of the draws), and edges are not blurred (the correction is a function of the
//! pixel's own value).

use tch::{Kind, Tensor};

use crate::error::Result;

/// Brightness bins per channel (8 levels of 255 each).
pub const BINS: i64 = 32;

/// Sums and counts of noisy - reference per channel and brightness bin.
pub struct BiasTable {
    sum: Tensor,
    count: Tensor,
}

impl Default for BiasTable {
    fn default() -> Self {
        Self::new()
    }
}

impl BiasTable {
    pub fn new() -> Self {
        let zeros = || Tensor::zeros([3, BINS], (Kind::Double, tch::Device::Cpu));
        BiasTable {
            sum: zeros(),
            count: zeros(),
        }
    }

    /// Per channel, the bin index of each pixel of a (1, 3, H, W) image in [0, 1], as (3, H*W).
    fn bins(reference: &Tensor) -> Result<Tensor> {
        Ok(reference
            .f_to_device(tch::Device::Cpu)?
            .f_reshape([3, -1])?
            .f_mul_scalar(BINS as f64)?
            .f_floor()?
            .f_clamp(0.0, (BINS - 1) as f64)?
            .f_to_kind(Kind::Int64)?)
    }

    /// Add one noisy draw (1, 3, H, W) of the picture whose reference is `reference` (same
    /// size, both in [0, 1]).
    pub fn add(&mut self, reference: &Tensor, noisy: &Tensor) -> Result<()> {
        let idx = Self::bins(reference)?;
        let d = (noisy.f_to_device(tch::Device::Cpu)? - reference.f_to_device(tch::Device::Cpu)?)
            .f_reshape([3, -1])?
            .f_to_kind(Kind::Double)?;
        let ones = Tensor::ones_like(&d);
        self.sum = self.sum.f_scatter_add(1, &idx, &d)?;
        self.count = self.count.f_scatter_add(1, &idx, &ones)?;
        Ok(())
    }

    /// The mean bias of each channel and bin (3, BINS), 0 where a bin saw no pixel.
    pub fn means(&self) -> Result<Tensor> {
        Ok(self.sum.f_div(&self.count.f_clamp_min(1.0)?)?)
    }

    /// `reference` (1, 3, H, W) plus the bias of its pixels' bins, on its device and kind.
    pub fn correct(&self, reference: &Tensor) -> Result<Tensor> {
        let idx = Self::bins(reference)?;
        let bias = self
            .means()?
            .f_gather(1, &idx, false)?
            .f_reshape(reference.size())?
            .f_to_kind(reference.kind())?
            .f_to_device(reference.device())?;
        Ok(reference + bias)
    }
}

/// `target` corrected by the bias of `draws` noisy draws (each from `draw`) and clipped to
/// [0, 1], or unchanged when `draws` is 0.
pub fn unbiased_target(
    target: &Tensor,
    draws: usize,
    mut draw: impl FnMut() -> Result<Tensor>,
) -> Result<Tensor> {
    if draws == 0 {
        return Ok(target.shallow_clone());
    }
    let mut table = BiasTable::new();
    for _ in 0..draws {
        table.add(target, &draw()?)?;
    }
    Ok(table.correct(target)?.f_clamp(0.0, 1.0)?)
}

/// Frames to score or train against so that `noisy` (u8 (3, H, W) frames of one clip, as
/// delivered: after the camera, and the codec and colour conversions if any) is unbiased: each
/// clean frame (u8 (3, H, W)) plus the clip's mean of noisy - clean per channel and brightness
/// (over all its frames), as f32 on the 0..255 scale. Used by `eval-video` (the camera's gamma
/// and tone curve leave its noisy frames darker than the clean ones, and GStreamer's
/// YUV-to-RGB conversion darkens them by 2-4 levels more) and by the codec pool.
pub fn unbiased_frames(clean: &[Tensor], noisy: &[Tensor]) -> Result<Vec<Tensor>> {
    let unit =
        |t: &Tensor| -> Result<Tensor> { Ok(t.f_to_kind(Kind::Float)?.f_unsqueeze(0)? / 255.0) };
    let mut table = BiasTable::new();
    for (c, n) in clean.iter().zip(noisy) {
        table.add(&unit(c)?, &unit(n)?)?;
    }
    clean
        .iter()
        .map(|c| {
            Ok(table
                .correct(&unit(c)?)?
                .f_clamp(0.0, 1.0)?
                .f_mul_scalar(255.0)?
                .f_squeeze_dim(0)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn the_corrected_reference_has_the_draws_mean_in_every_bin() {
        // A ramp; "noisy" = a brightness-dependent darkening plus a constant per channel.
        let ramp = (Tensor::arange(4096, (Kind::Float, Device::Cpu)) / 4096.0).view([1, 1, 64, 64]);
        let reference = Tensor::cat(&[&ramp, &(&ramp * 0.5), &(&ramp * 0.25 + 0.5)], 1);
        let noisy = &reference - (&reference * (1.0 - &reference)) * 0.05 + 0.02;
        let mut t = BiasTable::new();
        t.add(&reference, &noisy).unwrap();
        let corrected = t.correct(&reference).unwrap();
        let mean_gap = (&noisy - &corrected).mean_dim(&[0i64, 2, 3][..], false, Kind::Double);
        assert!(
            mean_gap.abs().max().double_value(&[]) < 1e-6,
            "{mean_gap:?}"
        );
        // Within a bin the correction is constant, so the pixel error is below the bias'
        // change over one bin (8 levels).
        let err = (&noisy - &corrected).abs().max().double_value(&[]);
        assert!(err < 0.05 / BINS as f64 + 1e-6, "pixel error {err}");
        // Uncorrected, the mean gap is 0.02 - 0.05 mean(x (1 - x)) per channel: not zero.
        let before = (&noisy - &reference).mean_dim(&[0i64, 2, 3][..], false, Kind::Double);
        assert!(before.abs().min().double_value(&[]) > 5e-3, "{before:?}");
    }

    #[test]
    fn no_draws_leave_the_target_alone() {
        let x = Tensor::full([1, 3, 4, 4], 0.3, (Kind::Float, Device::Cpu));
        let y = unbiased_target(&x, 0, || unreachable!()).unwrap();
        assert!(y.equal(&x));
    }
}
