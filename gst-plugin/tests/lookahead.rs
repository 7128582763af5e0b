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

/// The element's outputs for `frames` (seeds of [`frame`], pushed in order) at `lookahead`:
/// a DISCONT buffer at `discont`, a GAP event before `gap`, the frame `late` dropped by QoS
/// (downstream's QoS event before it says it is too late); and its `stats` at the end.
fn outputs(
    lookahead: u32,
    frames: std::ops::Range<usize>,
    discont: Option<usize>,
    gap: Option<usize>,
    late: Option<usize>,
) -> (Vec<Vec<u8>>, gst::Structure) {
    let el = gst::ElementFactory::make("clipdenoise")
        .property("model", fixture())
        .property("batch-size", 1u32)
        .property("max-latency", 60_000u32)
        .property_from_str("precision", "fp32")
        .property("lookahead", lookahead)
        .build()
        .unwrap();
    let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
    h.play();
    h.set_src_caps(caps("RGB", 32, 24));
    let n = frames.len() - frames.clone().filter(|&i| late == Some(i)).count();
    for i in frames {
        if late == Some(i) {
            // Frames up to this one's running time are too late (diff 0: exactly its time).
            let pts = gst::ClockTime::from_mseconds(40 * i as u64);
            let qos = gst::event::Qos::new(gst::QOSType::Underflow, 1.0, 0, pts);
            assert!(h.push_upstream_event(qos));
        }
        if gap == Some(i) {
            let pts = gst::ClockTime::from_mseconds(40 * i as u64 - 20);
            h.push_event(gst::event::Gap::builder(pts).build());
        }
        let mut b = frame(32 * 24 * 3, i);
        if discont == Some(i) {
            b.make_mut().set_flags(gst::BufferFlags::DISCONT);
        }
        h.push(b).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    // The harness's pull waits at most 60 s (the watchdog).
    let out = (0..n)
        .map(|_| h.pull().unwrap().map_readable().unwrap().to_vec())
        .collect();
    (out, el.property::<gst::Structure>("stats"))
}

#[test]
fn a_discont_buffer_or_a_gap_starts_the_temporal_stage_afresh_and_stats_bound_its_memory() {
    init();
    let (len, pixels) = (32 * 24 * 3u64, 32 * 24u64);
    for lookahead in [0u32, 2] {
        let (before, _) = outputs(lookahead, 0..3, None, None, None);
        let (after, _) = outputs(lookahead, 3..6, None, None, None);
        let (whole, stats) = outputs(lookahead, 0..6, None, None, None);
        // The control: without a break, frame 3 is fused with frames 0-2 (and 0-2 with 3-4).
        assert_ne!(
            whole[3], after[0],
            "no temporal fusion to break (lookahead {lookahead})"
        );
        if lookahead > 0 {
            assert_ne!(
                whole[2], before[2],
                "no future fused (lookahead {lookahead})"
            );
        }
        for (what, discont, gap) in [("DISCONT", Some(3), None), ("GAP", None, Some(3))] {
            let (broken, stats) = outputs(lookahead, 0..6, discont, gap, None);
            assert_eq!(
                broken[..3],
                before[..],
                "{what}: before it (lookahead {lookahead})"
            );
            assert_eq!(
                broken[3..],
                after[..],
                "{what}: after it (lookahead {lookahead})"
            );
            assert_eq!(stats.get::<u64>("frames-out").unwrap(), 6, "{stats}");
        }
        // The recursion's state (20 bytes a pixel), at most `lookahead` held frames and the
        // last run's future kept packed and in float (12 bytes a pixel).
        let max = stats.get::<u64>("temporal-max-bytes").unwrap();
        assert!(max >= 20 * pixels, "{stats}");
        let held = lookahead as u64 * (2 * len + 12 * pixels);
        assert!(max <= 20 * pixels + held, "{stats}");
        assert!(
            stats.get::<u64>("temporal-bytes").unwrap() <= max,
            "{stats}"
        );
    }
}

#[test]
fn a_discont_buffer_dropped_as_late_still_starts_the_temporal_stage_afresh() {
    init();
    for lookahead in [0u32, 2] {
        let (before, _) = outputs(lookahead, 0..3, None, None, None);
        let (after, _) = outputs(lookahead, 4..6, None, None, None);
        // The control: frame 3 dropped without DISCONT, frame 4 is fused with frames 0-2.
        let (skipped, stats) = outputs(lookahead, 0..6, None, None, Some(3));
        assert_eq!(stats.get::<u64>("frames-dropped").unwrap(), 1, "{stats}");
        assert_eq!(skipped.len(), 5);
        assert_ne!(
            skipped[3], after[0],
            "no temporal fusion to break (lookahead {lookahead})"
        );
        let (broken, stats) = outputs(lookahead, 0..6, Some(3), None, Some(3));
        assert_eq!(stats.get::<u64>("frames-dropped").unwrap(), 1, "{stats}");
        assert_eq!(stats.get::<u64>("frames-out").unwrap(), 5, "{stats}");
        assert_eq!(broken[..3], before[..], "before it (lookahead {lookahead})");
        assert_eq!(broken[3..], after[..], "after it (lookahead {lookahead})");
    }
}
