//! The vswitchctl binary end to end against a stand-in for vswitchd: a Unix socket in a
//! temporary directory that records the request line and answers with a canned reply.
//! No daemon, no root, no network namespace needed.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vswitchctl");

/// Answers one request with `reply` (a full reply object); joins to the request line.
struct FakeDaemon {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    handle: JoinHandle<Value>,
}

impl FakeDaemon {
    fn start(reply: Value) -> FakeDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("vswitchd.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let handle = std::thread::spawn(move || {
            // Poll with a deadline, so a client that never connects fails the test
            // instead of hanging it.
            listener.set_nonblocking(true).expect("nonblocking");
            let deadline = Instant::now() + Duration::from_secs(20);
            let stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(Instant::now() < deadline, "vswitchctl never connected");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            };
            stream.set_nonblocking(false).expect("blocking");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            reader.read_line(&mut line).expect("read request");
            let mut w = stream;
            w.write_all(format!("{reply}\n").as_bytes())
                .expect("write reply");
            serde_json::from_str(&line).expect("request is JSON")
        });
        FakeDaemon {
            _dir: dir,
            socket,
            handle,
        }
    }

    fn ok(result: Value) -> FakeDaemon {
        Self::start(json!({"version": 1, "ok": true, "result": result}))
    }

    fn err(msg: &str) -> FakeDaemon {
        Self::start(json!({"version": 1, "ok": false, "error": msg}))
    }

    /// Run vswitchctl with `--socket` first; returns its output and the request sent.
    fn run(self, args: &[&str]) -> (Output, Value) {
        let out = ctl(&self.socket, args);
        let request = self.handle.join().expect("fake daemon thread");
        (out, request)
    }
}

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("VSWITCH_SOCK")
        .output()
        .expect("run vswitchctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn bridge(name: &str) -> Value {
    json!({"name": name, "subnet": null, "gateway": null, "dhcp": null,
           "isolated": false, "mtu": 1500, "ports": [],
           "fdb_entries": 0, "fdb_capacity": 8192, "fdb_evictions": 0})
}

#[test]
fn list_br_human_and_json() {
    let (o, req) = FakeDaemon::ok(json!([bridge("br1"), bridge("wan")])).run(&["list-br"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "br1\nwan\n");
    assert_eq!(stderr(&o), "");
    assert_eq!(req, json!({"version": 1, "cmd": "list-br"}));

    let (o, _) = FakeDaemon::ok(json!([bridge("br1")])).run(&["list-br", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON on stdout");
    assert_eq!(v, json!([bridge("br1")]));
}

#[test]
fn add_br_sends_the_request_and_prints_nothing() {
    let (o, req) = FakeDaemon::ok(bridge("br1")).run(&[
        "add-br",
        "br1",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
        "--dhcp",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        req,
        json!({"version": 1, "cmd": "add-br", "name": "br1", "subnet": "10.0.0.0/24",
               "gateway": "10.0.0.1", "dhcp": "", "isolated": false})
    );
}

#[test]
fn mutations_print_their_result_with_json() {
    let (o, _) = FakeDaemon::ok(bridge("br1")).run(&["--json", "add-br", "br1"]);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(v, bridge("br1"));
    let (o, req) = FakeDaemon::ok(Value::Null).run(&["del-br", "br1", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "null\n");
    assert_eq!(req, json!({"version": 1, "cmd": "del-br", "name": "br1"}));
}

#[test]
fn add_port_request() {
    let (o, req) = FakeDaemon::ok(Value::Null).run(&[
        "add-port", "br1", "tap0", "--type", "tap", "--trunks", "10,20",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        req,
        json!({"version": 1, "cmd": "add-port", "bridge": "br1", "port": "tap0",
               "type": "tap", "trunks": [10, 20]})
    );
}

#[test]
fn fdb_flush_counts() {
    let (o, req) = FakeDaemon::ok(json!({"flushed": 3})).run(&["fdb-flush", "br1"]);
    assert_eq!(stdout(&o), "flushed 3 entries\n");
    assert_eq!(req["cmd"], "fdb-flush");
    assert_eq!(req["bridge"], "br1");
}

#[test]
fn daemon_error_is_one_line_exit_1() {
    let (o, _) = FakeDaemon::err("no such bridge: br9").run(&["add-port", "br9", "v1"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "error: no such bridge: br9\n");
    assert_eq!(stdout(&o), "");

    let (o, _) = FakeDaemon::err("no such bridge: br9").run(&["del-br", "br9", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "error: no such bridge: br9\n");
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON error");
    assert_eq!(v, json!({"error": "no such bridge: br9"}));
}

#[test]
fn reply_of_the_wrong_shape_is_an_error() {
    let (o, _) = FakeDaemon::ok(json!({"unexpected": true})).run(&["list-br"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.starts_with("error: bad reply from vswitchd: "), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn socket_from_environment() {
    let fake = FakeDaemon::ok(json!([]));
    let o = Command::new(BIN)
        .arg("list-br")
        .env("VSWITCH_SOCK", &fake.socket)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(fake.handle.join().expect("thread")["cmd"], "list-br");
}

#[test]
fn no_daemon_says_how_to_start_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("none.sock");
    let o = ctl(&sock, &["show"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.starts_with("error: vswitchd is not running"), "{e}");
    assert!(e.contains("start it with `vswitchd --socket"), "{e}");
}

#[test]
fn argument_errors_are_one_line_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("none.sock");
    for (args, want) in [
        (
            &["frobnicate"][..],
            "error: unrecognized subcommand 'frobnicate'\n",
        ),
        (&[], "error: missing command (see 'vswitchctl --help')\n"),
        (
            &["add-port", "b", "p", "--tag", "5000"],
            "error: bad VLAN id 5000: must be 1..4094\n",
        ),
        (
            &["add-port", "b", "p", "--tag", "3", "--trunks", "4"],
            "error: the argument '--tag <VID>' cannot be used with '--trunks <VID,VID..>'\n",
        ),
        (
            &["del-br"],
            "error: the following required arguments were not provided: <BR>\n",
        ),
    ] {
        let o = ctl(&sock, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr(&o), want, "{args:?}");
        assert_eq!(stdout(&o), "", "{args:?}");
    }
    let o = ctl(&sock, &["frobnicate", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stdout(&o),
        "{\"error\":\"unrecognized subcommand 'frobnicate'\"}\n"
    );
}

#[test]
fn help_and_version_exit_0() {
    for args in [&["--help"][..], &["add-br", "--help"], &["help", "stats"]] {
        let o = Command::new(BIN).args(args).output().expect("run");
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(stdout(&o).contains("Usage: vswitchctl"), "{args:?}");
        assert_eq!(stderr(&o), "");
    }
    let o = Command::new(BIN).arg("--version").output().expect("run");
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        format!("vswitchctl {}\n", env!("CARGO_PKG_VERSION"))
    );
}
