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
    let (r, mode, taps) = gaussian_taps(sigma, h, w);
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

/// [`gaussian_blur`]'s radius, border mode and normalised taps for a `h` x `w` plane.
fn gaussian_taps(sigma: f64, h: i64, w: i64) -> (i64, &'static str, Vec<f64>) {
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
    (r, mode, taps.iter().map(|t| t / s).collect())
}

/// [`gaussian_blur`] with a plain-Rust separable pass for float frames on the CPU (libtorch's
/// depthwise 1-D convolutions cost about 20 ms on a 640x360 frame on 2 cores; this about 2):
/// equal to it within float rounding (test). Other kinds and devices, and sides under 2 pixels,
/// go to [`gaussian_blur`].
pub fn gaussian_blur_fast(x: &Tensor, sigma: f64) -> Result<Tensor> {
    let size = x.size();
    if sigma <= 0.0
        || size.len() != 4
        || x.device() != tch::Device::Cpu
        || x.kind() != Kind::Float
        || size[2].min(size[3]) < 2
    {
        return gaussian_blur(x, sigma);
    }
    let (h, w) = (size[2] as usize, size[3] as usize);
    let (r, _, taps) = gaussian_taps(sigma, size[2], size[3]);
    let r = r as usize;
    let taps: Vec<f32> = taps.iter().map(|&t| t as f32).collect();
    // Reflect without repeating the edge, as tch's "reflect" pad.
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let i = if i < 0 { -i } else { i };
        (if i >= n { 2 * (n - 1) - i } else { i }) as usize
    };
    let data = Vec::<f32>::try_from(x.f_contiguous()?.f_view([-1])?)
        .map_err(|e| Error::Input(format!("gaussian blur: {e}")))?;
    let mut out = vec![0f32; data.len()];
    let mut rows = vec![0f32; h * w];
    let mut padded = vec![0f32; w + 2 * r];
    for (plane, dst) in data.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)) {
        // Horizontal pass into `rows`.
        for (src, row) in plane.chunks_exact(w).zip(rows.chunks_exact_mut(w)) {
            for (k, p) in padded.iter_mut().enumerate() {
                *p = src[reflect(k as isize - r as isize, w)];
            }
            // Tap by tap across the row (vectorises; a per-pixel sum over taps does not).
            row.fill(0.0);
            for (k, &t) in taps.iter().enumerate() {
                for (o, a) in row.iter_mut().zip(&padded[k..k + w]) {
                    *o += t * a;
                }
            }
        }
        // Vertical pass: whole rows at a time (vectorises across x).
        for (y, drow) in dst.chunks_exact_mut(w).enumerate() {
            for (k, &t) in taps.iter().enumerate() {
                let yy = reflect(y as isize + k as isize - r as isize, h);
                let srow = &rows[yy * w..(yy + 1) * w];
                for (d, s) in drow.iter_mut().zip(srow) {
                    *d += t * s;
                }
            }
        }
    }
    Ok(Tensor::f_from_slice(&out)?.f_view(size.as_slice())?)
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
    fn the_plain_rust_blur_equals_the_tch_one() {
        tch::manual_seed(7);
        for (h, w, sigma) in [(36, 64, 3.0), (5, 9, 3.0), (2, 40, 1.5), (50, 3, 6.0)] {
            let x = Tensor::rand([2, 3, h, w], (Kind::Float, Device::Cpu)) * 255.0;
            let a = gaussian_blur(&x, sigma).unwrap();
            let b = gaussian_blur_fast(&x, sigma).unwrap();
            assert_eq!(a.size(), b.size());
            let d = (a - b).abs().max().double_value(&[]);
            assert!(d < 1e-3, "{h}x{w} sigma {sigma}: differs by {d}");
        }
        // A 1-pixel side and other kinds take the tch path.
        let x = Tensor::rand([1, 3, 1, 9], (Kind::Float, Device::Cpu));
        let d = (gaussian_blur(&x, 3.0).unwrap() - gaussian_blur_fast(&x, 3.0).unwrap())
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(d, 0.0);
    }

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
