//! The raw format the encoder is given, chosen when the decoded video's caps are known: the
//! input's chroma subsampling (4:2:0, 4:2:2, 4:4:4; RGB counts as 4:4:4) and bit depth (8 or
//! 10) where the encoder takes them, else 4:2:0 8-bit, with a one-line note of what was
//! converted. The element denoises 8- and 10-bit frames at their depth (deeper input is
//! denoised and written at 10 bits, with a note). H.264
//! and H.265 code 4:2:0 and 4:2:2 at even sizes only, so an odd size is coded 4:4:4 (with a
//! note). FFV1 takes whatever the frames are.

use gst::prelude::*;

use super::plan::Codec;
use super::state::Shared;

/// Chroma subsampling: 0 for 4:4:4, 1 for 4:2:2, 2 for 4:2:0.
fn chroma_of(info: &gst_video::VideoFormatInfo) -> usize {
    if !info.is_yuv() || info.n_components() < 3 {
        return if info.is_gray() { 2 } else { 0 };
    }
    match (info.w_sub()[1], info.h_sub()[1]) {
        (0, 0) => 0,
        (1, 0) => 1,
        _ => 2,
    }
}

const CHROMA_NAMES: [&str; 3] = ["4:4:4", "4:2:2", "4:2:0"];
/// Formats by [chroma][10-bit].
const FORMATS: [[&str; 2]; 3] = [
    ["Y444", "Y444_10LE"],
    ["Y42B", "I422_10LE"],
    ["I420", "I420_10LE"],
];

/// Whether `codec`'s encoder takes raw `format`.
fn takes(codec: Codec, format: &str) -> bool {
    let Some(factory) = gst::ElementFactory::find(codec.encoder()) else {
        return false;
    };
    let want = gst::Caps::builder("video/x-raw")
        .field("format", format)
        .build();
    factory
        .static_pad_templates()
        .iter()
        .filter(|t| t.direction() == gst::PadDirection::Sink)
        .any(|t| t.caps().can_intersect(&want))
}

/// The encoder's input format for `info`'s frames, and notes for the user.
pub fn choose(codec: Codec, info: &gst_video::VideoInfo) -> (Option<&'static str>, Vec<String>) {
    if codec == Codec::Ffv1 {
        return (None, Vec::new());
    }
    let (w, h) = (info.width(), info.height());
    let fi = info.format_info();
    let depth = fi.depth()[0];
    let mut chroma = chroma_of(&fi);
    let mut notes = Vec::new();
    let odd = w % 2 != 0 || h % 2 != 0;
    if odd && chroma != 0 && matches!(codec, Codec::H264 | Codec::H265) {
        chroma = 0;
        notes.push(format!(
            "{w}x{h} is an odd size, which {} codes in 4:4:4 only (some players, web browsers \
             among them, do not play 4:4:4; --codec vp9 keeps 4:2:0)",
            codec.name()
        ));
    }
    let deep = usize::from(depth > 8);
    let (format, kept_chroma, kept_deep) = [(chroma, deep), (chroma, 0), (2, deep), (2, 0)]
        .into_iter()
        .find(|&(c, d)| takes(codec, FORMATS[c][d]))
        .map_or(("I420", 2, 0), |(c, d)| (FORMATS[c][d], c, d));
    if kept_chroma != chroma {
        notes.push(format!(
            "{} video converted to 4:2:0: {} takes no {} here",
            CHROMA_NAMES[chroma],
            codec.name(),
            CHROMA_NAMES[chroma]
        ));
    }
    if let Some(note) = depth_note(depth, kept_deep == 1, chroma_of(&fi), format) {
        notes.push(note);
    }
    (Some(format), notes)
}

/// What happens to input deeper than 8 bits, if the user should hear of it: the encoder
/// writes 10 bits where it can (`written_deep`), and the element denoises 10-bit frames in
/// 4:2:0 only (I420_10LE, P010); other chroma reaches it as 8-bit frames.
fn depth_note(depth: u32, written_deep: bool, input_chroma: usize, format: &str) -> Option<String> {
    if depth <= 8 {
        return None;
    }
    if !written_deep {
        return Some(format!("{depth}-bit video converted to 8-bit ({format})"));
    }
    let denoised = if input_chroma == 2 { 10 } else { 8 };
    if denoised >= depth {
        return None;
    }
    let why = if denoised == 8 {
        " (clipdenoise takes 10-bit frames in 4:2:0 only)"
    } else {
        ""
    };
    Some(format!(
        "{depth}-bit {} video: written as 10-bit ({format}), denoised at {denoised} bits{why}",
        CHROMA_NAMES[input_chroma]
    ))
}

/// HDR10 static metadata (mastering display, content light level) on the decoded video: x265
/// writes it into the output (the caps carry it to the encoder), the other encoders drop it.
fn hdr_note(codec: Codec, caps: &gst::CapsRef) -> Option<String> {
    let s = caps.structure(0)?;
    let hdr = ["mastering-display-info", "content-light-level"]
        .iter()
        .any(|f| s.has_field(*f));
    (hdr && codec != Codec::H265).then(|| {
        format!(
            "the HDR10 metadata (mastering display, content light level) is left out: {} does not \
             carry it; it needs --codec h265",
            codec.name()
        )
    })
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
        if let Ok(vinfo) = gst_video::VideoInfo::from_caps(c.caps()) {
            let (format, mut notes) = choose(codec, &vinfo);
            notes.extend(hdr_note(codec, c.caps()));
            if let Some(f) = format {
                let caps = gst::Caps::builder("video/x-raw").field("format", f).build();
                filter.set_property("caps", caps);
            }
            for n in notes {
                sh.note(n);
            }
        }
        gst::PadProbeReturn::Remove
    });
}
