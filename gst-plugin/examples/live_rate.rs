//! Benchmark (not a test): what a live source gets through the `clipdenoise` element against
//! what the element sustains offline, in one run (issue 26). `benchmarks/live.sh` runs it.
//!
//!     OMP_WAIT_POLICY=PASSIVE cargo run --release -p gst-plugin-clipdenoise \
//!         --example live_rate -- [--size 640x360] [--rates 10,15,30,60] [--seconds 10] \
//!         [--model default] [--offline-frames 40]
//!
//! Per rate, first the offline rate right before (on a machine whose load moves, each live
//! run gets its own baseline): `videotestsrc pattern=ball num-buffers=N ! caps ! clipdenoise
//! ! fakesink sync=false`, frames per second between the first and the last frame reaching
//! the sink (the warm-up and start-up left out). Then the live pipeline
//! `videotestsrc is-live=true pattern=ball num-buffers=rate*seconds ! caps ! clipdenoise !
//! fakesink sync=true qos=true max-lateness=20000000` (late = dropped by the sink as more than
//! 20 ms late, as video sinks do), with LATENCY messages handled as gst-launch-1.0 does.
//! Per rate it prints frames delivered, late, thinned, dropped by the element as late (QoS
//! events from the sink), delivered / possible (possible:
//! min(rate, offline rate) over the source's duration), how busy the model was (frames run
//! times their time per frame, over the source's duration: near 100 % above the device's
//! rate when thinning keeps the model fed, whatever the load), the model's time per frame
//! (upload, model, download) offline and live (above the device's rate with the model busy,
//! a live rate below the offline one is the model running slower live: the source renders
//! and pushes every frame, thinned or not, on the same cores), the element's reported latency
//! and its mean latency, and the pipeline's latency.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

#[path = "support/args.rs"]
mod args;
#[path = "support/bus.rs"]
mod bus;

struct Args {
    width: u32,
    height: u32,
    rates: Vec<u32>,
    seconds: u32,
    model: String,
    offline_frames: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        width: 640,
        height: 360,
        rates: vec![10, 15, 30, 60],
        seconds: 10,
        model: "default".into(),
        offline_frames: 40,
    };
    for (k, v) in args::pairs()? {
        match k.as_str() {
            "--size" => (a.width, a.height) = args::size(&v)?,
            "--rates" => {
                a.rates = v
                    .split(',')
                    .map(|r| r.trim().parse().map_err(|_| format!("bad rate {r}")))
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => a.seconds = v.parse().map_err(|_| "bad seconds")?,
            "--model" => a.model = v,
            "--offline-frames" => a.offline_frames = v.parse().map_err(|_| "bad frame count")?,
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if a.rates.contains(&0) || a.seconds == 0 || a.offline_frames < 10 {
        return Err("rates and seconds above 0, --offline-frames at least 10".into());
    }
    Ok(a)
}

/// What one pipeline run gave.
struct Run {
    /// When each frame reached the sink's pad.
    arrivals: Vec<Instant>,
    rendered: u64,
    late: u64,
    stats: gst::Structure,
    /// The pipeline's latency after the run's last LATENCY message.
    latency: Option<gst::ClockTime>,
}

fn run(launch: &str, timeout: Duration) -> Result<Run, String> {
    let pipeline = gst::parse::launch(launch).map_err(|e| e.to_string())?;
    let bin = pipeline
        .clone()
        .downcast::<gst::Bin>()
        .map_err(|_| "not a bin")?;
    let sink = bin.by_name("sink").ok_or("no sink")?;
    let element = bin.by_name("d").ok_or("no element d")?;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let probe = arrivals.clone();
    sink.static_pad("sink")
        .ok_or("sink pad")?
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            probe.lock().unwrap().push(Instant::now());
            gst::PadProbeReturn::Ok
        });
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let result = bus::run_to_eos(&pipeline, Instant::now() + timeout);
    let mut q = gst::query::Latency::new();
    let latency = pipeline.query(&mut q).then(|| q.result().1);
    let sink_stats = sink.property::<gst::Structure>("stats");
    let stats = element.property::<gst::Structure>("stats");
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    let arrivals = arrivals.lock().unwrap().clone();
    Ok(Run {
        arrivals,
        rendered: sink_stats.get::<u64>("rendered").unwrap_or(0),
        late: sink_stats.get::<u64>("dropped").unwrap_or(0),
        stats,
        latency,
    })
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("live_rate: {e}");
            std::process::exit(2);
        }
    };
    gst::init().expect("gst init");
    gstclipdenoise_element::plugin_register_static().expect("register");
    let caps = |rate: u32| {
        format!(
            "video/x-raw,width={},height={},framerate={rate}/1",
            a.width, a.height
        )
    };
    let element = format!("clipdenoise name=d model=\"{}\"", a.model);

    println!(
        "{}x{}; offline: frames/s of {} frames offline right before each live run (first to last frame at the sink)",
        a.width, a.height, a.offline_frames
    );
    println!(
        "| source fps | offline fps | frames in | delivered | late | thinned | qos dropped | delivered fps | possible fps | delivered / possible | model busy | ms/frame offline | ms/frame live | element latency ms | mean latency ms | pipeline latency ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &rate in &a.rates {
        let offline = run(
            &format!(
                "videotestsrc pattern=ball num-buffers={} ! {} ! {element} ! fakesink name=sink sync=false",
                a.offline_frames,
                caps(rate)
            ),
            Duration::from_secs(600),
        )
        .unwrap_or_else(|e| panic!("offline run: {e}"));
        let (first, last) = (offline.arrivals[0], *offline.arrivals.last().unwrap());
        let offline_fps = (offline.arrivals.len() - 1) as f64 / (last - first).as_secs_f64();
        let frames = rate * a.seconds;
        let r = run(
            &format!(
                "videotestsrc is-live=true pattern=ball num-buffers={frames} ! {} ! {element} \
                 ! fakesink name=sink sync=true qos=true max-lateness=20000000",
                caps(rate)
            ),
            Duration::from_secs(a.seconds as u64 + 600),
        )
        .unwrap_or_else(|e| panic!("live run at {rate} fps: {e}"));
        let seconds = a.seconds as f64;
        let thinned = r.stats.get::<u64>("frames-thinned").unwrap_or(0);
        let delivered_fps = r.rendered as f64 / seconds;
        let possible = (rate as f64).min(offline_fps);
        let f = |k: &str| r.stats.get::<f64>(k).unwrap_or(f64::NAN);
        let per_frame = |s: &gst::Structure| {
            [
                "upload-ms-per-frame",
                "model-ms-per-frame",
                "download-ms-per-frame",
            ]
            .iter()
            .map(|&k| s.get::<f64>(k).unwrap_or(f64::NAN))
            .sum::<f64>()
        };
        // The share of the run the model worked (the frames it ran times their upload, model
        // and download time): near 100 % above the device's rate, whatever the machine's load,
        // when the thinning keeps it fed.
        let work_ms = per_frame(&r.stats);
        let busy = r.stats.get::<u64>("batches").unwrap_or(0) as f64 * work_ms / (seconds * 1e3);
        println!(
            "| {rate} | {offline_fps:.2} | {frames} | {} | {} | {} | {} | {:.2} | {:.2} | **{:.2}** | {:.0} % | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.rendered,
            r.late,
            thinned,
            r.stats.get::<u64>("frames-dropped").unwrap_or(0) - thinned,
            delivered_fps,
            possible,
            delivered_fps / possible,
            busy * 100.0,
            per_frame(&offline.stats),
            work_ms,
            f("latency-ms"),
            f("mean-latency-ms"),
            r.latency
                .map_or("-".into(), |l| format!("{:.1}", l.nseconds() as f64 / 1e6)),
        );
    }
}
