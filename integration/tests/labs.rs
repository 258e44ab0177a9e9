//! The example labs in docs/labs/, brought up and down with `vswitch-lab`.

use anyhow::{ensure, Result};
use std::path::PathBuf;
use std::process::Command;
use vswitch_integration::{bin, run, run_ok, wait_until};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        ("three_hosts_vxlan_mesh_lab", three_hosts_vxlan_mesh_lab),
        ("mynet_lab_names_dhcp_routing", mynet_lab_names_dhcp_routing),
    ])
}

fn lab_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/labs")
        .join(name)
}

/// Runs `vswitch-lab down FILE` when dropped, so a failed test leaves nothing behind.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        if let Ok(b) = bin("vswitch-lab") {
            let _ = Command::new(b).arg("down").arg(&self.0).output();
        }
    }
}

fn lab(args: &[&str], file: &PathBuf) -> Result<std::process::Output> {
    run(Command::new(bin("vswitch-lab")?).args(args).arg(file))
}

fn ns_exec(ns: &str, cmd: &str) -> Result<String> {
    run_ok(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", cmd]))
}

fn namespaces(prefix: &str) -> Result<usize> {
    let out = run_ok(Command::new("ip").args(["netns", "list"]))?;
    Ok(out.lines().filter(|l| l.starts_with(prefix)).count())
}

fn three_hosts_vxlan_mesh_lab() -> Result<()> {
    let f = lab_file("three.toml");
    let guard = Down(f.clone());
    let up = lab(&["up"], &f)?;
    ensure!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let summary = String::from_utf8_lossy(&up.stdout);
    ensure!(
        summary.contains("a3         h3    overlay  10.0.0.13/24"),
        "{summary}"
    );
    for (from, to) in [
        ("vl-three-a1", "10.0.0.12"),
        ("vl-three-a1", "10.0.0.13"),
        ("vl-three-a2", "10.0.0.13"),
        ("vl-three-a3", "10.0.0.254"),
    ] {
        let ok = wait_until(std::time::Duration::from_secs(10), || {
            ns_exec(from, &format!("ping -c 1 -W 1 {to}")).is_ok()
        });
        ensure!(ok, "{from} cannot reach {to}");
    }
    let again = lab(&["up"], &f)?;
    ensure!(
        !again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already up")
    );
    ensure!(lab(&["status"], &f)?.status.success());
    let down = lab(&["down"], &f)?;
    ensure!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    ensure!(namespaces("vl-three-")? == 0, "namespaces left behind");
    ensure!(!lab(&["status"], &f)?.status.success(), "status after down");
    drop(guard);
    Ok(())
}

fn mynet_lab_names_dhcp_routing() -> Result<()> {
    let f = lab_file("mynet.toml");
    let _guard = Down(f.clone());
    let up = lab(&["up"], &f)?;
    ensure!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let dig = ns_exec("vl-mynet-client", "dig +short +time=2 @10.1.0.1 web")?;
    ensure!(dig.trim() == "10.1.0.10", "{dig}");
    let code = wait_until(std::time::Duration::from_secs(10), || {
        ns_exec(
            "vl-mynet-client",
            "curl -s -m 2 -o /dev/null -w '%{http_code}' http://web/",
        )
        .is_ok_and(|c| c == "200")
    });
    ensure!(code, "the client could not fetch http://web/");
    ns_exec("vl-mynet-db", "ping -c 1 -W 2 10.1.0.10")?;
    let dot = run_ok(Command::new(bin("vswitch-lab")?).arg("graph").arg(&f))?;
    ensure!(dot.starts_with("graph \"mynet\""), "{dot}");
    let server = run_ok(Command::new("ps").args(["-eo", "pid,args"]))?;
    let before = server
        .lines()
        .filter(|l| l.contains("http.server -b 10.1.0.10"))
        .count();
    ensure!(before >= 1, "the lab's web server is not running");
    ensure!(lab(&["down"], &f)?.status.success());
    ensure!(namespaces("vl-mynet-")? == 0);
    // `run` commands end with the lab (the whole process group).
    let gone = wait_until(std::time::Duration::from_secs(5), || {
        run_ok(Command::new("ps").args(["-eo", "pid,args"]))
            .map(|o| {
                o.lines()
                    .filter(|l| l.contains("http.server -b 10.1.0.10"))
                    .count()
                    == 0
            })
            .unwrap_or(false)
    });
    ensure!(gone, "the web server outlived `vswitch-lab down`");
    Ok(())
}
