//! Stopping mid-batch (issue 13, G): READY->NULL interrupts the running batch and joins the
//! model worker; a process that exits while a batch runs waits for the model instead of
//! tearing libtorch down under it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use gst::prelude::*;

use common::{child, fixture, init, output_within};

const WATCHDOG: Duration = Duration::from_secs(300);

/// Set in the child process of [`exiting_mid_batch_waits_for_the_model`].
const EXIT_CHILD: &str = "CLIPDENOISE_TEST_EXIT_MID_BATCH";

/// Threads of this process whose name starts like the engine worker's.
fn engine_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("clipdenoise-en"))
        .count()
}

fn stat(el: &gst::Element, field: &str) -> u64 {
    el.property::<gst::Structure>("stats")
        .get::<u64>(field)
        .unwrap()
}

/// A pipeline whose one-frame batches are hundreds of tiles (4K frames, the smallest tiles),
/// so that a batch is running for a while once a frame went in.
fn long_batches() -> gst::Element {
    gst::parse::launch(&format!(
        "videotestsrc pattern=snow ! video/x-raw,format=RGB,width=3840,height=2160 \
         ! clipdenoise name=d model=\"{}\" batch-size=1 queue-size=1 max-pixels=1 ! fakesink",
        fixture()
    ))
    .unwrap()
}

/// Wait until the first frame's batch runs: with a queue of one frame, a second frame goes in
/// only once the worker took the first one (and with batches of one, it runs it at once).
fn wait_first_batch(d: &gst::Element) {
    let deadline = Instant::now() + WATCHDOG;
    while stat(d, "frames-in") < 2 {
        assert!(Instant::now() < deadline, "watchdog: no frame went in");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn null_mid_batch_interrupts_it_and_joins_the_worker() {
    init();
    let pipeline = long_batches();
    let d: gst::Element = child(&pipeline, "d");
    pipeline.set_state(gst::State::Playing).unwrap();
    wait_first_batch(&d);
    let t0 = Instant::now();
    pipeline.set_state(gst::State::Null).unwrap();
    let took = t0.elapsed();
    eprintln!("NULL mid-batch took {took:?}");
    assert_eq!(engine_threads(), 0, "a model worker outlived NULL");
    assert_eq!(
        stat(&d, "batches"),
        0,
        "the first batch finished before NULL: frames too small for this machine"
    );
    assert_eq!(stat(&d, "interrupted-batches"), 1);
    assert!(stat(&d, "frames-dropped") >= 1);
}

#[test]
fn exiting_mid_batch_waits_for_the_model() {
    if std::env::var_os(EXIT_CHILD).is_some() {
        // The child: exit while the model runs a batch, without stopping the pipeline.
        init();
        // Several OpenMP threads inside the convolution, as in a real process.
        tch::set_num_threads(2);
        let pipeline = long_batches();
        let d: gst::Element = child(&pipeline, "d");
        pipeline.set_state(gst::State::Playing).unwrap();
        wait_first_batch(&d);
        println!("exiting mid-batch");
        std::process::exit(0);
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "exiting_mid_batch_waits_for_the_model",
        "--nocapture",
    ])
    .env(EXIT_CHILD, "1");
    for _ in 0..3 {
        let out = output_within(&mut cmd, WATCHDOG, "the exiting child");
        let log = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("exiting mid-batch"), "{log}");
        assert!(out.status.success(), "{:?}\n{log}", out.status);
        assert!(!log.contains("terminate called"), "{log}");
    }
}
