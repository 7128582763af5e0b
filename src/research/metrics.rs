//! Image quality metrics of the evaluation protocol (MODEL.md, "Evaluation protocol"):
//! PSNR and SSIM on RGB images on the 0..255 scale, computed in float64, no border crop.
//!
//! - PSNR: `10 log10(255^2 / MSE)`, the MSE over every pixel and channel of the image
//!   (infinite for identical images).
//! - SSIM: the MATLAB-style definition of Wang et al. as BasicSR's `calculate_ssim` computes it:
//!   an 11x11 Gaussian window (sigma 1.5, normalised to sum 1), local statistics over the
//!   'valid' region only (no padding: the map is (H-10) x (W-10)),
//!   `C1 = (0.01 * 255)^2`, `C2 = (0.03 * 255)^2`, the mean of the SSIM map per channel, then the
//!   mean over the channels.
//!
//! Both take tensors of any float (or integer) kind on any device; they are converted to f64 on
//! the CPU first. Layout: one image as (C, H, W) or (1, C, H, W), both arguments the same shape.

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// The peak value of the scale the protocol measures on.
pub const PEAK: f64 = 255.0;
/// Side of the SSIM Gaussian window.
pub const SSIM_WINDOW: usize = 11;
/// Standard deviation of the SSIM Gaussian window.
pub const SSIM_SIGMA: f64 = 1.5;

/// Mean squared error over all elements, in f64.
pub fn mse(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b, _) = as_f64_pair(a, b)?;
    let sum: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    Ok(sum / a.len() as f64)
}

/// PSNR in dB of two images on the 0..255 scale (`+inf` when they are identical).
pub fn psnr(a: &Tensor, b: &Tensor) -> Result<f64> {
    psnr_with_peak(a, b, PEAK)
}

/// PSNR in dB for images on a `0..peak` scale.
pub fn psnr_with_peak(a: &Tensor, b: &Tensor, peak: f64) -> Result<f64> {
    let m = mse(a, b)?;
    Ok(if m == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (peak * peak / m).log10()
    })
}

/// The normalised 1-D Gaussian of the SSIM window (OpenCV's `getGaussianKernel(11, 1.5)`); the
/// 2-D window is its outer product with itself.
pub fn gaussian_kernel(size: usize, sigma: f64) -> Vec<f64> {
    let c = (size - 1) as f64 * 0.5;
    let v: Vec<f64> = (0..size)
        .map(|i| (-(i as f64 - c).powi(2) / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = v.iter().sum();
    v.into_iter().map(|x| x / s).collect()
}

/// MATLAB-style SSIM of two images on the 0..255 scale, averaged over the channels.
pub fn ssim(a: &Tensor, b: &Tensor) -> Result<f64> {
    let v = ssim_per_channel(a, b)?;
    Ok(v.iter().sum::<f64>() / v.len() as f64)
}

/// MATLAB-style SSIM of each channel (the mean of its SSIM map).
pub fn ssim_per_channel(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    let (a, b, [c, h, w]) = as_f64_pair(a, b)?;
    if h < SSIM_WINDOW || w < SSIM_WINDOW {
        return Err(Error::Input(format!(
            "SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {h}x{w}"
        )));
    }
    let plane = h * w;
    Ok((0..c)
        .map(|k| {
            ssim_plane(
                &a[k * plane..(k + 1) * plane],
                &b[k * plane..(k + 1) * plane],
                h,
                w,
            )
        })
        .collect())
}

/// SSIM of one channel: the five local statistics by a separable 'valid' Gaussian filter
/// (horizontal pass into a buffer, vertical pass fused with the SSIM formula).
fn ssim_plane(a: &[f64], b: &[f64], h: usize, w: usize) -> f64 {
    let g = gaussian_kernel(SSIM_WINDOW, SSIM_SIGMA);
    let n = SSIM_WINDOW;
    let (ow, oh) = (w - n + 1, h - n + 1);
    let c1 = (0.01 * PEAK).powi(2);
    let c2 = (0.03 * PEAK).powi(2);
    // Horizontal pass: [mu_a, mu_b, E(a^2), E(b^2), E(ab)] per (row, valid column).
    let mut hz = vec![[0f64; 5]; h * ow];
    for y in 0..h {
        let (ra, rb) = (&a[y * w..(y + 1) * w], &b[y * w..(y + 1) * w]);
        for x in 0..ow {
            let mut s = [0f64; 5];
            for (t, gt) in g.iter().enumerate() {
                let (p, q) = (ra[x + t], rb[x + t]);
                s[0] += gt * p;
                s[1] += gt * q;
                s[2] += gt * (p * p);
                s[3] += gt * (q * q);
                s[4] += gt * (p * q);
            }
            hz[y * ow + x] = s;
        }
    }
    // Vertical pass and the SSIM map, summed.
    let mut total = 0f64;
    for y in 0..oh {
        for x in 0..ow {
            let mut s = [0f64; 5];
            for (t, gt) in g.iter().enumerate() {
                let v = &hz[(y + t) * ow + x];
                for (si, vi) in s.iter_mut().zip(v) {
                    *si += gt * vi;
                }
            }
            let (mu1, mu2) = (s[0], s[1]);
            let (mu1_sq, mu2_sq, mu12) = (mu1 * mu1, mu2 * mu2, mu1 * mu2);
            let (s1, s2, s12) = (s[2] - mu1_sq, s[3] - mu2_sq, s[4] - mu12);
            total +=
                ((2.0 * mu12 + c1) * (2.0 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2));
        }
    }
    total / (oh * ow) as f64
}

/// Both images as CHW f64 vectors, after checking they have the same shape.
fn as_f64_pair(a: &Tensor, b: &Tensor) -> Result<(Vec<f64>, Vec<f64>, [usize; 3])> {
    let (sa, sb) = (a.size(), b.size());
    if sa != sb {
        return Err(Error::Input(format!(
            "metric inputs differ in shape: {sa:?} vs {sb:?}"
        )));
    }
    let chw = match sa.as_slice() {
        [c, h, w] | [1, c, h, w] => [*c as usize, *h as usize, *w as usize],
        _ => {
            return Err(Error::Input(format!(
                "metrics take one image as (C, H, W) or (1, C, H, W), got {sa:?}"
            )))
        }
    };
    let n = chw.iter().product::<usize>();
    let conv = |t: &Tensor| -> Result<Vec<f64>> {
        let t = t
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Double)?
            .contiguous();
        let mut v = vec![0f64; n];
        t.f_copy_data(&mut v, n)?;
        Ok(v)
    };
    Ok((conv(a)?, conv(b)?, chw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_is_normalised_and_symmetric() {
        let g = gaussian_kernel(11, 1.5);
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        for i in 0..5 {
            assert_eq!(g[i], g[10 - i]);
        }
        assert!(g[5] > g[4]);
    }

    #[test]
    fn identical_images() {
        let x = Tensor::rand([3, 20, 24], (Kind::Float, Device::Cpu)) * 255.0;
        assert_eq!(psnr(&x, &x).unwrap(), f64::INFINITY);
        assert!((ssim(&x, &x).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn psnr_of_a_constant_offset() {
        let x = Tensor::zeros([1, 3, 16, 16], (Kind::Float, Device::Cpu));
        let y = &x + 5.0;
        let expect = 10.0 * (255f64.powi(2) / 25.0).log10();
        assert!((psnr(&x, &y).unwrap() - expect).abs() < 1e-12);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = Tensor::zeros([3, 8, 8], (Kind::Float, Device::Cpu));
        let y = Tensor::zeros([3, 8, 9], (Kind::Float, Device::Cpu));
        assert!(psnr(&x, &y).is_err());
        assert!(ssim(&x, &x).unwrap_err().to_string().contains("11x11"));
        let z = Tensor::zeros([2, 3, 16, 16], (Kind::Float, Device::Cpu));
        assert!(psnr(&z, &z).is_err());
    }
}
