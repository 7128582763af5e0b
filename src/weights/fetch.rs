//! `weights fetch` (work in progress).
