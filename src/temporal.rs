//! Motion-adaptive temporal smoothing of the model's output (a recursive filter).
//!
//! The network denoises each frame on its own, so what it leaves behind changes from frame to
//! frame and shimmers. Where the scene is still, averaging each denoised frame with the
//! previous output removes much of that; where something moves, averaging would smear it. So
//! each pixel is pulled towards the previous output by `amount * (1 - motion / THRESHOLD)`,
//! where `motion` is the 3x3-averaged frame difference, averaged over the colour channels: a
//! difference the size of left-over noise blends, one the size of an edge moving does not.
//! The state is one frame (the last output); a flush, a size change or `amount = 0` drops it.

use tch::{Kind, Tensor};

use crate::error::Result;

/// Frame differences (on 0..1, after the 3x3 average) at or above this count as motion and
/// are not blended at all; smaller ones blend linearly more. 16 levels of 255 was the best of
/// 4, 8, 12, 16 and 24 for PSNR and frame-to-frame stability on the compressed-video
/// evaluation's dumps (weights/README.md).
pub const THRESHOLD: f64 = 16.0 / 255.0;

/// Frames the filter must run before a cut so that its output from the cut on is what an
/// uninterrupted run gives (segmented jobs start each segment this many frames early). The
/// filter remembers geometrically: an old frame's weight shrinks by at most `amount` per frame
/// where the scene is still, so after `k` frames with `amount^k` below 2^-32 the difference is
/// far under what f32 arithmetic and the 8-bit output can show. None when it never forgets
/// (`amount` 1, or so close that the warm-up would exceed 100,000 frames): run from the first
/// frame. `amount` 0 (off) needs none.
pub fn warmup_frames(amount: f64) -> Option<u64> {
    if amount.is_nan() || amount <= 0.0 {
        return Some(0);
    }
    if amount >= 1.0 {
        return None;
    }
    let k = (32.0 / -amount.log2()).ceil();
    (k <= 100_000.0).then_some(k as u64)
}

/// Frames the filter reads after a frame before it outputs it: none (it is causal).
pub fn lookahead_frames(_amount: f64) -> u64 {
    0
}

/// The recursive filter's state: the previous output frame, `[1, 3, H, W]` float.
#[derive(Default)]
pub struct TemporalFilter {
    prev: Option<Tensor>,
}

impl std::fmt::Debug for TemporalFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemporalFilter")
            .field("has_previous", &self.prev.is_some())
            .finish()
    }
}

impl TemporalFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the previous frame (after a flush or seek: the next frame starts afresh).
    pub fn reset(&mut self) {
        self.prev = None;
    }

    /// Whether a previous frame is held.
    pub fn is_primed(&self) -> bool {
        self.prev.is_some()
    }

    /// Smooth `frames` (`[N, 3, H, W]`, float, 0..1, in display order) against the previous
    /// output, frame after frame; `amount` in [0, 1] (0: unchanged, and the state is dropped).
    pub fn apply(&mut self, frames: &Tensor, amount: f64) -> Result<Tensor> {
        if amount <= 0.0 || frames.dim() != 4 {
            self.reset();
            return Ok(frames.shallow_clone());
        }
        let amount = amount.min(1.0);
        let n = frames.size()[0];
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let cur = frames.f_narrow(0, i, 1)?;
            let smoothed = match self.prev.take() {
                Some(prev) if prev.size() == cur.size() && prev.kind() == cur.kind() => {
                    blend(&cur, &prev, amount)?
                }
                _ => cur.shallow_clone(),
            };
            self.prev = Some(smoothed.shallow_clone());
            out.push(smoothed);
        }
        Ok(Tensor::f_cat(&out, 0)?)
    }
}

/// `cur + w * (prev - cur)` with `w = amount * clamp(1 - motion / THRESHOLD, 0, 1)`.
fn blend(cur: &Tensor, prev: &Tensor, amount: f64) -> Result<Tensor> {
    let diff = prev.f_sub(cur)?;
    let local = diff.f_to_kind(Kind::Float)?.f_avg_pool2d(
        [3, 3],
        [1, 1],
        [1, 1],
        false,
        false,
        None::<i64>,
    )?;
    let motion = local.f_abs()?.f_mean_dim(1, true, Kind::Float)?;
    let weight = (motion.f_div_scalar(-THRESHOLD)? + 1.0)
        .f_clamp(0.0, 1.0)?
        .f_mul_scalar(amount)?
        .f_to_kind(cur.kind())?;
    Ok(cur.f_add(&diff.f_mul(&weight)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn frame(value: f64, h: i64, w: i64) -> Tensor {
        Tensor::full([1, 3, h, w], value, (Kind::Float, Device::Cpu))
    }

    fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn a_still_scene_averages_and_amount_zero_is_the_identity() {
        let mut f = TemporalFilter::new();
        let a = frame(0.50, 8, 8);
        let b = frame(0.52, 8, 8); // 5 levels: well under the threshold
        let first = f.apply(&a, 0.5).unwrap();
        assert!(
            max_abs(&first, &a) == 0.0,
            "the first frame passes unchanged"
        );
        let second = f.apply(&b, 0.5).unwrap();
        let w = 0.5 * (1.0 - 0.02 / THRESHOLD);
        let expected = 0.52 + w * (0.50 - 0.52);
        assert!((second.mean(Kind::Float).double_value(&[]) - expected).abs() < 1e-5);
        let off = f.apply(&b, 0.0).unwrap();
        assert!(max_abs(&off, &b) == 0.0 && !f.is_primed());
    }

    #[test]
    fn motion_above_the_threshold_is_not_blended() {
        let mut f = TemporalFilter::new();
        let _ = f.apply(&frame(0.2, 6, 6), 1.0).unwrap();
        let jump = frame(0.2 + 2.0 * THRESHOLD, 6, 6);
        assert!(max_abs(&f.apply(&jump, 1.0).unwrap(), &jump) == 0.0);
    }

    #[test]
    fn a_batch_is_filtered_frame_by_frame_in_order() {
        let frames = Tensor::cat(&[frame(0.5, 4, 4), frame(0.51, 4, 4), frame(0.52, 4, 4)], 0);
        let mut batch = TemporalFilter::new();
        let together = batch.apply(&frames, 0.6).unwrap();
        let mut single = TemporalFilter::new();
        for i in 0..3 {
            let one = single.apply(&frames.narrow(0, i, 1), 0.6).unwrap();
            assert!(max_abs(&one, &together.narrow(0, i, 1)) < 1e-7);
        }
    }

    #[test]
    fn the_warm_up_grows_with_the_memory() {
        assert_eq!(warmup_frames(0.0), Some(0));
        assert_eq!(warmup_frames(0.5), Some(32));
        assert!(warmup_frames(0.9).unwrap() > warmup_frames(0.5).unwrap());
        assert_eq!(warmup_frames(1.0), None);
        assert_eq!(warmup_frames(0.999_999), None);
        assert_eq!(lookahead_frames(0.5), 0);
    }

    #[test]
    fn a_new_size_or_a_reset_starts_afresh() {
        let mut f = TemporalFilter::new();
        let _ = f.apply(&frame(0.5, 4, 4), 1.0).unwrap();
        let other = frame(0.51, 4, 6);
        assert!(max_abs(&f.apply(&other, 1.0).unwrap(), &other) == 0.0);
        f.reset();
        assert!(!f.is_primed());
        let next = frame(0.52, 4, 6);
        assert!(max_abs(&f.apply(&next, 1.0).unwrap(), &next) == 0.0);
    }
}
