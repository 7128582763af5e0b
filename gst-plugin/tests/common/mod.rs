//! What the element's integration tests share: GStreamer set up once with the plugin, the
//! fixture model, bounded waits on a pipeline's bus and on gst-launch-1.0 children (a test
//! fails with a message instead of hanging CI).
#![allow(dead_code)] // each test binary uses its own subset

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Once;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clipdenoise::frame::{copy_rows, FrameFormat};
use gst::prelude::*;
use gst_video::prelude::*;

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
        gstclipdenoise_element::plugin_register_static().expect("register the plugin");
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

/// A folder holding only the plugin's two libraries (links to the newest build of each:
/// `cargo test` refreshes target/<profile>/deps/, `cargo build` target/<profile>/): the
/// plugin file GStreamer loads (the loader) and the element library it loads from its own
/// folder. For GST_PLUGIN_PATH of gst-inspect-1.0 and gst-launch-1.0.
pub fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["libgstclipdenoise.so", "libgstclipdenoise_element.so"] {
        let newest = [
            target_dir().join("deps").join(name),
            target_dir().join(name),
        ]
        .into_iter()
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("{name} is built (cargo build --workspace)"));
        std::os::unix::fs::symlink(&newest, dir.path().join(name)).unwrap();
    }
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

/// A flushing seek to [0, 500 ms] in PLAYING, in a pipeline with a 30 frames/s source, an
/// element named `d` and an appsink named `sink` that syncs and holds few buffers (so that
/// frames are held in `d` when the seek comes): 10 frames first, then the seek; the 15 frames
/// of the new segment must come out in order, then EOS (watchdogs: 20 s a frame, 10 s for
/// EOS). Returns the frames `d` held at the seek (in minus out).
pub fn flushing_seek_mid_stream(pipeline: &gst::Element) -> u64 {
    let sink: gst_app::AppSink = child(pipeline, "sink");
    let d: gst::Element = child(pipeline, "d");
    pipeline.set_state(gst::State::Playing).unwrap();
    for _ in 0..10 {
        sink.try_pull_sample(gst::ClockTime::from_seconds(20))
            .expect("frames before the seek");
    }
    let stats = d.property::<gst::Structure>("stats");
    let count = |f: &str| stats.get::<u64>(f).unwrap();
    let held = count("frames-in") - count("frames-out");
    pipeline
        .seek(
            1.0,
            gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
            gst::SeekType::Set,
            gst::ClockTime::ZERO,
            gst::SeekType::Set,
            gst::ClockTime::from_mseconds(500),
        )
        .expect("seek");
    let mut pts = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(20)) {
        pts.push(sample.buffer().unwrap().pts().unwrap());
    }
    assert!(sink.is_eos(), "no EOS after the seek segment");
    let want: Vec<gst::ClockTime> = (0..15u64)
        .map(|i| gst::ClockTime::SECOND.mul_div_floor(i, 30).unwrap())
        .collect();
    assert_eq!(pts, want, "frames after the flushing seek");
    wait_eos(pipeline, Duration::from_secs(10)).unwrap();
    held
}

/// `gst-inspect-1.0 clipdenoise` with this build's plugin and a fresh registry, under the
/// watchdog `limit`; its exit must be a success. Returns what it printed on stdout.
pub fn gst_inspect(limit: Duration) -> String {
    let plugins = plugin_dir();
    let registry = tempfile::tempdir().unwrap();
    let out = output_within(
        Command::new("gst-inspect-1.0")
            .arg("clipdenoise")
            .env("GST_PLUGIN_PATH", plugins.path())
            .env("GST_REGISTRY", registry.path().join("registry.bin")),
        limit,
        "gst-inspect-1.0 clipdenoise",
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
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

/// The bound of one child process: far above what any test's child needs, so only a hang
/// reaches it.
pub const CHILD_WATCHDOG: Duration = Duration::from_secs(300);

/// Run `cmd` to its end with stdout and stderr captured, killed after `limit`; a killed run
/// fails the test naming `what`, with what it wrote.
pub fn output_within(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} cannot start: {e}"));
    output_of(child, limit, what)
}

/// Collect a spawned child's stdout and stderr (both piped) and wait for it at most `limit`;
/// past that it is killed and the test fails naming `what`, with what it wrote.
pub fn output_of(mut child: Child, limit: Duration, what: &str) -> Output {
    fn read(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    }
    let (stdout, stderr) = (read(child.stdout.take()), read(child.stderr.take()));
    let status = wait_or_kill(&mut child, limit);
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let Some(status) = status else {
        panic!(
            "{what}: still running after {} s, killed; it wrote:\n{}{}",
            limit.as_secs(),
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

/// Wait at most `limit` for a spawned child; if it is still running, kill it and fail the test
/// naming `what`.
pub fn wait_within(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    wait_or_kill(child, limit)
        .unwrap_or_else(|| panic!("{what}: still running after {} s, killed", limit.as_secs()))
}

/// The child's exit status, or None after killing it once `limit` has passed.
fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    use wait_timeout::ChildExt;
    let status = child.wait_timeout(limit).expect("waiting for a child");
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// The bound of one wait for the next sample of an appsink.
pub const SAMPLE_WATCHDOG: Duration = Duration::from_secs(60);

/// The appsink's next sample, None at EOS; no sample and no EOS within [`SAMPLE_WATCHDOG`]
/// fails the test.
pub fn next_sample(sink: &gst_app::AppSink) -> Option<gst::Sample> {
    let sample = sink.try_pull_sample(gst::ClockTime::from_nseconds(
        SAMPLE_WATCHDOG.as_nanos() as u64
    ));
    if sample.is_none() && !sink.is_eos() {
        panic!(
            "no sample and no EOS within {} s",
            SAMPLE_WATCHDOG.as_secs()
        );
    }
    sample
}

/// A GStreamer buffer (default strides for `info`) holding the packed frame `data`.
pub fn to_buffer(info: &gst_video::VideoInfo, fmt: &FrameFormat, data: &[u8]) -> gst::Buffer {
    let mut buf = gst::Buffer::with_size(info.size()).unwrap();
    {
        let mut frame =
            gst_video::VideoFrameRef::from_buffer_ref_writable(buf.get_mut().unwrap(), info)
                .unwrap();
        for (p, plane) in fmt.planes().into_iter().enumerate() {
            let stride = frame.plane_stride()[p] as usize;
            let out = frame.plane_data_mut(p as u32).unwrap();
            let (row, rows) = (plane.row_bytes, plane.rows);
            copy_rows(&data[plane.range()], row, out, stride, row, rows).unwrap();
        }
    }
    buf
}

/// The packed frame in a GStreamer buffer.
pub fn from_buffer(
    info: &gst_video::VideoInfo,
    fmt: &FrameFormat,
    buf: &gst::BufferRef,
) -> Vec<u8> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, info).unwrap();
    let mut out = vec![0; fmt.frame_len()];
    for (p, plane) in fmt.planes().into_iter().enumerate() {
        let stride = frame.plane_stride()[p] as usize;
        let data = frame.plane_data(p as u32).unwrap();
        let (row, rows) = (plane.row_bytes, plane.rows);
        copy_rows(data, stride, &mut out[plane.range()], row, row, rows).unwrap();
    }
    out
}
