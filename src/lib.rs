//! clipdenoise: the CLIPDenoising network in Rust with libtorch, and the streaming machinery
//! around it. This crate is the core library: it never links GStreamer (the element lives in
//! `gst-plugin/`) and holds no user interface (the CLI lives in `cli/`).
//!
//! The runtime, always built:
//! - [`model`]: the network (encoder, decoder, configs/presets).
//! - [`weights`]: the safetensors weight format and the models by name; with the `import` and
//!   `fetch` features, the importers and `weights fetch`.
//! - [`frame`]: packed frame layouts and their conversion to and from tensors.
//! - [`inference`]: whole-frame denoising of u8 frames (padding, tiling, precision, device).
//! - [`engine`]: the batching stage (bounded channel pair, one worker thread owning the model).
//! - [`refine`]: the Wiener refinements of the input with the network's output as pilot
//!   (per window, or collaborative on groups of matched blocks).
//! - [`temporal`]: motion-adaptive temporal smoothing of the denoised frames (video only).
//!
//! With the `job` feature, [`job`]: plans of segmented offline jobs, done records, locks.
//! With the `research` feature, [`research`]: training, noise synthesis, metrics, evaluation,
//! image files and the worker benchmark.

pub mod auto_precision;
pub mod engine;
pub mod error;
pub mod frame;
pub mod inference;
#[cfg(feature = "job")]
pub mod job;
pub mod lowpass;
pub mod model;
pub mod noise_level;
pub mod pad;
pub mod pixel_shuffle;
pub mod refine;
#[cfg(feature = "research")]
pub mod research;
pub mod temporal;
pub mod weights;

pub use error::{Error, Result};
pub use model::{ClipDenoise, Config};
