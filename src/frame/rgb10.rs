//! Packed 10-bit RGB with 2-bit alpha: one little-endian 32-bit word per pixel, three 10-bit
//! channels from the least significant bit up and alpha in the top 2 bits (GStreamer's
//! RGB10A2_LE: R, G, B; BGR10A2_LE: B, G, R). Alpha is copied from the input frames.

use tch::{Kind, Tensor};

use super::{FrameFormat, PixelFormat};
use crate::error::Result;

/// The tensor channel (0 R, 1 G, 2 B) of each 10-bit field, low bits first; None for other
/// formats.
pub(super) fn fields(format: PixelFormat) -> Option<[i64; 3]> {
    match format {
        PixelFormat::Rgb10a2 => Some([0, 1, 2]),
        PixelFormat::Bgr10a2 => Some([2, 1, 0]),
        _ => None,
    }
}

/// The frames' words `[n, h, w]` (Int64) from their bytes `[n * frame_len]` (u8).
fn words(raw: &Tensor, fmt: &FrameFormat, n: i64) -> Result<Tensor> {
    let b = raw
        .f_view([n, fmt.height as i64, fmt.width as i64, 4])?
        .f_to_kind(Kind::Int64)?;
    Ok(b.f_select(3, 0)?
        + b.f_select(3, 1)? * 256
        + b.f_select(3, 2)? * 65536
        + b.f_select(3, 3)? * 16_777_216)
}

/// Raw frames (u8 on the model's device) to RGB `[n, 3, h, w]` in [0, 1].
pub(super) fn to_rgb(raw: &Tensor, fmt: &FrameFormat, order: [i64; 3], n: i64) -> Result<Tensor> {
    let w = words(raw, fmt, n)?;
    let mut channels: [Option<Tensor>; 3] = Default::default();
    for (k, &c) in order.iter().enumerate() {
        let field = w
            .f_floor_divide_scalar(1i64 << (10 * k))?
            .f_remainder(1024)?
            .f_to_kind(Kind::Float)?;
        channels[c as usize] = Some(field.f_div_scalar(1023.0)?);
    }
    let channels: Vec<Tensor> = channels.into_iter().flatten().collect();
    Ok(Tensor::f_stack(&channels, 1)?)
}

/// RGB `[n, 3, h, w]` in [0, 1] to frames' bytes `[n, frame_len]` (u8, on its device); the
/// alpha bits come from `originals` (the input frames, concatenated, on the same device).
pub(super) fn from_rgb(rgb: &Tensor, order: [i64; 3], originals: &Tensor) -> Result<Tensor> {
    let n = rgb.size()[0];
    let (h, w) = (rgb.size()[2], rgb.size()[3]);
    let q = rgb
        .f_mul_scalar(1023.0)?
        .f_round()?
        .f_clamp(0.0, 1023.0)?
        .f_to_kind(Kind::Int64)?;
    let top = originals
        .f_view([n, h, w, 4])?
        .f_select(3, 3)?
        .f_to_kind(Kind::Int64)?;
    // The alpha bits: the top 2 of the word's last byte.
    let mut word = top.f_floor_divide_scalar(64)? * (1i64 << 30);
    for (k, &c) in order.iter().enumerate() {
        word += q.f_select(1, c)? * (1i64 << (10 * k));
    }
    let bytes: Vec<Tensor> = (0..4)
        .map(|k| {
            word.f_floor_divide_scalar(1i64 << (8 * k))?
                .f_remainder(256)
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok(Tensor::f_stack(&bytes, 3)?
        .f_to_kind(Kind::Uint8)?
        .f_reshape([n, -1])?)
}
