//! The spool: new calls answered while the database could not be reached, kept on local disk
//! until they are stored.
//!
//! Each process appends to a file of its own (`calls-<id>.spool`), holding an exclusive lock
//! on it for as long as it runs, and syncs every record to disk before the caller is answered.
//! A record is one JSON line (the call, its answer and its event, as the writer would have
//! stored them). To replay, the process renames its own file aside (appends go to a new one)
//! and also takes the files of processes that are gone (the lock is free); a file is removed
//! only after every record in it is stored. A last line without its newline was being written
//! when its process stopped and was never answered: it is ignored. A record that cannot be read
//! or stored is moved to `rejected.jsonl` beside the spool files, for an operator to look at.
use std::{
    collections::HashSet,
    fs::{self, File, OpenOptions, TryLockError},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
};

use entity::{call, call_webhook, outbox_event};
use serde::{Deserialize, Serialize};

use super::writer::NewCall;

/// The version of the record format written now.
const VERSION: u32 = 1;
/// Where records that cannot be read or stored are kept.
pub const REJECTED_FILE: &str = "rejected.jsonl";

/// A spool failure.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("encoding a spool record failed: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the spool writer stopped")]
    Stopped,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One spooled call, as stored in a line.
#[derive(Serialize, Deserialize)]
struct Record {
    v: u32,
    call: call::Model,
    answer: call_webhook::Model,
    event: outbox_event::Model,
}

/// The file this process appends to.
struct Active {
    path: PathBuf,
    file: File,
    records: u64,
}

/// The spool of one database, in one directory.
pub struct Spool {
    dir: PathBuf,
    active: Mutex<Option<Active>>,
    depth: AtomicU64,
    /// Files taken for replay and not finished whose calls [`Spool::depth`] already counts:
    /// this process's own, renamed aside, and those of stopped processes once read. A replay
    /// that fails leaves its files to the next, which must not count (or reject) them again.
    counted: Mutex<HashSet<PathBuf>>,
}

/// A spool file taken for replay, locked by this process: its records, then [`Taken::finish`].
pub struct Taken {
    path: PathBuf,
    _lock: File,
    /// The readable records, in the order they were spooled.
    pub calls: Vec<NewCall>,
    /// Complete lines that could not be read (kept in the rejected file).
    pub unreadable: usize,
}

impl Spool {
    /// The spool in `dir`; nothing is created until the first call is spooled.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            active: Mutex::default(),
            depth: AtomicU64::new(0),
            counted: Mutex::default(),
        }
    }

    /// The directory of the spool files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Calls spooled and not yet stored, as far as this process knows (its own, and those it
    /// took from stopped processes).
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Appends a call and syncs it to disk; when this returns `Ok`, the call survives a crash.
    pub async fn append(self: &Arc<Self>, new_call: &NewCall) -> Result<(), SpoolError> {
        let mut line = encode(new_call)?;
        line.push(b'\n');
        let spool = Arc::clone(self);
        tokio::task::spawn_blocking(move || spool.append_line(&line))
            .await
            .map_err(|_| SpoolError::Stopped)?
    }

    fn append_line(&self, line: &[u8]) -> Result<(), SpoolError> {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if active.is_none() {
            *active = Some(self.create()?);
        }
        let file = active.as_mut().expect("created above");
        let written = file.file.write_all(line).and_then(|()| file.file.sync_data());
        if let Err(e) = written {
            // A record half written cannot be taken back: start a new file, so that the next
            // record is not appended to a broken line (the broken one is ignored on replay).
            let path = file.path.clone();
            *active = None;
            return Err(io_at(&path)(e));
        }
        file.records += 1;
        self.depth.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Creates and locks this process's file, and syncs the directory so the file survives.
    fn create(&self) -> Result<Active, SpoolError> {
        fs::create_dir_all(&self.dir).map_err(io_at(&self.dir))?;
        let path = self.dir.join(format!("calls-{}.spool", entity::id::new_id()));
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_at(&path))?;
        file.lock().map_err(io_at(&path))?;
        sync_dir(&self.dir)?;
        Ok(Active {
            path,
            file,
            records: 0,
        })
    }

    /// Takes every spool file there is to replay: this process's own (renamed aside, so that
    /// appends go on in a new file) and those of stopped processes. Files another running
    /// process holds are left to it.
    pub fn take(&self) -> Result<Vec<Taken>, SpoolError> {
        let mut taken = Vec::new();
        let own = {
            let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
            match active.take_if(|a| a.records > 0) {
                Some(own) => {
                    let aside = own.path.with_extension("replay");
                    fs::rename(&own.path, &aside).map_err(io_at(&own.path))?;
                    sync_dir(&self.dir)?;
                    Some((aside, own.file))
                }
                None => None,
            }
        };
        let own_active = self.active_path();
        if let Some((path, file)) = own {
            taken.push(self.read(path, file, true)?);
        }
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(taken),
            Err(e) => return Err(io_at(&self.dir)(e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_spool_file(p) && Some(p) != own_active.as_ref())
            .filter(|p| !taken.iter().any(|t| &t.path == p))
            .collect();
        paths.sort();
        for path in paths {
            let file = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(file) => file,
                // Finished by its process meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_at(&path)(e)),
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(e)) => return Err(io_at(&path)(e)),
            }
            // Removed by its process between listing and locking.
            if !path.exists() {
                continue;
            }
            taken.push(self.read(path, file, false)?);
        }
        Ok(taken)
    }

    fn counted(&self) -> MutexGuard<'_, HashSet<PathBuf>> {
        self.counted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn active_path(&self) -> Option<PathBuf> {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        active.as_ref().map(|a| a.path.clone())
    }

    /// Reads a locked spool file; `own` when this process spooled its calls (counted as they
    /// were appended). At its first read, a file's unreadable lines are kept in the rejected
    /// file and the calls of another process's file are counted; a file read again (its
    /// replay failed) is neither.
    fn read(&self, path: PathBuf, mut file: File, own: bool) -> Result<Taken, SpoolError> {
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(io_at(&path))?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |end| end + 1);
        let mut calls = Vec::new();
        let mut unreadable = Vec::new();
        for line in bytes[..complete].split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Record>(line) {
                Ok(record) if record.v == VERSION => calls.push(NewCall {
                    call: record.call,
                    answer: record.answer,
                    event: record.event,
                }),
                _ => unreadable.push(line),
            }
        }
        if self.counted().insert(path.clone()) {
            if !unreadable.is_empty() {
                self.keep_rejected(&unreadable)?;
            }
            if !own {
                self.depth.fetch_add(calls.len() as u64, Ordering::Relaxed);
            }
        }
        Ok(Taken {
            path,
            _lock: file,
            calls,
            unreadable: unreadable.len(),
        })
    }

    /// Keeps a call that cannot be stored in the rejected file, synced.
    pub fn reject(&self, new_call: &NewCall) -> Result<(), SpoolError> {
        self.keep_rejected(&[&encode(new_call)?])
    }

    fn keep_rejected(&self, lines: &[&[u8]]) -> Result<(), SpoolError> {
        let path = self.dir.join(REJECTED_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_at(&path))?;
        let mut all = Vec::new();
        for line in lines {
            all.extend_from_slice(line);
            all.push(b'\n');
        }
        file.write_all(&all)
            .and_then(|()| file.sync_data())
            .map_err(io_at(&path))?;
        sync_dir(&self.dir)
    }

    /// Removes a replayed file: every call in it is stored (or rejected).
    pub fn finish(&self, taken: Taken) -> Result<(), SpoolError> {
        fs::remove_file(&taken.path).map_err(io_at(&taken.path))?;
        sync_dir(&self.dir)?;
        self.counted().remove(&taken.path);
        let n = taken.calls.len() as u64;
        let _ = self
            .depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(n))
            });
        Ok(())
    }
}

/// One record of the spool, without its newline.
fn encode(new_call: &NewCall) -> Result<Vec<u8>, SpoolError> {
    Ok(serde_json::to_vec(&Record {
        v: VERSION,
        call: new_call.call.clone(),
        answer: new_call.answer.clone(),
        event: new_call.event.clone(),
    })?)
}

/// A spool file: being appended to (`.spool`) or set aside for replay (`.replay`).
fn is_spool_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.starts_with("calls-") && (name.ends_with(".spool") || name.ends_with(".replay"))
}

/// Makes a file's creation, renaming or removal in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use entity::states::{CallStatus, EventType, OutboxStatus, Outcome, WebhookKind};

    use super::*;

    fn new_call(sid: &str) -> NewCall {
        let now = Utc.timestamp_opt(1_800_000_000, 123_456_789).unwrap();
        NewCall {
            call: call::Model {
                id: format!("id-{sid}"),
                call_sid: sid.to_owned(),
                tenant_id: "t".to_owned(),
                route_id: "r".to_owned(),
                from_number: "+15555550199".to_owned(),
                to_number: "+15555550100".to_owned(),
                status: CallStatus::Ringing,
                outcome: Outcome::Fallback,
                fallback_reason: None,
                attempts: 1,
                error_code: None,
                error_url: None,
                duration_secs: None,
                created_at: now,
                updated_at: now,
                ended_at: None,
            },
            answer: call_webhook::Model {
                id: format!("w-{sid}"),
                call_id: format!("id-{sid}"),
                kind: WebhookKind::Incoming,
                attempts: 1,
                twiml: "<Response><Say>sorry</Say><Hangup/></Response>".to_owned(),
                stream_token: None,
                token_jti: None,
                token_expires_at: None,
                created_at: now,
                updated_at: now,
            },
            event: outbox_event::Model {
                id: format!("e-{sid}"),
                tenant_id: "t".to_owned(),
                event_type: EventType::CallFallback,
                payload: "{}".to_owned(),
                status: OutboxStatus::Pending,
                attempts: 0,
                next_attempt_at: now,
                last_error: None,
                created_at: now,
                delivered_at: None,
            },
        }
    }

    fn sids(taken: &[Taken]) -> Vec<String> {
        taken
            .iter()
            .flat_map(|t| t.calls.iter().map(|c| c.call.call_sid.clone()))
            .collect()
    }

    #[tokio::test]
    async fn spooled_calls_are_taken_once_and_removed_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::new(dir.path().join("spool")));
        assert!(
            spool.take().unwrap().is_empty(),
            "nothing spooled, nothing created"
        );
        assert!(!dir.path().join("spool").exists());
        spool.append(&new_call("CA1")).await.unwrap();
        spool.append(&new_call("CA2")).await.unwrap();
        assert_eq!(spool.depth(), 2);
        let taken = spool.take().unwrap();
        assert_eq!(sids(&taken), ["CA1", "CA2"]);
        // Every field comes back as spooled, timestamps to the nanosecond.
        let (back, sent) = (&taken[0].calls[0], new_call("CA1"));
        assert_eq!(
            (&back.call, &back.answer, &back.event),
            (&sent.call, &sent.answer, &sent.event)
        );
        // Appends go on in a new file while the taken one is replayed.
        spool.append(&new_call("CA3")).await.unwrap();
        assert_eq!(
            sids(&spool.take().unwrap()),
            ["CA3"],
            "a taken file is not taken twice"
        );
        for t in taken {
            spool.finish(t).unwrap();
        }
        assert_eq!(spool.depth(), 1, "CA3 was taken but not finished");
    }

    #[tokio::test]
    async fn a_stopped_process_leaves_its_calls_to_the_next_and_a_running_one_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let first = Arc::new(Spool::new(dir.path()));
        first.append(&new_call("CA1")).await.unwrap();
        // A second process sharing the directory: the first's file is locked.
        let second = Spool::new(dir.path());
        assert!(second.take().unwrap().is_empty());
        drop(first);
        // The first process is gone, with a record half written when it stopped.
        let file = fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap()
            .write_all(b"{\"v\":1,\"call\":")
            .unwrap();
        let taken = second.take().unwrap();
        assert_eq!(sids(&taken), ["CA1"]);
        assert_eq!(
            taken[0].unreadable, 0,
            "the half-written record was never answered"
        );
        assert_eq!(second.depth(), 1);
        second.finish(taken.into_iter().next().unwrap()).unwrap();
        assert_eq!(second.depth(), 0);
        assert!(second.take().unwrap().is_empty());
    }

    #[tokio::test]
    async fn files_whose_replay_failed_are_counted_and_rejected_once_when_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::new(dir.path()));
        spool.append(&new_call("CA1")).await.unwrap();
        spool.append(&new_call("CA2")).await.unwrap();
        fs::write(
            dir.path().join("calls-stopped.spool"),
            format!(
                "{}\nnot json\n",
                String::from_utf8(encode(&new_call("CA3")).unwrap()).unwrap()
            ),
        )
        .unwrap();
        let depth_and_rejected = |spool: &Spool| {
            let rejected = fs::read_to_string(dir.path().join(REJECTED_FILE)).unwrap_or_default();
            (spool.depth(), rejected.lines().count())
        };
        // A replay that fails leaves its files taken and not finished: the own one renamed
        // aside, the stopped process's as it was.
        let taken = spool.take().unwrap();
        assert_eq!(sids(&taken), ["CA1", "CA2", "CA3"]);
        assert_eq!(depth_and_rejected(&spool), (3, 1));
        drop(taken);
        let taken = spool.take().unwrap();
        assert_eq!(
            sids(&taken),
            ["CA1", "CA2", "CA3"],
            "the next replay takes them again"
        );
        assert_eq!(depth_and_rejected(&spool), (3, 1), "counted and rejected once");
        for t in taken {
            spool.finish(t).unwrap();
        }
        assert_eq!(depth_and_rejected(&spool), (0, 1));
        assert!(spool.take().unwrap().is_empty());
    }

    #[tokio::test]
    async fn unreadable_records_are_kept_aside_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::new(dir.path()));
        spool.append(&new_call("CA1")).await.unwrap();
        let orphan = dir.path().join("calls-orphan.spool");
        fs::write(&orphan, b"not json\n{\"v\":99}\n").unwrap();
        let taken = spool.take().unwrap();
        assert_eq!(sids(&taken), ["CA1"]);
        assert_eq!(taken.iter().map(|t| t.unreadable).sum::<usize>(), 2);
        let rejected = fs::read_to_string(dir.path().join(REJECTED_FILE)).unwrap();
        assert_eq!(rejected, "not json\n{\"v\":99}\n");
        spool.reject(&new_call("CA9")).unwrap();
        let rejected = fs::read_to_string(dir.path().join(REJECTED_FILE)).unwrap();
        assert!(rejected.lines().nth(2).unwrap().contains("\"CA9\""));
    }
}
