//! Gaussian low-pass of (N, C, H, W) tensors on their own device and in their own kind, and
//! the mean-preserving post-step built on it: the denoised frame's low frequencies replaced by
//! the input's ([`keep_input_lowpass`]), so that a model cannot move a picture's brightness or
//! colour (issue 23). The camera noise model's blurs ([`crate::research::camera_ops`]) and the
//! evaluation's low-pass shift use the same filter.

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Separable Gaussian blur per channel, reflect borders, radius 3 sigma (at most the shorter
/// side less one; a side of one pixel replicates). `sigma <= 0` returns `x`.
pub fn gaussian_blur(x: &Tensor, sigma: f64) -> Result<Tensor> {
    if sigma <= 0.0 {
        return Ok(x.shallow_clone());
    }
    let size = x.size();
    if size.len() != 4 {
        return Err(Error::Input(format!(
            "gaussian blur: expected (N, C, H, W), got {size:?}"
        )));
    }
    let (c, h, w) = (size[1], size[2], size[3]);
    let full = (3.0 * sigma).ceil() as i64;
    let (r, mode) = if h.min(w) >= 2 {
        (full.clamp(1, h.min(w) - 1), "reflect")
    } else {
        (full.max(1), "replicate")
    };
    let taps: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = taps.iter().sum();
    let taps: Vec<f64> = taps.iter().map(|t| t / s).collect();
    let n = taps.len() as i64;
    let kh = Tensor::f_from_slice(&taps)?
        .f_to_kind(x.kind())?
        .f_to_device(x.device())?
        .f_view([1, 1, 1, n])?
        .f_repeat([c, 1, 1, 1])?;
    let kv = kh.f_view([c, 1, n, 1])?;
    let x = x.f_pad([r, r, 0, 0], mode, None)?.f_conv2d(
        &kh,
        None::<Tensor>,
        [1, 1],
        [0, 0],
        [1, 1],
        c,
    )?;
    Ok(x.f_pad([0, 0, r, r], mode, None)?.f_conv2d(
        &kv,
        None::<Tensor>,
        [1, 1],
        [0, 0],
        [1, 1],
        c,
    )?)
}

/// `out` with its low-pass (Gaussian `sigma`) replaced by `input`'s: `out - G(out - input)`.
/// What the model changed at scales above `sigma` (a brightness or colour shift) is undone;
/// its detail and noise removal below that scale are kept. Computed in f32 on `out`'s device;
/// not clamped.
pub fn keep_input_lowpass(out: &Tensor, input: &Tensor, sigma: f64) -> Result<Tensor> {
    if out.size() != input.size() {
        return Err(Error::Input(format!(
            "keep_input_lowpass: output {:?} and input {:?} differ",
            out.size(),
            input.size()
        )));
    }
    let out = out.f_to_kind(Kind::Float)?;
    let input = input.f_to_device(out.device())?.f_to_kind(Kind::Float)?;
    let shift = gaussian_blur(&(&out - &input), sigma)?;
    Ok(out - shift)
}

/// A `keep_input_lowpass` setting as users write it: a sigma in pixels (> 0), or `off`.
pub fn parse_setting(s: &str) -> Result<Option<f64>> {
    if s == "off" {
        return Ok(None);
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1024.0 => Ok(Some(v)),
        _ => Err(Error::Input(format!(
            "'{s}': expected a low-pass sigma in (0, 1024] pixels, or off"
        ))),
    }
}

/// Per channel, the output's shift against its input on the 0..255 scale: the signed mean
/// over the image (`mean`) and the mean absolute low-pass shift `mean |G_sigma(out - input)|`
/// (`lowpass`), averaged over the batch. `out` and `input` are (N, 3, H, W) on the 0..1 scale.
pub fn shift_255(out: &Tensor, input: &Tensor, sigma: f64) -> Result<([f64; 3], [f64; 3])> {
    let out = out.f_to_kind(Kind::Double)?;
    let input = input.f_to_device(out.device())?.f_to_kind(Kind::Double)?;
    let d = (&out - &input) * 255.0;
    let mean = d.f_mean_dim([0i64, 2, 3].as_slice(), false, Kind::Double)?;
    let low = gaussian_blur(&d, sigma)?.f_abs()?.f_mean_dim(
        [0i64, 2, 3].as_slice(),
        false,
        Kind::Double,
    )?;
    let get = |t: &Tensor| -> Result<[f64; 3]> {
        let v = Vec::<f64>::try_from(t.f_to_device(tch::Device::Cpu)?)?;
        v.try_into()
            .map_err(|v: Vec<f64>| Error::Input(format!("expected 3 channels, got {}", v.len())))
    };
    Ok((get(&mean)?, get(&low)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn settings_parse() {
        assert_eq!(parse_setting("off").unwrap(), None);
        assert_eq!(parse_setting("12").unwrap(), Some(12.0));
        for bad in ["0", "-3", "nan", "x", "2000"] {
            assert!(parse_setting(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn blur_keeps_constants_and_the_mean_and_smooths() {
        tch::manual_seed(1);
        let x = Tensor::rand([2, 3, 40, 57], (Kind::Float, Device::Cpu));
        let b = gaussian_blur(&x, 4.0).unwrap();
        assert_eq!(b.size(), x.size());
        let (sx, sb) = (x.std(true).double_value(&[]), b.std(true).double_value(&[]));
        assert!(sb < sx / 4.0, "not smoothed: {sx} -> {sb}");
        let c = Tensor::full([1, 3, 1, 9], 0.25, (Kind::Double, Device::Cpu));
        let bc = gaussian_blur(&c, 16.0).unwrap();
        assert!((bc - 0.25).abs().max().double_value(&[]) < 1e-12);
    }

    #[test]
    fn keeping_the_input_lowpass_undoes_a_shift_and_keeps_detail() {
        tch::manual_seed(2);
        let input = Tensor::rand([1, 3, 64, 48], (Kind::Float, Device::Cpu));
        let detail = Tensor::rand([1, 3, 64, 48], (Kind::Float, Device::Cpu)) * 0.1;
        let shifted = &input + &detail + 0.03;
        let kept = keep_input_lowpass(&shifted, &input, 8.0).unwrap();
        let (mean, low) = shift_255(&kept, &input, 8.0).unwrap();
        let (mean0, _) = shift_255(&shifted, &input, 8.0).unwrap();
        for c in 0..3 {
            assert!(
                (mean0[c] - 0.03 * 255.0 - 0.05 * 255.0).abs() < 0.5,
                "{mean0:?}"
            );
            assert!(mean[c].abs() < 0.3, "mean shift left: {mean:?}");
            assert!(low[c] < 0.3, "low-pass shift left: {low:?}");
        }
        // What is left of the change is exactly its part above the low-pass.
        let want = &detail - gaussian_blur(&detail, 8.0).unwrap();
        assert!(((&kept - &input) - want).abs().max().double_value(&[]) < 1e-5);
    }
}
