//! The kernel head's passes on the CPU in f32 for inference (`kernel_apply.cpp`): one pass over
//! channels-last memory per dilation, softmax and weighted sum per pixel, instead of the
//! reference's whole-tensor softmax and 9 strided multiply-adds per pass
//! ([`super::head::apply_kernels`], which training and the other devices run). Equal to the
//! reference within float rounding (tests in head.rs); [`super::head::Output`] takes it where
//! it applies.

use std::ffi::{c_char, c_int};

use tch::{Device, Kind, Tensor};

use super::fused::shim_result;

unsafe extern "C" {
    fn cd_apply_kernels_available() -> c_int;
    fn cd_apply_kernels(
        logits: *const torch_sys::C_tensor,
        image: *const torch_sys::C_tensor,
        dilations: *const i64,
        passes: i64,
        err: *mut *mut c_char,
    ) -> *mut torch_sys::C_tensor;
}

/// Whether this CPU runs the kernel (AVX-512).
pub fn available() -> bool {
    // SAFETY: no arguments.
    unsafe { cd_apply_kernels_available() != 0 }
}

/// The passes of `dilations` with `logits` (N, passes * 27, H, W) on `image` (N, 3, H, W), both
/// on the CPU (any kind and layout: taken to f32 channels-last); returns f32 (N, 3, H, W). An
/// error (a shape or device the kernel refuses) leaves the caller to run the reference.
pub fn forward(logits: &Tensor, image: &Tensor, dilations: &[i64]) -> Result<Tensor, String> {
    if logits.device() != Device::Cpu || image.device() != Device::Cpu {
        return Err("apply_kernels: CPU tensors only".into());
    }
    let nhwc = |t: &Tensor| t.to_kind(Kind::Float).permute([0, 2, 3, 1]).contiguous();
    let (l, x) = (nhwc(logits), nhwc(image));
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: the tensors and `dilations` outlive the call; the shim returns a new owned
    // tensor or an error string allocated with malloc, never both, and catches every C++
    // exception.
    let out = unsafe {
        let out = cd_apply_kernels(
            l.as_ptr(),
            x.as_ptr(),
            dilations.as_ptr(),
            dilations.len() as i64,
            &mut err,
        );
        shim_result(out, err, "apply_kernels failed")?
    };
    Ok(out.permute([0, 3, 1, 2]).contiguous())
}
