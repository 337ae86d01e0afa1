//! Semantic validation: every check runs and every problem is reported,
//! located by its dotted field path.

use crate::error::{ConfigError, ConfigErrors};
use crate::locate::Locator;
use crate::schema::{Config, Ipv4Cidr, MacAddr, Mode, Protocol};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

/// Facts about the machine the configuration will run on. Injectable so
/// that validation is deterministic in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Environment {
    /// Number of CPUs available; valid lcore ids are `0..cpus`.
    pub cpus: usize,
}

impl Environment {
    /// This machine, as reported by [`std::thread::available_parallelism`]
    /// (1 if it cannot be determined).
    pub fn current() -> Self {
        Environment {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl Default for Environment {
    /// Same as [`Environment::current`].
    fn default() -> Self {
        Environment::current()
    }
}

/// Smallest accepted `maglev.table_size`.
pub const MIN_TABLE_SIZE: u32 = 7;
/// Largest accepted `maglev.table_size` (the largest prime below 2^24).
pub const MAX_TABLE_SIZE: u32 = 16_777_213;
/// Smallest accepted `flows.capacity_per_worker`.
pub const MIN_FLOW_CAPACITY: u32 = 1024;
/// Largest accepted `flows.capacity_per_worker`.
pub const MAX_FLOW_CAPACITY: u32 = 1 << 26;
/// Smallest accepted `flows.event_ring_size`.
pub const MIN_EVENT_RING: u32 = 64;
/// Smallest accepted `eal.memory_mb`.
pub const MIN_MEMORY_MB: u32 = 64;
/// Largest accepted backend `weight`.
pub const MAX_WEIGHT: u32 = 65535;

/// Checks `cfg` (parsed from `text`, named `file` in messages) against this
/// machine; see [`validate_with`].
pub fn validate(cfg: &Config, text: &str, file: &str) -> Result<(), ConfigErrors> {
    validate_with(cfg, text, file, &Environment::current())
}

/// Checks `cfg` for semantic errors, assuming the machine described by
/// `env`. All problems are collected and returned in file order; each is
/// located by finding its field path in `text` (a path that is not in the
/// text, e.g. a defaulted key, points at its nearest enclosing table, or at
/// line 1).
pub fn validate_with(
    cfg: &Config,
    text: &str,
    file: &str,
    env: &Environment,
) -> Result<(), ConfigErrors> {
    let mut c = Checker {
        loc: Locator::new(text),
        file,
        errors: Vec::new(),
    };
    check_eal(&mut c, cfg, env);
    check_control(&mut c, cfg);
    check_flows(&mut c, cfg);
    check_maglev(&mut c, cfg);
    check_ports(&mut c, cfg);
    check_vips(&mut c, cfg);
    check_controller(&mut c, cfg);
    for (j, v) in cfg.vips.iter().enumerate() {
        check_vip_balancing(&mut c, j, v);
    }
    if c.errors.is_empty() {
        Ok(())
    } else {
        // Stable: problems at the same spot keep their check order.
        c.errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(c.errors))
    }
}

struct Checker<'t> {
    loc: Locator<'t>,
    file: &'t str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn err(
        &mut self,
        field: impl Into<String>,
        problem: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let field = field.into();
        let (line, column) = self.loc.locate(&field);
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            column,
            field,
            problem: problem.into(),
            hint: hint.into(),
        });
    }
}

/// True if `n` is prime.
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n & 1 == 0 {
        return n == 2;
    }
    let n = u64::from(n);
    let mut d = 3u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// Smallest prime ≥ `n` that is a valid table size, capped at [`MAX_TABLE_SIZE`].
fn table_prime_at_least(n: u32) -> u32 {
    let mut p = n.max(MIN_TABLE_SIZE);
    while p < MAX_TABLE_SIZE && !is_prime(p) {
        p += 1;
    }
    p.min(MAX_TABLE_SIZE)
}

/// Parses `eal.lcores` (`"lcore@cpu,..."`) into (lcore, cpu) pairs.
pub fn parse_lcore_map(s: &str) -> Result<Vec<(u32, u32)>, String> {
    s.split(',')
        .map(|entry| {
            let (l, c) = entry
                .trim()
                .split_once('@')
                .ok_or_else(|| format!("\"{entry}\" is not lcore@cpu"))?;
            let num = |x: &str| {
                x.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("\"{entry}\": {x:?} is not a number"))
            };
            Ok((num(l)?, num(c)?))
        })
        .collect()
}

fn check_eal(c: &mut Checker<'_>, cfg: &Config, env: &Environment) {
    let e = &cfg.eal;
    let cpus = env.cpus;
    // With an explicit lcore map, lcores must be in the map and the map's
    // CPUs must exist; without one, lcore id = CPU id.
    let map = match e.lcores.as_deref().map(parse_lcore_map) {
        None => None,
        Some(Ok(m)) => {
            let mut seen = HashSet::new();
            for &(l, cpu) in &m {
                if !seen.insert(l) {
                    c.err(
                        "eal.lcores",
                        format!("lcore {l} is mapped twice"),
                        "map each lcore once",
                    );
                }
                if cpu as usize >= cpus {
                    c.err(
                        "eal.lcores",
                        format!("CPU {cpu} (of lcore {l}) does not exist on this machine ({cpus} CPUs online)"),
                        format!("use CPUs 0 to {}", cpus.saturating_sub(1)),
                    );
                }
            }
            Some(m)
        }
        Some(Err(why)) => {
            c.err(
                "eal.lcores",
                why,
                "write lcore@cpu pairs separated by commas, e.g. lcores = \"0@0,1@1,2@1\"",
            );
            None
        }
    };
    let lcore_exists = |l: u32| match &map {
        Some(m) => m.iter().any(|&(ml, _)| ml == l),
        None => (l as usize) < cpus,
    };
    let lcore_hint = if cpus > 1 {
        format!(
            "use an lcore id from 0 to {} (this machine has {cpus} CPUs)",
            cpus - 1
        )
    } else {
        "this machine has only lcore 0; run on a machine with more CPUs".to_string()
    };
    if e.worker_cores.is_empty() {
        c.err(
            "eal.worker_cores",
            "no worker lcores are listed",
            "list at least one lcore to run a poll-mode worker, e.g. worker_cores = [1]",
        );
    }
    let mut seen = HashSet::new();
    for (i, &core) in e.worker_cores.iter().enumerate() {
        let field = format!("eal.worker_cores[{i}]");
        if !seen.insert(core) {
            c.err(
                field,
                format!("lcore {core} is listed more than once"),
                "list each worker lcore once",
            );
            continue;
        }
        if core == e.main_core {
            c.err(
                field.clone(),
                format!("lcore {core} is also eal.main_core"),
                "a worker needs an lcore of its own; pick another lcore or change eal.main_core",
            );
        }
        if map.is_some() && !lcore_exists(core) {
            c.err(
                field,
                format!("lcore {core} is not in eal.lcores"),
                "map it to a CPU in eal.lcores, e.g. \"...,{core}@1\"",
            );
        } else if !lcore_exists(core) {
            c.err(
                field,
                format!("lcore {core} does not exist on this machine ({cpus} CPUs online)"),
                lcore_hint.clone(),
            );
        }
    }
    if map.is_some() && !lcore_exists(e.main_core) {
        c.err(
            "eal.main_core",
            format!("lcore {} is not in eal.lcores", e.main_core),
            "map it to a CPU in eal.lcores",
        );
    } else if !lcore_exists(e.main_core) {
        c.err(
            "eal.main_core",
            format!(
                "lcore {} does not exist on this machine ({cpus} CPUs online)",
                e.main_core
            ),
            lcore_hint,
        );
    }
    if e.memory_mb < MIN_MEMORY_MB {
        c.err(
            "eal.memory_mb",
            format!(
                "{} MiB is too little memory for DPDK (minimum {MIN_MEMORY_MB})",
                e.memory_mb
            ),
            "set memory_mb to 64 or more; the default is 1024",
        );
    }
    if let Some(prefix) = &e.file_prefix {
        if prefix.is_empty() || !is_name(prefix) {
            c.err(
                "eal.file_prefix",
                format!("\"{prefix}\" is not a valid file prefix"),
                "use only letters, digits, '_' and '-', e.g. file_prefix = \"sluice\"",
            );
        }
    }
}

fn check_control(c: &mut Checker<'_>, cfg: &Config) {
    let s = &cfg.control.socket;
    if !s.starts_with('/') {
        c.err(
            "control.socket",
            format!("\"{s}\" is not an absolute path"),
            "write a path starting with '/', e.g. socket = \"/run/sluice/sluiced.sock\"",
        );
    }
}

/// A positive, finite number of seconds no larger than a day.
fn check_seconds(c: &mut Checker<'_>, field: String, value: f64) {
    if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
        c.err(
            field,
            format!("{value} seconds is not a duration from above 0 to 86400"),
            "write a positive number of seconds, e.g. 2 or 0.5",
        );
    }
}

fn check_fraction(c: &mut Checker<'_>, field: &str, value: f64, zero_ok: bool) {
    let ok = value.is_finite() && value <= 1.0 && (value > 0.0 || (zero_ok && value == 0.0));
    if !ok {
        let range = if zero_ok { "0 to 1" } else { "above 0 to 1" };
        c.err(
            field,
            format!("{value} is not a fraction from {range}"),
            format!("write a number from {range}, e.g. 0.05 for 5%"),
        );
    }
}

fn check_socket_addr(c: &mut Checker<'_>, field: &str, value: &Option<String>, example: &str) {
    if let Some(a) = value {
        if a.parse::<std::net::SocketAddrV4>().is_err() {
            c.err(
                field,
                format!("\"{a}\" is not an IPv4 address with a port"),
                format!("write address:port, e.g. \"{example}\""),
            );
        }
    }
}

fn check_controller(c: &mut Checker<'_>, cfg: &Config) {
    let k = &cfg.controller;
    check_seconds(c, "controller.interval_s".into(), k.interval_s);
    check_seconds(c, "controller.agent_interval_s".into(), k.agent_interval_s);
    check_fraction(c, "controller.smoothing", k.smoothing, false);
    check_fraction(c, "controller.fuzz", k.fuzz, true);
    check_socket_addr(
        c,
        "controller.agent_listen",
        &k.agent_listen,
        "198.18.2.1:7946",
    );
    check_socket_addr(
        c,
        "controller.server_list",
        &k.server_list,
        "198.18.2.1:7947",
    );
    check_socket_addr(c, "controller.twin", &k.twin, "198.18.2.2:7947");
    if let Some(twin) = &k.twin {
        if k.server_list.is_none() {
            c.err(
                "controller.twin",
                "a twin is set but no server_list, so the twin could not read this controller's link counts",
                "set server_list to the address the twin's controller reads (its own controller.twin)",
            );
        } else if k.server_list.as_deref() == Some(twin.as_str()) {
            c.err(
                "controller.twin",
                format!("{twin} is this controller's own server_list"),
                "set twin to the twin dispatcher controller's server_list address",
            );
        }
    }
    if k.agent_listen.is_some() && k.agent_key_file.as_deref().is_none_or(str::is_empty) {
        c.err(
            "controller.agent_listen",
            "agents are listened for but no agent_key_file is set, so no report could be authenticated",
            "set agent_key_file to a file holding the key shared with the agents",
        );
    }
}

/// Health check, policy and group settings of `vip[j]`.
fn check_vip_balancing(c: &mut Checker<'_>, j: usize, v: &crate::schema::Vip) {
    use crate::schema::HealthKind;
    if let Some(h) = &v.health {
        let hf = |key: &str| format!("vip[{j}].health.{key}");
        check_seconds(c, hf("interval_s"), h.interval_s);
        check_seconds(c, hf("timeout_s"), h.timeout_s);
        if h.timeout_s.is_finite() && h.interval_s.is_finite() && h.timeout_s > h.interval_s {
            c.err(
                hf("timeout_s"),
                format!(
                    "the timeout ({} s) is longer than the interval ({} s)",
                    h.timeout_s, h.interval_s
                ),
                "a check must end before the next one starts: make timeout_s at most interval_s",
            );
        }
        for (key, n) in [("rise", h.rise), ("fall", h.fall)] {
            if !(1..=100).contains(&n) {
                c.err(
                    hf(key),
                    format!("{n} consecutive checks is outside 1 to 100"),
                    "use a count from 1 to 100 (defaults: rise 2, fall 3)",
                );
            }
        }
        if h.port == Some(0) {
            c.err(
                hf("port"),
                "port 0 cannot be checked",
                "use a port from 1 to 65535, or remove it to check the backend's port",
            );
        }
        match h.kind {
            HealthKind::Http => {
                if v.protocol == Protocol::Udp {
                    c.err(
                        hf("type"),
                        "an HTTP check needs a TCP service, but this VIP is UDP",
                        "use type = \"udp\" with send and expect",
                    );
                }
                if !h.path.starts_with('/')
                    || h.path
                        .chars()
                        .any(|ch| ch.is_whitespace() || ch.is_control())
                {
                    c.err(
                        hf("path"),
                        format!("\"{}\" is not an HTTP path", h.path),
                        "write a path starting with '/' without spaces, e.g. \"/health\"",
                    );
                }
                if !(100..=599).contains(&h.expect_status) {
                    c.err(
                        hf("expect_status"),
                        format!("{} is not an HTTP status", h.expect_status),
                        "use a status from 100 to 599, e.g. 200",
                    );
                }
            }
            HealthKind::Udp => {
                if h.send.as_deref().is_none_or(str::is_empty) {
                    c.err(
                        hf("send"),
                        "a UDP check needs a datagram to send",
                        "set send = \"...\" (and expect = \"...\" for the reply)",
                    );
                }
            }
            HealthKind::Tcp => {
                if v.protocol == Protocol::Udp && h.port.is_none() {
                    c.err(
                        hf("type"),
                        "a TCP check of a UDP service needs a TCP port to connect to",
                        "set port to a TCP port of the backend, or use type = \"udp\"",
                    );
                }
            }
            HealthKind::None => {}
        }
    }
    for (k, b) in v.backends.iter().enumerate() {
        if let Some(g) = &b.group {
            if g.trim().is_empty() {
                c.err(
                    format!("vip[{j}].backend[{k}].group"),
                    "the group name is empty",
                    "name the group (a site or farm) or remove the key",
                );
            }
        }
        if let Some(a) = &b.agent {
            if a.trim().is_empty() {
                c.err(format!("vip[{j}].backend[{k}].agent"), "the agent name is empty", "write the name the backend's agent reports under, or remove the key to use the backend's address");
            }
        }
    }
    let grouped = v.backends.iter().filter(|b| b.group.is_some()).count();
    if grouped > 0 && grouped < v.backends.len() {
        c.err(
            format!("vip[{j}].backend"),
            format!(
                "{grouped} of the {} backends of VIP {} have a group and the others do not",
                v.backends.len(),
                v.label()
            ),
            "give every backend of the VIP a group, or none",
        );
    }
    if v.group_policy.is_some() && grouped == 0 {
        c.err(
            format!("vip[{j}].group_policy"),
            "group_policy is set but no backend has a group",
            "set group on the backends, or remove group_policy",
        );
    }
    if v.group_policy == Some(crate::schema::Policy::CapacityRanges) {
        c.err(
            format!("vip[{j}].group_policy"),
            "capacity-ranges splits the hash space between backends and cannot choose a group",
            "use another group_policy, e.g. \"agent-load\" or \"maglev\"",
        );
    }
}

fn check_flows(c: &mut Checker<'_>, cfg: &Config) {
    let f = &cfg.flows;
    if !(MIN_FLOW_CAPACITY..=MAX_FLOW_CAPACITY).contains(&f.capacity_per_worker) {
        c.err(
            "flows.capacity_per_worker",
            format!(
                "{} flows is outside the supported range {MIN_FLOW_CAPACITY} to {MAX_FLOW_CAPACITY}",
                f.capacity_per_worker
            ),
            "set a capacity from 1024 to 67108864 (2^26); the default is 1048576",
        );
    }
    for (key, value) in [
        ("syn_timeout_s", f.syn_timeout_s),
        ("established_timeout_s", f.established_timeout_s),
        ("closing_timeout_s", f.closing_timeout_s),
        ("udp_timeout_s", f.udp_timeout_s),
    ] {
        if value == 0 {
            c.err(
                format!("flows.{key}"),
                "a timeout of 0 seconds would expire every flow immediately",
                "set it to 1 second or more, or remove it to use the default",
            );
        }
    }
    let r = f.event_ring_size;
    if r < MIN_EVENT_RING || !r.is_power_of_two() {
        let suggestion = r
            .max(MIN_EVENT_RING)
            .checked_next_power_of_two()
            .unwrap_or(1 << 31);
        c.err(
            "flows.event_ring_size",
            format!("{r} is not a power of two of at least {MIN_EVENT_RING}"),
            format!("rings hold a power-of-two number of entries; use e.g. {suggestion}"),
        );
    }
}

fn check_maglev(c: &mut Checker<'_>, cfg: &Config) {
    let ts = cfg.maglev.table_size;
    if !(MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&ts) {
        c.err(
            "maglev.table_size",
            format!("{ts} is outside the supported range {MIN_TABLE_SIZE} to {MAX_TABLE_SIZE}"),
            "use a prime in that range, at least 100 times the largest backend count; the default is 65537",
        );
        // Backend counts are judged against a usable size only.
        return;
    }
    if !is_prime(ts) {
        c.err(
            "maglev.table_size",
            format!("{ts} is not prime; Maglev needs a prime table size to fill it evenly"),
            format!("use a prime, e.g. {}", table_prime_at_least(ts)),
        );
    }
    for (j, v) in cfg.vips.iter().enumerate() {
        let n = v.backends.len();
        if n > (ts / 10) as usize {
            let want =
                table_prime_at_least(u32::try_from(n.saturating_mul(100)).unwrap_or(u32::MAX));
            c.err(
                format!("vip[{j}].backend"),
                format!(
                    "VIP {} has {n} backends, more than maglev.table_size / 10 ({ts} / 10 = {}), which spreads load very unevenly",
                    v.label(),
                    ts / 10
                ),
                format!("raise maglev.table_size to a prime of at least 100 times the backend count, e.g. {want}"),
            );
        }
    }
}

/// Only `[A-Za-z0-9_-]`.
fn is_name(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `DDDD:BB:DD.F` in hex (domain:bus:device.function).
fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 12 || b[4] != b':' || b[7] != b':' || b[10] != b'.' {
        return false;
    }
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
    if !(hex(0..4) && hex(5..7) && hex(8..10) && hex(11..12)) {
        return false;
    }
    let device = u8::from_str_radix(&s[8..10], 16).unwrap_or(u8::MAX);
    let function = u8::from_str_radix(&s[11..12], 16).unwrap_or(u8::MAX);
    device <= 0x1f && function <= 7
}

fn is_unicast_host(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback())
}

/// For prefixes shorter than /31: `Some("network")`/`Some("broadcast")`
/// if `ip` is that special address of `net`.
fn special_in(net: Ipv4Cidr, ip: Ipv4Addr) -> Option<&'static str> {
    if net.prefix_len >= 31 || !net.contains(ip) {
        None
    } else if ip == net.network() {
        Some("network")
    } else if ip == net.broadcast() {
        Some("broadcast")
    } else {
        None
    }
}

fn net_str(net: Ipv4Cidr) -> String {
    format!("{}/{}", net.network(), net.prefix_len)
}

fn check_mac(c: &mut Checker<'_>, field: String, mac: MacAddr) {
    if mac.is_zero() {
        c.err(
            field,
            "00:00:00:00:00:00 is not a usable MAC address",
            "use the real unicast MAC, or remove the key to use the NIC's own / learn it by ARP",
        );
    } else if mac.is_multicast() {
        c.err(
            field,
            format!("{mac} is a multicast address (lowest bit of the first octet is set)"),
            "use a unicast MAC; locally administered unicast MACs start with 02, e.g. \"02:00:00:00:00:01\"",
        );
    }
}

fn check_ports(c: &mut Checker<'_>, cfg: &Config) {
    if cfg.ports.is_empty() {
        c.err(
            "port",
            "no [[port]] is configured",
            "add [[port]] tables with name, pci or vdev, role and address: one facing clients and one facing backends",
        );
        return;
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut devices: HashMap<String, usize> = HashMap::new();
    let mut addrs: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        let f = |key: &str| format!("port[{i}].{key}");
        if p.name.is_empty() {
            c.err(
                f("name"),
                "the port name is empty",
                "give the port a short unique name, e.g. name = \"client0\"",
            );
        } else if !is_name(&p.name) {
            c.err(
                f("name"),
                format!(
                    "\"{}\" contains characters other than letters, digits, '_' and '-'",
                    p.name
                ),
                "rename it using only A-Z, a-z, 0-9, '_' and '-'",
            );
        } else if let Some(&j) = names.get(p.name.as_str()) {
            c.err(
                f("name"),
                format!("name \"{}\" is already used by port[{j}]", p.name),
                "give every port a unique name (backends refer to ports by name in `egress`)",
            );
        } else {
            names.insert(&p.name, i);
        }

        match (&p.pci, &p.vdev) {
            (Some(_), Some(_)) => c.err(
                f("vdev"),
                "both pci and vdev are set",
                "keep exactly one: pci for a physical NIC, vdev for a DPDK virtual device",
            ),
            (None, None) => c.err(
                format!("port[{i}]"),
                "neither pci nor vdev is set",
                "add pci = \"0000:01:00.0\" for a physical NIC or vdev = \"net_af_packet0,iface=eth1\" for a virtual device",
            ),
            (Some(pci), None) => {
                if !is_pci_address(pci) {
                    c.err(
                        f("pci"),
                        format!("\"{pci}\" is not a PCI address of the form DDDD:BB:DD.F"),
                        "write domain:bus:device.function in hex, e.g. \"0000:01:00.0\" (see `lspci -D` or `dpdk-devbind.py --status`)",
                    );
                } else if let Some(&j) = devices.get(&pci.to_ascii_lowercase()) {
                    c.err(
                        f("pci"),
                        format!("PCI device {pci} is also used by port[{j}]"),
                        "each port needs its own device; fix the address or remove one port",
                    );
                } else {
                    devices.insert(pci.to_ascii_lowercase(), i);
                }
            }
            (None, Some(vdev)) => {
                let dev = vdev.split(',').next().unwrap_or("").trim();
                if dev.is_empty() {
                    c.err(
                        f("vdev"),
                        format!("\"{vdev}\" does not start with a device name"),
                        "write DPDK devargs starting with the driver and instance, e.g. \"net_af_packet0,iface=eth1\"",
                    );
                } else if let Some(&j) = devices.get(dev) {
                    c.err(
                        f("vdev"),
                        format!("virtual device {dev} is also used by port[{j}]"),
                        "give each vdev a unique name by changing its instance number, e.g. net_af_packet1",
                    );
                } else {
                    devices.insert(dev.to_string(), i);
                }
            }
        }

        let a = p.address;
        if !is_unicast_host(a.addr) {
            c.err(
                f("address"),
                format!("{} is not a unicast host address", a.addr),
                "use the port's own IPv4 address with its prefix length, e.g. \"198.18.1.254/24\"",
            );
        } else if a.prefix_len == 0 {
            c.err(
                f("address"),
                format!("{a} has prefix length 0, which would put every address on-link"),
                "use the prefix length of the attached subnet, e.g. /24",
            );
        } else if let Some(kind) = special_in(a, a.addr) {
            c.err(
                f("address"),
                format!("{} is the {kind} address of {}", a.addr, net_str(a)),
                format!(
                    "use a host address inside the prefix, e.g. {}/{}",
                    if kind == "network" {
                        Ipv4Addr::from(u32::from(a.network()) + 1)
                    } else {
                        Ipv4Addr::from(u32::from(a.broadcast()) - 1)
                    },
                    a.prefix_len
                ),
            );
        } else if let Some(&j) = addrs.get(&a.addr) {
            c.err(
                f("address"),
                format!(
                    "{} is also the address of port[{j}] (\"{}\")",
                    a.addr, cfg.ports[j].name
                ),
                "give every port its own address",
            );
        } else {
            addrs.insert(a.addr, i);
        }

        if let Some(g) = p.gateway {
            if !a.contains(g) {
                c.err(
                    f("gateway"),
                    format!("{g} is outside the port's prefix {}", net_str(a)),
                    "use a next hop on the port's own subnet, or correct the prefix length of address",
                );
            } else if g == a.addr {
                c.err(
                    f("gateway"),
                    format!("{g} is the port's own address"),
                    "use the address of the next-hop router",
                );
            } else if let Some(kind) = special_in(a, g) {
                c.err(
                    f("gateway"),
                    format!("{g} is the {kind} address of {}", net_str(a)),
                    "use the address of the next-hop router",
                );
            }
        }
        if let Some(mac) = p.mac {
            check_mac(c, f("mac"), mac);
        }
        if let Some(mac) = p.gateway_mac {
            if p.gateway.is_none() {
                c.err(
                    f("gateway_mac"),
                    "gateway_mac is set but the port has no gateway".to_string(),
                    "add gateway = \"<next-hop address>\" or remove gateway_mac",
                );
            } else {
                check_mac(c, f("gateway_mac"), mac);
            }
        }
    }
    if !cfg.ports.iter().any(|p| p.role.faces_clients()) {
        c.err(
            "port",
            "no port faces clients (role \"client\" or \"both\")",
            "set role = \"client\" (or \"both\") on the port that receives traffic for the VIPs",
        );
    }
    if !cfg.ports.iter().any(|p| p.role.faces_backends()) {
        c.err(
            "port",
            "no port faces backends (role \"backend\" or \"both\")",
            "set role = \"backend\" (or \"both\") on the port that reaches the backends",
        );
    }
}

fn check_vips(c: &mut Checker<'_>, cfg: &Config) {
    if cfg.vips.is_empty() {
        c.err(
            "vip",
            "no [[vip]] is configured",
            "add a [[vip]] with address, port, protocol and mode, and at least one [[vip.backend]]",
        );
        return;
    }
    let port_addr = |ip: Ipv4Addr| cfg.ports.iter().position(|p| p.address.addr == ip);
    let vip_addrs: HashSet<Ipv4Addr> = cfg.vips.iter().map(|v| v.address).collect();
    let backend_port_names: Vec<&str> = cfg
        .ports
        .iter()
        .filter(|p| p.role.faces_backends())
        .map(|p| p.name.as_str())
        .collect();
    let mut tuples: HashMap<(Ipv4Addr, u16, Protocol), usize> = HashMap::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut nat_backends: HashMap<(Ipv4Addr, u16, Protocol), (usize, usize)> = HashMap::new();

    for (j, v) in cfg.vips.iter().enumerate() {
        let vf = |key: &str| format!("vip[{j}].{key}");
        if let Some(&k) = tuples.get(&(v.address, v.port, v.protocol)) {
            c.err(
                format!("vip[{j}]"),
                format!(
                    "{}:{}/{} is already defined by vip[{k}]",
                    v.address, v.port, v.protocol
                ),
                "merge the backends into one [[vip]], or change address, port or protocol",
            );
        } else {
            tuples.insert((v.address, v.port, v.protocol), j);
        }
        if let Some(name) = &v.name {
            if name.trim().is_empty() {
                c.err(
                    vf("name"),
                    "the VIP name is empty",
                    "give it a name or remove the key to use address:port/protocol",
                );
            } else if let Some(&k) = names.get(name.as_str()) {
                c.err(
                    vf("name"),
                    format!("name \"{name}\" is already used by vip[{k}]"),
                    "give every VIP a unique name",
                );
            } else {
                names.insert(name, j);
            }
        }
        if !is_unicast_host(v.address) {
            c.err(
                vf("address"),
                format!("{} is not a unicast address", v.address),
                "use the IPv4 address clients connect to, e.g. \"198.18.100.1\"",
            );
        } else if let Some(i) = port_addr(v.address) {
            c.err(
                vf("address"),
                format!(
                    "{} is the address of port[{i}] (\"{}\")",
                    v.address, cfg.ports[i].name
                ),
                "a VIP needs an address of its own; choose one that no port uses",
            );
        }
        if v.port == 0 {
            c.err(
                vf("port"),
                "port 0 cannot be connected to",
                "use a port from 1 to 65535",
            );
        }
        if v.backends.is_empty() {
            c.err(
                vf("backend"),
                format!("VIP {} has no backends", v.label()),
                "add at least one [[vip.backend]] after this [[vip]], or remove the VIP",
            );
        } else if v.backends.iter().all(|b| b.weight == 0) {
            c.err(
                vf("backend"),
                format!(
                    "every backend of VIP {} has weight 0, so it could never serve a connection",
                    v.label()
                ),
                "set a weight above 0 on at least one backend, or remove the VIP",
            );
        }

        let mut seen: HashMap<(Ipv4Addr, u16), usize> = HashMap::new();
        for (k, b) in v.backends.iter().enumerate() {
            let bp = format!("vip[{j}].backend[{k}]");
            let bf = |key: &str| format!("{bp}.{key}");
            let port = b.port_or(v.port);
            if b.port == Some(0) {
                c.err(
                    bf("port"),
                    "port 0 cannot be connected to",
                    "use a port from 1 to 65535, or remove it to use the VIP's port",
                );
            }
            if let Some(&k0) = seen.get(&(b.address, port)) {
                c.err(
                    bp.clone(),
                    format!("{}:{port} is already backend[{k0}] of this VIP", b.address),
                    "list each backend once; use weight to give it a bigger share",
                );
            } else {
                seen.insert((b.address, port), k);
            }
            match v.mode {
                Mode::Dr => {
                    if let Some(p) = b.port.filter(|&p| p != v.port) {
                        c.err(
                            bf("port"),
                            format!("backend port {p} differs from the VIP port {}, but DR mode does not rewrite ports", v.port),
                            "remove the backend port (it defaults to the VIP's) or use mode = \"nat\"",
                        );
                    }
                }
                Mode::Nat => {
                    let key = (b.address, port, v.protocol);
                    match nat_backends.get(&key) {
                        Some(&(j0, _)) if j0 != j => c.err(
                            bp.clone(),
                            format!(
                                "{}:{port}/{} is also a backend of NAT VIP {} (vip[{j0}])",
                                b.address,
                                v.protocol,
                                cfg.vips[j0].label()
                            ),
                            "NAT replies are translated back to the VIP statelessly by the backend's address:port, so each backend address:port may serve only one NAT VIP; listen on another port on the backend, or use DR mode",
                        ),
                        Some(_) => {}
                        None => {
                            nat_backends.insert(key, (j, k));
                        }
                    }
                }
            }
            if !is_unicast_host(b.address) {
                c.err(
                    bf("address"),
                    format!("{} is not a unicast address", b.address),
                    "use the backend server's IPv4 address",
                );
            } else if let Some(i) = port_addr(b.address) {
                c.err(
                    bf("address"),
                    format!(
                        "{} is the address of port[{i}] (\"{}\")",
                        b.address, cfg.ports[i].name
                    ),
                    "a backend must be another host; use the backend server's address",
                );
            } else if vip_addrs.contains(&b.address) {
                c.err(
                    bf("address"),
                    format!("{} is a VIP address", b.address),
                    "use the backend server's own address, not a VIP",
                );
            }
            if b.weight > MAX_WEIGHT {
                c.err(
                    bf("weight"),
                    format!("weight {} is above the maximum {MAX_WEIGHT}", b.weight),
                    "use a weight from 0 to 65535; only the ratio between backends matters",
                );
            }
            if let Some(mac) = b.mac {
                check_mac(c, bf("mac"), mac);
            }
            let names_hint = if backend_port_names.is_empty() {
                "configure a port with role \"backend\" or \"both\" first".to_string()
            } else {
                format!(
                    "name a port with role \"backend\" or \"both\": {}",
                    backend_port_names.join(", ")
                )
            };
            if let Some(name) = &b.egress {
                match cfg.ports.iter().position(|p| &p.name == name) {
                    None => {
                        c.err(
                            bf("egress"),
                            format!("no port is named \"{name}\""),
                            names_hint,
                        );
                        continue;
                    }
                    Some(i) if !cfg.ports[i].role.faces_backends() => {
                        c.err(
                            bf("egress"),
                            format!(
                                "port \"{name}\" has role \"{}\", so it does not reach backends",
                                cfg.ports[i].role
                            ),
                            names_hint,
                        );
                        continue;
                    }
                    Some(_) => {}
                }
            }
            let Some(pi) = cfg.egress_port_index(b) else {
                continue;
            };
            let p = &cfg.ports[pi];
            if !p.role.faces_backends() || !is_unicast_host(b.address) {
                continue;
            }
            if !p.address.contains(b.address) {
                if v.mode == Mode::Dr {
                    c.err(
                        bf("address"),
                        format!(
                            "{} is not on the subnet {} of egress port \"{}\", but DR mode only rewrites the MAC and needs backends on an attached subnet",
                            b.address,
                            net_str(p.address),
                            p.name
                        ),
                        "put the backend on the subnet of a backend-facing port, set egress to the port it is attached to, or use mode = \"nat\"",
                    );
                } else if p.gateway.is_none() {
                    c.err(
                        bf("address"),
                        format!(
                            "{} is outside the subnet {} of egress port \"{}\", which has no gateway",
                            b.address,
                            net_str(p.address),
                            p.name
                        ),
                        format!("add a gateway to port \"{}\", or set egress to the port whose subnet contains the backend", p.name),
                    );
                }
            } else if let Some(kind) = special_in(p.address, b.address) {
                c.err(
                    bf("address"),
                    format!(
                        "{} is the {kind} address of {}",
                        b.address,
                        net_str(p.address)
                    ),
                    "use the backend server's own address",
                );
            }
        }
    }
}
