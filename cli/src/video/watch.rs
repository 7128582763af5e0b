//! The running pipeline seen as a stream of [`VideoEvent`]s, as the core's train, eval and
//! fetch report theirs: progress, notes and warnings, Ctrl-C, the end. The bus is read here;
//! rendering is the caller's business.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use gst::prelude::*;

use super::errors::{bus_error, error_line, with_detail};
use super::plan::Plan;
use super::state::Shared;
use super::stop;
use crate::interrupt;

/// What happened while the pipeline ran.
#[derive(Debug)]
pub enum VideoEvent {
    /// Frames out of the element so far, and the total expected when known.
    Progress { done: u64, total: Option<u64> },
    /// Something the user should know (audio re-encoded, a stream left out).
    Note(String),
    /// A WARNING message from the pipeline, as one line.
    Warning(String),
    /// Ctrl-C: the frames in flight are finished and the file closed; about `done` frames.
    Interrupted { done: u64 },
    /// The end of the stream: the file is complete.
    Eos,
    /// The job failed (or was aborted); nothing more follows.
    Error(anyhow::Error),
}

/// How the pipeline ended.
pub struct Outcome {
    pub interrupted: bool,
    pub elapsed: Duration,
    pub duration: Option<gst::ClockTime>,
}

/// The pipeline, started, and what its events are drawn from.
pub struct Watch<'a> {
    pipeline: &'a gst::Pipeline,
    bus: gst::Bus,
    plan: &'a Plan,
    shared: &'a Arc<Shared>,
    start: Instant,
    duration: Option<gst::ClockTime>,
    interrupted: bool,
    queue: std::collections::VecDeque<VideoEvent>,
}

impl<'a> Watch<'a> {
    /// READY first (the element loads the model there, so a failure is reported before
    /// streaming), then PLAYING.
    pub fn start(
        pipeline: &'a gst::Pipeline,
        plan: &'a Plan,
        shared: &'a Arc<Shared>,
    ) -> anyhow::Result<Watch<'a>> {
        let bus = pipeline.bus().expect("a pipeline has a bus");
        for state in [gst::State::Ready, gst::State::Playing] {
            if pipeline.set_state(state).is_err() {
                return Err(
                    bus_error(&bus, plan).unwrap_or_else(|| anyhow!("the pipeline cannot start"))
                );
            }
        }
        Ok(Watch {
            pipeline,
            bus,
            plan,
            shared,
            start: Instant::now(),
            duration: None,
            interrupted: false,
            queue: Default::default(),
        })
    }

    /// The next event; waits up to 100 ms for a bus message, so progress comes at least
    /// that often.
    pub fn next_event(&mut self) -> VideoEvent {
        while self.queue.is_empty() {
            self.poll();
        }
        self.queue.pop_front().expect("not empty")
    }

    pub fn outcome(&self) -> Outcome {
        Outcome {
            interrupted: self.interrupted,
            elapsed: self.start.elapsed(),
            duration: self.duration,
        }
    }

    /// One round: callbacks' errors and notes, Ctrl-C, progress, then one bus message.
    fn poll(&mut self) {
        if let Some(e) = self.shared.error.lock().unwrap().take() {
            self.queue.push_back(VideoEvent::Error(anyhow!(e)));
            return;
        }
        for n in self.shared.notes.lock().unwrap().drain(..) {
            self.queue.push_back(VideoEvent::Note(n));
        }
        if self.check_interrupt() {
            return;
        }
        if self.duration.is_none() {
            self.duration = self.pipeline.query_duration::<gst::ClockTime>();
        }
        self.queue.push_back(VideoEvent::Progress {
            done: self.shared.frames_out.load(Ordering::Relaxed),
            total: self.total_frames(),
        });
        let Some(msg) = self.bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            if self.demuxer_gave_up() {
                let e = bus_error(&self.bus, self.plan).unwrap_or_else(|| {
                    anyhow!(
                        "{}: cannot read this file; it may be damaged or truncated (the demuxer \
                         stopped before finding any stream)",
                        self.plan.input.display()
                    )
                });
                self.queue.push_back(VideoEvent::Error(e));
            }
            return;
        };
        use gst::MessageView;
        match msg.view() {
            MessageView::Eos(_) => self.queue.push_back(VideoEvent::Eos),
            MessageView::Error(_) => {
                let own = self.shared.error.lock().unwrap().take();
                let e = own
                    .map(|e| anyhow!(e))
                    .unwrap_or_else(|| error_line(&msg, self.plan));
                self.queue.push_back(VideoEvent::Error(e));
            }
            MessageView::Warning(w) => {
                let text = w.error().to_string();
                if !text.is_empty() {
                    let line = with_detail(&text, w.debug().as_deref());
                    self.queue.push_back(VideoEvent::Warning(line));
                }
            }
            _ => {}
        }
    }

    /// Ctrl-C once: end the streams ([`stop::end_streams`]), so that the frames inside the
    /// element are finished and the mux finalises the file. Twice: abort. True when aborting.
    fn check_interrupt(&mut self) -> bool {
        match interrupt::presses() {
            0 => false,
            1 if !self.interrupted => {
                self.interrupted = true;
                let done = self.shared.frames_out.load(Ordering::Relaxed);
                self.queue.push_back(VideoEvent::Interrupted { done });
                if !stop::end_streams(self.shared) {
                    interrupt::abort();
                }
                false
            }
            1 => false,
            _ => {
                self.queue
                    .push_back(VideoEvent::Error(anyhow!("aborted: no output written")));
                true
            }
        }
    }

    /// Whether a demuxer inside parsebin stopped (its task paused: an error or the end)
    /// before parsebin exposed any stream. parsebin drops an error that its demuxer posts
    /// while parsebin brings it to PAUSED (a cut MP4 without its index, read in pull mode):
    /// nothing reaches the bus and the pipeline would wait for ever.
    fn demuxer_gave_up(&self) -> bool {
        let Some(parse) = self
            .pipeline
            .by_name("parse")
            .and_then(|p| p.downcast::<gst::Bin>().ok())
        else {
            return false;
        };
        if parse.num_src_pads() > 0 {
            return false;
        }
        parse.iterate_recurse().into_iter().flatten().any(|e| {
            let demuxer = e.factory().is_some_and(|f| f.klass().contains("Demux"));
            demuxer
                && e.sink_pads()
                    .iter()
                    .any(|p| p.task_state() == gst::TaskState::Paused)
        })
    }

    /// Duration (of the chosen part) x frame rate, when both are known.
    fn total_frames(&self) -> Option<u64> {
        let fps = (*self.shared.fps.lock().unwrap())?;
        let d = self.duration?;
        let d = self.plan.range.map_or(d, |r| r.length(d));
        Some(
            (d.nseconds() as u128 * fps.numer() as u128 / (fps.denom() as u128 * 1_000_000_000))
                .max(1) as u64,
        )
    }
}
