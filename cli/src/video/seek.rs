//! Decoding from the range's keyframe instead of the file's first frame (`--start`, a job's
//! segments, whose range starts at their warm-up): every stream parsebin exposes is held at
//! its first buffer (its events pass, so its first segment is known); at the first hold a
//! flushing seek (KEY_UNIT, SNAP_BEFORE) to the range's start goes upstream from that pad, and
//! then every hold is lifted. The demuxer restarts every stream at the keyframe at or before
//! the start (the keyframes `plan` lists: the same demuxer and parser flag them);
//! [`super::range::Cut`] places frames by stream time, so it keeps and drops exactly the frames
//! it would have from the first frame on, and those before the keyframe are not even decoded.
//! Nothing passes a hold before the seek, so nothing is seen twice; a source the demuxer
//! cannot seek in is decoded from its first frame, as before.

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

    /// Hold `pad` (one of parsebin's, before it is linked) at its first buffer until the seek
    /// is done; a pad exposed after it passes.
    pub fn hold(self: &Arc<Self>, pad: &gst::Pad) {
        let mut state = self.state.lock().unwrap();
        if state.done {
            return;
        }
        let me = self.clone();
        let id = pad.add_probe(
            gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |pad, _| {
                me.first_hold(pad);
                gst::PadProbeReturn::Ok
            },
        );
        if let Some(id) = id {
            state.held.push((pad.clone(), id));
        }
    }

    /// A stream reached its hold: the first one starts the seek.
    fn first_hold(self: &Arc<Self>, pad: &gst::Pad) {
        {
            let mut state = self.state.lock().unwrap();
            if state.started {
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
        // A seek waits for the streaming thread, which is the one held here.
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
