//! EOS exactly once downstream, also after downstream stopped the stream.
//!
//! Normally EOS travels through the engine behind the frames and the src pad task pushes it.
//! When a push returns EOS (`pngenc snapshot=true`, `identity eos-after=N`) or another flow
//! error, the task stops and the engine flushes, which would discard an EOS already queued or
//! make the sink pad refuse the one upstream sends in answer to the flow it got back. Like any
//! filter, the element must still forward that EOS: whichever side learns last that both
//! things happened (EOS received, task stopped) pushes it, once.

use std::sync::atomic::{AtomicBool, Ordering};

/// The three facts, each set once per stream; reset on a flush and on a new stream.
#[derive(Debug, Default)]
pub(super) struct EosGate {
    /// The sink pad received EOS.
    received: AtomicBool,
    /// The src pad task stopped on a flow error or EOS from downstream.
    stopped: AtomicBool,
    /// EOS was pushed downstream.
    forwarded: AtomicBool,
}

impl EosGate {
    /// The sink pad got EOS: true when the task already stopped, so the caller must push EOS
    /// itself (then call [`EosGate::take_forward`]).
    pub(super) fn on_received(&self) -> bool {
        self.received.store(true, Ordering::SeqCst);
        self.stopped.load(Ordering::SeqCst)
    }

    /// The task stopped on a downstream flow: true when EOS already arrived (it may have been
    /// discarded with the queue), so the caller must push EOS itself.
    pub(super) fn on_stopped(&self) -> bool {
        self.stopped.store(true, Ordering::SeqCst);
        self.received.load(Ordering::SeqCst)
    }

    /// Whether the task stopped on a downstream flow.
    pub(super) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Claim the one EOS push: true for the first caller only.
    pub(super) fn take_forward(&self) -> bool {
        !self.forwarded.swap(true, Ordering::SeqCst)
    }

    /// A new stream (flush stop, READY->PAUSED).
    pub(super) fn reset(&self) {
        self.received.store(false, Ordering::SeqCst);
        self.stopped.store(false, Ordering::SeqCst);
        self.forwarded.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::EosGate;

    #[test]
    fn eos_is_forwarded_once_whatever_the_order() {
        // EOS first, then the task stops: the task forwards.
        let g = EosGate::default();
        assert!(!g.on_received());
        assert!(g.on_stopped());
        assert!(g.take_forward());
        assert!(!g.take_forward());
        // The task stops first: the sink pad forwards.
        let g = EosGate::default();
        assert!(!g.on_stopped());
        assert!(g.on_received());
        assert!(g.take_forward());
        // The task pushed EOS normally: nobody pushes a second one.
        g.reset();
        assert!(g.take_forward());
        assert!(!g.on_received());
        assert!(g.on_stopped());
        assert!(!g.take_forward());
    }
}
