//! Pixel-shuffle sub-sampling: a frame as its four half-size sub-images (every other pixel,
//! at the four phases of a 2x2 grid), and back.
//!
//! Spatially correlated noise (coarse low-light grain after demosaicking and in-camera noise
//! reduction) is less correlated between pixels two apart: in a sub-image it looks closer to
//! the fine grain the network removes well (Zhou et al., "When AWGN-based denoiser meets real
//! noises", AAAI 2020). The coarse-grain mode ([`crate::inference::Options::coarse_grain`])
//! denoises the sub-images, puts them back together and denoises the result once more.

use tch::Tensor;

use crate::error::Result;
use crate::pad::pad_to_multiple;

/// `(N, C, H, W)` to `(4N, C, ceil(H/2), ceil(W/2))`: for each frame its sub-images at phases
/// (0,0), (0,1), (1,0), (1,1). Odd sides are reflect-padded by one first.
pub fn split(x: &Tensor) -> Result<Tensor> {
    let x = pad_to_multiple(x, 2)?;
    let [n, c, h, w] = dims(&x);
    Ok(x.f_reshape([n, c, h / 2, 2, w / 2, 2])?
        .f_permute([0, 3, 5, 1, 2, 4])?
        .f_reshape([n * 4, c, h / 2, w / 2])?)
}

/// The inverse of [`split`]: `(4N, C, h, w)` back to `(N, C, height, width)`, cropping the
/// padding of odd sides.
pub fn merge(y: &Tensor, height: i64, width: i64) -> Result<Tensor> {
    let [n4, c, h, w] = dims(y);
    let n = n4 / 4;
    Ok(y.f_reshape([n, 2, 2, c, h, w])?
        .f_permute([0, 3, 4, 1, 5, 2])?
        .f_reshape([n, c, h * 2, w * 2])?
        .f_narrow(2, 0, height)?
        .f_narrow(3, 0, width)?)
}

/// Which pass of [`two_passes`] a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The four sub-images of each frame.
    SubImages,
    /// The frames put back together from the first pass's output.
    Merged,
}

/// The coarse-grain pipeline around one pass of a network: `pass` on the sub-images of the
/// `(N, C, H, W)` batch `x`, then on their merge. `pass` takes a batch of any size and returns
/// one of the same size (inference, training and validation each bring their own).
pub fn two_passes(
    x: &Tensor,
    mut pass: impl FnMut(&Tensor, Pass) -> Result<Tensor>,
) -> Result<Tensor> {
    let [_, _, h, w] = dims(x);
    let first = pass(&split(x)?, Pass::SubImages)?;
    pass(&merge(&first, h, w)?, Pass::Merged)
}

fn dims(x: &Tensor) -> [i64; 4] {
    let s = x.size();
    [s[0], s[1], s[2], s[3]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn split_takes_every_other_pixel_and_merge_puts_them_back() {
        for (h, w) in [(4, 6), (5, 7), (1, 1), (2, 3)] {
            let x = Tensor::arange(2 * 3 * h * w, (Kind::Float, Device::Cpu)).reshape([2, 3, h, w]);
            let s = split(&x).unwrap();
            let (hh, ww) = ((h + 1) / 2, (w + 1) / 2);
            assert_eq!(s.size(), [8, 3, hh, ww]);
            // Frame 1, phase (1, 0), channel 2, sub-pixel (0, 0) is pixel (1, 0) of frame 1.
            if h > 1 {
                let want = x.double_value(&[1, 2, 1, 0]);
                assert_eq!(s.double_value(&[4 + 2, 2, 0, 0]), want, "{h}x{w}");
            }
            let back = merge(&s, h, w).unwrap();
            assert!(back.equal(&x), "{h}x{w}: not the input");
        }
    }
}
