//! The GStreamer plugin file `libgstclipdenoise.so`: a loader for the element library.
//!
//! libtorch runs its layers on libgomp (OpenMP) threads, and libgomp reads `OMP_WAIT_POLICY`
//! once, when it is loaded. Unless the policy is PASSIVE its idle threads spin between layers,
//! taking the cores the decoder, `videoconvert` and the encoder of the same pipeline need
//! (issue 14: under a plain `gst-launch-1.0` the element ran at 0.65x the CLI, which sets
//! PASSIVE for itself). A plugin that links libtorch is too late to choose: libgomp is loaded
//! with it. So this file links GStreamer only; its `plugin_init` sets `OMP_WAIT_POLICY=PASSIVE`
//! (unless the user set a policy: theirs is kept), then loads the element library
//! `libgstclipdenoise_element.so` from its own folder and lets it register the element.
//! If another library of the process loaded libgomp earlier, the policy stays what it was.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};

use gst::glib;
use gst::glib::translate::ToGlibPtr;

/// The element library's file name, in the loader's folder.
pub const ELEMENT_LIBRARY: &str = "libgstclipdenoise_element.so";
/// The function the element library exports to register the element on a plugin.
const ELEMENT_INIT: &CStr = c"clipdenoise_element_init";

#[repr(C)]
struct DlInfo {
    fname: *const c_char,
    fbase: *mut c_void,
    sname: *const c_char,
    saddr: *mut c_void,
}

extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *const c_char;
    fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
}
const RTLD_NOW: c_int = 2;

type ElementInit = unsafe extern "C" fn(*mut gst::ffi::GstPlugin) -> glib::ffi::gboolean;

/// The folder this library was loaded from.
fn own_folder() -> Option<PathBuf> {
    let mut info = DlInfo {
        fname: std::ptr::null(),
        fbase: std::ptr::null_mut(),
        sname: std::ptr::null(),
        saddr: std::ptr::null_mut(),
    };
    // SAFETY: dladdr only reads the loader's tables; `info` outlives the call.
    let found = unsafe { dladdr(own_folder as *const c_void, &mut info) };
    if found == 0 || info.fname.is_null() {
        return None;
    }
    // SAFETY: dladdr gave a NUL-terminated path that lives as long as the library.
    let file = unsafe { CStr::from_ptr(info.fname) }
        .to_string_lossy()
        .into_owned();
    Path::new(&file).parent().map(Path::to_path_buf)
}

fn last_dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated message owned by libc.
    let e = unsafe { dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null, NUL-terminated (above).
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// Passive OpenMP waiting unless the user chose a policy.
pub fn choose_wait_policy() {
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        std::env::set_var("OMP_WAIT_POLICY", "PASSIVE");
    }
}

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    choose_wait_policy();
    let folder =
        own_folder().ok_or_else(|| glib::bool_error!("cannot find the plugin's folder"))?;
    let path = folder.join(ELEMENT_LIBRARY);
    let c_path = CString::new(path.to_string_lossy().as_bytes())
        .map_err(|_| glib::bool_error!("bad element library path {}", path.display()))?;
    // SAFETY: a plain dlopen of a path; the handle is kept for the life of the process (the
    // element's types stay registered), as GStreamer keeps plugins loaded.
    let handle = unsafe { dlopen(c_path.as_ptr(), RTLD_NOW) };
    if handle.is_null() {
        return Err(glib::bool_error!(
            "cannot load the element library {}: {}",
            path.display(),
            last_dl_error()
        ));
    }
    // SAFETY: looking a symbol up in the handle opened above.
    let sym = unsafe { dlsym(handle, ELEMENT_INIT.as_ptr()) };
    if sym.is_null() {
        return Err(glib::bool_error!(
            "{} has no {:?}: {}",
            path.display(),
            ELEMENT_INIT,
            last_dl_error()
        ));
    }
    // SAFETY: the element library exports this symbol with exactly this signature.
    let init: ElementInit = unsafe { std::mem::transmute::<*mut c_void, ElementInit>(sym) };
    // SAFETY: the plugin pointer is valid for the call; the callee borrows it.
    let ok = unsafe { init(plugin.to_glib_none().0) };
    if ok == glib::ffi::GFALSE {
        return Err(glib::bool_error!(
            "the element library could not register clipdenoise"
        ));
    }
    Ok(())
}

include!("../../src/plugin_desc.rs");
clipdenoise_plugin_define!(plugin_init);
