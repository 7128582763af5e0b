//! The research lab, behind the `research` feature: what trains and measures models rather
//! than running them in a stream. Training with exact resume ([`train`]), the noise models
//! ([`noise`]), PSNR/SSIM ([`metrics`]), the paper's evaluation protocol ([`eval`]), 8/16-bit
//! image files ([`imageio`]) and the benchmark of the worker stage ([`bench`]); the camera noise
//! model ([`isp_noise`]), the pool of real and synthesised training pairs ([`train_pool`]) and
//! the compressed-video evaluation ([`video_eval`]). It builds on
//! the runtime (model, weights, inference, engine); the runtime never depends on it.

pub mod bench;
pub mod camera_ops;
pub mod eval;
pub mod imageio;
pub mod isp_noise;
pub mod metrics;
pub mod noise;
pub mod torch_rng;
pub mod train;
pub mod train_config;
pub mod train_data;
pub mod train_pool;
pub mod unbias;
pub mod video_eval;
