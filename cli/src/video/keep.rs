//! The frames a segment of a job writes (`clipdenoise segment`): the chain denoises from the
//! warm-up's first frame (the [`super::range::Range`] selects those, before the element, and
//! restamps them from 0), and only the frames in `[start, end)` of that timeline go on to the
//! encoder, which thus starts on the segment's first frame (a keyframe) at running time 0.
//! The others enter the element flagged DECODE_ONLY: it runs only their temporal recursion
//! (the kept frames' past, and future with a lookahead), not the network.

use gst::prelude::*;

/// Frames kept after the element, by timestamp (the range's timeline: 0 is the warm-up's
/// first frame): `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub start: gst::ClockTime,
    pub end: Option<gst::ClockTime>,
}

impl Keep {
    /// Whether the frame at `pts` (the range's timeline) is one of those written.
    fn keeps(&self, pts: gst::ClockTime) -> bool {
        pts >= self.start && self.end.is_none_or(|e| pts < e)
    }

    /// Flag the frames that are not kept DECODE_ONLY on `pad` (the element's sink pad): the
    /// element then updates its temporal state with them without running the network, and
    /// passes them on untouched (dropped after it, [`Keep::install`]).
    pub fn mark_decode_only(self, pad: &gst::Pad) {
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(gst::PadProbeData::Buffer(buf)) = &mut info.data else {
                return gst::PadProbeReturn::Ok;
            };
            if buf.pts().is_some_and(|p| !self.keeps(p)) {
                buf.make_mut().set_flags(gst::BufferFlags::DECODE_ONLY);
            }
            gst::PadProbeReturn::Ok
        });
    }

    /// Drop the other frames on `pad` (after the element, before anything counts them as
    /// encoded), and
    /// offset `out` (the filter's output) so that the first kept frame runs at time 0
    /// whatever the demuxer's segment and the range's shift made of it. The offset is set
    /// here, upstream of `out`, so that it applies to that first frame already.
    pub fn install(self, pad: &gst::Pad, out: &gst::Pad) {
        let out = out.clone();
        let first = std::sync::atomic::AtomicBool::new(true);
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let pts = match &info.data {
                Some(gst::PadProbeData::Buffer(buf)) => buf.pts(),
                _ => None,
            };
            let Some(p) = pts else {
                return gst::PadProbeReturn::Ok;
            };
            if !self.keeps(p) {
                // Taken and handled rather than Drop, which unrefs it twice on a sink pad.
                drop(info.take_buffer());
                return gst::PadProbeReturn::Handled;
            }
            if first.swap(false, std::sync::atomic::Ordering::Relaxed) {
                let running = pad
                    .sticky_event::<gst::event::Segment>(0)
                    .and_then(|e| e.segment().clone().downcast::<gst::ClockTime>().ok())
                    .and_then(|s| s.to_running_time_full(p));
                let ns = match running {
                    Some(gst::format::Signed::Positive(t)) => t.nseconds() as i64,
                    Some(gst::format::Signed::Negative(t)) => -(t.nseconds() as i64),
                    None => 0,
                };
                out.set_offset(-ns);
            }
            gst::PadProbeReturn::Ok
        });
    }
}
