//! Gaussian low-pass of (N, C, H, W) tensors on their own device and in their own kind, and
//! the mean-preserving post-step built on it: the denoised frame's low frequencies replaced by
//! the input's ([`keep_input_lowpass`]), so that a model cannot move a picture's brightness or
//! colour (issue 23). The camera noise model's blurs ([`crate::research::camera_ops`]) and the
//! evaluation's low-pass shift use the same filter (in plain Rust for CPU float frames,
//! [`gaussian_blur`]).

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Separable Gaussian blur per channel, reflect borders, radius 3 sigma (at most the shorter
/// side less one; a side of one pixel replicates). `sigma <= 0` returns `x`.
///
/// Float and double tensors on the CPU with both sides of at least 2 pixels go through a
/// plain-Rust separable pass ([`blur_planes`]; libtorch's depthwise 1-D convolutions cost
/// about 20 ms on a 640x360 frame on 2 cores, this about 2), equal to libtorch's within float
/// rounding (below 1e-3 of 255 in f32: test); other kinds and devices (CUDA) take libtorch's
/// ops, [`gaussian_blur_ops`].
pub fn gaussian_blur(x: &Tensor, sigma: f64) -> Result<Tensor> {
    let size = x.size();
    if sigma <= 0.0 || size.len() != 4 || x.device() != tch::Device::Cpu || size[2].min(size[3]) < 2
    {
        return gaussian_blur_ops(x, sigma);
    }
    let (h, w) = (size[2] as usize, size[3] as usize);
    match x.kind() {
        Kind::Float => {
            let data = Vec::<f32>::try_from(x.f_contiguous()?.f_view([-1])?)?;
            Ok(Tensor::f_from_slice(&blur_planes(&data, h, w, sigma))?.f_view(size.as_slice())?)
        }
        Kind::Double => {
            let data = Vec::<f64>::try_from(x.f_contiguous()?.f_view([-1])?)?;
            Ok(Tensor::f_from_slice(&blur_planes(&data, h, w, sigma))?.f_view(size.as_slice())?)
        }
        _ => gaussian_blur_ops(x, sigma),
    }
}

/// [`gaussian_blur`] in libtorch's ops on the tensor's device and in its kind (the path for
/// CUDA tensors and other kinds, and the reference of the plain-Rust one).
pub fn gaussian_blur_ops(x: &Tensor, sigma: f64) -> Result<Tensor> {
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

/// A sample type [`blur_planes`] works in (f32, f64): the taps in it, and its arithmetic.
pub trait Sample:
    Copy + Default + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> + std::ops::AddAssign
{
    fn from_f64(v: f64) -> Self;
}

impl Sample for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Sample for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// [`gaussian_blur`] on row-major `h` x `w` planes one after the other (`data.len()` a
/// multiple of `h * w`, both sides at least 2 pixels): the plain-Rust pass, horizontal then
/// vertical, reflect borders, in `T`.
///
/// On x86-64 CPUs with AVX2 the same loops compiled for it (twice the SIMD width of the
/// baseline SSE2; no fused multiply-adds, so the same numbers bit for bit).
pub fn blur_planes<T: Sample>(data: &[T], h: usize, w: usize, sigma: f64) -> Vec<T> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { blur_planes_avx2(data, h, w, sigma) };
    }
    blur_planes_generic(data, h, w, sigma)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn blur_planes_avx2<T: Sample>(data: &[T], h: usize, w: usize, sigma: f64) -> Vec<T> {
    blur_planes_generic(data, h, w, sigma)
}

#[inline(always)]
fn blur_planes_generic<T: Sample>(data: &[T], h: usize, w: usize, sigma: f64) -> Vec<T> {
    debug_assert!(h >= 2 && w >= 2 && data.len() % (h * w) == 0);
    let (r, _, taps) = gaussian_taps(sigma, h as i64, w as i64);
    let r = r as usize;
    let taps: Vec<T> = taps.iter().map(|&t| T::from_f64(t)).collect();
    // Reflect without repeating the edge, as tch's "reflect" pad.
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let i = if i < 0 { -i } else { i };
        (if i >= n { 2 * (n - 1) - i } else { i }) as usize
    };
    let mut out = vec![T::default(); data.len()];
    let mut rows = vec![T::default(); h * w];
    let mut padded = vec![T::default(); w + 2 * r];
    for (plane, dst) in data.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)) {
        // Horizontal pass into `rows`.
        for (src, row) in plane.chunks_exact(w).zip(rows.chunks_exact_mut(w)) {
            for (k, p) in padded.iter_mut().enumerate() {
                *p = src[reflect(k as isize - r as isize, w)];
            }
            let windows: Vec<&[T]> = (0..taps.len()).map(|k| &padded[k..k + w]).collect();
            taps_sum(&taps, &windows, row);
        }
        // Vertical pass: whole rows at a time.
        let mut src_rows: Vec<&[T]> = Vec::with_capacity(taps.len());
        for (y, drow) in dst.chunks_exact_mut(w).enumerate() {
            src_rows.clear();
            src_rows.extend((0..taps.len()).map(|k| {
                let yy = reflect(y as isize + k as isize - r as isize, h);
                &rows[yy * w..(yy + 1) * w]
            }));
            taps_sum(&taps, &src_rows, drow);
        }
    }
    out
}

/// `dst[x] = sum over k of taps[k] * srcs[k][x]`, summed from 0 in the order of `k` (so each
/// value is the same whatever the SIMD width), a block of [`LANES`] outputs at a time held in
/// registers across the taps (not written back once per tap).
#[inline(always)]
fn taps_sum<T: Sample>(taps: &[T], srcs: &[&[T]], dst: &mut [T]) {
    const LANES: usize = 32;
    let w = dst.len();
    let mut x = 0;
    while x + LANES <= w {
        let mut acc = [T::default(); LANES];
        for (&t, s) in taps.iter().zip(srcs) {
            let s: &[T; LANES] = s[x..x + LANES].try_into().unwrap();
            for (a, &v) in acc.iter_mut().zip(s) {
                *a += t * v;
            }
        }
        dst[x..x + LANES].copy_from_slice(&acc);
        x += LANES;
    }
    for (i, d) in dst.iter_mut().enumerate().skip(x) {
        let mut a = T::default();
        for (&t, s) in taps.iter().zip(srcs) {
            a += t * s[i];
        }
        *d = a;
    }
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
            // A channels-last view too (the network's output layout).
            for x in [
                x.shallow_clone(),
                x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]),
            ] {
                let a = gaussian_blur_ops(&x, sigma).unwrap();
                let b = gaussian_blur(&x, sigma).unwrap();
                assert_eq!(a.size(), b.size());
                let d = (a - b).abs().max().double_value(&[]);
                assert!(d < 1e-3, "{h}x{w} sigma {sigma}: differs by {d}");
            }
            let x = x.to_kind(Kind::Double);
            let (a, b) = (
                gaussian_blur_ops(&x, sigma).unwrap(),
                gaussian_blur(&x, sigma).unwrap(),
            );
            assert_eq!(b.kind(), Kind::Double);
            let d = (a - b).abs().max().double_value(&[]);
            assert!(d < 1e-9, "{h}x{w} sigma {sigma} in f64: differs by {d}");
        }
        // A 1-pixel side and other kinds take the tch path.
        let x = Tensor::rand([1, 3, 1, 9], (Kind::Float, Device::Cpu));
        let d = (gaussian_blur(&x, 3.0).unwrap() - gaussian_blur_ops(&x, 3.0).unwrap())
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(d, 0.0);
        let x = Tensor::rand([1, 3, 8, 9], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
        let (a, b) = (
            gaussian_blur(&x, 3.0).unwrap(),
            gaussian_blur_ops(&x, 3.0).unwrap(),
        );
        assert_eq!(a.kind(), Kind::BFloat16);
        assert!(a.equal(&b));
    }

    /// The plain-Rust pass written the simplest way: each value summed from 0 over the taps in
    /// order, horizontal then vertical.
    fn reference_blur(x: &[f32], h: usize, w: usize, sigma: f64) -> Vec<f32> {
        let (r, _, taps) = gaussian_taps(sigma, h as i64, w as i64);
        let taps: Vec<f32> = taps.iter().map(|&t| t as f32).collect();
        let refl = |i: i64, n: usize| -> usize {
            let i = i.abs();
            (if i >= n as i64 {
                2 * (n as i64 - 1) - i
            } else {
                i
            }) as usize
        };
        let mut out = vec![0f32; x.len()];
        for (p, o) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)) {
            let mut rows = vec![0f32; h * w];
            for y in 0..h {
                for i in 0..w {
                    let mut a = 0f32;
                    for (k, &t) in taps.iter().enumerate() {
                        a += t * p[y * w + refl(i as i64 + k as i64 - r, w)];
                    }
                    rows[y * w + i] = a;
                }
            }
            for y in 0..h {
                for i in 0..w {
                    let mut a = 0f32;
                    for (k, &t) in taps.iter().enumerate() {
                        a += t * rows[refl(y as i64 + k as i64 - r, h) * w + i];
                    }
                    o[y * w + i] = a;
                }
            }
        }
        out
    }

    #[test]
    fn the_blur_blocks_and_simd_width_change_no_value() {
        // Widths around the 32-value blocks; the temporal output blend's numbers rest on
        // this (bit for bit those of the tap-by-tap loop it replaced).
        tch::manual_seed(8);
        for (h, w, sigma) in [
            (36usize, 64usize, 3.0),
            (7, 31, 3.0),
            (19, 97, 1.5),
            (360, 33, 6.0),
        ] {
            let x = Tensor::rand([(2 * 3 * h * w) as i64], (Kind::Float, Device::Cpu)) * 255.0;
            let x = Vec::<f32>::try_from(x).unwrap();
            let (a, b) = (
                blur_planes(&x, h, w, sigma),
                reference_blur(&x, h, w, sigma),
            );
            assert!(a == b, "{h}x{w} sigma {sigma}");
            assert!(
                blur_planes_generic(&x, h, w, sigma) == b,
                "{h}x{w} sigma {sigma}"
            );
        }
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
