//! Driving a runtime's command line as a child process: a call whose output is
//! captured, a `load` fed on stdin while its output is drained, and a `run` on the
//! caller's terminal or captured. Every failure becomes a [`RuntimeError`] that reads as one line.

use std::io::{self, BufWriter, Read, Write};
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};

use super::archive::LoadArchiveError;
use super::{RunOutcome, RuntimeError};

/// How much of the archive is buffered on its way into the runtime's stdin.
const PIPE_BUFFER: usize = 1 << 20;

/// Ends an archive whose writing failed. Whatever the tar reader is in the middle
/// of, these bytes cannot make the stream whole: inside an entry they run out before
/// its announced size or spill into a header block, and a header of 0xff bytes fails
/// its checksum (only a zero block may end an archive).
const POISON: [u8; 1024] = [0xff; 1024];

/// One runtime's command line: the program and the options every call starts with.
#[derive(Debug, Clone)]
pub(crate) struct Cli {
    /// `podman` or `docker`, as messages name it.
    pub runtime: &'static str,
    pub program: String,
    pub global_args: Vec<String>,
}

/// What a finished call printed.
pub(crate) struct Captured {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    fn command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.global_args)
            .args(args.iter().map(AsRef::as_ref));
        command
    }

    fn spawn_error(&self, source: io::Error) -> RuntimeError {
        if source.kind() == io::ErrorKind::NotFound {
            RuntimeError::NotInstalled {
                runtime: self.runtime.to_string(),
                program: self.program.clone(),
            }
        } else {
            RuntimeError::Spawn {
                program: self.program.clone(),
                source,
            }
        }
    }

    /// `what` failed, in the program's own words.
    pub fn failed(&self, what: &str, stderr: &str) -> RuntimeError {
        RuntimeError::Failed {
            runtime: self.runtime.to_string(),
            command: what.to_string(),
            message: one_line(stderr),
        }
    }

    /// Runs `args` to the end with no stdin, whatever its exit status.
    pub fn capture<S: AsRef<str>>(&self, args: &[S]) -> Result<Captured, RuntimeError> {
        let output = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(e))?;
        Ok(Captured {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Runs `args` with `write` producing its stdin, while its stdout and stderr are
    /// drained on two threads (so neither side can block the other). When `write`
    /// fails on its own side (a corrupt blob, say), [`POISON`] follows what was
    /// written, so the runtime fails on its own and cleans up after itself (killing it
    /// would leave podman's spool file in /var/tmp) and cannot take a truncated
    /// archive for a whole one; that failure is then ours to report. When the runtime
    /// stops reading, its own message is the error.
    pub fn feed<S: AsRef<str>, T>(
        &self,
        what: &str,
        args: &[S],
        write: impl FnOnce(&mut dyn Write) -> Result<T, LoadArchiveError>,
    ) -> Result<T, RuntimeError> {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_error(e))?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let stdin = child.stdin.take().expect("stdin is piped");
        let mut sink = Sink {
            inner: BufWriter::with_capacity(PIPE_BUFFER, stdin),
            broken: false,
        };
        let result = write(&mut sink).and_then(|value| {
            sink.flush().map_err(LoadArchiveError::Write)?;
            Ok(value)
        });
        if result.is_err() && !sink.broken {
            let _ = sink.write_all(&POISON).and_then(|()| sink.flush());
        }
        let broken = sink.broken;
        drop(sink); // end of input
        let status = child.wait().map_err(|e| self.spawn_error(e))?;
        let _ = stdout.join();
        let stderr = stderr.join().unwrap_or_default();
        match result {
            Err(e) if !broken => Err(RuntimeError::Archive(e)),
            _ if !status.success() => Err(self.failed(what, &stderr)),
            Err(e) => Err(RuntimeError::Archive(e)),
            Ok(value) => Ok(value),
        }
    }

    /// Runs `args` on the caller's stdin, stdout and stderr, or with its stdout and
    /// stderr captured; returns its exit code (128 + the signal's number when a
    /// signal ended it).
    pub fn run<S: AsRef<str>>(
        &self,
        args: &[S],
        capture: bool,
    ) -> Result<RunOutcome, RuntimeError> {
        let mut command = self.command(args);
        let (status, stdout, stderr) = if capture {
            let output = command
                .stdin(Stdio::null())
                .output()
                .map_err(|e| self.spawn_error(e))?;
            (output.status, output.stdout, output.stderr)
        } else {
            let status = command.status().map_err(|e| self.spawn_error(e))?;
            (status, Vec::new(), Vec::new())
        };
        let exit_code = status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        });
        Ok(RunOutcome {
            exit_code,
            stdout,
            stderr,
        })
    }
}

/// The runtime's stdin, remembering whether a write to it failed (the runtime
/// stopped reading) as opposed to the archive's source failing.
struct Sink<W: Write> {
    inner: W,
    broken: bool,
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| self.broken = true)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.broken = true)
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}

/// A program's error output as one line: progress lines before the first `Error`
/// line are dropped, the rest joined, and a leading `Error: ` removed.
pub(crate) fn one_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines
        .iter()
        .position(|l| l.to_ascii_lowercase().starts_with("error"))
        .unwrap_or(0);
    let joined = lines[start..].join(" ");
    let text = joined.strip_prefix("Error: ").unwrap_or(&joined).trim();
    if text.is_empty() {
        "it printed no error message".to_string()
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn error_output_becomes_one_line() {
        let podman =
            "Getting image source signatures\nError: payload does not match:\n * oci: bad\n";
        assert_eq!(one_line(podman), "payload does not match: * oci: bad");
        assert_eq!(
            one_line("Cannot connect to the Docker daemon. Is it running?\n"),
            "Cannot connect to the Docker daemon. Is it running?"
        );
        assert_eq!(one_line(""), "it printed no error message");
    }
}
