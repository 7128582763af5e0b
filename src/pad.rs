//! Reflect padding of (N, C, H, W) tensors to a multiple of a size: the network's input
//! ([`crate::model::Config::MULTIPLE`]) and the coarse-grain mode's sub-images
//! ([`crate::pixel_shuffle`]) both pad this way.

use tch::Tensor;

use crate::error::Result;

/// Reflect-pad bottom and right to the next multiple of `m` (only where the side is not one
/// already), as the reference test script does. Sides shorter than the pad reflect repeatedly
/// (a 1-pixel side replicates).
pub fn pad_to_multiple(x: &Tensor, m: i64) -> Result<Tensor> {
    let need = |len: i64| (m - len % m) % m;
    pad_reflect(x, [0, need(x.size()[3]), 0, need(x.size()[2])])
}

/// Reflect-pad the last two dimensions by `[left, right, top, bottom]` pixels. Sides shorter
/// than their pad reflect repeatedly (a 1-pixel side replicates).
pub fn pad_reflect(x: &Tensor, pad: [i64; 4]) -> Result<Tensor> {
    let mut t = x.shallow_clone();
    for (dim, side, amount) in [
        (3, 0, pad[0]),
        (3, 1, pad[1]),
        (2, 0, pad[2]),
        (2, 1, pad[3]),
    ] {
        let mut need = amount;
        while need > 0 {
            let cur = t.size()[dim];
            let step = need.min(cur - 1);
            let (mode, step) = if step == 0 {
                ("replicate", need)
            } else {
                ("reflect", step)
            };
            let mut p = [0i64; 4];
            p[if dim == 3 { side } else { 2 + side }] = step;
            t = t.f_pad(p, mode, None)?;
            need -= step;
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn padding_reflects_to_multiples_of_32() {
        for (h, w) in [(1, 1), (2, 3), (33, 97), (50, 70), (64, 64)] {
            let x = Tensor::rand([1, 3, h, w], (Kind::Float, Device::Cpu));
            let p = pad_to_multiple(&x, 32).unwrap();
            let (ph, pw) = (p.size()[2], p.size()[3]);
            assert_eq!(ph % 32, 0);
            assert_eq!(pw % 32, 0);
            assert!(ph >= h && ph < h + 32 && pw >= w && pw < w + 32);
            let crop = p.narrow(2, 0, h).narrow(3, 0, w);
            assert_eq!((crop - &x).abs().max().double_value(&[]), 0.0);
        }
    }

    #[test]
    fn padding_on_every_side_reflects_without_the_edge_pixel() {
        let x = Tensor::arange(3, (Kind::Float, Device::Cpu)).view([1, 1, 1, 3]);
        let p = pad_reflect(&x, [4, 2, 1, 0]).unwrap();
        let row = Vec::<f32>::try_from(p.get(0).get(0).get(1)).unwrap();
        // 0 1 2 reflected 4 to the left (twice over) and 2 to the right.
        assert_eq!(row, [0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0]);
        assert_eq!(p.size(), [1, 1, 2, 9]);
    }
}
