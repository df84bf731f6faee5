//! A benchmarked server process: started, its address read from its `listening on ADDR` line,
//! stopped. Shared by the benchmarks through `#[path = "support/server.rs"]`.

use std::{
    io::{self, BufRead, BufReader},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// A running server, killed if it still runs when dropped.
pub(crate) struct Server {
    child: Child,
    /// The address it printed in its `listening on ADDR` line.
    pub(crate) addr: String,
}

impl Server {
    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts the server and waits for its `listening on ADDR` line.
    pub(crate) fn start(mut command: Command) -> io::Result<Self> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout is piped");
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            return Err(io::Error::other(format!("the server printed {line:?}")));
        };
        let addr = addr.to_owned();
        Ok(Server { child, addr })
    }

    /// Stops the server with SIGTERM, which every benchmarked server exits 0 on; a server that
    /// already exited failed during the run.
    pub(crate) fn stop(&mut self) -> io::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            return Err(io::Error::other(format!(
                "the server exited during the run: {status}"
            )));
        }
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return match status.success() {
                    true => Ok(()),
                    false => Err(io::Error::other(format!("the server exited with {status}"))),
                };
            }
            thread::sleep(Duration::from_millis(10));
        }
        Err(io::Error::other(
            "the server did not exit within 10 s of SIGTERM",
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
