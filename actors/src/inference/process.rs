//! One inference worker process seen from the node: started with piped stdin/stdout (stderr is
//! the node's, so its log lands in the node's), waited for until it says `Ready`, then asked one
//! request at a time. A worker that dies, garbles a frame or overruns its deadline is lost: the
//! caller learns why, and the pool starts another.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::protocol::{read_frame_async, write_frame_async, ModelInfo, Reply, Request};

/// How a worker is started.
#[derive(Clone, Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// How long a worker may take to load its model.
    pub start_timeout: Duration,
}

/// Why a worker is gone.
#[derive(Debug)]
pub enum Lost {
    /// It could not start or load its model.
    Start(String),
    /// It died or broke the protocol during a request.
    Crash(String),
    /// It did not answer a request in time and was killed.
    Timeout(Duration),
}

impl Lost {
    pub fn reason(&self) -> &'static str {
        match self {
            Lost::Start(_) => "start",
            Lost::Crash(_) => "crash",
            Lost::Timeout(_) => "timeout",
        }
    }
}

pub struct WorkerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
    pub model: ModelInfo,
}

impl WorkerProcess {
    /// Starts a worker and waits for its `Ready`.
    pub async fn start(launch: &Launch) -> Result<WorkerProcess, Lost> {
        let mut child = Command::new(&launch.program)
            .args(&launch.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Lost::Start(format!("could not run {}: {e}", launch.program.display())))?;
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| Lost::Start("the worker has no stdout".into()))?;
        let mut stdout = BufReader::new(stdout);
        let first = tokio::time::timeout(launch.start_timeout, read_frame_async::<Reply>(&mut stdout)).await;
        let failure = match first {
            Ok(Ok(Some(Reply::Ready(model)))) => {
                return Ok(WorkerProcess { child, stdin, stdout, pid, model });
            }
            Ok(Ok(Some(Reply::Failed { detail }))) => format!("it could not load its model: {detail}"),
            Ok(Ok(Some(other))) => format!("it began with {other:?} instead of Ready"),
            Ok(Ok(None)) | Ok(Err(_)) => {
                format!("it exited before it was ready ({})", exit_status(&mut child).await)
            }
            Err(_) => format!("it was not ready within {} ms", launch.start_timeout.as_millis()),
        };
        let _ = child.start_kill();
        Err(Lost::Start(format!("the inference worker (pid {pid}) did not start: {failure}")))
    }

    /// Sends one request and waits up to `deadline` for its reply. Any error loses the worker
    /// (the frame stream can no longer be trusted); the caller drops it.
    pub async fn ask(&mut self, request: &Request, deadline: Duration) -> Result<Reply, Lost> {
        let stdin = self.stdin.as_mut().ok_or_else(|| Lost::Crash("the worker's stdin is closed".into()))?;
        let exchange = async {
            write_frame_async(stdin, request).await?;
            read_frame_async::<Reply>(&mut self.stdout).await
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(Ok(Some(reply))) => Ok(reply),
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = exit_status(&mut self.child).await;
                Err(Lost::Crash(format!(
                    "the inference worker (pid {}) died during the request ({status}); it is being restarted",
                    self.pid
                )))
            }
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                Err(Lost::Timeout(deadline))
            }
        }
    }

    /// Closes the worker's stdin (its signal to exit) and reaps it, killing it if it lingers.
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_err() {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// How a child ended, for messages ("signal: 9 (SIGKILL)", "exit status: 134"), waiting briefly.
async fn exit_status(child: &mut Child) -> String {
    match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
        Ok(Ok(status)) => status.to_string(),
        Ok(Err(e)) => format!("its status is unknown: {e}"),
        Err(_) => {
            let _ = child.start_kill();
            "it stopped answering and was killed".to_string()
        }
    }
}
