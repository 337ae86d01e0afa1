//! End to end in network namespaces: a client, three backends with real
//! TCP (HTTP) servers, `sluiced` on af_packet over veth pairs. At least 300
//! real TCP connections through the VIP in NAT mode and in DR mode; all
//! must complete, each backend must get 20%..47% of them, and the counters
//! must agree with what was sent.

use sluice_tests::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const CONNECTIONS: u64 = 300;

/// scripts/netns.toml.in, the demo's embedded default, filled in. With two
/// workers, both poll lcores share CPU 1 (this box has two CPUs) and the
/// af_packet ports get a queue pair per worker.
fn config(id: &str, socket: &str, mode: &str, backend_port: u16, workers: usize) -> String {
    let text = std::fs::read_to_string(repo_root().join("scripts/netns.toml.in"))
        .expect("scripts/netns.toml.in")
        .replace("@PREFIX@", id)
        .replace("@SOCKET@", socket)
        .replace("@MODE@", mode)
        .replace("@BPORT@", &backend_port.to_string());
    if workers == 1 {
        return text;
    }
    assert_eq!(workers, 2);
    text.replace(
        "worker_cores = [1]\n",
        "worker_cores = [1, 2]\nlcores = \"0@0,1@1,2@1\"\n",
    )
    .replace("iface=dpc\"", "iface=dpc,qpairs=2\"")
    .replace("iface=dpb\"", "iface=dpb,qpairs=2\"")
}

fn run_mode(mode: &str, workers: usize) {
    let Some(_one_dpdk) = system_test() else {
        return;
    };
    let id = format!("se{}{workers}{}", &mode[..1], std::process::id() % 10_000);
    let dir = Scratch::new(&format!("e2e-{mode}"));
    let topo = Topology::up(&id, mode).expect("topology");
    let bport = if mode == "dr" { 80 } else { 8080 };
    let socket = dir.path("sluiced.sock");
    std::fs::write(
        dir.path("sluice.toml"),
        config(&id, &socket.display().to_string(), mode, bport, workers),
    )
    .unwrap();

    let script = repo_root().join("tests/e2e/backend.py");
    let mut servers = Vec::new();
    for i in 1..=3 {
        let mut c = topo.cmd(&format!("b{i}"), "python3");
        c.arg(&script)
            .args(["--name", &format!("b{i}"), "--port", &bport.to_string()])
            .arg("--log")
            .arg(dir.path(&format!("b{i}.log")))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        servers.push(Proc::spawn(&format!("backend b{i}"), &mut c).unwrap());
    }
    let mut sluiced = Sluiced::start(
        &dir.path("sluice.toml"),
        &socket,
        &dir.path("sluiced.log"),
        Some(&topo.ns("d")),
    )
    .expect("sluiced starts");
    for i in 1..=3 {
        let up = wait_until(Duration::from_secs(10), || {
            topo.cmd(&format!("b{i}"), "python3")
                .args([
                    "-c",
                    &format!(
                        "import socket; socket.create_connection(('198.18.2.1{i}', {bport}), 1)"
                    ),
                ])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(up, "backend b{i} listening");
    }

    let out = topo
        .cmd("c", "python3")
        .arg(repo_root().join("tests/e2e/client.py"))
        .args(["--host", "198.18.100.1", "--port", "80"])
        .args(["--count", &CONNECTIONS.to_string(), "--deadline", "90"])
        .output()
        .expect("client runs");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client output not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let stats = sluiced.stats().expect("stats");
    eprintln!("{mode}: client summary {summary}");
    assert_eq!(
        summary["ok"].as_u64(),
        Some(CONNECTIONS),
        "every connection completes: {summary}\nstats: {stats:#}\n{}",
        sluiced.log_text()
    );

    // Share per backend, by what the backends answered.
    let per = summary["per_backend"].as_object().unwrap();
    assert_eq!(per.len(), 3, "all three backends served: {summary}");
    for (b, n) in per {
        let share = n.as_u64().unwrap() as f64 / CONNECTIONS as f64;
        assert!(
            (0.20..=0.47).contains(&share),
            "{mode}: backend {b} got {:.1}%",
            share * 100.0
        );
    }

    // The counters agree with what was sent.
    assert_eq!(
        counter(&stats, "/vips/0/new_flows"),
        CONNECTIONS,
        "{stats:#}"
    );
    let backends = stats["backends"].as_array().unwrap();
    for b in backends {
        let addr = b["address"].as_str().unwrap();
        let name = format!("b{}", &addr[addr.len() - 1..]);
        let served = per.get(&name).and_then(|v| v.as_u64()).unwrap_or(0);
        assert_eq!(
            b["new_flows"].as_u64().unwrap(),
            served,
            "{mode}: new flows of {name}"
        );
        // At least SYN, ACK+request, FIN per connection went to it.
        assert!(
            b["tx_packets"].as_u64().unwrap() >= 3 * served,
            "{mode}: packets to {name}"
        );
        if mode == "nat" {
            // SYN-ACK, response, FIN at least came back through us.
            assert!(
                b["rx_packets"].as_u64().unwrap() >= 3 * served,
                "{mode}: packets from {name}"
            );
        } else {
            assert_eq!(
                b["rx_packets"].as_u64().unwrap(),
                0,
                "DR replies bypass the dispatcher"
            );
        }
    }
    let to_backends: u64 = backends
        .iter()
        .map(|b| b["tx_packets"].as_u64().unwrap())
        .sum();
    let from_backends: u64 = backends
        .iter()
        .map(|b| b["rx_packets"].as_u64().unwrap())
        .sum();
    assert_eq!(
        counter(&stats, "/vips/0/packets"),
        to_backends,
        "VIP packets = packets to backends"
    );
    assert_eq!(counter(&stats, "/vips/0/reply_packets"), from_backends);
    // Port counters: everything received is forwarded, answered or dropped
    // for a counted reason, and no drop is for a malformed packet.
    let unexpected = unexpected_drops(&stats);
    assert!(
        unexpected.is_empty(),
        "{mode}: unexpected drops (port, reason, count): {unexpected:?}"
    );
    for port in stats["ports"].as_array().unwrap() {
        assert_eq!(counter(port, "/nic/rx_nombuf"), 0);
    }
    let client_rx = counter(&stats, "/ports/0/rx_packets");
    let client_arp = counter(&stats, "/ports/0/rx_arp");
    assert!(client_rx >= counter(&stats, "/vips/0/packets"));
    assert_eq!(
        counter(&stats, "/ports/1/tx_packets"),
        to_backends + counter(&stats, "/ports/1/arp_replies_sent") + arp_requests_sent(&stats, 1),
        "backend port transmits exactly the forwarded packets, ARP replies and ARP requests"
    );
    assert!(client_arp >= 1, "the client resolved the dispatcher by ARP");
    // Every worker carried connections (RSS/fanout spread them) and the
    // flows the workers created add up to the connections made. Created,
    // not active: when the client reuses a source port, the new connection
    // replaces the closed flow of the old one (Expired + Created), so the
    // tables can hold fewer entries than there were connections.
    let status = ctl(&socket, &["status", "--json"]).unwrap();
    let per_worker: Vec<u64> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["created_flows"].as_u64().unwrap())
        .collect();
    assert_eq!(per_worker.len(), workers);
    assert_eq!(
        per_worker.iter().sum::<u64>(),
        CONNECTIONS,
        "flows created per worker {per_worker:?}; flow counters {}",
        stats["flows"]
    );
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "every worker got flows: {per_worker:?}"
    );
    let vips = ctl(&socket, &["vip", "list", "--json"]).unwrap();
    for b in vips["vips"][0]["backends"].as_array().unwrap() {
        assert_eq!(b["state"], "up", "backend MAC learned by ARP: {b}");
    }
    assert_eq!(
        sluiced.stop().unwrap(),
        0,
        "clean shutdown:\n{}",
        sluiced.log_text()
    );
    drop(servers);
    drop(topo);
    assert!(
        !Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&id))
            .unwrap_or(false),
        "namespaces removed"
    );
}

/// ARP requests the dispatcher sent on a port: what it transmitted beyond
/// forwarded packets and replies (tx = forwarded + replies + requests).
fn arp_requests_sent(stats: &serde_json::Value, port: usize) -> u64 {
    counter(stats, &format!("/ports/{port}/arp_requests_sent"))
}

#[test]
fn nat_300_connections_through_the_vip() {
    run_mode("nat", 1);
}

#[test]
fn dr_300_connections_through_the_vip() {
    run_mode("dr", 1);
}

/// Two workers: each owns a queue pair of every port; NAT replies come back
/// with another 5-tuple, so the kernel's fanout hands about half of them to
/// the worker that never saw the connection, which translates them from the
/// shared tables alone.
#[test]
fn nat_300_connections_over_two_workers() {
    run_mode("nat", 2);
}
