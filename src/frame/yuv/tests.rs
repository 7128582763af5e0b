use tch::Device;

use crate::frame::{frames_to_tensor, tensor_to_frames, FrameFormat, PixelFormat};

/// A packed 4:2:2 frame: smooth luma `40 + 3x + 5y` (an odd width's spare sample repeats the
/// last column, as the conversion writes it), flat chroma `(u, v)`.
fn packed_422(fmt: &FrameFormat, u: u8, v: u8) -> Vec<u8> {
    let cw = fmt.width.div_ceil(2);
    let luma = |x: usize, y: usize| (60 + 3 * x.min(fmt.width - 1) + 5 * y) as u8;
    let mut out = Vec::with_capacity(fmt.frame_len());
    for y in 0..fmt.height {
        for m in 0..cw {
            let (y0, y1) = (luma(2 * m, y), luma(2 * m + 1, y));
            match fmt.format {
                PixelFormat::Yuy2 => out.extend_from_slice(&[y0, u, y1, v]),
                _ => out.extend_from_slice(&[u, y0, v, y1]),
            }
        }
    }
    assert_eq!(out.len(), fmt.frame_len());
    out
}

fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
}

#[test]
fn packed_422_plane_table() {
    let fmt = FrameFormat::new(PixelFormat::Yuy2, 7, 5);
    let planes = fmt.planes();
    assert_eq!(planes.len(), 1);
    assert_eq!((planes[0].row_bytes, planes[0].rows), (16, 5));
    assert_eq!(FrameFormat::new(PixelFormat::Uyvy, 8, 6).frame_len(), 96);
}

#[test]
fn yuy2_and_uyvy_round_trip_within_one_lsb() {
    for f in [PixelFormat::Yuy2, PixelFormat::Uyvy] {
        for (w, h) in [(8, 6), (7, 5)] {
            let fmt = FrameFormat::new(f, w, h);
            let data = packed_422(&fmt, 110, 140);
            let t = frames_to_tensor(&[&data, &data], &fmt, Device::Cpu).unwrap();
            assert_eq!(t.size(), [2, 3, h as i64, w as i64]);
            let back = tensor_to_frames(&t, &fmt, &[&data, &data]).unwrap();
            for b in &back {
                let d = max_diff(b, &data);
                assert!(d <= 1, "{f:?} {w}x{h}: {d}");
            }
        }
    }
}

#[test]
fn yuy2_and_uyvy_of_one_image_give_one_tensor() {
    let yuy2 = FrameFormat::new(PixelFormat::Yuy2, 7, 4);
    let uyvy = FrameFormat::new(PixelFormat::Uyvy, 7, 4);
    let a = frames_to_tensor(&[&packed_422(&yuy2, 90, 170)], &yuy2, Device::Cpu).unwrap();
    let b = frames_to_tensor(&[&packed_422(&uyvy, 90, 170)], &uyvy, Device::Cpu).unwrap();
    assert!(a.allclose(&b, 0.0, 0.0, false));
    // Red above blue (V > U): red channel brighter than blue.
    assert!(a.double_value(&[0, 0, 1, 1]) > a.double_value(&[0, 2, 1, 1]));
}

/// A little-endian u16 frame of `fmt` (10-bit) with luma `ramp(i)` and chroma 512, shifted
/// left by `shift` bits.
fn ten_bit(fmt: &FrameFormat, shift: u32) -> Vec<u8> {
    let luma = fmt.width * fmt.height;
    let samples = fmt.frame_len() / 2;
    (0..samples)
        .flat_map(|i| {
            let v = if i < luma { i as u16 % 1024 } else { 512 };
            (v << shift).to_le_bytes()
        })
        .collect()
}

fn samples_le(data: &[u8]) -> Vec<u16> {
    data.chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

#[test]
fn ten_bit_ramp_of_1024_levels_round_trips_within_one() {
    for (f, shift) in [(PixelFormat::I420P10, 0), (PixelFormat::P010, 6)] {
        let fmt = FrameFormat {
            full_range: true,
            ..FrameFormat::new(f, 64, 16)
        };
        let data = ten_bit(&fmt, shift);
        let t = frames_to_tensor(&[&data], &fmt, Device::Cpu).unwrap();
        let back = tensor_to_frames(&t, &fmt, &[&data]).unwrap();
        let (want, got) = (samples_le(&data), samples_le(&back[0]));
        let mut levels = std::collections::BTreeSet::new();
        for (i, (a, b)) in want.iter().zip(&got).enumerate() {
            assert_eq!(b & ((1 << shift) - 1), 0, "{f:?}: low bits set at {i}");
            let (a, b) = (a >> shift, b >> shift);
            assert!(a.abs_diff(b) <= 1, "{f:?} sample {i}: {a} -> {b}");
            if i < 1024 {
                levels.insert(b);
            }
        }
        // 8 bits would keep 256 of them.
        assert!(levels.len() >= 1000, "{f:?}: {} levels", levels.len());
    }
}

#[test]
fn ten_bit_reads_like_eight_bit_scaled_by_four() {
    let (w, h) = (6, 4);
    let eight = FrameFormat::new(PixelFormat::I420, w, h);
    let ten = FrameFormat::new(PixelFormat::I420P10, w, h);
    let bytes: Vec<u8> = (0..eight.frame_len())
        .map(|i| (30 + 7 * i % 190) as u8)
        .collect();
    let wide: Vec<u8> = bytes
        .iter()
        .flat_map(|&b| (b as u16 * 4).to_le_bytes())
        .collect();
    let a = frames_to_tensor(&[&bytes], &eight, Device::Cpu).unwrap();
    let b = frames_to_tensor(&[&wide], &ten, Device::Cpu).unwrap();
    assert!(a.allclose(&b, 1e-5, 1e-6, false));
}
