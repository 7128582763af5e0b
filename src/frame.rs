//! Raw video frames (packed u8 planes) to and from model tensors. Colour conversion runs on the
//! model's device, so YUV frames are converted next to the model (on the GPU when it is there).

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Pixel layouts the engine takes. Packed formats store bytes in the order of the name
/// (`Rgbx`: R, G, B, padding). YUV formats are 8-bit 4:2:0 (chroma planes `ceil(w/2) x ceil(h/2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    Rgb,
    Bgr,
    Rgbx,
    Bgrx,
    Rgba,
    Bgra,
    I420,
    Nv12,
}

/// YUV -> RGB matrix (ignored for RGB formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ColorMatrix {
    #[default]
    Bt601,
    Bt709,
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

    fn chroma(&self) -> (usize, usize) {
        (self.width.div_ceil(2), self.height.div_ceil(2))
    }

    /// Bytes per pixel of a packed RGB format, or None for YUV.
    fn packed_bpp(&self) -> Option<usize> {
        match self.format {
            PixelFormat::Rgb | PixelFormat::Bgr => Some(3),
            PixelFormat::I420 | PixelFormat::Nv12 => None,
            _ => Some(4),
        }
    }

    /// The planes of the packed layout, in order: the one table of this project's frame
    /// layouts (the element, the tests and the colour conversion below follow it).
    pub fn planes(&self) -> Vec<Plane> {
        let (w, h) = (self.width, self.height);
        let (cw, ch) = self.chroma();
        let sizes = match (self.format, self.packed_bpp()) {
            (_, Some(bpp)) => vec![(bpp * w, h)],
            (PixelFormat::Nv12, None) => vec![(w, h), (2 * cw, ch)],
            (_, None) => vec![(w, h), (cw, ch), (cw, ch)],
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
            PixelFormat::Bgr | PixelFormat::Bgrx | PixelFormat::Bgra => [2, 1, 0],
            _ => [0, 1, 2],
        }
    }

    /// (luma offset, luma scale, chroma scale) of the YUV range.
    fn yuv_scales(&self) -> (f64, f64, f64) {
        if self.full_range {
            (0.0, 255.0, 255.0)
        } else {
            (16.0, 219.0, 224.0)
        }
    }

    /// (Kr, Kb) of the matrix.
    fn coeffs(&self) -> (f64, f64) {
        self.matrix.kr_kb()
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
    let (w, h) = (fmt.width as i64, fmt.height as i64);
    let rgb = match fmt.packed_bpp() {
        Some(bpp) => {
            let px = raw.f_view([n, h, w, bpp as i64])?;
            let idx = Tensor::f_from_slice(&fmt.rgb_order())?.f_to_device(device)?;
            px.f_index_select(3, &idx)?
                .f_permute([0, 3, 1, 2])?
                .f_to_kind(Kind::Float)?
                .f_div_scalar(255.0)?
        }
        None => yuv_to_rgb(&raw, fmt, n)?,
    };
    Ok(rgb.f_contiguous()?)
}

fn yuv_to_rgb(raw: &Tensor, fmt: &FrameFormat, n: i64) -> Result<Tensor> {
    let (w, h) = (fmt.width as i64, fmt.height as i64);
    let (cw, ch) = fmt.chroma();
    let (cw, ch) = (cw as i64, ch as i64);
    let per = fmt.frame_len() as i64;
    let raw = raw.f_view([n, per])?.f_to_kind(Kind::Float)?;
    let y = raw.f_narrow(1, 0, w * h)?.f_view([n, 1, h, w])?;
    let (u, v) = match fmt.format {
        PixelFormat::I420 => (
            raw.f_narrow(1, w * h, cw * ch)?.f_view([n, 1, ch, cw])?,
            raw.f_narrow(1, w * h + cw * ch, cw * ch)?
                .f_view([n, 1, ch, cw])?,
        ),
        _ => {
            let uv = raw
                .f_narrow(1, w * h, 2 * cw * ch)?
                .f_view([n, ch, cw, 2])?;
            (
                uv.f_select(3, 0)?.f_unsqueeze(1)?,
                uv.f_select(3, 1)?.f_unsqueeze(1)?,
            )
        }
    };
    // Chroma to luma resolution (nearest, as videoconvert's default does), crop odd sizes.
    let up = |c: Tensor| -> Result<Tensor> {
        Ok(c.f_repeat_interleave_self_int(2, 2, None)?
            .f_repeat_interleave_self_int(2, 3, None)?
            .f_narrow(2, 0, h)?
            .f_narrow(3, 0, w)?)
    };
    let (u, v) = (up(u)?, up(v)?);
    let (y_off, y_scale, c_scale) = fmt.yuv_scales();
    let yn = (y - y_off) / y_scale;
    let cn = (u - 128.0) / c_scale;
    let vn = (v - 128.0) / c_scale;
    let (kr, kb) = fmt.coeffs();
    let kg = 1.0 - kr - kb;
    let r = &yn + &vn * (2.0 * (1.0 - kr));
    let b = &yn + &cn * (2.0 * (1.0 - kb));
    let g = (&yn - &r * kr - &b * kb) / kg;
    Ok(Tensor::f_cat(&[r, g, b], 1)?)
}

fn rgb_to_yuv_bytes(rgb: &Tensor, fmt: &FrameFormat) -> Result<Tensor> {
    let n = rgb.size()[0];
    let (kr, kb) = fmt.coeffs();
    let kg = 1.0 - kr - kb;
    let r = rgb.f_narrow(1, 0, 1)?;
    let g = rgb.f_narrow(1, 1, 1)?;
    let b = rgb.f_narrow(1, 2, 1)?;
    let y = &r * kr + &g * kg + &b * kb;
    let u = (&b - &y) / (2.0 * (1.0 - kb));
    let v = (&r - &y) / (2.0 * (1.0 - kr));
    // 2x2 average for chroma (ceil for odd sizes: replicate the last row/column).
    let (h, w) = (rgb.size()[2], rgb.size()[3]);
    let pad = |c: Tensor| -> Result<Tensor> {
        Ok(c.f_pad([0, w % 2, 0, h % 2], "replicate", None)?
            .f_avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>)?)
    };
    let (u, v) = (pad(u)?, pad(v)?);
    let (y_off, y_scale, c_scale) = fmt.yuv_scales();
    let (y, u, v) = (
        y * y_scale + y_off,
        u * c_scale + 128.0,
        v * c_scale + 128.0,
    );
    let q = |t: Tensor| -> Result<Tensor> {
        Ok(t.f_round()?
            .f_clamp(0.0, 255.0)?
            .f_to_kind(Kind::Uint8)?
            .f_reshape([n, -1])?)
    };
    let (y, u, v) = (q(y)?, q(u)?, q(v)?);
    let chroma = match fmt.format {
        PixelFormat::I420 => Tensor::f_cat(&[u, v], 1)?,
        _ => Tensor::f_stack(&[u, v], 2)?.f_reshape([n, -1])?,
    };
    Ok(Tensor::f_cat(&[y, chroma], 1)?)
}

/// Convert an RGB batch (N, 3, H, W) in [0, 1] back to packed frames of `fmt` on its device,
/// then download. Padding/alpha bytes are copied from `originals` (same frames as the input).
pub fn tensor_to_frames(
    rgb: &Tensor,
    fmt: &FrameFormat,
    originals: &[&[u8]],
) -> Result<Vec<Vec<u8>>> {
    let n = rgb.size()[0];
    let device = rgb.device();
    let rgb = rgb.f_to_kind(Kind::Float)?.f_clamp(0.0, 1.0)?;
    let packed = match fmt.packed_bpp() {
        None => rgb_to_yuv_bytes(&rgb, fmt)?,
        Some(bpp) => {
            let q = rgb
                .f_mul_scalar(255.0)?
                .f_round()?
                .f_to_kind(Kind::Uint8)?
                .f_permute([0, 2, 3, 1])?;
            // rgb_order() is its own inverse (identity or R<->B swap).
            let idx = Tensor::f_from_slice(&fmt.rgb_order())?.f_to_device(device)?;
            let px = q.f_index_select(3, &idx)?;
            let px = if bpp == 4 {
                // Keep the 4th byte (alpha or padding) of each input pixel.
                let mut orig = Vec::with_capacity(originals.len() * fmt.frame_len());
                for o in originals {
                    check_len(fmt, o)?;
                    orig.extend_from_slice(o);
                }
                let o = Tensor::f_from_slice(&orig)?.f_to_device(device)?.f_view([
                    n,
                    fmt.height as i64,
                    fmt.width as i64,
                    4,
                ])?;
                Tensor::f_cat(&[px, o.f_narrow(3, 3, 1)?], 3)?
            } else {
                px
            };
            px.f_reshape([n, -1])?
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
    fn wrong_length_is_an_error() {
        let fmt = FrameFormat::new(PixelFormat::Rgb, 4, 4);
        let err = frames_to_tensor(&[&[0u8; 10]], &fmt, Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("needs 48 bytes"), "{err}");
    }
}
