//! Replays the checked-in fuzz corpora (fuzz/corpus/, grown and minimized by
//! `cargo fuzz`) through the same entry points the fuzz targets call, so every input
//! that ever found a crash or new coverage runs in CI on stable Rust.

use std::path::PathBuf;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = e.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        f(&data);
        n += 1;
    }
    assert!(n > 0, "empty corpus {}", dir.display());
}

#[test]
fn pipeline_corpus() {
    replay("pipeline", vswitch::pipeline::rig::fuzz_pipeline);
}

#[test]
fn pipeline_nat6_corpus() {
    replay("pipeline_nat6", vswitch::pipeline::rig::fuzz_pipeline_nat6);
}

#[test]
fn dhcp_corpus() {
    replay("dhcp", vswitch::service::dhcp::fuzz);
}

#[test]
fn dns_corpus() {
    replay("dns", vswitch::service::dns::fuzz);
}

#[test]
fn control_corpus() {
    replay("control", vswitch_proto::fuzz_decode);
}

#[test]
fn gso_corpus() {
    replay("gso", vswitch::wire::gso::fuzz);
}

#[test]
fn ndp_corpus() {
    replay("ndp", vswitch::service::ndp::fuzz);
}

#[test]
fn dhcp6_corpus() {
    replay("dhcp6", vswitch::service::dhcp6::fuzz);
}
