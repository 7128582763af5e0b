//! The job directory: `plan.json`, and under `segments/` each segment's file
//! (`seg-00003.mp4`), its done record (`seg-00003.done.json`: frames, size, SHA-256, the plan
//! it was made for) and its lock (`seg-00003.lock`, an advisory `flock` held while a worker
//! writes it, released by the kernel when the worker dies). Every file is written to a
//! temporary name and renamed into place, so a killed worker leaves nothing half-written:
//! a segment is done when its done record is there and its file matches it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::{JobPlan, Segment};
use super::{sha256_file, JobError};

/// The done record's format version.
const DONE_VERSION: u32 = 1;
const MAX_DONE_BYTES: u64 = 64 << 10;

/// What a finished segment wrote.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DoneRecord {
    pub version: u32,
    /// [`JobPlan::id`] of the plan it was made for.
    pub plan: String,
    pub index: usize,
    pub frames: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// A segment as the job directory shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentState {
    Done(DoneRecord),
    /// No done record (never run, running, or killed).
    Missing,
    /// A done record that does not match its file or the plan: the reason.
    Bad(String),
}

pub struct JobDir {
    pub root: PathBuf,
}

/// A held segment lock; dropping it releases the lock.
pub struct SegmentLock {
    _file: File,
}

impl JobDir {
    pub fn new(root: impl Into<PathBuf>) -> JobDir {
        JobDir { root: root.into() }
    }
    pub fn plan_path(&self) -> PathBuf {
        self.root.join("plan.json")
    }
    pub fn segments_dir(&self) -> PathBuf {
        self.root.join("segments")
    }
    fn stem(&self, index: usize) -> PathBuf {
        self.segments_dir().join(format!("seg-{index:05}"))
    }
    /// The segment's video file.
    pub fn segment_file(&self, plan: &JobPlan, index: usize) -> PathBuf {
        self.stem(index).with_extension(plan.settings.segment_ext())
    }
    pub fn done_path(&self, index: usize) -> PathBuf {
        self.stem(index).with_extension("done.json")
    }
    pub fn lock_path(&self, index: usize) -> PathBuf {
        self.stem(index).with_extension("lock")
    }

    /// Write the plan (and create `segments/`); an existing plan is an error unless `force`
    /// (then the old segments are removed: they belong to the old plan).
    pub fn create(&self, plan: &JobPlan, force: bool) -> Result<(), JobError> {
        let p = self.plan_path();
        if p.exists() && !force {
            return Err(JobError::io(
                &p,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a plan is already there (--force replaces it and its segments)",
                ),
            ));
        }
        let segs = self.segments_dir();
        if force && segs.exists() {
            std::fs::remove_dir_all(&segs).map_err(|e| JobError::io(&segs, e))?;
        }
        std::fs::create_dir_all(&segs).map_err(|e| JobError::io(&segs, e))?;
        write_atomic(&p, plan.to_json().as_bytes())
    }

    pub fn load_plan(&self) -> Result<JobPlan, JobError> {
        JobPlan::load(&self.plan_path())
    }

    /// Segment `index` of `plan`, or an error naming the valid range.
    pub fn segment<'a>(&self, plan: &'a JobPlan, index: u64) -> Result<&'a Segment, JobError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| plan.segments.get(i))
            .ok_or(JobError::NoSuchSegment {
                index,
                count: plan.segments.len(),
            })
    }

    /// Take segment `index`'s lock without waiting; another worker holding it is an error.
    pub fn lock(&self, index: usize) -> Result<SegmentLock, JobError> {
        let p = self.lock_path(index);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| JobError::io(&p, e))?;
        use std::os::fd::AsRawFd;
        // flock(2), not File::try_lock: the workspace's MSRV (1.85) predates it.
        // SAFETY: the descriptor is open for the whole call.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(SegmentLock { _file: f });
        }
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Err(JobError::Locked { index, lock: p });
        }
        Err(JobError::io(&p, e))
    }

    /// The segment's state; `verify` hashes its file (else size and record only).
    pub fn state(&self, plan: &JobPlan, index: usize, verify: bool) -> SegmentState {
        let done = self.done_path(index);
        let bytes = match std::fs::metadata(&done) {
            Err(_) => return SegmentState::Missing,
            Ok(m) if m.len() > MAX_DONE_BYTES => {
                return SegmentState::Bad("its done record is too large".into())
            }
            Ok(_) => match std::fs::read(&done) {
                Ok(b) => b,
                Err(e) => return SegmentState::Bad(format!("unreadable done record: {e}")),
            },
        };
        let rec: DoneRecord = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => return SegmentState::Bad(format!("unreadable done record: {e}")),
        };
        let want = plan.segments.get(index).map(|s| s.frames());
        if rec.version != DONE_VERSION || rec.index != index || Some(rec.frames) != want {
            return SegmentState::Bad("its done record does not fit this segment".into());
        }
        if rec.plan != plan.id() {
            return SegmentState::Bad(
                "it was made for another plan (the plan changed since)".into(),
            );
        }
        let file = self.segment_file(plan, index);
        match std::fs::metadata(&file) {
            Err(_) => return SegmentState::Bad("its file is missing".into()),
            Ok(m) if m.len() != rec.bytes => {
                return SegmentState::Bad(format!(
                    "size {} bytes, the record says {}",
                    m.len(),
                    rec.bytes
                ))
            }
            Ok(_) => {}
        }
        if verify {
            match sha256_file(&file) {
                Ok(h) if h == rec.sha256 => {}
                Ok(_) => return SegmentState::Bad("checksum mismatch".into()),
                Err(e) => return SegmentState::Bad(e.to_string()),
            }
        }
        SegmentState::Done(rec)
    }

    /// Record segment `index` as done: its file is in place and holds `frames` frames.
    pub fn mark_done(
        &self,
        plan: &JobPlan,
        index: usize,
        frames: u64,
    ) -> Result<DoneRecord, JobError> {
        let file = self.segment_file(plan, index);
        let bytes = std::fs::metadata(&file)
            .map_err(|e| JobError::io(&file, e))?
            .len();
        let rec = DoneRecord {
            version: DONE_VERSION,
            plan: plan.id(),
            index,
            frames,
            bytes,
            sha256: sha256_file(&file)?,
        };
        let json = serde_json::to_string_pretty(&rec).expect("serialises");
        write_atomic(&self.done_path(index), json.as_bytes())?;
        Ok(rec)
    }

    /// Every segment's state, in order.
    pub fn states(&self, plan: &JobPlan, verify: bool) -> Vec<SegmentState> {
        (0..plan.segments.len())
            .map(|i| self.state(plan, i, verify))
            .collect()
    }

    /// The segment files in order when every segment is done and valid; else the error that
    /// names the missing or bad ones.
    pub fn complete(&self, plan: &JobPlan) -> Result<Vec<PathBuf>, JobError> {
        let states = self.states(plan, true);
        if let Some((i, SegmentState::Bad(what))) = states
            .iter()
            .enumerate()
            .find(|(_, s)| matches!(s, SegmentState::Bad(_)))
        {
            return Err(JobError::Corrupt {
                index: i,
                path: self.segment_file(plan, i),
                what: what.clone(),
            });
        }
        let missing: Vec<usize> = states
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, SegmentState::Missing))
            .map(|(i, _)| i)
            .collect();
        if !missing.is_empty() {
            return Err(JobError::Missing {
                done: states.len() - missing.len(),
                count: states.len(),
                missing,
            });
        }
        Ok((0..plan.segments.len())
            .map(|i| self.segment_file(plan, i))
            .collect())
    }
}

/// Write `bytes` to `path` through a temporary file in the same directory, synced, then
/// renamed into place: readers see the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), JobError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let r = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(JobError::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::plan::tests::plan;

    #[test]
    fn done_records_follow_their_file_and_plan() {
        let dir = tempfile::tempdir().unwrap();
        let job = JobDir::new(dir.path());
        let p = plan(40, 2, Some(4), 0);
        job.create(&p, false).unwrap();
        assert!(job.create(&p, false).is_err(), "a second plan is refused");
        assert_eq!(job.state(&p, 0, true), SegmentState::Missing);
        std::fs::write(job.segment_file(&p, 0), b"twenty frames").unwrap();
        job.mark_done(&p, 0, 20).unwrap();
        assert!(matches!(job.state(&p, 0, true), SegmentState::Done(_)));
        match job.complete(&p) {
            Err(JobError::Missing { missing, .. }) => assert_eq!(missing, [1]),
            other => panic!("{other:?}"),
        }
        // Same size, other bytes: only the checksum sees it.
        std::fs::write(job.segment_file(&p, 0), b"twenty framez").unwrap();
        assert!(matches!(job.state(&p, 0, false), SegmentState::Done(_)));
        assert!(matches!(job.state(&p, 0, true), SegmentState::Bad(_)));
        assert!(matches!(
            job.complete(&p),
            Err(JobError::Corrupt { index: 0, .. })
        ));
        // A record made for another plan.
        std::fs::write(job.segment_file(&p, 0), b"twenty frames").unwrap();
        let mut q = p.clone();
        q.settings.strength = 0.5;
        assert!(matches!(job.state(&q, 0, true), SegmentState::Bad(_)));
        // A wrong frame count.
        std::fs::write(job.segment_file(&p, 1), b"seven").unwrap();
        job.mark_done(&p, 1, 7).unwrap();
        assert!(matches!(job.state(&p, 1, false), SegmentState::Bad(_)));
    }

    #[test]
    fn a_segment_lock_is_held_once() {
        let dir = tempfile::tempdir().unwrap();
        let job = JobDir::new(dir.path());
        job.create(&plan(40, 2, Some(4), 0), false).unwrap();
        let held = job.lock(1).unwrap();
        assert!(matches!(
            job.lock(1),
            Err(JobError::Locked { index: 1, .. })
        ));
        assert!(job.lock(0).is_ok());
        drop(held);
        assert!(job.lock(1).is_ok());
    }
}
