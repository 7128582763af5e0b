//! One step of the recursive filter: the previous fused frame, moved onto the current one by
//! block motion ([`super::motion`]), averaged with the current per-frame result under a
//! per-pixel confidence and a per-pixel count of the frames already averaged there.
//!
//! - Aligned difference `d`: the 3x3 mean of the signed difference between the warped state
//!   and the current frame, its absolute value averaged over the colour channels (zero-mean
//!   left-over noise cancels in the mean; a misalignment or a change does not).
//! - Noise level: the median of `d` over the frame (most of a frame is aligned), times
//!   [`NOISE_FACTOR`], kept within [`T_MIN`]..[`T_MAX`]: the threshold `t`.
//! - Confidence `c = clamp(2 - d / t, 0, 1)^2`: 1 up to `t`, 0 from `2 t` on (the square:
//!   the moving-object test lost 0.9 dB at the object's edges with the plain ramp and a
//!   threshold of 3 medians).
//! - Count (a Kalman-like gain): the warped count times `c`, at most `cap - 1`; the output is
//!   `(cur + n * prev) / (1 + n)` and the new count `n + 1`. Still areas average over up to
//!   `cap` frames; where the state does not match (moving, occluded, uncovered) `c` is 0 and
//!   the pixel is the per-frame result: no ghost.
//! - Scene cut: when more than [`CUT_FRACTION`] of the pixels differ by more than [`CUT_LEVEL`]
//!   after alignment, the state is dropped and the frame starts afresh.

use tch::{Kind, Tensor};

use super::cpu::{
    self,
    tensors::{empty, floats, on_cpu, slice, slice_mut, tensor},
};
use super::motion;
use crate::error::Result;

/// The threshold is this many times the frame's median aligned difference...
pub const NOISE_FACTOR: f64 = 2.0;
/// ...but at least this (0..1 scale)...
pub const T_MIN: f64 = 2.0 / 255.0;
/// ...and at most this.
pub const T_MAX: f64 = 10.0 / 255.0;
/// An aligned difference above this counts towards a scene cut.
pub const CUT_LEVEL: f64 = 24.0 / 255.0;
/// The share of pixels above [`CUT_LEVEL`] that makes a scene cut.
pub const CUT_FRACTION: f64 = 0.4;

/// The recursive state: the last fused frame, its luma and its per-pixel count.
pub struct State {
    /// `[1, 3, H, W]` float.
    pub frame: Tensor,
    /// `[1, 1, H, W]` float.
    pub luma: Tensor,
    /// `[1, 1, H, W]` float, 1..cap: frames averaged into each pixel.
    pub count: Tensor,
}

impl State {
    /// A state holding `frame` alone (count 1).
    pub fn fresh(frame: &Tensor) -> Result<State> {
        let frame = frame.f_to_kind(Kind::Float)?;
        let luma = motion::luma(&frame)?;
        let count = luma.f_ones_like()?;
        Ok(State { frame, luma, count })
    }

    /// Whether `frame` (`[1, 3, H, W]`) can follow this state (same size and device).
    pub fn fits(&self, frame: &Tensor) -> bool {
        self.frame.size() == frame.size() && self.frame.device() == frame.device()
    }
}

/// What one step did.
pub struct Step {
    /// The fused frame (float).
    pub out: Tensor,
    /// The state after it.
    pub state: State,
    /// Whether a scene cut dropped the previous state.
    pub cut: bool,
}

impl Step {
    /// The first frame of a sequence: itself, count 1.
    pub fn fresh(cur: &Tensor) -> Result<Step> {
        let state = State::fresh(cur)?;
        Ok(Step {
            out: state.frame.shallow_clone(),
            state,
            cut: false,
        })
    }
}

/// Fuse `cur` (`[1, 3, H, W]`) with `prev` (a state of the same size), counting at most `cap`
/// frames per pixel.
pub fn step(cur: &Tensor, prev: &State, cap: f64) -> Result<Step> {
    if on_cpu(&[cur, &prev.frame, &prev.luma, &prev.count]) {
        return step_cpu(cur, prev, cap);
    }
    step_ops(cur, prev, cap)
}

/// [`step`] on CPU tensors in plain Rust ([`cpu`]), compiled for AVX2 where the CPU has it
/// (the same numbers: see [`cpu`]).
fn step_cpu(cur: &Tensor, prev: &State, cap: f64) -> Result<Step> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { step_cpu_avx2(cur, prev, cap) };
    }
    step_cpu_any(cur, prev, cap)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn step_cpu_avx2(cur: &Tensor, prev: &State, cap: f64) -> Result<Step> {
    step_cpu_any(cur, prev, cap)
}

#[inline(always)]
fn step_cpu_any(cur: &Tensor, prev: &State, cap: f64) -> Result<Step> {
    let cur = floats(cur)?;
    let (h, w) = (cur.size()[2], cur.size()[3]);
    let (hu, wu) = (h as usize, w as usize);
    let hw = hu * wu;
    let (frame, count) = (floats(&prev.frame)?, floats(&prev.count)?);
    let luma = cpu::luma(slice(&cur), hw);
    let v = cpu::estimate(&luma, slice(&floats(&prev.luma)?), hu, wu);
    // The warped state in this thread's scratch buffers (every value written each step; taken
    // out here, not used in a closure, which would not be compiled for AVX2), the results
    // straight into their tensors: no zeroing, no copies.
    let (mut warped, mut warped_count) = SCRATCH.take();
    warped.resize(3 * hw, 0.0);
    warped_count.resize(hw, 0.0);
    let fine = motion::FINE as usize;
    cpu::warp_into(slice(&frame), 3, hu, wu, &v, fine, &mut warped);
    cpu::warp_into(slice(&count), 1, hu, wu, &v, fine, &mut warped_count);
    let (mut out, mut n) = (empty(&[1, 3, h, w])?, empty(&[1, 1, h, w])?);
    let (o, c) = (slice_mut(&mut out), slice_mut(&mut n));
    let fused = cpu::blend_into(slice(&cur), &warped, &warped_count, hu, wu, cap, o, c);
    SCRATCH.set((warped, warped_count));
    if !fused {
        return Ok(Step {
            cut: true,
            ..Step::fresh(&cur)?
        });
    }
    let mut luma = empty(&[1, 1, h, w])?;
    cpu::luma_into(slice(&out), slice_mut(&mut luma));
    Ok(Step {
        out: out.shallow_clone(),
        state: State {
            frame: out,
            luma,
            count: n,
        },
        cut: false,
    })
}

thread_local! {
    /// [`step_cpu_any`]'s warped frame and count, kept from step to step.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = Default::default();
}

/// [`step`] in tch ops (the path for CUDA tensors, and the reference of the CPU path).
pub fn step_ops(cur: &Tensor, prev: &State, cap: f64) -> Result<Step> {
    let cur = cur.f_to_kind(Kind::Float)?;
    let luma = motion::luma_ops(&cur)?;
    let v = motion::estimate_ops(&luma, &prev.luma)?;
    let frame = motion::warp_ops(&prev.frame, &v, motion::FINE)?;
    let count = motion::warp_ops(&prev.count, &v, motion::FINE)?;
    let (out, count, cut) = blend_ops(&cur, &frame, &count, cap)?;
    if cut {
        return Ok(Step {
            cut: true,
            ..Step::fresh(&cur)?
        });
    }
    let luma = motion::luma_ops(&out)?;
    Ok(Step {
        out: out.shallow_clone(),
        state: State {
            frame: out,
            luma,
            count,
        },
        cut: false,
    })
}

/// `cur` and an aligned earlier estimate `prev` with its count: the fused frame, its count,
/// and whether they are too different to fuse at all (a scene cut).
pub fn blend(
    cur: &Tensor,
    prev: &Tensor,
    count: &Tensor,
    cap: f64,
) -> Result<(Tensor, Tensor, bool)> {
    if on_cpu(&[cur, prev, count]) && cur.dim() == 4 && cur.size()[..2] == [1, 3] {
        let (h, w) = (cur.size()[2], cur.size()[3]);
        let (c, p, n) = (floats(cur)?, floats(prev)?, floats(count)?);
        return Ok(
            match cpu::blend(slice(&c), slice(&p), slice(&n), h as usize, w as usize, cap) {
                Some((out, count)) => (
                    tensor(&out, &[1, 3, h, w])?,
                    tensor(&count, &[1, 1, h, w])?,
                    false,
                ),
                None => (cur.shallow_clone(), count.f_ones_like()?, true),
            },
        );
    }
    blend_ops(cur, prev, count, cap)
}

/// [`blend`] in tch ops (the path for CUDA tensors, and the reference of the CPU path).
pub fn blend_ops(
    cur: &Tensor,
    prev: &Tensor,
    count: &Tensor,
    cap: f64,
) -> Result<(Tensor, Tensor, bool)> {
    let d = aligned_difference(cur, prev)?;
    let changed = d
        .f_gt(CUT_LEVEL)?
        .f_to_kind(Kind::Float)?
        .f_mean(Kind::Float)?
        .double_value(&[]);
    if changed > CUT_FRACTION {
        return Ok((cur.shallow_clone(), count.f_ones_like()?, true));
    }
    let t = d
        .f_median()?
        .f_mul_scalar(NOISE_FACTOR)?
        .f_clamp(T_MIN, T_MAX)?;
    let c = (d.f_div(&t)?.f_neg()? + 2.0)
        .f_clamp(0.0, 1.0)?
        .f_square()?;
    let n = count.f_mul(&c)?.f_clamp_max((cap - 1.0).max(0.0))?;
    let out = cur
        .f_add(&prev.f_mul(&n)?)?
        .f_div(&(n.f_add_scalar(1.0)?))?;
    Ok((out, n.f_add_scalar(1.0)?, false))
}

/// `[1, 1, H, W]`: |3x3 mean of (prev - cur)|, averaged over the channels.
fn aligned_difference(cur: &Tensor, prev: &Tensor) -> Result<Tensor> {
    Ok(prev
        .f_sub(cur)?
        .f_avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>)?
        .f_abs()?
        .f_mean_dim(1, true, Kind::Float)?)
}
