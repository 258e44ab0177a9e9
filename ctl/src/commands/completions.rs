//! `completions SHELL` and `man DIR`: shell completions and manual pages generated from
//! this command line's own definition (clap_complete, clap_mangen), so they never
//! drift from it. Nothing is sent to vswitchd.

use crate::error::Error;
use clap::CommandFactory;
use std::path::PathBuf;

/// Print a shell completion script (e.g. `vswitchctl completions bash > /etc/bash_completion.d/vswitchctl`)
#[derive(clap::Args, Debug)]
pub struct Completions {
    /// The shell
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

impl Completions {
    pub fn run(&self) -> Result<String, Error> {
        let mut cmd = crate::cli::Args::command();
        let mut out = Vec::new();
        clap_complete::generate(self.shell, &mut cmd, "vswitchctl", &mut out);
        String::from_utf8(out).map_err(|e| Error::Failed(format!("completion script: {e}")))
    }
}

/// Write manual pages (vswitchctl.1 and one per command) into DIR
#[derive(clap::Args, Debug)]
pub struct Man {
    /// Directory to write the pages into (e.g. /usr/local/share/man/man1)
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

impl Man {
    pub fn run(&self) -> Result<String, Error> {
        let fail = |e: std::io::Error| {
            Error::Failed(format!(
                "cannot write manual pages to {}: {e}",
                self.dir.display()
            ))
        };
        std::fs::create_dir_all(&self.dir).map_err(fail)?;
        clap_mangen::generate_to(crate::cli::Args::command(), &self.dir).map_err(fail)?;
        Ok(String::new())
    }
}
