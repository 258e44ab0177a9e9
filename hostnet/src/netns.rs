//! Acting inside another network namespace without moving the whole process.
//!
//! A network namespace belongs to a thread, and a socket belongs for its whole life to
//! the namespace it was created in. So pipework enters a namespace on a short-lived
//! thread of its own (`setns(2)` on that thread only), creates what it needs there — a
//! route netlink socket, a UDP or packet socket, a child process — and hands it back to
//! the main thread, whose namespace never changes.

use anyhow::{anyhow, Context, Result};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::path::{Path, PathBuf};

/// A network namespace, by a path that names it (`/proc/PID/ns/net`,
/// `/run/netns/NAME`), opened once so it cannot change under us.
#[derive(Debug)]
pub struct NetNs {
    path: PathBuf,
    file: File,
}

impl NetNs {
    pub fn open(path: &Path) -> Result<NetNs> {
        let file = File::open(path)
            .with_context(|| format!("open network namespace {}", path.display()))?;
        Ok(NetNs {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Run `f` on a thread that has entered this namespace; return its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&self.file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("enter network namespace {}", self.path.display()))?;
                f()
            })
            .join()
            .map_err(|_| anyhow!("thread in {} panicked", self.path.display()))?
        })
    }
}
