//! Model shapes: the paper's `clip-rn50` and smaller CPU presets of the same architecture.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The shape of a CLIPDenoising network: a CLIP ModifiedResNet encoder (stem + layer1..layer3,
/// `blocks` Bottlenecks each; layer4 is never built) and the depth-5 U-Net decoder whose
/// channel counts follow `width`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Stem width `w` (64 in CLIP RN50). Features have w, 4w, 8w, 16w channels.
    pub width: i64,
    /// Bottleneck blocks in layer1, layer2, layer3.
    pub blocks: [i64; 3],
    /// Progressive feature augmentation level `a` (training only): F_k *= 1 + N(0,1)*k*a.
    #[serde(default = "default_aug_level")]
    pub aug_level: f64,
    /// Trained for the coarse-grain pipeline (the network on the four pixel-shuffled
    /// sub-images, then on their merge: [`crate::pixel_shuffle`]): inference always runs it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub coarse_grain: bool,
    /// What the decoder outputs: pixels (the paper's `last` conv), or per-pixel kernels applied
    /// to the noisy input ([`Head::Kernel`]).
    #[serde(default, skip_serializing_if = "Head::is_pixels")]
    pub head: Head,
    /// The kernel head's passes, in order: per entry one 3x3 kernel at that dilation, applied
    /// to the previous pass's result ([`super::head`]). Absent: [`DEFAULT_KERNEL_DILATIONS`]
    /// (every kernel model written before the passes were configurable). Kernel head only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_dilations: Option<Vec<i64>>,
    /// Inference replaces the denoised frame's low-pass (Gaussian, this sigma in pixels) by the
    /// input's, so that the picture's brightness and colour stay the input's
    /// ([`crate::lowpass::keep_input_lowpass`]); none: the network's output as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_input_lowpass: Option<f64>,
}

/// The decoder's output head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Head {
    /// A 3x3 conv to RGB (the paper's `last`): the network outputs pixels.
    #[default]
    Pixels,
    /// Per pixel and channel, softmax weights over 3x3 neighbourhoods of the noisy input, one
    /// pass per dilation of [`Config::kernel_dilations`] (default 1 then 2)
    /// ([`super::head::KernelHead`]): every output is a convex combination of input pixels, so
    /// a flat area keeps its level and colour.
    Kernel,
}

impl Head {
    pub fn is_pixels(&self) -> bool {
        *self == Head::Pixels
    }
}

impl std::str::FromStr for Head {
    type Err = Error;
    fn from_str(s: &str) -> Result<Head> {
        match s {
            "pixels" => Ok(Head::Pixels),
            "kernel" => Ok(Head::Kernel),
            _ => Err(Error::Config(format!(
                "unknown head '{s}' (known: pixels, kernel)"
            ))),
        }
    }
}

/// The kernel head's passes when a config names none: 3x3 at dilation 1, then at dilation 2.
pub const DEFAULT_KERNEL_DILATIONS: [i64; 2] = [1, 2];
/// At most this many kernel passes ...
pub const MAX_KERNEL_PASSES: usize = 8;
/// ... each at a dilation from 1 to this.
pub const MAX_KERNEL_DILATION: i64 = 64;

/// The paper's progressive feature augmentation level.
pub const AUG_LEVEL: f64 = 0.025;

fn default_aug_level() -> f64 {
    AUG_LEVEL
}

/// Named presets. `clip-rn50` is the paper's model (OpenAI's CLIP RN50 encoder);
/// the others are the same architecture at CPU-friendly sizes.
pub const PRESETS: &[(&str, Config)] = &[
    ("clip-rn50", Config::new(64, [3, 4, 6])),
    ("small", Config::new(32, [1, 1, 1])),
    ("tiny", Config::new(16, [1, 1, 1])),
    ("nano", Config::new(8, [1, 1, 1])),
];

impl Config {
    /// A shape with the paper's augmentation level.
    pub const fn new(width: i64, blocks: [i64; 3]) -> Config {
        Config {
            width,
            blocks,
            aug_level: AUG_LEVEL,
            coarse_grain: false,
            head: Head::Pixels,
            kernel_dilations: None,
            keep_input_lowpass: None,
        }
    }

    /// The kernel head's dilations, one per pass ([`DEFAULT_KERNEL_DILATIONS`] when the config
    /// names none).
    pub fn kernel_dilations(&self) -> &[i64] {
        self.kernel_dilations
            .as_deref()
            .unwrap_or(&DEFAULT_KERNEL_DILATIONS)
    }

    /// How far, in pixels, the output head reaches from a pixel: the pixel head's 3x3 conv 1,
    /// the kernel head the sum of its dilations (its support is a square of side 2r + 1).
    pub fn head_radius(&self) -> i64 {
        match self.head {
            Head::Pixels => 1,
            Head::Kernel => self.kernel_dilations().iter().sum(),
        }
    }

    pub fn preset(name: &str) -> Result<Config> {
        PRESETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| {
                let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
                Error::Config(format!(
                    "unknown preset '{name}' (known: {})",
                    names.join(", ")
                ))
            })
    }

    pub fn clip_rn50() -> Config {
        PRESETS[0].1.clone()
    }

    /// The preset name when the shape matches one, else `w{width}-b{l1}{l2}{l3}`.
    pub fn name(&self) -> String {
        PRESETS
            .iter()
            .find(|(_, c)| c.width == self.width && c.blocks == self.blocks)
            .map(|(n, _)| n.to_string())
            .unwrap_or_else(|| {
                format!(
                    "w{}-b{}{}{}",
                    self.width, self.blocks[0], self.blocks[1], self.blocks[2]
                )
            })
    }

    pub fn validate(&self) -> Result<()> {
        if self.width < 2 || self.width % 2 != 0 || self.width > 1024 {
            return Err(Error::Config(format!(
                "width must be an even number from 2 to 1024, got {}",
                self.width
            )));
        }
        if let Some(b) = self.blocks.iter().find(|&&b| !(1..=64).contains(&b)) {
            return Err(Error::Config(format!(
                "every layer needs 1 to 64 blocks, got {b} in {:?}",
                self.blocks
            )));
        }
        if !(0.0..1.0).contains(&self.aug_level) || self.aug_level.is_nan() {
            return Err(Error::Config(format!(
                "aug_level must be in [0, 1), got {}",
                self.aug_level
            )));
        }
        if let Some(d) = &self.kernel_dilations {
            if self.head != Head::Kernel {
                return Err(Error::Config(format!(
                    "kernel_dilations {d:?} needs head = \"kernel\""
                )));
            }
            if d.is_empty() || d.len() > MAX_KERNEL_PASSES {
                return Err(Error::Config(format!(
                    "kernel_dilations needs 1 to {MAX_KERNEL_PASSES} passes, got {}",
                    d.len()
                )));
            }
            if let Some(x) = d.iter().find(|x| !(1..=MAX_KERNEL_DILATION).contains(*x)) {
                return Err(Error::Config(format!(
                    "kernel_dilations: each dilation must be 1 to {MAX_KERNEL_DILATION}, got {x} in {d:?}"
                )));
            }
        }
        if let Some(s) = self.keep_input_lowpass {
            if !(s.is_finite() && s > 0.0 && s <= 1024.0) {
                return Err(Error::Config(format!(
                    "keep_input_lowpass must be a sigma in (0, 1024] pixels, got {s}"
                )));
            }
        }
        Ok(())
    }

    /// Input sides must be multiples of this (five 2x downsamplings).
    pub const MULTIPLE: i64 = 32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_name_themselves() {
        for (name, c) in PRESETS {
            c.validate().unwrap();
            assert_eq!(&c.name(), name);
            assert_eq!(&Config::preset(name).unwrap(), c);
        }
        assert!(Config::preset("rn101")
            .unwrap_err()
            .to_string()
            .contains("clip-rn50"));
    }

    #[test]
    fn bad_configs_are_refused_with_the_field_named() {
        let mut c = Config::clip_rn50();
        c.width = 7;
        assert!(c.validate().unwrap_err().to_string().contains("width"));
        let mut c = Config::clip_rn50();
        c.blocks = [3, 0, 6];
        assert!(c.validate().unwrap_err().to_string().contains("blocks"));
        let mut c = Config::clip_rn50();
        c.aug_level = f64::NAN;
        assert!(c.validate().unwrap_err().to_string().contains("aug_level"));
        let mut c = Config::clip_rn50();
        c.keep_input_lowpass = Some(0.0);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("keep_input_lowpass"));
    }

    #[test]
    fn head_and_lowpass_round_trip_and_default_to_the_paper() {
        // A config without the fields (every file written before them) is the paper's head.
        let old: Config =
            serde_json::from_str(r#"{"width":64,"blocks":[3,4,6],"aug_level":0.025}"#).unwrap();
        assert_eq!(old, Config::clip_rn50());
        assert_eq!(old.head, Head::Pixels);
        // ... and the paper's config writes neither field, so its metadata is unchanged.
        let json = serde_json::to_string(&Config::clip_rn50()).unwrap();
        assert!(
            !json.contains("head") && !json.contains("lowpass"),
            "{json}"
        );
        let mut c = Config::preset("tiny").unwrap();
        c.head = Head::Kernel;
        c.keep_input_lowpass = Some(12.0);
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""head":"kernel""#), "{json}");
        assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), c);
        assert_eq!("kernel".parse::<Head>().unwrap(), Head::Kernel);
        assert!("pixel".parse::<Head>().is_err());
    }

    #[test]
    fn kernel_dilations_round_trip_default_to_one_two_and_are_checked() {
        // A kernel config without the field (every kernel model before it) has the [1, 2]
        // passes and writes no field, so its metadata is unchanged.
        let old: Config = serde_json::from_str(
            r#"{"width":16,"blocks":[1,1,1],"aug_level":0.025,"head":"kernel"}"#,
        )
        .unwrap();
        assert_eq!(old.kernel_dilations, None);
        assert_eq!(old.kernel_dilations(), &[1, 2]);
        assert_eq!(old.head_radius(), 3);
        assert!(!serde_json::to_string(&old).unwrap().contains("dilations"));
        let wide = Config {
            kernel_dilations: Some(vec![1, 2, 4, 8]),
            ..old.clone()
        };
        wide.validate().unwrap();
        assert_eq!(wide.head_radius(), 15);
        let json = serde_json::to_string(&wide).unwrap();
        assert!(json.contains(r#""kernel_dilations":[1,2,4,8]"#), "{json}");
        assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), wide);
        assert_eq!(Config::preset("tiny").unwrap().head_radius(), 1);
        // Bad lists: the typed config error, naming the field.
        for (d, want) in [
            (vec![], "1 to 8 passes, got 0"),
            (vec![1; 9], "1 to 8 passes, got 9"),
            (vec![1, 0], "got 0 in [1, 0]"),
            (vec![1, 65], "got 65"),
            (vec![-2], "got -2"),
        ] {
            let c = Config {
                kernel_dilations: Some(d.clone()),
                ..old.clone()
            };
            match c.validate() {
                Err(Error::Config(msg)) => {
                    assert!(
                        msg.contains("kernel_dilations") && msg.contains(want),
                        "{d:?}: {msg}"
                    )
                }
                other => panic!("{d:?}: {other:?}"),
            }
        }
        // Only the kernel head has passes.
        let pixels = Config {
            kernel_dilations: Some(vec![1, 2]),
            ..Config::preset("tiny").unwrap()
        };
        assert!(
            matches!(pixels.validate(), Err(Error::Config(m)) if m.contains("head = \"kernel\""))
        );
        // Eight passes at dilation 64 are the most there is.
        let max = Config {
            kernel_dilations: Some(vec![64; 8]),
            ..old
        };
        max.validate().unwrap();
        assert_eq!(max.head_radius(), 512);
    }
}
