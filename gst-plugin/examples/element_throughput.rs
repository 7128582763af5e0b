//! Benchmark (not a test): throughput of the `clipdenoise` element against calling the core
//! model directly on the same batches, in the same process, on the CPU.
//!
//!     cargo run --release -p gst-plugin-clipdenoise --example element_throughput -- \
//!         [--size 320x240] [--batch-size 4] [--frames 64] [--model PATH] [--rounds 2]
//!
//! Prints frames/s of both and the ratio element / direct.

use std::time::{Duration, Instant};

use gst::prelude::*;

use clipdenoise::frame::{FrameFormat, PixelFormat};
use clipdenoise::inference::{Denoiser, Options};
use clipdenoise::weights::ModelSource;

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
        frames: 64,
        model: String::new(),
        rounds: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        match k.as_str() {
            "--size" => {
                let (w, h) = v.split_once('x').ok_or("--size WxH")?;
                a.width = w.parse().map_err(|_| "bad width")?;
                a.height = h.parse().map_err(|_| "bad height")?;
            }
            "--batch-size" => a.batch = v.parse().map_err(|_| "bad batch size")?,
            "--frames" => a.frames = v.parse().map_err(|_| "bad frame count")?,
            "--model" => a.model = v,
            "--rounds" => a.rounds = v.parse().map_err(|_| "bad rounds")?,
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    a.frames = a.frames.div_ceil(a.batch) * a.batch;
    Ok(a)
}

fn synthetic(fmt: &FrameFormat, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            (0..fmt.frame_len())
                .map(|j| {
                    (((j % (fmt.width * 3)) / 3
                        + j / (fmt.width * 3)
                        + i * 7
                        + (j * 2654435761) % 61)
                        % 256) as u8
                })
                .collect()
        })
        .collect()
}

fn direct(d: &Denoiser, frames: &[Vec<u8>], fmt: &FrameFormat, batch: usize) -> Duration {
    let t0 = Instant::now();
    for chunk in frames.chunks(batch) {
        let refs: Vec<&[u8]> = chunk.iter().map(|f| f.as_slice()).collect();
        d.denoise_frames(&refs, fmt, 1.0).expect("denoise");
    }
    t0.elapsed()
}

fn element(a: &Args, frames: &[Vec<u8>]) -> Duration {
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time block=true max-bytes=0 max-buffers=4 \
         caps=video/x-raw,format=RGB,width={w},height={h},framerate=30/1 \
         ! clipdenoise model=\"{m}\" device=cpu batch-size={b} max-latency=60000 queue-size={q} \
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
        .expect("appsrc")
        .downcast::<gst_app::AppSrc>()
        .expect("appsrc");
    let sink = pipeline
        .by_name("sink")
        .expect("appsink")
        .downcast::<gst_app::AppSink>()
        .expect("appsink");
    pipeline.set_state(gst::State::Playing).expect("playing");
    let frames: Vec<Vec<u8>> = frames.to_vec();
    let t0 = Instant::now();
    let pusher = std::thread::spawn(move || {
        for (i, f) in frames.into_iter().enumerate() {
            let mut b = gst::Buffer::from_mut_slice(f);
            b.get_mut()
                .expect("writable")
                .set_pts(gst::ClockTime::from_mseconds(33 * i as u64));
            if src.push_buffer(b).is_err() {
                break;
            }
        }
        let _ = src.end_of_stream();
    });
    let mut n = 0;
    while sink.pull_sample().is_ok() {
        n += 1;
    }
    let t = t0.elapsed();
    pusher.join().expect("pusher");
    pipeline.set_state(gst::State::Null).expect("null");
    assert_eq!(n, a.frames, "frames in != frames out");
    t
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
    gstclipdenoise::plugin_register_static().expect("register");
    let fmt = FrameFormat::new(PixelFormat::Rgb, a.width, a.height);
    let frames = synthetic(&fmt, a.frames);
    let source = ModelSource::parse(&a.model);
    let d = Denoiser::new(
        source.load(tch::Device::Cpu).expect("model"),
        Options::default(),
    )
    .expect("denoiser");
    println!(
        "model {source}, {}x{} RGB, batch {}, {} frames, {} threads",
        a.width,
        a.height,
        a.batch,
        a.frames,
        tch::get_num_threads()
    );
    // Warm up both paths.
    direct(&d, &frames[..a.batch], &fmt, a.batch);
    element(
        &Args {
            frames: a.batch,
            ..Args { ..a_clone(&a) }
        },
        &frames[..a.batch],
    );
    let (mut best_d, mut best_e) = (Duration::MAX, Duration::MAX);
    for r in 0..a.rounds {
        let td = direct(&d, &frames, &fmt, a.batch);
        let te = element(&a, &frames);
        let fps = |t: Duration| a.frames as f64 / t.as_secs_f64();
        println!(
            "round {r}: direct {:.2} frames/s, element {:.2} frames/s",
            fps(td),
            fps(te)
        );
        best_d = best_d.min(td);
        best_e = best_e.min(te);
    }
    let fps = |t: Duration| a.frames as f64 / t.as_secs_f64();
    println!(
        "best: direct {:.2} frames/s, element {:.2} frames/s, ratio element/direct {:.3}",
        fps(best_d),
        fps(best_e),
        fps(best_e) / fps(best_d)
    );
}

fn a_clone(a: &Args) -> Args {
    Args {
        width: a.width,
        height: a.height,
        batch: a.batch,
        frames: a.frames,
        model: a.model.clone(),
        rounds: a.rounds,
    }
}
