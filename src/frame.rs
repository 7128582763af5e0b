//! Raw video frames (packed u8 planes) to and from model tensors. Colour conversion runs on the
//! model's device, so YUV frames are converted next to the model (on the GPU when it is there).

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

mod rgb10;
mod yuv;
use yuv::YuvLayout;

/// Pixel layouts the engine takes (GStreamer's names in brackets where they differ). Packed
/// RGB formats store bytes in the order of the name (`Rgbx`: R, G, B, padding). 4:2:0 formats
/// have chroma planes of `ceil(w/2) x ceil(h/2)` samples; packed 4:2:2 formats one plane of
/// `ceil(w/2)` 4-byte macropixels per row (an odd width's last one carries a spare luma sample).
/// 10- and 16-bit formats store each sample as a little-endian u16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    Rgb,
    Bgr,
    Rgbx,
    Bgrx,
    Rgba,
    Bgra,
    /// 16 bits per channel, alpha last (RGBA64_LE).
    Rgba64,
    /// 16 bits per channel, alpha last (BGRA64_LE).
    Bgra64,
    /// 10 bits per channel and 2-bit alpha in a little-endian u32, R lowest (RGB10A2_LE).
    Rgb10a2,
    /// 10 bits per channel and 2-bit alpha in a little-endian u32, B lowest (BGR10A2_LE).
    Bgr10a2,
    /// 8-bit 4:2:0: Y, U and V planes.
    I420,
    /// 8-bit 4:4:4: Y, U and V planes of full size (Y444; H.264/HEVC 4:4:4 decodes to it).
    Y444,
    /// 8-bit 4:2:0: Y plane, interleaved U, V plane.
    Nv12,
    /// 8-bit packed 4:2:2: Y0 U Y1 V.
    Yuy2,
    /// 8-bit packed 4:2:2: U Y0 V Y1.
    Uyvy,
    /// 10-bit 4:2:0 planar, values 0..1023 in the low bits (I420_10LE).
    I420P10,
    /// 10-bit 4:2:0 semi-planar, values in the high 10 bits (P010_10LE).
    P010,
}

/// YUV -> RGB matrix (ignored for RGB formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ColorMatrix {
    #[default]
    Bt601,
    Bt709,
    /// BT.2020 non-constant luminance (HDR and UHD video).
    Bt2020,
    /// SMPTE 240M (early HDTV).
    Smpte240m,
}

/// Everything needed to interpret a packed frame buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameFormat {
    pub format: PixelFormat,
    pub width: usize,
    pub height: usize,
    pub matrix: ColorMatrix,
    /// YUV range: full (0..255) or limited (16..235 / 16..240).
    pub full_range: bool,
}

impl FrameFormat {
    pub fn new(format: PixelFormat, width: usize, height: usize) -> Self {
        FrameFormat {
            format,
            width,
            height,
            matrix: ColorMatrix::Bt601,
            full_range: false,
        }
    }

    /// (channels, bytes per channel) of a packed RGB format, or None for YUV.
    fn rgb_layout(&self) -> Option<(usize, usize)> {
        use PixelFormat::*;
        match self.format {
            Rgb | Bgr => Some((3, 1)),
            Rgbx | Bgrx | Rgba | Bgra => Some((4, 1)),
            Rgba64 | Bgra64 => Some((4, 2)),
            _ => None,
        }
    }

    /// Bytes per pixel of a packed RGB format, or None for YUV.
    fn packed_bpp(&self) -> Option<usize> {
        let rgb10 = rgb10::fields(self.format).map(|_| 4);
        self.rgb_layout()
            .map(|(channels, bytes)| channels * bytes)
            .or(rgb10)
    }

    /// The planes of the packed layout, in order: the one table of this project's frame
    /// layouts (the element, the tests and the colour conversion below follow it).
    pub fn planes(&self) -> Vec<Plane> {
        let sizes = match (self.packed_bpp(), YuvLayout::of(self.format)) {
            (Some(bpp), _) => vec![(bpp * self.width, self.height)],
            (None, Some(yuv)) => yuv.plane_sizes(self),
            (None, None) => unreachable!("{:?} is neither RGB nor YUV", self.format),
        };
        let mut offset = 0;
        sizes
            .into_iter()
            .map(|(row_bytes, rows)| {
                let plane = Plane {
                    offset,
                    row_bytes,
                    rows,
                };
                offset += plane.len();
                plane
            })
            .collect()
    }

    /// Size in bytes of one tightly packed frame.
    pub fn frame_len(&self) -> usize {
        self.planes().last().map_or(0, |p| p.range().end)
    }

    pub fn validate(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 {
            return Err(Error::Input(format!(
                "frame size {}x{} is empty",
                self.width, self.height
            )));
        }
        Ok(())
    }

    /// RGB channel indices in a packed pixel.
    fn rgb_order(&self) -> [i64; 3] {
        match self.format {
            PixelFormat::Bgr | PixelFormat::Bgrx | PixelFormat::Bgra | PixelFormat::Bgra64 => {
                [2, 1, 0]
            }
            _ => [0, 1, 2],
        }
    }
}

/// One plane of a packed frame: `rows` rows of `row_bytes` bytes, with no padding between rows,
/// starting `offset` bytes into the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plane {
    pub offset: usize,
    pub row_bytes: usize,
    pub rows: usize,
}

impl Plane {
    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.row_bytes * self.rows
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Its bytes in a packed frame.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Copy `rows` rows of `row_bytes` bytes from `src` (rows `src_stride` bytes apart) to `dst`
/// (rows `dst_stride` bytes apart): between a packed frame's plane and a buffer with padded
/// rows (a GStreamer video frame), in either direction.
pub fn copy_rows(
    src: &[u8],
    src_stride: usize,
    dst: &mut [u8],
    dst_stride: usize,
    row_bytes: usize,
    rows: usize,
) -> Result<()> {
    let needed = |stride: usize| rows.checked_sub(1).map_or(0, |r| r * stride + row_bytes);
    if src.len() < needed(src_stride) || dst.len() < needed(dst_stride) {
        return Err(Error::Input(format!(
            "{rows} rows of {row_bytes} bytes do not fit: source {} bytes (stride {src_stride}), \
             destination {} bytes (stride {dst_stride})",
            src.len(),
            dst.len()
        )));
    }
    for r in 0..rows {
        dst[r * dst_stride..r * dst_stride + row_bytes]
            .copy_from_slice(&src[r * src_stride..r * src_stride + row_bytes]);
    }
    Ok(())
}

impl ColorMatrix {
    /// (Kr, Kb): the red and blue luma weights (green is 1 - Kr - Kb).
    pub const fn kr_kb(self) -> (f64, f64) {
        match self {
            ColorMatrix::Bt601 => (0.299, 0.114),
            ColorMatrix::Bt709 => (0.2126, 0.0722),
            ColorMatrix::Bt2020 => (0.2627, 0.0593),
            ColorMatrix::Smpte240m => (0.212, 0.087),
        }
    }
}

fn check_len(fmt: &FrameFormat, data: &[u8]) -> Result<()> {
    if data.len() != fmt.frame_len() {
        return Err(Error::Input(format!(
            "a {:?} {}x{} frame needs {} bytes, got {}",
            fmt.format,
            fmt.width,
            fmt.height,
            fmt.frame_len(),
            data.len()
        )));
    }
    Ok(())
}

/// Upload frames (as u8) and convert them on `device` to an RGB batch (N, 3, H, W) f32 in [0, 1].
pub fn frames_to_tensor(frames: &[&[u8]], fmt: &FrameFormat, device: Device) -> Result<Tensor> {
    fmt.validate()?;
    if frames.is_empty() {
        return Err(Error::Input("empty batch".into()));
    }
    let mut bytes = Vec::with_capacity(frames.len() * fmt.frame_len());
    for f in frames {
        check_len(fmt, f)?;
        bytes.extend_from_slice(f);
    }
    let n = frames.len() as i64;
    let raw = Tensor::f_from_slice(&bytes)?.f_to_device(device)?;
    let rgb = match (fmt.rgb_layout(), rgb10::fields(fmt.format)) {
        (Some(layout), _) => rgb_to_tensor(&raw, fmt, layout, n)?,
        (None, Some(order)) => rgb10::to_rgb(&raw, fmt, order, n)?,
        (None, None) => {
            let layout = YuvLayout::of(fmt.format).expect("a YUV format");
            yuv::to_rgb(&raw, fmt, &layout, n)?
        }
    };
    Ok(rgb.f_contiguous()?)
}

/// Packed RGB frames (u8 `[n * frame_len]` on the device) to `[n, 3, h, w]` in [0, 1].
fn rgb_to_tensor(
    raw: &Tensor,
    fmt: &FrameFormat,
    layout: (usize, usize),
    n: i64,
) -> Result<Tensor> {
    let (channels, bytes) = (layout.0 as i64, layout.1 as i64);
    let (w, h) = (fmt.width as i64, fmt.height as i64);
    let px = raw.f_view([n, h, w, channels, bytes])?;
    let idx = Tensor::f_from_slice(&fmt.rgb_order())?.f_to_device(raw.device())?;
    let px = px.f_index_select(3, &idx)?.f_to_kind(Kind::Float)?;
    let (px, max) = if bytes == 2 {
        // Little-endian u16 channels.
        (px.f_select(4, 0)? + px.f_select(4, 1)? * 256.0, 65535.0)
    } else {
        (px.f_select(4, 0)?, 255.0)
    };
    Ok(px.f_permute([0, 3, 1, 2])?.f_div_scalar(max)?)
}

/// `[n, 3, h, w]` in [0, 1] to packed RGB frames `[n, frame_len]` (u8 on its device); a 4th
/// channel (alpha or padding) is copied from `originals`.
fn tensor_to_rgb(
    rgb: &Tensor,
    fmt: &FrameFormat,
    (channels, bytes): (usize, usize),
    originals: &[&[u8]],
) -> Result<Tensor> {
    let n = rgb.size()[0];
    let device = rgb.device();
    let max = if bytes == 2 { 65535.0 } else { 255.0 };
    let q = rgb.f_mul_scalar(max)?.f_round()?.f_permute([0, 2, 3, 1])?;
    // rgb_order() is its own inverse (identity or R<->B swap).
    let idx = Tensor::f_from_slice(&fmt.rgb_order())?.f_to_device(device)?;
    let q = q.f_index_select(3, &idx)?;
    let (h, w) = (fmt.height as i64, fmt.width as i64);
    let px = if bytes == 2 {
        let hi = q.f_div_scalar(256.0)?.f_floor()?;
        let lo = &q - &hi * 256.0;
        Tensor::f_stack(&[lo, hi], 4)?.f_reshape([n, h, w, 6])?
    } else {
        q
    }
    .f_to_kind(Kind::Uint8)?;
    let px = if channels == 4 {
        let o = upload(originals, fmt, device)?;
        let o = o.f_view([n, h, w, 4 * bytes as i64])?;
        Tensor::f_cat(&[px, o.f_narrow(3, 3 * bytes as i64, bytes as i64)?], 3)?
    } else {
        px
    };
    Ok(px.f_reshape([n, -1])?)
}

/// Frames of `fmt` concatenated in one u8 tensor on `device`.
fn upload(frames: &[&[u8]], fmt: &FrameFormat, device: Device) -> Result<Tensor> {
    let mut all = Vec::with_capacity(frames.len() * fmt.frame_len());
    for f in frames {
        check_len(fmt, f)?;
        all.extend_from_slice(f);
    }
    Ok(Tensor::f_from_slice(&all)?.f_to_device(device)?)
}

/// Convert an RGB batch (N, 3, H, W) in [0, 1] back to packed frames of `fmt` on its device,
/// then download. Padding/alpha bytes are copied from `originals` (same frames as the input).
pub fn tensor_to_frames(
    rgb: &Tensor,
    fmt: &FrameFormat,
    originals: &[&[u8]],
) -> Result<Vec<Vec<u8>>> {
    let n = rgb.size()[0];
    let rgb = rgb.f_to_kind(Kind::Float)?.f_clamp(0.0, 1.0)?;
    let packed = match (fmt.rgb_layout(), rgb10::fields(fmt.format)) {
        (Some(layout), _) => tensor_to_rgb(&rgb, fmt, layout, originals)?,
        (None, Some(order)) => {
            let originals = upload(originals, fmt, rgb.device())?;
            rgb10::from_rgb(&rgb, order, &originals)?
        }
        (None, None) => {
            let layout = YuvLayout::of(fmt.format).expect("a YUV format");
            yuv::from_rgb(&rgb, fmt, &layout)?
        }
    };
    let packed = packed.f_to_device(Device::Cpu)?.f_contiguous()?;
    let len = fmt.frame_len();
    let mut all = vec![0u8; n as usize * len];
    packed.f_copy_data_u8(&mut all, n as usize * len)?;
    Ok(all.chunks(len).map(|c| c.to_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(fmt: &FrameFormat) -> Vec<u8> {
        (0..fmt.frame_len())
            .map(|i| ((i * 37 + i / 7) % 256) as u8)
            .collect()
    }

    #[test]
    fn packed_formats_round_trip_exactly() {
        for f in [
            PixelFormat::Rgb,
            PixelFormat::Bgr,
            PixelFormat::Rgbx,
            PixelFormat::Bgrx,
            PixelFormat::Rgba,
            PixelFormat::Bgra,
            PixelFormat::Rgba64,
            PixelFormat::Bgra64,
            PixelFormat::Rgb10a2,
            PixelFormat::Bgr10a2,
        ] {
            let fmt = FrameFormat::new(f, 7, 5);
            let data = gradient(&fmt);
            let t = frames_to_tensor(&[&data, &data], &fmt, Device::Cpu).unwrap();
            assert_eq!(t.size(), [2, 3, 5, 7]);
            let back = tensor_to_frames(&t, &fmt, &[&data, &data]).unwrap();
            assert_eq!(back[0], data, "{f:?}");
            assert_eq!(back[1], data, "{f:?}");
        }
    }

    #[test]
    fn bgr_puts_red_last() {
        let fmt = FrameFormat::new(PixelFormat::Bgr, 1, 1);
        let t = frames_to_tensor(&[&[10, 20, 30]], &fmt, Device::Cpu).unwrap();
        let r = t.double_value(&[0, 0, 0, 0]) * 255.0;
        assert!((r - 30.0).abs() < 1e-4, "{r}");
    }

    #[test]
    fn yuv_round_trip_is_close_on_smooth_frames() {
        for f in [PixelFormat::I420, PixelFormat::Nv12] {
            for (w, h) in [(8, 6), (7, 5)] {
                let fmt = FrameFormat::new(f, w, h);
                // Flat chroma, smooth luma: 4:2:0 loses nothing then.
                let mut data = vec![128u8; fmt.frame_len()];
                for (i, y) in data.iter_mut().take(w * h).enumerate() {
                    *y = (40 + 3 * i) as u8;
                }
                let t = frames_to_tensor(&[&data], &fmt, Device::Cpu).unwrap();
                let back = tensor_to_frames(&t, &fmt, &[&data]).unwrap();
                let maxdiff = back[0]
                    .iter()
                    .zip(&data)
                    .map(|(a, b)| a.abs_diff(*b))
                    .max()
                    .unwrap();
                assert!(maxdiff <= 1, "{f:?} {w}x{h}: {maxdiff}");
            }
        }
    }

    #[test]
    fn sixteen_bit_rgb_keeps_every_level_and_alpha() {
        let fmt = FrameFormat::new(PixelFormat::Bgra64, 256, 256);
        let data: Vec<u8> = (0..256 * 256u32)
            .flat_map(|i| {
                let (v, a) = (i as u16, (i * 7919) as u16);
                [v, v.wrapping_add(1), v, a].map(u16::to_le_bytes)
            })
            .flatten()
            .collect();
        let t = frames_to_tensor(&[&data], &fmt, Device::Cpu).unwrap();
        let back = tensor_to_frames(&t, &fmt, &[&data]).unwrap();
        assert!(back[0] == data, "16-bit levels or alpha changed");
        // Blue (first in BGRA) is the ramp itself: 65536 distinct levels into the model.
        let blue = t.double_value(&[0, 2, 0, 1]) - t.double_value(&[0, 2, 0, 0]);
        assert!((blue * 65535.0 - 1.0).abs() < 1e-3, "{blue}");
    }

    #[test]
    fn ten_bit_rgb_fields_and_alpha() {
        // Red at 1023 with alpha 3, as videotestsrc's red pattern writes them.
        let red = [
            (PixelFormat::Rgb10a2, 0xc000_03ffu32),
            (PixelFormat::Bgr10a2, 0xfff0_0000),
        ];
        for (f, word) in red {
            let fmt = FrameFormat::new(f, 1, 1);
            let data = word.to_le_bytes();
            let t = frames_to_tensor(&[&data], &fmt, Device::Cpu).unwrap();
            let rgb: Vec<f64> = (0..3).map(|c| t.double_value(&[0, c, 0, 0])).collect();
            assert_eq!(rgb, [1.0, 0.0, 0.0], "{f:?}");
            let back = tensor_to_frames(&t, &fmt, &[&data]).unwrap();
            assert_eq!(back[0], data, "{f:?}");
        }
        // A 1024-level ramp in every channel, each alpha value: exact.
        let fmt = FrameFormat::new(PixelFormat::Rgb10a2, 32, 32);
        let data: Vec<u8> = (0..1024u32)
            .flat_map(|i| {
                (i | (1023 - i) << 10 | (i * 7 % 1024) << 20 | (i % 4) << 30).to_le_bytes()
            })
            .collect();
        let t = frames_to_tensor(&[&data], &fmt, Device::Cpu).unwrap();
        assert!(tensor_to_frames(&t, &fmt, &[&data]).unwrap()[0] == data);
    }

    #[test]
    fn wrong_length_is_an_error() {
        let fmt = FrameFormat::new(PixelFormat::Rgb, 4, 4);
        let err = frames_to_tensor(&[&[0u8; 10]], &fmt, Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("needs 48 bytes"), "{err}");
    }
}
