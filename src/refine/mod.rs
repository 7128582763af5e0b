//! Refinement after the network (issue 23, "do no harm"): the second stage of BM3D (Dabov et
//! al., 2007) with the network's output as the basic estimate (the *pilot*): an empirical
//! Wiener filter of the *noisy input* whose gains come from the pilot.
//!
//! - [`wiener`]: without block matching: overlapping windows of the frame, each filtered on
//!   its own (tch convolutions on the tensors' device);
//! - [`collab`]: with block matching: groups of similar blocks (found on the pilot) filtered
//!   together in a 3-D transform, BM3D's collaborative Wiener filtering (plain Rust on CPU
//!   buffers).
//!
//! This module holds what both share: the [`Refine`] choice and its `--refine` spec (parsed
//! and printed from one set of tables), the noise-level sources, the DC mode and the noise
//! cue's [`Adapt`]; [`basis`] holds the colour transform and the DCT.

use std::fmt;
use std::str::FromStr;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

mod basis;
pub mod collab;
pub mod wiener;

pub use basis::dct_basis;
pub use collab::Collab;
pub use wiener::Wiener;

/// What runs after the network (`--refine`, the element's `refine`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Refine {
    /// The network's output as it is.
    #[default]
    Off,
    /// The empirical Wiener filter of the input with the output as pilot.
    Wiener(Wiener),
    /// The collaborative (block-matching) Wiener filter of the input with the output as
    /// pilot.
    Collab(Collab),
}

/// Colour space the Wiener filter works in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// R, G, B as they are.
    Rgb,
    /// The orthonormal opponent transform: (R+G+B)/√3, (R−B)/√2, (R−2G+B)/√6. White noise of
    /// equal level in R, G and B stays white and equal; luma and chroma noise separate.
    Opponent,
}

/// Where the noise level σ comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SigmaSource {
    /// The residual input − pilot, per image, channel and DCT frequency (its power spectrum in
    /// the window transform): median of the squared coefficients of non-overlapping windows
    /// over the median of a χ²₁ (0.4549).
    Psd,
    /// The residual, per image and channel, white: 1.4826 × its median absolute deviation.
    Residual,
    /// The noisy input alone ([`crate::noise_level::estimate_sigma`] in the filter's colour
    /// space), per image and channel, white.
    Estimate,
    /// The noisy input's own spectrum where the pilot is flat, per image, channel and
    /// frequency: over the quarter of non-overlapping windows with the least pilot detail
    /// (AC energy), the median of the noisy AC coefficients squared over 0.4549 (the DC from
    /// the residual, as [`SigmaSource::Psd`]). Does not depend on how much noise the pilot
    /// removed.
    Flat,
    /// This standard deviation, in levels of 255, for every channel.
    Fixed(f64),
}

/// How the windows' DC coefficient (their mean) is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DcMode {
    /// Like every other coefficient.
    Wiener,
    /// Kept as the input's (gain 1): the output's local means are the input's.
    Input,
}

/// How much of the refinement an image gets, from its estimated noise level σ̂
/// ([`Wiener::noise_cue`], levels of 255): the output is `pilot + α (refined − pilot)` with
/// α = 0 at or below `lo`, 1 at or above `hi`, linear between. Mild noise keeps the network's
/// output; strong noise gets the full stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adapt {
    pub lo: f64,
    pub hi: f64,
}

impl Adapt {
    /// α for a noise level `sigma` (levels of 255).
    pub fn weight(&self, sigma: f64) -> f64 {
        if sigma <= self.lo {
            0.0
        } else if sigma >= self.hi {
            1.0
        } else {
            (sigma - self.lo) / (self.hi - self.lo)
        }
    }

    /// Its bounds: 0 <= LO < HI, finite.
    fn check(&self) -> std::result::Result<(), String> {
        match self.lo.is_finite() && self.hi.is_finite() && self.lo >= 0.0 && self.hi > self.lo {
            true => Ok(()),
            false => Err(format!(
                "adapt {}:{} (expected 0 <= LO < HI levels of 255)",
                self.lo, self.hi
            )),
        }
    }
}

/// `pilot + α (refined − pilot)` per image of the batch, α from [`Adapt::weight`] of the
/// images' noise cues (`cue`, run only with an `adapt`); `refine` runs only where some α > 0
/// (else the pilot comes back as it is). Without `adapt`: `refine`'s result.
pub(crate) fn adapted(
    adapt: Option<Adapt>,
    pilot: &Tensor,
    cue: impl FnOnce() -> Result<Vec<f64>>,
    refine: impl FnOnce() -> Result<Tensor>,
) -> Result<Tensor> {
    let Some(a) = adapt else {
        return refine();
    };
    let alpha: Vec<f64> = cue()?.into_iter().map(|s| a.weight(s)).collect();
    let pilot = pilot.f_to_kind(Kind::Float)?;
    if alpha.iter().all(|v| *v == 0.0) {
        return Ok(pilot);
    }
    let y = refine()?;
    let a = Tensor::f_from_slice(&alpha)?
        .f_to_kind(Kind::Float)?
        .f_to_device(pilot.device())?
        .f_view([alpha.len() as i64, 1, 1, 1])?;
    Ok(&pilot + (y - &pilot) * a)
}

impl Refine {
    /// Refine `out` (the network's output) against `input`, both (N, 3, H, W) on the 0..1
    /// scale; the result is on `out`'s device, f32, not clamped.
    pub fn apply(&self, input: &Tensor, out: &Tensor) -> Result<Tensor> {
        match self {
            Refine::Off => Ok(out.shallow_clone()),
            Refine::Wiener(w) => w.apply(input, out),
            Refine::Collab(c) => c.apply(input, out),
        }
    }

    pub fn is_off(&self) -> bool {
        matches!(self, Refine::Off)
    }
}

/// The names of an enum's values in `--refine` specs: the first entry of a value is how it is
/// written, later ones are accepted aliases. One table serves parsing and printing.
struct Names<T: 'static>(&'static [(T, &'static str)]);

impl<T: Copy + PartialEq + 'static> Names<T> {
    fn parse(&self, s: &str) -> Option<T> {
        self.0.iter().find(|(_, n)| *n == s).map(|(v, _)| *v)
    }

    fn name(&self, v: T) -> &'static str {
        self.0
            .iter()
            .find(|(t, _)| *t == v)
            .map(|(_, n)| *n)
            .expect("every value is named")
    }

    /// "a, b or c" of the written names.
    fn expected(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for (v, n) in self.0 {
            if self.name(*v) == *n {
                names.push(n);
            }
        }
        match names.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

const COLOURS: Names<Colour> = Names(&[
    (Colour::Opponent, "opponent"),
    (Colour::Opponent, "opp"),
    (Colour::Rgb, "rgb"),
]);
/// The named sources; [`SigmaSource::Fixed`] is written as its number.
const SIGMAS: Names<SigmaSource> = Names(&[
    (SigmaSource::Psd, "psd"),
    (SigmaSource::Flat, "flat"),
    (SigmaSource::Residual, "residual"),
    (SigmaSource::Estimate, "estimate"),
]);
const DCS: Names<DcMode> = Names(&[(DcMode::Wiener, "wiener"), (DcMode::Input, "input")]);

impl SigmaSource {
    fn parse(v: &str) -> Option<SigmaSource> {
        SIGMAS.parse(v).or_else(|| {
            v.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(SigmaSource::Fixed)
        })
    }

    fn spec(&self) -> String {
        match self {
            SigmaSource::Fixed(v) => v.to_string(),
            named => SIGMAS.name(*named).to_string(),
        }
    }

    /// A fixed level is finite and >= 0.
    fn check(&self) -> std::result::Result<(), String> {
        match self {
            SigmaSource::Fixed(v) if !(v.is_finite() && *v >= 0.0) => {
                Err(format!("sigma {v} (expected >= 0 levels of 255)"))
            }
            _ => Ok(()),
        }
    }
}

/// σ's scale: finite and > 0.
fn check_scale(scale: f64) -> std::result::Result<(), String> {
    match scale.is_finite() && scale > 0.0 {
        true => Ok(()),
        false => Err(format!("scale {scale} (expected > 0)")),
    }
}

/// The keys both refinements have: where σ comes from, its scale, the DC and the cue.
struct Shared<'a> {
    sigma: &'a mut SigmaSource,
    scale: &'a mut f64,
    dc: &'a mut DcMode,
    adapt: &'a mut Option<Adapt>,
}

/// One `KEY=VALUE` of the spec `spec`, lower-cased, and its errors.
struct Key<'a> {
    spec: &'a str,
    k: String,
    v: String,
}

impl Key<'_> {
    fn bad(&self, m: String) -> Error {
        Error::Input(format!("refine '{}': {m}", self.spec))
    }

    fn int(&self) -> Result<i64> {
        self.v
            .parse::<i64>()
            .map_err(|_| self.bad(format!("{}: '{}' is not a whole number", self.k, self.v)))
    }

    fn number_of(&self, v: &str) -> Result<f64> {
        v.parse::<f64>()
            .map_err(|_| self.bad(format!("{}: '{v}' is not a number", self.k)))
    }

    fn named<T: Copy + PartialEq>(&self, what: &str, names: &Names<T>) -> Result<T> {
        self.name_or(what, names.parse(&self.v), names.expected())
    }

    fn name_or<T>(&self, what: &str, v: Option<T>, expected: String) -> Result<T> {
        v.ok_or_else(|| self.bad(format!("{what} '{}' (expected {expected})", self.v)))
    }

    /// Set one of the shared keys; false if `k` is not one of them.
    fn shared(&self, s: Shared<'_>) -> Result<bool> {
        match self.k.as_str() {
            "sigma" => {
                *s.sigma = self.name_or(
                    "sigma",
                    SigmaSource::parse(&self.v),
                    format!("{} or a level of 255", SIGMAS.expected()),
                )?
            }
            "scale" => *s.scale = self.number_of(&self.v)?,
            "dc" => *s.dc = self.named("dc", &DCS)?,
            "adapt" => {
                *s.adapt = match self.v.split_once(':') {
                    None if self.v == "off" => None,
                    None => {
                        return Err(self.bad(format!("adapt '{}' (expected LO:HI or off)", self.v)))
                    }
                    Some((lo, hi)) => Some(Adapt {
                        lo: self.number_of(lo)?,
                        hi: self.number_of(hi)?,
                    }),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl FromStr for Refine {
    type Err = Error;

    /// `off`, `wiener[:KEY=VALUE,...]` (`adaptive[:KEY=VALUE,...]` starts from
    /// [`Wiener::adaptive`] instead of the defaults), or `collab[:KEY=VALUE,...]`
    /// (`strong[:KEY=VALUE,...]` starts from [`Collab::strong`]). Keys of
    /// both: `sigma` (psd, flat, residual, estimate, or a level of 255), `scale`, `dc`
    /// (wiener, input), `adapt` (LO:HI levels of 255 of the noise cue, or off); of `wiener`:
    /// `block` (4, 8, 16), `stride`, `colour` (opponent, rgb), `levels`; of `collab`:
    /// `search` (the search window's half side), `group` (the most blocks in a group, a power
    /// of two), `step` (between reference blocks).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = |m: String| Error::Input(format!("refine '{s}': {m}"));
        let (name, rest) = s.split_once(':').unwrap_or((s, ""));
        let mut r = match name.to_ascii_lowercase().as_str() {
            "off" | "none" if rest.is_empty() => return Ok(Refine::Off),
            "wiener" => Refine::Wiener(Wiener::default()),
            "adaptive" => Refine::Wiener(Wiener::adaptive()),
            "collab" => Refine::Collab(Collab::default()),
            "strong" => Refine::Collab(Collab::strong()),
            _ => {
                return Err(bad(
                    "expected off, wiener[:KEY=VALUE,...], adaptive[:KEY=VALUE,...], collab[:KEY=VALUE,...] or strong[:KEY=VALUE,...]"
                        .into(),
                ))
            }
        };
        for kv in rest.split(',').filter(|kv| !kv.trim().is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad(format!("'{kv}' is not KEY=VALUE")))?;
            let key = Key {
                spec: s,
                k: k.trim().to_ascii_lowercase(),
                v: v.trim().to_ascii_lowercase(),
            };
            match &mut r {
                Refine::Off => unreachable!("off takes no keys"),
                Refine::Wiener(w) => {
                    let shared = Shared {
                        sigma: &mut w.sigma,
                        scale: &mut w.scale,
                        dc: &mut w.dc,
                        adapt: &mut w.adapt,
                    };
                    if key.shared(shared)? {
                        continue;
                    }
                    match key.k.as_str() {
                        "block" => w.block = key.int()?,
                        "stride" => w.stride = key.int()?,
                        "levels" => w.levels = key.int()?,
                        "colour" | "color" => w.colour = key.named("colour", &COLOURS)?,
                        k => {
                            return Err(bad(format!(
                                "unknown key '{k}' (block, stride, colour, sigma, scale, levels, dc, adapt)"
                            )))
                        }
                    }
                }
                Refine::Collab(c) => {
                    let shared = Shared {
                        sigma: &mut c.sigma,
                        scale: &mut c.scale,
                        dc: &mut c.dc,
                        adapt: &mut c.adapt,
                    };
                    if key.shared(shared)? {
                        continue;
                    }
                    match key.k.as_str() {
                        "search" => c.search = key.int()?,
                        "group" => c.group = key.int()?,
                        "step" => c.step = key.int()?,
                        k => {
                            return Err(bad(format!(
                                "unknown key '{k}' (sigma, scale, search, group, step, dc, adapt)"
                            )))
                        }
                    }
                }
            }
        }
        match &r {
            Refine::Off => {}
            Refine::Wiener(w) => w.validate().map_err(|e| bad(e.to_string()))?,
            Refine::Collab(c) => c.validate().map_err(|e| bad(e.to_string()))?,
        }
        Ok(r)
    }
}

/// The shared keys' `KEY=VALUE` where they differ from the defaults `d`.
fn shared_keys(
    (sigma, scale, dc, adapt): (SigmaSource, f64, DcMode, Option<Adapt>),
    d: (SigmaSource, f64, DcMode, Option<Adapt>),
) -> [Option<String>; 4] {
    [
        (sigma != d.0).then(|| format!("sigma={}", sigma.spec())),
        (scale != d.1).then(|| format!("scale={scale}")),
        (dc != d.2).then(|| format!("dc={}", DCS.name(dc))),
        (adapt != d.3).then(|| match adapt {
            Some(a) => format!("adapt={}:{}", a.lo, a.hi),
            None => "adapt=off".into(),
        }),
    ]
}

impl fmt::Display for Refine {
    /// `off`; `wiener` or `collab` for the defaults, else followed by `:` and the keys that
    /// differ from them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, keys) = match self {
            Refine::Off => return f.write_str("off"),
            Refine::Wiener(w) => {
                let d = Wiener::default();
                let [sigma, scale, dc, adapt] = shared_keys(
                    (w.sigma, w.scale, w.dc, w.adapt),
                    (d.sigma, d.scale, d.dc, d.adapt),
                );
                let keys = [
                    (w.block != d.block).then(|| format!("block={}", w.block)),
                    (w.stride != d.stride).then(|| format!("stride={}", w.stride)),
                    (w.colour != d.colour).then(|| format!("colour={}", COLOURS.name(w.colour))),
                    sigma,
                    scale,
                    (w.levels != d.levels).then(|| format!("levels={}", w.levels)),
                    dc,
                    adapt,
                ];
                ("wiener", keys.into_iter().flatten().collect::<Vec<_>>())
            }
            Refine::Collab(c) => {
                let d = Collab::default();
                let [sigma, scale, dc, adapt] = shared_keys(
                    (c.sigma, c.scale, c.dc, c.adapt),
                    (d.sigma, d.scale, d.dc, d.adapt),
                );
                let keys = [
                    sigma,
                    scale,
                    (c.search != d.search).then(|| format!("search={}", c.search)),
                    (c.group != d.group).then(|| format!("group={}", c.group)),
                    (c.step != d.step).then(|| format!("step={}", c.step)),
                    dc,
                    adapt,
                ];
                ("collab", keys.into_iter().flatten().collect::<Vec<_>>())
            }
        };
        match keys.is_empty() {
            true => f.write_str(name),
            false => write!(f, "{name}:{}", keys.join(",")),
        }
    }
}

/// Helpers of the refinements' tests.
#[cfg(test)]
pub(crate) mod testing {
    use tch::{Device, Kind, Tensor};

    pub const CPU: (Kind, Device) = (Kind::Float, Device::Cpu);

    /// A test picture with edges, smooth ramps and fine texture, on 0.1..0.9.
    pub fn picture(h: i64, w: i64) -> Tensor {
        let y = Tensor::arange(h, CPU).view([1, 1, h, 1]);
        let x = Tensor::arange(w, CPU).view([1, 1, 1, w]);
        let ramp = &x / w as f64 * 0.3 + &y / h as f64 * 0.2;
        let texture = ((&x * 0.9).sin() * (&y * 0.45).cos()) * 0.12;
        let square = (x.ge(w / 3).logical_and(&x.lt(2 * w / 3)))
            .logical_and(&y.ge(h / 4).logical_and(&y.lt(3 * h / 4)))
            .to_kind(Kind::Float)
            * 0.25;
        let base = ramp + texture + square + 0.2;
        let tint = Tensor::from_slice(&[1.0f32, 0.8, 1.15]).view([1, 3, 1, 1]);
        (base * tint).clamp(0.1, 0.9)
    }

    pub fn psnr(a: &Tensor, b: &Tensor) -> f64 {
        let mse = (a - b).square().mean(Kind::Double).double_value(&[]);
        10.0 * (1.0 / mse).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        assert_eq!("off".parse::<Refine>().unwrap(), Refine::Off);
        assert_eq!(
            "wiener".parse::<Refine>().unwrap(),
            Refine::Wiener(Wiener::default())
        );
        for spec in [
            "off",
            "wiener",
            "wiener:block=16,stride=4,colour=rgb,sigma=residual,scale=1.5,levels=4,dc=input",
            "wiener:sigma=estimate",
            "wiener:sigma=flat",
            "wiener:sigma=7.5",
            "wiener:sigma=flat,scale=2,dc=input,adapt=3:8.5",
            "collab",
            "collab:sigma=psd,scale=1.5,search=19,group=16,step=2,dc=input,adapt=3:5",
            "collab:sigma=12.5",
        ] {
            let r: Refine = spec.parse().unwrap();
            assert_eq!(r.to_string(), spec);
            assert_eq!(r.to_string().parse::<Refine>().unwrap(), r);
        }
        assert_eq!(
            "adaptive".parse::<Refine>().unwrap(),
            "wiener:sigma=flat,scale=2,dc=input,adapt=3:5"
                .parse::<Refine>()
                .unwrap()
        );
        assert_eq!(
            "adaptive:adapt=off".parse::<Refine>().unwrap().to_string(),
            "wiener:sigma=flat,scale=2,dc=input"
        );
        assert_eq!(
            "wiener:colour=opp,color=rgb,adapt=2:4,adapt=off"
                .parse::<Refine>()
                .unwrap()
                .to_string(),
            "wiener:colour=rgb"
        );
        for bad in [
            "wiener:block=7",
            "wiener:stride=3",
            "wiener:scale=0",
            "wiener:sigma=-1",
            "wiener:levels=0",
            "wiener:colour=lab",
            "wiener:size=8",
            "wiener:block",
            "bm3d",
            "off:block=8",
            "wiener:adapt=5:2",
            "wiener:adapt=-1:2",
            "wiener:adapt=x",
            "wiener:adapt=1:y",
            "collab:group=12",
            "collab:group=64",
            "collab:search=0",
            "collab:step=9",
            "collab:scale=-1",
            "collab:sigma=-2",
            "collab:block=8",
            "collab:adapt=4:4",
            "collab:dc=mean",
        ] {
            let e = bad.parse::<Refine>().unwrap_err().to_string();
            assert!(e.contains(bad) && !e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn collab_specs_parse_and_print() {
        assert_eq!(
            "collab".parse::<Refine>().unwrap(),
            Refine::Collab(Collab::default())
        );
        let c = match "COLLAB: search=5 , Group=8,sigma=Flat"
            .parse::<Refine>()
            .unwrap()
        {
            Refine::Collab(c) => c,
            r => panic!("{r}"),
        };
        assert_eq!((c.search, c.group, c.sigma), (5, 8, SigmaSource::Flat));
        assert_eq!(
            "collab:adapt=2:4,adapt=off,step=3"
                .parse::<Refine>()
                .unwrap(),
            Refine::Collab(Collab::default())
        );
    }

    /// Specs made of pieces of valid and invalid ones: every one parses to a refinement
    /// that prints as a spec parsing back to itself, or is refused with a one-line error
    /// naming the spec; none panics.
    #[test]
    fn fuzzed_specs_round_trip_or_fail_in_one_line() {
        let names = [
            "off", "wiener", "adaptive", "collab", "strong", "bm3d", "", "collab:",
        ];
        let keys = [
            "sigma=flat",
            "sigma=psd",
            "sigma=7",
            "sigma=-1",
            "sigma=x",
            "scale=2",
            "scale=0",
            "scale=nan",
            "search=19",
            "search=99",
            "group=8",
            "group=3",
            "group=32",
            "step=1",
            "step=0",
            "dc=input",
            "dc=wiener",
            "adapt=3:5",
            "adapt=5:3",
            "adapt=off",
            "block=16",
            "stride=4",
            "colour=rgb",
            "levels=3",
            "=",
            "x",
            ":",
            ",",
            "group=",
            "adapt=1:2:3",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..3000 {
            let mut spec = names[next(names.len())].to_string();
            let count = next(4);
            for i in 0..count {
                spec.push(if i == 0 && !spec.contains(':') {
                    ':'
                } else {
                    ','
                });
                spec.push_str(keys[next(keys.len())]);
            }
            match spec.parse::<Refine>() {
                Ok(r) => {
                    ok += 1;
                    assert_eq!(r.to_string().parse::<Refine>().unwrap(), r, "{spec}");
                }
                Err(e) => {
                    refused += 1;
                    let e = e.to_string();
                    assert!(e.contains(spec.trim()) && !e.contains('\n'), "{spec}: {e}");
                }
            }
        }
        assert!(ok > 300 && refused > 300, "{ok} parsed, {refused} refused");
    }
}
