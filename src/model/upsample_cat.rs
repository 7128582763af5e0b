//! The decoder's bilinear x2 upsampling (align_corners) of x and its concatenation with the
//! skip features, `cat([up(x), skip], 1)`, as one pass on the CPU (`upsample_cat.cpp`): each
//! output byte written once, straight into the channels_last input of the next fused conv.
//! libtorch's two ops wrote the upsampled tensor, read it back in the cat and copied the
//! skip's few channels per pixel one by one: 12 % + 4 % of a 640x360 fp32 frame of the
//! default model before (benchmarks/README.md, "Fused convolutions").

use std::ffi::c_char;

use tch::{Device, Kind, Tensor};

use super::fused::shim_result;

unsafe extern "C" {
    fn cd_upsample2x_cat(
        x: *const torch_sys::C_tensor,
        skip: *const torch_sys::C_tensor,
        err: *mut *mut c_char,
    ) -> *mut torch_sys::C_tensor;
}

/// `cat([upsample_bilinear2d(x, 2x, align_corners), skip], 1)` in libtorch's ops.
pub fn unfused(x: &Tensor, skip: &Tensor) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    let up = x.upsample_bilinear2d([h * 2, w * 2], true, None::<f64>, None::<f64>);
    Tensor::cat(&[&up, skip], 1)
}

/// The same in one pass, channels_last: `x` (N, C1, h, w) channels_last and `skip`
/// (N, C2, 2h, 2w), both f32 or both bf16, on the CPU; anything else is an error (the caller
/// runs [`unfused`]). Same interpolation weights and sum order as libtorch's channels_last
/// kernel, accumulated in f32.
pub fn fused(x: &Tensor, skip: &Tensor) -> Result<Tensor, String> {
    if x.device() != Device::Cpu || !matches!(x.kind(), Kind::Float | Kind::BFloat16) {
        return Err("upsample2x_cat runs on the CPU in f32 or bf16".into());
    }
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: the tensors outlive the call; the shim returns a new owned tensor or an error
    // string allocated with malloc, never both, and catches every C++ exception.
    unsafe {
        let out = cd_upsample2x_cat(x.as_ptr(), skip.as_ptr(), &mut err);
        shim_result(out, err, "upsample2x_cat failed")
    }
}

/// [`fused`] where it runs (`fuse` and its conditions), else [`unfused`].
pub fn upsample2x_cat(x: &Tensor, skip: &Tensor, fuse: bool) -> Tensor {
    if fuse {
        if let Ok(y) = fused(x, skip) {
            return y;
        }
    }
    unfused(x, skip)
}
