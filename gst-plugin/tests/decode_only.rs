//! DECODE_ONLY buffers (frames not to be shown: a job segment's warm-up, the frames its
//! lookahead reads past its end) in a real pipeline: they update the element's temporal state
//! without the network and leave as they came, flag included; every frame comes out, in
//! order with its timestamp, and the others are the frames a pass without the flag gives.

mod common;

use gst::prelude::*;

use common::{fixture, init, next_sample};

const W: usize = 32;
const H: usize = 24;

/// A still scene's noisy frame `seed` (RGB, rows without padding at this width).
fn frame(seed: usize) -> Vec<u8> {
    (0..W * H * 3)
        .map(|i| {
            let base = ((i * 37 + (i / 7) * 11) % 200) as i32 + 20;
            (base + ((i * 7 + seed * 13) % 9) as i32 - 4) as u8
        })
        .collect()
}

struct Out {
    data: Vec<u8>,
    pts: gst::ClockTime,
    decode_only: bool,
}

/// `appsrc ! clipdenoise ! appsink` on the frames `seeds` (timestamps 40 ms apart from
/// `first`), those `decode_only` says flagged DECODE_ONLY: what comes out, and `stats`.
fn run(
    seeds: std::ops::Range<usize>,
    lookahead: u32,
    decode_only: impl Fn(usize) -> bool,
) -> (Vec<Out>, gst::Structure) {
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width={W},height={H},\
         framerate=25/1,colorimetry=bt601 \
         ! clipdenoise name=d model=\"{}\" batch-size=1 precision=fp32 temporal=1 \
           lookahead={lookahead} temporal-origin=0 \
         ! appsink name=sink sync=false",
        fixture()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = common::child::<gst_app::AppSrc>(pipeline.upcast_ref(), "src");
    let sink = common::child::<gst_app::AppSink>(pipeline.upcast_ref(), "sink");
    pipeline.set_state(gst::State::Playing).unwrap();
    for i in seeds {
        let mut b = gst::Buffer::from_mut_slice(frame(i));
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(40 * i as u64));
            b.set_duration(gst::ClockTime::from_mseconds(40));
            if decode_only(i) {
                b.set_flags(gst::BufferFlags::DECODE_ONLY);
            }
        }
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let mut out = Vec::new();
    while let Some(sample) = next_sample(&sink) {
        let b = sample.buffer().unwrap();
        out.push(Out {
            data: b.map_readable().unwrap().to_vec(),
            pts: b.pts().unwrap(),
            decode_only: b.flags().contains(gst::BufferFlags::DECODE_ONLY),
        });
    }
    let d = pipeline.by_name("d").unwrap();
    let stats = d.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    (out, stats)
}

/// Frames that went through the network: batches times their mean size.
fn network_frames(s: &gst::Structure) -> u64 {
    let batches = s.get::<u64>("batches").unwrap() as f64;
    (batches * s.get::<f64>("mean-batch-size").unwrap()).round() as u64
}

#[test]
fn decode_only_buffers_skip_the_network_and_keep_the_temporal_state() {
    init();
    let n = 22;
    // A warm-up across a restart of the staggered recursions (every 16 frames), two after.
    let (warm, tail) = (18, 2);
    let marked = |i: usize| i < warm || i >= n - tail;
    for lookahead in [0u32, 2] {
        let (all, s) = run(0..n, lookahead, |_| false);
        assert_eq!(all.len(), n);
        assert_eq!(s.get::<u64>("frames-decode-only").unwrap(), 0, "{s}");
        assert_eq!(network_frames(&s), n as u64, "{s}");

        let (out, s) = run(0..n, lookahead, marked);
        assert_eq!(
            out.len(),
            n,
            "lookahead {lookahead}: frames in = frames out"
        );
        let stat = |k: &str| s.get::<u64>(k).unwrap();
        assert_eq!(stat("frames-decode-only"), (warm + tail) as u64, "{s}");
        // The network ran on the frames not flagged, only.
        assert_eq!(network_frames(&s), (n - warm - tail) as u64, "{s}");
        assert_eq!(
            (stat("frames-out"), stat("frames-dropped")),
            (n as u64, 0),
            "{s}"
        );
        for (i, (o, a)) in out.iter().zip(&all).enumerate() {
            let what = format!("lookahead {lookahead}, frame {i}");
            assert_eq!(
                o.pts,
                gst::ClockTime::from_mseconds(40 * i as u64),
                "{what}"
            );
            assert_eq!(o.decode_only, marked(i), "{what}: its flag");
            if marked(i) {
                assert!(o.data == frame(i), "{what}: a decode-only frame changed");
            } else {
                assert!(o.data == a.data, "{what}: not the unflagged pass's frame");
            }
        }
    }
    // The control: frame 18 without the frames before it is another frame (the state the
    // decode-only frames left is what made it equal).
    let (alone, _) = run(warm..n, 0, |_| false);
    let (all, _) = run(0..n, 0, |_| false);
    assert!(
        alone[0].data != all[warm].data,
        "the earlier frames changed nothing"
    );
}
