//! Per-channel noise level of one frame, without a clean reference (issue 23, the noise cue):
//! the median absolute diagonal Haar detail (HH) of each channel over 0.6745 (Donoho and
//! Johnstone's wavelet MAD estimator). For white Gaussian noise of standard deviation s the
//! HH coefficients (a - b - c + d) / 2 of 2x2 blocks have standard deviation s, and image
//! content barely reaches that band, so the median of their magnitudes tracks the noise; noise
//! that is spatially correlated (camera processing, 4:2:0, JPEG) has less energy there and is
//! underestimated. weights/README.md gives the error against the real pairs' true noise.

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Median |HH| / 0.6745 for a standard normal.
const MAD_TO_SIGMA: f64 = 0.6745;

/// The estimated noise standard deviation of each channel of `x` (N, C, H, W), on `x`'s scale
/// (pass 0..255 values for levels of 255), over the whole batch. Sides of at least 2.
pub fn estimate_sigma(x: &Tensor) -> Result<Vec<f64>> {
    let size = x.size();
    if size.len() != 4 || size[2] < 2 || size[3] < 2 {
        return Err(Error::Input(format!(
            "noise level: expected (N, C, H >= 2, W >= 2), got {size:?}"
        )));
    }
    let (c, h, w) = (size[1], size[2] / 2 * 2, size[3] / 2 * 2);
    let x = x
        .f_to_kind(Kind::Double)?
        .f_narrow(2, 0, h)?
        .f_narrow(3, 0, w)?;
    let px =
        |dy: i64, dx: i64| -> Result<Tensor> { Ok(x.f_slice(2, dy, h, 2)?.f_slice(3, dx, w, 2)?) };
    let hh = (px(0, 0)? - px(0, 1)? - px(1, 0)? + px(1, 1)?) / 2.0;
    let per_channel = hh.f_abs()?.f_transpose(0, 1)?.f_reshape([c, -1])?;
    let (median, _) = per_channel.f_median_dim(1, false)?;
    let v = Vec::<f64>::try_from(median.f_to_device(tch::Device::Cpu)?)?;
    Ok(v.into_iter().map(|m| m / MAD_TO_SIGMA).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn white_noise_is_measured_per_channel_on_a_smooth_picture() {
        tch::manual_seed(4);
        let (h, w) = (128, 160);
        let ramp = Tensor::linspace(0.0, 200.0, w, (Kind::Double, Device::Cpu)).view([1, 1, 1, w]);
        let clean = ramp.expand([1, 3, h, w], false) + 20.0;
        let sigmas = Tensor::from_slice(&[2.0f64, 8.0, 20.0]).view([1, 3, 1, 1]);
        let noisy = &clean + Tensor::randn([1, 3, h, w], (Kind::Double, Device::Cpu)) * &sigmas;
        let est = estimate_sigma(&noisy).unwrap();
        for (e, s) in est.iter().zip([2.0, 8.0, 20.0]) {
            assert!((e / s - 1.0).abs() < 0.08, "{est:?}");
        }
        // Clean in: next to nothing.
        assert!(estimate_sigma(&clean).unwrap().iter().all(|e| *e < 0.05));
        assert!(estimate_sigma(&Tensor::zeros([1, 3, 1, 5], (Kind::Double, Device::Cpu))).is_err());
    }
}
