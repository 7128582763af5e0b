//! Downstream ends the stream (issue 13): a push that returns EOS or another flow error stops
//! the element's task, goes back to upstream's chain, and EOS still reaches the sink, so the
//! pipeline ends instead of hanging (as it does with `videobalance` in the element's place).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gst::prelude::*;

use common::{child, fixture, gst_launch, init, output_within, plugin_dir, wait_eos};

/// Longest a pipeline of these tests may run: far above what they need on a loaded machine.
const WATCHDOG: Duration = Duration::from_secs(120);

/// Count the EOS events that reach the pad of `element` named `pad`.
fn count_eos(pipeline: &gst::Element, element: &str, pad: &str) -> Arc<AtomicU64> {
    let n = Arc::new(AtomicU64::new(0));
    let counter = n.clone();
    let el: gst::Element = child(pipeline, element);
    el.static_pad(pad)
        .unwrap()
        .add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(e)) = &info.data {
                if e.type_() == gst::EventType::Eos {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }
            gst::PadProbeReturn::Ok
        });
    n
}

/// Run `launch` (with `{model}` for the fixture) to its end; the element and the number of
/// EOS events the element's src pad pushed.
fn run_to_eos(launch: &str) -> (gst::Element, u64) {
    let pipeline = gst::parse::launch(&launch.replace("{model}", &fixture())).unwrap();
    let eos = count_eos(&pipeline, "d", "src");
    pipeline.set_state(gst::State::Playing).unwrap();
    let res = wait_eos(&pipeline, WATCHDOG);
    pipeline.set_state(gst::State::Null).unwrap();
    res.unwrap_or_else(|e| panic!("{launch}: no EOS ({e})"));
    (child(&pipeline, "d"), eos.load(Ordering::SeqCst))
}

fn stat(el: &gst::Element, field: &str) -> u64 {
    el.property::<gst::Structure>("stats")
        .get::<u64>(field)
        .unwrap()
}

#[test]
fn eos_from_downstream_ends_the_pipeline() {
    init();
    let src = "videotestsrc ! video/x-raw,format=RGB,width=48,height=32";
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("snap.png");
    let jpg = dir.path().join("snap.jpg");
    for (sink, file, magic) in [
        ("identity eos-after=5 ! fakesink", None, &[][..]),
        (
            "videoconvert ! pngenc snapshot=true ! filesink location=",
            Some(&png),
            &[0x89, b'P', b'N', b'G'][..],
        ),
        (
            "videoconvert ! jpegenc snapshot=true ! filesink location=",
            Some(&jpg),
            &[0xff, 0xd8][..],
        ),
    ] {
        let target = file
            .map(|f| format!("\"{}\"", f.display()))
            .unwrap_or_default();
        let launch = format!(
            "{src} ! clipdenoise name=d model=\"{{model}}\" batch-size=2 queue-size=4 ! {sink}{target}"
        );
        let (d, eos) = run_to_eos(&launch);
        assert_eq!(eos, 1, "{launch}: EOS events pushed downstream");
        // Upstream stopped: a bounded number of frames went in (the infinite source did not
        // keep feeding a stopped element).
        let frames_in = stat(&d, "frames-in");
        assert!(frames_in < 100, "{launch}: {frames_in} frames went in");
        if let Some(f) = file {
            let bytes = std::fs::read(f).unwrap();
            assert!(bytes.starts_with(magic), "{launch}: {} bytes", bytes.len());
        }
    }
}

#[test]
fn eos_queued_behind_frames_still_reaches_the_sink_once() {
    init();
    // The source's EOS is queued in the element (7 frames, a queue of 8) when downstream
    // refuses the sixth frame: the flush that follows must not lose it.
    for batch in [1u32, 4] {
        let (d, eos) = run_to_eos(&format!(
            "videotestsrc num-buffers=7 ! video/x-raw,width=96,height=64 \
             ! clipdenoise name=d model=\"{{model}}\" batch-size={batch} queue-size=8 \
             ! identity eos-after=5 ! fakesink"
        ));
        assert_eq!(eos, 1, "batch-size={batch}");
        assert_eq!(stat(&d, "frames-in"), 7, "batch-size={batch}");
    }
}

#[test]
fn a_flow_error_from_downstream_is_an_error_not_a_hang() {
    init();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc ! video/x-raw,format=RGB,width=48,height=32 \
         ! clipdenoise name=d model=\"{}\" batch-size=1 ! appsink name=sink",
        fixture()
    ))
    .unwrap();
    let sink: gst_app::AppSink = child(&pipeline, "sink");
    let pulled = Arc::new(AtomicU64::new(0));
    let n = pulled.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if n.fetch_add(1, Ordering::SeqCst) >= 2 {
                    return Err(gst::FlowError::Error);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let res = wait_eos(&pipeline, WATCHDOG);
    pipeline.set_state(gst::State::Null).unwrap();
    let err = res.expect_err("a flow error is an ERROR on the bus");
    assert!(err.contains("Internal data stream error"), "{err}");
    assert_eq!(pulled.load(Ordering::SeqCst), 3, "frames after the error");
}

#[test]
fn snapshot_pipelines_end_under_gst_launch() {
    init();
    let plugins = plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    for (enc, file) in [("pngenc", "snap.png"), ("jpegenc", "snap.jpg")] {
        let launch = format!(
            "videotestsrc ! clipdenoise model={} ! videoconvert ! {enc} snapshot=true ! filesink location={file}",
            fixture()
        );
        let out = output_within(
            &mut gst_launch(dir.path(), plugins.path(), &launch),
            WATCHDOG,
            &launch,
        );
        let log = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{launch}\n{log}");
        assert!(log.contains("Got EOS from element"), "{launch}\n{log}");
        let size = std::fs::metadata(dir.path().join(file)).unwrap().len();
        assert!(size > 100, "{launch}: {file} has {size} bytes");
    }
}
