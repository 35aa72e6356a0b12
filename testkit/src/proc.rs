//! A child process owned by a test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long [`Proc::stop`] gives a process to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A child process, SIGKILLed when dropped. Its stdout and stderr go to
/// `<dir>/<name>.log`, printed when the test panics.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Starts `program args` with `EDGEWATCH_LOG=info`.
    pub fn spawn(name: &str, program: &str, args: &[&str], dir: &Path) -> Proc {
        let mut cmd = Command::new(program);
        cmd.args(args).env("EDGEWATCH_LOG", "info");
        Proc::spawn_command(name, cmd, dir)
    }

    /// Starts a prepared command (arguments, environment, working directory are the
    /// caller's); stdio is redirected to the log.
    pub fn spawn_command(name: &str, mut cmd: Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", log.display()));
        let err = out.try_clone().expect("log file descriptor");
        let child = cmd
            .stdout(out)
            .stderr(err)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name} ({:?}): {e}", cmd.get_program()));
        Proc {
            name: name.to_string(),
            log,
            child: Some(child),
        }
    }

    /// The process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The process's peak resident set size (`VmHWM` of `/proc/<pid>/status`), bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no VmHWM in {path}"));
        kib * 1024
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL and reap, as a power loss or an OOM kill would end it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then asserts the process exits with status 0 within [`STOP_TIMEOUT`]:
    /// a clean stop is part of what is tested. Nothing to do once it was stopped or killed.
    pub fn stop(&mut self) {
        self.stop_within(STOP_TIMEOUT);
    }

    /// [`Proc::stop`] with its own timeout.
    pub fn stop_within(&mut self, timeout: Duration) {
        if self.child.is_none() {
            return;
        }
        let status = self.terminate(timeout);
        assert!(
            status.success(),
            "{} did not exit cleanly on SIGTERM: {status}\n---- {} log ----\n{}",
            self.name,
            self.name,
            self.log_text()
        );
    }

    /// SIGTERM and the exit status, whatever it is; panics (after a SIGKILL) if the
    /// process is still running after `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.pid();
        assert!(pid != 0, "{} is not running", self.name);
        // SAFETY: kill(2) on our own child's pid; it has not been reaped (we hold it).
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Waits for the process to exit on its own; panics (after a SIGKILL) if it is still
    /// running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut c = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} was already stopped", self.name));
        let deadline = Instant::now() + timeout;
        loop {
            match c.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!(
                        "{} still running {timeout:?} after it was asked to exit\n---- {} log ----\n{}",
                        self.name,
                        self.name,
                        self.log_text()
                    );
                }
                Err(e) => panic!("waiting for {}: {e}", self.name),
            }
        }
    }

    /// Everything the process wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log_text());
        }
    }
}

/// VmRSS of a process in bytes, from `/proc/<pid>/status`; panics when it cannot
/// be read (the process is gone).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    kib * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell that exits with `code` on SIGTERM, returned once its trap is set.
    fn on_term_exit(code: u8, dir: &Path) -> Proc {
        let ready = dir.join("trap-set");
        let script = format!(
            "trap 'exit {code}' TERM; touch '{}'; while :; do sleep 0.05; done",
            ready.display()
        );
        let p = Proc::spawn("sh", "sh", &["-c", &script], dir);
        crate::eventually_blocking(Duration::from_secs(10), "the shell's trap", || {
            ready.exists()
        });
        p
    }

    #[test]
    fn stop_accepts_a_clean_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = on_term_exit(0, dir.path());
        p.stop();
        assert_eq!(p.pid(), 0);
        p.stop();
    }

    #[test]
    #[should_panic(expected = "did not exit cleanly on SIGTERM")]
    fn stop_fails_on_an_unclean_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        on_term_exit(3, dir.path()).stop();
    }
}
