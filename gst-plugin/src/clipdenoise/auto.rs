//! Defaults that fit the device: what `batch-size=0`, `max-pixels=0` and the intra-op thread
//! count become when the engine starts (issue 14, "Speed in a plain pipeline").

use clipdenoise::inference::Options;

/// Frames per batch for `batch-size=0`. On the CPU a batch of 4 is no faster than 1 but has
/// about 3x the latency and 1.8x the memory; a GPU needs batches to be busy.
pub(super) fn batch_size(setting: u32, device: tch::Device) -> usize {
    match setting {
        0 if device.is_cuda() => 4,
        0 => 1,
        n => n as usize,
    }
}

/// The engine's `max_pixels` for the property's value: 0 is the automatic budget, chosen from
/// the model and the device when the model is loaded (the core's `auto_max_pixels`).
pub(super) fn max_pixels(setting: u64) -> i64 {
    match setting {
        0 => Options::AUTO_PIXELS,
        n => i64::try_from(n).unwrap_or(i64::MAX),
    }
}

/// libtorch's intra-op threads for the model's worker (0: libtorch's default, one per core).
///
/// libgomp reads `OMP_WAIT_POLICY` when it is loaded, and unless it is PASSIVE its idle threads
/// spin between the network's layers. In a pipeline, the decoder, `videoconvert` and the
/// encoder need those cores: spinning threads starve them (issue 14: 2.6x slower than the CLI,
/// which sets PASSIVE for itself). The plugin's loader (gst-plugin/loader) sets PASSIVE before
/// libtorch loads unless the user chose a policy; when the policy is not PASSIVE (the user's
/// choice, or libgomp was in the process before the plugin), the worker runs on half the
/// cores, leaving the rest to the pipeline.
pub(super) fn cpu_threads(device: tch::Device, wait_policy: Option<&str>) -> usize {
    if device.is_cuda() || wait_policy.is_some_and(|p| p.trim().eq_ignore_ascii_case("passive")) {
        return 0;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_choices_follow_the_device() {
        let cuda = tch::Device::Cuda(0);
        assert_eq!(batch_size(0, tch::Device::Cpu), 1);
        assert_eq!(batch_size(0, cuda), 4);
        assert_eq!(batch_size(3, tch::Device::Cpu), 3);
        assert_eq!(max_pixels(0), Options::AUTO_PIXELS);
        assert_eq!(max_pixels(5000), 5000);
        assert_eq!(max_pixels(u64::MAX), i64::MAX);
        assert_eq!(cpu_threads(tch::Device::Cpu, Some("PASSIVE")), 0);
        assert_eq!(cpu_threads(cuda, None), 0);
        let spinning = cpu_threads(tch::Device::Cpu, None);
        assert!(spinning >= 1);
        let cores = std::thread::available_parallelism().unwrap().get();
        assert!(spinning <= cores.div_ceil(2));
    }
}
