//! The pipeline of a [`Plan`]: source, parsebin, the video chain around the element, the
//! encoder and the mux, with the probes that count frames and capture the side-by-side pair.
//! parsebin's streams are linked as they appear ([`super::streams`]).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::anyhow;
use gst::prelude::*;

use super::plan::{Codec, ElementProps, Plan};
use super::range::{Cut, Range};
use super::state::{extend, Shared};
use super::{format, stop, streams, timecode};

/// The element this subcommand runs.
pub const ELEMENT: &str = "clipdenoise";

pub fn make(factory: &str, name: Option<&str>) -> anyhow::Result<gst::Element> {
    let b = gst::ElementFactory::make(factory);
    let b = match name {
        Some(n) => b.name(n),
        None => b,
    };
    b.build().map_err(|_| {
        anyhow!("GStreamer element {factory} is missing (install the plugin that provides it)")
    })
}

/// Set a property from its string form (enums by nick, numbers, ...): for encoders, whose
/// property types differ between versions.
fn set_prop(e: &gst::Element, name: &str, value: &str) -> anyhow::Result<()> {
    let pspec = e.find_property(name).ok_or_else(|| {
        anyhow!(
            "element {} has no property {name}",
            e.factory().map(|f| f.name()).unwrap_or_default()
        )
    })?;
    let v = gst::glib::Value::deserialize_with_pspec(value, &pspec)
        .ok()
        .filter(|v| valid(&pspec, v))
        .ok_or_else(|| anyhow!("invalid value '{value}' for {name}"))?;
    e.set_property_from_value(name, &v);
    Ok(())
}

/// Whether `v` is a valid value of `pspec` (in its range): GLib's own check, on a copy
/// (setting an invalid value panics).
fn valid(pspec: &gst::glib::ParamSpec, v: &gst::glib::Value) -> bool {
    use gst::glib::translate::{ToGlibPtr, ToGlibPtrMut};
    let mut copy = v.clone();
    // SAFETY: both pointers are valid for the call, and the copy is ours to change.
    let changed = unsafe {
        gst::glib::gobject_ffi::g_param_value_validate(
            pspec.to_glib_none().0,
            copy.to_glib_none_mut().0,
        )
    };
    changed == 0
}

/// Build `pipeline` for `plan`, writing into `temp`.
pub fn build(
    pipeline: &gst::Pipeline,
    plan: &Plan,
    temp: &Path,
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    let src = make("filesrc", Some("src"))?;
    src.set_property("location", plan.input.to_string_lossy().as_ref());
    let parse = make("parsebin", Some("parse"))?;
    let mux = make(plan.container.muxer(), Some("mux"))?;
    let sink = make("filesink", Some("sink"))?;
    sink.set_property("location", temp.to_string_lossy().as_ref());
    pipeline.add_many([&src, &parse, &mux, &sink])?;
    src.link(&parse)?;
    mux.link(&sink)?;
    let chain = video_chain(pipeline, plan, &mux)?;
    let pre_sink = chain.pre.static_pad("sink").expect("videoconvert has sink");
    format::follow_input(&pre_sink, &chain.filter, plan.codec, shared);
    // Before install_probes: the frames it counts out of the element are those encoded.
    if let Some(k) = plan.keep {
        let element = pipeline
            .by_name("denoise")
            .and_then(|e| e.static_pad("sink"))
            .ok_or_else(|| anyhow!("the video chain has no {ELEMENT}"))?;
        k.mark_decode_only(&element);
        k.install(
            &chain
                .post
                .static_pad("sink")
                .expect("videoconvert has sink"),
            &chain.filter.static_pad("src").expect("capsfilter has src"),
        );
    }
    install_probes(&chain, shared, plan);
    timecode::follow(plan, shared, &chain.mux_video);
    streams::connect(pipeline, &parse, &chain.pre, &mux, plan, shared);
    Ok(())
}

/// The elements of the video chain the probes and callbacks need.
struct Chain {
    pre: gst::Element,
    rotate: gst::Element,
    post: gst::Element,
    filter: gst::Element,
    /// The mux's video pad.
    mux_video: gst::Pad,
}

/// The video chain after the decoder, up to the mux: videoconvert ! videoflip ! clipdenoise !
/// videoconvert ! capsfilter ! encoder [! parser] ! queue. videoflip turns the frames upright
/// from the input's orientation tag (a portrait phone clip stores landscape frames and a
/// rotation, which no GStreamer muxer writes back), as ffmpeg does by default.
fn video_chain(pipeline: &gst::Pipeline, plan: &Plan, mux: &gst::Element) -> anyhow::Result<Chain> {
    let pre = make("videoconvert", Some("pre"))?;
    let rotate = make("videoflip", Some("rotate"))?;
    rotate.set_property_from_str("video-direction", "auto");
    let element = make(ELEMENT, Some("denoise"))?;
    configure_element(&element, &plan.element);
    let post = make("videoconvert", Some("post"))?;
    let filter = make("capsfilter", Some("encfilter"))?;
    // Its caps are set when the decoded video's are known (format::follow_input).
    let enc = make(plan.codec.encoder(), Some("encoder"))?;
    configure_encoder(&enc, plan.codec, plan.crf, &plan.preset)?;
    let mut chain = vec![
        pre.clone(),
        rotate.clone(),
        element,
        post.clone(),
        filter.clone(),
        enc,
    ];
    if let Some(p) = plan.codec.parser() {
        chain.push(make(p, None)?);
    }
    let vqueue = make("queue", Some("vmuxqueue"))?;
    chain.push(vqueue.clone());
    pipeline.add_many(&chain)?;
    gst::Element::link_many(&chain)?;
    let mux_video = mux
        .request_pad_simple("video_%u")
        .ok_or_else(|| anyhow!("{} has no video input", plan.container.muxer()))?;
    vqueue
        .static_pad("src")
        .expect("queue has src")
        .link(&mux_video)?;
    Ok(Chain {
        pre,
        rotate,
        post,
        filter,
        mux_video,
    })
}

fn configure_element(element: &gst::Element, props: &ElementProps) {
    element.set_property("model", &props.model);
    element.set_property("device", &props.device);
    element.set_property_from_str("precision", props.precision.as_str());
    element.set_property("strength", props.strength);
    element.set_property("qos", false); // offline: never drop a frame
    if let Some(b) = props.batch_size {
        element.set_property("batch-size", b);
    }
    if let Some(p) = props.max_pixels {
        element.set_property("max-pixels", p);
    }
    if let Some(t) = props.temporal {
        element.set_property("temporal", t);
    }
    element.set_property("coarse-grain", props.coarse_grain);
    element.set_property("refine", &props.refine);
    element.set_property("lookahead", props.lookahead);
    element.set_property("temporal-origin", props.temporal_origin);
}

fn configure_encoder(
    enc: &gst::Element,
    codec: Codec,
    crf: Option<u32>,
    preset: &str,
) -> anyhow::Result<()> {
    match codec {
        Codec::H264 => {
            set_prop(enc, "pass", "qual")?;
            set_prop(enc, "quantizer", &crf.unwrap_or(20).to_string())?;
            // pass=qual also caps the rate at `bitrate` through the VBV (2 Mbit/s by default),
            // which overrides the CRF on detailed or noisy video: lift the cap.
            set_prop(enc, "bitrate", "2048000")?;
            set_prop(enc, "speed-preset", preset)?;
        }
        Codec::H265 => {
            set_prop(enc, "speed-preset", preset)?;
            set_prop(enc, "option-string", &format!("crf={}", crf.unwrap_or(24)))?;
        }
        Codec::Vp9 => {
            // Constrained quality with a bitrate cap high enough that the quality level rules.
            set_prop(enc, "end-usage", "cq")?;
            set_prop(enc, "target-bitrate", "50000000")?;
            set_prop(enc, "cq-level", &crf.unwrap_or(32).to_string())?;
            set_prop(enc, "cpu-used", "4")?;
            // No look-ahead: GStreamer 1.22's vp9enc flushes libvpx once at EOS, which leaves
            // the frames still in its look-ahead out of the file (12 of 75 at this bitrate).
            set_prop(enc, "lag-in-frames", "0")?;
            set_prop(enc, "row-mt", "true")?;
            let threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .min(16);
            set_prop(enc, "threads", &threads.to_string())?;
        }
        Codec::Ffv1 => {}
    }
    Ok(())
}

/// Keep the frames of --start/--duration/--to only (as they enter the chain); count frames,
/// remember stream ends, frame rate and size, and capture the side-by-side frames (upright,
/// on their way into the element and out of it).
fn install_probes(chain: &Chain, shared: &Arc<Shared>, plan: &Plan) {
    let capture = plan.side_by_side.is_some();
    let pre_sink = chain.pre.static_pad("sink").expect("videoconvert has sink");
    if let Some(r) = plan.range {
        let (sh, before) = (shared.clone(), shared.clone());
        let cut = match plan.pts_offset {
            Some(off) => Cut::with_pts_offset(r, off),
            None => Cut::new(r),
        };
        cut.install(
            &pre_sink,
            move || {
                before.frames_before.fetch_add(1, Ordering::Relaxed);
            },
            move || {
                stop::end_streams(&sh);
            },
            |_| true,
        );
    }
    let sh = shared.clone();
    let upright = chain.rotate.static_pad("src").expect("videoflip has src");
    let range = plan.range;
    upright.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(gst::PadProbeData::Buffer(buf)) = &info.data {
            frame_in(pad, buf, &sh, capture, range);
        }
        gst::PadProbeReturn::Ok
    });
    let sh = shared.clone();
    let post_src = chain.post.static_pad("src").expect("videoconvert has src");
    post_src.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(gst::PadProbeData::Buffer(buf)) = &info.data {
            frame_out(pad, buf, &sh, capture);
        }
        gst::PadProbeReturn::Ok
    });
}

/// A decoded frame on its way into the element (its time the output's: from 0 at --start).
fn frame_in(pad: &gst::Pad, buf: &gst::Buffer, sh: &Shared, capture: bool, range: Option<Range>) {
    let n = sh.frames_in.fetch_add(1, Ordering::Relaxed);
    if let Some(pts) = buf.pts() {
        extend(
            &sh.video_end,
            pts + buf.duration().unwrap_or(gst::ClockTime::ZERO),
            true,
        );
        extend(&sh.video_start, pts, false);
    }
    if n == 0 {
        if let Some(s) = pad
            .current_caps()
            .as_ref()
            .and_then(|c| c.structure(0).map(|s| s.to_owned()))
        {
            *sh.fps.lock().unwrap() = s
                .get::<gst::Fraction>("framerate")
                .ok()
                .filter(|f| f.numer() > 0);
            if let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height")) {
                *sh.size.lock().unwrap() = Some((w, h));
            }
        }
    }
    if capture {
        let mut c = sh.capture.lock().unwrap();
        if n == 0 {
            // The middle of the input, or of the part of it that is denoised.
            c.target = pad
                .query_duration::<gst::ClockTime>()
                .map(|d| range.map_or(d, |r| r.length(d)) / 2)
                .or(Some(gst::ClockTime::ZERO));
            c.first_before = sample_of(pad, buf);
        }
        if c.before.is_none() && c.target.is_some_and(|t| buf.pts().is_some_and(|p| p >= t)) {
            c.before = sample_of(pad, buf);
        }
    }
}

/// A denoised frame on its way to the encoder.
fn frame_out(pad: &gst::Pad, buf: &gst::Buffer, sh: &Shared, capture: bool) {
    let n = sh.frames_out.fetch_add(1, Ordering::Relaxed);
    if capture {
        let mut c = sh.capture.lock().unwrap();
        if n == 0 {
            c.first_after = sample_of(pad, buf);
        }
        let want = c
            .before
            .as_ref()
            .and_then(|s| s.buffer().and_then(|b| b.pts()));
        if c.after.is_none() && want.is_some() && buf.pts() == want {
            c.after = sample_of(pad, buf);
        }
    }
}

/// A deep copy of a buffer with the pad's caps (so no pool buffer stays borrowed).
fn sample_of(pad: &gst::Pad, buf: &gst::Buffer) -> Option<gst::Sample> {
    let caps = pad.current_caps()?;
    let copy = buf.copy_deep().ok()?;
    Some(gst::Sample::builder().buffer(&copy).caps(&caps).build())
}
