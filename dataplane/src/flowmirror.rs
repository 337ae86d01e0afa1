//! The management side's copy of the workers' flow tables, kept from the
//! flow events the workers push (created, closed, expired). Workers own
//! their tables and are never stopped or locked to list flows; the mirror
//! answers `flow list` instead. It is exact while no event is lost: a full
//! event ring drops events (counted as `events_dropped`), and then the
//! mirror may miss flows or keep ended ones until their worker reports the
//! key again.

use crate::events::{FlowEvent, FlowEventKind};
use crate::flow::FlowKey;
use std::collections::HashMap;

/// What the mirror knows of one flow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MirrorEntry {
    pub backend: u32,
    /// FIN or RST seen.
    pub closing: bool,
    /// Seconds since start when the flow was created.
    pub since_s: f64,
}

/// Flows by (worker, key).
#[derive(Debug, Default)]
pub struct FlowMirror {
    flows: HashMap<(u16, FlowKey), MirrorEntry>,
    capacity: usize,
    /// Created events not recorded because the mirror was full.
    pub overflowed: u64,
}

impl FlowMirror {
    /// A mirror of at most `capacity` flows (the workers' total capacity).
    pub fn new(capacity: usize) -> FlowMirror {
        FlowMirror {
            flows: HashMap::new(),
            capacity,
            overflowed: 0,
        }
    }

    /// Records one event at `now_s`.
    pub fn apply(&mut self, ev: &FlowEvent, now_s: f64) {
        let k = (ev.worker, ev.key);
        match ev.kind {
            FlowEventKind::Created => {
                if self.flows.len() >= self.capacity && !self.flows.contains_key(&k) {
                    self.overflowed += 1;
                    return;
                }
                self.flows.insert(
                    k,
                    MirrorEntry {
                        backend: ev.backend,
                        closing: false,
                        since_s: now_s,
                    },
                );
            }
            FlowEventKind::Closed => {
                if let Some(e) = self.flows.get_mut(&k) {
                    e.closing = true;
                    e.backend = ev.backend;
                }
            }
            FlowEventKind::Expired => {
                self.flows.remove(&k);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Flows whose VIP id is `vip` and backend id is `backend` (each when
    /// given): how many match, and at most `limit` of them, oldest first.
    pub fn list(
        &self,
        vip: Option<u32>,
        backend: Option<u32>,
        limit: usize,
    ) -> (u64, Vec<(u16, FlowKey, MirrorEntry)>) {
        let mut matched = 0u64;
        let mut out: Vec<(u16, FlowKey, MirrorEntry)> = Vec::new();
        for (&(w, k), e) in &self.flows {
            if vip.is_some_and(|v| v != k.vip) || backend.is_some_and(|b| b != e.backend) {
                continue;
            }
            matched += 1;
            out.push((w, k, *e));
        }
        out.sort_by(|a, b| {
            a.2.since_s
                .total_cmp(&b.2.since_s)
                .then((a.1.client_ip, a.1.client_port, a.0).cmp(&(
                    b.1.client_ip,
                    b.1.client_port,
                    b.0,
                )))
        });
        out.truncate(limit);
        (matched, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: FlowEventKind, worker: u16, client_port: u16, vip: u32, backend: u32) -> FlowEvent {
        FlowEvent {
            kind,
            worker,
            key: FlowKey {
                client_ip: 0xc612_0107,
                vip,
                client_port,
                proto: 6,
            },
            backend,
        }
    }

    #[test]
    fn follows_events_and_filters() {
        let mut m = FlowMirror::new(10);
        m.apply(&ev(FlowEventKind::Created, 0, 1000, 0, 3), 1.0);
        m.apply(&ev(FlowEventKind::Created, 1, 1000, 0, 4), 2.0);
        m.apply(&ev(FlowEventKind::Created, 0, 1001, 1, 5), 3.0);
        assert_eq!(m.len(), 3);
        m.apply(&ev(FlowEventKind::Closed, 0, 1000, 0, 3), 4.0);
        let (n, l) = m.list(Some(0), None, 10);
        assert_eq!(n, 2);
        assert_eq!(l[0].1.client_port, 1000);
        assert!(l[0].2.closing, "closed flow marked");
        assert_eq!(l[0].2.since_s, 1.0, "oldest first");
        let (n, l) = m.list(None, Some(5), 10);
        assert_eq!((n, l.len()), (1, 1));
        let (n, l) = m.list(None, None, 1);
        assert_eq!(
            (n, l.len()),
            (3, 1),
            "limit cuts the listing, not the count"
        );
        m.apply(&ev(FlowEventKind::Expired, 0, 1000, 0, 3), 5.0);
        m.apply(&ev(FlowEventKind::Expired, 0, 4242, 0, 3), 5.0);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn capacity_bounds_memory() {
        let mut m = FlowMirror::new(2);
        for p in 0..5 {
            m.apply(&ev(FlowEventKind::Created, 0, p, 0, 1), 0.0);
        }
        assert_eq!((m.len(), m.overflowed), (2, 3));
    }
}
