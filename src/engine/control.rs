//! Flushing by epochs and the state every end of an engine shares: the gate (flushing flag
//! and the wake-up signal of the current epoch), the counters, the live strength and the
//! worker's handle; and [`EngineControl`], the handle callers use on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel as cb;

use super::channel::Input;
use super::stats::{Stats, StatsAcc};
use super::{EngineInfo, Strength};

/// The flushing state and the wake-up signal of the current epoch: `abort_tx` is never used
/// to send; it is dropped by `flush_start`, which disconnects `abort_rx` and so wakes every
/// `select!` that waits on it.
struct Gate {
    flushing: bool,
    abort_tx: cb::Sender<()>,
    abort_rx: cb::Receiver<()>,
}

/// What every end of one engine shares.
pub(super) struct Shared {
    gate: Mutex<Gate>,
    epoch: AtomicU64,
    stats: Arc<Mutex<StatsAcc>>,
    pub(super) strength: Strength,
    /// Disconnected once the worker thread has exited (its sender lives on its stack).
    pub(super) done: cb::Receiver<()>,
    pub(super) worker: Mutex<Option<JoinHandle<()>>>,
    /// Empties the input channel, returning how many frames it discarded.
    discard_input: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// Locks that survive a panic elsewhere (the data is counters and flags).
pub(super) fn lock<G>(m: &Mutex<G>) -> MutexGuard<'_, G> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Epoch 0, not flushing; `input` is the receiving side of the input channel, emptied on
    /// a flush.
    pub(super) fn new<T: Send + 'static>(
        strength: Strength,
        done: cb::Receiver<()>,
        input: cb::Receiver<Input<T>>,
    ) -> Arc<Shared> {
        let (abort_tx, abort_rx) = cb::bounded(0);
        Arc::new(Shared {
            gate: Mutex::new(Gate {
                flushing: false,
                abort_tx,
                abort_rx,
            }),
            epoch: AtomicU64::new(0),
            stats: Arc::default(),
            strength,
            done,
            worker: Mutex::new(None),
            discard_input: Box::new(move || {
                let mut n = 0;
                while let Ok(m) = input.try_recv() {
                    n += m.frames();
                }
                n
            }),
        })
    }
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
    /// (flushing, epoch, wake-up receiver of the epoch).
    pub(super) fn current(&self) -> (bool, u64, cb::Receiver<()>) {
        let g = lock(&self.gate);
        (g.flushing, self.epoch(), g.abort_rx.clone())
    }
    pub(super) fn stats(&self) -> MutexGuard<'_, StatsAcc> {
        lock(&self.stats)
    }
    /// The counters themselves, for the other streams of a shared model ([`Sharing`]).
    pub(super) fn stats_handle(&self) -> &Arc<Mutex<StatsAcc>> {
        &self.stats
    }
    pub(super) fn dropped(&self, n: u64) {
        if n > 0 {
            self.stats().drop_frames(n);
        }
    }
}

/// Control of a running engine, usable from any thread.
#[derive(Clone)]
pub struct EngineControl {
    pub(super) shared: Arc<Shared>,
    info: Arc<EngineInfo>,
}

impl std::fmt::Debug for EngineControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineControl")
            .field("info", &self.info)
            .field("flushing", &self.is_flushing())
            .finish()
    }
}

impl EngineControl {
    pub(super) fn new(shared: Arc<Shared>, info: EngineInfo) -> Self {
        EngineControl {
            shared,
            info: Arc::new(info),
        }
    }

    /// Start flushing: blocked sends and receives return `Flushing` at once, queued and pending
    /// frames are discarded, and the batch the model may be running is dropped when it ends.
    /// Until [`EngineControl::flush_stop`] sends and receives fail with `Flushing`.
    pub fn flush_start(&self) {
        {
            let mut g = lock(&self.shared.gate);
            g.flushing = true;
            self.shared.epoch.fetch_add(1, Ordering::AcqRel);
            let (tx, rx) = cb::bounded(0);
            // Dropping the old sender wakes everything that waits on the old receiver.
            g.abort_tx = tx;
            g.abort_rx = rx;
        }
        let n = (self.shared.discard_input)();
        self.shared.stats().unqueue(n);
        self.shared.dropped(n);
    }

    /// Accept frames again.
    pub fn flush_stop(&self) {
        lock(&self.shared.gate).flushing = false;
    }

    pub fn is_flushing(&self) -> bool {
        lock(&self.shared.gate).flushing
    }

    /// Whether the worker thread is still running.
    pub fn is_running(&self) -> bool {
        matches!(self.shared.done.try_recv(), Err(cb::TryRecvError::Empty))
    }

    /// Wait up to `timeout` for the worker to exit (drop the senders, or flush, first) and join
    /// it. Returns false if it is still running (for example inside a long model call); it
    /// then finishes on its own.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        if let Err(cb::RecvTimeoutError::Timeout) = self.shared.done.recv_timeout(timeout) {
            return false;
        }
        if let Some(h) = lock(&self.shared.worker).take() {
            let _ = h.join();
        }
        true
    }

    /// Frames sent and neither delivered nor dropped yet: queued, batching, in the model, or
    /// finished and waiting for the receiver.
    pub fn in_flight(&self) -> u64 {
        let s = self.shared.stats();
        s.frames_in.saturating_sub(s.frames_out + s.frames_dropped)
    }

    /// How much the batch time moved recently: the spread of the per-frame times behind
    /// [`EngineControl::batch_time_estimate`], times `batch_size` (zero until two batches of a
    /// format ran). A latency that must hold for nearly every frame adds it to the estimate.
    pub fn batch_time_jitter(&self, batch_size: usize) -> Duration {
        self.shared.stats().per_frame_jitter * batch_size as u32
    }

    /// How long a frame sent now is expected to wait before the model starts it: the rest of
    /// the batch the model runs, then the full batches queued before it, at the typical
    /// recent time per frame; on a shared model ([`EngineInfo::sharing`]) the other streams'
    /// jobs at the model and the turns they take before this frame's too. Finished frames
    /// waiting for the receiver do not count: they no longer need the model. Zero when the
    /// model is idle and nothing waits; None when a frame already waits for a model busy
    /// before any batch time is known (the first warm-up).
    pub fn wait_estimate(&self, batch_size: usize) -> Option<Duration> {
        let others = self
            .info
            .sharing
            .as_ref()
            .map(|s| s.other_queues(&self.shared.stats))
            .unwrap_or_default();
        self.shared.stats().wait_estimate(batch_size, &others)
    }

    /// The other engines on this engine's shared model ([`EngineInfo::sharing`]); 0 on a
    /// model of its own.
    pub fn other_streams(&self) -> usize {
        self.info
            .sharing
            .as_ref()
            .map_or(0, |s| s.other_queues(&self.shared.stats).len())
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats().snapshot()
    }

    pub fn strength(&self) -> &Strength {
        &self.shared.strength
    }

    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// What a full batch is expected to take (upload, model, download): the largest time per
    /// frame of the last 8 batches, times `batch_size`. Warm-up batches (the first of
    /// each frame format) are left out, so this is None until a second batch of a format ran.
    pub fn batch_time_estimate(&self, batch_size: usize) -> Option<Duration> {
        self.shared
            .stats()
            .per_frame_estimate
            .map(|per_frame| per_frame * batch_size as u32)
    }
}
