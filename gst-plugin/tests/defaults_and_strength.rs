//! Defaults that fit the device and `strength` (issue 14, "Speed in a plain pipeline"):
//! `batch-size` and `max-pixels` default to automatic choices reported in `stats`;
//! `strength=0` passes buffers through untouched without running the model; `strength`
//! follows a GstController control source frame by frame.

mod common;

use std::os::raw::{c_char, c_int};

use gst::glib::translate::{IntoGlib, ToGlibPtr};
use gst::prelude::*;
use gst_check::Harness;

use clipdenoise::inference::auto_max_pixels;
use clipdenoise::weights::ModelSource;
use common::{fixture, init};

fn element(props: &[(&str, &dyn ToValue)]) -> gst::Element {
    let el = gst::ElementFactory::make("clipdenoise")
        .property("model", fixture())
        .build()
        .unwrap();
    for (k, v) in props {
        el.set_property_from_value(k, &v.to_value());
    }
    el
}

fn stats(el: &gst::Element) -> gst::Structure {
    el.property::<gst::Structure>("stats")
}

fn i420_caps(w: i32, h: i32) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", w)
        .field("height", h)
        .field("framerate", gst::Fraction::new(25, 1))
        .build()
}

/// Deterministic noisy-looking bytes.
fn noise(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 131 + seed * 71 + (i * i) % 37) % 251) as u8)
        .collect()
}

/// `n` I420 frames, 40 ms apart, through a harness around `el`; what came out.
fn run(el: &gst::Element, n: u64) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut h = Harness::with_element(el, Some("sink"), Some("src"));
    h.play();
    h.set_src_caps(i420_caps(48, 32));
    let size = 48 * 32 * 3 / 2;
    let mut ins = Vec::new();
    for i in 0..n {
        let data = noise(size, i as usize);
        let mut b = gst::Buffer::from_mut_slice(data.clone());
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(40 * i));
        ins.push(data);
        assert_eq!(h.push(b), Ok(gst::FlowSuccess::Ok));
    }
    h.push_event(gst::event::Eos::new());
    let outs = (0..n)
        .map(|_| h.pull().unwrap().map_readable().unwrap().to_vec())
        .collect();
    (ins, outs)
}

#[test]
fn batch_size_and_max_pixels_default_to_the_devices_choice() {
    init();
    let el = element(&[("device", &"cpu")]);
    assert_eq!(el.property::<u32>("batch-size"), 0, "auto by default");
    assert_eq!(el.property::<u64>("max-pixels"), 0, "auto by default");
    el.set_state(gst::State::Ready).unwrap();
    let s = stats(&el);
    assert_eq!(s.get::<u64>("batch-size").unwrap(), 1, "batch 1 on the CPU");
    let config = ModelSource::resolve(&fixture())
        .unwrap()
        .load(tch::Device::Cpu)
        .unwrap()
        .model
        .config;
    let budget = auto_max_pixels(&config, tch::Device::Cpu, 1);
    assert_eq!(s.get::<u64>("max-pixels").unwrap(), budget as u64);
    el.set_state(gst::State::Null).unwrap();

    // Set by the user: kept as set.
    let el = element(&[
        ("device", &"cpu"),
        ("batch-size", &3u32),
        ("max-pixels", &5000u64),
    ]);
    el.set_state(gst::State::Ready).unwrap();
    let s = stats(&el);
    assert_eq!(s.get::<u64>("batch-size").unwrap(), 3);
    assert_eq!(s.get::<u64>("max-pixels").unwrap(), 5000);
    el.set_state(gst::State::Null).unwrap();
}

#[test]
fn the_cpu_budget_tiles_4k_and_bounds_its_memory() {
    // The shipped model (width 16): 1080p runs whole, a 4K frame as tiles whose activations
    // stay within the CPU's budget (about 2 GB for the process in all).
    let default = ModelSource::resolve("")
        .unwrap()
        .load(tch::Device::Cpu)
        .unwrap();
    let budget = auto_max_pixels(&default.model.config, tch::Device::Cpu, 1);
    assert!(budget >= 1920 * 1080, "{budget}: 1080p would be tiled");
    assert!(budget < 3840 * 2160, "{budget}: 4K would run whole");
    let bytes_per_pixel = 36 * default.model.config.width;
    assert!(budget * bytes_per_pixel <= 1_250_000_000);
    // Batches share the budget; a GPU gets more.
    assert!(auto_max_pixels(&default.model.config, tch::Device::Cpu, 4) <= budget / 4 + 1);
    assert!(auto_max_pixels(&default.model.config, tch::Device::Cuda(0), 1) > budget);
}

#[test]
fn strength_zero_passes_buffers_through_untouched_without_the_model() {
    init();
    let el = element(&[("strength", &0.0f64)]);
    let (ins, outs) = run(&el, 6);
    assert_eq!(ins, outs, "strength=0 changed bytes");
    let s = stats(&el);
    assert_eq!(s.get::<u64>("frames-passed-through").unwrap(), 6);
    assert_eq!(s.get::<u64>("batches").unwrap(), 0, "the model ran");

    // The same frames at strength 1 do change.
    let el = element(&[]);
    let (ins, outs) = run(&el, 2);
    assert_ne!(ins, outs);
    assert_eq!(stats(&el).get::<u64>("batches").unwrap(), 2);
}

// libgstcontroller's C API (its Rust bindings are not among this workspace's dependencies).
#[link(name = "gstcontroller-1.0")]
extern "C" {
    fn gst_interpolation_control_source_new() -> *mut gst::ffi::GstControlSource;
    fn gst_direct_control_binding_new(
        object: *mut gst::ffi::GstObject,
        property_name: *const c_char,
        cs: *mut gst::ffi::GstControlSource,
    ) -> *mut gst::ffi::GstControlBinding;
    fn gst_timed_value_control_source_set(
        cs: *mut gst::ffi::GstControlSource,
        timestamp: gst::ffi::GstClockTime,
        value: f64,
    ) -> c_int;
}

/// Bind `strength` of `el` to an interpolation control source through `points` (ms, value).
fn control_strength(el: &gst::Element, points: &[(u64, f64)]) {
    // SAFETY: plain libgstcontroller calls on live objects; the binding takes its own
    // reference to the source, and `add_control_binding` sinks the floating binding.
    unsafe {
        let cs = gst_interpolation_control_source_new();
        assert!(!cs.is_null());
        for &(ms, v) in points {
            let t = gst::ClockTime::from_mseconds(ms).into_glib();
            assert_ne!(gst_timed_value_control_source_set(cs, t, v), 0);
        }
        let name = std::ffi::CString::new("strength").unwrap();
        let obj: *mut gst::ffi::GstObject = el.upcast_ref::<gst::Object>().to_glib_none().0;
        let binding = gst_direct_control_binding_new(obj, name.as_ptr(), cs);
        assert!(!binding.is_null(), "strength is not controllable");
        assert_ne!(gst::ffi::gst_object_add_control_binding(obj, binding), 0);
        gst::glib::gobject_ffi::g_object_unref(cs as *mut _);
    }
}

#[test]
fn strength_follows_a_control_source_frame_by_frame() {
    init();
    let el = element(&[("batch-size", &1u32), ("max-latency", &60_000u32)]);
    // 0 until 200 ms, 1 from 240 ms: frames 0-5 pass untouched, frames 6-9 are denoised.
    control_strength(&el, &[(0, 0.0), (200, 0.0), (240, 1.0), (10_000, 1.0)]);
    let (ins, outs) = run(&el, 10);
    for i in 0..6 {
        assert_eq!(ins[i], outs[i], "frame {i} at strength 0");
    }
    for i in 6..10 {
        assert_ne!(ins[i], outs[i], "frame {i} at strength 1");
    }
    let s = stats(&el);
    assert_eq!(s.get::<u64>("frames-passed-through").unwrap(), 6);
    assert_eq!(s.get::<u64>("frames-out").unwrap(), 4);
}

#[test]
fn coarse_grain_runs_the_pixel_shuffled_pass_first() {
    init();
    let temporal_off: &dyn ToValue = &0.0f64;
    let (ins, plain) = run(&element(&[("temporal", temporal_off)]), 2);
    let coarse_el = element(&[("temporal", temporal_off), ("coarse-grain", &true)]);
    let (_, coarse) = run(&coarse_el, 2);
    for (i, (p, c)) in plain.iter().zip(&coarse).enumerate() {
        assert_eq!(c.len(), ins[i].len(), "frame {i}: size");
        assert_ne!(p, c, "frame {i}: coarse-grain changed nothing");
        assert_ne!(c, &ins[i], "frame {i}: not denoised");
    }
    assert_eq!(stats(&coarse_el).get::<u64>("frames-out").unwrap(), 2);
}
