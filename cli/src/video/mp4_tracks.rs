//! The tracks of an MP4/MOV input as its box tree gives them, for what GStreamer 1.22's MP4
//! reader does not tell: timecode tracks (`tmcd`, which it does not expose) and how many
//! packets an audio track holds before its edit list trims them. Read defensively: anything
//! that is not a well-formed MP4/MOV gives no tracks, never an error.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The most of `moov` read into memory (it holds the sample tables, not the media).
const MAX_MOOV: u64 = 256 << 20;

/// One `trak`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Track {
    /// `tkhd`'s track id (GStreamer's stream id ends with it: ".../002").
    pub id: u32,
    /// `hdlr`'s handler type: "vide", "soun", "tmcd", "text", "sbtl", ...
    pub handler: String,
    /// `mdhd`'s timescale.
    pub timescale: u32,
    /// `stsz`'s sample count (packets).
    pub samples: u32,
    /// The first edit's media time (in `timescale` units), when an edit list skips the start.
    pub media_time: Option<u64>,
    /// A timecode track's first timecode.
    pub timecode: Option<Timecode>,
}

/// The first sample of a `tmcd` track with its sample description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timecode {
    /// The frame number the sample holds.
    pub frame: u32,
    /// Whole frames per second (30 for 29.97).
    pub fps: u32,
    /// The frame rate as a fraction: timescale / frame duration (30000/1001).
    pub rate: (u32, u32),
    pub drop_frame: bool,
}

impl Timecode {
    /// Hours, minutes, seconds and frames (drop-frame: the first two frame numbers of each
    /// minute but every tenth are skipped, per 30 frames).
    pub fn fields(&self) -> Option<(u32, u32, u32, u32)> {
        if self.fps == 0 {
            return None;
        }
        let mut n = u64::from(self.frame);
        if self.drop_frame {
            let drop = u64::from(self.fps / 15);
            let per_10min = u64::from(self.fps) * 600 - 9 * drop;
            let per_min = u64::from(self.fps) * 60 - drop;
            let (tens, rest) = (n / per_10min, n % per_10min);
            n += 9 * drop * tens;
            if rest > drop {
                n += drop * ((rest - drop) / per_min);
            }
        }
        let fps = u64::from(self.fps);
        let (ff, secs) = (n % fps, n / fps);
        Some((
            (secs / 3600 % 24) as u32,
            (secs / 60 % 60) as u32,
            (secs % 60) as u32,
            ff as u32,
        ))
    }

    /// "01:00:00:00" (';' before the frames when drop-frame).
    pub fn text(&self) -> String {
        match self.fields() {
            Some((h, m, s, f)) => {
                let sep = if self.drop_frame { ';' } else { ':' };
                format!("{h:02}:{m:02}:{s:02}{sep}{f:02}")
            }
            None => format!("frame {}", self.frame),
        }
    }
}

/// The tracks of `path`; empty when it is not an MP4/MOV file (or not a readable one).
pub fn read(path: &Path) -> Vec<Track> {
    let Ok(mut f) = File::open(path) else {
        return Vec::new();
    };
    let Some(moov) = find_moov(&mut f) else {
        return Vec::new();
    };
    children(&moov)
        .filter(|(t, _)| t == b"trak")
        .filter_map(|(_, body)| track(body, &mut f))
        .collect()
}

/// The body of the top-level `moov` box, found by walking the top-level boxes.
fn find_moov(f: &mut File) -> Option<Vec<u8>> {
    let len = f.metadata().ok()?.len();
    let mut pos = 0u64;
    let mut first = true;
    while pos + 8 <= len {
        f.seek(SeekFrom::Start(pos)).ok()?;
        let mut h = [0u8; 16];
        f.read_exact(&mut h[..8]).ok()?;
        let kind: [u8; 4] = h[4..8].try_into().ok()?;
        // Not an ISO/QuickTime file: its first box is none of these.
        if first
            && !matches!(
                &kind,
                b"ftyp" | b"moov" | b"mdat" | b"wide" | b"free" | b"skip"
            )
        {
            return None;
        }
        first = false;
        let (size, header) = match u32::from_be_bytes(h[..4].try_into().ok()?) {
            1 => {
                f.read_exact(&mut h[8..16]).ok()?;
                (u64::from_be_bytes(h[8..16].try_into().ok()?), 16)
            }
            0 => (len - pos, 8),
            s => (u64::from(s), 8),
        };
        if size < header || pos + size > len {
            return None;
        }
        if &kind == b"moov" {
            if size - header > MAX_MOOV {
                return None;
            }
            let mut body = vec![0u8; (size - header) as usize];
            f.read_exact(&mut body).ok()?;
            return Some(body);
        }
        pos += size;
    }
    None
}

/// The boxes inside `data`: (type, body); stops at the first malformed one.
fn children(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 8 {
            return None;
        }
        let size = u32::from_be_bytes(rest[..4].try_into().ok()?) as u64;
        let kind: [u8; 4] = rest[4..8].try_into().ok()?;
        let (size, header) = match size {
            1 if rest.len() >= 16 => (u64::from_be_bytes(rest[8..16].try_into().ok()?), 16),
            0 => (rest.len() as u64, 8),
            1 => return None,
            s => (s, 8),
        };
        if size < header || size > rest.len() as u64 {
            return None;
        }
        let body = &rest[header as usize..size as usize];
        rest = &rest[size as usize..];
        Some((kind, body))
    })
}

/// The body of the first child of type `kind` down `path` from `data`.
fn child<'a>(data: &'a [u8], path: &[&[u8; 4]]) -> Option<&'a [u8]> {
    let (first, rest) = path.split_first()?;
    let (_, body) = children(data).find(|(t, _)| t == *first)?;
    if rest.is_empty() {
        Some(body)
    } else {
        child(body, rest)
    }
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

fn track(trak: &[u8], f: &mut File) -> Option<Track> {
    let tkhd = child(trak, &[b"tkhd"])?;
    let id = u32_at(tkhd, if tkhd.first() == Some(&1) { 20 } else { 12 })?;
    let mdhd = child(trak, &[b"mdia", b"mdhd"])?;
    let timescale = u32_at(mdhd, if mdhd.first() == Some(&1) { 20 } else { 12 })?;
    let hdlr = child(trak, &[b"mdia", b"hdlr"])?;
    let handler = String::from_utf8_lossy(hdlr.get(8..12)?).into_owned();
    let stbl = child(trak, &[b"mdia", b"minf", b"stbl"])?;
    let samples = child(stbl, &[b"stsz"])
        .and_then(|s| u32_at(s, 8))
        .unwrap_or(0);
    let media_time = child(trak, &[b"edts", b"elst"]).and_then(first_media_time);
    let timecode = match handler.as_str() {
        "tmcd" => first_timecode(stbl, f),
        _ => None,
    };
    Some(Track {
        id,
        handler,
        timescale,
        samples,
        media_time,
        timecode,
    })
}

/// The media time of the first edit that shows media (an empty edit, -1, only delays it).
fn first_media_time(elst: &[u8]) -> Option<u64> {
    let v1 = elst.first() == Some(&1);
    let n = u32_at(elst, 4)? as usize;
    let entry = if v1 { 20 } else { 12 };
    (0..n.min(1024)).find_map(|i| {
        let at = 8 + i * entry;
        let t = if v1 {
            u64_at(elst, at + 8)? as i64
        } else {
            u32_at(elst, at + 4)? as i32 as i64
        };
        (t >= 0).then_some(t as u64)
    })
}

/// A `tmcd` track's first timecode: its sample description (flags, rate, frames per second)
/// and its first sample (a frame number), read from the file.
fn first_timecode(stbl: &[u8], f: &mut File) -> Option<Timecode> {
    let stsd = child(stbl, &[b"stsd"])?;
    // Full box header (4), entry count (4), then the first sample entry: size, 'tmcd',
    // 6 reserved, data reference index (2), 4 reserved, flags (4), timescale (4),
    // frame duration (4), frames per second (1).
    let entry = stsd.get(8..)?;
    if entry.get(4..8)? != b"tmcd" {
        return None;
    }
    let flags = u32_at(entry, 20)?;
    let rate = (u32_at(entry, 24)?, u32_at(entry, 28)?);
    let fps = u32::from(*entry.get(32)?);
    let offset = match child(stbl, &[b"stco"]) {
        Some(stco) => u64::from(u32_at(stco, 8)?),
        None => u64_at(child(stbl, &[b"co64"])?, 8)?,
    };
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut b = [0u8; 4];
    f.read_exact(&mut b).ok()?;
    Some(Timecode {
        frame: u32::from_be_bytes(b),
        fps,
        rate,
        drop_frame: flags & 1 == 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timecodes_from_frame_numbers() {
        let tc = |frame, fps, drop_frame| {
            Timecode {
                frame,
                fps,
                rate: (fps, 1),
                drop_frame,
            }
            .text()
        };
        assert_eq!(tc(90_000, 25, false), "01:00:00:00");
        assert_eq!(tc(90_001, 25, false), "01:00:00:01");
        // 29.97 drop-frame: frame 1800 is 00:01:00;02 (00:01:00;00 and ;01 are skipped).
        assert_eq!(tc(1800, 30, true), "00:01:00;02");
        assert_eq!(tc(17982, 30, true), "00:10:00;00");
        assert_eq!(tc(107_892, 30, true), "01:00:00;00");
        assert_eq!(tc(5, 0, false), "frame 5");
    }

    #[test]
    fn malformed_boxes_give_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [
            ("empty", &b""[..]),
            ("text", &b"hello, not a video at all"[..]),
            // A box claiming more than the file holds.
            ("long", &[0, 0, 0, 200, b'f', b't', b'y', b'p', 0, 0][..]),
            // moov whose child claims 4 GB.
            (
                "moov",
                &[
                    0, 0, 0, 16, b'm', b'o', b'o', b'v', 255, 255, 255, 255, b't', b'r', b'a', b'k',
                ][..],
            ),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            assert_eq!(read(&p), Vec::new(), "{name}");
        }
    }
}
