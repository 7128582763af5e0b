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
