//! The engine's counters: what the worker and the receiver record, and the [`Stats`]
//! snapshot they add up to.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::auto_precision::PrecisionChoice;
use crate::inference::StageTimes;

/// How many recent per-frame latencies the p99 is computed over.
const LATENCY_WINDOW: usize = 1024;
/// How many recent batches the batch time estimate covers.
const ESTIMATE_WINDOW: usize = 8;
/// The recent window of [`Stats`]' `recent_*` fields.
pub const RECENT_WINDOW: Duration = Duration::from_secs(5);

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Frames accepted by `send`, plus those the caller reported dropped before sending.
    pub frames_in: u64,
    /// Frames delivered by the receiver.
    pub frames_out: u64,
    /// Frames discarded: flushed, failed in the model, or dropped by the caller (late).
    pub frames_dropped: u64,
    /// Frames sent decode-only ([`super::EngineSender::send_decode_only`]): they went
    /// through the temporal stage's recursion, not the network (not in `batches`).
    pub frames_decode_only: u64,
    /// Batches that went through the model (failed ones included).
    pub batches: u64,
    /// Batches the model failed on.
    pub failed_batches: u64,
    /// Batches stopped part-way by a flush or a stop (their frames count as dropped; they are
    /// not in `batches`).
    pub interrupted_batches: u64,
    pub mean_batch_size: f64,
    /// From `send` until the model finished the frame (queueing, batching, upload, model,
    /// download), over every delivered frame. The time a finished frame then waits for the
    /// receiver (a downstream that is slow or syncs to a clock) is not the engine's and is
    /// left out.
    pub mean_latency_ms: f64,
    /// 99th percentile of the same, over the last 1024 delivered frames.
    pub p99_latency_ms: f64,
    /// From `send` to the start of the frame's batch.
    pub mean_queue_wait_ms: f64,
    /// Stage times per frame (batch time divided by its frames), averaged over frames.
    pub upload_ms_per_frame: f64,
    pub model_ms_per_frame: f64,
    pub download_ms_per_frame: f64,
    /// Upload + model + download of the most recent batch, in ms.
    pub last_batch_ms: f64,
    /// Largest upload + model + download of any batch, in ms.
    pub max_batch_ms: f64,
    /// Over the last [`RECENT_WINDOW`] only (for long live streams): frames delivered,
    /// frames dropped, and the delivered frames' mean and largest latency.
    pub recent_frames_out: u64,
    pub recent_frames_dropped: u64,
    pub recent_mean_latency_ms: f64,
    pub recent_max_latency_ms: f64,
    /// How long the last run of the last warm-up took (the second, steady one unless the
    /// first took over a second; [`super::EngineSender::warm_up`]): what the batch time
    /// estimate starts from; 0: none ran.
    pub warm_up_ms: f64,
    /// What the model runs in ("fp32", "bf16", "fp16") and whether `auto` chose it (false:
    /// set, or `auto` before its first frame size, running fp32).
    pub precision: String,
    pub precision_chosen: bool,
    /// The whole choice: timings and quality check when `auto` chose.
    pub precision_choice: Option<PrecisionChoice>,
    /// Bytes the temporal stage holds now: the frames held back as the next frames' future
    /// (offline mode, at most `lookahead` packed frames) and the recursion's state (the last
    /// fused frame, its luma and counts: 20 bytes a pixel), with the last run's future kept
    /// packed and in float ([`crate::temporal::TemporalFilter::take_future_frames`]); 0 with
    /// `temporal` 0 or after a
    /// flush or a reset. [`Stats::temporal_max_bytes`]: the most so far.
    pub temporal_bytes: u64,
    pub temporal_max_bytes: u64,
}

/// The counters behind [`Stats`], updated by the worker and the receiver.
#[derive(Default)]
pub(super) struct StatsAcc {
    pub(super) frames_in: u64,
    pub(super) frames_out: u64,
    pub(super) frames_dropped: u64,
    pub(super) frames_decode_only: u64,
    pub(super) batches: u64,
    pub(super) failed_batches: u64,
    pub(super) interrupted_batches: u64,
    pub(super) frames_run: u64,
    pub(super) latency_sum: Duration,
    pub(super) latency_window: VecDeque<f64>,
    pub(super) queue_wait_sum: Duration,
    pub(super) upload: Duration,
    pub(super) model: Duration,
    pub(super) download: Duration,
    pub(super) last_batch: Duration,
    pub(super) max_batch: Duration,
    /// The largest (upload + model + download) per frame of the last [`ESTIMATE_WINDOW`]
    /// batches, without warm-up batches (the first of each format: allocations, kernel
    /// selection): a latency built on it holds for nearly every frame, not just the mean one.
    pub(super) per_frame_estimate: Option<Duration>,
    /// The spread (largest minus smallest) of the same per-frame times: how much the batch
    /// time moves on this machine now (load, other processes).
    pub(super) per_frame_jitter: Duration,
    /// The median of the same: what a batch typically takes, for predicting when the model
    /// will be free (the largest would predict it later than it is, and the model would idle).
    per_frame_typical: Option<Duration>,
    recent_per_frame: VecDeque<Duration>,
    warm_up: Duration,
    precision: Option<PrecisionChoice>,
    temporal_bytes: u64,
    temporal_max_bytes: u64,
    /// Frames sent and not yet started in the model (in the input channel or in the batch
    /// being assembled), nor dropped.
    pub(super) waiting: u64,
    /// The batch the model runs now: when it started and its frames.
    running: Option<(Instant, usize)>,
    /// When the last batch (or warm-up) ended.
    last_end: Option<Instant>,
    /// Deliveries (with their latency in ms) and drops (None) of the recent window.
    recent: VecDeque<(Instant, Option<f64>)>,
}

/// What one stream has for the model: frames waiting (sent, not started), the batch it runs
/// (when it started, its frames) and when its last batch ended. On a shared model a stream's
/// running batch is its job at the model host, running or queued there behind other streams'
/// (the host takes them in the order they came).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Queue {
    pub(super) waiting: u64,
    pub(super) running: Option<(Instant, usize)>,
    pub(super) last_end: Option<Instant>,
}

/// How long a frame that `own` sends at `now` waits for the model, each frame taking
/// `per_frame`, in batches of `batch_size`, on a model that `others` also use (empty: a
/// model of its own). The host runs one call at a time in the order the streams' jobs came
/// (each stream has at most one job there: its running batch):
/// - the call running now (the oldest job): what is left of it, from when it could start
///   (its job came, or the call before ended);
/// - every other job already at the host, in full;
/// - this stream's full batches waiting to be sent (the frame joins a partial one);
/// - the turns the other streams take meanwhile: each sends its next batch when its job
///   returns, so before this frame's batch it gets one turn per own batch ahead, and one more
///   when its job is ahead of this stream's at the host (its next one is sent before this
///   frame's), at most what it has waiting.
pub(super) fn wait_ahead(
    per_frame: Duration,
    batch_size: usize,
    own: &Queue,
    others: &[Queue],
    now: Instant,
) -> Duration {
    let batch = batch_size.max(1) as u64;
    let all = || others.iter().chain(std::iter::once(own));
    let mut at_host: Vec<(Instant, usize)> = all().filter_map(|q| q.running).collect();
    at_host.sort_by_key(|(start, _)| *start);
    let last_end = all().filter_map(|q| q.last_end).max();
    let mut wait = Duration::ZERO;
    let mut frames_ahead: u64 = 0;
    if let Some(((start, frames), queued)) = at_host.split_first() {
        let could_start = last_end.map_or(*start, |e| e.max(*start).min(now));
        wait = (per_frame * *frames as u32).saturating_sub(now.duration_since(could_start));
        frames_ahead += queued.iter().map(|(_, n)| *n as u64).sum::<u64>();
    }
    let own_batches = own.waiting / batch;
    frames_ahead += own_batches * batch;
    for q in others {
        let ahead_of_own = match (q.running, own.running) {
            (Some((theirs, _)), Some((ours, _))) => (theirs <= ours) as u64,
            _ => 0,
        };
        frames_ahead += q.waiting.min((own_batches + ahead_of_own) * batch);
    }
    wait + per_frame * frames_ahead as u32
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl StatsAcc {
    pub(super) fn snapshot(&self) -> Stats {
        let per = |d: Duration, n: u64| if n == 0 { 0.0 } else { ms(d) / n as f64 };
        let mut window: Vec<f64> = self.latency_window.iter().copied().collect();
        window.sort_by(f64::total_cmp);
        let p99 = if window.is_empty() {
            0.0
        } else {
            window[((window.len() as f64 * 0.99).ceil() as usize).clamp(1, window.len()) - 1]
        };
        Stats {
            frames_in: self.frames_in,
            frames_out: self.frames_out,
            frames_dropped: self.frames_dropped,
            frames_decode_only: self.frames_decode_only,
            batches: self.batches,
            failed_batches: self.failed_batches,
            interrupted_batches: self.interrupted_batches,
            mean_batch_size: if self.batches == 0 {
                0.0
            } else {
                self.frames_run as f64 / self.batches as f64
            },
            mean_latency_ms: per(self.latency_sum, self.frames_out),
            p99_latency_ms: p99,
            mean_queue_wait_ms: per(self.queue_wait_sum, self.frames_run),
            upload_ms_per_frame: per(self.upload, self.frames_run),
            model_ms_per_frame: per(self.model, self.frames_run),
            download_ms_per_frame: per(self.download, self.frames_run),
            last_batch_ms: ms(self.last_batch),
            max_batch_ms: ms(self.max_batch),
            warm_up_ms: ms(self.warm_up),
            precision: self
                .precision
                .as_ref()
                .map(|c| c.precision.to_string())
                .unwrap_or_default(),
            precision_chosen: self.precision.as_ref().is_some_and(|c| c.chosen),
            precision_choice: self.precision.clone(),
            temporal_bytes: self.temporal_bytes,
            temporal_max_bytes: self.temporal_max_bytes,
            ..self.recent_snapshot()
        }
    }

    /// The `recent_*` fields over the events of the last [`RECENT_WINDOW`].
    fn recent_snapshot(&self) -> Stats {
        let since = Instant::now().checked_sub(RECENT_WINDOW);
        let recent = self
            .recent
            .iter()
            .filter(|(t, _)| since.is_none_or(|s| *t >= s));
        let (mut out, mut dropped, mut sum, mut max) = (0u64, 0u64, 0.0, 0.0f64);
        for (_, latency) in recent {
            match latency {
                Some(l) => {
                    out += 1;
                    sum += l;
                    max = max.max(*l);
                }
                None => dropped += 1,
            }
        }
        Stats {
            recent_frames_out: out,
            recent_frames_dropped: dropped,
            recent_mean_latency_ms: if out == 0 { 0.0 } else { sum / out as f64 },
            recent_max_latency_ms: max,
            ..Stats::default()
        }
    }

    /// Record a recent event, forgetting those older than the window.
    fn remember(&mut self, event: Option<f64>) {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RECENT_WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.push_back((now, event));
    }

    /// `frames` were dropped (flushed, late, failed).
    pub(super) fn drop_frames(&mut self, frames: u64) {
        self.frames_dropped += frames;
        for _ in 0..frames {
            self.remember(None);
        }
    }

    /// `frames` waiting frames left the queue (started in the model, or dropped before).
    pub(super) fn unqueue(&mut self, frames: u64) {
        self.waiting = self.waiting.saturating_sub(frames);
    }

    /// The worker starts (Some) or ended (None) a batch.
    pub(super) fn set_running(&mut self, batch: Option<(Instant, usize)>) {
        if batch.is_none() && self.running.is_some() {
            self.last_end = Some(Instant::now());
        }
        self.running = batch;
    }

    /// What this stream has for the model now, for another stream on the same shared model.
    pub(super) fn queue(&self) -> Queue {
        Queue {
            waiting: self.waiting,
            running: self.running,
            last_end: self.last_end,
        }
    }

    /// How long until the model could start a frame sent now, with `batch_size` frames per
    /// batch, on a model that `others` (the other streams of a shared model; none for a model
    /// of its own) also use; each batch at the typical (median) recent time per frame of this
    /// stream. Zero when the model is idle and nothing waits. Busy before any batch time is
    /// known (the first warm-up): zero for the first frame to wait (the warm-up may be about
    /// to end), None once one waits. See [`wait_ahead`] for what runs before the frame.
    pub(super) fn wait_estimate(&self, batch_size: usize, others: &[Queue]) -> Option<Duration> {
        let own = self.queue();
        let busy = |q: &Queue| q.running.is_some() || q.waiting > 0;
        if !busy(&own) && !others.iter().any(busy) {
            return Some(Duration::ZERO);
        }
        let Some(per_frame) = self.per_frame_typical else {
            return (self.waiting == 0).then_some(Duration::ZERO);
        };
        Some(wait_ahead(
            per_frame,
            batch_size,
            &own,
            others,
            Instant::now(),
        ))
    }

    /// A frame delivered by the receiver `latency` after it was sent.
    pub(super) fn delivered(&mut self, latency: Duration) {
        self.frames_out += 1;
        self.latency_sum += latency;
        if self.latency_window.len() == LATENCY_WINDOW {
            self.latency_window.pop_front();
        }
        self.latency_window.push_back(ms(latency));
        self.remember(Some(ms(latency)));
    }

    /// The model runs in `choice` from now on.
    pub(super) fn set_precision(&mut self, choice: PrecisionChoice) {
        self.precision = Some(choice);
    }

    /// What the temporal stage holds now, in bytes ([`Stats::temporal_bytes`]).
    pub(super) fn set_temporal_bytes(&mut self, bytes: u64) {
        self.temporal_bytes = bytes;
        self.temporal_max_bytes = self.temporal_max_bytes.max(bytes);
    }

    /// A warm-up's last run took `per_frame`: until real batches ran, that is the estimate.
    pub(super) fn warmed_up(&mut self, per_frame: Duration) {
        self.warm_up = per_frame;
        if self.per_frame_estimate.is_none() {
            self.per_frame_estimate = Some(per_frame);
            self.per_frame_typical = Some(per_frame);
        }
    }

    /// A batch of `frames` frames stopped part-way: they are dropped.
    pub(super) fn batch_interrupted(&mut self, frames: usize) {
        self.interrupted_batches += 1;
        self.drop_frames(frames as u64);
    }

    /// A batch of `frames` frames went through the model, starting at `start`; `submitted` are
    /// the frames' send times. `times` is None when the model failed. A warm-up batch (the
    /// first of a format) is left out of the batch time estimate.
    /// Decode-only frames of a batch went through the temporal stage (not the network).
    pub(super) fn decode_only(&mut self, frames: u64) {
        self.frames_decode_only += frames;
    }

    pub(super) fn batch_done(
        &mut self,
        frames: usize,
        times: Option<&StageTimes>,
        warmup: bool,
        start: Instant,
        submitted: impl Iterator<Item = Instant>,
    ) {
        self.batches += 1;
        self.frames_run += frames as u64;
        let Some(t) = times else {
            self.failed_batches += 1;
            self.drop_frames(frames as u64);
            return;
        };
        self.upload += t.upload;
        self.model += t.model;
        self.download += t.download;
        self.last_batch = t.total();
        self.max_batch = self.max_batch.max(t.total());
        if !warmup {
            if self.recent_per_frame.len() == ESTIMATE_WINDOW {
                self.recent_per_frame.pop_front();
            }
            self.recent_per_frame.push_back(t.total() / frames as u32);
            let mut sorted: Vec<Duration> = self.recent_per_frame.iter().copied().collect();
            sorted.sort_unstable();
            let (least, most) = (sorted[0], sorted[sorted.len() - 1]);
            self.per_frame_estimate = Some(most);
            self.per_frame_jitter = most - least;
            self.per_frame_typical = Some(sorted[sorted.len() / 2]);
        }
        for s in submitted {
            self.queue_wait_sum += start.saturating_duration_since(s);
        }
    }
}
