//! Offline mode: every frame also sees up to `lookahead` later frames.
//!
//! The forward recursion (the causal filter) runs as frames arrive. For each frame, a backward
//! recursion (the same filter, started afresh on the last frame of its window and run back to
//! the frame) gives the future's estimate of it, and the two are combined by their per-pixel
//! counts, the frame itself counted once: `(f * nf + b * nb - y) / (nf + nb - 1)`. Where the
//! future does not match (motion, occlusion, a cut) `nb` is 1 and the frame is the causal
//! result; where the past does not, the future's alone. Work: `lookahead + 1` motion searches
//! per frame, the forward and the backward recursion on two threads where the frames are on
//! the CPU ([`super::TemporalFilter::prepare_window`]); memory: the `lookahead` frames the
//! engine holds.

use tch::Tensor;

use super::cpu::{
    self,
    tensors::{empty, floats, on_cpu, slice, slice_mut},
};
use super::Recursion;
use crate::error::Result;

/// The backward recursion over `window` (frames `[1, 3, H, W]`, display order), from its
/// last frame back to its first: the first frame's estimate from the frames after it, and its
/// counts.
pub fn backward(window: &[Tensor], cap: f64) -> Result<(Tensor, Tensor)> {
    let mut r = Recursion::default();
    let mut last = None;
    for frame in window.iter().rev() {
        last = Some(r.step(frame, cap)?);
    }
    last.ok_or_else(|| crate::Error::Input("an empty temporal window".into()))
}

/// The forward estimate `f` (count `nf`) and the backward one `b` (count `nb`) of the frame
/// `y`, which both include once: `(f * nf + b * nb - y) / (nf + nb - 1)`.
pub fn combine(y: &Tensor, f: &Tensor, nf: &Tensor, b: &Tensor, nb: &Tensor) -> Result<Tensor> {
    Ok(combine_counted(y, f, nf, b, nb)?.0)
}

/// [`combine`] and the combined count `nf + nb - 1`, on the CPU in one pass.
pub fn combine_counted(
    y: &Tensor,
    f: &Tensor,
    nf: &Tensor,
    b: &Tensor,
    nb: &Tensor,
) -> Result<(Tensor, Tensor)> {
    if on_cpu(&[y, f, nf, b, nb])
        && y.dim() == 4
        && y.size()[..2] == [1, 3]
        && nf.size() == nb.size()
        && nf.size() == [1, 1, y.size()[2], y.size()[3]]
    {
        let (y, f, nf, b, nb) = (floats(y)?, floats(f)?, floats(nf)?, floats(b)?, floats(nb)?);
        let (mut out, mut count) = (empty(&y.size())?, empty(&nf.size())?);
        let [y, f, nf, b, nb] = [&y, &f, &nf, &b, &nb].map(slice);
        cpu::combine_into(y, f, nf, b, nb, slice_mut(&mut out), slice_mut(&mut count));
        return Ok((out, count));
    }
    let count = nf.f_add(nb)?.f_sub_scalar(1.0)?;
    Ok((combine_ops(y, f, nf, b, nb)?, count))
}

/// [`combine`] in tch ops (the path for CUDA tensors, and the reference of the CPU path).
pub fn combine_ops(y: &Tensor, f: &Tensor, nf: &Tensor, b: &Tensor, nb: &Tensor) -> Result<Tensor> {
    let num = f.f_mul(nf)?.f_add(&b.f_mul(nb)?)?.f_sub(y)?;
    let den = nf.f_add(nb)?.f_sub_scalar(1.0)?;
    Ok(num.f_div(&den)?)
}
