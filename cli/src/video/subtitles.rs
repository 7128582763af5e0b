//! Subtitle streams on their way into the mux: text given in the UTF-8 the muxers take (from
//! the demuxers' Pango markup), and, for qtmux (MP4/MOV), the demuxer's GAP events as empty
//! cues and an empty cue where each cue ends. [`super::streams`] routes the streams.

use std::sync::atomic::{AtomicBool, Ordering};

use gst::prelude::*;

/// On `pad` (a text subtitle stream): caps as `caps` (UTF-8 text), and each cue given in Pango
/// markup (`markup`) as the input file had it: the escapes the demuxer added undone (it
/// escapes until a cue has a tag), and the tags left out when `strip_tags`.
pub fn as_utf8(pad: &gst::Pad, caps: gst::Caps, markup: bool, strip_tags: bool) {
    let seen_tag = AtomicBool::new(false);
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            match &info.data {
                Some(gst::PadProbeData::Event(e)) if e.type_() == gst::EventType::Caps => {
                    info.data = Some(gst::PadProbeData::Event(gst::event::Caps::new(&caps)));
                }
                Some(gst::PadProbeData::Buffer(b)) if markup => {
                    let Ok(map) = b.map_readable() else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let text = String::from_utf8_lossy(&map).into_owned();
                    drop(map);
                    let tagged = seen_tag.fetch_or(text.contains('<'), Ordering::SeqCst)
                        || text.contains('<');
                    let out = cue_text(&text, tagged, strip_tags);
                    let mut nb = gst::Buffer::from_slice(out.into_bytes());
                    {
                        let m = nb.get_mut().expect("a new buffer is writable");
                        m.set_pts(b.pts());
                        m.set_dts(b.dts());
                        m.set_duration(b.duration());
                        m.set_flags(b.flags());
                    }
                    info.data = Some(gst::PadProbeData::Buffer(nb));
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

/// On `pad` (a subtitle stream into qtmux, linked to `qsink`): each GAP event (the demuxer's
/// "no cue until then") sent on as an empty cue of its time and duration. qtmux 1.22 ignores
/// GAP events and waits for the next cue, while the video it holds back fills the queues up to
/// the demuxer: a file with a minute between cues stalls.
pub fn gaps_as_empty_cues(pad: &gst::Pad, qsink: &gst::Pad) {
    let qsink = qsink.downgrade();
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        let Some(gst::PadProbeData::Event(e)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Gap(gap) = e.view() else {
            return gst::PadProbeReturn::Ok;
        };
        let (ts, duration) = gap.get();
        let Some(qsink) = qsink.upgrade() else {
            return gst::PadProbeReturn::Ok;
        };
        let mut cue = gst::Buffer::new();
        {
            let b = cue.get_mut().expect("a new buffer is writable");
            b.set_pts(ts);
            b.set_duration(duration);
        }
        let _ = qsink.chain(cue);
        // Taken and handled rather than Drop, which gst-rs unrefs twice (see range::Cut).
        drop(info.take_event());
        gst::PadProbeReturn::Handled
    });
}

/// On `mux_pad` (qtmux's subtitle pad): an empty cue where each cue ends, unless the next one
/// starts there, and before the end. qtmux times a sample until the next one: a cue followed
/// by nothing (the last, or the last before a cut's end) would last 0 s.
pub fn end_cues(mux_pad: &gst::Pad) {
    let open_until = std::sync::Mutex::new(None::<gst::ClockTime>);
    mux_pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |pad, info| {
            let next = match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => {
                    let start = b.pts();
                    let end = start.zip(b.duration()).map(|(p, d)| p + d);
                    let ending = open_until.lock().unwrap().take();
                    if b.size() > 0 {
                        *open_until.lock().unwrap() = end;
                    }
                    ending.filter(|e| start.is_some_and(|s| s > *e))
                }
                Some(gst::PadProbeData::Event(e)) if e.type_() == gst::EventType::Eos => {
                    open_until.lock().unwrap().take()
                }
                _ => None,
            };
            if let Some(at) = next {
                // With a length of its own: qtmux leaves out a last sample of none.
                let mut cue = gst::Buffer::new();
                let b = cue.get_mut().expect("a new buffer is writable");
                b.set_pts(at);
                b.set_duration(gst::ClockTime::MSECOND);
                let _ = pad.chain(cue);
            }
            gst::PadProbeReturn::Ok
        },
    );
}

/// A cue from Pango markup: escapes undone unless the stream has tags (`tagged`: then the text
/// is the file's own), tags removed when `strip_tags` (and then the escapes too).
fn cue_text(markup: &str, tagged: bool, strip_tags: bool) -> String {
    let text = match strip_tags {
        true => {
            let mut out = String::with_capacity(markup.len());
            let mut in_tag = false;
            for c in markup.chars() {
                match c {
                    '<' => in_tag = true,
                    '>' if in_tag => in_tag = false,
                    c if !in_tag => out.push(c),
                    _ => {}
                }
            }
            out
        }
        false => markup.to_string(),
    };
    if tagged && !strip_tags {
        return text;
    }
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::cue_text;

    #[test]
    fn cues_from_pango_markup() {
        // Escaped by the demuxer (no tag seen yet): the escapes undone.
        assert_eq!(
            cue_text("a &amp; b &quot;q&quot; &lt;3", false, false),
            "a & b \"q\" <3"
        );
        // The file's own tags: kept for Matroska, removed (with the escapes) for timed text.
        assert_eq!(
            cue_text("<b>bold</b> &amp;", true, false),
            "<b>bold</b> &amp;"
        );
        assert_eq!(cue_text("<b>bold</b> &amp;", true, true), "bold &");
    }
}
