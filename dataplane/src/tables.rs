//! The forwarding tables the workers read: an immutable snapshot built by
//! the management thread (config + resolved neighbours + backend states)
//! and swapped in whole. Workers load it once per burst.

use crate::maglev::{MaglevBackend, MaglevTable};
use crate::neighbours::NeighbourCache;
use std::sync::Arc;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Forwarding mode of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardMode {
    /// Destination MAC rewrite only; replies bypass the dispatcher.
    DirectRouting,
    /// Destination IP/port rewrite; replies come back and are translated.
    Nat,
}

/// One dataplane port as the fast path sees it.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub name: String,
    pub mac: [u8; 6],
    /// Host-order IPv4 address of the port.
    pub addr: u32,
    pub netmask: u32,
    pub gateway: Option<u32>,
    pub faces_clients: bool,
    pub faces_backends: bool,
}

impl PortInfo {
    #[inline]
    pub fn on_link(&self, ip: u32) -> bool {
        (ip & self.netmask) == (self.addr & self.netmask)
    }
}

/// A backend as the fast path sees it. Indexed by its stable id.
#[derive(Debug, Clone)]
pub struct BackendInfo {
    pub id: u32,
    pub vip: u32,
    pub addr: u32,
    pub port: u16,
    pub weight: u32,
    /// Takes new connections (healthy, not drained, weight > 0).
    pub accepts_new: bool,
    /// Draining (configured): no new connections, established ones stay.
    pub drain: bool,
    /// Health as the controller last pushed it (true until it says otherwise).
    pub healthy: bool,
    /// Still exists: established flows may keep using it.
    pub alive: bool,
    pub egress_port: u16,
    /// MAC of the next hop toward it (itself, or the egress port's gateway);
    /// None until resolved.
    pub next_hop_mac: Option<[u8; 6]>,
}

/// A VIP service with its selection table.
#[derive(Debug)]
pub struct VipInfo {
    pub index: u32,
    pub label: String,
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub mode: ForwardMode,
    /// Backend ids of this VIP, in config order.
    pub backend_ids: Vec<u32>,
    /// Maglev table over `backend_ids` (weight 0 for those not taking new
    /// connections); a slot holds an index into `backend_ids`.
    pub maglev: MaglevTable,
    /// The weight each of `backend_ids` got in `maglev` (0 for those not
    /// taking new connections), and how the table is laid out: what
    /// `policy show` reports. Not read by the fast path.
    pub weights: Vec<u32>,
    pub layout: Layout,
}

/// What identifies a VIP service, before its Maglev table is built.
#[derive(Debug, Clone)]
pub struct VipSpec {
    pub index: u32,
    pub label: String,
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub mode: ForwardMode,
}

/// How a VIP's selection table is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Maglev consistent hashing.
    Maglev,
    /// Contiguous hash ranges in backend order (seed 004).
    Ranges,
}

impl VipInfo {
    /// Builds the VIP's Maglev table from its backends' weights and states
    /// (off the fast path).
    pub fn build(spec: VipSpec, backends: &[&BackendInfo], table_size: u32) -> VipInfo {
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        VipInfo::build_with(spec, backends, &weights, Layout::Maglev, table_size)
    }

    /// Builds the VIP's table with `weights[i]` for `backends[i]` (a backend
    /// that does not accept new connections gets none whatever its weight).
    pub fn build_with(
        spec: VipSpec,
        backends: &[&BackendInfo],
        weights: &[u32],
        layout: Layout,
        table_size: u32,
    ) -> VipInfo {
        let effective: Vec<u32> = backends
            .iter()
            .zip(weights)
            .map(|(b, &w)| if b.accepts_new { w } else { 0 })
            .collect();
        let maglev = match layout {
            Layout::Maglev => {
                let mb: Vec<MaglevBackend> = backends
                    .iter()
                    .zip(&effective)
                    .map(|(b, &weight)| MaglevBackend {
                        key: backend_key(b.addr, b.port),
                        weight,
                    })
                    .collect();
                MaglevTable::build(&mb, table_size)
            }
            Layout::Ranges => MaglevTable::from_ranges(&effective, table_size),
        };
        VipInfo {
            index: spec.index,
            label: spec.label,
            addr: spec.addr,
            port: spec.port,
            proto: spec.proto,
            mode: spec.mode,
            backend_ids: backends.iter().map(|b| b.id).collect(),
            maglev,
            weights: effective,
            layout,
        }
    }

    /// The backend id Maglev picks for a flow hash.
    #[inline]
    pub fn select(&self, hash: u32) -> Option<u32> {
        self.maglev
            .lookup(hash)
            .and_then(|i| self.backend_ids.get(i as usize).copied())
    }
}

/// Stable Maglev identity of a backend: the same address and port keep the
/// same permutation whatever else changes, which is what limits disruption.
pub fn backend_key(addr: u32, port: u16) -> u64 {
    (u64::from(addr) << 16) | u64::from(port)
}

/// A small open-addressing map from a u64 key to a u32 value, built once and
/// read by the fast path (no hashing library, no allocation on lookup).
#[derive(Debug, Clone)]
pub struct FixedMap {
    keys: Box<[u64]>,
    vals: Box<[u32]>,
    mask: usize,
}

const EMPTY: u64 = u64::MAX;

impl FixedMap {
    /// Builds from pairs; later duplicates overwrite earlier ones.
    pub fn build(pairs: &[(u64, u32)]) -> FixedMap {
        let cap = (pairs.len() * 2 + 1).next_power_of_two().max(8);
        let mut m = FixedMap {
            keys: vec![EMPTY; cap].into_boxed_slice(),
            vals: vec![0; cap].into_boxed_slice(),
            mask: cap - 1,
        };
        for &(k, v) in pairs {
            debug_assert_ne!(k, EMPTY);
            let mut i = mix64(k) as usize & m.mask;
            while m.keys[i] != EMPTY && m.keys[i] != k {
                i = (i + 1) & m.mask;
            }
            m.keys[i] = k;
            m.vals[i] = v;
        }
        m
    }

    #[inline]
    pub fn get(&self, k: u64) -> Option<u32> {
        let mut i = mix64(k) as usize & self.mask;
        // Load factor <= 1/2 guarantees an empty slot ends every probe.
        loop {
            let key = self.keys[i];
            if key == k {
                return Some(self.vals[i]);
            }
            if key == EMPTY {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }
}

#[inline]
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// Key of a service: (address, port, protocol).
#[inline]
pub fn service_key(addr: u32, port: u16, proto: u8) -> u64 {
    (u64::from(addr) << 24) | (u64::from(port) << 8) | u64::from(proto)
}

/// Key of a neighbour: (port index, address).
#[inline]
pub fn neighbour_key(port: u16, addr: u32) -> u64 {
    (u64::from(port) << 32) | u64::from(addr)
}

/// What a local (dispatcher-owned) IPv4 address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalAddr {
    Vip,
    Port(u16),
}

/// The immutable snapshot.
#[derive(Debug)]
pub struct Tables {
    pub generation: u64,
    pub ports: Vec<PortInfo>,
    /// VIPs in configuration order; `VipInfo::index` is the VIP's stable
    /// id (see [`Tables::vip`]).
    pub vips: Vec<Arc<VipInfo>>,
    /// VIP id → position in `vips` (u32::MAX for unused ids).
    vip_pos: Vec<u32>,
    /// Indexed by backend id; None for ids no longer in use.
    pub backends: Vec<Option<BackendInfo>>,
    /// service_key(vip addr, port, proto) → VIP index.
    services: FixedMap,
    /// address → 0 for VIP addresses, 1 + port index for port addresses.
    locals: FixedMap,
    /// service_key(backend addr, backend port, proto) → backend id, NAT
    /// backends only: how a reply is translated back without flow state.
    nat_replies: FixedMap,
    /// neighbour_key(port, ip) → index into `neighbour_macs`.
    neighbours: FixedMap,
    neighbour_macs: Vec<[u8; 6]>,
    /// Shared by every snapshot: neighbours the workers learned since the
    /// management thread last published tables.
    pub cache: Arc<NeighbourCache>,
}

impl Tables {
    /// Assembles the lookup maps. `neighbours` lists (port, ip, mac).
    pub fn new(
        generation: u64,
        ports: Vec<PortInfo>,
        vips: Vec<Arc<VipInfo>>,
        backends: Vec<Option<BackendInfo>>,
        neighbours: &[(u16, u32, [u8; 6])],
        cache: Arc<NeighbourCache>,
    ) -> Tables {
        let max_id = vips.iter().map(|v| v.index as usize + 1).max().unwrap_or(0);
        let mut vip_pos = vec![u32::MAX; max_id];
        for (pos, v) in vips.iter().enumerate() {
            vip_pos[v.index as usize] = pos as u32;
        }
        let by_id = |id: u32| vip_pos.get(id as usize).and_then(|&p| vips.get(p as usize));
        let services: Vec<(u64, u32)> = vips
            .iter()
            .map(|v| (service_key(v.addr, v.port, v.proto), v.index))
            .collect();
        let mut locals: Vec<(u64, u32)> = vips.iter().map(|v| (u64::from(v.addr), 0)).collect();
        locals.extend(
            ports
                .iter()
                .enumerate()
                .map(|(i, p)| (u64::from(p.addr), i as u32 + 1)),
        );
        let nat_replies: Vec<(u64, u32)> = backends
            .iter()
            .flatten()
            .filter(|b| by_id(b.vip).is_some_and(|v| v.mode == ForwardMode::Nat))
            .map(|b| {
                let proto = by_id(b.vip).map_or(0, |v| v.proto);
                (service_key(b.addr, b.port, proto), b.id)
            })
            .collect();
        let neigh_pairs: Vec<(u64, u32)> = neighbours
            .iter()
            .enumerate()
            .map(|(i, &(p, ip, _))| (neighbour_key(p, ip), i as u32))
            .collect();
        Tables {
            generation,
            services: FixedMap::build(&services),
            locals: FixedMap::build(&locals),
            nat_replies: FixedMap::build(&nat_replies),
            neighbours: FixedMap::build(&neigh_pairs),
            neighbour_macs: neighbours.iter().map(|&(_, _, m)| m).collect(),
            ports,
            vips,
            vip_pos,
            backends,
            cache,
        }
    }

    #[inline]
    pub fn service(&self, addr: u32, port: u16, proto: u8) -> Option<&VipInfo> {
        self.services
            .get(service_key(addr, port, proto))
            .and_then(|id| self.vip(id))
    }

    /// The VIP with stable id `id`.
    #[inline]
    pub fn vip(&self, id: u32) -> Option<&VipInfo> {
        self.vip_pos
            .get(id as usize)
            .and_then(|&p| self.vips.get(p as usize))
            .map(|v| &**v)
    }

    #[inline]
    pub fn local(&self, addr: u32) -> Option<LocalAddr> {
        self.locals.get(u64::from(addr)).map(|v| {
            if v == 0 {
                LocalAddr::Vip
            } else {
                LocalAddr::Port(v as u16 - 1)
            }
        })
    }

    #[inline]
    pub fn backend(&self, id: u32) -> Option<&BackendInfo> {
        self.backends.get(id as usize).and_then(Option::as_ref)
    }

    /// The NAT backend that sent a reply from (addr, port, proto).
    #[inline]
    pub fn nat_reply(&self, addr: u32, port: u16, proto: u8) -> Option<&BackendInfo> {
        self.nat_replies
            .get(service_key(addr, port, proto))
            .and_then(|id| self.backend(id))
    }

    #[inline]
    pub fn neighbour(&self, port: u16, ip: u32) -> Option<[u8; 6]> {
        self.neighbours
            .get(neighbour_key(port, ip))
            .and_then(|i| self.neighbour_macs.get(i as usize).copied())
            .or_else(|| self.cache.get(port, ip))
    }

    /// How to reach a client: the first client-facing port with the client
    /// on-link, else the first client-facing port with a gateway. Returns
    /// (port, next-hop ip).
    pub fn client_route(&self, client: u32) -> Option<(u16, u32)> {
        let facing = || {
            self.ports
                .iter()
                .enumerate()
                .filter(|(_, p)| p.faces_clients)
        };
        facing()
            .find(|(_, p)| p.on_link(client))
            .map(|(i, _)| (i as u16, client))
            .or_else(|| facing().find_map(|(i, p)| p.gateway.map(|g| (i as u16, g))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_map_finds_what_it_holds_and_nothing_else() {
        let pairs: Vec<(u64, u32)> = (0..1000u64).map(|k| (k * 7919, k as u32)).collect();
        let m = FixedMap::build(&pairs);
        for &(k, v) in &pairs {
            assert_eq!(m.get(k), Some(v));
        }
        assert_eq!(m.get(3), None);
        assert_eq!(FixedMap::build(&[]).get(0), None);
    }

    fn port(addr: [u8; 4], prefix: u32, gw: Option<[u8; 4]>, clients: bool) -> PortInfo {
        PortInfo {
            name: "p".into(),
            mac: [2, 0, 0, 0, 0, 1],
            addr: u32::from_be_bytes(addr),
            netmask: u32::MAX << (32 - prefix),
            gateway: gw.map(u32::from_be_bytes),
            faces_clients: clients,
            faces_backends: !clients,
        }
    }

    #[test]
    fn client_route_prefers_on_link_then_gateway() {
        let t = Tables::new(
            1,
            vec![
                port([198, 18, 2, 254], 24, None, false),
                port([198, 18, 1, 254], 24, Some([198, 18, 1, 1]), true),
            ],
            vec![],
            vec![],
            &[],
            Arc::default(),
        );
        let c = u32::from_be_bytes([198, 18, 1, 7]);
        assert_eq!(t.client_route(c), Some((1, c)));
        let far = u32::from_be_bytes([198, 19, 0, 9]);
        assert_eq!(
            t.client_route(far),
            Some((1, u32::from_be_bytes([198, 18, 1, 1])))
        );
        assert_eq!(
            t.local(u32::from_be_bytes([198, 18, 1, 254])),
            Some(LocalAddr::Port(1))
        );
        assert_eq!(t.local(c), None);
    }
}
