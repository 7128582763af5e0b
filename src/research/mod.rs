//! The research lab, behind the `research` feature: what trains and measures models rather
//! than running them in a stream. Training with exact resume ([`train`]), the noise models
//! ([`noise`]), PSNR/SSIM ([`metrics`]), the paper's evaluation protocol ([`eval`]), 8/16-bit
//! image files ([`imageio`]) and the benchmark of the worker stage ([`bench`]). It builds on
//! the runtime (model, weights, inference, engine); the runtime never depends on it.

pub mod bench;
pub mod eval;
pub mod imageio;
pub mod metrics;
pub mod noise;
pub mod train;
