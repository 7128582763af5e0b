//! A live source faster than the model (issue 14, "Live sources"): the element reports a
//! latency that covers the batch in flight and the frame's own, thins its input to the rate
//! the device sustains, counts what it dropped in `stats`, and what leaves it is on time for a
//! syncing sink; caps warm the model up before the first frame.

mod common;

use std::time::{Duration, Instant};

use gst::prelude::*;

use common::{child, fixture, init};

const WATCHDOG: Duration = Duration::from_secs(240);

fn sink_stats(sink: &gst::Element) -> (u64, u64) {
    let s = sink.property::<gst::Structure>("stats");
    (
        s.get::<u64>("rendered").unwrap(),
        s.get::<u64>("dropped").unwrap(),
    )
}

/// Wait until the sink rendered `n` more frames than `from`.
fn wait_rendered(sink: &gst::Element, from: u64, n: u64) -> (u64, u64) {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let now = sink_stats(sink);
        if now.0 >= from + n {
            return now;
        }
        assert!(Instant::now() < deadline, "watchdog: sink stats {now:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_live_source_faster_than_the_model_is_thinned_and_stays_on_time() {
    init();
    // 100 frames/s of 640x480 (black: cheap to make) as tiles of 384x384: far more than any CPU runs this model at.
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc is-live=true pattern=black \
         ! video/x-raw,format=I420,width=640,height=480,framerate=100/1 \
         ! clipdenoise name=d model=\"{}\" max-pixels=1 max-latency=0 \
         ! fakesink name=sink sync=true qos=true max-lateness=20000000",
        fixture()
    ))
    .unwrap();
    let d: gst::Element = child(&pipeline, "d");
    let sink: gst::Element = child(&pipeline, "sink");
    // What an application does (gst-launch-1.0 does it too): on a LATENCY message, have the
    // pipeline query and distribute the latency again.
    let bus = pipeline.bus().unwrap();
    let weak = pipeline.downgrade();
    let watcher = std::thread::spawn(move || {
        while let Some(p) = weak.upgrade() {
            drop(p);
            let msg = bus.timed_pop_filtered(
                gst::ClockTime::from_mseconds(50),
                &[gst::MessageType::Latency],
            );
            if let (Some(_), Some(p)) = (msg, weak.upgrade()) {
                let _ = p.downcast_ref::<gst::Bin>().unwrap().recalculate_latency();
            }
        }
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    // The first frames run before any batch time is known (the latency is the batching wait
    // alone): once some went through, the element posted its measured latency.
    let settled = wait_rendered(&sink, 0, 10);
    let end = wait_rendered(&sink, settled.0, 30);
    let stats = d.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    drop(pipeline);
    watcher.join().unwrap();
    let (rendered, late) = (end.0 - settled.0, end.1 - settled.1);
    eprintln!("sink: {rendered} rendered, {late} dropped late; element: {stats}");
    assert_eq!(late, 0, "frames left the element too late for the sink");
    let thinned = stats.get::<u64>("frames-thinned").unwrap();
    assert!(thinned > 0, "the model kept up with 100 frames/s: {stats}");
    assert!(stats.get::<u64>("frames-dropped").unwrap() >= thinned);
    assert!(stats.get::<u64>("recent-frames-out").unwrap() > 0);
    assert!(stats.get::<u64>("recent-frames-dropped").unwrap() > 0);
}

#[test]
fn caps_warm_the_model_up_before_the_first_frame() {
    init();
    let el = gst::ElementFactory::make("clipdenoise")
        .property("model", fixture())
        .property("max-latency", 10u32)
        .build()
        .unwrap();
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    h.play();
    h.set_upstream_latency(gst::ClockTime::ZERO);
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", 96i32)
        .field("height", 64i32)
        .field("framerate", gst::Fraction::new(30, 1))
        .build();
    h.set_src_caps(caps);
    let stats = || el.property::<gst::Structure>("stats");
    let deadline = Instant::now() + WATCHDOG;
    while stats().get::<f64>("warm-up-ms").unwrap() == 0.0 {
        assert!(Instant::now() < deadline, "watchdog: no warm-up");
        std::thread::sleep(Duration::from_millis(10));
    }
    // No frame yet, and the latency already counts the model's time, not the wait alone.
    assert_eq!(stats().get::<u64>("frames-in").unwrap(), 0);
    assert_eq!(stats().get::<u64>("batches").unwrap(), 0);
    let latency = h.query_latency().unwrap();
    let warm_up = stats().get::<f64>("warm-up-ms").unwrap();
    assert!(
        latency.nseconds() as f64 / 1e6 >= warm_up,
        "{latency} below the warm-up's {warm_up} ms"
    );
    // The first frame is a steady batch, in the estimate.
    h.push(gst::Buffer::from_mut_slice(vec![7u8; 96 * 64 * 3]))
        .unwrap();
    h.pull().expect("the frame");
    assert_eq!(stats().get::<u64>("batches").unwrap(), 1);
}

#[test]
fn a_live_camera_with_a_fixed_size_warms_the_model_up_in_ready_to_paused() {
    init();
    // A live source sends nothing in PAUSED (no preroll), so no caps reach the element: the
    // warm-up can only come from the size upstream's capsfilter fixes.
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc is-live=true ! video/x-raw,format=RGB,width=80,height=48,framerate=30/1 ! \
         clipdenoise name=d model={} max-pixels=1000004 ! fakesink",
        fixture()
    ))
    .unwrap();
    let el: gst::Element = child(&pipeline, "d");
    let ret = pipeline.set_state(gst::State::Paused).unwrap();
    assert_eq!(ret, gst::StateChangeSuccess::NoPreroll, "a live pipeline");
    let stats = || el.property::<gst::Structure>("stats");
    let deadline = Instant::now() + WATCHDOG;
    while stats().get::<f64>("warm-up-ms").unwrap() == 0.0 {
        if Instant::now() >= deadline {
            pipeline.set_state(gst::State::Null).unwrap();
            panic!("watchdog: no warm-up in PAUSED");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let frames_in = stats().get::<u64>("frames-in").unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(frames_in, 0, "warmed up before any frame");
}
