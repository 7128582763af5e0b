//! The element on the webcam (YUY2, UYVY), 4:4:4 (Y444), 10-bit YUV (I420_10LE, P010_10LE), 16-bit RGB
//! (RGBA64_LE, BGRA64_LE) and 10-bit RGB (RGB10A2_LE, BGR10A2_LE) formats, with real GStreamer
//! and the tiny fixture model.

mod common;

use gst::prelude::*;

use common::{
    child, fixture, from_buffer, gst_inspect, gst_launch, init, next_sample, output_within,
    plugin_dir, to_buffer, CHILD_WATCHDOG,
};

use clipdenoise::frame::{ColorMatrix, FrameFormat, PixelFormat};
use clipdenoise::inference::{Denoiser, Options};
use clipdenoise::weights::ModelSource;

/// The new formats: GStreamer's name, the core's format, a size (odd widths where allowed).
const FORMATS: [(&str, PixelFormat, usize, usize); 9] = [
    ("YUY2", PixelFormat::Yuy2, 31, 22),
    ("Y444", PixelFormat::Y444, 31, 21),
    ("UYVY", PixelFormat::Uyvy, 32, 24),
    ("I420_10LE", PixelFormat::I420P10, 30, 22),
    ("P010_10LE", PixelFormat::P010, 34, 20),
    ("RGBA64_LE", PixelFormat::Rgba64, 30, 22),
    ("BGRA64_LE", PixelFormat::Bgra64, 29, 21),
    ("RGB10A2_LE", PixelFormat::Rgb10a2, 30, 22),
    ("BGR10A2_LE", PixelFormat::Bgr10a2, 27, 19),
];

fn caps(name: &str, w: usize, h: usize) -> String {
    format!("video/x-raw,format={name},width={w},height={h},framerate=25/1,colorimetry=bt601")
}

/// A packed frame of `fmt` with noisy-looking valid samples (10-bit values where 10-bit).
fn frame(fmt: &FrameFormat, seed: usize) -> Vec<u8> {
    let byte = |i: usize| (i * 37 + seed * 101 + (i / 7) * 11 + (i * i) % 29) % 256;
    match fmt.format {
        PixelFormat::I420P10 | PixelFormat::P010 => {
            let shift = if fmt.format == PixelFormat::P010 {
                6
            } else {
                0
            };
            (0..fmt.frame_len() / 2)
                .flat_map(|i| ((((byte(i) * 4 + i % 4) as u16) & 1023) << shift).to_le_bytes())
                .collect()
        }
        _ => (0..fmt.frame_len()).map(|i| byte(i) as u8).collect(),
    }
}

/// appsrc (caps `name`) ! clipdenoise `props` ! appsink: push `frames` 40 ms apart, then EOS;
/// what came out, as packed frames with their PTS.
fn run(name: &str, fmt: &FrameFormat, props: &str, frames: &[Vec<u8>]) -> Vec<(u64, Vec<u8>)> {
    let (w, h) = (fmt.width, fmt.height);
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps={} ! clipdenoise model=\"{}\" {props} \
         ! appsink name=sink sync=false",
        caps(name, w, h),
        fixture()
    ))
    .unwrap();
    let src: gst_app::AppSrc = child(&pipeline, "src");
    let sink: gst_app::AppSink = child(&pipeline, "sink");
    let info =
        gst_video::VideoInfo::from_caps(&caps(name, w, h).parse::<gst::Caps>().unwrap()).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let mut buf = to_buffer(&info, fmt, f);
        buf.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(40 * i as u64));
        src.push_buffer(buf).unwrap();
    }
    src.end_of_stream().unwrap();
    let mut out = Vec::new();
    while let Some(sample) = next_sample(&sink) {
        let buf = sample.buffer().unwrap();
        out.push((buf.pts().unwrap().mseconds(), from_buffer(&info, fmt, buf)));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    out
}

fn format_of(f: PixelFormat, w: usize, h: usize) -> FrameFormat {
    FrameFormat {
        matrix: ColorMatrix::Bt601,
        full_range: false,
        ..FrameFormat::new(f, w, h)
    }
}

#[test]
fn new_formats_keep_frames_and_timestamps_and_equal_the_core_denoiser() {
    init();
    let denoiser = Denoiser::new(
        ModelSource::parse(&fixture())
            .load(tch::Device::Cpu)
            .unwrap(),
        Options::default(),
    )
    .unwrap();
    for (name, f, w, h) in FORMATS {
        let fmt = format_of(f, w, h);
        let frames: Vec<Vec<u8>> = (0..4).map(|i| frame(&fmt, i)).collect();
        let out = run(
            name,
            &fmt,
            "batch-size=1 strength=0.75 temporal=0 precision=fp32",
            &frames,
        );
        assert_eq!(out.len(), frames.len(), "{name}: frames in != frames out");
        for (i, ((pts, got), input)) in out.iter().zip(&frames).enumerate() {
            assert_eq!(*pts, 40 * i as u64, "{name} frame {i}: timestamp");
            let want = denoiser.denoise_frames(&[input], &fmt, 0.75).unwrap();
            assert!(got == &want[0], "{name} frame {i} differs from the core");
            assert!(got != input, "{name} frame {i} unchanged");
            if matches!(f, PixelFormat::Rgb10a2 | PixelFormat::Bgr10a2) {
                let alpha = |d: &[u8]| -> Vec<u8> { d.chunks(4).map(|px| px[3] >> 6).collect() };
                assert!(
                    alpha(got) == alpha(input),
                    "{name} frame {i}: alpha changed"
                );
            }
            if matches!(f, PixelFormat::Rgba64 | PixelFormat::Bgra64) {
                let alpha =
                    |d: &[u8]| -> Vec<u8> { d.chunks(8).flat_map(|px| [px[6], px[7]]).collect() };
                assert!(
                    alpha(got) == alpha(input),
                    "{name} frame {i}: alpha changed"
                );
                // Written back at 16 bits: not 8-bit values scaled up (multiples of 257).
                let fine = got
                    .chunks(2)
                    .filter(|c| u16::from_le_bytes([c[0], c[1]]) % 257 != 0)
                    .count();
                assert!(
                    fine > got.len() / 8,
                    "{name}: {fine} samples off the 8-bit grid"
                );
            }
        }
        if matches!(f, PixelFormat::I420P10 | PixelFormat::P010) {
            // Written back at 10 bits: not 8-bit values scaled up.
            let shift = if f == PixelFormat::P010 { 6 } else { 0 };
            let fine = out[0]
                .1
                .chunks(2)
                .filter(|c| (u16::from_le_bytes([c[0], c[1]]) >> shift) % 4 != 0)
                .count();
            assert!(
                fine > out[0].1.len() / 8,
                "{name}: {fine} samples off the 8-bit grid"
            );
        }
    }
}

#[test]
fn new_formats_pass_through_exactly_at_strength_zero() {
    init();
    for (name, f, w, h) in FORMATS {
        let fmt = format_of(f, w, h);
        let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(&fmt, 7 + i)).collect();
        let out = run(name, &fmt, "strength=0", &frames);
        assert_eq!(out.len(), frames.len(), "{name}: frames in != frames out");
        for (i, ((pts, got), input)) in out.iter().zip(&frames).enumerate() {
            assert_eq!(*pts, 40 * i as u64, "{name} frame {i}: timestamp");
            assert!(got == input, "{name} frame {i} changed at strength 0");
        }
    }
}

#[test]
fn gst_launch_takes_each_new_format_from_videotestsrc() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    for (name, ..) in FORMATS {
        let pipeline = format!(
            "videotestsrc num-buffers=6 ! video/x-raw,format={name},width=64,height=48 \
             ! clipdenoise model={} ! video/x-raw,format={name} ! fakesink",
            fixture()
        );
        let out = output_within(
            &mut gst_launch(dir.path(), plugins.path(), &pipeline),
            CHILD_WATCHDOG,
            &format!("gst-launch-1.0 with {name}"),
        );
        let log = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}:\n{log}");
        assert!(log.contains("frames-in=6 frames-out=6"), "{name}:\n{log}");
    }
}

#[test]
fn gst_inspect_lists_the_new_formats_in_both_pad_templates() {
    init();
    let text = gst_inspect(CHILD_WATCHDOG);
    let templates = text.split("Pad Templates:").nth(1).expect("pad templates");
    let templates = templates.split("Element has").next().unwrap();
    let pads: Vec<&str> = templates.split(" template: ").skip(1).collect();
    assert_eq!(pads.len(), 2, "{templates}");
    for pad in pads {
        for (name, ..) in FORMATS {
            let listed = format!("(string){name},");
            let last = format!("(string){name} }}");
            assert!(
                pad.contains(&listed) || pad.contains(&last),
                "{name} missing from a pad template:\n{pad}"
            );
        }
    }
}
