//! Decoding a job segment's video from its keyframe instead of the file's first frame: the
//! video branch is held at the head of its own thread (the queue after parsebin,
//! [`Seeker::hold`], events included, so that nothing downstream, decoder, element or mux,
//! sees anything of the stream yet); at the first video buffer out of parsebin
//! ([`Seeker::watch`]) a flushing seek (KEY_UNIT, SNAP_BEFORE) to the range's start goes upstream from
//! that pad, and then the hold is lifted. The demuxer restarts at the keyframe at or before
//! the start (the keyframes `plan` lists: the same demuxer and parser flag them); the queue
//! drops what it held; packets ahead of that keyframe (a Matroska seek starts at its cluster)
//! are dropped; [`super::range::Cut`] places frames by PTS (the plan's offset), so it keeps
//! and drops exactly the frames it would have from the first frame on, and those before the
//! keyframe are not even decoded. The seek's flush stops at the hold (nothing behind it has
//! seen data). A source the demuxer cannot seek in is decoded from its first frame, as
//! before, from what the queue held.

use std::sync::{Arc, Mutex};

use gst::prelude::*;

use super::range::running_of;

pub struct Seeker {
    /// The range's start (running time of the first segment).
    target: gst::ClockTime,
    /// The video's PTS minus running time (the plan's).
    pts_offset: i64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    started: bool,
    done: bool,
    held: Vec<(gst::Pad, gst::PadProbeId)>,
}

impl Seeker {
    pub fn new(target: gst::ClockTime, pts_offset: i64) -> Arc<Seeker> {
        Arc::new(Seeker {
            target,
            pts_offset,
            state: Mutex::default(),
        })
    }

    /// Start the seek at the first buffer out of `pad` (parsebin's video pad).
    /// Also, after the seek's flush, drop the packets ahead of the first keyframe that come
    /// before the range (a Matroska seek starts at the keyframe's cluster, which may open
    /// with frames that depend on earlier ones: a decoder handed those drops them, and then
    /// times the frames after them from its own count, one frame off).
    pub fn watch(self: &Arc<Self>, pad: &gst::Pad) {
        let me = self.clone();
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |pad, _| {
                me.start(pad);
                gst::PadProbeReturn::Remove
            },
        );
        let me = self.clone();
        let ahead = std::sync::atomic::AtomicBool::new(false);
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_FLUSH,
            move |_, info| {
                use std::sync::atomic::Ordering::Relaxed;
                let buf = match &info.data {
                    Some(gst::PadProbeData::Event(e)) => {
                        if e.type_() == gst::EventType::FlushStop {
                            ahead.store(true, Relaxed);
                        }
                        return gst::PadProbeReturn::Ok;
                    }
                    Some(gst::PadProbeData::Buffer(b)) if ahead.load(Relaxed) => b,
                    _ => return gst::PadProbeReturn::Ok,
                };
                if !buf.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                    ahead.store(false, Relaxed);
                    return gst::PadProbeReturn::Ok;
                }
                let before = buf
                    .pts()
                    .and_then(|pts| running_of(pts, me.pts_offset))
                    .is_none_or(|rt| rt < me.target);
                if !before {
                    ahead.store(false, Relaxed);
                    return gst::PadProbeReturn::Ok;
                }
                // Taken and handled rather than Drop: see range::Cut::install.
                drop(info.take_buffer());
                gst::PadProbeReturn::Handled
            },
        );
    }

    /// Hold `pad` (the source pad of the video's first queue) until the seek is done: its
    /// data and events wait, the seek's flush events stop here.
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
        // A seek waits for the streaming thread, which is the caller.
        let (me, pad) = (self.clone(), pad.clone());
        std::thread::spawn(move || me.seek(&pad));
    }

    fn seek(&self, pad: &gst::Pad) {
        // Positions are stream times: the running time in the demuxers met (presentation
        // time, edit lists applied); landing early is harmless (the cut drops the extra).
        let at = self.target;
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
