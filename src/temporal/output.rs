//! After the network: its output `o` weighed against the fused input `f` it was given, pixel
//! by pixel, by the count `n` of frames the fusion averaged there:
//! `y = o + (f - o) * (n - 1) / n`, i.e. `(o + (n - 1) f) / n`: the network's result counts as
//! one frame, the other `n - 1` frames of the fused input as theirs.
//!
//! Why: on compressed video the network also removes detail the codec kept and moves
//! levels (against the unbiased reference, issue 23, the per-frame result is no better than
//! the decoded frame at CRF 28), while the fused input has lost its independent noise in
//! proportion to `n`. Where nothing was fused (`n = 1`: motion, an uncovered area, a cut,
//! the first frame) the output is the network's exactly, so the no-ghost guarantees of the
//! input fusion carry over. Measured on `examples/temporal_lab.rs` and eval-video
//! (weights/README.md, issue 22): +0.1 to +0.25 dB over the input fusion alone, causal and
//! offline, at CRF 18 to 28; mixing the raw input in instead (a fixed share) loses at CRF 23.
//!
//! Costs one pass over the frame, no latency (the counts are known before the network runs).

use tch::Tensor;

use super::cpu::tensors::{floats, on_cpu, slice, tensor};
use crate::error::{Error, Result};

/// `out` (the network's output, `[N, 3, H, W]`) weighed against `fused` (its input, same
/// size) by `count` (`[N, 1, H, W]`, >= 1): `out + (fused - out) * ((count - 1) / count)`, in
/// float. On CPU tensors in plain Rust, else in tch ops ([`blend_ops`]); the same numbers.
pub fn blend(out: &Tensor, fused: &Tensor, count: &Tensor) -> Result<Tensor> {
    let (s, c) = (out.size(), count.size());
    if s.len() != 4 || fused.size() != s || c.len() != 4 || c[1] != 1 || c[0] != s[0] || c[2..] != s[2..] {
        return Err(Error::Input(format!(
            "temporal output blend: output {s:?}, fused input {:?}, counts {c:?}",
            fused.size()
        )));
    }
    if !on_cpu(&[out, fused, count]) {
        return blend_ops(out, fused, count);
    }
    let (o, f, n) = (floats(out)?, floats(fused)?, floats(count)?);
    let (hw, ch) = ((s[2] * s[3]) as usize, s[1] as usize);
    let (o, f, n) = (slice(&o), slice(&f), slice(&n));
    let mut y = vec![0f32; o.len()];
    for (i, n) in n.chunks_exact(hw).enumerate() {
        for c in 0..ch {
            let at = (i * ch + c) * hw;
            let (o, f, y) = (&o[at..at + hw], &f[at..at + hw], &mut y[at..at + hw]);
            for (((y, &o), &f), &n) in y.iter_mut().zip(o).zip(f).zip(n) {
                // libtorch's order: (n - 1) / n, f - o, their product, plus o.
                let g = (n - 1.0) / n;
                *y = o + (f - o) * g;
            }
        }
    }
    tensor(&y, &s)
}

/// [`blend`] in tch ops (the path for CUDA tensors, and the reference of the CPU path).
pub fn blend_ops(out: &Tensor, fused: &Tensor, count: &Tensor) -> Result<Tensor> {
    let kind = tch::Kind::Float;
    let (o, f, n) = (
        out.f_to_kind(kind)?,
        fused.f_to_kind(kind)?,
        count.f_to_kind(kind)?,
    );
    let g = n.f_sub_scalar(1.0)?.f_div(&n)?;
    Ok(o.f_add(&f.f_sub(&o)?.f_mul(&g)?)?)
}
