//! RGB frames in and out of GStreamer pipelines as tensors (appsrc / appsink), for the
//! evaluations and the codec pool: every wait is bounded, bus errors end it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clipdenoise::frame::{ColorMatrix, FrameFormat, PixelFormat};
use gst::prelude::*;
use gstclipdenoise_element::frames::{frame_format, pack, unpack};
use tch::Tensor;

/// No sample for this long from a running pipeline: it is stuck, fail instead of hanging.
const STALL: Duration = Duration::from_secs(300);

/// Wait for the next sample of `sink`, failing on a bus error or a stall.
pub fn pull(sink: &gst_app::AppSink, bus: &gst::Bus) -> anyhow::Result<Option<gst::Sample>> {
    let deadline = Instant::now() + STALL;
    loop {
        if let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) {
            return Ok(Some(s));
        }
        if sink.is_eos() {
            return Ok(None);
        }
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                bail!("{}", e.error());
            }
        }
        if Instant::now() > deadline {
            bail!("the pipeline produced no frame for {} s", STALL.as_secs());
        }
    }
}

/// Caps for an appsink of decoded frames: the formats [`sample_to_tensor`] converts itself
/// (the element's). Put after a `videoconvert` (which then passes the decoder's YUV through)
/// instead of `video/x-raw,format=RGB`: GStreamer 1.22's `videoconvert` YUV to RGB is 1-4
/// levels darker than the BT.601/709 formulas and FFmpeg's exact conversion (issue 23).
pub const DECODED: &str =
    "video/x-raw,format={ I420, Y444, NV12, YUY2, UYVY, I420_10LE, P010_10LE, \
     RGB, BGR, RGBx, BGRx, RGBA, BGRA }";

/// RGB u8 (3, H, W) tensor of a sample in any of the element's formats: YUV through the
/// library's converter with the caps' matrix and range (`clipdenoise::frame`), RGB as is.
pub fn sample_to_tensor(sample: &gst::Sample) -> anyhow::Result<Tensor> {
    let caps = sample.caps().context("sample without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps)?;
    let fmt = frame_format(&info)
        .with_context(|| format!("cannot convert {:?} frames to RGB", info.format()))?;
    let buf = sample.buffer().context("sample without buffer")?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, &info)
        .map_err(|_| anyhow::anyhow!("cannot map a frame"))?;
    let packed = pack(&frame, &fmt).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rgb = clipdenoise::frame::frames_to_tensor(&[&packed], &fmt, tch::Device::Cpu)?;
    Ok(rgb
        .squeeze_dim(0)
        .f_mul_scalar(255.0)?
        .f_round()?
        .f_clamp(0.0, 255.0)?
        .f_to_kind(tch::Kind::Uint8)?)
}

/// One packed frame of `fmt` as a buffer of GStreamer's layout for it (padded rows), with
/// timestamps for frame `i` at `fps`.
fn packed_buffer(
    packed: &[u8],
    fmt: &FrameFormat,
    i: u64,
    fps: u64,
) -> anyhow::Result<gst::Buffer> {
    let info = video_info(fmt, fps)?;
    let mut buf = gst::Buffer::with_size(info.size())?;
    {
        let b = buf.get_mut().context("new buffer not writable")?;
        let frame_ns = 1_000_000_000u64 / fps;
        b.set_pts(gst::ClockTime::from_nseconds(i * frame_ns));
        b.set_duration(gst::ClockTime::from_nseconds(frame_ns));
        let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(b, &info)
            .map_err(|_| anyhow::anyhow!("cannot map a new frame"))?;
        unpack(packed, fmt, &mut frame).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(buf)
}

/// GStreamer's video info (and caps) for I420 frames of `fmt`'s size, matrix and range at
/// `fps` frames per second.
fn video_info(fmt: &FrameFormat, fps: u64) -> anyhow::Result<gst_video::VideoInfo> {
    use gst_video::VideoTransferFunction as T;
    use gst_video::{VideoColorMatrix as M, VideoColorPrimaries as P, VideoColorRange as R};
    let (matrix, transfer, primaries) = match fmt.matrix {
        ColorMatrix::Bt601 => (M::Bt601, T::Bt601, P::Smpte170m),
        ColorMatrix::Bt709 => (M::Bt709, T::Bt709, P::Bt709),
        ColorMatrix::Bt2020 => (M::Bt2020, T::Bt202010, P::Bt2020),
        ColorMatrix::Smpte240m => (M::Smpte240m, T::Smpte240m, P::Smpte240m),
    };
    let range = if fmt.full_range {
        R::Range0_255
    } else {
        R::Range16_235
    };
    let format = match fmt.format {
        PixelFormat::I420 => gst_video::VideoFormat::I420,
        other => bail!("no GStreamer buffers of {other:?} here"),
    };
    Ok(
        gst_video::VideoInfo::builder(format, fmt.width as u32, fmt.height as u32)
            .colorimetry(&gst_video::VideoColorimetry::new(
                range, matrix, transfer, primaries,
            ))
            .fps(gst::Fraction::new(fps as i32, 1))
            .build()?,
    )
}

/// x264 codes a frame in 16x16 macroblocks. For a frame whose sides are not multiples of 16
/// it read memory it had not written (past the frame, in its buffers or in videoconvert's),
/// so the same frames encoded differently from run to run and eval-video's figures moved in
/// the second decimal (with jemalloc's zeroing on, they did not). Frames are therefore encoded
/// with their sides rounded up to multiples of 16, the last row and column repeated (what an
/// encoder's own padding does), and cropped back after decoding; eval-video also runs x264
/// and avdec_h264 on one thread each. A smaller run-to-run difference remains now and then
/// (weights/README.md).
pub const MACROBLOCK: i64 = 16;

/// RGB u8 (3, H, W) frames as I420 buffers of `macroblock_padded(H, W)` (BT.601, limited
/// range, the library's converter: exact, where `videoconvert` was within 0.4 level) with
/// timestamps at `fps`, and the caps for an `appsrc` in front of x264enc (see
/// [`MACROBLOCK`]); `videocrop right=W' - W bottom=H' - H` after the decoder crops them back.
pub fn i420_buffers(frames: &[Tensor], fps: u64) -> anyhow::Result<(Vec<gst::Buffer>, gst::Caps)> {
    let (h, w) = macroblock_padded(&frames[0]);
    let fmt = FrameFormat::new(PixelFormat::I420, w as usize, h as usize);
    let buffers = frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (fh, fw) = (f.size()[1], f.size()[2]);
            let rgb = f.unsqueeze(0).to_kind(tch::Kind::Float).f_pad(
                [0, w - fw, 0, h - fh],
                "replicate",
                None,
            )? / 255.0;
            let packed = clipdenoise::frame::tensor_to_frames(&rgb, &fmt, &[])?;
            packed_buffer(&packed[0], &fmt, i as u64, fps)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((buffers, video_info(&fmt, fps)?.to_caps()?))
}

/// Run the pipeline `desc` (an appsrc `src`, an appsink `sink`) on `buffers` of `caps`: the
/// samples that come out, one per buffer (`what` names the pipeline in errors, a missing or
/// extra frame is one).
pub fn run_buffers(
    desc: &str,
    buffers: Vec<gst::Buffer>,
    caps: &gst::Caps,
    what: &str,
) -> anyhow::Result<Vec<gst::Sample>> {
    let pipeline = launch(desc)?;
    let src = appsrc(&pipeline, "src")?;
    src.set_caps(Some(caps));
    let sink = appsink(&pipeline, "sink")?;
    let bus = pipeline.bus().context("no bus")?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| anyhow::anyhow!("the {what} cannot start (a GStreamer element missing?)"))?;
    let n = buffers.len();
    let result = (|| {
        for buf in buffers {
            src.push_buffer(buf)?;
        }
        src.end_of_stream()?;
        let mut out = Vec::with_capacity(n);
        while let Some(s) = pull(&sink, &bus)? {
            out.push(s);
        }
        if out.len() != n {
            bail!("{what}: {n} frames in, {} out", out.len());
        }
        anyhow::Ok(out)
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// The (height, width) of an RGB (3, H, W) frame rounded up to multiples of [`MACROBLOCK`].
pub fn macroblock_padded(frame: &Tensor) -> (i64, i64) {
    let up = |n: i64| (n + MACROBLOCK - 1) / MACROBLOCK * MACROBLOCK;
    (up(frame.size()[1]), up(frame.size()[2]))
}

/// A parsed pipeline and its named appsrc / appsinks.
pub fn launch(desc: &str) -> anyhow::Result<gst::Pipeline> {
    gst::parse::launch(desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))
}

pub fn appsink(p: &gst::Pipeline, name: &str) -> anyhow::Result<gst_app::AppSink> {
    p.by_name(name)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .with_context(|| format!("no appsink {name}"))
}

pub fn appsrc(p: &gst::Pipeline, name: &str) -> anyhow::Result<gst_app::AppSrc> {
    p.by_name(name)
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .with_context(|| format!("no appsrc {name}"))
}
