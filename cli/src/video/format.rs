//! The raw format the encoder is given, chosen when the decoded video's caps are known:
//! 4:2:0 8-bit (what every player decodes), except where the codec cannot code the frame size
//! that way: H.264 and H.265 code 4:2:0 at even sizes only, so an odd size is coded 4:4:4
//! (with a note). VP9 and FFV1 take odd sizes as they are.

use gst::prelude::*;

use super::plan::Codec;
use super::state::Shared;

/// The encoder's input format for frames of `width` x `height`, and a note when it is not
/// the usual 4:2:0.
pub fn choose(codec: Codec, width: i32, height: i32) -> (Option<&'static str>, Option<String>) {
    let odd = width % 2 != 0 || height % 2 != 0;
    match codec {
        Codec::Ffv1 => (None, None),
        Codec::Vp9 => (Some("I420"), None),
        Codec::H264 | Codec::H265 if odd => (
            Some("Y444"),
            Some(format!(
                "{width}x{height} is an odd size, which {} codes in 4:4:4 only (some players, web \
                 browsers among them, do not play 4:4:4; --codec vp9 keeps 4:2:0)",
                codec.name()
            )),
        ),
        Codec::H264 | Codec::H265 => (Some("I420"), None),
    }
}

/// Set `filter`'s caps (before the encoder) from the first caps that reach `pad` (the
/// decoded video, before the element): the caps event passes here before the encoder's side
/// negotiates.
pub fn follow_input(
    pad: &gst::Pad,
    filter: &gst::Element,
    codec: Codec,
    shared: &std::sync::Arc<Shared>,
) {
    let filter = filter.clone();
    let sh = shared.clone();
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        let Some(gst::PadProbeData::Event(e)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Caps(c) = e.view() else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(s) = c.caps().structure(0) else {
            return gst::PadProbeReturn::Ok;
        };
        if let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height")) {
            let (format, note) = choose(codec, w, h);
            if let Some(f) = format {
                let caps = gst::Caps::builder("video/x-raw").field("format", f).build();
                filter.set_property("caps", caps);
            }
            if let Some(n) = note {
                sh.note(n);
            }
        }
        gst::PadProbeReturn::Remove
    });
}
