//! Live changes over the control protocol, end to end: while a long TCP
//! transfer runs through the VIP, VIPs and backends are added, re-weighted,
//! removed and re-added, whole files are applied (and refused), and the
//! transfer and every new connection complete. Bad and unauthorised
//! requests get an error and change nothing.

use sluice_tests::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Downloads `bytes` from the VIP, reading slowly so that it lasts a few
/// seconds; prints its local port first, then the byte count.
const SLOW_READER: &str = r#"
import socket, sys, time
n = int(sys.argv[1])
s = socket.create_connection(("198.18.100.1", 80), timeout=10)
print(s.getsockname()[1], flush=True)
s.sendall(b"GET /big?bytes=%d HTTP/1.0\r\n\r\n" % n)
got = 0
head = b""
t0 = time.time()
while time.time() - t0 < 60:
    c = s.recv(16384)
    if not c:
        break
    if not head:
        head = c
    got += len(c)
    time.sleep(0.01)
body = got - (head.find(b"\r\n\r\n") + 4)
print(body, flush=True)
"#;

fn sluicectl(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("sluicectl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running sluicectl")
}

fn ok(socket: &std::path::Path, args: &[&str]) -> String {
    let out = sluicectl(socket, args);
    assert!(
        out.status.success(),
        "sluicectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(socket: &std::path::Path, args: &[&str]) -> String {
    let out = sluicectl(socket, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "sluicectl {args:?} should be refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn clients(topo: &Topology, port: u16, count: u32) -> serde_json::Value {
    let out = topo
        .cmd("c", "python3")
        .arg(repo_root().join("tests/e2e/client.py"))
        .args(["--host", "198.18.100.1", "--port", &port.to_string()])
        .args(["--count", &count.to_string(), "--deadline", "60"])
        .output()
        .expect("client runs");
    serde_json::from_slice(&out.stdout).expect("client prints JSON")
}

#[test]
fn live_changes_keep_established_connections_and_refuse_bad_requests() {
    let Some(_one_dpdk) = system_test() else {
        return;
    };
    let id = format!("sl{}", std::process::id() % 10_000);
    let dir = Scratch::new("live");
    let topo = Topology::up(&id, "nat").expect("topology");
    let socket = dir.path("sluiced.sock");
    let config = std::fs::read_to_string(repo_root().join("scripts/netns.toml.in"))
        .unwrap()
        .replace("@PREFIX@", &id)
        .replace("@SOCKET@", &socket.display().to_string())
        .replace("@MODE@", "nat")
        .replace("@BPORT@", "8080");
    std::fs::write(dir.path("sluice.toml"), &config).unwrap();
    let script = repo_root().join("tests/e2e/backend.py");
    let mut servers = Vec::new();
    for (node, port) in [("b1", 8080), ("b2", 8080), ("b3", 8080), ("b2", 8081)] {
        let mut c = topo.cmd(node, "python3");
        c.arg(&script)
            .args(["--name", node, "--port", &port.to_string()])
            .arg("--log")
            .arg(dir.path(&format!("{node}-{port}.log")))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        servers.push(Proc::spawn(node, &mut c).unwrap());
    }
    let sluiced = Sluiced::start(
        &dir.path("sluice.toml"),
        &socket,
        &dir.path("sluiced.log"),
        Some(&topo.ns("d")),
    )
    .expect("sluiced starts");
    // Warm up: ARP resolved, every backend answering.
    assert!(
        wait_until(Duration::from_secs(15), || clients(&topo, 80, 6)["ok"] == 6),
        "VIP answers: {}",
        sluiced.log_text()
    );

    // A long transfer through the VIP.
    const BYTES: u64 = 8_000_000;
    let mut reader = topo
        .cmd("c", "python3")
        .args(["-c", SLOW_READER, &BYTES.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("slow reader");
    let mut out = std::io::BufReader::new(reader.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let cport = line.trim().to_string();
    let mut held_by = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let flows = ctl(&socket, &["flow", "list", "--vip", "web", "--json"]).unwrap();
            flows["flows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| {
                    f["client"]
                        .as_str()
                        .unwrap()
                        .ends_with(&format!(":{cport}"))
                })
                .map(|f| held_by = f["backend"].as_str().unwrap().to_string())
                .is_some()
        }),
        "the transfer's flow is listed"
    );
    let held_ip = held_by.split(':').next().unwrap().to_string();
    let other = ["198.18.2.11", "198.18.2.12", "198.18.2.13"]
        .into_iter()
        .find(|a| *a != held_ip)
        .unwrap();
    eprintln!("transfer from {cport} held by {held_by}; changing {other}");

    // Changes while it runs.
    let gen0 = ctl(&socket, &["status", "--json"]).unwrap()["tables_generation"]
        .as_u64()
        .unwrap();
    ok(
        &socket,
        &["backend", "set", "web", &held_ip, "--weight", "3"],
    );
    let vips = ctl(&socket, &["vip", "list", "--json"]).unwrap();
    let share = |v: &serde_json::Value, ip: &str| -> f64 {
        v["vips"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"] == ip)
            .unwrap()["slot_share_percent"]
            .as_f64()
            .unwrap()
    };
    assert!(
        (share(&vips, &held_ip) - 60.0).abs() < 3.0,
        "weight 3 of 5: {vips}"
    );
    ok(
        &socket,
        &[
            "vip",
            "add",
            "198.18.100.1:81/tcp",
            "--mode",
            "nat",
            "--name",
            "alt",
            "--backend",
            "198.18.2.12:8081",
        ],
    );
    let alt = clients(&topo, 81, 20);
    assert_eq!(alt["ok"], 20, "new VIP serves at once: {alt}");
    assert_eq!(alt["per_backend"]["b2"], 20);
    ok(&socket, &["backend", "remove", "web", other]);
    let web = clients(&topo, 80, 40);
    assert_eq!(web["ok"], 40, "{web}");
    let other_name = format!("b{}", &other[other.len() - 1..]);
    assert!(
        web["per_backend"].get(&other_name).is_none(),
        "removed backend gets nothing: {web}"
    );
    ok(
        &socket,
        &["backend", "add", "web", &format!("{other}:8080")],
    );
    ok(&socket, &["backend", "drain", "web", &held_ip]);
    ok(&socket, &["backend", "undrain", "web", &held_ip]);
    ok(&socket, &["policy", "set", "web", "least-conn"]);
    ok(&socket, &["policy", "set", "web", "maglev"]);
    // An optional field set live can be cleared live.
    ok(&socket, &["vip", "set", "web", "--name", "storefront"]);
    assert!(ok(&socket, &["config", "dump"]).contains("name = \"storefront\""));
    // The VIP now goes by its new name.
    ok(&socket, &["vip", "set", "storefront", "--clear", "name"]);
    assert!(!ok(&socket, &["config", "dump"]).contains("storefront"));
    // Unnamed, it is addressed by its service; named "web" again.
    ok(
        &socket,
        &["vip", "set", "198.18.100.1:80/tcp", "--name", "web"],
    );
    ok(&socket, &["vip", "remove", "alt"]);
    assert!(
        reader.try_wait().unwrap().is_none(),
        "the transfer was still running during the changes"
    );

    // Refused requests change nothing.
    let before = ok(&socket, &["config", "dump"]);
    let e = refused(
        &socket,
        &["backend", "set", "web", "198.18.2.99", "--weight", "2"],
    );
    assert!(e.contains("has no backend \"198.18.2.99\""), "{e}");
    let e = refused(
        &socket,
        &[
            "vip",
            "add",
            "198.18.100.1:80/tcp",
            "--mode",
            "nat",
            "--backend",
            "198.18.2.11:9",
        ],
    );
    assert!(e.contains("is already defined by vip[0]"), "{e}");
    let bad = dir.path("bad.toml");
    std::fs::write(
        &bad,
        before.replace("address = \"198.18.2.11\"", "address = \"198.18.2.300\""),
    )
    .unwrap();
    let e = refused(&socket, &["config", "apply", bad.to_str().unwrap()]);
    assert!(
        e.contains("bad.toml:") && e.contains(": vip[0].backend[") && e.contains("].address: "),
        "file, line and field: {e}"
    );
    assert!(e.contains("nothing was changed"), "{e}");
    let restart = dir.path("restart.toml");
    std::fs::write(
        &restart,
        before.replace("memory_mb = 256", "memory_mb = 512"),
    )
    .unwrap();
    let e = refused(&socket, &["config", "apply", restart.to_str().unwrap()]);
    assert!(e.contains("restart.toml:") && e.contains(": eal: "), "{e}");
    // Not authorised: another user, even with the socket opened to all.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("sluicectl"))
        .arg("--socket")
        .arg(&socket)
        .args(["backend", "drain", "web", &held_ip])
        .output();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    if let Ok(o) = nobody {
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains("Unauthorised"), "{e}");
    }
    assert_eq!(
        ok(&socket, &["config", "dump"]),
        before,
        "refusals changed nothing"
    );
    // The dump applies back as is.
    let dump = dir.path("dump.toml");
    std::fs::write(&dump, &before).unwrap();
    let applied = ok(&socket, &["config", "apply", dump.to_str().unwrap()]);
    assert!(applied.contains("no change"), "{applied}");

    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = reader.wait().unwrap();
    assert!(status.success());
    assert_eq!(rest.trim(), BYTES.to_string(), "the transfer is intact");
    let gen1 = ctl(&socket, &["status", "--json"]).unwrap()["tables_generation"]
        .as_u64()
        .unwrap();
    assert!(
        gen1 >= gen0 + 9,
        "every change published tables ({gen0} -> {gen1})"
    );
    let web = clients(&topo, 80, 30);
    assert_eq!(web["ok"], 30, "{web}");
    let stats = sluiced.stats().unwrap();
    let unexpected = unexpected_drops(&stats);
    assert!(
        unexpected.is_empty(),
        "no packet lost to the changes (port, reason, count): {unexpected:?}"
    );
    drop(sluiced);
    drop(servers);
}
