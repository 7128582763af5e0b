//! The input's timecode track (`tmcd`, read by [`super::mp4_tracks`]: GStreamer 1.22's MP4
//! reader does not expose it). Into .mov it is kept: the first frame into qtmux carries the
//! timecode of that frame (the input's first, advanced to `--start`) as a meta, from which
//! qtmux writes a timecode track. The other muxers write none: a note says it is left out.

use gst::prelude::*;

use super::plan::{Container, Plan};
use super::state::Shared;

/// Keep the input's timecode on `mux_video` (the mux's video pad) or note that it is left out.
pub fn follow(plan: &Plan, shared: &Shared, mux_video: &gst::Pad) {
    let Some(track) = shared.mp4.iter().find(|t| t.handler == "tmcd") else {
        return;
    };
    let first = track.timecode.and_then(|tc| {
        let (h, m, s, f) = tc.fields()?;
        let (num, den) = tc.rate;
        if plan.container != Container::Mov || plan.keep.is_some() || num == 0 || den == 0 {
            return None;
        }
        let flags = match tc.drop_frame {
            true => gst_video::VideoTimeCodeFlags::DROP_FRAME,
            false => gst_video::VideoTimeCodeFlags::empty(),
        };
        let fps = gst::Fraction::new(num as i32, den as i32);
        let mut code = gst_video::ValidVideoTimeCode::new(fps, None, flags, h, m, s, f, 0).ok()?;
        if let Some(r) = plan.range {
            let frames = r.start.seconds_f64() * f64::from(num) / f64::from(den);
            code.add_frames(frames.round() as i64);
        }
        Some(code)
    });
    let Some(code) = first else {
        let at = track
            .timecode
            .map(|t| format!(", {}", t.text()))
            .unwrap_or_default();
        shared.note(format!(
            "timecode track (tmcd{at}) left out: GStreamer writes one into .mov only"
        ));
        return;
    };
    mux_video.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(b)) = &mut info.data {
            gst_video::VideoTimeCodeMeta::add(b.make_mut(), &code);
        }
        gst::PadProbeReturn::Remove
    });
}
