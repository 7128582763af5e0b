//! GStreamer's error messages as one line that names the problem: the input file, the
//! output, the element or the encoder.

use anyhow::anyhow;
use gst::prelude::*;

use super::pipeline::ELEMENT;
use super::plan::Plan;

/// The first error on the bus, as one line.
pub fn bus_error(bus: &gst::Bus, plan: &Plan) -> Option<anyhow::Error> {
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Error(_) = msg.view() {
            return Some(error_line(&msg, plan));
        }
    }
    None
}

/// `text (detail)`, the detail being the last line of a message's debug string (where elements
/// put the specific cause), on one line.
pub fn with_detail(text: &str, debug: Option<&str>) -> String {
    let text = one_line(text);
    let detail = debug
        .and_then(|d| d.lines().last())
        .map(one_line)
        .unwrap_or_default();
    if detail.is_empty()
        || detail.contains(".rs(")
        || detail.contains(".c(")
        || detail.starts_with('/')
    {
        text
    } else {
        format!("{} ({detail})", text.trim_end_matches('.'))
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Turn a bus error into one line that names the problem (and the file, when it is the input's).
pub fn error_line(msg: &gst::Message, plan: &Plan) -> anyhow::Error {
    let gst::MessageView::Error(err) = msg.view() else {
        return anyhow!("pipeline error");
    };
    let e = err.error();
    let text = one_line(&e.to_string());
    let text = text.trim_end_matches('.');
    let detailed = with_detail(text, err.debug().as_deref());
    let src = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
    let input = plan.input.display();
    if e.matches(gst::StreamError::TypeNotFound) || e.matches(gst::StreamError::WrongType) {
        return anyhow!("{input}: not a media file GStreamer can read ({text})");
    }
    if e.matches(gst::CoreError::MissingPlugin) || e.matches(gst::StreamError::CodecNotFound) {
        return anyhow!("{input}: no decoder for one of its streams ({text}); install the GStreamer plugin for it");
    }
    match src.as_str() {
        "sink" => anyhow!("cannot write {}: {detailed}", plan.output.display()),
        "denoise" => anyhow!("{ELEMENT}: {detailed}"),
        "encoder" | "encfilter" | "mux" | "pre" | "post" | "vmuxqueue" => {
            anyhow!("{src}: {detailed}")
        }
        _ => anyhow!("{input}: cannot read this file; it may be damaged or truncated ({detailed})"),
    }
}
