//! Ending the job before the input ends (Ctrl-C, or the end of `--to`/`--duration`): EOS into
//! the video branch first, so the frames inside the element are finished and no new one
//! enters; then the audio is cut where the last frame ends and its branches get EOS too. The
//! mux then finalises the file as at the end of the input.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use gst::prelude::*;

use super::state::Shared;

/// End every branch, once (later calls do nothing). False when there is no video branch yet
/// (nothing to finish).
pub fn end_streams(shared: &Arc<Shared>) -> bool {
    let Some(video) = shared.video_head.lock().unwrap().clone() else {
        return false;
    };
    if shared.stopping.swap(true, Ordering::SeqCst) {
        return true;
    }
    let shared = shared.clone();
    // Sending blocks while a streaming thread holds the pad: not on the caller's thread (the
    // main loop, or the video's own streaming thread).
    std::thread::spawn(move || {
        video.send_event(gst::event::Eos::new());
        // No frame enters after the EOS: the audio ends where the video does.
        *shared.audio_cut.lock().unwrap() = *shared.video_end.lock().unwrap();
        let audio = shared.heads.lock().unwrap().clone();
        for p in audio {
            p.send_event(gst::event::Eos::new());
        }
    });
    true
}
