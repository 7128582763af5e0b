//! After the network: the low frequencies of its output `o` pulled towards those of the fused
//! input `f` it was given, pixel by pixel as far as the count `n` of frames the fusion averaged
//! there: `y = o + G((f - o) * (n - 1) / (n - 1 + W))`, `G` a Gaussian low-pass of [`SIGMA`]
//! pixels ([`crate::lowpass::gaussian_blur_fast`]). The network's result counts as [`W`] frames,
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
//! No latency (the counts are known before the network runs); tch ops on the frames' device,
//! the low-pass in plain Rust for float frames on the CPU (the same filter within float
//! rounding, deterministic, so segments still join into one pass).

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::lowpass::gaussian_blur_fast;

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
    let (o, f, n) = (
        out.f_to_kind(Kind::Float)?,
        fused.f_to_kind(Kind::Float)?,
        count.f_to_kind(Kind::Float)?,
    );
    let g = n.f_sub_scalar(1.0)?.f_div(&n.f_sub_scalar(1.0 - W)?)?;
    let pull = f.f_sub(&o)?.f_mul(&g)?;
    Ok(o.f_add(&gaussian_blur_fast(&pull, SIGMA)?)?)
}
