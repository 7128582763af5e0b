//! Decoding from the range's keyframe instead of the file's first frame (`--start`, a job's
//! segments, whose range starts at their warm-up). Each branch parsebin feeds is held at the
//! head of its own thread (the queue after parsebin: [`Seeker::hold`], events included, so
//! that nothing downstream, decoder, element or mux, sees anything of the stream yet); when
//! the first buffer leaves parsebin ([`Seeker::watch`]: its first segment is known then) a
//! flushing seek (KEY_UNIT, SNAP_BEFORE) to the range's start goes upstream from that pad,
//! and then the holds are lifted. The demuxer restarts every stream at the keyframe at or
//! before the start (the keyframes `plan` lists: the same demuxer and parser flag them);
//! the queues drop what they held; [`super::range::Cut`] places frames by stream time, so it
//! keeps and drops exactly the frames it would have from the first frame on, and those before
//! the keyframe are not even decoded. The seek's flush stops at the holds (nothing behind them
//! has seen data). A source the demuxer cannot seek in is decoded from its first frame, as
//! before, from what the queues held.

use std::sync::{Arc, Mutex};

use gst::prelude::*;

use super::range::Origin;

pub struct Seeker {
    /// The range's start (running time of the first segment).
    target: gst::ClockTime,
    origin: Arc<Origin>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    started: bool,
    done: bool,
    held: Vec<(gst::Pad, gst::PadProbeId)>,
}

impl Seeker {
    pub fn new(target: gst::ClockTime, origin: Arc<Origin>) -> Arc<Seeker> {
        Arc::new(Seeker {
            target,
            origin,
            state: Mutex::default(),
        })
    }

    /// Start the seek at the first buffer out of `pad` (one of parsebin's), unless started.
    pub fn watch(self: &Arc<Self>, pad: &gst::Pad) {
        let me = self.clone();
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |pad, _| {
                me.start(pad);
                gst::PadProbeReturn::Remove
            },
        );
    }

    /// Hold `pad` (the source pad of a branch's first queue) until the seek is done: its data
    /// and events wait, the seek's flush events stop here. A pad added after it passes.
    pub fn hold(self: &Arc<Self>, pad: &gst::Pad) {
        let mut state = self.state.lock().unwrap();
        if state.done {
            return;
        }
        let block = pad.add_probe(gst::PadProbeType::BLOCK_DOWNSTREAM, |_, _| {
            gst::PadProbeReturn::Ok
        });
        let flush = pad.add_probe(gst::PadProbeType::EVENT_FLUSH, |_, _| {
            gst::PadProbeReturn::Drop
        });
        for id in [block, flush].into_iter().flatten() {
            state.held.push((pad.clone(), id));
        }
    }

    /// The first buffer left parsebin through `pad`: seek, once.
    fn start(self: &Arc<Self>, pad: &gst::Pad) {
        {
            let mut state = self.state.lock().unwrap();
            if state.started || state.done {
                return;
            }
            state.started = true;
        }
        // The segment in place before the seek: what the range's times are counted in.
        if let Some(first) = pad
            .sticky_event::<gst::event::Segment>(0)
            .and_then(|e| e.segment().clone().downcast::<gst::ClockTime>().ok())
        {
            self.origin.set_from(&first);
        }
        // A seek waits for the streaming thread, which is the caller.
        let (me, pad) = (self.clone(), pad.clone());
        std::thread::spawn(move || me.seek(&pad));
    }

    fn seek(&self, pad: &gst::Pad) {
        let at = self.origin.stream_time(self.target);
        let seek = gst::event::Seek::new(
            1.0,
            gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT | gst::SeekFlags::SNAP_BEFORE,
            gst::SeekType::Set,
            at,
            gst::SeekType::None,
            gst::ClockTime::NONE,
        );
        if !pad.send_event(seek) {
            gst::debug!(
                gst::CAT_DEFAULT,
                "the source cannot seek to {at}: decoding from its first frame"
            );
        }
        let held = {
            let mut state = self.state.lock().unwrap();
            state.done = true;
            std::mem::take(&mut state.held)
        };
        for (pad, id) in held {
            pad.remove_probe(id);
        }
    }
}
