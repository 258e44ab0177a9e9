//! Test runner for the netns tests: re-executes the test binary under `unshare --net`
//! (always: `/proc/1/ns/net` cannot be read in every sandbox, so the root namespace is
//! never detected, only avoided), then runs the tests with libtest-mimic.
//!
//! Without root the tests are reported as ignored, unless `VSWITCH_REQUIRE_NETNS=1`
//! (CI sets it), which turns that into a failure: CI cannot pass by skipping.

use libtest_mimic::{Arguments, Failed, Trial};
use std::process::{Command, ExitCode};

/// Set in the re-executed child.
pub const INNER_ENV: &str = "VSWITCH_LAB_INNER";
const REQUIRE_ENV: &str = "VSWITCH_REQUIRE_NETNS";

/// A named test.
pub type TestFn = fn() -> anyhow::Result<()>;

fn can_run() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    for tool in ["ip", "unshare", "ping"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false);
        if !found {
            return Err(format!("{tool} not installed"));
        }
    }
    Ok(())
}

/// Entry point of a netns test binary (`harness = false`).
pub fn main(tests: &[(&'static str, TestFn)]) -> ExitCode {
    let required = std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");
    let usable = can_run();
    if std::env::var_os(INNER_ENV).is_none() && usable.is_ok() {
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: cannot find the test binary: {e}");
                return ExitCode::FAILURE;
            }
        };
        let status = Command::new("unshare")
            .arg("--net")
            .arg("--")
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .env(INNER_ENV, "1")
            .status();
        return match status {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            Ok(s) => ExitCode::from(s.code().unwrap_or(1).clamp(1, 255) as u8),
            Err(e) => {
                eprintln!("error: cannot re-execute under unshare --net: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = Arguments::from_args();
    let trials = tests
        .iter()
        .map(|(name, f)| {
            let f = *f;
            let reason = usable.clone().err();
            let t = Trial::test(*name, move || {
                if let Some(r) = &reason {
                    return Err(Failed::from(format!(
                        "{REQUIRE_ENV}=1 but netns tests cannot run: {r}"
                    )));
                }
                f().map_err(|e| Failed::from(format!("{e:#}")))
            });
            if usable.is_err() && !required {
                t.with_ignored_flag(true)
            } else {
                t
            }
        })
        .collect();
    if let Err(r) = &usable {
        if !required {
            eprintln!("netns tests ignored: {r} (set {REQUIRE_ENV}=1 to make this a failure)");
        }
    }
    libtest_mimic::run(&args, trials).exit_code()
}
