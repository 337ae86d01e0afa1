//! Parsing and validation of appliance configurations: valid examples,
//! every semantic check, TOML errors, error formatting, round trips.

use firmware_config::*;
use proptest::prelude::*;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

const FILE: &str = "test.toml";
const ENV2: Environment = Environment { cpus: 2 };

/// A small valid configuration; tests derive broken ones from it.
const BASE: &str = r#"[eal]
main_core = 0
worker_cores = [1]
memory_mb = 256
hugepages = false
extra_args = ["--no-pci"]

[control]
socket = "/tmp/sluice-test.sock"

[flows]
capacity_per_worker = 65536

[maglev]
table_size = 65537

[[port]]
name = "cli"
vdev = "net_af_packet0,iface=dp-cli"
role = "client"
address = "198.18.1.254/24"

[[port]]
name = "back"
vdev = "net_af_packet1,iface=dp-back"
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

[[vip.backend]]
address = "198.18.2.12"
port = 8080
"#;

/// A second VIP to append to `BASE`.
const VIP2: &str = r#"
[[vip]]
name = "second"
address = "198.18.100.2"
port = 80
protocol = "tcp"
mode = "nat"

[[vip.backend]]
address = "198.18.2.21"
port = 8080
"#;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// `BASE` with `from` (which must occur exactly once) replaced by `to`.
fn with(from: &str, to: &str) -> String {
    edit(BASE, from, to)
}

fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` must occur exactly once"
    );
    text.replacen(from, to, 1)
}

/// 1-based line of the `nth` (0-based) occurrence of `needle`.
fn line_of_nth(text: &str, needle: &str, nth: usize) -> usize {
    let (offset, _) = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("`{needle}` #{nth} not in text"));
    text[..offset].matches('\n').count() + 1
}

fn line_of(text: &str, needle: &str) -> usize {
    line_of_nth(text, needle, 0)
}

fn errors(text: &str) -> ConfigErrors {
    errors_with(text, ENV2)
}

fn errors_with(text: &str, env: Environment) -> ConfigErrors {
    match parse_with(text, FILE, &env) {
        Ok(_) => panic!("config unexpectedly valid:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts that parsing `text` reports `field` at `line`, with a complete
/// message, and returns that error.
fn expect_at(text: &str, field: &str, line: usize) -> ConfigError {
    let errs = errors(text);
    expect_in(&errs, field, line)
}

fn expect_in(errs: &ConfigErrors, field: &str, line: usize) -> ConfigError {
    let Some(e) = errs.find(field) else {
        panic!("no error for `{field}`; got:\n{errs}");
    };
    assert_eq!(e.line, line, "wrong line for `{field}`:\n{errs}");
    assert_eq!(e.file, FILE);
    assert!(e.column >= 1, "{e}");
    assert!(!e.problem.is_empty() && !e.hint.is_empty(), "{e}");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{FILE}:{line}:{}: {field}: ", e.column)),
        "{shown}"
    );
    e.clone()
}

// ------------------------------------------------------------- valid ---

#[test]
fn base_is_valid() {
    let cfg = parse_with(BASE, FILE, &ENV2).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.ports.len(), 2);
    assert_eq!(cfg.vips[0].backends.len(), 2);
    assert_eq!(cfg.vips[0].backends[0].weight, 1, "default weight");
    assert_eq!(cfg.flows.udp_timeout_s, 30, "default timeout");
}

#[test]
fn af_packet_example_is_valid_on_two_cpus() {
    let cfg =
        load_with(&examples_dir().join("af_packet.toml"), &ENV2).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cfg.eal.hugepages);
    assert_eq!(cfg.eal.extra_args, vec!["--no-pci".to_string()]);
    assert_eq!(
        (cfg.eal.main_core, cfg.eal.worker_cores.clone()),
        (0, vec![1])
    );
    assert_eq!(cfg.control.socket, "/tmp/sluice-example.sock");
    assert_eq!(
        cfg.ports[0].vdev.as_deref(),
        Some("net_af_packet0,iface=dp-cli")
    );
    assert_eq!(cfg.ports[0].role, PortRole::Client);
    assert_eq!(cfg.ports[0].address, "198.18.1.254/24".parse().unwrap());
    assert_eq!(
        cfg.ports[1].vdev.as_deref(),
        Some("net_af_packet1,iface=dp-back")
    );
    assert_eq!(cfg.ports[1].role, PortRole::Backend);
    assert_eq!(cfg.ports[1].address, "198.18.2.254/24".parse().unwrap());
    let vip = &cfg.vips[0];
    assert_eq!(
        (vip.address, vip.port, vip.protocol, vip.mode),
        (Ipv4Addr::new(198, 18, 100, 1), 80, Protocol::Tcp, Mode::Nat)
    );
    let backends: Vec<_> = vip
        .backends
        .iter()
        .map(|b| (b.address.to_string(), b.port, b.weight))
        .collect();
    assert_eq!(
        backends,
        vec![
            ("198.18.2.11".to_string(), Some(8080), 1),
            ("198.18.2.12".to_string(), Some(8080), 1),
            ("198.18.2.13".to_string(), Some(8080), 1),
        ]
    );
}

#[test]
fn appliance_example_is_valid_on_four_cpus() {
    let path = examples_dir().join("appliance.toml");
    let cfg = load_with(&path, &Environment { cpus: 4 }).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.eal.hugepages);
    assert_eq!(cfg.eal.worker_cores.len(), 2);
    assert!(cfg.ports.iter().all(|p| p.pci.is_some()));
    assert_eq!(cfg.client_port_indices(), vec![0]);
    let nat: Vec<_> = cfg.vips.iter().filter(|v| v.mode == Mode::Nat).collect();
    let dr: Vec<_> = cfg.vips.iter().filter(|v| v.mode == Mode::Dr).collect();
    assert_eq!((nat.len(), dr.len()), (1, 1));
    assert_eq!(nat[0].backends.len(), 3);

    // Fewer CPUs than its worker lcores: refused, naming the lcores.
    let errs = load_with(&path, &ENV2).unwrap_err();
    assert!(
        errs.find("eal.worker_cores[0]").is_some() && errs.find("eal.worker_cores[1]").is_some(),
        "{errs}"
    );
    assert!(errs.to_string().contains("appliance.toml:"), "{errs}");
}

#[test]
fn one_armed_port_with_role_both_is_valid() {
    let text = edit(
        &with("role = \"client\"", "role = \"both\""),
        "[[port]]\nname = \"back\"\nvdev = \"net_af_packet1,iface=dp-back\"\nrole = \"backend\"\naddress = \"198.18.2.254/24\"\n",
        "",
    );
    let text = text.replace("198.18.2.", "198.18.1.");
    let cfg = parse_with(&text, FILE, &ENV2).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.client_port_indices(), vec![0]);
    assert_eq!(cfg.egress_port_index(&cfg.vips[0].backends[0]), Some(0));
}

#[test]
fn pci_port_and_slash_31_are_accepted() {
    let text = with(
        "vdev = \"net_af_packet0,iface=dp-cli\"",
        "pci = \"0000:3B:00.1\"",
    );
    let text = edit(&text, "198.18.1.254/24", "198.18.1.0/31");
    parse_with(&text, FILE, &ENV2).unwrap_or_else(|e| panic!("{e}"));
}

// --------------------------------------------------------------- eal ---

#[test]
fn worker_cores_must_not_be_empty() {
    let text = with("worker_cores = [1]", "worker_cores = []");
    let e = expect_at(&text, "eal.worker_cores", 3);
    assert_eq!(e.column, 16);
}

#[test]
fn worker_cores_must_be_unique() {
    let text = with("worker_cores = [1]", "worker_cores = [1, 1]");
    let e = expect_at(&text, "eal.worker_cores[1]", 3);
    assert_eq!(e.column, 20, "points at the second element");
}

#[test]
fn worker_core_must_not_be_main_core() {
    let text = with("worker_cores = [1]", "worker_cores = [0, 1]");
    let e = expect_at(&text, "eal.worker_cores[0]", 3);
    assert!(e.problem.contains("main_core"), "{e}");
}

#[test]
fn worker_core_must_exist() {
    let text = with("worker_cores = [1]", "worker_cores = [1, 9]");
    let e = expect_at(&text, "eal.worker_cores[1]", 3);
    assert!(
        e.problem.contains("lcore 9") && e.problem.contains("2 CPUs"),
        "{e}"
    );
    assert!(e.hint.contains("0 to 1"), "{e}");
    // The same file is fine on a bigger machine.
    parse_with(&text, FILE, &Environment { cpus: 16 }).unwrap();
}

#[test]
fn main_core_must_exist() {
    let text = with("main_core = 0", "main_core = 7");
    expect_at(&text, "eal.main_core", 2);
}

#[test]
fn memory_must_be_at_least_64_mib() {
    let text = with("memory_mb = 256", "memory_mb = 32");
    expect_at(&text, "eal.memory_mb", 4);
    parse_with(&with("memory_mb = 256", "memory_mb = 64"), FILE, &ENV2).unwrap();
}

#[test]
fn file_prefix_must_be_a_simple_name() {
    let text = with(
        "hugepages = false\n",
        "hugepages = false\nfile_prefix = \"a/b c\"\n",
    );
    expect_at(&text, "eal.file_prefix", 6);
    let ok = with(
        "hugepages = false\n",
        "hugepages = false\nfile_prefix = \"Sluice_2-b\"\n",
    );
    parse_with(&ok, FILE, &ENV2).unwrap();
}

// ----------------------------------------------------------- control ---

#[test]
fn control_socket_must_be_absolute() {
    let text = with(
        "socket = \"/tmp/sluice-test.sock\"",
        "socket = \"sluice.sock\"",
    );
    expect_at(&text, "control.socket", 9);
}

// ------------------------------------------------------------- flows ---

#[test]
fn flow_capacity_must_be_in_range() {
    expect_at(
        &with("capacity_per_worker = 65536", "capacity_per_worker = 1000"),
        "flows.capacity_per_worker",
        12,
    );
    expect_at(
        &with(
            "capacity_per_worker = 65536",
            "capacity_per_worker = 134217728",
        ),
        "flows.capacity_per_worker",
        12,
    );
    parse_with(
        &with("capacity_per_worker = 65536", "capacity_per_worker = 1024"),
        FILE,
        &ENV2,
    )
    .unwrap();
    parse_with(
        &with(
            "capacity_per_worker = 65536",
            "capacity_per_worker = 67108864",
        ),
        FILE,
        &ENV2,
    )
    .unwrap();
}

#[test]
fn timeouts_must_be_at_least_one_second() {
    for key in [
        "syn_timeout_s",
        "established_timeout_s",
        "closing_timeout_s",
        "udp_timeout_s",
    ] {
        let text = with(
            "capacity_per_worker = 65536\n",
            &format!("capacity_per_worker = 65536\n{key} = 0\n"),
        );
        expect_at(&text, &format!("flows.{key}"), 13);
    }
}

#[test]
fn event_ring_must_be_a_power_of_two_of_at_least_64() {
    for bad in ["100", "32", "0"] {
        let text = with(
            "capacity_per_worker = 65536\n",
            &format!("capacity_per_worker = 65536\nevent_ring_size = {bad}\n"),
        );
        expect_at(&text, "flows.event_ring_size", 13);
    }
    let ok = with(
        "capacity_per_worker = 65536\n",
        "capacity_per_worker = 65536\nevent_ring_size = 64\n",
    );
    parse_with(&ok, FILE, &ENV2).unwrap();
}

// ------------------------------------------------------------ maglev ---

#[test]
fn table_size_must_be_prime() {
    let e = expect_at(
        &with("table_size = 65537", "table_size = 65536"),
        "maglev.table_size",
        15,
    );
    assert!(
        e.problem.contains("not prime") && e.hint.contains("65537"),
        "{e}"
    );
}

#[test]
fn table_size_must_be_in_range() {
    let errs = errors(&with("table_size = 65537", "table_size = 5"));
    assert_eq!(errs.len(), 1, "no follow-on backend-count error: {errs}");
    expect_in(&errs, "maglev.table_size", 15);
    expect_at(
        &with("table_size = 65537", "table_size = 16777259"),
        "maglev.table_size",
        15,
    );
    parse_with(
        &with("table_size = 65537", "table_size = 16777213"),
        FILE,
        &ENV2,
    )
    .unwrap();
}

#[test]
fn too_many_backends_for_the_table_size() {
    let text = with("table_size = 65537", "table_size = 11");
    let line = line_of(&text, "[[vip.backend]]");
    let e = expect_at(&text, "vip[0].backend", line);
    assert!(e.hint.contains("maglev.table_size"), "{e}");
}

// ------------------------------------------------------------- ports ---

/// `BASE` without its `[[port]]` tables.
fn without_ports() -> String {
    let start = BASE.find("[[port]]").unwrap();
    let end = BASE.find("[[vip]]").unwrap();
    format!("{}{}", &BASE[..start], &BASE[end..])
}

#[test]
fn at_least_one_port() {
    let text = without_ports();
    expect_at(&text, "port", 1);
}

#[test]
fn port_names_unique_and_simple() {
    expect_at(
        &with("name = \"back\"", "name = \"cli\""),
        "port[1].name",
        24,
    );
    expect_at(&with("name = \"cli\"", "name = \"\""), "port[0].name", 18);
    expect_at(
        &with("name = \"cli\"", "name = \"cli 0\""),
        "port[0].name",
        18,
    );
}

#[test]
fn exactly_one_of_pci_and_vdev() {
    let both = with(
        "vdev = \"net_af_packet0,iface=dp-cli\"\n",
        "pci = \"0000:01:00.0\"\nvdev = \"net_af_packet0,iface=dp-cli\"\n",
    );
    expect_at(&both, "port[0].vdev", 20);
    let neither = with("vdev = \"net_af_packet0,iface=dp-cli\"\n", "");
    expect_at(&neither, "port[0]", 17);
}

#[test]
fn pci_address_must_be_well_formed() {
    for bad in [
        "01:00.0",
        "0000:01:00",
        "0000:01:00.8",
        "0000:01:20.0",
        "000g:01:00.0",
    ] {
        let text = with(
            "vdev = \"net_af_packet0,iface=dp-cli\"",
            &format!("pci = \"{bad}\""),
        );
        let e = expect_at(&text, "port[0].pci", 19);
        assert!(e.problem.contains(bad), "{e}");
    }
}

#[test]
fn devices_must_not_be_shared() {
    let text = with(
        "net_af_packet1,iface=dp-back",
        "net_af_packet0,iface=dp-back",
    );
    expect_at(&text, "port[1].vdev", 25);
}

#[test]
fn need_a_client_facing_and_a_backend_facing_port() {
    let text = with("role = \"client\"", "role = \"backend\"");
    let e = expect_at(&text, "port", 17);
    assert!(e.problem.contains("clients"), "{e}");
    let text = with("role = \"backend\"", "role = \"client\"");
    let e = expect_at(&text, "port", 17);
    assert!(e.problem.contains("backends"), "{e}");
}

#[test]
fn port_address_must_not_be_network_or_broadcast() {
    let e = expect_at(
        &with("198.18.1.254/24", "198.18.1.0/24"),
        "port[0].address",
        21,
    );
    assert!(
        e.problem.contains("network") && e.hint.contains("198.18.1.1/24"),
        "{e}"
    );
    let e = expect_at(
        &with("198.18.1.254/24", "198.18.1.255/24"),
        "port[0].address",
        21,
    );
    assert!(
        e.problem.contains("broadcast") && e.hint.contains("198.18.1.254/24"),
        "{e}"
    );
    expect_at(
        &with("198.18.1.254/24", "224.0.0.1/24"),
        "port[0].address",
        21,
    );
}

#[test]
fn gateway_must_be_inside_the_prefix() {
    let text = with(
        "address = \"198.18.1.254/24\"\n",
        "address = \"198.18.1.254/24\"\ngateway = \"198.18.9.1\"\n",
    );
    expect_at(&text, "port[0].gateway", 22);
    let ok = with(
        "address = \"198.18.1.254/24\"\n",
        "address = \"198.18.1.254/24\"\ngateway = \"198.18.1.1\"\n",
    );
    parse_with(&ok, FILE, &ENV2).unwrap();
}

#[test]
fn gateway_mac_needs_a_gateway_and_must_be_unicast() {
    let text = with(
        "address = \"198.18.1.254/24\"\n",
        "address = \"198.18.1.254/24\"\ngateway_mac = \"02:00:00:00:00:09\"\n",
    );
    expect_at(&text, "port[0].gateway_mac", 22);
    let text = with(
        "address = \"198.18.1.254/24\"\n",
        "address = \"198.18.1.254/24\"\ngateway = \"198.18.1.1\"\ngateway_mac = \"01:00:5e:00:00:01\"\n",
    );
    expect_at(&text, "port[0].gateway_mac", 23);
    let ok = with(
        "address = \"198.18.1.254/24\"\n",
        "address = \"198.18.1.254/24\"\ngateway = \"198.18.1.1\"\ngateway_mac = \"02:00:00:00:00:09\"\n",
    );
    let cfg = parse_with(&ok, FILE, &ENV2).unwrap();
    assert_eq!(cfg.ports[0].gateway_mac.unwrap().0, [2, 0, 0, 0, 0, 9]);
}

#[test]
fn port_mac_must_be_unicast_and_nonzero() {
    for bad in [
        "01:00:5e:00:00:01",
        "ff:ff:ff:ff:ff:ff",
        "00:00:00:00:00:00",
    ] {
        let text = with(
            "address = \"198.18.1.254/24\"\n",
            &format!("address = \"198.18.1.254/24\"\nmac = \"{bad}\"\n"),
        );
        expect_at(&text, "port[0].mac", 22);
    }
    let ok = with(
        "address = \"198.18.1.254/24\"\n",
        "address = \"198.18.1.254/24\"\nmac = \"02:AB:cd:00:00:01\"\n",
    );
    let cfg = parse_with(&ok, FILE, &ENV2).unwrap();
    assert_eq!(cfg.ports[0].mac, Some(MacAddr([2, 0xab, 0xcd, 0, 0, 1])));
}

#[test]
fn port_addresses_must_be_unique() {
    let text = with("198.18.2.254/24", "198.18.1.254/24");
    let e = expect_at(&text, "port[1].address", 27);
    assert!(e.problem.contains("port[0]"), "{e}");
}

// -------------------------------------------------------------- vips ---

#[test]
fn at_least_one_vip() {
    let text = &BASE[..BASE.find("[[vip]]").unwrap()];
    expect_at(text, "vip", 1);
}

#[test]
fn vips_must_be_unique() {
    let text = format!("{BASE}{}", VIP2.replace("198.18.100.2", "198.18.100.1"));
    let line = line_of_nth(&text, "[[vip]]", 1);
    let e = expect_at(&text, "vip[1]", line);
    assert!(e.problem.contains("vip[0]"), "{e}");
    // Same address and port but UDP is another service.
    let udp = format!(
        "{BASE}{}",
        VIP2.replace("198.18.100.2", "198.18.100.1")
            .replace("\"tcp\"", "\"udp\"")
    );
    parse_with(&udp, FILE, &ENV2).unwrap();
}

#[test]
fn vip_names_must_be_unique() {
    let text = format!(
        "{}{}",
        with("[[vip]]\n", "[[vip]]\nname = \"second\"\n"),
        VIP2
    );
    let line = line_of_nth(&text, "name = \"second\"", 1);
    expect_at(&text, "vip[1].name", line);
}

#[test]
fn vip_must_not_be_a_port_address() {
    let text = with("address = \"198.18.100.1\"", "address = \"198.18.1.254\"");
    expect_at(&text, "vip[0].address", 30);
}

#[test]
fn vip_needs_a_backend() {
    let vip2 = &VIP2[..VIP2.find("[[vip.backend]]").unwrap()];
    let text = format!("{BASE}{vip2}");
    let line = line_of_nth(&text, "[[vip]]", 1);
    // No span for the missing key: points at the enclosing [[vip]].
    expect_at(&text, "vip[1].backend", line);
}

#[test]
fn backends_must_be_unique_within_a_vip() {
    let text = with("address = \"198.18.2.12\"", "address = \"198.18.2.11\"");
    let line = line_of_nth(&text, "[[vip.backend]]", 1);
    expect_at(&text, "vip[0].backend[1]", line);
    // Same address on another port is another backend.
    let ok = format!("{}8081\n", text.strip_suffix("8080\n").unwrap());
    parse_with(&ok, FILE, &ENV2).unwrap();
}

#[test]
fn dr_backend_port_must_equal_vip_port() {
    let text = with("mode = \"nat\"", "mode = \"dr\"");
    let e = expect_at(&text, "vip[0].backend[0].port", 37);
    assert!(e.problem.contains("DR"), "{e}");
    let ok = text.replace("port = 8080", "port = 80");
    parse_with(&ok, FILE, &ENV2).unwrap();
}

#[test]
fn nat_backend_must_not_serve_two_nat_vips() {
    let text = format!("{BASE}{}", VIP2.replace("198.18.2.21", "198.18.2.11"));
    let line = line_of_nth(&text, "[[vip.backend]]", 2);
    let e = expect_at(&text, "vip[1].backend[0]", line);
    assert!(e.hint.contains("statelessly"), "{e}");
    // A different backend port, or a DR VIP, is fine.
    let other_port = format!(
        "{BASE}{}",
        VIP2.replace("198.18.2.21", "198.18.2.11")
            .replace("8080", "8081")
    );
    parse_with(&other_port, FILE, &ENV2).unwrap();
    let dr = format!(
        "{BASE}{}",
        VIP2.replace("198.18.2.21", "198.18.2.11")
            .replace("\"nat\"", "\"dr\"")
            .replace("8080", "80")
    );
    parse_with(&dr, FILE, &ENV2).unwrap();
}

#[test]
fn egress_must_name_a_backend_facing_port() {
    let text = with(
        "address = \"198.18.2.11\"\n",
        "address = \"198.18.2.11\"\negress = \"nope\"\n",
    );
    let e = expect_at(&text, "vip[0].backend[0].egress", 37);
    assert!(e.hint.contains("back"), "{e}");
    let text = with(
        "address = \"198.18.2.11\"\n",
        "address = \"198.18.2.11\"\negress = \"cli\"\n",
    );
    expect_at(&text, "vip[0].backend[0].egress", 37);
    let ok = with(
        "address = \"198.18.2.11\"\n",
        "address = \"198.18.2.11\"\negress = \"back\"\n",
    );
    parse_with(&ok, FILE, &ENV2).unwrap();
}

#[test]
fn backend_must_not_be_a_port_or_a_vip() {
    expect_at(
        &with("address = \"198.18.2.11\"", "address = \"198.18.2.254\""),
        "vip[0].backend[0].address",
        36,
    );
    let text = format!("{BASE}{}", VIP2.replace("198.18.2.21", "198.18.100.1"));
    let line = line_of_nth(&text, "198.18.100.1", 1);
    expect_at(&text, "vip[1].backend[0].address", line);
}

#[test]
fn weight_must_fit_16_bits() {
    let text = with(
        "address = \"198.18.2.11\"\n",
        "address = \"198.18.2.11\"\nweight = 65536\n",
    );
    expect_at(&text, "vip[0].backend[0].weight", 37);
}

#[test]
fn a_vip_needs_a_backend_with_weight() {
    let text = with(
        "address = \"198.18.2.11\"\n",
        "address = \"198.18.2.11\"\nweight = 0\n",
    );
    let text = edit(
        &text,
        "address = \"198.18.2.12\"\n",
        "address = \"198.18.2.12\"\nweight = 0\n",
    );
    let line = line_of(&text, "[[vip.backend]]");
    let e = expect_at(&text, "vip[0].backend", line);
    assert!(e.hint.contains("remove the VIP"), "{e}");
    // One drained backend is fine.
    parse_with(
        &with(
            "address = \"198.18.2.11\"\n",
            "address = \"198.18.2.11\"\nweight = 0\n",
        ),
        FILE,
        &ENV2,
    )
    .unwrap();
}

#[test]
fn backend_mac_must_be_unicast_and_nonzero() {
    let text = with(
        "address = \"198.18.2.11\"\n",
        "address = \"198.18.2.11\"\nmac = \"03:00:00:00:00:01\"\n",
    );
    expect_at(&text, "vip[0].backend[0].mac", 37);
    let text = with(
        "address = \"198.18.2.11\"\n",
        "address = \"198.18.2.11\"\nmac = \"00:00:00:00:00:00\"\n",
    );
    expect_at(&text, "vip[0].backend[0].mac", 37);
}

#[test]
fn backends_must_be_reachable() {
    // NAT: off-subnet needs a gateway on the egress port.
    let text = with("address = \"198.18.2.11\"", "address = \"10.9.9.9\"");
    expect_at(&text, "vip[0].backend[0].address", 36);
    let routed = edit(
        &text,
        "address = \"198.18.2.254/24\"\n",
        "address = \"198.18.2.254/24\"\ngateway = \"198.18.2.1\"\n",
    );
    parse_with(&routed, FILE, &ENV2).unwrap();
    // DR: only on an attached subnet, gateway or not.
    let dr = routed
        .replace("\"nat\"", "\"dr\"")
        .replace("port = 8080", "port = 80");
    let line = line_of(&dr, "10.9.9.9");
    let e = expect_at(&dr, "vip[0].backend[0].address", line);
    assert!(e.problem.contains("DR"), "{e}");
}

// ------------------------------------------------------- TOML errors ---

#[test]
fn syntax_error_has_line_and_field() {
    let text = with("port = 80\n", "port = = 80\n");
    let e = expect_at(&text, "vip[0].port", 31);
    assert!(e.problem.contains("syntax"), "{e}");
    let text = with("[maglev]", "[maglev");
    let e = expect_at(&text, "maglev", 14);
    assert!(e.problem.contains("syntax"), "{e}");
}

#[test]
fn duplicate_key_is_reported() {
    let text = with("memory_mb = 256\n", "memory_mb = 256\nmemory_mb = 512\n");
    let e = expect_at(&text, "eal.memory_mb", 5);
    assert!(e.problem.contains("duplicate"), "{e}");
}

#[test]
fn unknown_key_has_line_and_field() {
    let text = with("memory_mb = 256\n", "memory_mb = 256\nmemroy_mb = 1\n");
    let e = expect_at(&text, "eal.memroy_mb", 5);
    assert_eq!(e.column, 1);
    assert!(
        e.problem.contains("memroy_mb") && e.hint.contains("memory_mb"),
        "{e}"
    );

    let text = with(
        "port = 8080\n\n[[vip.backend]]",
        "port = 8080\nwieght = 3\n\n[[vip.backend]]",
    );
    let e = expect_at(&text, "vip[0].backend[0].wieght", 38);
    assert!(e.hint.contains("weight"), "{e}");

    let text = format!("{BASE}\n[bogus]\nx = 1\n");
    let line = line_of(&text, "[bogus]");
    expect_at(&text, "bogus", line);
}

#[test]
fn missing_required_key_names_it() {
    let text = with("role = \"backend\"\n", "");
    let e = expect_at(&text, "port[1].role", 23);
    assert!(e.hint.contains("role = \"client\""), "{e}");
    let e = expect_at("", "eal", 1);
    assert!(e.problem.contains("eal"), "{e}");
}

#[test]
fn type_errors_name_the_field() {
    expect_at(
        &with("worker_cores = [1]", "worker_cores = [1, \"two\"]"),
        "eal.worker_cores[1]",
        3,
    );
    expect_at(
        &with("hugepages = false", "hugepages = \"no\""),
        "eal.hugepages",
        5,
    );
    expect_at(&with("port = 80\n", "port = 80000\n"), "vip[0].port", 31);
    let e = expect_at(
        &with("protocol = \"tcp\"", "protocol = \"sctp\""),
        "vip[0].protocol",
        32,
    );
    assert!(e.problem.contains("sctp") && e.hint.contains("udp"), "{e}");
}

#[test]
fn bad_addresses_name_the_field() {
    let e = expect_at(
        &with("198.18.1.254/24", "198.18.1.254"),
        "port[0].address",
        21,
    );
    assert!(e.problem.contains("prefix length"), "{e}");
    expect_at(
        &with("198.18.1.254/24", "198.18.1.254/33"),
        "port[0].address",
        21,
    );
    expect_at(
        &with("198.18.1.254/24", "198.18.1/24"),
        "port[0].address",
        21,
    );
    let e = expect_at(
        &with("address = \"198.18.2.12\"", "address = \"198.18.2\""),
        "vip[0].backend[1].address",
        40,
    );
    assert!(e.problem.contains("198.18.2"), "{e}");
    let text = with(
        "address = \"198.18.1.254/24\"\n",
        "address = \"198.18.1.254/24\"\nmac = \"02:00:00:00:01\"\n",
    );
    let e = expect_at(&text, "port[0].mac", 22);
    assert!(e.problem.contains("6"), "{e}");
    let text = with(
        "address = \"198.18.1.254/24\"\n",
        "address = \"198.18.1.254/24\"\ngateway = \"x\"\n",
    );
    expect_at(&text, "port[0].gateway", 22);
}

#[test]
fn inline_tables_are_located_too() {
    let text = with(
        "[[vip.backend]]\naddress = \"198.18.2.11\"\nport = 8080\n\n[[vip.backend]]\naddress = \"198.18.2.12\"\nport = 8080\n",
        "backend = [\n  { address = \"198.18.2.11\", port = 8080 },\n  { address = \"198.18.2.254\", port = 8080 },\n]\n",
    );
    let e = expect_at(&text, "vip[0].backend[1].address", 37);
    assert_eq!(e.column, 15);
    let text = text.replace("port = 8080 }", "port = 8080, weigth = 1 }");
    expect_at(&text, "vip[0].backend[0].weigth", 36);
}

// ------------------------------------------------- error reporting ---

#[test]
fn messages_name_the_file() {
    let errs = parse_with(
        &with("memory_mb = 256", "memory_mb = 1"),
        "/etc/sluice/x.toml",
        &ENV2,
    )
    .unwrap_err();
    assert_eq!(errs.len(), 1);
    let shown = errs.to_string();
    assert!(
        shown.starts_with("/etc/sluice/x.toml:4:13: eal.memory_mb: "),
        "{shown}"
    );
    let errs = parse_with("[eal", "syntax.toml", &ENV2).unwrap_err();
    assert!(errs.to_string().starts_with("syntax.toml:1:"), "{errs}");
}

#[test]
fn error_display_format() {
    let e = ConfigError {
        file: "f.toml".into(),
        line: 3,
        column: 7,
        field: "eal.worker_cores".into(),
        problem: "bad".into(),
        hint: "fix it".into(),
    };
    assert_eq!(e.to_string(), "f.toml:3:7: eal.worker_cores: bad; fix it");
    let errs = ConfigErrors(vec![e.clone(), ConfigError { line: 4, ..e }]);
    assert_eq!(
        errs.to_string(),
        "f.toml:3:7: eal.worker_cores: bad; fix it\nf.toml:4:7: eal.worker_cores: bad; fix it"
    );
}

#[test]
fn all_semantic_errors_are_reported_in_file_order() {
    let text = with("memory_mb = 256", "memory_mb = 1");
    let text = edit(
        &text,
        "socket = \"/tmp/sluice-test.sock\"",
        "socket = \"rel.sock\"",
    );
    let text = edit(&text, "table_size = 65537", "table_size = 100");
    let text = edit(
        &text,
        "address = \"198.18.2.12\"",
        "address = \"198.18.2.254\"",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 4, "{errs}");
    expect_in(&errs, "eal.memory_mb", 4);
    expect_in(&errs, "control.socket", 9);
    expect_in(&errs, "maglev.table_size", 15);
    expect_in(&errs, "vip[0].backend[1].address", 40);
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    assert_eq!(errs.to_string().lines().count(), 4);
}

#[test]
fn unreadable_file_is_an_error_at_line_0() {
    let path = Path::new("/nonexistent/sluice/appliance.toml");
    let errs = load(path).unwrap_err();
    assert_eq!(errs.len(), 1);
    let e = &errs.0[0];
    assert_eq!((e.line, e.column), (0, 0));
    assert_eq!(e.file, path.display().to_string());
    assert!(
        errs.to_string()
            .starts_with("/nonexistent/sluice/appliance.toml:0:0: "),
        "{errs}"
    );
}

#[test]
fn validate_without_source_points_at_line_1() {
    let mut cfg = parse_with(BASE, FILE, &ENV2).unwrap();
    cfg.eal.memory_mb = 1;
    let errs = validate_with(&cfg, "", "generated", &ENV2).unwrap_err();
    assert_eq!((errs.0[0].line, errs.0[0].column), (1, 1));
    assert_eq!(errs.0[0].field, "eal.memory_mb");
}

// --------------------------------------------- types and helpers ---

#[test]
fn cidr_parse_and_display() {
    let c: Ipv4Cidr = "198.18.1.254/24".parse().unwrap();
    assert_eq!(
        c,
        Ipv4Cidr {
            addr: Ipv4Addr::new(198, 18, 1, 254),
            prefix_len: 24
        }
    );
    assert_eq!(c.to_string(), "198.18.1.254/24");
    assert_eq!(c.network(), Ipv4Addr::new(198, 18, 1, 0));
    assert_eq!(c.broadcast(), Ipv4Addr::new(198, 18, 1, 255));
    assert!(c.contains(Ipv4Addr::new(198, 18, 1, 7)) && !c.contains(Ipv4Addr::new(198, 18, 2, 7)));
    for bad in [
        "198.18.1.254",
        "198.18.1.254/",
        "198.18.1.254/33",
        "198.18.1/24",
        "198.18.1.254/+4",
        " 198.18.1.254/24",
    ] {
        let err = bad.parse::<Ipv4Cidr>().unwrap_err().to_string();
        assert!(!err.is_empty(), "{bad}");
    }
    assert_eq!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().netmask(), 0);
}

#[test]
fn mac_parse_and_display() {
    let m: MacAddr = "02:AB:cd:00:00:01".parse().unwrap();
    assert_eq!(m, MacAddr([2, 0xab, 0xcd, 0, 0, 1]));
    assert_eq!(m.to_string(), "02:ab:cd:00:00:01");
    assert!(!m.is_multicast() && !m.is_zero());
    for bad in [
        "02:00:00:00:00",
        "02:00:00:00:00:01:02",
        "02-00-00-00-00-01",
        "2:0:0:0:0:1",
        "02:00:00:00:00:0g",
        "",
    ] {
        let err = bad.parse::<MacAddr>().unwrap_err().to_string();
        assert!(err.contains("aa:bb:cc:dd:ee:ff"), "{bad}: {err}");
    }
}

#[test]
fn enums_display_as_in_toml() {
    assert_eq!(PortRole::Both.to_string(), "both");
    assert_eq!(PortRole::Client.as_str(), "client");
    assert_eq!(Protocol::Udp.to_string(), "udp");
    assert_eq!(Mode::Dr.to_string(), "dr");
    assert_eq!(Mode::Nat.as_str(), "nat");
}

#[test]
fn resolved_helpers() {
    let text = format!("{}{VIP2}", with("[[vip]]\n", "[[vip]]\nname = \"web\"\n"));
    let text = text.replace(
        "[[vip.backend]]\naddress = \"198.18.2.21\"\nport = 8080\n",
        "[[vip.backend]]\naddress = \"198.18.2.21\"\n",
    );
    let mut cfg = parse_with(&text, FILE, &ENV2).unwrap();
    assert_eq!(cfg.vips[0].label(), "web");
    cfg.vips[0].name = None;
    assert_eq!(cfg.vips[0].label(), "198.18.100.1:80/tcp");
    let b = &cfg.vips[1].backends[0];
    assert_eq!(b.port_or(80), 80);
    assert_eq!(cfg.vips[0].backends[0].port_or(80), 8080);

    assert_eq!(cfg.client_port_indices(), vec![0]);
    // By prefix.
    assert_eq!(cfg.egress_port_index(b), Some(1));
    // Explicit name wins, unknown name resolves to nothing.
    let mut named = b.clone();
    named.egress = Some("cli".into());
    assert_eq!(cfg.egress_port_index(&named), Some(0));
    named.egress = Some("nope".into());
    assert_eq!(cfg.egress_port_index(&named), None);
    // No prefix matches: the first backend-facing port.
    let mut far = b.clone();
    far.address = Ipv4Addr::new(10, 0, 0, 1);
    assert_eq!(cfg.egress_port_index(&far), Some(1));
    cfg.ports[0].role = PortRole::Both;
    assert_eq!(cfg.egress_port_index(&far), Some(0));
    assert_eq!(cfg.client_port_indices(), vec![0]);
}

#[test]
fn to_toml_round_trips() {
    let appliance = std::fs::read_to_string(examples_dir().join("appliance.toml")).unwrap();
    let af_packet = std::fs::read_to_string(examples_dir().join("af_packet.toml")).unwrap();
    let env4 = Environment { cpus: 4 };
    let decorated = with(
        "address = \"198.18.1.254/24\"\n",
        "address = \"198.18.1.254/24\"\nmac = \"02:00:00:00:00:01\"\ngateway = \"198.18.1.1\"\n",
    );
    let decorated = edit(
        &decorated,
        "address = \"198.18.2.11\"\n",
        "address = \"198.18.2.11\"\nmac = \"02:00:00:00:02:0b\"\negress = \"back\"\nweight = 0\n",
    );
    for text in [BASE.to_string(), decorated, appliance, af_packet] {
        let cfg = parse_with(&text, FILE, &env4).unwrap();
        let out = cfg.to_toml();
        let back =
            parse_with(&out, "roundtrip.toml", &env4).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(back, cfg, "{out}");
        assert_eq!(back.to_toml(), out);
    }
}

#[test]
fn examples_of_the_prime_helper() {
    assert!(is_prime(65537) && is_prime(7) && is_prime(MAX_TABLE_SIZE));
    assert!(!is_prime(65536) && !is_prime(1) && !is_prime(0) && !is_prime(9));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in "\\PC*") {
        let _ = parse_with(&text, FILE, &ENV2);
    }

    #[test]
    fn parse_never_panics_on_toml_like_text(text in "[\\[\\]a-z_.=\"0-9 \n{},#/:]{0,200}") {
        let _ = parse_with(&text, FILE, &ENV2);
    }

    #[test]
    fn parse_never_panics_on_mutated_config(pos in 0usize..BASE.len(), len in 0usize..20, insert in "\\PC{0,8}") {
        let mut text = BASE.to_string();
        let start = (0..=pos).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        let end = (start + len).min(text.len());
        text.replace_range(start..end, &insert);
        if let Err(errs) = parse_with(&text, FILE, &ENV2) {
            prop_assert!(!errs.is_empty());
            for e in errs.iter() {
                prop_assert!(e.line >= 1 && !e.field.is_empty() && !e.problem.is_empty() && !e.hint.is_empty(), "{}", e);
            }
        }
    }
}

#[test]
fn lcore_map_lets_lcores_differ_from_cpus() {
    let two_workers = with(
        "worker_cores = [1]\n",
        "worker_cores = [1, 2]\nlcores = \"0@0,1@1,2@1\"\n",
    );
    let cfg = parse_with(&two_workers, FILE, &ENV2).unwrap();
    assert_eq!(cfg.eal.lcores.as_deref(), Some("0@0,1@1,2@1"));
    assert_eq!(parse_lcore_map("0@0, 2@1").unwrap(), vec![(0, 0), (2, 1)]);
    // Without the map, lcore 2 does not exist on 2 CPUs.
    let no_map = with("worker_cores = [1]\n", "worker_cores = [1, 2]\n");
    expect_at(&no_map, "eal.worker_cores[1]", 3);
    // A worker missing from the map, a CPU that does not exist, bad syntax.
    let missing = with(
        "worker_cores = [1]\n",
        "worker_cores = [1, 3]\nlcores = \"0@0,1@1,2@1\"\n",
    );
    assert!(expect_at(&missing, "eal.worker_cores[1]", 3)
        .problem
        .contains("not in eal.lcores"));
    let no_cpu = with(
        "worker_cores = [1]\n",
        "worker_cores = [1]\nlcores = \"0@0,1@7\"\n",
    );
    assert!(expect_at(&no_cpu, "eal.lcores", 4)
        .problem
        .contains("CPU 7"));
    let bad = with(
        "worker_cores = [1]\n",
        "worker_cores = [1]\nlcores = \"0-1\"\n",
    );
    expect_at(&bad, "eal.lcores", 4);
    let twice = with(
        "worker_cores = [1]\n",
        "worker_cores = [1]\nlcores = \"0@0,1@1,1@0\"\n",
    );
    assert!(expect_at(&twice, "eal.lcores", 4).problem.contains("twice"));
}

// -------------------------------------------------------- controller ---

fn with_controller(section: &str) -> String {
    format!("{BASE}\n[controller]\n{section}")
}

#[test]
fn controller_settings_are_checked() {
    let t = with_controller("smoothing = 0\n");
    assert!(
        expect_at(&t, "controller.smoothing", line_of(&t, "smoothing"))
            .problem
            .contains('0')
    );
    let t = with_controller("agent_listen = \"198.18.2.1:7946\"\n");
    assert!(
        expect_at(&t, "controller.agent_listen", line_of(&t, "agent_listen"))
            .problem
            .contains("agent_key_file")
    );
    let t = with_controller("server_list = \"198.18.2.1\"\n");
    expect_at(&t, "controller.server_list", line_of(&t, "server_list"));
}

#[test]
fn a_twin_needs_a_server_list_of_its_own() {
    let ok = with_controller("server_list = \"198.18.2.1:7947\"\ntwin = \"198.18.2.2:7947\"\n");
    let cfg = parse_with(&ok, FILE, &ENV2).expect("a twin with a server list is valid");
    assert_eq!(cfg.controller.twin.as_deref(), Some("198.18.2.2:7947"));

    let alone = with_controller("twin = \"198.18.2.2:7947\"\n");
    assert!(
        expect_at(&alone, "controller.twin", line_of(&alone, "twin ="))
            .problem
            .contains("no server_list")
    );
    let itself = with_controller("server_list = \"198.18.2.1:7947\"\ntwin = \"198.18.2.1:7947\"\n");
    assert!(
        expect_at(&itself, "controller.twin", line_of(&itself, "twin ="))
            .problem
            .contains("own server_list")
    );
    let bad = with_controller("server_list = \"198.18.2.1:7947\"\ntwin = \"twin\"\n");
    assert!(expect_at(&bad, "controller.twin", line_of(&bad, "twin ="))
        .problem
        .contains("not an IPv4 address"));
}
