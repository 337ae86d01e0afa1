//! Traffic on the backend links, for `link-load` (seed 000): rates from the
//! dataplane's cumulative counters, smoothed, and pooled with the twin
//! dispatcher's (Fig. 11: the two traffic monitors pool their data so that
//! both dispatchers decide on the same picture).
//!
//! Pure: the controller feeds readings in and asks for loads.

use crate::policy::{rate, Ewma, LinkLoad};
use crate::serverlist::{LinkCount, LinkCounts};
use serde::Serialize;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Feeds `x` to the average in `slot` (created at the first sample) with
/// the smoothing factor `alpha`, which replaces the one it had: a live
/// change of `controller.smoothing` applies to every existing average.
pub fn smooth(slot: &mut Option<Ewma>, x: f64, alpha: f64) {
    let ewma = slot.get_or_insert_with(|| Ewma::new(alpha));
    ewma.set_alpha(alpha);
    ewma.update(x);
}

/// Smoothed bytes and packets per second on one link, from readings of
/// cumulative counters.
#[derive(Default, Debug)]
pub struct LinkMeter {
    last: Option<(f64, u64, u64)>,
    bytes: Option<Ewma>,
    packets: Option<Ewma>,
}

impl LinkMeter {
    /// Records a reading taken at `t_s` (seconds on any clock that does not
    /// go back) of the link's counters (bytes and packets to + from the
    /// backend). A reading no later than the previous one is ignored.
    pub fn update(&mut self, t_s: f64, bytes: u64, packets: u64, alpha: f64) {
        if let Some((t0, b0, p0)) = self.last {
            if t_s <= t0 {
                return;
            }
            let dt = t_s - t0;
            if let (Some(br), Some(pr)) = (rate(b0, bytes, dt), rate(p0, packets, dt)) {
                smooth(&mut self.bytes, br, alpha);
                smooth(&mut self.packets, pr, alpha);
            }
        }
        self.last = Some((t_s, bytes, packets));
    }

    /// (bytes/s, packets/s), once two readings were taken.
    pub fn rates(&self) -> Option<(f64, f64)> {
        Some((
            self.bytes.as_ref()?.value()?,
            self.packets.as_ref()?.value()?,
        ))
    }
}

/// One [`LinkMeter`] per backend address, fed with whole readings: a link
/// missing from a reading is forgotten (its next reading starts afresh).
/// Used for this dispatcher's own links and for the twin's.
#[derive(Default, Debug)]
pub struct LinkMeters {
    meters: HashMap<Ipv4Addr, LinkMeter>,
}

impl LinkMeters {
    /// Feeds a reading of every link taken at `t_s` (see
    /// [`LinkMeter::update`]); entries whose address is not IPv4 are
    /// skipped.
    pub fn update(&mut self, t_s: f64, links: &[LinkCount], alpha: f64) {
        let mut seen = Vec::with_capacity(links.len());
        for l in links {
            let Ok(addr) = l.address.parse::<Ipv4Addr>() else {
                continue;
            };
            seen.push(addr);
            self.meters
                .entry(addr)
                .or_default()
                .update(t_s, l.bytes, l.packets, alpha);
        }
        self.meters.retain(|a, _| seen.contains(a));
    }

    /// (bytes/s, packets/s) on the link to `addr`.
    pub fn rates(&self, addr: Ipv4Addr) -> Option<(f64, f64)> {
        self.meters.get(&addr)?.rates()
    }

    /// Links measured.
    pub fn len(&self) -> usize {
        self.meters.len()
    }

    /// No link measured.
    pub fn is_empty(&self) -> bool {
        self.meters.is_empty()
    }
}

/// The twin dispatcher's link traffic, from its controller's
/// `GET /link-counts`.
#[derive(Default, Debug)]
pub struct TwinLinks {
    meters: LinkMeters,
    /// The twin's reading time of the last reading absorbed, unix ms.
    last_reading_ms: Option<u64>,
    /// When a reading was last fetched, unix ms (ours).
    last_ok_ms: Option<u64>,
    /// Why the last fetch failed, while it does.
    error: Option<String>,
}

/// What `GET /status` says of the twin.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TwinStatus {
    /// `controller.twin`.
    pub address: String,
    /// Its counts are recent enough to be pooled.
    pub pooled: bool,
    /// Seconds since its counts were last fetched.
    pub last_ok_age_s: Option<f64>,
    /// Why the last fetch failed, while it does.
    pub error: Option<String>,
    /// Backend links it reports traffic on.
    pub links: usize,
}

impl TwinLinks {
    /// Absorbs a reading fetched at `now_ms`. A reading the twin has not
    /// refreshed since the last one (same time) or never took (time 0)
    /// changes no rate; links it no longer reports are forgotten.
    pub fn absorb(&mut self, counts: &LinkCounts, alpha: f64, now_ms: u64) {
        self.last_ok_ms = Some(now_ms);
        self.error = None;
        if counts.unix_ms == 0 || Some(counts.unix_ms) == self.last_reading_ms {
            return;
        }
        self.last_reading_ms = Some(counts.unix_ms);
        self.meters
            .update(counts.unix_ms as f64 / 1000.0, &counts.links, alpha);
    }

    /// Records a failed fetch.
    pub fn failed(&mut self, error: String) {
        self.error = Some(error);
    }

    /// Whether the twin's counts are fresh enough to pool: fetched within
    /// `stale_after_ms`.
    pub fn fresh(&self, now_ms: u64, stale_after_ms: u64) -> bool {
        self.last_ok_ms
            .is_some_and(|t| now_ms.saturating_sub(t) <= stale_after_ms)
    }

    /// The twin's (bytes/s, packets/s) on the link to `addr`, when fresh.
    pub fn rates(&self, addr: Ipv4Addr, now_ms: u64, stale_after_ms: u64) -> Option<(f64, f64)> {
        if !self.fresh(now_ms, stale_after_ms) {
            return None;
        }
        self.meters.rates(addr)
    }

    /// For `GET /status`.
    pub fn status(&self, address: &str, now_ms: u64, stale_after_ms: u64) -> TwinStatus {
        TwinStatus {
            address: address.to_string(),
            pooled: self.fresh(now_ms, stale_after_ms),
            last_ok_age_s: self
                .last_ok_ms
                .map(|t| now_ms.saturating_sub(t) as f64 / 1000.0),
            error: self.error.clone(),
            links: self.meters.len(),
        }
    }
}

/// The load `link-load` reads for a link: this dispatcher's traffic plus
/// the twin's, with this dispatcher's transmit-drop fraction (the twin's
/// own drops are on its own ports). `None` when neither has a rate yet.
pub fn pooled(local: Option<(f64, f64)>, twin: Option<(f64, f64)>, drop: f64) -> Option<LinkLoad> {
    if local.is_none() && twin.is_none() {
        return None;
    }
    let (lb, lp) = local.unwrap_or((0.0, 0.0));
    let (tb, tp) = twin.unwrap_or((0.0, 0.0));
    Some(LinkLoad {
        bytes_per_s: lb + tb,
        packets_per_s: lp + tp,
        drop_fraction: drop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(ms: u64, links: &[(&str, u64, u64)]) -> LinkCounts {
        LinkCounts {
            controller: "twin".into(),
            unix_ms: ms,
            links: links
                .iter()
                .map(|&(a, b, p)| LinkCount {
                    address: a.into(),
                    bytes: b,
                    packets: p,
                })
                .collect(),
        }
    }

    const B1: &str = "198.18.2.11";
    const B2: &str = "198.18.2.12";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn meter_needs_two_readings_and_ignores_time_going_back() {
        let mut m = LinkMeter::default();
        m.update(10.0, 1000, 10, 1.0);
        assert_eq!(m.rates(), None);
        m.update(12.0, 5000, 30, 1.0);
        assert_eq!(m.rates(), Some((2000.0, 10.0)));
        m.update(11.0, 0, 0, 1.0);
        assert_eq!(
            m.rates(),
            Some((2000.0, 10.0)),
            "an older reading changes nothing"
        );
        m.update(13.0, 6000, 40, 0.5);
        assert_eq!(m.rates(), Some((1500.0, 10.0)));
    }

    #[test]
    fn meters_follow_whole_readings() {
        let mut m = LinkMeters::default();
        let r =
            |b1: u64, b2: u64| reading(0, &[(B1, b1, 1), (B2, b2, 1), ("not-an-address", 9, 9)]);
        m.update(1.0, &r(0, 0).links, 1.0);
        m.update(2.0, &r(500, 100).links, 1.0);
        assert_eq!(m.len(), 2, "the entry that is not an address is skipped");
        assert_eq!(m.rates(ip(B1)), Some((500.0, 0.0)));
        assert_eq!(m.rates(ip(B2)), Some((100.0, 0.0)));
        // B2 missing from a reading: forgotten; back later, it starts afresh.
        m.update(3.0, &reading(0, &[(B1, 700, 1)]).links, 1.0);
        assert_eq!(m.rates(ip(B2)), None);
        m.update(4.0, &r(900, 200).links, 1.0);
        assert_eq!(m.rates(ip(B1)), Some((200.0, 0.0)));
        assert_eq!(m.rates(ip(B2)), None, "one reading since it came back");
        assert!(!m.is_empty());
    }

    #[test]
    fn twin_rates_come_from_its_own_reading_times() {
        let mut t = TwinLinks::default();
        let now = 1_000_000;
        t.absorb(&reading(500_000, &[(B1, 0, 0), (B2, 0, 0)]), 1.0, now);
        assert_eq!(t.rates(ip(B1), now, 3000), None, "one reading: no rate");
        // Fetched 1 s later by us, but the twin read its counters 2 s
        // after the first reading: 2 s is the interval.
        t.absorb(
            &reading(502_000, &[(B1, 8_000_000, 6000), (B2, 2000, 20)]),
            1.0,
            now + 1000,
        );
        assert_eq!(
            t.rates(ip(B1), now + 1000, 3000),
            Some((4_000_000.0, 3000.0))
        );
        assert_eq!(t.rates(ip(B2), now + 1000, 3000), Some((1000.0, 10.0)));
        // The same reading fetched again changes nothing.
        t.absorb(
            &reading(502_000, &[(B1, 9_000_000, 7000), (B2, 2000, 20)]),
            1.0,
            now + 2000,
        );
        assert_eq!(
            t.rates(ip(B1), now + 2000, 3000),
            Some((4_000_000.0, 3000.0))
        );
        // A link it stops reporting is forgotten.
        t.absorb(&reading(504_000, &[(B2, 4000, 40)]), 1.0, now + 3000);
        assert_eq!(t.rates(ip(B1), now + 3000, 3000), None);
        assert_eq!(t.rates(ip(B2), now + 3000, 3000), Some((1000.0, 10.0)));
    }

    #[test]
    fn an_unreachable_twin_stops_counting_once_stale() {
        let mut t = TwinLinks::default();
        t.absorb(&reading(1000, &[(B1, 0, 0)]), 1.0, 10_000);
        t.absorb(&reading(2000, &[(B1, 1000, 1)]), 1.0, 11_000);
        t.failed("list server 198.18.2.2:7947 unreachable".into());
        assert!(t.rates(ip(B1), 14_000, 3000).is_some(), "still fresh");
        assert_eq!(t.rates(ip(B1), 14_001, 3000), None, "stale");
        let s = t.status("198.18.2.2:7947", 14_001, 3000);
        assert!(!s.pooled);
        assert_eq!(s.links, 1);
        assert_eq!(s.last_ok_age_s, Some(3.001));
        assert!(s.error.unwrap().contains("unreachable"));
        // A good fetch again clears the error.
        t.absorb(&reading(3000, &[(B1, 2000, 2)]), 1.0, 15_000);
        let s = t.status("198.18.2.2:7947", 15_000, 3000);
        assert!(s.pooled && s.error.is_none());
    }

    #[test]
    fn pooling_adds_the_twins_traffic_to_ours() {
        assert_eq!(pooled(None, None, 0.1), None);
        let p = pooled(Some((100.0, 1.0)), Some((300.0, 3.0)), 0.1).unwrap();
        assert_eq!(
            (p.bytes_per_s, p.packets_per_s, p.drop_fraction),
            (400.0, 4.0, 0.1)
        );
        let p = pooled(None, Some((300.0, 3.0)), 0.0).unwrap();
        assert_eq!((p.bytes_per_s, p.packets_per_s), (300.0, 3.0));
        let p = pooled(Some((100.0, 1.0)), None, 0.0).unwrap();
        assert_eq!((p.bytes_per_s, p.packets_per_s), (100.0, 1.0));
    }
}
