//! clipdenoise: the CLIPDenoising network in Rust with libtorch, and the streaming machinery
//! around it. This crate never links GStreamer; the element lives in `gst-plugin/`.
//!
//! Where things are:
//! - [`model`]: the network (encoder, decoder, configs/presets).
//! - [`weights`]: the safetensors weight format, importers, `weights fetch`.
//! - [`inference`]: whole-frame denoising of u8 frames (padding, tiling, precision, device).
//! - [`engine`]: the batching stage (bounded channel pair, one worker thread owning the model).

pub mod bench;
pub mod engine;
pub mod error;
pub mod eval;
pub mod frame;
pub mod imageio;
pub mod inference;
pub mod isp_noise;
pub mod metrics;
pub mod model;
pub mod noise;
pub mod train;
pub mod train_pool;
pub mod video_eval;
pub mod weights;

pub use error::{Error, Result};
pub use model::{ClipDenoise, Config};
