//! The element's offline mode (`lookahead`): every frame comes out, in order with its
//! timestamp, at EOS, across a caps change and after a flushing seek; the latency query
//! counts the held frames.

mod common;

use gst::prelude::*;
use gst_check::Harness;

use common::{fixture, flushing_seek_mid_stream, init};

fn caps(format: &str, w: i32, h: i32) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", format)
        .field("width", w)
        .field("height", h)
        .field("framerate", gst::Fraction::new(25, 1))
        .field("colorimetry", "bt601")
        .build()
}

/// A still scene's noisy frames: one pattern, a small change per frame.
fn frame(len: usize, seed: usize) -> gst::Buffer {
    let data: Vec<u8> = (0..len)
        .map(|i| {
            let base = ((i * 37 + (i / 7) * 11) % 200) as i32 + 20;
            (base + ((i * 7 + seed * 13) % 9) as i32 - 4) as u8
        })
        .collect();
    let mut b = gst::Buffer::from_mut_slice(data);
    let pts = gst::ClockTime::from_mseconds(40 * seed as u64);
    b.get_mut().unwrap().set_pts(pts);
    b
}

#[test]
fn every_frame_comes_out_in_order_at_eos_and_across_a_caps_change() {
    init();
    let el = gst::ElementFactory::make("clipdenoise")
        .property("model", fixture())
        .property("batch-size", 1u32)
        .property("max-latency", 60_000u32)
        .property("lookahead", 2u32)
        .build()
        .unwrap();
    let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
    h.play();
    let (rgb, yuv) = (caps("RGB", 32, 24), caps("I420", 40, 30));
    h.set_src_caps(rgb.clone());
    let rgb_len = 32 * 24 * 3;
    let yuv_len = 40 * 30 + 2 * 20 * 15;
    for i in 0..4 {
        h.push(frame(rgb_len, i)).unwrap();
    }
    // The caps change runs the held frames with the later frames there are.
    h.set_src_caps(yuv.clone());
    let mut pts = Vec::new();
    for _ in 0..4 {
        let b = h.pull().unwrap();
        assert_eq!(b.size(), rgb_len);
        pts.push(b.pts().unwrap().mseconds());
    }
    for i in 4..7 {
        h.push(frame(yuv_len, i)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    for _ in 0..3 {
        let b = h.pull().unwrap();
        assert_eq!(b.size(), yuv_len);
        pts.push(b.pts().unwrap().mseconds());
    }
    assert_eq!(pts, [0, 40, 80, 120, 160, 200, 240]);
    // Two frames of lookahead at 25 frames/s: at least 80 ms on top of upstream's (asked
    // last: the harness answers as a live source, and live input is thinned).
    let latency = h.query_latency().expect("latency");
    assert!(latency >= gst::ClockTime::from_mseconds(80), "{latency}");
    let s = el.property::<gst::Structure>("stats");
    assert_eq!(s.get::<u64>("frames-out").unwrap(), 7);
    assert_eq!(s.get::<u64>("frames-dropped").unwrap(), 0);
}

#[test]
fn a_flushing_seek_keeps_every_frame_after_it() {
    init();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc ! video/x-raw,format=RGB,width=64,height=48,framerate=30/1 \
         ! clipdenoise name=d model=\"{}\" batch-size=1 queue-size=4 lookahead=3 \
         ! appsink name=sink sync=true max-buffers=2",
        fixture()
    ))
    .unwrap();
    let held = flushing_seek_mid_stream(&pipeline);
    assert!(held > 0, "nothing held at the seek");
    pipeline.set_state(gst::State::Null).unwrap();
}
