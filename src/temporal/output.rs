//! After the network: the low frequencies of its output `o` pulled towards those of the fused
//! input `f` it was given, pixel by pixel as far as the count `n` of frames the fusion averaged
//! there: `y = o + G((f - o) * (n - 1) / (n - 1 + W))`, `G` a Gaussian low-pass of [`SIGMA`]
//! pixels ([`crate::lowpass::gaussian_blur`]). The network's result counts as [`W`] frames,
//! the other `n - 1` frames of the fused input as theirs, at scales above a few pixels only.
//!
//! Why: on compressed video the network moves local levels and removes detail the codec kept
//! (against the unbiased reference, issue 23, the per-frame result is no better than the
//! decoded frame at CRF 28), while the fused input has lost its independent noise in
//! proportion to `n`. Below the low-pass's scale the fused input still holds noise the
//! network removed, so that band stays the network's: the same blend without `G` gained half
//! as much and lost SSIM and temporal stability (weights/README.md, issue 22). Where nothing
//! was fused (`n = 1`: motion, an uncovered area, a cut, the first frame) the weight is 0, so
//! only the blur's reach (3 [`SIGMA`]) of neighbouring fused pixels moves the output there.
//!
//! No latency (the counts are known before the network runs). On the CPU all of it in plain
//! Rust ([`blend_cpu`]: one pass for the pull, the low-pass, one pass for the sum, reading the
//! network's output in its own layout and writing the result in it), the same numbers bit for
//! bit as the tch ops ([`blend_ops`], the path for CUDA frames); the low-pass equals
//! libtorch's convolutions within float rounding, deterministic, so segments still join into
//! one pass.

use tch::{Device, Kind, Tensor};

use super::cpu::tensors::{floats, slice};
use crate::error::{Error, Result};
use crate::lowpass::{blur_planes, gaussian_blur};

/// The low-pass's standard deviation, in pixels (1.5, 3 and 6 measured: 3 the best at CRF 23
/// and 28, weights/README.md).
pub const SIGMA: f64 = 3.0;

/// What the network's output weighs in the low band, in frames of the fused input (1, 0.5 and
/// 0.25 measured: 0.5 kept, weights/README.md, issue 22 session 11: its low band carries the
/// level shift the model adds, which no frame of the input has).
pub const W: f64 = 0.5;

/// `out` (the network's output, `[N, 3, H, W]`) and `fused` (its input, same size) with the
/// per-pixel counts `count` (`[N, 1, H, W]`, >= 1): `out + G((fused - out) * (count - 1) /
/// (count - 1 + W))`, in float, not clamped.
pub fn blend(out: &Tensor, fused: &Tensor, count: &Tensor) -> Result<Tensor> {
    let (s, c) = (out.size(), count.size());
    if s.len() != 4
        || fused.size() != s
        || c.len() != 4
        || c[1] != 1
        || c[0] != s[0]
        || c[2..] != s[2..]
    {
        return Err(Error::Input(format!(
            "temporal output blend: output {s:?}, fused input {:?}, counts {c:?}",
            fused.size()
        )));
    }
    let cpu = [out, fused, count]
        .iter()
        .all(|t| t.device() == Device::Cpu);
    if cpu && s[0] >= 1 && s[1] == 3 && s[2].min(s[3]) >= 2 {
        return blend_cpu(out, fused, count);
    }
    blend_ops(out, fused, count)
}

/// [`blend`] in tch ops (the path for CUDA tensors, and the reference of [`blend_cpu`]).
pub fn blend_ops(out: &Tensor, fused: &Tensor, count: &Tensor) -> Result<Tensor> {
    let (o, f, n) = (
        out.f_to_kind(Kind::Float)?,
        fused.f_to_kind(Kind::Float)?,
        count.f_to_kind(Kind::Float)?,
    );
    let g = n.f_sub_scalar(1.0)?.f_div(&n.f_sub_scalar(1.0 - W)?)?;
    let pull = f.f_sub(&o)?.f_mul(&g)?;
    Ok(o.f_add(&gaussian_blur(&pull, SIGMA)?)?)
}

/// [`blend`] on CPU tensors in plain Rust, the arithmetic of [`blend_ops`] value for value
/// (`g = (n - 1) / (n - (1 - W))`, `(f - o) * g`, the low-pass, `o + that`). `out` is read
/// where it lies, in any layout (the network's is channels-last, cropped from its padded
/// frame: a copy to a contiguous tensor cost more than the blend), and the result has `out`'s
/// layout
/// (channels-last where `out`'s channels are its innermost dimension, else contiguous), so the
/// conversion to packed frames after it takes the same path as without the blend.
pub fn blend_cpu(out: &Tensor, fused: &Tensor, count: &Tensor) -> Result<Tensor> {
    let o = out.f_to_kind(Kind::Float)?;
    let (f, n) = (floats(fused)?, floats(count)?);
    let size = o.size();
    let (nb, h, w) = (size[0] as usize, size[2] as usize, size[3] as usize);
    let hw = h * w;
    let st: Vec<usize> = o.stride().iter().map(|&s| s as usize).collect();
    let len = 1 + size
        .iter()
        .zip(&st)
        .map(|(&n, &s)| (n as usize - 1) * s)
        .sum::<usize>();
    // SAFETY: a CPU float tensor with non-negative strides (tch's) holds its element
    // `(b, c, y, x)` at `data_ptr + b*st0 + c*st1 + y*st2 + x*st3`, all below `len`; `o` keeps
    // the storage alive and is not written while the slice lives.
    let od = unsafe { std::slice::from_raw_parts(o.data_ptr() as *const f32, len) };
    let (f, n) = (slice(&f), slice(&n));
    let channels_last = st[1] == 1;
    let mut result = vec![0f32; nb * 3 * hw];
    let mut pull = vec![0f32; 3 * hw];
    let w0 = (1.0 - W) as f32;
    for b in 0..nb {
        let (fb, nb_) = (&f[b * 3 * hw..(b + 1) * 3 * hw], &n[b * hw..(b + 1) * hw]);
        for ch in 0..3 {
            for y in 0..h {
                let row = b * st[0] + ch * st[1] + y * st[2];
                let i = y * w;
                let (p, fr, nr) = (
                    &mut pull[ch * hw + i..ch * hw + i + w],
                    &fb[ch * hw + i..ch * hw + i + w],
                    &nb_[i..i + w],
                );
                for x in 0..w {
                    let g = (nr[x] - 1.0) / (nr[x] - w0);
                    p[x] = (fr[x] - od[row + x * st[3]]) * g;
                }
            }
        }
        let low = blur_planes(&pull, h, w, SIGMA);
        let dst = &mut result[b * 3 * hw..(b + 1) * 3 * hw];
        for ch in 0..3 {
            for y in 0..h {
                let row = b * st[0] + ch * st[1] + y * st[2];
                let l = &low[ch * hw + y * w..ch * hw + (y + 1) * w];
                for x in 0..w {
                    let v = od[row + x * st[3]] + l[x];
                    match channels_last {
                        true => dst[(y * w + x) * 3 + ch] = v,
                        false => dst[ch * hw + y * w + x] = v,
                    }
                }
            }
        }
    }
    let (nb, h, w) = (nb as i64, h as i64, w as i64);
    Ok(match channels_last {
        true => Tensor::f_from_slice(&result)?
            .f_view([nb, h, w, 3])?
            .f_permute([0, 3, 1, 2])?,
        false => Tensor::f_from_slice(&result)?.f_view([nb, 3, h, w])?,
    })
}
