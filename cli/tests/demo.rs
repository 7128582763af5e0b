//! `make demo`'s command, end to end with the default (built-in) model: the command is read from
//! the Makefile so the two cannot drift apart; only its outputs move into a temporary folder.
#![cfg(feature = "gst")]

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};

use gst::prelude::*;
use support::child::{clipdenoise, RunExt};
use support::pipeline::{init, wait_eos};

/// The arguments after `clipdenoise` on the Makefile's `demo:` recipe line.
fn demo_args() -> Vec<String> {
    let makefile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Makefile")).unwrap();
    let recipe = makefile
        .split("\ndemo:")
        .nth(1)
        .expect("a demo target")
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .find(|l| l.contains("clipdenoise video"))
        .expect("the demo recipe runs clipdenoise video")
        .to_string();
    let cmd = recipe.split("clipdenoise ").nth(1).unwrap();
    let cmd = cmd.split(['&', ';', '|']).next().unwrap();
    cmd.split_whitespace().map(str::to_string).collect()
}

#[test]
fn make_demo_command_works_end_to_end() {
    let args = demo_args();
    assert_eq!(args[0], "video");
    assert_eq!(args[1], "samples/bedroom-noisy.mp4");
    assert!(
        !args.iter().any(|a| a == "--model"),
        "the demo uses the built-in default model"
    );
    let dir = tempfile::tempdir().unwrap();
    // target/demo/... -> <tmp>/demo/... (a directory the command has to create).
    let args: Vec<String> = args
        .iter()
        .map(|a| match a.strip_prefix("target/") {
            Some(rest) => dir.path().join(rest).display().to_string(),
            None => a.clone(),
        })
        .collect();
    let video = args[2].clone();
    let png = args[args
        .iter()
        .position(|a| a == "--side-by-side")
        .expect("--side-by-side")
        + 1]
    .clone();
    let out = clipdenoise()
        .args(&args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .run();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("wrote {video}: 75 frames, 480x270, 2.50 s")),
        "{err}"
    );
    assert!(err.contains(&format!("before/after: {png}")), "{err}");

    // The PNG: before | 8 px | after, at the clip's size.
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (2 * 480 + 8, 270));

    // The video, read back with GStreamer: 75 H.264 frames over 2.5 s.
    init();
    let p = gst::parse::launch(&format!(
        "filesrc location={video} ! qtdemux ! h264parse ! fakesink name=s"
    ))
    .unwrap();
    let p = p.downcast::<gst::Pipeline>().unwrap();
    let count = Arc::new(Mutex::new(0u32));
    let c = count.clone();
    p.by_name("s")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            *c.lock().unwrap() += 1;
            gst::PadProbeReturn::Ok
        });
    p.set_state(gst::State::Playing).unwrap();
    wait_eos(&p, "reading the demo video back");
    let d = p.query_duration::<gst::ClockTime>().unwrap();
    p.set_state(gst::State::Null).unwrap();
    assert_eq!(*count.lock().unwrap(), 75);
    assert!(d.mseconds().abs_diff(2500) <= 40, "{d}");
}
