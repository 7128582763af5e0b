//! glibc malloc tuned for a model in the process, at plugin load.
//!
//! With glibc's defaults every activation above the mmap threshold (at most 32 MiB) is mapped
//! fresh and unmapped again on each frame, and freed heap tops are trimmed: each frame then
//! pays page faults for every large tensor, which on small VMs cost more than the network
//! itself (issue 14: 380-435 ms per 640x360 frame under gst-launch, 80-91 in the CLI, which
//! runs on jemalloc with pages retained). At load the plugin turns mmap off for malloc and
//! stops trimming, so freed activations stay mapped and the next frame reuses them, as the
//! CLI's jemalloc does. The cost: memory freed by the process is kept for reuse instead of
//! going back to the system. `CLIPDENOISE_KEEP_MALLOC=1` leaves malloc as it is.

/// Set the thresholds (once per process; a no-op outside glibc). Returns whether they were set.
pub fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::raw::c_int;
        use std::sync::OnceLock;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_MAX: c_int = -4;
        static DONE: OnceLock<bool> = OnceLock::new();
        *DONE.get_or_init(|| {
            if std::env::var_os("CLIPDENOISE_KEEP_MALLOC").is_some_and(|v| v != "0") {
                return false;
            }
            // SAFETY: mallopt only changes allocator parameters; any thread may call it.
            unsafe { mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, c_int::MAX) == 1 }
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}
