//! GStreamer plugin `clipdenoise`: the CLIPDenoising network (CVPR 2024) as a video filter.
//!
//! Built as a cdylib (`libgstclipdenoise_element.so`), which the plugin file GStreamer loads
//! (`libgstclipdenoise.so`, from `gst-plugin/loader`: it chooses libgomp's wait policy before
//! libtorch loads) loads in turn and registers through [`clipdenoise_element_init`]; and as an
//! rlib, through which the tests and the `clipdenoise` CLI register the element in-process with
//! `gstclipdenoise_element::plugin_register_static()`. The element is in [`clipdenoise`].

use gst::glib;
use gst::glib::translate::from_glib_borrow;

mod clipdenoise;
pub mod frames;
pub mod malloc;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    malloc::tune();
    clipdenoise::register(plugin)
}

/// Register the element on `plugin` (the loader's): what `libgstclipdenoise.so` calls once it
/// has loaded this library. Returns false, after logging why, if registration failed.
///
/// # Safety
/// `plugin` must be a valid `GstPlugin` for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn clipdenoise_element_init(
    plugin: *mut gst::ffi::GstPlugin,
) -> glib::ffi::gboolean {
    let plugin: glib::translate::Borrowed<gst::Plugin> = from_glib_borrow(plugin);
    let ran = std::panic::catch_unwind(|| plugin_init(&plugin));
    match ran {
        Ok(Ok(())) => glib::ffi::GTRUE,
        Ok(Err(e)) => {
            gst::error!(gst::CAT_PLUGIN_LOADING, "clipdenoise: {}", e);
            glib::ffi::GFALSE
        }
        Err(_) => glib::ffi::GFALSE,
    }
}

include!("plugin_desc.rs");
clipdenoise_plugin_define!(plugin_init);
