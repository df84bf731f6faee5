//! `sb-child`: the child program of switchboard's subprocess tests, one behaviour per command.
//!
//! ```text
//! sb-child cat                   copy stdin to stdout until EOF, then exit 0
//! sb-child interleave N          write "out I\n" to stdout and "err I\n" to stderr, I = 0..N,
//!                                alternating, each flushed
//! sb-child exit CODE             exit with CODE
//! sb-child raise SIGNAL          kill itself with signal number SIGNAL
//! sb-child hang                  sleep forever (until killed)
//! sb-child grandchild MS         start `sb-child hold MS`, which inherits stdout and stderr and
//!                                keeps them open MS milliseconds; exit 0 at once
//! sb-child hold MS               sleep MS milliseconds, print "released\n", exit 0
//! sb-child flood BYTES           write BYTES bytes of 'x' to stdout (0: forever), exit 0
//! sb-child close-stdin MS        close stdin, print "closed\n", sleep MS milliseconds, exit 0
//! sb-child count-stdin           read stdin to EOF, print the byte count, exit 0
//! ```
//!
//! Every write error (a broken pipe) exits with status 3.
#![forbid(unsafe_code)]

use std::{
    env,
    io::{self, Read, Write},
    process::{Command, ExitCode},
    thread,
    time::Duration,
};

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let arg = |i: usize| -> u64 {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| usage())
    };
    let result = match args.first().map(String::as_str) {
        Some("cat") => io::copy(&mut io::stdin().lock(), &mut io::stdout().lock()).map(drop),
        Some("interleave") => interleave(arg(1)),
        Some("exit") => return ExitCode::from(arg(1) as u8),
        Some("raise") => {
            let signal =
                rustix::process::Signal::from_named_raw(arg(1) as i32).unwrap_or_else(|| usage());
            let _ = rustix::process::kill_process(rustix::process::getpid(), signal);
            thread::sleep(Duration::from_secs(10));
            return ExitCode::from(4);
        }
        Some("hang") => loop {
            thread::sleep(Duration::from_secs(3600));
        },
        Some("grandchild") => Command::new(env::current_exe().expect("own path"))
            .args(["hold", &arg(1).to_string()])
            .stdin(std::process::Stdio::null())
            .spawn()
            .map(drop),
        Some("hold") => {
            thread::sleep(Duration::from_millis(arg(1)));
            io::stdout().write_all(b"released\n")
        }
        Some("flood") => flood(arg(1)),
        Some("close-stdin") => close_stdin(arg(1)),
        Some("count-stdin") => {
            let mut count = 0u64;
            let mut buf = vec![0; 64 * 1024];
            let mut stdin = io::stdin().lock();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => count += n as u64,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return fail(err),
                }
            }
            writeln!(io::stdout(), "{count}")
        }
        _ => usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(err),
    }
}

fn fail(err: io::Error) -> ExitCode {
    let _ = writeln!(io::stderr(), "sb-child: {err}");
    ExitCode::from(3)
}

fn usage() -> ! {
    eprintln!("usage: sb-child COMMAND [ARG] (see the source for the commands)");
    std::process::exit(2)
}

fn interleave(lines: u64) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    for i in 0..lines {
        writeln!(out, "out {i}")?;
        out.flush()?;
        writeln!(err, "err {i}")?;
        err.flush()?;
    }
    Ok(())
}

fn flood(bytes: u64) -> io::Result<()> {
    let chunk = vec![b'x'; 64 * 1024];
    let mut out = io::stdout().lock();
    let mut left = bytes;
    loop {
        let n = if bytes == 0 {
            chunk.len()
        } else {
            left.min(chunk.len() as u64) as usize
        };
        if n == 0 {
            return out.flush();
        }
        out.write_all(&chunk[..n])?;
        if bytes != 0 {
            left -= n as u64;
        }
    }
}

fn close_stdin(ms: u64) -> io::Result<()> {
    // Dropping the only descriptor of stdin: the process's fd 0, duplicated out and closed,
    // then replaced by /dev/null so nothing else reuses the number.
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    io::stdout().write_all(b"closed\n")?;
    io::stdout().flush()?;
    thread::sleep(Duration::from_millis(ms));
    Ok(())
}
