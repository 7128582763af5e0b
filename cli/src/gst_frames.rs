//! RGB frames in and out of GStreamer pipelines as tensors (appsrc / appsink), for the
//! evaluations and the codec pool: every wait is bounded, bus errors end it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gst::prelude::*;
use gst_video::prelude::*;
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

/// RGB u8 (3, H, W) tensor of a sample of RGB caps.
pub fn sample_to_tensor(sample: &gst::Sample) -> anyhow::Result<Tensor> {
    let caps = sample.caps().context("sample without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps)?;
    let buf = sample.buffer().context("sample without buffer")?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, &info)
        .map_err(|_| anyhow::anyhow!("cannot map a frame"))?;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data(0)?;
    let mut px = vec![0u8; w * h * 3];
    clipdenoise::frame::copy_rows(data, stride, &mut px, w * 3, w * 3, h)?;
    Ok(Tensor::from_slice(&px)
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1])
        .contiguous())
}

/// Push RGB u8 (3, H, W) frames into `src` with timestamps at `fps`, rows padded to
/// GStreamer's default RGB stride (a multiple of 4 bytes); the caller ends the stream.
pub fn push_rgb(src: &gst_app::AppSrc, frames: &[Tensor], fps: u64) -> anyhow::Result<()> {
    let frame_ns = 1_000_000_000u64 / fps;
    for (i, f) in frames.iter().enumerate() {
        let (h, w) = (f.size()[1] as usize, f.size()[2] as usize);
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w as u32, h as u32)
            .build()?;
        let stride = info.stride()[0] as usize;
        let tight = Vec::<u8>::try_from(f.permute([1, 2, 0]).contiguous().flatten(0, -1))?;
        let mut bytes = vec![0u8; info.size()];
        clipdenoise::frame::copy_rows(&tight, w * 3, &mut bytes, stride, w * 3, h)?;
        let mut buf = gst::Buffer::from_mut_slice(bytes);
        {
            let b = buf.get_mut().context("new buffer not writable")?;
            b.set_pts(gst::ClockTime::from_nseconds(i as u64 * frame_ns));
            b.set_duration(gst::ClockTime::from_nseconds(frame_ns));
        }
        src.push_buffer(buf)?;
    }
    Ok(())
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

/// RGB u8 (3, H, W) frames as I420 buffers (GStreamer's `videoconvert`) of
/// `macroblock_padded(H, W)` with timestamps at `fps`, for an `appsrc` of I420 caps in front
/// of x264enc (see [`MACROBLOCK`]).
pub fn i420_buffers(frames: &[Tensor], fps: u64) -> anyhow::Result<Vec<gst::Buffer>> {
    let (h, w) = macroblock_padded(&frames[0]);
    let padded: Vec<Tensor> = frames
        .iter()
        .map(|f| {
            let (fh, fw) = (f.size()[1], f.size()[2]);
            f.unsqueeze(0)
                .to_kind(tch::Kind::Float)
                .f_pad([0, w - fw, 0, h - fh], "replicate", None)
                .map(|t| t.squeeze_dim(0).to_kind(tch::Kind::Uint8))
        })
        .collect::<Result<_, _>>()?;
    let desc = format!(
        "appsrc name=src format=time max-bytes=0 \
         caps=video/x-raw,format=RGB,width={w},height={h},framerate={fps}/1 ! \
         videoconvert ! video/x-raw,format=I420 ! appsink name=sink sync=false"
    );
    run_frames(&desc, &padded, fps, "RGB to I420")?
        .into_iter()
        .map(|s| s.buffer_owned().context("sample without buffer"))
        .collect()
}

/// Run the pipeline `desc` (an appsrc `src` of RGB caps, an appsink `sink`) on `frames`,
/// pushed with timestamps at `fps`: the samples that come out, one per frame (`what` names
/// the pipeline in errors, a missing or extra frame is one).
pub fn run_frames(
    desc: &str,
    frames: &[Tensor],
    fps: u64,
    what: &str,
) -> anyhow::Result<Vec<gst::Sample>> {
    let pipeline = launch(desc)?;
    let src = appsrc(&pipeline, "src")?;
    let sink = appsink(&pipeline, "sink")?;
    let bus = pipeline.bus().context("no bus")?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| anyhow::anyhow!("the {what} cannot start (a GStreamer element missing?)"))?;
    let result = (|| {
        push_rgb(&src, frames, fps)?;
        src.end_of_stream()?;
        let mut out = Vec::with_capacity(frames.len());
        while let Some(s) = pull(&sink, &bus)? {
            out.push(s);
        }
        if out.len() != frames.len() {
            bail!("{what}: {} frames in, {} out", frames.len(), out.len());
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
