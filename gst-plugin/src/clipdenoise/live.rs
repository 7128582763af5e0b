//! Live sources (issue 26): the latency the element reports and the rule that thins a live
//! input the device cannot keep up with.
//!
//! A frame's time in the element is the wait for its batch to fill (batches above 1 only: a
//! batch of 1 runs as soon as the model is free), the wait for the model to be free, and its
//! own batch. The element allows one frame interval (at most one batch time) for the middle
//! part, the queueing of a source at or above the device's rate, and reports
//!
//! ```text
//! latency = batch fill wait + batch time × (1 + other streams) + 2 × jitter
//!           + min(frame interval, batch time)
//! ```
//!
//! (batch time: the largest per-frame time of the last 8 batches; jitter: how far those 8
//! spread, near zero on an idle machine, what a loaded machine adds on a bad frame, counted
//! for the frame's own batch and for the one it waited for; other
//! streams: those on the same shared model, which takes the streams' batches in turn).
//!
//! A live frame whose expected wait for the model is above that allowance would leave late,
//! so it is dropped on arrival instead (thinned): below the device's rate nothing waits that
//! long; above it, a frame is kept when the model is about to be free, so the model runs
//! back to back on frames spread evenly over the input. The expected wait counts only frames that still
//! need the model (queued, batching, running): finished frames that wait for a synchronising
//! sink to take them are on time by construction and are not the element's backlog. Counting
//! them (as frames in flight) and adding the sink's wait to the reported latency was what
//! thinned a live source to half the device's rate (the sink held each frame for the reported
//! latency, which counted the frames it held, which raised the latency ...).
//!
//! The start: in READY->PAUSED the element warms the model up on the size upstream fixes,
//! and the state change waits for it, so a live source's first frames do not arrive while
//! the model does its first, slow run (they could only have been thinned); the warm-up runs
//! two frames with the stream's temporal stage and the batch time estimate starts from the
//! second (from the first alone, with its allocations and without the temporal stage, the
//! estimate was too high, and thinned the frames behind the first batch, or too low, and the
//! first latency reported was short).
//!
//! On a shared model the expected wait also counts the other streams' jobs at the model and
//! the turns they take before the frame (`EngineControl::wait_estimate`).

use std::time::Duration;

use gst::prelude::*;

/// The nominal time between frames of `info`'s frame rate (None when variable or unset).
pub(super) fn frame_interval(info: &gst_video::VideoInfo) -> Option<Duration> {
    let fps = info.fps();
    (fps.numer() > 0 && fps.denom() > 0).then(|| {
        Duration::from_nanos(
            gst::ClockTime::SECOND
                .mul_div_floor(fps.denom() as u64, fps.numer() as u64)
                .unwrap_or_default()
                .nseconds(),
        )
    })
}

/// What the latency and the thinning rule are built from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    /// Frames per batch.
    pub batch_size: usize,
    /// The longest a partial batch waits for more frames (`max-latency`).
    pub max_latency: Duration,
    /// What a full batch is expected to take (None before the first batch or warm-up).
    pub batch_time: Option<Duration>,
    /// How much the batch time moved recently (the spread of the estimate's window).
    pub batch_jitter: Duration,
    /// The stream's frame interval (None when unknown).
    pub frame_interval: Option<Duration>,
    /// The other streams on the element's shared model (0: a model of its own).
    pub other_streams: usize,
}

impl Pace {
    /// How long a frame may wait for the model: one frame interval, or one batch time when
    /// that is shorter (below the device's rate a frame waits at most for the batch that
    /// runs when it arrives; a slow source should not get a second of latency) or the rate is
    /// unknown. Nothing before any batch time is known.
    pub fn queue_allowance(&self) -> Duration {
        match (self.frame_interval, self.batch_time) {
            (Some(i), Some(b)) => i.min(b),
            (None, Some(b)) => b,
            (_, None) => Duration::ZERO,
        }
    }

    /// What a frame may spend in the element: the batch fill wait, the queue allowance and
    /// its own batch, with the batch time's recent jitter twice: once for its own batch (a
    /// frame is not late because its batch was a little slower than the slowest recent one),
    /// once for the batch it waited for (its wait was predicted from the typical batch time,
    /// and that batch may have been the slowest: the wait was longer by up to the jitter;
    /// the frames late by 1 or 2 at 30 and 60 frames/s were such); on a shared model one batch
    /// of each other stream too (the model takes the streams' batches in turn: one that
    /// arrives after a frame was kept may still run before it). Before any batch time is
    /// known: the fill wait alone.
    pub fn latency(&self) -> Duration {
        let fill = if self.batch_size > 1 {
            self.max_latency
        } else {
            Duration::ZERO
        };
        let batch = self.batch_time.unwrap_or_default();
        fill + self.queue_allowance()
            + batch * (1 + self.other_streams as u32)
            + self.batch_jitter * 2
    }

    /// Whether a live frame that would wait `wait` for the model is to be dropped: it would
    /// leave later than [`Pace::latency`] says. An unknown wait (frames already wait for the
    /// model's first warm-up, no batch time known yet) thins too: such frames would leave
    /// late.
    pub fn must_thin(&self, wait: Option<Duration>) -> bool {
        wait.is_none_or(|w| w > self.queue_allowance())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn pace(batch_size: usize, batch_time: u64, interval: Option<u64>) -> Pace {
        Pace {
            batch_size,
            max_latency: ms(50),
            batch_time: Some(ms(batch_time)),
            batch_jitter: Duration::ZERO,
            frame_interval: interval.map(ms),
            other_streams: 0,
        }
    }

    #[test]
    fn latency_is_the_batch_time_plus_one_frame_interval() {
        // Batch 1: no fill wait (the batch runs at once), whatever max-latency says.
        assert_eq!(pace(1, 55, Some(33)).latency(), ms(55 + 33));
        // A slower source than the model: at most one batch time of queueing.
        assert_eq!(pace(1, 55, Some(67)).latency(), ms(55 + 55));
        // Unknown rate: one batch time of queueing.
        assert_eq!(pace(1, 55, None).latency(), ms(110));
        // Nothing measured yet: the fill wait alone.
        let unknown = Pace {
            batch_time: None,
            ..pace(4, 0, Some(33))
        };
        assert_eq!(unknown.latency(), ms(50));
        // Larger batches wait up to max-latency to fill.
        assert_eq!(pace(4, 120, Some(33)).latency(), ms(50 + 120 + 33));
        // A machine whose batch times move: the spread on top.
        let jittery = Pace {
            batch_jitter: ms(12),
            ..pace(1, 55, Some(33))
        };
        assert_eq!(jittery.latency(), ms(55 + 2 * 12 + 33));
        // Two other streams on a shared model: a batch of each on top.
        let shared = Pace {
            other_streams: 2,
            ..pace(1, 55, Some(33))
        };
        assert_eq!(shared.latency(), ms(3 * 55 + 33));
    }

    #[test]
    fn frames_are_thinned_only_when_they_would_wait_more_than_one_interval() {
        let p = pace(1, 55, Some(33));
        assert!(p.must_thin(None), "busy warming up");
        assert!(!p.must_thin(Some(ms(0))));
        assert!(!p.must_thin(Some(ms(33))));
        assert!(p.must_thin(Some(ms(34))));
        // Below the device's rate: the batch in the model is never a reason to thin.
        let p = pace(1, 55, Some(67));
        assert!(!p.must_thin(Some(ms(55))));
    }
}
