//! GStreamer video frames to and from the engine's packed frames: the caps' format and
//! colorimetry as a [`FrameFormat`] and the planes copied across strides. The element uses it,
//! and so do the CLI's harnesses, which decode YUV with the library's converter
//! (`clipdenoise::frame`) instead of `videoconvert` (GStreamer 1.22's YUV to RGB is 1-4 levels
//! dark, issue 23).

use clipdenoise::frame::{copy_rows, ColorMatrix, FrameFormat, PixelFormat};
use gst_video::prelude::*;

/// The engine's frame format for negotiated video info.
pub fn frame_format(info: &gst_video::VideoInfo) -> Option<FrameFormat> {
    use gst_video::VideoFormat as V;
    let format = match info.format() {
        V::Rgb => PixelFormat::Rgb,
        V::Bgr => PixelFormat::Bgr,
        V::Rgbx => PixelFormat::Rgbx,
        V::Bgrx => PixelFormat::Bgrx,
        V::Rgba => PixelFormat::Rgba,
        V::Bgra => PixelFormat::Bgra,
        V::Rgba64Le => PixelFormat::Rgba64,
        V::Bgra64Le => PixelFormat::Bgra64,
        V::Rgb10a2Le => PixelFormat::Rgb10a2,
        V::Bgr10a2Le => PixelFormat::Bgr10a2,
        V::I420 => PixelFormat::I420,
        V::Y444 => PixelFormat::Y444,
        V::Nv12 => PixelFormat::Nv12,
        V::Yuy2 => PixelFormat::Yuy2,
        V::Uyvy => PixelFormat::Uyvy,
        V::I42010le => PixelFormat::I420P10,
        V::P01010le => PixelFormat::P010,
        _ => return None,
    };
    let colorimetry = info.colorimetry();
    // BT.601 also for an unknown matrix (GStreamer's default for SD sizes, FFmpeg's for any).
    let matrix = match colorimetry.matrix() {
        gst_video::VideoColorMatrix::Bt709 => ColorMatrix::Bt709,
        gst_video::VideoColorMatrix::Bt2020 => ColorMatrix::Bt2020,
        gst_video::VideoColorMatrix::Smpte240m => ColorMatrix::Smpte240m,
        _ => ColorMatrix::Bt601,
    };
    Some(FrameFormat {
        format,
        width: info.width() as usize,
        height: info.height() as usize,
        matrix,
        full_range: colorimetry.range() == gst_video::VideoColorRange::Range0_255,
    })
}

fn plane_stride<F: VideoFrameExt>(frame: &F, plane: usize) -> Result<usize, String> {
    frame
        .plane_stride()
        .get(plane)
        .and_then(|&s| usize::try_from(s).ok())
        .ok_or_else(|| format!("plane {plane} has no usable stride"))
}

/// Copy a mapped frame (any strides) into the engine's packed layout.
pub fn pack(
    frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
    fmt: &FrameFormat,
) -> Result<Vec<u8>, String> {
    let mut out = vec![0; fmt.frame_len()];
    for (p, plane) in fmt.planes().into_iter().enumerate() {
        let data = frame.plane_data(p as u32).map_err(|e| e.to_string())?;
        let stride = plane_stride(frame, p)?;
        let packed = &mut out[plane.range()];
        copy_rows(
            data,
            stride,
            packed,
            plane.row_bytes,
            plane.row_bytes,
            plane.rows,
        )
        .map_err(|e| format!("plane {p}: {e}"))?;
    }
    Ok(out)
}

/// Copy a packed frame into a mapped output frame.
pub fn unpack(
    data: &[u8],
    fmt: &FrameFormat,
    frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
) -> Result<(), String> {
    for (p, plane) in fmt.planes().into_iter().enumerate() {
        let stride = plane_stride(frame, p)?;
        let packed = data
            .get(plane.range())
            .ok_or("denoised frame is too small")?;
        let out = frame.plane_data_mut(p as u32).map_err(|e| e.to_string())?;
        copy_rows(
            packed,
            plane.row_bytes,
            out,
            stride,
            plane.row_bytes,
            plane.rows,
        )
        .map_err(|e| format!("output plane {p}: {e}"))?;
    }
    Ok(())
}
