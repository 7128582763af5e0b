//! Reflect padding of (N, C, H, W) tensors to a multiple of a size: the network's input
//! ([`crate::model::Config::MULTIPLE`]) and the coarse-grain mode's sub-images
//! ([`crate::pixel_shuffle`]) both pad this way.

use tch::Tensor;

use crate::error::Result;

/// Reflect-pad bottom and right to the next multiple of `m` (only where the side is not one
/// already), as the reference test script does. Sides shorter than the pad reflect repeatedly
/// (a 1-pixel side replicates).
pub fn pad_to_multiple(x: &Tensor, m: i64) -> Result<Tensor> {
    let mut t = x.shallow_clone();
    for dim in [2usize, 3] {
        let len = x.size()[dim];
        let mut need = (m - len % m) % m;
        while need > 0 {
            let cur = t.size()[dim];
            let step = need.min(cur - 1);
            let (mode, step) = if step == 0 {
                ("replicate", need)
            } else {
                ("reflect", step)
            };
            let pad = if dim == 3 {
                [0, step, 0, 0]
            } else {
                [0, 0, 0, step]
            };
            t = t.f_pad(pad, mode, None)?;
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
}
