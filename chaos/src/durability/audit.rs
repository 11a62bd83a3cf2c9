//! The durability model over a trace: which file (or directory entry) was written when, and
//! which syncs covered it. Two checks read it:
//!
//! - [`Model::violations`]: at every acknowledged write (a 2xx answer to a `/v1` write request,
//!   taken from the node's own `sendto` on the client's socket), everything that existed under
//!   the data directory when the request arrived must be durable: each file's data fsynced or
//!   fdatasynced by a sync that began after its last write and ended before the answer, and
//!   each entry (a created file, a rename's target, a new directory) covered the same way by a
//!   sync of its directory. The request's own entry must be durable too: sled's data file must
//!   have been synced between the request and the answer, by a sync that began after the data
//!   file's last write before that sync. What the node writes in the background after the
//!   request arrived (a snapshot, sled's page rewrites) belongs to later answers, which check
//!   it; with one client at a time every write is checked by the next answer or the power cut.
//! - [`Model::power_cut`]: what a power cut at the end of the trace would take away. Only files
//!   that were never synced at all, or whose directory entry was never made durable, are lost;
//!   the unsynced tail of a file that was synced earlier is not modelled.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::trace::{Call, Event};

#[derive(Debug)]
struct Object {
    /// Where it is, or was last seen before it was unlinked.
    path: PathBuf,
    linked: bool,
    is_dir: bool,
    /// Trace positions at which a write to its data completed.
    writes: Vec<u64>,
    /// (start, end) of every sync.
    syncs: Vec<(u64, u64)>,
    /// Where its current directory entry appeared (`None`: it existed before the trace).
    entry_at: Option<u64>,
    unlinked_at: Option<u64>,
}

impl Object {
    fn last_write_before(&self, position: u64) -> Option<u64> {
        self.writes.iter().copied().filter(|w| *w < position).max()
    }

    fn synced_between(&self, after: u64, before: u64) -> bool {
        self.syncs.iter().any(|(start, end)| *start > after && *end < before)
    }
}

/// A write request and its answer, as seen on one client connection.
#[derive(Clone, Debug, Serialize)]
pub struct Ack {
    pub request: String,
    pub received_at: u64,
    pub answered_at: u64,
}

/// One thing that was not durable when a write was acknowledged.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    pub path: PathBuf,
    /// What was missing: the file's data, or the directory's new entry.
    pub what: &'static str,
    pub written_at: u64,
    pub ack: Ack,
}

/// The file-system state of one data directory, built from a trace.
pub struct Model {
    root: PathBuf,
    data_file: PathBuf,
    listen_port: u16,
    objects: Vec<Object>,
    by_path: HashMap<PathBuf, usize>,
    pending_requests: HashMap<String, (u64, String)>,
    pub acks: Vec<Ack>,
    end: u64,
}

impl Model {
    /// A model of `root` (the node's data directory), whose node listens on `listen_port`.
    pub fn new(root: &Path, listen_port: u16) -> Model {
        Model {
            root: root.to_path_buf(),
            data_file: root.join("sled").join("db"),
            listen_port,
            objects: Vec::new(),
            by_path: HashMap::new(),
            pending_requests: HashMap::new(),
            acks: Vec::new(),
            end: 0,
        }
    }

    /// Whether `path` is the data directory, inside it, or the directory that holds it.
    fn watched(&self, path: &Path) -> bool {
        path.starts_with(&self.root) || Some(path) == self.root.parent()
    }

    /// The object at `path`, creating one that existed before the trace if it is unknown.
    fn at(&mut self, path: &Path, is_dir: bool) -> usize {
        if let Some(&i) = self.by_path.get(path) {
            return i;
        }
        self.objects.push(Object {
            path: path.to_path_buf(),
            linked: true,
            is_dir,
            writes: Vec::new(),
            syncs: Vec::new(),
            entry_at: None,
            unlinked_at: None,
        });
        self.by_path.insert(path.to_path_buf(), self.objects.len() - 1);
        self.objects.len() - 1
    }

    /// A new entry appeared at `path` at `position`.
    fn link(&mut self, path: &Path, object: usize, position: u64) {
        if let Some(old) = self.by_path.insert(path.to_path_buf(), object) {
            if old != object {
                self.objects[old].linked = false;
                self.objects[old].unlinked_at = Some(position);
            }
        }
        self.objects[object].path = path.to_path_buf();
        self.objects[object].linked = true;
        self.objects[object].entry_at = Some(position);
        if let Some(parent) = path.parent().filter(|p| self.watched(p)) {
            self.at(parent, true);
        }
    }

    /// The directory holding `object`'s entry, if it is watched.
    fn parent_of(&self, object: &Object) -> Option<&Object> {
        object.path.parent().and_then(|p| self.by_path.get(p)).map(|&i| &self.objects[i])
    }

    /// Applies the events of one trace (positions must keep growing across traces).
    pub fn apply(&mut self, events: &[Event]) {
        for event in events {
            self.end = self.end.max(event.end);
            match &event.call {
                Call::Open { path, create, truncate } if self.watched(path) => {
                    if !self.by_path.contains_key(path) && *create {
                        let object = self.at(path, false);
                        self.link(path, object, event.end);
                        self.objects[object].writes.push(event.end);
                    } else if *truncate {
                        let object = self.at(path, false);
                        self.objects[object].writes.push(event.end);
                    }
                }
                Call::Write { path } if self.watched(path) => {
                    let object = self.at(path, false);
                    self.objects[object].writes.push(event.end);
                }
                Call::Sync { path } if self.watched(path) => {
                    let object = self.at(path, path.is_dir());
                    self.objects[object].syncs.push((event.start, event.end));
                }
                Call::Rename { from, to } if self.watched(from) || self.watched(to) => {
                    let object = self.at(from, false);
                    self.by_path.remove(from);
                    self.link(to, object, event.end);
                }
                Call::Unlink { path } if self.watched(path) => {
                    if let Some(object) = self.by_path.remove(path) {
                        self.objects[object].linked = false;
                        self.objects[object].unlinked_at = Some(event.end);
                    }
                }
                Call::Mkdir { path } if self.watched(path) && !self.by_path.contains_key(path) => {
                    let object = self.at(path, true);
                    self.link(path, object, event.end);
                }
                Call::SocketRead { conn, data } if self.serves(conn) => {
                    if let Some(line) = request_line(data) {
                        self.pending_requests.insert(conn.clone(), (event.end, line));
                    }
                }
                Call::SocketWrite { conn, data } if self.serves(conn) => {
                    if let Some((received_at, request)) = self.pending_requests.remove(conn) {
                        if is_write(&request) && data.starts_with("HTTP/1.1 2") {
                            self.acks.push(Ack { request, received_at, answered_at: event.start });
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether a connection is one a client opened to the node.
    fn serves(&self, conn: &str) -> bool {
        conn.split("->").next().is_some_and(|local| local.ends_with(&format!(":{}", self.listen_port)))
    }

    /// Everything that was not durable at an acknowledgement that depended on it.
    pub fn violations(&self) -> Vec<Violation> {
        let mut found = Vec::new();
        let data_file = self.by_path.get(&self.data_file).map(|&i| &self.objects[i]);
        for ack in &self.acks {
            let point = data_file
                .and_then(|db| {
                    db.syncs
                        .iter()
                        .filter(|(start, end)| *start > ack.received_at && *end < ack.answered_at)
                        .map(|(start, _)| *start)
                        .max()
                })
                .unwrap_or(ack.received_at);
            if point == ack.received_at {
                found.push(Violation {
                    path: self.data_file.clone(),
                    what: "a sync of the data file between the request and its answer",
                    written_at: ack.received_at,
                    ack: ack.clone(),
                });
            }
            for object in &self.objects {
                // Only what existed under its name when the request arrived and was still there
                // when the answer went out; for the data file, up to its sync for this request.
                let arrived = ack.received_at;
                let linked_at_answer = object.unlinked_at.is_none_or(|u| u > ack.answered_at)
                    && object.entry_at.is_none_or(|e| e < arrived);
                if !linked_at_answer {
                    continue;
                }
                let upto = if object.path == self.data_file { point } else { arrived };
                if let Some(written) = object.last_write_before(upto) {
                    if !object.synced_between(written, ack.answered_at) {
                        found.push(Violation {
                            path: object.path.clone(),
                            what: "file data",
                            written_at: written,
                            ack: ack.clone(),
                        });
                    }
                }
                let (Some(entry_at), Some(dir)) = (object.entry_at, self.parent_of(object)) else { continue };
                if !dir.synced_between(entry_at, ack.answered_at) {
                    found.push(Violation {
                        path: object.path.clone(),
                        what: "directory entry",
                        written_at: entry_at,
                        ack: ack.clone(),
                    });
                }
            }
        }
        found
    }

    /// The paths a power cut at the end of the trace would lose: files never synced at all and
    /// entries whose directory was never synced after they appeared (with everything below).
    pub fn power_cut(&self) -> Vec<PathBuf> {
        let mut lost: Vec<PathBuf> = Vec::new();
        let mut linked: Vec<&Object> = self.objects.iter().filter(|o| o.linked).collect();
        linked.sort_by_key(|o| o.path.clone());
        for object in linked {
            let path = &object.path;
            if !path.starts_with(&self.root) || lost.iter().any(|l| path.starts_with(l)) {
                continue;
            }
            let data_lost = !object.is_dir && !object.writes.is_empty() && object.syncs.is_empty();
            let entry_lost = match (object.entry_at, self.parent_of(object)) {
                (Some(at), Some(dir)) => !dir.syncs.iter().any(|(start, _)| *start > at),
                (Some(_), None) => true,
                (None, _) => false,
            };
            if data_lost || entry_lost {
                lost.push(path.clone());
            }
        }
        lost
    }

    /// Violations grouped by path pattern (numbered files such as blobs share one line).
    pub fn summarize(violations: &[Violation]) -> BTreeMap<String, usize> {
        let mut groups = BTreeMap::new();
        for v in violations {
            let pattern: String = v
                .path
                .to_string_lossy()
                .split('/')
                .map(|part| {
                    if part.chars().any(|c| c.is_ascii_digit()) && part.len() > 4 {
                        "*".to_string()
                    } else {
                        part.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            *groups.entry(format!("{pattern} ({})", v.what)).or_insert(0) += 1;
        }
        groups
    }

    /// Files and directories the trace touched under the data directory.
    pub fn files(&self) -> usize {
        self.objects.iter().filter(|o| o.path.starts_with(&self.root)).count()
    }

    pub fn end(&self) -> u64 {
        self.end
    }
}

/// `POST /v1/batch` from the start of an HTTP request, if it is one.
fn request_line(data: &str) -> Option<String> {
    let line = data.split("\r\n").next()?;
    let method = line.split(' ').next()?;
    matches!(method, "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD")
        .then(|| line.rsplit_once(' ').map(|(head, _)| head.to_string()).unwrap_or_else(|| line.to_string()))
}

fn is_write(request: &str) -> bool {
    let mut parts = request.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    matches!(method, "POST" | "PUT" | "PATCH" | "DELETE") && path.starts_with("/v1/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durability::trace::parse;

    const ROOT: &str = "/d";

    fn model(trace: &str) -> Model {
        let mut m = Model::new(Path::new(ROOT), 7101);
        m.apply(&parse(trace, Path::new("/"), 0));
        m
    }

    /// A write request answered after the given file-system calls.
    fn acked(calls: &str) -> String {
        format!(
            "1 recvfrom(3<TCP:[127.0.0.1:7101->127.0.0.1:5000]>, \"POST /v1/batch HTTP/1.1\\r\\n\", 8192, 0, NULL, NULL) = 20\n\
             {calls}\
             1 sendto(3<TCP:[127.0.0.1:7101->127.0.0.1:5000]>, \"HTTP/1.1 200 OK\\r\\n\", 17, 0, NULL, 0) = 17\n"
        )
    }

    const SETUP: &str = "1 mkdir(\"/d\", 0777) = 0\n\
        1 fsync(4</>) = 0\n\
        1 mkdir(\"/d/sled\", 0777) = 0\n\
        1 openat(AT_FDCWD</>, \"/d/sled/db\", O_RDWR|O_CREAT, 0666) = 5</d/sled/db>\n\
        1 fsync(6</d>) = 0\n\
        1 fsync(7</d/sled>) = 0\n";

    #[test]
    fn a_blob_never_synced_is_a_violation_and_lost_in_a_power_cut() {
        let first = acked(
            "2 openat(AT_FDCWD</>, \"/d/sled/blobs/77\", O_WRONLY|O_CREAT|O_EXCL, 0666) = 8</d/sled/blobs/77>\n\
             2 write(8</d/sled/blobs/77>, \"x\", 1) = 1\n\
             2 write(5</d/sled/db>, \"x\", 1) = 1\n\
             3 fdatasync(9</d/sled/db>) = 0\n",
        );
        let second = acked("2 write(5</d/sled/db>, \"y\", 1) = 1\n3 fdatasync(9</d/sled/db>) = 0\n");
        let m = model(&format!("{SETUP}{first}"));
        assert!(m.violations().is_empty(), "the blob came after the first request arrived");
        let m = model(&format!("{SETUP}{first}{second}"));
        assert_eq!(m.acks.len(), 2);
        let v = m.violations();
        let paths: Vec<_> = v.iter().map(|v| (v.path.to_string_lossy().to_string(), v.what)).collect();
        // The blobs directory existed before the trace: the file's data and its entry in that
        // never-synced directory are missing when the next answer goes out.
        assert_eq!(
            paths,
            vec![
                ("/d/sled/blobs/77".to_string(), "file data"),
                ("/d/sled/blobs/77".to_string(), "directory entry")
            ]
        );
        assert_eq!(m.power_cut(), vec![PathBuf::from("/d/sled/blobs/77")]);
    }

    #[test]
    fn synced_blobs_and_directories_pass() {
        let trace = format!(
            "{SETUP}1 mkdir(\"/d/sled/blobs\", 0777) = 0\n1 fsync(7</d/sled>) = 0\n{}",
            acked(
                "2 openat(AT_FDCWD</>, \"/d/sled/blobs/77\", O_WRONLY|O_CREAT|O_EXCL, 0666) = 8</d/sled/blobs/77>\n\
                 2 write(8</d/sled/blobs/77>, \"x\", 1) = 1\n\
                 2 write(5</d/sled/db>, \"x\", 1) = 1\n\
                 3 fdatasync(9</d/sled/db>) = 0\n\
                 3 fsync(10</d/sled/blobs/77>) = 0\n\
                 3 fsync(11</d/sled/blobs>) = 0\n\
                 2 write(5</d/sled/db>, \"background\", 10) = 10\n"
            )
        );
        let m = model(&trace);
        assert_eq!(m.violations().len(), 0, "{:?}", m.violations());
        assert!(m.power_cut().is_empty());
    }

    #[test]
    fn a_sync_that_started_before_the_write_does_not_cover_it() {
        let trace = format!(
            "{SETUP}{}",
            acked(
                "3 fdatasync(9</d/sled/db> <unfinished ...>\n\
                 2 write(5</d/sled/db>, \"x\", 1) = 1\n\
                 3 <... fdatasync resumed>) = 0\n\
                 3 fdatasync(9</d/sled/db>) = 0\n"
            )
        );
        assert!(model(&trace).violations().is_empty());
        let late = format!(
            "{SETUP}{}",
            acked(
                "2 write(5</d/sled/db>, \"x\", 1) = 1\n\
                 3 fdatasync(9</d/sled/db> <unfinished ...>\n\
                 2 write(5</d/sled/db>, \"y\", 1) = 1\n\
                 3 <... fdatasync resumed>) = 0\n\
                 2 openat(AT_FDCWD</>, \"/d/conf\", O_WRONLY|O_CREAT, 0666) = 8</d/conf>\n"
            )
        );
        // The write inside the sync's span is after the durability point; nothing is missing,
        // and the file created after it belongs to a later answer.
        assert!(model(&late).violations().is_empty(), "{:?}", model(&late).violations());
    }

    #[test]
    fn an_answer_without_a_sync_of_the_data_file_is_a_violation() {
        let trace = format!("{SETUP}{}", acked("2 write(5</d/sled/db>, \"x\", 1) = 1\n"));
        let v = model(&trace).violations();
        assert!(v.iter().any(|v| v.what.starts_with("a sync of the data file")), "{v:?}");
    }

    #[test]
    fn a_rename_needs_its_directory_synced() {
        let trace = format!(
            "{SETUP}1 openat(AT_FDCWD</>, \"/d/sled/snap.1.generating\", O_WRONLY|O_CREAT, 0666) = 8</d/sled/snap.1.generating>\n\
             1 write(8</d/sled/snap.1.generating>, \"s\", 1) = 1\n\
             1 fsync(8</d/sled/snap.1.generating>) = 0\n\
             1 rename(\"/d/sled/snap.1.generating\", \"/d/sled/snap.1\") = 0\n{}",
            acked("3 fdatasync(9</d/sled/db>) = 0\n")
        );
        let m = model(&trace);
        let v = m.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!((v[0].path.as_path(), v[0].what), (Path::new("/d/sled/snap.1"), "directory entry"));
        assert_eq!(m.power_cut(), vec![PathBuf::from("/d/sled/snap.1")]);
    }

    #[test]
    fn a_temporary_file_renamed_after_the_durability_point_is_not_required() {
        let trace = format!(
            "{SETUP}{}",
            acked(
                "1 openat(AT_FDCWD</>, \"/d/s.tmp\", O_WRONLY|O_CREAT, 0666) = 8</d/s.tmp>\n\
                 3 fdatasync(9</d/sled/db>) = 0\n\
                 1 write(8</d/s.tmp>, \"s\", 1) = 1\n\
                 1 fsync(8</d/s.tmp>) = 0\n\
                 1 rename(\"/d/s.tmp\", \"/d/s.snap\") = 0\n"
            )
        );
        let m = model(&trace);
        assert!(m.violations().is_empty(), "{:?}", m.violations());
        assert_eq!(m.power_cut(), vec![PathBuf::from("/d/s.snap")], "its directory was never synced");
    }

    #[test]
    fn reads_and_failed_answers_are_not_acknowledgements() {
        let trace = format!(
            "{SETUP}1 recvfrom(3<TCP:[127.0.0.1:7101->127.0.0.1:5000]>, \"GET /v1/atoms/1 HTTP/1.1\\r\\n\", 8192, 0, NULL, NULL) = 20\n\
             1 sendto(3<TCP:[127.0.0.1:7101->127.0.0.1:5000]>, \"HTTP/1.1 200 OK\\r\\n\", 17, 0, NULL, 0) = 17\n\
             1 recvfrom(3<TCP:[127.0.0.1:7101->127.0.0.1:5000]>, \"POST /v1/atoms HTTP/1.1\\r\\n\", 8192, 0, NULL, NULL) = 20\n\
             1 sendto(3<TCP:[127.0.0.1:7101->127.0.0.1:5000]>, \"HTTP/1.1 503 Service Unavailable\\r\\n\", 17, 0, NULL, 0) = 17\n"
        );
        assert!(model(&trace).acks.is_empty());
    }
}
