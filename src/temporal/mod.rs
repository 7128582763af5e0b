//! Motion-compensated temporal denoising of the model's output (a recursive filter, as
//! V-BM4D- and EMVD-style video denoisers do), causal (no latency) or with lookahead.
//!
//! The network denoises each frame on its own, so what it leaves behind changes from frame to
//! frame. Each new per-frame result is fused with the previous fused frame moved onto it:
//! - [`motion`]: block motion on luma, coarse to fine over a 3-level pyramid, integer vectors,
//!   warping by copying pixels (tch ops: runs on CUDA too);
//! - [`fusion`]: the per-pixel confidence from the aligned difference relative to the frame's
//!   noise level, a per-pixel count of averaged frames (capped: [`cap`]), scene cuts;
//! - [`offline`]: past and future frames, a forward and a backward recursion over a window of
//!   `lookahead` frames ([`Lookahead`]);
//! - this module: the stream's causal state ([`TemporalFilter`]), which a flush, a new frame
//!   size, a scene cut or `amount = 0` drops.
//!
//! `amount` (the element's `temporal`, 0..1) sets how many frames a still pixel averages:
//! [`cap`]. A segment of a stream processed on its own equals one pass over the stream once
//! [`warmup_frames`] frames have gone through the filter before the segment's first output
//! (and, offline, its last output has [`Lookahead::lookahead`] frames after it).

pub mod fusion;
pub mod motion;
pub mod offline;
#[cfg(test)]
mod tests;

use tch::Tensor;

use crate::error::Result;
pub use offline::Lookahead;

/// Frames a still pixel of the network's output averages at the element's default
/// `temporal=0.5`.
pub const DEFAULT_FRAMES: f64 = 8.0;
/// Frames a still pixel of the network's input averages at `temporal=0.5` (more removes
/// detail the network would have kept: 2.4 was the best of 2, 2.4, 3.1, 4.5 and 8 on the
/// compressed-video evaluation, weights/README.md).
pub const DEFAULT_INPUT_FRAMES: f64 = 2.4;

/// The most frames one pixel of the output averages at `amount` (0..1): 1 at 0,
/// [`DEFAULT_FRAMES`] at 0.5, `2 * DEFAULT_FRAMES - 1` at 1.
pub fn cap(amount: f64) -> f64 {
    1.0 + 2.0 * amount.clamp(0.0, 1.0) * (DEFAULT_FRAMES - 1.0)
}

/// [`cap`] for the network's input: [`DEFAULT_INPUT_FRAMES`] at 0.5.
pub fn input_cap(amount: f64) -> f64 {
    1.0 + 2.0 * amount.clamp(0.0, 1.0) * (DEFAULT_INPUT_FRAMES - 1.0)
}

/// Frames after which the recursive states' weight in the output is below half a level of
/// 255 (each step keeps at most `(cap - 1) / cap` of a state; the output stage has the larger
/// cap): a segment started that many frames early (its first outputs discarded) matches one
/// pass over the whole stream to within half an LSB, as long as the motion and scene-cut
/// decisions match (they look at the same frames; a near tie between two block vectors can
/// still go the other way). 0 when `amount` is 0 (no state).
pub fn warmup_frames(amount: f64) -> usize {
    let c = cap(amount).max(input_cap(amount));
    if c <= 1.0 {
        return 0;
    }
    let keep = (c - 1.0) / c;
    // The input stage's remainder passes through the output stage too: count both.
    let input = {
        let ci = input_cap(amount);
        if ci <= 1.0 {
            0.0
        } else {
            ((0.5f64 / 255.0).ln() / ((ci - 1.0) / ci).ln()).ceil()
        }
    };
    ((0.5f64 / 255.0).ln() / keep.ln()).ceil() as usize + input as usize
}

/// Frames of lookahead [`Lookahead`] needs for `lookahead` (the window itself): a segment's
/// last output equals one pass once this many frames after it went in.
pub fn lookahead_frames(lookahead: usize) -> usize {
    lookahead
}

/// One recursion: the last fused frame and its per-pixel counts.
#[derive(Default)]
pub(crate) struct Recursion {
    state: Option<fusion::State>,
    cuts: u64,
}

impl Recursion {
    /// One frame `[1, 3, H, W]` through the recursion at `cap`: the fused frame and its
    /// per-pixel count of frames (`[1, 1, H, W]` float).
    pub(crate) fn step(&mut self, cur: &Tensor, cap: f64) -> Result<(Tensor, Tensor)> {
        let step = match self.state.take() {
            Some(prev) if prev.fits(cur) => {
                let step = fusion::step(cur, &prev, cap)?;
                self.cuts += step.cut as u64;
                step
            }
            _ => fusion::Step::fresh(cur)?,
        };
        let count = step.state.count.shallow_clone();
        self.state = Some(step.state);
        Ok((step.out, count))
    }

    /// `frames` (`[N, 3, H, W]`) through the recursion frame after frame, in their kind.
    fn run(&mut self, frames: &Tensor, cap: f64) -> Result<Tensor> {
        let n = frames.size()[0];
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let cur = frames.f_narrow(0, i, 1)?;
            out.push(self.step(&cur, cap)?.0.f_to_kind(cur.kind())?);
        }
        Ok(Tensor::f_cat(&out, 0)?)
    }

    pub(crate) fn reset(&mut self) {
        self.state = None;
    }
}

/// The causal filter of one stream: a recursion over the network's input
/// ([`TemporalFilter::prepare`]: the camera noise of consecutive frames is independent, so a
/// short aligned average leaves the network less to remove) and one over its output
/// ([`TemporalFilter::apply`]: what the network leaves changes from frame to frame).
#[derive(Default)]
pub struct TemporalFilter {
    input: Recursion,
    output: Recursion,
}

impl std::fmt::Debug for TemporalFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemporalFilter")
            .field("primed", &self.is_primed())
            .field("scene_cuts", &self.scene_cuts())
            .finish()
    }
}

impl TemporalFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the previous frames (after a flush or seek: the next frame starts afresh).
    pub fn reset(&mut self) {
        self.input.reset();
        self.output.reset();
    }

    /// Whether a previous frame is held.
    pub fn is_primed(&self) -> bool {
        self.input.state.is_some() || self.output.state.is_some()
    }

    /// Scene cuts detected so far on the output (each dropped the state).
    pub fn scene_cuts(&self) -> u64 {
        self.output.cuts
    }

    /// The network's input `frames` (`[N, 3, H, W]`, float, 0..1, display order) fused with
    /// the motion-aligned earlier inputs, up to [`input_cap`] frames; `amount` 0 returns them
    /// unchanged and drops the state.
    pub fn prepare(&mut self, frames: &Tensor, amount: f64) -> Result<Tensor> {
        if amount <= 0.0 || frames.dim() != 4 {
            self.input.reset();
            return Ok(frames.shallow_clone());
        }
        self.input.run(frames, input_cap(amount))
    }

    /// Fuse `frames` (`[N, 3, H, W]`, float, 0..1, in display order) with the motion-aligned
    /// earlier output, frame after frame, up to [`cap`] frames; `amount` in [0, 1] (0:
    /// unchanged, and the state is dropped). The output has the input's kind and device.
    pub fn apply(&mut self, frames: &Tensor, amount: f64) -> Result<Tensor> {
        if amount <= 0.0 || frames.dim() != 4 {
            self.output.reset();
            return Ok(frames.shallow_clone());
        }
        self.output.run(frames, cap(amount))
    }
}
