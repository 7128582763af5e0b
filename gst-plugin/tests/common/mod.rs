//! What the element's integration tests share: GStreamer set up once with the plugin, the
//! fixture model, bounded waits on a pipeline's bus and on gst-launch-1.0 children (a test
//! fails with a message instead of hanging CI).
#![allow(dead_code)] // each test binary uses its own subset

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use gst::prelude::*;

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("GST_REGISTRY").is_none() {
            std::env::set_var("GST_REGISTRY", target_dir().join("gst-registry.bin"));
        }
        // One libtorch thread: no OpenMP threads spinning against each other on a small,
        // busy machine (the tiny model on tiny frames gains nothing from more).
        tch::set_num_threads(1);
        gst::init().expect("gst init");
        gstclipdenoise::plugin_register_static().expect("register the plugin");
    });
}

pub fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tiny-w8/official_state_dict.safetensors")
        .to_string_lossy()
        .into_owned()
}

/// target/<profile>: where the test binary's deps/ folder is.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .to_path_buf()
}

/// A folder holding only the plugin's shared library (a link to the newest build of it:
/// `cargo test` refreshes target/<profile>/deps/, `cargo build` target/<profile>/), for
/// GST_PLUGIN_PATH of gst-inspect-1.0 and gst-launch-1.0.
pub fn plugin_dir() -> tempfile::TempDir {
    let name = "libgstclipdenoise.so";
    let newest = [
        target_dir().join("deps").join(name),
        target_dir().join(name),
    ]
    .into_iter()
    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
    .max()
    .map(|(_, p)| p)
    .expect("the plugin's cdylib is built");
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&newest, dir.path().join(name)).unwrap();
    dir
}

/// The element named `name` in a parsed pipeline, as its concrete type (appsrc, appsink, ...).
pub fn child<T: IsA<gst::Element>>(pipeline: &gst::Element, name: &str) -> T {
    pipeline
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name(name)
        .unwrap_or_else(|| panic!("no element named {name}"))
        .downcast::<T>()
        .unwrap()
}

/// Run until EOS (Ok) or ERROR (Err with the message), at most `timeout`.
pub fn wait_eos(pipeline: &gst::Element, timeout: Duration) -> Result<(), String> {
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(left.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) else {
            return Err("timed out".into());
        };
        match msg.view() {
            gst::MessageView::Eos(_) => return Ok(()),
            gst::MessageView::Error(e) => {
                return Err(format!("{} ({:?})", e.error(), e.debug()));
            }
            _ => {}
        }
    }
}

/// gst-launch-1.0 with the pipeline `args`, in `dir`, with the plugin from `plugins`.
pub fn gst_launch(dir: &Path, plugins: &Path, args: &str) -> Command {
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.args(args.split_whitespace())
        .current_dir(dir)
        .env("GST_PLUGIN_PATH", plugins)
        .env("GST_REGISTRY", dir.join("registry.bin"))
        .env("GST_DEBUG", "clipdenoise:4")
        // As the Makefile sets it: OpenMP threads that sleep instead of spinning.
        .env("OMP_WAIT_POLICY", "PASSIVE");
    cmd
}

/// Run `cmd` to its end, at most `timeout`: past it the child is killed and the test fails
/// with what it printed so far.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "watchdog: {cmd:?} still ran after {timeout:?}; killed. Its output:\n{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}
