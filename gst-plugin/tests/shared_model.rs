//! Many streams, one model (issue 14): clipdenoise elements in one process with the same model,
//! device, precision, batch size and pixel budget run on one loaded model (`stats`: the same
//! model-id, model-streams = how many), and each stream keeps its own frames, order,
//! timestamps, flushes and EOS; the memory of four streams stays below 1.5x that of one.

mod common;

use std::process::Command;
use std::time::Duration;

use gst::prelude::*;

use common::{child, fixture, init, next_sample, output_within, wait_eos, CHILD_WATCHDOG};

/// Longest a pipeline of these tests may run: far above what they need on a loaded machine.
const WATCHDOG: Duration = Duration::from_secs(180);

/// Each test's elements share a model only among themselves: tests run in parallel in one
/// process, and a different pixel budget (far above these frames) is a different model key.
fn branch(k: usize, frames: usize, model: &str, extra: &str) -> String {
    format!(
        "videotestsrc num-buffers={frames} pattern={k} ! \
         video/x-raw,format=RGB,width=64,height=48,framerate=30/1 ! \
         clipdenoise name=d{k} model={model} {extra} ! appsink name=s{k} sync=false "
    )
}

fn stat(el: &gst::Element, field: &str) -> u64 {
    el.property::<gst::Structure>("stats")
        .get::<u64>(field)
        .unwrap_or_else(|e| panic!("stats.{field}: {e}"))
}

/// Pull every sample of `sink` until EOS (each pull has a watchdog); their PTS. Start it in
/// PLAYING: an appsink that has not started counts as EOS.
fn drain(sink: gst_app::AppSink) -> std::thread::JoinHandle<Vec<Option<gst::ClockTime>>> {
    std::thread::spawn(move || {
        let mut pts = Vec::new();
        while let Some(s) = next_sample(&sink) {
            pts.push(s.buffer().and_then(|b| b.pts()));
        }
        pts
    })
}

fn expected_pts(frames: usize) -> Vec<Option<gst::ClockTime>> {
    (0..frames as u64)
        .map(|i| Some(gst::ClockTime::from_nseconds(i * 1_000_000_000 / 30)))
        .collect()
}

#[test]
fn four_streams_share_one_model_and_keep_their_own_frames_and_eos() {
    init();
    // Four cameras ending at different times: an EOS on one must not end the others.
    let counts = [5, 9, 13, 17];
    let desc: String = counts
        .iter()
        .enumerate()
        .map(|(k, n)| branch(k, *n, &fixture(), "max-pixels=1000001"))
        .collect();
    let pipeline = gst::parse::launch(&desc).unwrap();
    pipeline.set_state(gst::State::Ready).unwrap();
    let els: Vec<gst::Element> = (0..4).map(|k| child(&pipeline, &format!("d{k}"))).collect();
    let id = stat(&els[0], "model-id");
    assert_ne!(id, 0, "share-model is on by default");
    for (k, el) in els.iter().enumerate() {
        assert_eq!(stat(el, "model-id"), id, "element {k}: another model");
        assert_eq!(stat(el, "model-streams"), 4, "element {k}");
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    let pulls: Vec<_> = (0..4)
        .map(|k| drain(child(&pipeline, &format!("s{k}"))))
        .collect();
    let res = wait_eos(&pipeline, WATCHDOG);
    let got: Vec<_> = pulls.into_iter().map(|p| p.join().unwrap()).collect();
    let counters: Vec<(u64, u64, u64)> = els
        .iter()
        .map(|el| {
            (
                stat(el, "frames-in"),
                stat(el, "frames-out"),
                stat(el, "frames-dropped"),
            )
        })
        .collect();
    pipeline.set_state(gst::State::Null).unwrap();
    res.unwrap_or_else(|e| panic!("no EOS: {e}"));
    for (k, n) in counts.iter().enumerate() {
        assert_eq!(got[k], expected_pts(*n), "stream {k}: frames or timestamps");
        assert_eq!(counters[k], (*n as u64, *n as u64, 0), "stream {k}: stats");
    }
    // Stopped: the elements no longer hold the model.
    assert_eq!(stat(&els[0], "model-streams"), 0);
}

#[test]
fn share_model_false_loads_a_model_of_its_own() {
    init();
    let desc = format!(
        "{}{}",
        branch(0, 2, &fixture(), "max-pixels=1000002"),
        branch(1, 2, &fixture(), "max-pixels=1000002 share-model=false")
    );
    let pipeline = gst::parse::launch(&desc).unwrap();
    pipeline.set_state(gst::State::Ready).unwrap();
    let (a, b): (gst::Element, gst::Element) = (child(&pipeline, "d0"), child(&pipeline, "d1"));
    let shared = (stat(&a, "model-id"), stat(&a, "model-streams"));
    let own = (stat(&b, "model-id"), stat(&b, "model-streams"));
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(shared.0 != 0 && shared.1 == 1, "shared: {shared:?}");
    assert_eq!(own, (0, 1), "share-model=false");
}

#[test]
fn a_flushing_seek_on_one_stream_leaves_the_other_whole() {
    init();
    let model = fixture();
    let a = gst::parse::launch(&branch(0, 40, &model, "max-pixels=1000003")).unwrap();
    let b = gst::parse::launch(&branch(1, 24, &model, "max-pixels=1000003")).unwrap();
    a.set_state(gst::State::Playing).unwrap();
    b.set_state(gst::State::Playing).unwrap();
    let (sink_a, pull_b) = (child::<gst_app::AppSink>(&a, "s0"), drain(child(&b, "s1")));
    assert_eq!(
        stat(&child(&a, "d0"), "model-id"),
        stat(&child(&b, "d1"), "model-id"),
        "two pipelines of one process share the model"
    );
    // A flushes (seek back to the start) while B's frames are in the same model.
    for _ in 0..3 {
        next_sample(&sink_a).expect("A's first frames");
    }
    a.seek_simple(gst::SeekFlags::FLUSH, gst::ClockTime::ZERO)
        .expect("flushing seek on A");
    let mut after = Vec::new();
    while let Some(s) = next_sample(&sink_a) {
        after.push(s.buffer().and_then(|b| b.pts()));
    }
    let res_a = wait_eos(&a, WATCHDOG);
    let got_b = pull_b.join().unwrap();
    let res_b = wait_eos(&b, WATCHDOG);
    a.set_state(gst::State::Null).unwrap();
    b.set_state(gst::State::Null).unwrap();
    res_a.unwrap_or_else(|e| panic!("A: no EOS after its seek: {e}"));
    res_b.unwrap_or_else(|e| panic!("B: no EOS: {e}"));
    assert_eq!(
        got_b,
        expected_pts(24),
        "B lost, repeated or reordered frames"
    );
    assert!(
        after.windows(2).all(|w| w[0] < w[1]) && !after.is_empty(),
        "A after its seek: {after:?}"
    );
}

/// Set by the memory test in the child it starts: how many streams the child runs.
const STREAMS_ENV: &str = "CLIPDENOISE_TEST_STREAMS";

/// The child of [`four_streams_take_less_than_one_and_a_half_times_the_memory_of_one`]: runs
/// N streams of 960x540 through the built-in model (in this process, so the measure is the
/// element's) and prints the process's peak resident memory. At this size a stream's
/// activations are a third of the process: with share-model=false, 4 streams took 1.8x the
/// memory of 1 under gst-launch-1.0 (benchmarks/README.md).
#[test]
#[ignore = "run by four_streams_take_less_than_one_and_a_half_times_the_memory_of_one"]
fn memory_child() {
    let Some(n) = std::env::var(STREAMS_ENV).ok().and_then(|v| v.parse().ok()) else {
        return;
    };
    init();
    let desc: String = (0..n)
        .map(|k| {
            format!(
                "videotestsrc num-buffers=2 pattern=snow ! \
                 video/x-raw,format=I420,width=960,height=540,framerate=30/1 ! \
                 clipdenoise model=default ! fakesink name=s{k} sync=false "
            )
        })
        .collect();
    let pipeline = gst::parse::launch(&desc).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let res = wait_eos(&pipeline, WATCHDOG);
    pipeline.set_state(gst::State::Null).unwrap();
    res.unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    println!("PEAK {}", hwm.split_whitespace().nth(1).unwrap());
}

fn peak_kib_with(streams: usize) -> u64 {
    let out = output_within(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "memory_child", "--ignored", "--nocapture"])
            .env(STREAMS_ENV, streams.to_string()),
        CHILD_WATCHDOG,
        "the memory child",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child with {streams} streams: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix("PEAK ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no PEAK line: {text}"))
}

#[test]
fn four_streams_take_less_than_one_and_a_half_times_the_memory_of_one() {
    let one = peak_kib_with(1);
    let four = peak_kib_with(4);
    eprintln!("peak RSS: 1 stream {one} KiB, 4 streams {four} KiB");
    assert!(
        (four as f64) < 1.5 * one as f64,
        "4 streams {four} KiB, 1 stream {one} KiB: not below 1.5x"
    );
}
