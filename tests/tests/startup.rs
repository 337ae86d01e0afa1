//! How `sluiced` and `sluicectl` fail: an invalid configuration or a
//! missing port stops sluiced at start with a clear message and a non-zero
//! exit; sluicectl says so when sluiced is not running; a clean SIGTERM
//! exits 0 and removes the control socket.

use sluice_tests::*;
use std::process::Command;

fn base_config(dir: &Scratch, iface: &str) -> String {
    let head = eal_and_control(
        &format!("sls{}", std::process::id()),
        &dir.path("sluiced.sock"),
    );
    format!(
        r#"{head}
[[port]]
name = "client"
vdev = "net_af_packet0,iface={iface}"
role = "client"
address = "198.18.1.254/24"

[[port]]
name = "backend"
vdev = "net_null0"
role = "backend"
address = "198.18.2.254/24"

[[vip]]
address = "198.18.100.1"
port = 80
protocol = "tcp"
mode = "nat"

[[vip.backend]]
address = "198.18.2.11"
port = 8080
"#,
    )
}

#[test]
fn invalid_config_is_refused_with_file_line_and_field() {
    let dir = Scratch::new("startup-invalid");
    let text =
        base_config(&dir, "lo").replace("address = \"198.18.2.11\"", "address = \"198.18.2.300\"");
    let path = dir.path("bad.toml");
    std::fs::write(&path, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("198.18.2.300"))
        .unwrap()
        + 1;

    let out = Command::new(bin("sluiced"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "sluiced exits 2 on a bad config"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("bad.toml:{line}:")),
        "names file and line: {err}"
    );
    assert!(
        err.contains("vip[0].backend[0].address"),
        "names the field: {err}"
    );

    let out = Command::new(bin("sluicectl"))
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "config check exits 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("bad.toml:{line}:")) && err.contains("nothing was applied"),
        "{err}"
    );

    let good = dir.path("good.toml");
    std::fs::write(&good, base_config(&dir, "lo")).unwrap();
    let out = Command::new(bin("sluicectl"))
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[test]
fn sluicectl_reports_an_absent_sluiced() {
    let dir = Scratch::new("startup-absent");
    let out = Command::new(bin("sluicectl"))
        .arg("--socket")
        .arg(dir.path("nobody.sock"))
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit 3 when sluiced is unreachable"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Is sluiced running?"), "{err}");
}

#[test]
fn missing_port_stops_sluiced_at_start() {
    let Some(_one) = system_test() else {
        return;
    };
    let dir = Scratch::new("startup-missing");
    let path = dir.path("missing.toml");
    std::fs::write(&path, base_config(&dir, "sluice-no-such-if0")).unwrap();
    let out = Command::new(bin("sluiced"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "exit 1 when a port is missing");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("port \"client\""), "names the port: {err}");
    assert!(!dir.path("sluiced.sock").exists());
}

#[test]
fn sigterm_stops_cleanly() {
    let Some(_one) = system_test() else {
        return;
    };
    let dir = Scratch::new("startup-sigterm");
    let path = dir.path("ok.toml");
    std::fs::write(&path, base_config(&dir, "lo")).unwrap();
    let mut s = Sluiced::start(&path, &dir.path("sluiced.sock"), &dir.path("log"), None).unwrap();
    let status = ctl(&s.socket, &["status", "--json"]).unwrap();
    assert_eq!(status["ports"].as_array().unwrap().len(), 2);
    assert_eq!(status["workers"][0]["lcore"], 1);
    // A bad request gets an error reply and changes nothing.
    let before = ctl(&s.socket, &["stats", "--json"]).unwrap();
    let raw = raw_request(&s.socket, "{\"version\":1,\"command\":\"reboot\"}\n");
    assert!(
        raw.contains("\"ok\":false") && raw.contains("bad_request"),
        "{raw}"
    );
    let raw = raw_request(&s.socket, "{\"version\":2,\"command\":\"status\"}\n");
    assert!(raw.contains("unsupported_version"), "{raw}");
    let after = ctl(&s.socket, &["stats", "--json"]).unwrap();
    assert_eq!(before["vips"], after["vips"]);
    assert_eq!(s.stop().unwrap(), 0, "exit 0 on SIGTERM:\n{}", s.log_text());
    assert!(!dir.path("sluiced.sock").exists(), "socket removed");
    assert!(s.log_text().contains("sluiced: stopped"));
}

fn raw_request(socket: &std::path::Path, line: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut c = std::os::unix::net::UnixStream::connect(socket).unwrap();
    c.write_all(line.as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(c).read_line(&mut reply).unwrap();
    reply
}
