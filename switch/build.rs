//! Compiles the kernel fast path (bpf/fastpath.c) with clang into $OUT_DIR/fastpath.o,
//! which `fastpath::bpf` embeds.
//!
//! Without clang (or without the libbpf headers) the crate still builds: the object is
//! left empty, a cargo warning says why, and `vswitchd --fastpath on` refuses to start
//! with the same reason (`auto` runs userspace only). Set VSWITCH_REQUIRE_FASTPATH=1
//! (CI does) to make a missing compiler a build error instead.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/fastpath.c");
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=VSWITCH_REQUIRE_FASTPATH");
    println!("cargo:rustc-check-cfg=cfg(fastpath_missing)");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("fastpath.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    match compile(&clang, &obj) {
        Ok(()) => {}
        Err(why) => {
            let msg = format!(
                "kernel fast path compiled out: {why} (install clang and libbpf-dev, \
                 e.g. `apt-get install clang libbpf-dev`)"
            );
            if std::env::var_os("VSWITCH_REQUIRE_FASTPATH").is_some_and(|v| v == "1") {
                panic!("{msg}");
            }
            println!("cargo:warning={msg}");
            std::fs::write(&obj, b"").expect("write empty fast path object");
            std::fs::write(out.join("fastpath.why"), why).expect("write reason");
            println!("cargo:rustc-cfg=fastpath_missing");
            return;
        }
    }
    std::fs::write(out.join("fastpath.why"), "").expect("write reason");
}

/// `clang -O2 -g -target bpf -c bpf/fastpath.c -o OBJ`, with the multiarch include dir
/// (asm/types.h) that a BPF target does not search by itself.
fn compile(clang: &str, obj: &std::path::Path) -> Result<(), String> {
    let mut cmd = Command::new(clang);
    cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"]);
    if let Some(dir) = multiarch_include() {
        cmd.arg(format!("-I{dir}"));
    }
    cmd.args(["-c", "bpf/fastpath.c", "-o"]).arg(obj);
    let res = cmd
        .output()
        .map_err(|e| format!("cannot run {clang}: {e}"))?;
    if !res.status.success() {
        let err = String::from_utf8_lossy(&res.stderr);
        let first = err
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or("no message");
        return Err(format!("{clang} failed: {first}"));
    }
    Ok(())
}

fn multiarch_include() -> Option<String> {
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").ok()?.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        _ => return None,
    };
    let dir = format!("/usr/include/{arch}");
    std::path::Path::new(&dir).is_dir().then_some(dir)
}
