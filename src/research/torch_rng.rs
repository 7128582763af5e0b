//! A random generator owned by its caller that draws the same numbers as libtorch's CPU
//! generator after `tch::manual_seed(seed)`, without touching libtorch's process-wide state.
//!
//! The noise models ([`super::noise`]) and the evaluation protocol ([`super::eval`]) draw from a
//! [`TorchRng`] they are handed, so two threads drawing at once cannot disturb each other's
//! streams (libtorch's default generator is one per process), and the published evaluation
//! inputs stay those that `manual_seed` + `randn_like` / `poisson` drew before.
//!
//! What it reproduces (libtorch's `CPUGeneratorImpl`, the kernels of `normal_`, `poisson` and
//! `random_(from, to)`):
//! - the engine is the 32-bit Mersenne Twister (MT19937) seeded with the low 32 bits of the
//!   seed; a 64-bit draw is two 32-bit draws, the first in the high half;
//! - a uniform f32 in [0, 1) is the low 24 bits of a 32-bit draw times 2^-24, a uniform f64 the
//!   low 53 bits of a 64-bit draw times 2^-53;
//! - [`TorchRng::randn`] is libtorch's contiguous f32 fill on x86-64: all `n` uniforms first,
//!   then Box-Muller on blocks of 16 (`u1 = 1 - v[j]`, `u2 = v[j + 8]`, `r = sqrt(-2 ln u1)`,
//!   `theta = f32(2 pi) u2`, `v[j] = r cos theta`, `v[j + 8] = r sin theta`), with `ln`, `sin`
//!   and `cos` computed by the Cephes polynomials of libtorch's AVX2 kernel and its fused
//!   multiply-adds; when 16 does not divide `n`, 16 fresh uniforms replace the last 16 values
//!   and that block is transformed again. Fewer than 16 values, and
//!   [`TorchRng::randn_like`] of a tensor that is not contiguous (eval's images are permuted
//!   views of HWC data): one value at a time in memory order, Box-Muller on two uniform f64s
//!   with the sine branch kept for the next value ([`TorchRng::normal_f64`]). The numbers do
//!   not depend on the machine (libtorch's own block fill may, on CPUs where it does not run
//!   that kernel);
//! - [`TorchRng::poisson`] draws element by element in memory order with uniform f64s:
//!   Knuth's product of uniforms below a rate of 10, Hörmann's transformed rejection (PTRS)
//!   from 10 on, 0 for a rate of 0.
//!
//! Unit tests pin the streams to values drawn from libtorch 2.11 on an AVX-512 machine.

use tch::{Device, Kind, Tensor};

use crate::error::Result;

const N: usize = 624;
const M: usize = 397;

/// libtorch's CPU random generator as a value (see the module documentation).
#[derive(Clone)]
pub struct TorchRng {
    state: [u32; N],
    next: usize,
    /// The second value of the last one-at-a-time Box-Muller pair, not yet used.
    spare_normal: Option<f64>,
}

impl std::fmt::Debug for TorchRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchRng")
            .field("next", &self.next)
            .finish()
    }
}

impl TorchRng {
    /// The generator `tch::manual_seed(seed)` leaves behind.
    pub fn new(seed: u64) -> TorchRng {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        TorchRng {
            state,
            next: N,
            spare_normal: None,
        }
    }

    fn twist(&mut self) {
        let s = &mut self.state;
        for i in 0..N {
            let y = (s[i] & 0x8000_0000) | (s[(i + 1) % N] & 0x7fff_ffff);
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            s[i] = s[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.next = 0;
    }

    /// The next 32-bit draw.
    pub fn next_u32(&mut self) -> u32 {
        if self.next >= N {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// The next 64-bit draw: two 32-bit draws, the first in the high half.
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        let lo = self.next_u32() as u64;
        (hi << 32) | lo
    }

    /// A uniform f32 in [0, 1) on a 2^-24 grid.
    pub fn uniform_f32(&mut self) -> f32 {
        ((self.next_u32() & 0x00ff_ffff) as f64 * (1.0 / (1u64 << 24) as f64)) as f32
    }

    /// A uniform f64 in [0, 1) on a 2^-53 grid.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// One standard normal sample in f64, the one-at-a-time way: Box-Muller on two uniform
    /// f64s (`u1` the angle, `u2` the radius through `ln(1 - u2)`), returning the cosine
    /// branch and keeping the sine branch for the next call.
    pub fn normal_f64(&mut self) -> f64 {
        if let Some(v) = self.spare_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.spare_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// Fill `out` with standard normal samples as libtorch fills a contiguous f32 tensor:
    /// the block method for 16 values or more, else one at a time ([`TorchRng::normal_f64`]).
    pub fn fill_normal(&mut self, out: &mut [f32]) {
        let n = out.len();
        if n < 16 {
            for v in out.iter_mut() {
                *v = self.normal_f64() as f32;
            }
            return;
        }
        for v in out.iter_mut() {
            *v = self.uniform_f32();
        }
        for block in out.chunks_exact_mut(16) {
            box_muller_16(block);
        }
        if n % 16 != 0 {
            let tail = &mut out[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            box_muller_16(tail);
        }
    }

    /// Standard normal samples of `shape`, an f32 CPU tensor (`manual_seed` + `randn`).
    pub fn randn(&mut self, shape: &[i64]) -> Result<Tensor> {
        let n: i64 = shape.iter().product();
        let mut v = vec![0f32; n.max(0) as usize];
        self.fill_normal(&mut v);
        Ok(Tensor::from_slice(&v).f_view(shape)?)
    }

    /// Standard normal samples shaped and laid out like `x` (same strides), drawn on the CPU
    /// as f32, then given `x`'s kind and device (`manual_seed` + `randn_like` for an f32 CPU
    /// `x`). Like libtorch: a contiguous `x` of 16 or more elements gets [`TorchRng::randn`];
    /// any other (a permuted view, a channels-last image) gets one value at a time
    /// ([`TorchRng::normal_f64`]) in the order of `x`'s memory.
    pub fn randn_like(&mut self, x: &Tensor) -> Result<Tensor> {
        let size = x.size();
        let n: i64 = size.iter().product();
        let values = if x.is_contiguous() && n >= 16 {
            self.randn(&size)?
        } else {
            // Dimensions from the largest stride to the smallest: memory order.
            let strides = x.stride();
            let mut order: Vec<usize> = (0..size.len()).collect();
            order.sort_by_key(|&d| std::cmp::Reverse(strides[d]));
            let drawn: Vec<f32> = (0..n).map(|_| self.normal_f64() as f32).collect();
            let in_memory: Vec<i64> = order.iter().map(|&d| size[d]).collect();
            let mut back = vec![0i64; order.len()];
            for (i, &d) in order.iter().enumerate() {
                back[d] = i as i64;
            }
            Tensor::from_slice(&drawn)
                .f_view(in_memory.as_slice())?
                .f_permute(back.as_slice())?
        };
        Ok(values.f_to_kind(x.kind())?.f_to_device(x.device())?)
    }

    /// One Poisson sample per element of `rates` (>= 0), in row-major order whatever `rates`'
    /// layout, drawn on the CPU; returned contiguous with `rates`' kind and device
    /// (`manual_seed` + `Tensor::poisson`).
    pub fn poisson(&mut self, rates: &Tensor) -> Result<Tensor> {
        let flat = rates
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Double)?
            .f_contiguous()?
            .f_flatten(0, -1)?;
        let lambdas = Vec::<f64>::try_from(&flat)?;
        let draws: Vec<f64> = lambdas.iter().map(|&l| self.poisson_one(l)).collect();
        Ok(Tensor::from_slice(&draws)
            .f_view(rates.size().as_slice())?
            .f_to_kind(rates.kind())?
            .f_to_device(rates.device())?)
    }

    /// One Poisson sample of rate `lambda`.
    pub fn poisson_one(&mut self, lambda: f64) -> f64 {
        if lambda >= 10.0 {
            self.poisson_ptrs(lambda)
        } else if lambda == 0.0 {
            0.0
        } else {
            let limit = (-lambda).exp();
            let mut count = 0i64;
            let mut prod = 1.0;
            loop {
                prod *= self.uniform_f64();
                if prod > limit {
                    count += 1;
                } else {
                    return count as f64;
                }
            }
        }
    }

    /// Hörmann (1993), "The transformed rejection method for generating Poisson random
    /// variables", algorithm PTRS, as libtorch runs it for rates of 10 and more.
    fn poisson_ptrs(&mut self, lambda: f64) -> f64 {
        let slam = lambda.sqrt();
        let loglam = lambda.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.02483 * b;
        let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
        let vr = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.uniform_f64() - 0.5;
            let v = self.uniform_f64();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor() as i64;
            if us >= 0.07 && v <= vr {
                return k as f64;
            }
            if k < 0 || (us < 0.013 && v > us) {
                continue;
            }
            let lhs = v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln();
            let rhs = -lambda + k as f64 * loglam - ln_gamma(k as f64 + 1.0);
            if lhs <= rhs {
                return k as f64;
            }
        }
    }

    /// Whole numbers uniform in `0..high` (`high` >= 1) of `shape` and `kind`, on the CPU
    /// (`manual_seed` + `Tensor::randint(high, ...)`).
    pub fn randint(&mut self, high: i64, shape: &[i64], kind: Kind) -> Result<Tensor> {
        let range = high.max(1) as u64;
        let n: i64 = shape.iter().product();
        let v: Vec<i64> = (0..n.max(0))
            .map(|_| {
                let draw = if range >= 1u64 << 32 {
                    self.next_u64()
                } else {
                    self.next_u32() as u64
                };
                (draw % range) as i64
            })
            .collect();
        Ok(Tensor::from_slice(&v).f_view(shape)?.f_to_kind(kind)?)
    }
}

/// Box-Muller on one block of 16 uniforms, in place, with libtorch's x86-64 arithmetic: f32
/// throughout, `theta = f32(2 pi) * u2`, and the polynomial `ln` and `sin`/`cos` below.
fn box_muller_16(v: &mut [f32]) {
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0 - v[j];
        let u2 = v[j + 8];
        let radius = (-2.0 * ln_poly(u1)).sqrt();
        let (sin, cos) = sin_cos_poly(two_pi * u2);
        v[j] = radius * cos;
        v[j + 8] = radius * sin;
    }
}

/// Natural logarithm of a positive normal f32 by the Cephes single-precision method (exponent
/// split at sqrt(1/2), degree-9 polynomial, ln 2 in two parts), each multiply-add fused: the
/// arithmetic of libtorch's AVX2 normal kernel, one lane at a time.
fn ln_poly(x: f32) -> f32 {
    const P: [f32; 9] = [
        7.037_683_6e-2,
        -1.151_461e-1,
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_4e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ];
    let bits = x.to_bits();
    let exponent = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    // The mantissa as a value in [0.5, 1).
    let mut m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    let below = m < std::f32::consts::FRAC_1_SQRT_2;
    let e = if below { exponent - 1.0 } else { exponent };
    m = if below { (m - 1.0) + m } else { m - 1.0 };
    let z = m * m;
    let mut y = P[0];
    for &p in &P[1..] {
        y = y.mul_add(m, p);
    }
    y = (y * m).mul_add(z, e * -2.121_944_4e-4);
    y -= z * 0.5;
    e.mul_add(0.693_359_4, m + y)
}

/// `(sin x, cos x)` of a finite f32 by the Cephes single-precision method (reduction by
/// multiples of pi/4 in three parts, degree-3 polynomials), each multiply-add fused: the
/// arithmetic of libtorch's AVX2 normal kernel, one lane at a time.
fn sin_cos_poly(x: f32) -> (f32, f32) {
    let negative = x < 0.0;
    let a = x.abs();
    let octant = ((a * 1.273_239_5) as i32 + 1) & !1;
    let y = octant as f32;
    let mut r = y.mul_add(-0.785_156_25, a);
    r = y.mul_add(-2.418_756_5e-4, r);
    r = y.mul_add(-3.774_895e-8, r);
    let z = r * r;
    let mut c = 2.443_315_7e-5f32;
    c = c.mul_add(z, -1.388_731_6e-3);
    c = c.mul_add(z, 4.166_664_6e-2);
    c *= z;
    c = c.mul_add(z, -(z * 0.5)) + 1.0;
    let mut s = -1.951_529_6e-4f32;
    s = s.mul_add(z, 8.332_161e-3);
    s = s.mul_add(z, -1.666_665_5e-1);
    s *= z;
    s = s.mul_add(r, r);
    let (mut sin, mut cos) = if octant & 2 == 0 { (s, c) } else { (c, s) };
    if negative != (octant & 4 != 0) {
        sin = -sin;
    }
    if (octant - 2) & 4 == 0 {
        cos = -cos;
    }
    (sin, cos)
}

/// ln Γ(x) for x >= 1: the C library's `lgamma`, which libtorch calls, in its thread-safe form.
fn ln_gamma(x: f64) -> f64 {
    unsafe extern "C" {
        fn lgamma_r(x: f64, sign: *mut std::ffi::c_int) -> f64;
    }
    let mut sign: std::ffi::c_int = 0;
    // SAFETY: `lgamma_r` (the reentrant `lgamma`) reads `x` and writes the sign to a local.
    unsafe { lgamma_r(x, &mut sign) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_stream() {
        // std::mt19937 with the default seed 5489: the 10000th output is 4123659995.
        let mut g = TorchRng::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = g.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    fn sum(t: &Tensor) -> f64 {
        t.to_kind(Kind::Double).sum(Kind::Double).double_value(&[])
    }

    // The pinned values below were drawn by libtorch 2.11 (x86-64, AVX-512 machine) after
    // `manual_seed(seed)`; the whole tensors were compared element by element (1.2 million
    // normal values, no difference) when this generator was written.
    #[test]
    fn normal_draws_are_libtorchs() {
        let a = TorchRng::new(7).randn(&[1000]).unwrap();
        let first: Vec<f64> = (0..3).map(|i| a.double_value(&[i])).collect();
        assert_eq!(
            first,
            [-0.8201345205307007, 0.39563116431236267, 0.8989084959030151]
        );
        assert_eq!(a.double_value(&[999]), -0.8487755060195923);
        assert!(
            (sum(&a) - 4.843_490_088_824_183).abs() < 1e-9,
            "{}",
            sum(&a)
        );
        // 16 does not divide 17: the last block is drawn again.
        let b = TorchRng::new(1).randn(&[17]).unwrap();
        let last = [b.double_value(&[15]), b.double_value(&[16])];
        assert_eq!(last, [-0.13162320852279663, -0.7984398007392883]);
        let c = TorchRng::new(11).randn(&[3, 64, 48]).unwrap();
        assert_eq!(c.size(), [3, 64, 48]);
        let flat = c.flatten(0, -1);
        assert_eq!(flat.double_value(&[5]), -1.4972281455993652);
        assert_eq!(flat.double_value(&[9215]), -1.1898629665374756);
        assert!(
            (sum(&c) - 18.098_302_098_922_43).abs() < 1e-9,
            "{}",
            sum(&c)
        );
    }

    #[test]
    fn one_at_a_time_draws_are_libtorchs() {
        // An image as eval holds it: a (1, 3, H, W) view of HWC samples.
        let x = Tensor::zeros([6, 8, 3], (Kind::Float, Device::Cpu))
            .permute([2, 0, 1])
            .unsqueeze(0);
        let a = TorchRng::new(7_625_522_456_713_690_082)
            .randn_like(&x)
            .unwrap();
        assert_eq!(a.stride()[1..], x.stride()[1..], "laid out like x");
        assert_eq!(a.double_value(&[0, 0, 0, 0]), 2.2336297035217285);
        assert_eq!(a.double_value(&[0, 1, 0, 0]), 2.3345837593078613);
        assert_eq!(a.double_value(&[0, 2, 5, 7]), 1.161518931388855);
        assert!(
            (sum(&a) - 28.736_701_436_340_81).abs() < 1e-9,
            "{}",
            sum(&a)
        );
        // Fewer than 16 values.
        let b = TorchRng::new(9).randn(&[5]).unwrap();
        let got: Vec<f64> = (0..5).map(|i| b.double_value(&[i])).collect();
        let expect = [
            0.04472753778100014,
            1.9112390279769897,
            -0.2310308963060379,
            0.3459281623363495,
            1.318028211593628,
        ];
        assert_eq!(got, expect);
    }

    #[test]
    fn poisson_and_randint_draws_are_libtorchs() {
        let rates = Tensor::arange(300, (Kind::Float, Device::Cpu)) * 0.9;
        let p = TorchRng::new(3).poisson(&rates).unwrap();
        assert_eq!(p.kind(), Kind::Float);
        let picked: Vec<f32> = [0, 1, 5, 11, 12, 299]
            .iter()
            .map(|&i| p.double_value(&[i]) as f32)
            .collect();
        assert_eq!(picked, [0.0, 0.0, 3.0, 11.0, 8.0, 273.0]);
        assert_eq!(sum(&p), 40349.0);
        let i = TorchRng::new(99)
            .randint(256, &[3, 40, 48], Kind::Uint8)
            .unwrap();
        assert_eq!(i.kind(), Kind::Uint8);
        let first = Vec::<u8>::try_from(i.flatten(0, -1).narrow(0, 0, 5)).unwrap();
        assert_eq!(first, [129, 35, 185, 168, 201]);
        assert_eq!(sum(&i), 732_450.0);
    }

    #[test]
    fn generators_are_independent_values() {
        let mut a = TorchRng::new(42);
        let mut b = a.clone();
        let x = a.randn(&[64]).unwrap();
        // Another generator drawing in between does not change b's stream.
        let _ = TorchRng::new(42).randn(&[1000]).unwrap();
        assert!(x.equal(&b.randn(&[64]).unwrap()));
        assert!(!x.equal(&a.randn(&[64]).unwrap()));
    }
}
