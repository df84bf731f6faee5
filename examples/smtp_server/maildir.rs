//! Storing messages in a Maildir: each message is written whole under `tmp/`, synced, then
//! renamed into `new/`, so a reader of `new/` never sees part of a message.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    process,
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// A Maildir this process delivers to.
#[derive(Debug, Clone)]
pub(crate) struct Maildir {
    root: PathBuf,
    /// The host part of the file names, with `/` and `:` escaped as the Maildir convention says.
    host: String,
}

impl Maildir {
    /// Opens the Maildir at `root`, creating it and its `tmp`, `new` and `cur` directories as
    /// needed.
    pub(crate) fn create(root: &Path, hostname: &str) -> io::Result<Self> {
        for sub in ["tmp", "new", "cur"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("cannot create {}: {err}", dir.display()),
                )
            })?;
        }
        Ok(Maildir {
            root: root.to_owned(),
            host: hostname.replace('/', "\\057").replace(':', "\\072"),
        })
    }

    /// A new message id, unique among the messages of every process on this host: the time,
    /// the process id and a counter, as in Maildir file names.
    pub(crate) fn new_id() -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{}.M{}P{}Q{}",
            now.as_secs(),
            now.subsec_micros(),
            process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Stores the concatenation of `parts` as the message `id` and returns its path under
    /// `new/`. Blocking file I/O: run it off the actors' threads.
    pub(crate) fn deliver(&self, id: &str, parts: &[&[u8]]) -> io::Result<PathBuf> {
        let name = format!("{id}.{}", self.host);
        let tmp = self.root.join("tmp").join(&name);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut file| {
                for part in parts {
                    file.write_all(part)?;
                }
                file.sync_all()
            });
        let new = self.root.join("new").join(&name);
        match written.and_then(|()| fs::rename(&tmp, &new)) {
            Ok(()) => Ok(new),
            Err(err) => {
                let _ = fs::remove_file(&tmp);
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_land_whole_in_new_and_tmp_is_left_empty() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("mail");
        let maildir = Maildir::create(&root, "mx/1:25").unwrap();
        let (first, second) = (Maildir::new_id(), Maildir::new_id());
        assert_ne!(first, second);
        let path = maildir
            .deliver(&first, &[b"Head: 1\r\n", b"\r\nbody\r\n"])
            .unwrap();
        assert_eq!(path.parent().unwrap(), root.join("new"));
        assert!(path.to_str().unwrap().ends_with("mx\\0571\\07225"));
        assert_eq!(fs::read(&path).unwrap(), b"Head: 1\r\n\r\nbody\r\n");
        assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        assert!(root.join("cur").is_dir());
    }
}
