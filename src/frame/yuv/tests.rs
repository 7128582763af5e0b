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

/// A 4:4:4 frame keeps full-resolution chroma: varied samples in every plane round trip
/// within one level (4:2:0 would average the chroma of each 2x2 block).
#[test]
fn y444_round_trips_full_resolution_chroma() {
    for (w, h) in [(8, 6), (7, 5)] {
        let fmt = FrameFormat::new(PixelFormat::Y444, w, h);
        assert_eq!(fmt.frame_len(), 3 * w * h);
        // In range and away from the gamut's edges: luma 80..176, chroma 108..148.
        let data: Vec<u8> = (0..3 * w * h)
            .map(|i| {
                if i < w * h {
                    (80 + (i * 37) % 96) as u8
                } else {
                    (108 + (i * 13) % 40) as u8
                }
            })
            .collect();
        let t = frames_to_tensor(&[&data], &fmt, Device::Cpu).unwrap();
        assert_eq!(t.size(), [1, 3, h as i64, w as i64]);
        let back = tensor_to_frames(&t, &fmt, &[&data]).unwrap();
        let d = max_diff(&back[0], &data);
        assert!(d <= 1, "Y444 {w}x{h}: {d}");
    }
}

/// 4:4:4 with each 2x2 block's chroma equal reads as the 4:2:0 frame of those samples.
#[test]
fn y444_reads_like_i420_when_chroma_is_blockwise_flat() {
    let (w, h) = (6, 4);
    let i420 = FrameFormat::new(PixelFormat::I420, w, h);
    let y444 = FrameFormat::new(PixelFormat::Y444, w, h);
    let luma: Vec<u8> = (0..w * h).map(|i| (50 + 5 * i) as u8).collect();
    let (cw, ch) = (w / 2, h / 2);
    let u = |x: usize, y: usize| (100 + 9 * x + 17 * y) as u8;
    let v = |x: usize, y: usize| (150 - 7 * x - 11 * y) as u8;
    let mut a = luma.clone();
    for c in [u, v] {
        a.extend((0..ch).flat_map(|y| (0..cw).map(move |x| c(x, y))));
    }
    let mut b = luma;
    for c in [u, v] {
        b.extend((0..h).flat_map(|y| (0..w).map(move |x| c(x / 2, y / 2))));
    }
    let ta = frames_to_tensor(&[&a], &i420, Device::Cpu).unwrap();
    let tb = frames_to_tensor(&[&b], &y444, Device::Cpu).unwrap();
    assert!(ta.allclose(&tb, 0.0, 0.0, false));
}

/// The matrices' luma weights: grey stays grey and a red-shifted sample (V above 128) comes
/// out with the matrix's own red: R = Y + 2 (1 - Kr) V, so BT.2020 (Kr 0.2627) differs from
/// BT.709 (Kr 0.2126).
#[test]
fn each_matrix_uses_its_own_weights() {
    use crate::frame::ColorMatrix;
    let red = |m: ColorMatrix| {
        let fmt = FrameFormat {
            matrix: m,
            full_range: true,
            ..FrameFormat::new(PixelFormat::Y444, 1, 1)
        };
        let t = frames_to_tensor(&[&[100, 128, 178]], &fmt, Device::Cpu).unwrap();
        t.double_value(&[0, 0, 0, 0])
    };
    for m in [
        ColorMatrix::Bt601,
        ColorMatrix::Bt709,
        ColorMatrix::Bt2020,
        ColorMatrix::Smpte240m,
    ] {
        let (kr, _) = m.kr_kb();
        let want = (100.0 + 2.0 * (1.0 - kr) * 50.0) / 255.0;
        assert!((red(m) - want).abs() < 1e-6, "{m:?}: {} vs {want}", red(m));
    }
    // 100 (0.2627 - 0.2126) / 255: 5 levels of red.
    assert!((red(ColorMatrix::Bt2020) - red(ColorMatrix::Bt709)).abs() * 255.0 > 4.9);
}
