//! Reads `strace -f -y -yy -s N` output into the file-system and socket events the durability
//! audit needs. `-y` annotates every descriptor with what it refers to (`5</data/sled/db>`,
//! `7<TCP:[127.0.0.1:7101->127.0.0.1:50002]>`), so a sync through one descriptor matches a write
//! through another by path. A call that strace splits (`<unfinished ...>` / `<... resumed>`)
//! becomes one event whose start and end are the positions of its two halves.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// One syscall that matters to durability, with where it started and ended in the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Position of the line where the call began (for a split call, its first half).
    pub start: u64,
    /// Position of the line where the call returned.
    pub end: u64,
    pub pid: u32,
    pub call: Call,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// A successful open; `create` when O_CREAT was given, `truncate` for O_TRUNC.
    Open {
        path: PathBuf,
        create: bool,
        truncate: bool,
    },
    /// Bytes written to (or the size of) a regular file or directory's file.
    Write {
        path: PathBuf,
    },
    /// fsync or fdatasync of a file or directory.
    Sync {
        path: PathBuf,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    Unlink {
        path: PathBuf,
    },
    Mkdir {
        path: PathBuf,
    },
    /// Bytes received on a TCP connection (`conn` as strace prints it: `local->remote`).
    SocketRead {
        conn: String,
        data: String,
    },
    /// Bytes sent on a TCP connection.
    SocketWrite {
        conn: String,
        data: String,
    },
}

/// The syscalls to ask strace for (`-e trace=...`).
pub const TRACED: &str = "openat,open,creat,write,pwrite64,writev,pwritev,pwritev2,ftruncate,fallocate,\
fsync,fdatasync,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat,sendto,sendmsg,recvfrom,\
recvmsg,read,readv";

/// Parses a whole trace. `cwd` resolves relative paths given with `AT_FDCWD` or no directory.
pub fn parse(text: &str, cwd: &Path, first_position: u64) -> Vec<Event> {
    let mut pending: HashMap<u32, (u64, String)> = HashMap::new();
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let position = first_position + i as u64;
        let Some((pid, rest)) = split_pid(line) else { continue };
        if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, (position, head.to_string()));
            continue;
        }
        let (start, whole) = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((_, tail)) = resumed.split_once(" resumed>") else { continue };
            match pending.remove(&pid) {
                Some((start, head)) => (start, format!("{head}{tail}")),
                None => continue,
            }
        } else {
            (position, rest.to_string())
        };
        if let Some(call) = interpret(&whole, cwd) {
            events.push(Event { start, end: position, pid, call });
        }
    }
    events
}

fn split_pid(line: &str) -> Option<(u32, &str)> {
    let line = line.strip_prefix("[pid ").unwrap_or(line);
    let (pid, rest) = line.split_once([' ', ']'])?;
    Some((pid.parse().ok()?, rest.trim_start_matches(']').trim_start()))
}

/// Turns one complete call line into an event, if it is one the audit uses and it succeeded.
fn interpret(line: &str, cwd: &Path) -> Option<Call> {
    let (name, rest) = line.split_once('(')?;
    let (args, ret) = split_return(rest)?;
    if ret.starts_with('-') || ret.starts_with('?') {
        return None;
    }
    let args = split_args(args);
    let fd_target = |i: usize| args.get(i).and_then(|a| annotation(a));
    match name {
        "openat" | "open" | "creat" => {
            let (path_arg, flags) = match name {
                "openat" => (args.get(1)?, args.get(2).map(String::as_str).unwrap_or("")),
                "creat" => (args.first()?, "O_CREAT|O_TRUNC"),
                _ => (args.first()?, args.get(1).map(String::as_str).unwrap_or("")),
            };
            // The returned descriptor's annotation is the resolved path; fall back to resolving.
            let path = annotation(ret).filter(|a| a.starts_with('/')).map(PathBuf::from).or_else(|| {
                let base = if name == "openat" { fd_target(0) } else { None };
                resolve(base.as_deref(), &unquote(path_arg)?, cwd)
            })?;
            Some(Call::Open { path, create: flags.contains("O_CREAT"), truncate: flags.contains("O_TRUNC") })
        }
        "write" | "pwrite64" | "writev" | "pwritev" | "pwritev2" | "sendto" | "sendmsg" | "ftruncate"
        | "fallocate" => {
            let target = fd_target(0)?;
            if let Some(conn) = tcp(&target) {
                let data = args.get(1).and_then(|a| first_string(a)).unwrap_or_default();
                return Some(Call::SocketWrite { conn, data });
            }
            target.starts_with('/').then(|| Call::Write { path: PathBuf::from(target) })
        }
        "read" | "readv" | "recvfrom" | "recvmsg" => {
            let conn = tcp(&fd_target(0)?)?;
            let data = args.get(1).and_then(|a| first_string(a)).unwrap_or_default();
            Some(Call::SocketRead { conn, data })
        }
        "fsync" | "fdatasync" => {
            let target = fd_target(0)?;
            target.starts_with('/').then(|| Call::Sync { path: PathBuf::from(target) })
        }
        "rename" => Some(Call::Rename {
            from: resolve(None, &unquote(args.first()?)?, cwd)?,
            to: resolve(None, &unquote(args.get(1)?)?, cwd)?,
        }),
        "renameat" | "renameat2" => Some(Call::Rename {
            from: resolve(fd_target(0).as_deref(), &unquote(args.get(1)?)?, cwd)?,
            to: resolve(fd_target(2).as_deref(), &unquote(args.get(3)?)?, cwd)?,
        }),
        "unlink" => Some(Call::Unlink { path: resolve(None, &unquote(args.first()?)?, cwd)? }),
        "unlinkat" => {
            Some(Call::Unlink { path: resolve(fd_target(0).as_deref(), &unquote(args.get(1)?)?, cwd)? })
        }
        "mkdir" => Some(Call::Mkdir { path: resolve(None, &unquote(args.first()?)?, cwd)? }),
        "mkdirat" => {
            Some(Call::Mkdir { path: resolve(fd_target(0).as_deref(), &unquote(args.get(1)?)?, cwd)? })
        }
        _ => None,
    }
}

/// Splits `args) = ret` (strace pads a resumed call's `=` with spaces).
fn split_return(rest: &str) -> Option<(&str, &str)> {
    let mut search = rest.len();
    while let Some(at) = rest[..search].rfind(" = ") {
        if let Some(args) = rest[..at].trim_end().strip_suffix(')') {
            return Some((args, rest[at + 3..].trim()));
        }
        search = at;
    }
    None
}

/// Splits a call's arguments at top-level commas (not inside quotes, brackets or braces).
fn split_args(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let (mut depth, mut in_string, mut escaped) = (0i32, false, false);
    let mut previous = ' ';
    for c in args.chars() {
        let after = std::mem::replace(&mut previous, c);
        if in_string {
            current.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                current.push(c);
            }
            '[' | '{' | '(' | '<' => {
                depth += 1;
                current.push(c);
            }
            // `->` inside a TCP annotation is not a closing bracket.
            '>' if after == '-' => current.push(c),
            ']' | '}' | ')' | '>' => {
                depth -= 1;
                current.push(c);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut current).trim().to_string()),
            _ => current.push(c),
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

/// The text inside a descriptor's `<...>` annotation (`5</path>` -> `/path`).
fn annotation(arg: &str) -> Option<String> {
    let open = arg.find('<')?;
    let close = arg.rfind('>')?;
    (close > open).then(|| arg[open + 1..close].to_string())
}

/// `TCP:[a->b]` -> `a->b`.
fn tcp(target: &str) -> Option<String> {
    let inner = target.strip_prefix("TCP:[")?.strip_suffix(']')?;
    inner.contains("->").then(|| inner.to_string())
}

/// The first quoted string in an argument (a buffer, or an iovec's first buffer).
fn first_string(arg: &str) -> Option<String> {
    let start = arg.find('"')?;
    unquote(&arg[start..])
}

/// Undoes strace's quoting of a string argument (enough for paths and request lines).
fn unquote(arg: &str) -> Option<String> {
    let inner = arg.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    Some(out)
}

/// An absolute path for `name`, relative to the directory annotation `base` or to `cwd`.
fn resolve(base: Option<&str>, name: &str, cwd: &Path) -> Option<PathBuf> {
    let joined = if name.starts_with('/') {
        PathBuf::from(name)
    } else {
        match base {
            Some(b) if b.starts_with('/') => Path::new(b).join(name),
            _ => cwd.join(name),
        }
    };
    Some(normalize(&joined))
}

/// Removes `.` and `..` components without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_calls_are_joined_and_annotations_become_paths() {
        let trace = r#"10317 openat(AT_FDCWD</tmp/stx>, "/tmp/d/sled/blobs/502124", O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, 0666 <unfinished ...>
10318 fdatasync(7</tmp/d/sled/db>) = 0
10317 <... openat resumed>)             = 29</tmp/d/sled/blobs/502124>
10317 write(29</tmp/d/sled/blobs/502124>, "\211y\225\262", 4) = 4
10320 recvfrom(28<TCP:[127.0.0.1:7701->127.0.0.1:55660]>, "POST /v1/batch HTTP/1.1\r\nHost"..., 8192, 0, NULL, NULL) = 142
10320 sendto(28<TCP:[127.0.0.1:7701->127.0.0.1:55660]>, "HTTP/1.1 200 OK\r\n"..., 161, MSG_NOSIGNAL, NULL, 0) = 161
10321 renameat2(AT_FDCWD</tmp/stx>, "/tmp/d/snap.1.generating", AT_FDCWD</tmp/stx>, "/tmp/d/snap.1", RENAME_NOREPLACE) = 0
10321 rename("MANIFEST.json.tmp", "MANIFEST.json") = 0
10321 mkdir("/tmp/d/sled/blobs", 0777) = -1 EEXIST (File exists)
10321 unlinkat(5</tmp/d/snapshots>, "old.snap", 0) = 0
--- SIGCHLD {si_signo=SIGCHLD} ---
"#;
        let events = parse(trace, Path::new("/tmp/d"), 0);
        let calls: Vec<&Call> = events.iter().map(|e| &e.call).collect();
        assert_eq!(
            events[1],
            Event {
                start: 0,
                end: 2,
                pid: 10317,
                call: Call::Open { path: "/tmp/d/sled/blobs/502124".into(), create: true, truncate: false }
            },
            "the split open is one event spanning both halves"
        );
        assert_eq!(calls[0], &Call::Sync { path: "/tmp/d/sled/db".into() });
        assert_eq!(calls[2], &Call::Write { path: "/tmp/d/sled/blobs/502124".into() });
        assert_eq!(
            calls[3],
            &Call::SocketRead {
                conn: "127.0.0.1:7701->127.0.0.1:55660".into(),
                data: "POST /v1/batch HTTP/1.1\r\nHost".into()
            }
        );
        assert!(matches!(calls[4], Call::SocketWrite { data, .. } if data.starts_with("HTTP/1.1 200")));
        assert_eq!(
            calls[5],
            &Call::Rename { from: "/tmp/d/snap.1.generating".into(), to: "/tmp/d/snap.1".into() }
        );
        assert_eq!(
            calls[6],
            &Call::Rename { from: "/tmp/d/MANIFEST.json.tmp".into(), to: "/tmp/d/MANIFEST.json".into() }
        );
        assert_eq!(calls[7], &Call::Unlink { path: "/tmp/d/snapshots/old.snap".into() });
        assert_eq!(calls.len(), 8, "the failed mkdir and the signal line are not events: {calls:?}");
    }
}
