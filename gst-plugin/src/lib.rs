//! GStreamer plugin `clipdenoise` (element in a later change).
