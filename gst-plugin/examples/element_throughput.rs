//! Benchmark (not a test): throughput of the `clipdenoise` element against calling the core
//! model directly (`Denoiser::denoise_frames`) on the same batches, in the same process, on
//! the CPU.
//!
//!     OMP_WAIT_POLICY=PASSIVE cargo run --release -p gst-plugin-clipdenoise \
//!         --example element_throughput -- [--size 320x240] [--batch-size 4] [--frames 32] \
//!         [--model PATH] [--rounds 6]
//!
//! Each round runs both paths on the same frames (in alternating order): the element in
//! `appsrc ! clipdenoise ! appsink` (a new pipeline, so a new engine and model), the baseline
//! on a fresh thread that loads the model, as the element's worker does. Both times include
//! the first (warm-up) batch. Per round it prints frames/s of both, the ratio element /
//! direct, and the time per frame spent outside the model (packing, channels, buffers). The
//! model's own speed drifts with machine load; the last line gives the median ratio and the
//! element's overhead relative to the model time it measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gst::prelude::*;

#[path = "support/args.rs"]
mod args;

use clipdenoise::frame::{FrameFormat, PixelFormat};
use clipdenoise::inference::{Denoiser, Options};
use clipdenoise::weights::ModelSource;

#[derive(Clone)]
struct Args {
    width: usize,
    height: usize,
    batch: usize,
    frames: usize,
    model: String,
    rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        width: 320,
        height: 240,
        batch: 4,
        frames: 32,
        model: String::new(),
        rounds: 6,
    };
    for (k, v) in args::pairs()? {
        match k.as_str() {
            "--size" => (a.width, a.height) = args::size(&v)?,
            "--batch-size" => a.batch = v.parse().map_err(|_| "bad batch size")?,
            "--frames" => a.frames = v.parse().map_err(|_| "bad frame count")?,
            "--model" => a.model = v,
            "--rounds" => a.rounds = v.parse().map_err(|_| "bad rounds")?,
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if a.batch == 0 || a.frames == 0 || a.rounds == 0 {
        return Err("batch size, frames and rounds must be positive".into());
    }
    a.frames = a.frames.div_ceil(a.batch) * a.batch;
    Ok(a)
}

fn synthetic(fmt: &FrameFormat, n: usize) -> Vec<Vec<u8>> {
    let row = fmt.width * 3;
    (0..n)
        .map(|i| {
            (0..fmt.frame_len())
                .map(|j| ((j % row) / 3 + j / row + i * 7 + (j * 2654435761) % 61) as u8)
                .collect()
        })
        .collect()
}

/// Wall time and the model's share of it.
#[derive(Clone, Copy)]
struct Timing {
    total: Duration,
    model: Duration,
}

fn direct(a: &Args, frames: Arc<Vec<Vec<u8>>>, fmt: FrameFormat) -> Timing {
    let (source, batch) = (ModelSource::parse(&a.model), a.batch);
    std::thread::spawn(move || {
        let d = Denoiser::new(
            source.load(tch::Device::Cpu).expect("model"),
            Options::default(),
        )
        .expect("denoiser");
        let t0 = Instant::now();
        let mut model = Duration::ZERO;
        for chunk in frames.chunks(batch) {
            let refs: Vec<&[u8]> = chunk.iter().map(|f| f.as_slice()).collect();
            let (_, stages) = d.denoise_frames_timed(&refs, &fmt, 1.0).expect("denoise");
            model += stages.model;
        }
        Timing {
            total: t0.elapsed(),
            model,
        }
    })
    .join()
    .expect("baseline thread")
}

fn element(a: &Args, frames: &[Vec<u8>]) -> Timing {
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time block=true max-bytes=0 max-buffers=4 \
         caps=video/x-raw,format=RGB,width={w},height={h},framerate=30/1 \
         ! clipdenoise name=d model=\"{m}\" device=cpu batch-size={b} max-latency=60000 \
           queue-size={q} \
         ! appsink name=sink sync=false",
        w = a.width,
        h = a.height,
        m = a.model,
        b = a.batch,
        q = 2 * a.batch,
    ))
    .expect("pipeline")
    .downcast::<gst::Pipeline>()
    .expect("a pipeline");
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .expect("appsrc");
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .expect("appsink");
    pipeline.set_state(gst::State::Playing).expect("playing");
    let frames: Vec<Vec<u8>> = frames.to_vec();
    let n_in = frames.len();
    let t0 = Instant::now();
    let pusher = std::thread::spawn(move || {
        for (i, f) in frames.into_iter().enumerate() {
            let mut b = gst::Buffer::from_mut_slice(f);
            if let Some(b) = b.get_mut() {
                b.set_pts(gst::ClockTime::from_mseconds(33 * i as u64));
            }
            if src.push_buffer(b).is_err() {
                break;
            }
        }
        let _ = src.end_of_stream();
    });
    let mut n_out = 0;
    while sink.pull_sample().is_ok() {
        n_out += 1;
    }
    let total = t0.elapsed();
    pusher.join().expect("pusher");
    let stats = pipeline
        .by_name("d")
        .expect("clipdenoise")
        .property::<gst::Structure>("stats");
    let model_ms = stats.get::<f64>("model-ms-per-frame").unwrap_or(0.0) * n_in as f64;
    pipeline.set_state(gst::State::Null).expect("null");
    assert_eq!(n_out, n_in, "frames in != frames out");
    Timing {
        total,
        model: Duration::from_secs_f64(model_ms / 1e3),
    }
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    gst::init().expect("gst init");
    gstclipdenoise_element::plugin_register_static().expect("register");
    let fmt = FrameFormat::new(PixelFormat::Rgb, a.width, a.height);
    let frames = Arc::new(synthetic(&fmt, a.frames));
    println!(
        "model {}, {}x{} RGB, batch {}, {} frames a round, {} threads",
        ModelSource::parse(&a.model),
        a.width,
        a.height,
        a.batch,
        a.frames,
        tch::get_num_threads()
    );
    // Warm up both paths (libraries, allocator).
    let warm = Args {
        frames: a.batch,
        ..a.clone()
    };
    direct(&warm, Arc::new(frames[..a.batch].to_vec()), fmt);
    element(&warm, &frames[..a.batch]);

    let n = a.frames as f64;
    let fps = |t: Duration| n / t.as_secs_f64();
    let per_frame_ms = |t: Duration| t.as_secs_f64() * 1e3 / n;
    let mut ratios = Vec::new();
    let (mut elem_total, mut elem_model) = (Duration::ZERO, Duration::ZERO);
    let (mut dir_total, mut dir_model) = (Duration::ZERO, Duration::ZERO);
    for r in 0..a.rounds {
        // Alternate the order so that a drift in machine load hits both alike.
        let (d, e) = if r % 2 == 0 {
            let d = direct(&a, frames.clone(), fmt);
            (d, element(&a, &frames))
        } else {
            let e = element(&a, &frames);
            (direct(&a, frames.clone(), fmt), e)
        };
        let ratio = fps(e.total) / fps(d.total);
        println!(
            "round {r}: direct {:.3} frames/s (outside the model {:.2} ms/frame), element {:.3} \
             frames/s (outside the model {:.2} ms/frame), ratio {:.3}",
            fps(d.total),
            per_frame_ms(d.total.saturating_sub(d.model)),
            fps(e.total),
            per_frame_ms(e.total.saturating_sub(e.model)),
            ratio
        );
        ratios.push(ratio);
        elem_total += e.total;
        elem_model += e.model;
        dir_total += d.total;
        dir_model += d.model;
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    // Model speed drifts with machine load; normalising each path by its own model time
    // isolates what the element adds around the model.
    let normalised = (dir_total.as_secs_f64() / dir_model.as_secs_f64())
        / (elem_total.as_secs_f64() / elem_model.as_secs_f64());
    println!(
        "median ratio element/direct {median:.3} (min {:.3}, max {:.3}); \
         model-normalised ratio {normalised:.3}",
        ratios[0],
        ratios[ratios.len() - 1]
    );
}
