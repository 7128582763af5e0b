//! The worker thread: takes inputs, assembles batches of one frame format, runs the model and
//! emits outputs in input order, dropping what a flush made stale.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;

use super::channel::{out_frames, InItem, Input, Out};
use super::control::Shared;
use super::exit_guard::GUARD;
use super::{panic_text, DenoisedFrame, EngineConfig, FrameModel, FrameTiming, Output};
use crate::error::{Error, Result};
use crate::frame::{frames_to_tensor, FrameFormat};
use crate::inference::StageTimes;
use crate::temporal::TemporalFilter;

/// The longest first warm-up run after which a second one runs ([`Worker::warm_up`]).
const WARM_UP_SECOND_RUN_AFTER: Duration = Duration::from_secs(1);

enum Pending<T> {
    Frame {
        data: Vec<u8>,
        payload: T,
        submitted: Instant,
        /// Its output is not wanted ([`super::EngineSender::send_decode_only`]): it only
        /// goes through the temporal stage's recursion and comes out as it went in.
        decode_only: bool,
    },
    Marker(T),
}

/// Every receiver is gone: nobody can take outputs any more.
struct ReceiversGone;

/// The worker thread's state: the model, the batch being assembled, the epoch it belongs to.
pub(super) struct Worker<T, M> {
    model: M,
    cfg: EngineConfig,
    shared: Arc<Shared>,
    input: cb::Receiver<Input<T>>,
    output: cb::Sender<Out<T>>,
    epoch: u64,
    /// The epoch of the batch the model runs: the model is interrupted when it is stale.
    running_epoch: Arc<AtomicU64>,
    abort: cb::Receiver<()>,
    pending: Vec<Pending<T>>,
    pending_frames: usize,
    format: Option<FrameFormat>,
    oldest: Option<Instant>,
    last_run_format: Option<FrameFormat>,
    /// The previous output frame, for temporal smoothing; dropped on a flush or a failure.
    temporal: TemporalFilter,
    /// Offline mode: the frames held after the batch about to run (its frames' future).
    future: Vec<Vec<u8>>,
}

impl<T: Send + 'static, M: FrameModel> Worker<T, M> {
    pub(super) fn new(
        mut model: M,
        cfg: EngineConfig,
        shared: Arc<Shared>,
        input: cb::Receiver<Input<T>>,
        output: cb::Sender<Out<T>>,
    ) -> Self {
        let (_, epoch, abort) = shared.current();
        let running_epoch = Arc::new(AtomicU64::new(epoch));
        let (running, flushes) = (running_epoch.clone(), shared.clone());
        model.set_interrupt(Arc::new(move || {
            flushes.epoch() != running.load(Ordering::Acquire) || GUARD.exiting()
        }));
        shared.stats().set_precision(model.precision_choice());
        let mut temporal = TemporalFilter::new();
        temporal.set_origin(cfg.temporal_origin);
        Worker {
            model,
            cfg,
            shared,
            input,
            output,
            epoch,
            running_epoch,
            abort,
            pending: Vec::new(),
            pending_frames: 0,
            format: None,
            oldest: None,
            last_run_format: None,
            temporal,
            future: Vec::new(),
        }
    }

    /// Batches until the input closes. The model is dropped here unless the process is
    /// exiting: then libtorch is left alone (see [`super::exit_guard`]).
    pub(super) fn run(mut self) {
        let _ = self.run_inner();
        match GUARD.enter() {
            Some(_busy) => drop(self),
            None => std::mem::forget(self),
        }
    }

    fn run_inner(&mut self) -> Result<(), ReceiversGone> {
        let input = self.input.clone();
        loop {
            self.sync_epoch();
            if self.pending_frames >= self.cfg.batch_size + self.cfg.lookahead {
                self.run_ready()?;
                continue;
            }
            let deadline = self.deadline();
            if deadline.is_some_and(|d| Instant::now() >= d) {
                // Overdue: take what is already queued (up to a full batch), then run.
                match input.try_recv() {
                    Ok(m) => self.accept(m)?,
                    Err(cb::TryRecvError::Empty) => self.run_ready()?,
                    Err(cb::TryRecvError::Disconnected) => return self.finish(),
                }
                continue;
            }
            let timer = deadline.map(cb::at).unwrap_or_else(cb::never);
            let abort = self.abort.clone();
            cb::select! {
                recv(input) -> m => match m {
                    Ok(m) => self.accept(m)?,
                    Err(_) => return self.finish(),
                },
                recv(abort) -> _ => {}
                recv(timer) -> _ => {}
            }
        }
    }

    /// When the pending frames must run even though the batch is not full: `max_latency`
    /// after the oldest one arrived. In offline mode (a lookahead) never while only the held
    /// frames are pending: a frame runs with its whole future, or at the end of the stream
    /// (a drain, a new format, the senders gone) with what there is. Running it early on a
    /// timer made its output depend on the machine's speed (a segmented job's frames then
    /// differed from one pass).
    fn deadline(&self) -> Option<Instant> {
        if self.pending_frames <= self.cfg.lookahead {
            return None;
        }
        self.oldest.map(|t| t + self.cfg.max_latency)
    }

    /// Adopt the current epoch; pending work from an older one is discarded.
    fn sync_epoch(&mut self) {
        if self.shared.epoch() == self.epoch {
            return;
        }
        let (_, epoch, abort) = self.shared.current();
        self.epoch = epoch;
        self.abort = abort;
        self.temporal.reset();
        let n = self.pending_frames as u64;
        self.clear_pending(None);
        self.shared.dropped(n);
        self.record_temporal_bytes();
    }

    fn stale(&self) -> bool {
        self.shared.epoch() != self.epoch
    }

    /// Forget the pending batch: its frames start in the model at `started` (Some) or are
    /// dropped (None); either way they no longer wait.
    fn clear_pending(&mut self, started: Option<Instant>) {
        let n = self.pending_frames;
        {
            let mut stats = self.shared.stats();
            stats.unqueue(n as u64);
            if let Some(start) = started.filter(|_| n > 0) {
                stats.set_running(Some((start, n)));
            }
        }
        self.pending.clear();
        self.pending_frames = 0;
        self.format = None;
        self.oldest = None;
    }

    fn accept(&mut self, m: Input<T>) -> Result<(), ReceiversGone> {
        if m.epoch != self.epoch {
            if m.epoch != self.shared.epoch() {
                self.shared.stats().unqueue(m.frames());
                self.shared.dropped(m.frames());
                return Ok(());
            }
            // Sent after a flush this worker has not seen yet.
            self.sync_epoch();
        }
        match m.item {
            InItem::Frame {
                data,
                format,
                payload,
                submitted,
                decode_only,
            } => {
                if self.format.is_some_and(|f| f != format) {
                    self.run_batch()?;
                }
                self.format = Some(format);
                self.oldest.get_or_insert(submitted);
                self.pending.push(Pending::Frame {
                    data,
                    payload,
                    submitted,
                    decode_only,
                });
                self.pending_frames += 1;
                if self.pending_frames >= self.cfg.batch_size + self.cfg.lookahead {
                    self.run_ready()?;
                }
            }
            InItem::Reset => {
                // The frames before the break run first, without those after it as their
                // future; with the temporal stage off nothing fuses across it: no cut batch.
                if self.cfg.temporal.get() > 0.0 {
                    self.run_batch()?;
                }
                self.temporal.reset();
                self.record_temporal_bytes();
            }
            InItem::WarmUp { format, done } => {
                self.run_batch()?;
                self.warm_up(format);
                drop(done);
            }
            InItem::Marker { payload, drain } => {
                self.pending.push(Pending::Marker(payload));
                if drain || self.pending_frames == 0 {
                    self.run_batch()?;
                }
            }
        }
        Ok(())
    }

    /// Run the model on blank frames of `format` unless a frame of its size already ran (the
    /// network's time and memory follow the size; the pixel format only changes the
    /// conversions around it): twice (once when the first run took more than
    /// [`WARM_UP_SECOND_RUN_AFTER`]), through a scratch temporal filter at the stream's
    /// amount, so that the second run is what a stream's frame costs (network and temporal
    /// stage, after the first run's allocations): the batch time estimate starts from it.
    /// An estimate from the first run alone (allocations, and no temporal stage) was too
    /// high or too low: frames thinned or late at the start of a live stream.
    fn warm_up(&mut self, format: FrameFormat) {
        let same_size = |f: FrameFormat| (f.width, f.height) == (format.width, format.height);
        if self.last_run_format.is_some_and(same_size) {
            return;
        }
        let Some(_busy) = GUARD.enter() else {
            return;
        };
        self.running_epoch.store(self.epoch, Ordering::Release);
        self.resolve_precision(&format);
        let blank = vec![0u8; format.frame_len()];
        let start = Instant::now();
        // Busy like a batch of two: frames arriving meanwhile wait for it.
        self.shared.stats().set_running(Some((start, 2)));
        let strength = self.shared.strength.get().max(f64::MIN_POSITIVE);
        let amount = self.cfg.temporal.get();
        let mut scratch = TemporalFilter::new();
        let model = &self.model;
        let ran = catch_unwind(AssertUnwindSafe(|| {
            // The model's own time (a shared model's call, not the wait for it), as batches
            // are measured. A first run slower than WARM_UP_SECOND_RUN_AFTER is the estimate
            // (pessimistic): such a model is no live one, and a second run would only double
            // the wait (4K frames in small tiles on the CPU: minutes on a busy machine).
            let mut last = Duration::ZERO;
            for _ in 0..2 {
                let (_, times) = model.denoise_sequence(
                    &[blank.as_slice()],
                    &format,
                    strength,
                    &mut scratch,
                    amount,
                )?;
                last = times.total();
                if last > WARM_UP_SECOND_RUN_AFTER {
                    break;
                }
            }
            Ok::<_, Error>(last)
        }));
        drop(scratch);
        self.shared.stats().set_running(None);
        if let Ok(Ok(per_frame)) = ran {
            self.last_run_format = Some(format);
            self.shared.stats().warmed_up(per_frame);
        }
    }

    /// `precision` `auto`: choose on the first frame size (a no-op once chosen or when set).
    /// A failed choice leaves the model in fp32.
    fn resolve_precision(&mut self, format: &FrameFormat) {
        let (w, h) = (format.width as i64, format.height as i64);
        // The choice (or why it failed) is in the model's `precision_choice`.
        let _ = catch_unwind(AssertUnwindSafe(|| self.model.resolve_precision(w, h)));
        let choice = self.model.precision_choice();
        self.shared.stats().set_precision(choice);
    }

    /// Input is closed: run what is pending, then stop.
    fn finish(&mut self) -> Result<(), ReceiversGone> {
        self.sync_epoch();
        self.run_batch()
    }

    /// Run the pending frames but the last `lookahead` (they are the first ones' future, and
    /// stay pending), or all of them when there are no more than that.
    fn run_ready(&mut self) -> Result<(), ReceiversGone> {
        let keep = self.cfg.lookahead;
        if keep == 0 || self.pending_frames <= keep {
            return self.run_batch();
        }
        let mut seen = 0;
        let split = self
            .pending
            .iter()
            .position(|p| {
                seen += matches!(p, Pending::Frame { .. }) as usize;
                seen > self.pending_frames - keep
            })
            .unwrap_or(self.pending.len());
        let rest = self.pending.split_off(split);
        let future = rest
            .iter()
            .filter_map(|p| match p {
                Pending::Frame { data, .. } => Some(data.clone()),
                Pending::Marker(_) => None,
            })
            .collect();
        let (format, ran) = (self.format, self.pending_frames - keep);
        let oldest = rest.iter().find_map(|p| match p {
            Pending::Frame { submitted, .. } => Some(*submitted),
            Pending::Marker(_) => None,
        });
        self.pending_frames = ran;
        self.future = future;
        let ran = self.run_batch();
        self.future.clear();
        ran?;
        // The held frames (and the markers after them) are pending again.
        self.pending = rest;
        self.pending_frames = keep;
        self.format = format;
        self.oldest = oldest;
        self.record_temporal_bytes();
        Ok(())
    }

    /// [`super::Stats::temporal_bytes`]: the frames held as a future (the pending frames
    /// while a lookahead holds them back, at most `lookahead` after a run) and what the filter
    /// holds (the state, the last run's future packed and converted).
    fn record_temporal_bytes(&self) {
        let held: usize = match self.cfg.lookahead {
            0 => 0,
            _ => self
                .pending
                .iter()
                .map(|p| match p {
                    Pending::Frame { data, .. } => data.len(),
                    Pending::Marker(_) => 0,
                })
                .sum(),
        };
        let bytes = (held + self.temporal.bytes()) as u64;
        self.shared.stats().set_temporal_bytes(bytes);
    }

    /// Run the pending frames as one batch and emit everything pending in order.
    fn run_batch(&mut self) -> Result<(), ReceiversGone> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let items = std::mem::take(&mut self.pending);
        let n = self.pending_frames;
        let format = self.format;
        let start = Instant::now();
        self.clear_pending(Some(start));
        let Some(format) = format.filter(|_| n > 0) else {
            // Markers only.
            return self.emit(items.into_iter().filter_map(|p| match p {
                Pending::Marker(t) => Some(Output::Marker(t)),
                Pending::Frame { .. } => None,
            }));
        };

        let result = self.run_model(&items, &format);
        let finished = Instant::now();
        self.shared.stats().set_running(None);
        if result.is_err() {
            self.temporal.reset();
        }
        self.record_temporal_bytes();
        if let Err(Error::Interrupted) = result {
            // Flushed, or the process is exiting: nobody wants these frames.
            self.shared.stats().batch_interrupted(n);
            return Ok(());
        }
        // Decode-only frames did not enter the network: not in the batch's counts or times.
        let primed = items.iter().filter(|p| is_decode_only(p)).count();
        match &result {
            Ok(_) if primed == n => {}
            _ => {
                let ok = result.is_ok();
                let warmup = self.last_run_format != Some(format);
                self.last_run_format = Some(format);
                self.shared.stats().batch_done(
                    if ok { n - primed } else { n },
                    result.as_ref().ok().map(|(_, t)| t),
                    warmup,
                    start,
                    items.iter().filter_map(|p| match p {
                        Pending::Frame { submitted, .. } if !(ok && is_decode_only(p)) => {
                            Some(*submitted)
                        }
                        _ => None,
                    }),
                );
            }
        }
        if result.is_ok() {
            self.shared.stats().decode_only(primed as u64);
        }
        if self.stale() {
            // Flushed while the model ran.
            if result.is_ok() {
                self.shared.dropped(n as u64);
            }
            return Ok(());
        }
        match result {
            Ok((frames, stages)) => {
                let batch = Batch {
                    format,
                    frames: n - primed,
                    start,
                    finished,
                    stages,
                };
                self.emit(batch.outputs(items, frames))
            }
            Err(error) => self.emit(failed(items, error)),
        }
    }

    /// The model on the pending frames, but for the decode-only ones, which only go through
    /// the temporal stage's recursion ([`Worker::prime`]), in order with the others: the
    /// outputs of the frames that ran (a decode-only frame's output is its input,
    /// [`Batch::outputs`]). A panic becomes an error.
    fn run_model(
        &mut self,
        items: &[Pending<T>],
        format: &FrameFormat,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)> {
        let Some(_busy) = GUARD.enter() else {
            return Err(Error::Interrupted);
        };
        self.running_epoch.store(self.epoch, Ordering::Release);
        let future = std::mem::take(&mut self.future);
        let frames: Vec<(&[u8], bool)> = items
            .iter()
            .filter_map(|p| match p {
                Pending::Frame {
                    data, decode_only, ..
                } => Some((data.as_slice(), *decode_only)),
                Pending::Marker(_) => None,
            })
            .collect();
        let (mut outs, mut times) = (Vec::with_capacity(frames.len()), StageTimes::default());
        // Runs of consecutive frames of one kind.
        let mut i = 0;
        while i < frames.len() {
            let decode_only = frames[i].1;
            let end = i + frames[i..]
                .iter()
                .take_while(|f| f.1 == decode_only)
                .count();
            let run: Vec<&[u8]> = frames[i..end].iter().map(|f| f.0).collect();
            if decode_only {
                self.prime(&run, format)?;
            } else {
                // Their future: the frames after them in this batch, then the held ones.
                let later = frames[end..].iter().map(|f| f.0.to_vec());
                let later = later.chain(future.iter().cloned());
                let later = later.take(self.cfg.lookahead).collect();
                let (out, t) = self.denoise(&run, format, later)?;
                outs.extend(out);
                times.upload += t.upload;
                times.model += t.model;
                times.download += t.download;
            }
            i = end;
        }
        Ok((outs, times))
    }

    /// The network on `frames` (consecutive, none decode-only), `future` the frames after
    /// them (offline mode); a panic becomes an error.
    fn denoise(
        &mut self,
        frames: &[&[u8]],
        format: &FrameFormat,
        future: Vec<Vec<u8>>,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)> {
        self.resolve_precision(format);
        let strength = self.shared.strength.get();
        let amount = self.cfg.temporal.get();
        self.temporal.set_future(self.cfg.lookahead, future);
        let (model, temporal) = (&self.model, &mut self.temporal);
        catch_unwind(AssertUnwindSafe(|| {
            model.denoise_sequence(frames, format, strength, temporal, amount)
        }))
        .unwrap_or_else(|p| {
            Err(Error::Torch(format!(
                "the model panicked: {}",
                panic_text(&p)
            )))
        })
    }

    /// Decode-only `frames` through the temporal stage's forward recursion, on the model's
    /// device, without the model ([`TemporalFilter::prime`]): the state the next frames
    /// start from is the one running them through the network would leave. At `strength` 0
    /// or `temporal` 0 the state is dropped, as the model's path does.
    fn prime(&mut self, frames: &[&[u8]], format: &FrameFormat) -> Result<()> {
        let amount = self.cfg.temporal.get();
        if amount <= 0.0 || self.shared.strength.get() <= 0.0 {
            self.temporal.reset();
            return Ok(());
        }
        let device = self.model.device();
        let temporal = &mut self.temporal;
        catch_unwind(AssertUnwindSafe(|| {
            temporal.prime(&frames_to_tensor(frames, format, device)?, amount)
        }))
        .unwrap_or_else(|p| {
            Err(Error::Torch(format!(
                "the temporal stage panicked: {}",
                panic_text(&p)
            )))
        })
    }

    /// Send outputs in order; a flush that starts meanwhile discards the rest.
    fn emit(&mut self, outs: impl IntoIterator<Item = Output<T>>) -> Result<(), ReceiversGone> {
        for item in outs {
            if self.stale() {
                self.shared.dropped(out_frames(&item));
                continue;
            }
            let msg = Out {
                epoch: self.epoch,
                item,
            };
            let msg = match self.output.try_send(msg) {
                Ok(()) => continue,
                Err(cb::TrySendError::Disconnected(_)) => return Err(ReceiversGone),
                Err(cb::TrySendError::Full(m)) => m,
            };
            let frames = out_frames(&msg.item);
            let abort = self.abort.clone();
            cb::select! {
                send(self.output, msg) -> r => if r.is_err() { return Err(ReceiversGone) },
                recv(abort) -> _ => self.shared.dropped(frames),
            }
        }
        Ok(())
    }
}

/// What every frame of a batch that ran shares.
struct Batch {
    format: FrameFormat,
    frames: usize,
    start: Instant,
    finished: Instant,
    stages: StageTimes,
}

impl Batch {
    /// The pending items in order, frames replaced by their cleaned data.
    fn outputs<T>(&self, items: Vec<Pending<T>>, cleaned: Vec<Vec<u8>>) -> Vec<Output<T>> {
        let mut cleaned = cleaned.into_iter();
        items
            .into_iter()
            .map(|p| match p {
                Pending::Marker(t) => Output::Marker(t),
                Pending::Frame {
                    payload,
                    submitted,
                    data,
                    decode_only,
                } => Output::Frame(DenoisedFrame {
                    payload,
                    data: match decode_only {
                        true => data,
                        false => cleaned.next().unwrap_or_default(),
                    },
                    format: self.format,
                    timing: FrameTiming {
                        submitted,
                        queue_wait: self.start.saturating_duration_since(submitted),
                        batch_frames: self.frames,
                        stages: self.stages,
                        finished: self.finished,
                    },
                }),
            })
            .collect()
    }
}

fn is_decode_only<T>(p: &Pending<T>) -> bool {
    matches!(
        p,
        Pending::Frame {
            decode_only: true,
            ..
        }
    )
}

/// A failed batch: one `Failed` with the frames' payloads, then the markers, in order.
fn failed<T>(items: Vec<Pending<T>>, error: Error) -> Vec<Output<T>> {
    let mut payloads = Vec::new();
    let mut markers = Vec::new();
    for p in items {
        match p {
            Pending::Frame { payload, .. } => payloads.push(payload),
            Pending::Marker(t) => markers.push(Output::Marker(t)),
        }
    }
    std::iter::once(Output::Failed { error, payloads })
        .chain(markers)
        .collect()
}
