//! The two ends of an engine: [`EngineSender`] puts frames and markers into the bounded
//! input channel, [`EngineReceiver`] takes outputs in order; both give up at once when a flush
//! starts.

use std::time::{Duration, Instant};

use crossbeam_channel as cb;

use super::{EngineControl, Output, RecvError, SendError};
use crate::error::Error;
use crate::frame::FrameFormat;

/// What travels through the input channel: an item and the epoch it was sent in.
pub(super) struct Input<T> {
    pub(super) epoch: u64,
    pub(super) item: InItem<T>,
}

pub(super) enum InItem<T> {
    Frame {
        data: Vec<u8>,
        format: FrameFormat,
        payload: T,
        submitted: Instant,
        /// Not to be output: the temporal stage's recursion only, no network.
        decode_only: bool,
    },
    Marker {
        payload: T,
        drain: bool,
    },
    /// A discontinuity (a gap, lost frames): the frames before it run (with no later frames
    /// as their future) and the temporal stage starts afresh on the next frame.
    Reset,
    /// Run the model on blank frames of this format, output discarded; `done` is dropped
    /// once that is over (or was not needed).
    WarmUp {
        format: FrameFormat,
        done: cb::Sender<()>,
    },
}

impl<T> Input<T> {
    pub(super) fn frames(&self) -> u64 {
        matches!(self.item, InItem::Frame { .. }) as u64
    }
}

/// A warm-up sent with [`EngineSender::warm_up`]: say when it is over.
#[derive(Debug)]
pub struct WarmingUp(cb::Receiver<()>);

impl WarmingUp {
    /// Wait up to `timeout` for the warm-up (and what was sent before it) to be over: true
    /// when it is (or the worker stopped, or a flush discarded it), false on the timeout.
    pub fn wait(&self, timeout: Duration) -> bool {
        !matches!(
            self.0.recv_timeout(timeout),
            Err(cb::RecvTimeoutError::Timeout)
        )
    }
}

/// What travels through the output channel.
pub(super) struct Out<T> {
    pub(super) epoch: u64,
    pub(super) item: Output<T>,
}

/// The two ends of a new engine.
pub(super) fn pair<T>(
    tx: cb::Sender<Input<T>>,
    rx: cb::Receiver<Out<T>>,
    control: EngineControl,
) -> (EngineSender<T>, EngineReceiver<T>) {
    (
        EngineSender {
            tx,
            control: control.clone(),
        },
        EngineReceiver { rx, control },
    )
}

/// The input end. Cloneable; the stream ends when every clone is dropped.
pub struct EngineSender<T> {
    tx: cb::Sender<Input<T>>,
    control: EngineControl,
}

impl<T> Clone for EngineSender<T> {
    fn clone(&self) -> Self {
        EngineSender {
            tx: self.tx.clone(),
            control: self.control.clone(),
        }
    }
}

impl<T> std::fmt::Debug for EngineSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSender")
            .field("control", &self.control)
            .finish()
    }
}

impl<T: Send + 'static> EngineSender<T> {
    /// Queue one packed frame. Blocks while the input channel is full; a flush aborts the wait.
    pub fn send(&self, data: Vec<u8>, format: FrameFormat, payload: T) -> Result<(), SendError> {
        self.send_frame(data, format, payload, false)
    }

    /// Queue a frame whose output nobody wants, but whose content the next frames' temporal
    /// stage needs (a GStreamer DECODE_ONLY buffer: a segment's warm-up frames, the frames
    /// after its last one that offline mode looks ahead to): it goes through the temporal
    /// stage's recursion as [`EngineSender::send`]'s frames do (the state after it is the
    /// same), not through the network, and comes out in order, with its own data, as a
    /// frame. Counted in `frames_decode_only`, not in `batches`.
    pub fn send_decode_only(
        &self,
        data: Vec<u8>,
        format: FrameFormat,
        payload: T,
    ) -> Result<(), SendError> {
        self.send_frame(data, format, payload, true)
    }

    fn send_frame(
        &self,
        data: Vec<u8>,
        format: FrameFormat,
        payload: T,
        decode_only: bool,
    ) -> Result<(), SendError> {
        let submitted = Instant::now();
        format.validate().map_err(SendError::Invalid)?;
        if data.len() != format.frame_len() {
            return Err(SendError::Invalid(Error::Input(format!(
                "a {:?} {}x{} frame needs {} bytes, got {}",
                format.format,
                format.width,
                format.height,
                format.frame_len(),
                data.len()
            ))));
        }
        // Counted first so that a snapshot never shows more frames out than in.
        {
            let mut s = self.control.shared.stats();
            s.frames_in += 1;
            s.waiting += 1;
        }
        self.push(InItem::Frame {
            data,
            format,
            payload,
            submitted,
            decode_only,
        })
        .inspect_err(|_| {
            let mut s = self.control.shared.stats();
            s.frames_in -= 1;
            s.unqueue(1);
        })
    }

    /// Queue a marker: it comes out after every frame sent before it and before every frame
    /// sent after it, without cutting the batch short.
    pub fn marker(&self, payload: T) -> Result<(), SendError> {
        self.push(InItem::Marker {
            payload,
            drain: false,
        })
    }

    /// Queue a marker that also runs the pending partial batch at once (end of stream, format
    /// change, a drain request): it comes out right after the last frame sent before it.
    pub fn drain(&self, payload: T) -> Result<(), SendError> {
        self.push(InItem::Marker {
            payload,
            drain: true,
        })
    }

    /// A discontinuity in the stream (a gap, a DISCONT buffer): the frames sent before it are
    /// not fused with those sent after it, in either direction (the pending partial batch
    /// runs, the temporal state is dropped). Nothing comes out.
    pub fn reset_temporal(&self) -> Result<(), SendError> {
        self.push(InItem::Reset)
    }

    /// Have the worker run the model on blank frames of `format` (in order with what was sent
    /// before), so that the first real batch of that format is not the slow one and the batch
    /// time estimate exists before it: with the temporal stage when it is on (two frames, the
    /// second one's time is the estimate). Nothing comes out; `Stats::warm_up_ms` says when it
    /// ran, the returned [`WarmingUp`] when it is over. A frame size already run is not warmed
    /// up again.
    pub fn warm_up(&self, format: FrameFormat) -> Result<WarmingUp, SendError> {
        format.validate().map_err(SendError::Invalid)?;
        let (done, over) = cb::bounded(0);
        self.push(InItem::WarmUp { format, done })?;
        Ok(WarmingUp(over))
    }

    /// Count frames the caller dropped instead of sending (late frames): they appear in
    /// `frames_in` and `frames_dropped`.
    pub fn record_dropped(&self, frames: u64) {
        let mut s = self.control.shared.stats();
        s.frames_in += frames;
        s.drop_frames(frames);
    }

    pub fn control(&self) -> &EngineControl {
        &self.control
    }

    fn push(&self, item: InItem<T>) -> Result<(), SendError> {
        let shared = &self.control.shared;
        let (flushing, epoch, abort) = shared.current();
        if flushing {
            return Err(SendError::Flushing);
        }
        let msg = Input { epoch, item };
        // Fast path: room in the channel.
        let msg = match self.tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(cb::TrySendError::Disconnected(_)) => return Err(SendError::Stopped),
            Err(cb::TrySendError::Full(m)) => m,
        };
        cb::select! {
            send(self.tx, msg) -> r => r.map_err(|_| SendError::Stopped),
            recv(abort) -> _ => Err(SendError::Flushing),
            recv(shared.done) -> _ => Err(SendError::Stopped),
        }
    }
}

/// The output end. Cloneable (clones share the stream).
pub struct EngineReceiver<T> {
    rx: cb::Receiver<Out<T>>,
    control: EngineControl,
}

impl<T> Clone for EngineReceiver<T> {
    fn clone(&self) -> Self {
        EngineReceiver {
            rx: self.rx.clone(),
            control: self.control.clone(),
        }
    }
}

impl<T> std::fmt::Debug for EngineReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineReceiver")
            .field("control", &self.control)
            .finish()
    }
}

impl<T: Send + 'static> EngineReceiver<T> {
    /// The next output, in input order. Returns `Flushing` at once while flushing (and
    /// discards what is waiting), `Disconnected` once the stream has ended.
    pub fn recv(&self) -> Result<Output<T>, RecvError> {
        self.recv_deadline(None)
    }

    pub fn recv_timeout(&self, timeout: Duration) -> Result<Output<T>, RecvError> {
        self.recv_deadline(Some(Instant::now() + timeout))
    }

    /// Outputs until the stream ends (or a flush starts).
    pub fn iter(&self) -> impl Iterator<Item = Output<T>> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    pub fn control(&self) -> &EngineControl {
        &self.control
    }

    fn recv_deadline(&self, deadline: Option<Instant>) -> Result<Output<T>, RecvError> {
        let shared = &self.control.shared;
        loop {
            let (flushing, epoch, abort) = shared.current();
            if flushing {
                let mut n = 0;
                while let Ok(out) = self.rx.try_recv() {
                    n += out_frames(&out.item);
                }
                shared.dropped(n);
                return Err(RecvError::Flushing);
            }
            let timer = deadline.map(cb::at).unwrap_or_else(cb::never);
            let out = cb::select! {
                recv(self.rx) -> r => match r {
                    Ok(out) => out,
                    Err(_) => return Err(RecvError::Disconnected),
                },
                recv(abort) -> _ => continue,
                recv(timer) -> _ => return Err(RecvError::Timeout),
            };
            if out.epoch != epoch && out.epoch != shared.epoch() {
                shared.dropped(out_frames(&out.item));
                continue;
            }
            if let Output::Frame(f) = &out.item {
                let t = &f.timing;
                shared
                    .stats()
                    .delivered(t.finished.saturating_duration_since(t.submitted));
            }
            return Ok(out.item);
        }
    }
}

/// Frames an output holds, for the dropped count.
pub(super) fn out_frames<T>(o: &Output<T>) -> u64 {
    match o {
        Output::Frame(_) => 1,
        Output::Marker(_) => 0,
        // Counted as dropped by the worker already.
        Output::Failed { .. } => 0,
    }
}
