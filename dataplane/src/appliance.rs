//! The management side's model of the appliance: the configuration, what
//! it has learned (neighbour MACs), and how that becomes the immutable
//! [`Tables`] the workers read. Also turns counters into control-protocol
//! replies. Free of DPDK: the daemon feeds it port facts and NIC counters.

use crate::counters::{
    self, Counter, DropReason, WorkerCounters, MAX_BACKENDS, MAX_PORTS, MAX_VIPS,
};
use crate::flowmirror::FlowMirror;
use crate::neighbours::NeighbourCache;
use crate::tables::{
    BackendInfo, ForwardMode, Layout, PortInfo, Tables, VipInfo, VipSpec, PROTO_TCP, PROTO_UDP,
};
use firmware_config::control::{
    BackendEntry, BackendStats, FlowEntryView, FlowListReply, FlowStats, NicStats, PolicyBackend,
    PolicyShowReply, PortStats, SelectionKind, SelectionSetReply, StatsReply, VipEntry,
    VipListReply, VipSelection, VipStats,
};
use firmware_config::{Config, Mode, Policy, Protocol};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// How long a learned neighbour stays without being refreshed.
pub const NEIGHBOUR_TTL_S: f64 = 300.0;

/// A resolved neighbour entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    pub mac: [u8; 6],
    /// Seconds since start when last learned.
    pub seen: f64,
    /// Configured (static) entries never age.
    pub permanent: bool,
}

/// The appliance as configured, plus learned state.
pub struct Appliance {
    pub config: Config,
    /// Port MACs as the NICs report them (or as configured).
    pub port_macs: Vec<[u8; 6]>,
    neighbours: HashMap<(u16, u32), Neighbour>,
    ids: IdMap,
    /// The ids of the current configuration, per VIP in config order.
    assigned: Assigned,
    vips: Vec<Arc<VipInfo>>,
    generation: u64,
    cache: Arc<NeighbourCache>,
    /// Health pushed by the controller, by stable backend identity; kept
    /// across reconfigurations (a backend that is down stays down).
    health: HashMap<BackendKey, bool>,
    /// The controller's last selection per VIP.
    selections: HashMap<VipKey, Pushed>,
}

/// A VIP's identity across reconfigurations: (address, port, protocol).
type VipKey = (u32, u16, Protocol);
/// A backend's identity: its VIP and (address, port).
type BackendKey = (VipKey, u32, u16);

fn vip_key(v: &firmware_config::Vip) -> VipKey {
    (u32::from(v.address), v.port, v.protocol)
}

/// One backend's pushed weight, measured inputs and note.
type PushedBackend = (u32, BTreeMap<String, f64>, String);

/// A selection the controller pushed for one VIP.
#[derive(Debug, Clone)]
struct Pushed {
    controller: String,
    policy: Policy,
    kind: SelectionKind,
    summary: String,
    at_s: f64,
    /// (address, port) → (weight, measured inputs, note).
    weights: HashMap<(u32, u16), PushedBackend>,
}

/// Stable ids. A VIP keeps its id while its (address, port, protocol) stays
/// configured, a backend while its (VIP, address, port) does: flow keys
/// hold VIP ids and flow entries hold backend ids, so an established
/// connection stays on its backend whatever else a reconfiguration adds or
/// removes. Ids are never reused while sluiced runs (a reused id would
/// inherit the old one's pinned flows and counters): a process can create
/// at most `MAX_VIPS` VIPs and `MAX_BACKENDS` backends in its lifetime.
#[derive(Debug, Default, Clone)]
struct IdMap {
    vips: HashMap<VipKey, u32>,
    backends: HashMap<(u32, u32, u16), u32>,
    next_vip: u32,
    next_backend: u32,
}

/// The ids a configuration gets: per VIP (config order) its id and its
/// backends' ids.
type Assigned = Vec<(u32, Vec<u32>)>;

impl IdMap {
    /// Assigns ids for `config`, keeping those of VIPs and backends that
    /// stay. Changes nothing when the id space would run out.
    fn assign(&mut self, config: &Config) -> Result<Assigned, String> {
        let mut next = self.clone();
        let mut vips = HashMap::new();
        let mut backends = HashMap::new();
        let mut out = Vec::new();
        for v in &config.vips {
            let vkey = vip_key(v);
            let vid = id_for(&next.vips, vkey, &mut next.next_vip, MAX_VIPS, "VIP")?;
            vips.insert(vkey, vid);
            let mut ids = Vec::new();
            for b in &v.backends {
                let bkey = (vid, u32::from(b.address), b.port_or(v.port));
                let bid = id_for(
                    &next.backends,
                    bkey,
                    &mut next.next_backend,
                    MAX_BACKENDS,
                    "backend",
                )?;
                backends.insert(bkey, bid);
                ids.push(bid);
            }
            out.push((vid, ids));
        }
        next.vips = vips;
        next.backends = backends;
        *self = next;
        Ok(out)
    }
}

/// The id `key` has in `ids`, else the next unused one (`next`, advanced),
/// or an error once `max` ids have been handed out.
fn id_for<K: std::hash::Hash + Eq>(
    ids: &HashMap<K, u32>,
    key: K,
    next: &mut u32,
    max: usize,
    what: &str,
) -> Result<u32, String> {
    if let Some(&id) = ids.get(&key) {
        return Ok(id);
    }
    let id = *next;
    if id as usize >= max {
        return Err(format!(
            "{what} ids exhausted: this sluiced has created {max} {what}s; restart it to start over"
        ));
    }
    *next += 1;
    Ok(id)
}

/// Refuses configurations beyond the fast path's fixed counter arrays.
pub fn check_limits(config: &Config) -> Result<(), String> {
    let backends: usize = config.vips.iter().map(|v| v.backends.len()).sum();
    if config.ports.len() > MAX_PORTS {
        return Err(format!(
            "{} ports configured, at most {MAX_PORTS} are supported",
            config.ports.len()
        ));
    }
    if config.vips.len() > MAX_VIPS {
        return Err(format!(
            "{} VIPs configured, at most {MAX_VIPS} are supported",
            config.vips.len()
        ));
    }
    if backends > MAX_BACKENDS {
        return Err(format!(
            "{backends} backends configured, at most {MAX_BACKENDS} are supported"
        ));
    }
    Ok(())
}

fn proto_num(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    }
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

impl Appliance {
    /// `port_macs[i]` is the MAC of `config.ports[i]`.
    pub fn new(config: Config, port_macs: Vec<[u8; 6]>) -> Appliance {
        // Static gateway MACs are permanent neighbours: never ARPed, never aged.
        let neighbours = config
            .ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some(((i as u16, u32::from(p.gateway?)), p.gateway_mac?)))
            .map(|(k, mac)| {
                (
                    k,
                    Neighbour {
                        mac: mac.0,
                        seen: 0.0,
                        permanent: true,
                    },
                )
            })
            .collect();
        let mut a = Appliance {
            config: config.clone(),
            port_macs,
            neighbours,
            ids: IdMap::default(),
            assigned: Vec::new(),
            vips: Vec::new(),
            generation: 0,
            cache: Arc::default(),
            health: HashMap::new(),
            selections: HashMap::new(),
        };
        // A validated config within `check_limits` always fits the id space.
        a.reconfigure(config)
            .expect("a configuration within check_limits gets ids");
        a
    }

    /// Replaces the VIPs and backends (ports cannot change while running).
    /// VIPs and backends that stay keep their ids, so their established
    /// connections stay where they are. On error nothing changes.
    pub fn reconfigure(&mut self, config: Config) -> Result<(), String> {
        check_limits(&config)?;
        if self.generation > 0 || !self.vips.is_empty() {
            let same_ports = config.ports.len() == self.config.ports.len()
                && config
                    .ports
                    .iter()
                    .zip(&self.config.ports)
                    .all(|(a, b)| a.name == b.name && a.pci == b.pci && a.vdev == b.vdev);
            if !same_ports {
                return Err(
                    "ports cannot change while sluiced runs: restart it with the new configuration"
                        .into(),
                );
            }
        }
        let mut ids = self.ids.clone();
        let assigned = ids.assign(&config)?;
        self.ids = ids;
        self.config = config;
        self.forget_unconfigured();
        self.rebuild_vips(&assigned);
        self.assigned = assigned;
        Ok(())
    }

    /// The egress port of a backend and the next hop toward it there: the
    /// backend itself when on the port's subnet, else the port's gateway.
    fn backend_next_hop(&self, b: &firmware_config::Backend) -> (u16, Option<u32>) {
        let egress = self.config.egress_port_index(b).unwrap_or(0);
        let port = &self.config.ports[egress];
        let hop = if port.address.contains(b.address) {
            Some(u32::from(b.address))
        } else {
            port.gateway.map(u32::from)
        };
        (egress as u16, hop)
    }
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Backend ids: position in the flattened list of all VIPs' backends.
    /// Stable for a given config (live changes come with the control issue).
    fn backend_infos(&self, assigned: &Assigned) -> Vec<Option<BackendInfo>> {
        let mut out = vec![None; self.ids.next_backend as usize];
        for (vip, (vid, bids)) in self.config.vips.iter().zip(assigned) {
            for (b, &id) in vip.backends.iter().zip(bids) {
                let (egress, hop) = self.backend_next_hop(b);
                let addr = u32::from(b.address);
                let next_hop_mac = b
                    .mac
                    .map(|m| m.0)
                    .or_else(|| hop.and_then(|h| self.neighbours.get(&(egress, h)).map(|n| n.mac)));
                let port = b.port_or(vip.port);
                let healthy = self.healthy(vip, b);
                out[id as usize] = Some(BackendInfo {
                    id,
                    vip: *vid,
                    addr,
                    port,
                    weight: b.weight,
                    accepts_new: b.weight > 0 && !b.drain && healthy,
                    drain: b.drain,
                    healthy,
                    alive: true,
                    egress_port: egress,
                    next_hop_mac,
                });
            }
        }
        out
    }

    /// Rebuilds every VIP's Maglev table (config changes only: neighbour
    /// changes do not touch selection).
    fn rebuild_vips(&mut self, assigned: &Assigned) {
        let backends = self.backend_infos(assigned);
        let size = self.config.maglev.table_size;
        self.vips = self
            .config
            .vips
            .iter()
            .zip(assigned)
            .map(|(v, (vid, bids))| {
                let members: Vec<&BackendInfo> = bids
                    .iter()
                    .filter_map(|&id| backends[id as usize].as_ref())
                    .collect();
                let (weights, layout) = self.selection_weights(v, &members);
                Arc::new(VipInfo::build_with(
                    VipSpec {
                        index: *vid,
                        label: v.label(),
                        addr: u32::from(v.address),
                        port: v.port,
                        proto: proto_num(v.protocol),
                        mode: match v.mode {
                            Mode::Dr => ForwardMode::DirectRouting,
                            Mode::Nat => ForwardMode::Nat,
                        },
                    },
                    &members,
                    &weights,
                    layout,
                    size,
                ))
            })
            .collect();
    }

    /// The weights a VIP's table is built with: the controller's, when it
    /// pushed some for the VIP's current policy, else the configured ones.
    /// A backend the push does not know (added since) gets its configured
    /// weight scaled to the pushed ones until the next push.
    fn selection_weights(
        &self,
        v: &firmware_config::Vip,
        members: &[&BackendInfo],
    ) -> (Vec<u32>, Layout) {
        let configured: Vec<u32> = members.iter().map(|b| b.weight).collect();
        let Some(p) = self.pushed_for(v) else {
            return (configured, Layout::Maglev);
        };
        let (mut pushed_sum, mut cfg_sum) = (0u64, 0u64);
        for b in members {
            if let Some((w, _, _)) = p.weights.get(&(b.addr, b.port)) {
                pushed_sum += u64::from(*w);
                cfg_sum += u64::from(b.weight);
            }
        }
        let scale = if pushed_sum > 0 && cfg_sum > 0 {
            pushed_sum as f64 / cfg_sum as f64
        } else {
            1.0
        };
        let weights = members
            .iter()
            .map(|b| match p.weights.get(&(b.addr, b.port)) {
                Some((w, _, _)) => *w,
                None if b.weight == 0 => 0,
                None => ((f64::from(b.weight) * scale).round() as u32).clamp(1, u32::MAX / 2),
            })
            .collect();
        let layout = match p.kind {
            SelectionKind::Weights => Layout::Maglev,
            SelectionKind::Ranges => Layout::Ranges,
        };
        (weights, layout)
    }

    /// The controller's selection for `v`, when it was computed for the
    /// VIP's current policy.
    fn pushed_for(&self, v: &firmware_config::Vip) -> Option<&Pushed> {
        self.selections
            .get(&vip_key(v))
            .filter(|p| p.policy == v.policy)
    }

    /// Health of backend `b` of `v` as the controller last pushed it (up
    /// until it says otherwise).
    fn healthy(&self, v: &firmware_config::Vip, b: &firmware_config::Backend) -> bool {
        self.health
            .get(&(vip_key(v), u32::from(b.address), b.port_or(v.port)))
            != Some(&false)
    }

    /// Forgets pushed health and selections of backends and VIPs no longer
    /// configured: one removed and added again starts healthy, with its
    /// configured weight, until the controller says otherwise.
    fn forget_unconfigured(&mut self) {
        let live: std::collections::HashSet<BackendKey> = self
            .config
            .vips
            .iter()
            .flat_map(|v| {
                v.backends
                    .iter()
                    .map(move |b| (vip_key(v), u32::from(b.address), b.port_or(v.port)))
            })
            .collect();
        self.health.retain(|k, _| live.contains(k));
        let vips: std::collections::HashSet<VipKey> =
            self.config.vips.iter().map(vip_key).collect();
        self.selections.retain(|k, _| vips.contains(k));
    }

    /// Installs the controller's health verdicts and selection tables.
    /// Selections for an unknown VIP, or computed for a policy the VIP no
    /// longer has, are skipped (and said so); health is recorded for every
    /// backend the VIP has. Call [`Appliance::build_tables`] afterwards.
    pub fn apply_selection(
        &mut self,
        controller: &str,
        sels: &[VipSelection],
        now_s: f64,
    ) -> SelectionSetReply {
        let mut applied = 0;
        let mut skipped = Vec::new();
        for sel in sels {
            let Ok(i) = firmware_config::edit::find_vip(&self.config, &sel.vip) else {
                skipped.push(format!("{}: no such VIP", sel.vip));
                continue;
            };
            let v = &self.config.vips[i];
            let vk = vip_key(v);
            let known: Vec<(u32, u16)> = v
                .backends
                .iter()
                .map(|b| (u32::from(b.address), b.port_or(v.port)))
                .collect();
            for b in &sel.backends {
                let k = (u32::from(b.address), b.port);
                if known.contains(&k) {
                    self.health.insert((vk, k.0, k.1), b.up);
                }
            }
            if sel.policy != v.policy {
                skipped.push(format!(
                    "{}: computed for policy {} but the VIP's policy is now {} (health recorded)",
                    sel.vip, sel.policy, v.policy
                ));
                continue;
            }
            let weights = sel
                .backends
                .iter()
                .filter(|b| known.contains(&(u32::from(b.address), b.port)))
                .map(|b| {
                    (
                        (u32::from(b.address), b.port),
                        (
                            b.weight.min(firmware_config::MAX_WEIGHT),
                            b.inputs.clone(),
                            b.note.clone(),
                        ),
                    )
                })
                .collect();
            self.selections.insert(
                vk,
                Pushed {
                    controller: controller.to_string(),
                    policy: sel.policy,
                    kind: sel.kind,
                    summary: sel.summary.clone(),
                    at_s: now_s,
                    weights,
                },
            );
            applied += 1;
        }
        self.rebuild_vips(&self.assigned.clone());
        SelectionSetReply {
            applied,
            skipped,
            tables_generation: self.generation,
        }
    }

    /// The `policy_show` reply for the VIP `sel`.
    pub fn policy_show(&self, sel: &str, now_s: f64) -> Result<PolicyShowReply, String> {
        let i = firmware_config::edit::find_vip(&self.config, sel)?;
        let v = &self.config.vips[i];
        let info = &self.vips[i];
        let pushed = self.pushed_for(v);
        let counts = info.maglev.slot_counts(info.backend_ids.len());
        let size = info.maglev.size();
        let backends = v
            .backends
            .iter()
            .zip(&info.weights)
            .enumerate()
            .map(|(k, (b, &weight))| {
                let port = b.port_or(v.port);
                let (inputs, note) = pushed
                    .and_then(|p| p.weights.get(&(u32::from(b.address), port)))
                    .map(|(_, inp, note)| (inp.clone(), note.clone()))
                    .unwrap_or_default();
                PolicyBackend {
                    address: b.address.to_string(),
                    port,
                    configured_weight: b.weight,
                    drain: b.drain,
                    priority: b.priority,
                    group: b.group.clone(),
                    up: self.healthy(v, b),
                    inputs,
                    weight,
                    share_percent: f64::from(counts.get(k).copied().unwrap_or(0)) * 100.0
                        / f64::from(size.max(1)),
                    range: match info.layout {
                        Layout::Ranges => info.maglev.range_of(k as u32),
                        Layout::Maglev => None,
                    },
                    note,
                }
            })
            .collect();
        Ok(PolicyShowReply {
            vip: v.label(),
            policy: v.policy,
            group_policy: v.group_policy,
            source: pushed.map_or_else(|| "sluiced".to_string(), |p| p.controller.clone()),
            age_s: pushed.map(|p| now_s - p.at_s),
            kind: pushed.map_or(SelectionKind::Weights, |p| p.kind),
            summary: pushed.map_or_else(
                || {
                    format!(
                        "configured weights{} (no controller has pushed tables for policy {})",
                        if v.backends.iter().any(|b| b.drain) {
                            ", draining backends excluded"
                        } else {
                            ""
                        },
                        v.policy
                    )
                },
                |p| p.summary.clone(),
            ),
            table_size: size,
            backends,
        })
    }

    /// The `flow_list` reply from the flow mirror.
    pub fn flow_list(
        &self,
        mirror: &FlowMirror,
        tables: &Tables,
        vip: Option<&str>,
        backend: Option<&str>,
        limit: usize,
        now_s: f64,
    ) -> Result<FlowListReply, String> {
        let vi = vip
            .map(|s| firmware_config::edit::find_vip(&self.config, s))
            .transpose()?;
        let vid = vi.map(|i| self.vips[i].index);
        let bid = match (backend, vi) {
            (None, _) => None,
            (Some(b), Some(i)) => {
                let k = firmware_config::edit::find_backend(&self.config, i, b)?;
                Some(self.assigned[i].1[k])
            }
            (Some(b), None) => {
                let found: Vec<u32> = self
                    .config
                    .vips
                    .iter()
                    .zip(&self.assigned)
                    .flat_map(|(v, (_, ids))| {
                        v.backends
                            .iter()
                            .zip(ids)
                            .filter(move |(x, _)| {
                                firmware_config::edit::backend_matches(x, v.port, b)
                            })
                            .map(|(_, &id)| id)
                    })
                    .collect();
                match found.as_slice() {
                    [id] => Some(*id),
                    [] => return Err(format!("no backend \"{b}\" in any VIP")),
                    _ => {
                        return Err(format!(
                            "backend \"{b}\" serves {} VIPs; name the VIP too (--vip)",
                            found.len()
                        ))
                    }
                }
            }
        };
        let (matched, flows) = mirror.list(vid, bid, limit);
        let flows = flows
            .into_iter()
            .map(|(w, k, e)| {
                let v = tables.vip(k.vip);
                let b = tables.backend(e.backend);
                FlowEntryView {
                    client: format!("{}:{}", Ipv4Addr::from(k.client_ip), k.client_port),
                    vip: v.map_or_else(|| format!("#{}", k.vip), |v| v.label.clone()),
                    protocol: if k.proto == PROTO_UDP { "udp" } else { "tcp" }.to_string(),
                    backend: b.map_or_else(
                        || format!("#{}", e.backend),
                        |b| format!("{}:{}", Ipv4Addr::from(b.addr), b.port),
                    ),
                    worker: w,
                    state: if e.closing { "closing" } else { "open" }.to_string(),
                    age_s: (now_s - e.since_s).max(0.0),
                }
            })
            .collect();
        Ok(FlowListReply {
            matched,
            flows,
            // The caller knows the workers' counters.
            events_dropped: 0,
        })
    }

    fn port_infos(&self) -> Vec<PortInfo> {
        self.config
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| PortInfo {
                name: p.name.clone(),
                mac: self.port_macs.get(i).copied().unwrap_or([0; 6]),
                addr: u32::from(p.address.addr),
                netmask: p.address.netmask(),
                gateway: p.gateway.map(u32::from),
                faces_clients: p.role.faces_clients(),
                faces_backends: p.role.faces_backends(),
            })
            .collect()
    }

    /// A new snapshot of the forwarding tables.
    pub fn build_tables(&mut self) -> Tables {
        self.generation += 1;
        let neigh: Vec<(u16, u32, [u8; 6])> = self
            .neighbours
            .iter()
            .map(|(&(p, ip), n)| (p, ip, n.mac))
            .collect();
        Tables::new(
            self.generation,
            self.port_infos(),
            self.vips.clone(),
            self.backend_infos(&self.assigned),
            &neigh,
            Arc::clone(&self.cache),
        )
    }

    /// Records that `ip` is at `mac` on `port`; true when this changed the
    /// table (so the snapshot needs rebuilding).
    pub fn learn(&mut self, port: u16, ip: u32, mac: [u8; 6], now_s: f64) -> bool {
        match self.neighbours.get_mut(&(port, ip)) {
            Some(n) if n.mac == mac => {
                n.seen = now_s;
                false
            }
            Some(n) if n.permanent => false,
            _ => {
                self.neighbours.insert(
                    (port, ip),
                    Neighbour {
                        mac,
                        seen: now_s,
                        permanent: false,
                    },
                );
                true
            }
        }
    }

    /// Forgets neighbours not refreshed for [`NEIGHBOUR_TTL_S`]; true when
    /// something was removed.
    pub fn age_neighbours(&mut self, now_s: f64) -> bool {
        let before = self.neighbours.len();
        self.neighbours
            .retain(|_, n| n.permanent || now_s - n.seen < NEIGHBOUR_TTL_S);
        before != self.neighbours.len()
    }

    pub fn neighbour(&self, port: u16, ip: u32) -> Option<Neighbour> {
        self.neighbours.get(&(port, ip)).copied()
    }

    /// Next hops the dataplane needs and has not resolved (or whose entry is
    /// getting old): (port, ip). The daemon ARPs for them.
    pub fn wanted_neighbours(&self, now_s: f64) -> Vec<(u16, u32)> {
        let mut want: Vec<(u16, u32)> = Vec::new();
        for vip in &self.config.vips {
            for b in vip.backends.iter().filter(|b| b.mac.is_none()) {
                if let (egress, Some(h)) = self.backend_next_hop(b) {
                    want.push((egress, h));
                }
            }
        }
        for (i, p) in self.config.ports.iter().enumerate() {
            if let Some(g) = p.gateway {
                want.push((i as u16, u32::from(g)));
            }
        }
        want.sort_unstable();
        want.dedup();
        want.retain(|k| match self.neighbours.get(k) {
            None => true,
            // Refresh well before the entry ages out.
            Some(n) => !n.permanent && now_s - n.seen > NEIGHBOUR_TTL_S / 2.0,
        });
        want
    }

    /// The `vip_list` reply.
    pub fn vip_list(&self, tables: &Tables) -> VipListReply {
        let mut vips = Vec::new();
        for (vi, v) in self.config.vips.iter().enumerate() {
            let info = &self.vips[vi];
            let counts = info.maglev.slot_counts(info.backend_ids.len());
            let size = info.maglev.size().max(1) as f64;
            let backends = info
                .backend_ids
                .iter()
                .enumerate()
                .filter_map(|(i, &id)| tables.backend(id).map(|b| (i, b)))
                .map(|(i, b)| BackendEntry {
                    id: b.id,
                    address: Ipv4Addr::from(b.addr).to_string(),
                    port: b.port,
                    weight: b.weight,
                    slot_share_percent: f64::from(counts.get(i).copied().unwrap_or(0)) * 100.0
                        / size,
                    next_hop_mac: b.next_hop_mac.map(mac_string),
                    egress: self.config.ports[b.egress_port as usize].name.clone(),
                    state: backend_state(b).to_string(),
                })
                .collect();
            vips.push(VipEntry {
                name: v.label(),
                address: v.address.to_string(),
                port: v.port,
                protocol: v.protocol.to_string(),
                mode: v.mode.to_string(),
                maglev_table_size: info.maglev.size(),
                backends,
            });
        }
        VipListReply { vips }
    }

    /// The `stats` reply: every counter summed over the workers.
    pub fn stats(
        &self,
        tables: &Tables,
        workers: &[Arc<WorkerCounters>],
        nic: &[NicStats],
        events_drained: u64,
        flow_capacity: u64,
        uptime_s: f64,
    ) -> StatsReply {
        let sum = |f: &dyn Fn(&WorkerCounters) -> &Counter| -> u64 {
            counters::sum(workers.iter().map(|w| &**w), f)
        };
        let ports = self
            .config
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let drops: BTreeMap<String, u64> = DropReason::ALL
                    .iter()
                    .map(|r| {
                        (
                            r.as_str().to_string(),
                            sum(&|w| &w.ports[i].drops[*r as usize]),
                        )
                    })
                    .collect();
                PortStats {
                    name: p.name.clone(),
                    rx_packets: sum(&|w| &w.ports[i].rx_packets),
                    rx_bytes: sum(&|w| &w.ports[i].rx_bytes),
                    tx_packets: sum(&|w| &w.ports[i].tx_packets),
                    tx_bytes: sum(&|w| &w.ports[i].tx_bytes),
                    rx_arp: sum(&|w| &w.ports[i].rx_arp),
                    rx_ipv4: sum(&|w| &w.ports[i].rx_ipv4),
                    rx_ipv6: sum(&|w| &w.ports[i].rx_ipv6),
                    rx_icmpv6: sum(&|w| &w.ports[i].rx_icmpv6),
                    arp_replies_sent: sum(&|w| &w.ports[i].arp_replies_sent),
                    arp_requests_sent: sum(&|w| &w.ports[i].arp_requests_sent),
                    icmp_echo_replies_sent: sum(&|w| &w.ports[i].icmp_echo_replies_sent),
                    drops,
                    nic: nic.get(i).cloned().unwrap_or_default(),
                }
            })
            .collect();
        let vips = self
            .config
            .vips
            .iter()
            .zip(&self.vips)
            .map(|(v, info)| (v, info.index as usize))
            .map(|(v, id)| VipStats {
                name: v.label(),
                address: v.address.to_string(),
                port: v.port,
                protocol: v.protocol.to_string(),
                mode: v.mode.to_string(),
                packets: sum(&|w| &w.vips[id].packets),
                bytes: sum(&|w| &w.vips[id].bytes),
                new_flows: sum(&|w| &w.vips[id].new_flows),
                drops: sum(&|w| &w.vips[id].drops),
                reply_packets: sum(&|w| &w.vips[id].reply_packets),
                reply_bytes: sum(&|w| &w.vips[id].reply_bytes),
            })
            .collect();
        let backends = tables
            .backends
            .iter()
            .flatten()
            .map(|b| {
                let i = b.id as usize;
                let new_flows = sum(&|w| &w.backends[i].new_flows);
                let ended = sum(&|w| &w.backends[i].ended_flows);
                BackendStats {
                    id: b.id,
                    vip: tables
                        .vip(b.vip)
                        .map_or_else(String::new, |v| v.label.clone()),
                    address: Ipv4Addr::from(b.addr).to_string(),
                    port: b.port,
                    weight: b.weight,
                    state: backend_state(b).to_string(),
                    tx_packets: sum(&|w| &w.backends[i].tx_packets),
                    tx_bytes: sum(&|w| &w.backends[i].tx_bytes),
                    rx_packets: sum(&|w| &w.backends[i].rx_packets),
                    rx_bytes: sum(&|w| &w.backends[i].rx_bytes),
                    new_flows,
                    active_flows: new_flows.saturating_sub(ended),
                }
            })
            .collect();
        let created = sum(&|w| &w.flows.created);
        let expired = sum(&|w| &w.flows.expired);
        StatsReply {
            uptime_s,
            ports,
            vips,
            backends,
            flows: FlowStats {
                active: created.saturating_sub(expired),
                capacity: flow_capacity,
                created,
                closed: sum(&|w| &w.flows.closed),
                expired,
                table_full: sum(&|w| &w.flows.table_full),
                rescheduled: sum(&|w| &w.flows.rescheduled),
                events_pushed: sum(&|w| &w.flows.events_pushed),
                events_dropped: sum(&|w| &w.flows.events_dropped),
                events_drained,
                neighbour_hints_dropped: sum(&|w| &w.flows.learn_dropped),
            },
        }
    }
}

fn backend_state(b: &BackendInfo) -> &'static str {
    if !b.alive {
        "removed"
    } else if !b.healthy {
        "down"
    } else if b.drain {
        "draining"
    } else if b.next_hop_mac.is_none() {
        "unresolved"
    } else if !b.accepts_new {
        "no-new"
    } else {
        "up"
    }
}

/// A broadcast ARP request from (`mac`, `ip`) for `target`, padded to the
/// 60-byte Ethernet minimum.
pub fn arp_request(mac: [u8; 6], ip: u32, target: u32) -> [u8; 60] {
    use crate::wire::{ArpOperation, ArpPacket, EthernetFrame, ETHERTYPE_ARP};
    let mut f = [0u8; 60];
    let (eth, rest) = f.split_at_mut(crate::wire::ethernet::HEADER_LEN);
    let mut eth = EthernetFrame::new_checked(eth).expect("14 bytes hold an Ethernet header");
    eth.set_dst_addr([0xff; 6]);
    eth.set_src_addr(mac);
    eth.set_ethertype(ETHERTYPE_ARP);
    // The rest stays zero: the target MAC and the padding to 60 bytes.
    let mut arp = ArpPacket::init(rest).expect("46 bytes hold an ARP packet");
    arp.set_operation(ArpOperation::Request);
    arp.set_sender_hw_addr(mac);
    arp.set_sender_proto_addr(ip.into());
    arp.set_target_proto_addr(target.into());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[eal]
main_core = 0
worker_cores = [1]
hugepages = false
[[port]]
name = "client"
vdev = "net_null0"
role = "client"
address = "198.18.1.254/24"
[[port]]
name = "backend"
vdev = "net_null1"
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
[[vip]]
address = "198.18.100.2"
port = 53
protocol = "udp"
mode = "nat"
[[vip.backend]]
address = "198.18.2.21"
port = 53
"#;

    fn cfg(text: &str) -> Config {
        firmware_config::parse_with(text, "t.toml", &firmware_config::Environment { cpus: 2 })
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn ids(t: &Tables) -> Vec<(String, u32, u32)> {
        t.backends
            .iter()
            .flatten()
            .map(|b| (Ipv4Addr::from(b.addr).to_string(), b.id, b.vip))
            .collect()
    }

    #[test]
    fn arp_request_is_a_broadcast_who_has() {
        use crate::wire::{ArpOperation, ArpPacket, EthernetFrame, ETHERTYPE_ARP};
        let mac = [2, 0, 0, 0, 0, 1];
        let f = arp_request(mac, 0xc612_01fe, 0xc612_010b);
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(
            (eth.dst_addr(), eth.src_addr(), eth.ethertype()),
            ([0xff; 6], mac, ETHERTYPE_ARP)
        );
        let arp = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(arp.operation(), ArpOperation::Request);
        assert_eq!(arp.sender_hw_addr(), mac);
        assert_eq!(arp.sender_proto_addr_raw(), 0xc612_01fe);
        assert_eq!(arp.target_hw_addr(), [0; 6]);
        assert_eq!(arp.target_proto_addr_raw(), 0xc612_010b);
        assert!(f[42..].iter().all(|&b| b == 0), "zero padding");
    }

    #[test]
    fn ids_survive_reconfiguration() {
        let mut app = Appliance::new(cfg(BASE), vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]);
        let before = app.build_tables();
        assert_eq!(
            ids(&before),
            vec![
                ("198.18.2.11".into(), 0, 0),
                ("198.18.2.12".into(), 1, 0),
                ("198.18.2.21".into(), 2, 1)
            ]
        );
        // Remove .11, add .13 to the first VIP, and a new VIP in front.
        let text = BASE
            .replace("[[vip.backend]]\naddress = \"198.18.2.11\"\nport = 8080\n", "")
            .replace(
                "port = 8080\n[[vip]]",
                "port = 8080\n[[vip.backend]]\naddress = \"198.18.2.13\"\nport = 8080\n[[vip]]",
            )
            .replace(
                "[[vip]]\naddress = \"198.18.100.1\"",
                "[[vip]]\naddress = \"198.18.100.3\"\nport = 80\nprotocol = \"tcp\"\nmode = \"nat\"\n[[vip.backend]]\naddress = \"198.18.2.31\"\nport = 80\n[[vip]]\naddress = \"198.18.100.1\"",
            );
        app.reconfigure(cfg(&text)).unwrap();
        let after = app.build_tables();
        let got = ids(&after);
        assert!(got.contains(&("198.18.2.12".into(), 1, 0)), "kept: {got:?}");
        assert!(got.contains(&("198.18.2.21".into(), 2, 1)), "kept: {got:?}");
        assert!(
            !got.iter().any(|(a, _, _)| a == "198.18.2.11"),
            "removed: {got:?}"
        );
        assert!(
            got.iter().all(|(_, id, _)| *id != 0),
            "id 0 is not reused: {got:?}"
        );
        let web = after
            .service(u32::from(Ipv4Addr::new(198, 18, 100, 1)), 80, 6)
            .unwrap();
        assert_eq!(
            web.index, 0,
            "VIP id kept although a VIP was added before it"
        );
        let new_vip = after
            .service(u32::from(Ipv4Addr::new(198, 18, 100, 3)), 80, 6)
            .unwrap();
        assert_eq!(new_vip.index, 2);
        assert_eq!(after.vip(2).unwrap().addr, new_vip.addr);
    }

    fn sel(
        vip: &str,
        policy: Policy,
        kind: SelectionKind,
        b: &[(&str, u16, bool, u32)],
    ) -> VipSelection {
        VipSelection {
            vip: vip.into(),
            policy,
            kind,
            summary: "test".into(),
            backends: b
                .iter()
                .map(
                    |&(a, port, up, weight)| firmware_config::control::BackendSelection {
                        address: a.parse().unwrap(),
                        port,
                        up,
                        weight,
                        inputs: BTreeMap::from([("x".to_string(), 1.0)]),
                        group: None,
                        note: if up { String::new() } else { "down".into() },
                    },
                )
                .collect(),
        }
    }

    fn shares(app: &Appliance, vip: &str) -> Vec<f64> {
        app.policy_show(vip, 0.0)
            .unwrap()
            .backends
            .iter()
            .map(|b| b.share_percent)
            .collect()
    }

    #[test]
    fn pushed_health_and_weights_shape_the_table_and_survive_reconfiguration() {
        let mut app = Appliance::new(cfg(BASE), vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]);
        let web = "198.18.100.1:80/tcp";
        assert_eq!(
            shares(&app, web)
                .iter()
                .map(|s| s.round())
                .collect::<Vec<_>>(),
            vec![50.0, 50.0]
        );
        // Down: no slots, but still alive (its flows stay).
        let r = app.apply_selection(
            "c1",
            &[sel(
                web,
                Policy::Maglev,
                SelectionKind::Weights,
                &[
                    ("198.18.2.11", 8080, false, 1),
                    ("198.18.2.12", 8080, true, 1),
                ],
            )],
            10.0,
        );
        assert_eq!((r.applied, r.skipped.len()), (1, 0));
        assert_eq!(shares(&app, web), vec![0.0, 100.0]);
        let t = app.build_tables();
        let b0 = t
            .backends
            .iter()
            .flatten()
            .find(|b| b.addr == 0xc612_020b)
            .unwrap();
        assert!(b0.alive && !b0.accepts_new && !b0.healthy);
        assert_eq!(backend_state(b0), "down");
        let show = app.policy_show(web, 12.5).unwrap();
        assert_eq!(show.source, "c1");
        assert_eq!(show.age_s, Some(2.5));
        assert_eq!(show.backends[1].inputs.get("x"), Some(&1.0));
        assert_eq!(
            show.backends[0].note, "down",
            "the controller's note is shown"
        );
        // Health is kept when an unrelated change rebuilds the tables.
        let drained = BASE.replace(
            "address = \"198.18.2.12\"\nport = 8080\n",
            "address = \"198.18.2.12\"\nport = 8080\n[[vip.backend]]\naddress = \"198.18.2.13\"\nport = 8080\nweight = 3\n",
        );
        app.reconfigure(cfg(&drained)).unwrap();
        let s = shares(&app, web);
        assert_eq!(s[0], 0.0, "still down after reconfiguration: {s:?}");
        // .13 is unknown to the push: its configured weight is scaled to
        // the pushed ones (pushed 1 for cfg 1), so 3:1 against .12.
        assert!((s[2] / s[1] - 3.0).abs() < 0.2, "{s:?}");
        // Ranges: contiguous, proportional, in order.
        let r = app.apply_selection(
            "c1",
            &[sel(
                web,
                Policy::Maglev,
                SelectionKind::Ranges,
                &[
                    ("198.18.2.11", 8080, true, 1),
                    ("198.18.2.12", 8080, true, 1),
                    ("198.18.2.13", 8080, true, 2),
                ],
            )],
            20.0,
        );
        assert_eq!(r.applied, 1);
        let show = app.policy_show(web, 20.0).unwrap();
        let ranges: Vec<_> = show.backends.iter().map(|b| b.range.unwrap()).collect();
        assert_eq!(ranges[0].0, 0);
        assert_eq!(ranges[0].1, ranges[1].0);
        assert_eq!(ranges[1].1, ranges[2].0);
        assert_eq!(ranges[2].1, show.table_size);
        // A push for another policy is skipped but its health is kept.
        let r = app.apply_selection(
            "c1",
            &[
                sel(
                    web,
                    Policy::LeastConn,
                    SelectionKind::Weights,
                    &[("198.18.2.13", 8080, false, 1)],
                ),
                sel("nope", Policy::Maglev, SelectionKind::Weights, &[]),
            ],
            30.0,
        );
        assert_eq!(r.applied, 0);
        assert_eq!(r.skipped.len(), 2, "{:?}", r.skipped);
        assert_eq!(shares(&app, web)[2], 0.0, ".13 down");
    }

    #[test]
    fn drain_takes_no_new_connections_but_stays_alive() {
        let text = BASE.replacen("port = 8080\n", "port = 8080\ndrain = true\n", 1);
        let mut app = Appliance::new(cfg(&text), vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]);
        let t = app.build_tables();
        let b0 = t
            .backends
            .iter()
            .flatten()
            .find(|b| b.addr == 0xc612_020b)
            .unwrap();
        assert!(b0.alive && b0.drain && !b0.accepts_new);
        assert_eq!(backend_state(b0), "draining");
        assert_eq!(shares(&app, "198.18.100.1:80/tcp"), vec![0.0, 100.0]);
    }

    #[test]
    fn ports_cannot_change_and_failures_change_nothing() {
        let mut app = Appliance::new(cfg(BASE), vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]);
        let gen_tables = app.build_tables();
        let moved = BASE.replace("vdev = \"net_null1\"", "vdev = \"net_null7\"");
        let err = app.reconfigure(cfg(&moved)).unwrap_err();
        assert!(err.contains("ports cannot change"), "{err}");
        assert_eq!(ids(&app.build_tables()), ids(&gen_tables));
    }
}
