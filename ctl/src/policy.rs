//! Balancing policies: from live measurements to a VIP's selection table.
//!
//! The controller calls [`decide`] for every VIP on every period. It gets
//! the VIP's backends with their configuration, health verdict and smoothed
//! measurements ([`BackendInput`]) and returns one integer weight per backend
//! plus the inputs and a one-line summary of how they were derived
//! ([`Decision`]). The dataplane only looks the weights up: with
//! [`SelectionKind::Weights`] it builds a weighted Maglev table, with
//! [`SelectionKind::Ranges`] it splits its hash space into contiguous ranges,
//! one per backend **in input order**, each proportional to its weight
//! (seed 004). Established flows keep their backend through the flow table
//! whatever the new weights are.
//!
//! Everything here is pure and deterministic: no I/O, no clock, no
//! randomness. The same inputs always give the same [`Decision`].
//!
//! # Steps
//!
//! Notation: `cw` = the operator's configured weight, `n` = number of
//! backends taking part in a formula, `mean(x)` = arithmetic mean over them.
//!
//! 1. **Sanitising.** Measurements that are NaN, infinite or negative are
//!    treated as missing (`rtt_ms`, `spare`, `active_flows`) or as 0
//!    (`bytes_per_s`, `packets_per_s`); `drop_fraction` is clamped to
//!    `0..=1` (NaN → 0); a finite `spare` is clamped to `0..=1` (so a
//!    negative report means "no spare capacity"). The fuzz factor is
//!    clamped to `0..=1` (NaN or infinite → [`DEFAULT_FUZZ`]).
//! 2. **Eligibility.** A backend is eligible when it is up, not draining and
//!    `cw > 0`. The others get weight 0 and the note `down`, `draining` or
//!    `weight 0` (checked in that order).
//! 3. **Priority groups** (seed 003), for every policy: among the eligible
//!    backends only those with the lowest `priority` value stay eligible;
//!    the others get weight 0 and the note
//!    `standby: priority N while priority M has live backends`. When every
//!    backend of the preferred level is down, draining or at weight 0, the
//!    next level takes the traffic.
//! 4. **Policy formula** over the eligible backends, giving a float weight
//!    `w_i ≥ 0` (see below). If the formula gives 0 to *every* eligible
//!    backend (for example every link drops all its packets, or every agent
//!    reports no spare capacity for `capacity-ranges`), the policy falls back
//!    to `w_i = cw_i` and says so, so that a VIP with live backends never
//!    ends up with an empty table.
//! 5. **Backend groups** (seed 001 Fig. 3), when at least one backend has a
//!    group: see [Backend groups](#backend-groups).
//! 6. **Integer scaling** ([`scale_weights`]): the float weights are scaled
//!    so that the largest becomes [`SCALE`] (10000) and rounded to the
//!    nearest integer; a backend with a positive float weight gets at least
//!    1; zero stays zero. If every float weight is 0 (no eligible backend)
//!    every weight is 0 and the dataplane has no backend for the VIP. No
//!    weight ever exceeds [`SCALE`] ≤ [`MAX_WEIGHT`].
//!
//! # Policies
//!
//! * **`maglev`**: `w_i = cw_i`.
//! * **`link-load`** (seed 000, "relative loading" of each server's link):
//!   `L_i` = `link.bytes_per_s` (bytes per second to *and* from the backend,
//!   0 when there is no link measurement), relative load `l_i = L_i / cw_i`,
//!   `m = mean(l)`, and
//!   `w_i = cw_i · (1 − drop_fraction_i) / (l_i + m + ε)` with
//!   `ε` = [`LINK_EPS_BYTES`] = 1 byte/s. Equal relative loads (including
//!   all idle) give weights proportional to `cw`; a backend carrying much
//!   more than the others gets a much smaller weight (loads `(H, 0, 0)` with
//!   equal `cw` and `H ≫ 1` give the loaded one `1/9` of the total). The
//!   `(1 − drop_fraction)` factor is the seed's switch-drop variant: a link
//!   that drops packets counts as loaded. Adding `m` keeps the weights
//!   bounded (an idle backend gets at most `(m + l_max + ε)/(m + ε)` times
//!   the share of the busiest one) so that an idle newcomer is not flooded.
//! * **`least-conn`**: the same formula with `L_i` = `active_flows` (0 when
//!   missing), `ε` = [`FLOW_EPS`] = 1 flow, and no drop factor:
//!   `w_i = cw_i / (F_i/cw_i + mean(F/cw) + 1)`.
//! * **`response-time`** (seed 001, "fastest response time", softened from
//!   winner-take-all to proportional): `w_i = cw_i / max(rtt_i, 0.05 ms)`
//!   ([`MIN_RTT_MS`]). A backend without an RTT uses the mean RTT of those
//!   that have one; if none has one every RTT is taken as equal
//!   (`w_i = cw_i`).
//! * **`agent-load`** (seed 002, fuzz band + load-weighted draw):
//!   `s_i` = `spare_i` (spare capacity in `0..=1`, bigger = freer). If no
//!   eligible backend has a report, `w_i = cw_i` (and the summary says so).
//!   Otherwise a backend without a report has `s_i = 0`,
//!   `best = max(s)`, and if `best = 0` every backend is busy and
//!   `w_i = cw_i` (seed 002 treats a zero total as "all servers busy").
//!   Otherwise the candidates are the backends with
//!   `s_i ≥ best · (1 − fuzz)` (`fuzz` = [`Params::fuzz`], default 0.05)
//!   and `w_i = cw_i · s_i` for candidates, 0 for the others (note
//!   `outside fuzz band`).
//! * **`capacity-ranges`** (seed 004): kind [`SelectionKind::Ranges`];
//!   availability `A_i = cw_i · spare_i`; a backend without a report gets
//!   `A_i = cw_i` when no eligible backend has a report, else `A_i = 0`.
//!   `w_i = A_i`. The dataplane lays out contiguous ranges in input order
//!   with sizes proportional to the weights (`size_i = H · w_i / Σw`), so a
//!   dead or ineligible backend (weight 0) has its range absorbed by the
//!   others.
//!
//! Every policy except `capacity-ranges` gives [`SelectionKind::Weights`].
//!
//! # Backend groups
//!
//! When at least one backend has `Some(group)`, groups are formed in order
//! of first appearance; a backend without a group is a group of its own
//! (seed 001 allows local servers next to remote farms), labelled
//! `address:port`. Priority filtering (step 3) is done on the backends
//! before grouping. The group policy (`group_policy`, default `maglev`;
//! `capacity-ranges` is not a group policy and is run as `agent-load`)
//! chooses between groups by running the same formula as above over one
//! pseudo-backend per group that has at least one eligible member, with
//! inputs aggregated over its eligible members:
//!
//! * `cw` = sum of the members' `cw`; it is up (some member is eligible);
//! * `bytes_per_s`, `packets_per_s` = sums; `drop_fraction` = mean of the
//!   members' drop fractions weighted by their `bytes_per_s` (plain mean
//!   when no bytes flow); present when some member has a link measurement;
//! * `active_flows` = sum (present when some member has one);
//! * `rtt_ms` = mean over the members that have one;
//! * `spare` = `cw`-weighted mean over the members that have a report.
//!
//! A group's share is `G_g = w_g / Σ w` over the groups (0 for a group
//! without eligible members). Inside each group the VIP's `policy` gives
//! member weights normalised to sum 1, `L_i = w_i / Σ_{j∈g} w_j`. The float
//! weight is `G_g · L_i`, then scaled as in step 6. With `capacity-ranges`
//! as the VIP's policy the kind is [`SelectionKind::Ranges`]; the ranges
//! follow the input order, so a group's members own one contiguous block
//! only when they are listed next to each other.
//!
//! # Inputs and notes
//!
//! Every [`BackendDecision::inputs`] has `configured_weight`, `up` (1/0),
//! `drain` (1/0), `priority` and `float_weight` (the weight before integer
//! scaling, 0 when ineligible), plus the measurements the policy reads
//! (`bytes_per_s`, `packets_per_s`, `drop_fraction`, `relative_load`,
//! `active_flows`, `rtt_ms`, `rtt_ms_assumed`, `spare`, `availability`).
//! With groups it also has `group_share` (`G_g`), `local_share` (`L_i`) and
//! the group pseudo-backend's inputs prefixed with `group_`
//! (`group_configured_weight`, `group_active_flows`, ...). Every value is
//! finite.
//!
//! Helpers for the controller's measurement loop: [`rate`] turns counters
//! into per-second rates and [`Ewma`] smooths them (and the active flows
//! and the agents' spare capacity) with `controller.smoothing`;
//! [`Ewma::set_alpha`] applies a live change of that factor to an existing
//! average.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use firmware_config::control::SelectionKind;
use firmware_config::{Policy, MAX_WEIGHT};

/// The largest integer weight [`decide`] gives; the other weights are
/// scaled relative to it.
pub const SCALE: u32 = 10_000;

const _: () = assert!(SCALE <= MAX_WEIGHT);

/// Default agent-load fuzz factor (seed 002: `$fuzz_factor = 1.05`).
pub const DEFAULT_FUZZ: f64 = 0.05;

/// `ε` of `link-load`, in bytes per second per unit of configured weight.
pub const LINK_EPS_BYTES: f64 = 1.0;

/// `ε` of `least-conn`, in flows per unit of configured weight.
pub const FLOW_EPS: f64 = 1.0;

/// Floor of the RTT used by `response-time`, in milliseconds.
pub const MIN_RTT_MS: f64 = 0.05;

/// One backend of a VIP as the controller sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendInput {
    pub address: Ipv4Addr,
    pub port: u16,
    /// The operator's weight; 0 takes no new connections.
    pub configured_weight: u32,
    /// Draining: no new connections.
    pub drain: bool,
    /// Health-check verdict.
    pub up: bool,
    /// Priority level (seed 003): the lowest value with an eligible backend
    /// takes all the traffic.
    pub priority: u32,
    /// Backend group (seed 001 Fig. 3).
    pub group: Option<String>,
    /// Smoothed traffic on the backend's link (seed 000).
    pub link: Option<LinkLoad>,
    /// Smoothed number of active flows.
    pub active_flows: Option<f64>,
    /// Smoothed health-probe round-trip time in milliseconds (seed 001).
    pub rtt_ms: Option<f64>,
    /// Spare capacity reported by the backend's agent, `0..=1`, bigger =
    /// freer (seeds 002/004), smoothed over its reports by the controller;
    /// `None` = no fresh report.
    pub spare: Option<f64>,
}

impl BackendInput {
    /// An up, non-draining backend at priority 0, without group or
    /// measurements.
    pub fn new(address: Ipv4Addr, port: u16, configured_weight: u32) -> Self {
        BackendInput {
            address,
            port,
            configured_weight,
            drain: false,
            up: true,
            priority: 0,
            group: None,
            link: None,
            active_flows: None,
            rtt_ms: None,
            spare: None,
        }
    }
}

/// Smoothed traffic on a backend's link (seed 000).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkLoad {
    /// Bytes per second to and from the backend.
    pub bytes_per_s: f64,
    /// Packets per second to and from the backend.
    pub packets_per_s: f64,
    /// Transmit drops / (sent + dropped) on the backend's link, `0..=1`.
    pub drop_fraction: f64,
}

/// Policy parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Agent-load fuzz factor: backends whose spare capacity is within this
    /// fraction of the best one are candidates. Clamped to `0..=1`; NaN or
    /// infinite means [`DEFAULT_FUZZ`].
    pub fuzz: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params { fuzz: DEFAULT_FUZZ }
    }
}

/// The weight of one backend and why.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendDecision {
    /// Integer weight, `0..=SCALE`; 0 takes no new connections.
    pub weight: u32,
    /// The inputs that gave this weight (name → finite value).
    pub inputs: BTreeMap<String, f64>,
    /// Why the backend is excluded or treated specially; empty otherwise.
    pub note: String,
}

/// A VIP's selection table.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub kind: SelectionKind,
    /// One line: the formula used and its key aggregates.
    pub summary: String,
    /// One per input backend, in input order.
    pub backends: Vec<BackendDecision>,
}

/// Computes a VIP's selection table. See the [module docs](self) for every
/// step and formula. Never panics; every weight is in `0..=SCALE`, and a
/// backend that is down, draining, at configured weight 0 or on standby
/// gets 0. If at least one backend is eligible, the largest weight is
/// [`SCALE`].
pub fn decide(
    policy: Policy,
    group_policy: Option<Policy>,
    backends: &[BackendInput],
    params: &Params,
) -> Decision {
    let fuzz = sanitize_fuzz(params.fuzz);
    let items: Vec<Item> = backends.iter().map(Item::from_input).collect();
    let n = backends.len();
    let mut notes = vec![String::new(); n];
    let mut eligible = vec![false; n];
    let mut inputs: Vec<BTreeMap<String, f64>> = Vec::with_capacity(n);

    for (i, b) in backends.iter().enumerate() {
        if !b.up {
            notes[i] = "down".to_string();
        } else if b.drain {
            notes[i] = "draining".to_string();
        } else if b.configured_weight == 0 {
            notes[i] = "weight 0".to_string();
        } else {
            eligible[i] = true;
        }
        let mut map = BTreeMap::new();
        map.insert(
            "configured_weight".to_string(),
            f64::from(b.configured_weight),
        );
        map.insert("up".to_string(), flag(b.up));
        map.insert("drain".to_string(), flag(b.drain));
        map.insert("priority".to_string(), f64::from(b.priority));
        record_measurements(policy, &items[i], "", &mut map);
        inputs.push(map);
    }

    // Priority levels (seed 003).
    let top = backends
        .iter()
        .zip(&eligible)
        .filter(|(_, e)| **e)
        .map(|(b, _)| b.priority)
        .min();
    let mut standby = 0usize;
    if let Some(top) = top {
        for (i, b) in backends.iter().enumerate() {
            if eligible[i] && b.priority > top {
                eligible[i] = false;
                standby += 1;
                notes[i] = format!(
                    "standby: priority {} while priority {top} has live backends",
                    b.priority
                );
            }
        }
    }

    let mut floats = vec![0.0f64; n];
    let grouped = backends.iter().any(|b| b.group.is_some());
    let mut summary = if !eligible.iter().any(|e| *e) {
        format!("{policy}: no eligible backend (down, draining or weight 0); every weight is 0")
    } else if grouped {
        decide_grouped(
            policy,
            group_policy.unwrap_or(Policy::Maglev),
            backends,
            &items,
            &eligible,
            fuzz,
            &mut floats,
            &mut notes,
            &mut inputs,
        )
    } else {
        let idx: Vec<usize> = (0..n).filter(|&i| eligible[i]).collect();
        let sub: Vec<Item> = idx.iter().map(|&i| items[i]).collect();
        let run = run_policy(policy, &sub, fuzz);
        for (&i, row) in idx.iter().zip(run.rows) {
            floats[i] = row.weight;
            append_note(&mut notes[i], &row.note);
            for (k, v) in row.inputs {
                inputs[i].insert(k.to_string(), finite(v));
            }
        }
        run.summary
    };
    if let Some(top) = top {
        if standby > 0 {
            let _ = write!(
                summary,
                "; priority {top} active, {standby} backend(s) on standby"
            );
        }
    }

    for (i, f) in floats.iter_mut().enumerate() {
        if !eligible[i] {
            *f = 0.0;
        }
        *f = finite(*f);
        inputs[i].insert("float_weight".to_string(), *f);
    }
    let weights = scale_weights(&floats);
    let kind = if policy == Policy::CapacityRanges {
        SelectionKind::Ranges
    } else {
        SelectionKind::Weights
    };
    Decision {
        kind,
        summary,
        backends: weights
            .into_iter()
            .zip(inputs)
            .zip(notes)
            .map(|((weight, inputs), note)| BackendDecision {
                weight,
                inputs,
                note,
            })
            .collect(),
    }
}

/// The two-level (seed 001 Fig. 3) computation; fills `floats` with
/// `G_g · L_i` and returns the summary.
#[allow(clippy::too_many_arguments)]
fn decide_grouped(
    policy: Policy,
    group_policy: Policy,
    backends: &[BackendInput],
    items: &[Item],
    eligible: &[bool],
    fuzz: f64,
    floats: &mut [f64],
    notes: &mut [String],
    inputs: &mut [BTreeMap<String, f64>],
) -> String {
    // Groups in order of first appearance; an ungrouped backend is a
    // group of its own.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, b) in backends.iter().enumerate() {
        match &b.group {
            Some(name) => {
                if let Some(&g) = by_name.get(name.as_str()) {
                    groups[g].1.push(i);
                } else {
                    by_name.insert(name.as_str(), groups.len());
                    groups.push((name.clone(), vec![i]));
                }
            }
            None => groups.push((format!("{}:{}", b.address, b.port), vec![i])),
        }
    }

    let (gp, gp_remark) = if group_policy == Policy::CapacityRanges {
        (
            Policy::AgentLoad,
            " (capacity-ranges is not a group policy; run as agent-load)",
        )
    } else {
        (group_policy, "")
    };

    // One pseudo-backend per group with eligible members.
    let live: Vec<usize> = (0..groups.len())
        .filter(|&g| groups[g].1.iter().any(|&i| eligible[i]))
        .collect();
    let pseudo: Vec<Item> = live
        .iter()
        .map(|&g| {
            let members: Vec<Item> = groups[g]
                .1
                .iter()
                .filter(|&&i| eligible[i])
                .map(|&i| items[i])
                .collect();
            Item::aggregate(&members)
        })
        .collect();
    let outer = run_policy(gp, &pseudo, fuzz);
    let total = sat_sum(outer.rows.iter().map(|r| r.weight));
    let mut shares = vec![0.0f64; groups.len()];
    let mut group_notes = vec![String::new(); groups.len()];
    let mut group_inputs: Vec<BTreeMap<String, f64>> = vec![BTreeMap::new(); groups.len()];
    for ((&g, row), item) in live.iter().zip(&outer.rows).zip(&pseudo) {
        shares[g] = if total > 0.0 {
            finite(row.weight / total)
        } else {
            0.0
        };
        group_notes[g].clone_from(&row.note);
        let map = &mut group_inputs[g];
        map.insert("group_configured_weight".to_string(), finite(item.cw));
        record_measurements(gp, item, "group_", map);
        for (k, v) in &row.inputs {
            map.insert(format!("group_{k}"), finite(*v));
        }
    }

    let mut summary = format!("groups by {}{gp_remark}: {}; shares", gp, outer.summary);
    for (g, (label, _)) in groups.iter().enumerate() {
        let _ = write!(summary, " {label}={:.3}", shares[g]);
    }
    summary.push_str("; inside groups by ");
    summary.push_str(policy.as_str());
    for (g, (label, members)) in groups.iter().enumerate() {
        for &i in members {
            inputs[i].insert("group_share".to_string(), shares[g]);
            for (k, v) in &group_inputs[g] {
                inputs[i].insert(k.clone(), *v);
            }
            if eligible[i] && !group_notes[g].is_empty() {
                append_note(&mut notes[i], &format!("group {label}: {}", group_notes[g]));
            }
        }
        let idx: Vec<usize> = members.iter().copied().filter(|&i| eligible[i]).collect();
        if idx.is_empty() {
            continue;
        }
        let sub: Vec<Item> = idx.iter().map(|&i| items[i]).collect();
        let inner = run_policy(policy, &sub, fuzz);
        let sum = sat_sum(inner.rows.iter().map(|r| r.weight));
        for (&i, row) in idx.iter().zip(inner.rows) {
            let local = if sum > 0.0 {
                finite(row.weight / sum)
            } else {
                0.0
            };
            floats[i] = finite(shares[g] * local);
            inputs[i].insert("local_share".to_string(), local);
            append_note(&mut notes[i], &row.note);
            for (k, v) in row.inputs {
                inputs[i].insert(k.to_string(), finite(v));
            }
        }
        let _ = write!(summary, "; [{label}] {}", inner.summary);
    }
    summary
}

/// Scales float weights to integers: the largest positive finite weight
/// becomes [`SCALE`], the others `round(w / max · SCALE)`, at least 1 for
/// any positive weight. Zero, negative and non-finite weights give 0; if
/// there is no positive weight every result is 0.
pub fn scale_weights(floats: &[f64]) -> Vec<u32> {
    let usable = |w: f64| w.is_finite() && w > 0.0;
    let max = floats
        .iter()
        .copied()
        .filter(|&w| usable(w))
        .fold(0.0f64, f64::max);
    let scale = f64::from(SCALE);
    floats
        .iter()
        .map(|&w| {
            if max > 0.0 && usable(w) {
                ((w / max) * scale).round().clamp(1.0, scale) as u32
            } else {
                0
            }
        })
        .collect()
}

/// Exponentially weighted moving average: the first sample is taken as
/// is, then `v = alpha·x + (1 − alpha)·v`.
///
/// `alpha` is clamped to `0..=1` (NaN → 1, no smoothing); with `alpha = 0`
/// the first sample is kept for ever. Non-finite samples are ignored.
/// [`Ewma::set_alpha`] changes the factor of an existing average: the
/// current value is kept and the next samples use the new factor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ewma {
    alpha: f64,
    value: Option<f64>,
}

/// `alpha` clamped to `0..=1`, NaN → 1.
fn sanitize_alpha(alpha: f64) -> f64 {
    if alpha.is_nan() {
        1.0
    } else {
        alpha.clamp(0.0, 1.0)
    }
}

impl Ewma {
    /// A new average with no sample yet.
    pub fn new(alpha: f64) -> Self {
        Ewma {
            alpha: sanitize_alpha(alpha),
            value: None,
        }
    }

    /// Uses `alpha` (clamped like in [`Ewma::new`]) from the next sample
    /// on; the current average is kept.
    pub fn set_alpha(&mut self, alpha: f64) {
        self.alpha = sanitize_alpha(alpha);
    }

    /// Adds a sample and returns the new average (0 when no finite sample
    /// has been seen yet).
    pub fn update(&mut self, x: f64) -> f64 {
        if x.is_finite() {
            let v = match self.value {
                None => x,
                Some(v) => {
                    let next = self.alpha * x + (1.0 - self.alpha) * v;
                    // Two finite values near f64::MAX could overflow.
                    if next.is_finite() {
                        next
                    } else {
                        x
                    }
                }
            };
            self.value = Some(v);
        }
        self.value.unwrap_or(0.0)
    }

    /// The current average, `None` before the first finite sample.
    pub fn value(&self) -> Option<f64> {
        self.value
    }

    /// The smoothing factor in use (after clamping).
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

/// Per-second rate of a monotonically increasing counter between two
/// samples taken `elapsed_s` seconds apart: `(now − prev) / elapsed_s`.
/// When `now < prev` the counter was reset (or wrapped) and `now` is taken
/// as the increase since the reset: `now / elapsed_s`. Returns `None` when
/// `elapsed_s` is zero, negative or not finite, or the rate is not finite.
pub fn rate(prev: u64, now: u64, elapsed_s: f64) -> Option<f64> {
    if !(elapsed_s.is_finite() && elapsed_s > 0.0) {
        return None;
    }
    let delta = if now >= prev { now - prev } else { now };
    let r = delta as f64 / elapsed_s;
    r.is_finite().then_some(r)
}

// ---------------------------------------------------------------------------
// Internals

/// Sanitised inputs of one backend (or one group pseudo-backend).
#[derive(Clone, Copy, Debug, Default)]
struct Item {
    cw: f64,
    link: Option<LinkLoad>,
    flows: Option<f64>,
    rtt: Option<f64>,
    spare: Option<f64>,
}

impl Item {
    fn from_input(b: &BackendInput) -> Item {
        Item {
            cw: f64::from(b.configured_weight),
            link: b.link.map(|l| LinkLoad {
                bytes_per_s: non_negative(l.bytes_per_s),
                packets_per_s: non_negative(l.packets_per_s),
                drop_fraction: fraction(l.drop_fraction),
            }),
            flows: measurement(b.active_flows),
            rtt: measurement(b.rtt_ms),
            spare: b.spare.filter(|s| s.is_finite()).map(fraction),
        }
    }

    /// The group pseudo-backend over the eligible members.
    fn aggregate(members: &[Item]) -> Item {
        let links: Vec<LinkLoad> = members.iter().filter_map(|m| m.link).collect();
        let link = (!links.is_empty()).then(|| {
            let bytes = sat_sum(links.iter().map(|l| l.bytes_per_s));
            let packets = sat_sum(links.iter().map(|l| l.packets_per_s));
            let drop_fraction = if bytes > 0.0 {
                // Σ(d·b)/Σb computed as Σ(d·(b/Σb)) so nothing overflows.
                sat_sum(
                    links
                        .iter()
                        .map(|l| l.drop_fraction * (l.bytes_per_s / bytes)),
                )
            } else {
                mean(links.iter().map(|l| l.drop_fraction)).unwrap_or(0.0)
            };
            LinkLoad {
                bytes_per_s: bytes,
                packets_per_s: packets,
                drop_fraction: fraction(drop_fraction),
            }
        });
        let flow_values: Vec<f64> = members.iter().filter_map(|m| m.flows).collect();
        let flows = (!flow_values.is_empty()).then(|| sat_sum(flow_values.iter().copied()));
        let rtt = mean(members.iter().filter_map(|m| m.rtt));
        let reported: Vec<(f64, f64)> = members
            .iter()
            .filter_map(|m| m.spare.map(|s| (m.cw, s)))
            .collect();
        let cw_reported = sat_sum(reported.iter().map(|(cw, _)| *cw));
        let spare = (cw_reported > 0.0).then(|| {
            fraction(sat_sum(
                reported.iter().map(|(cw, s)| s * (cw / cw_reported)),
            ))
        });
        Item {
            cw: sat_sum(members.iter().map(|m| m.cw)),
            link,
            flows,
            rtt,
            spare,
        }
    }
}

/// The result of a formula for one backend.
#[derive(Debug, Default)]
struct Row {
    weight: f64,
    note: String,
    inputs: Vec<(&'static str, f64)>,
}

/// The result of a formula over a set of backends.
#[derive(Debug)]
struct Run {
    rows: Vec<Row>,
    summary: String,
}

/// Runs one policy's formula over `items` (all eligible, `cw > 0`),
/// replacing non-finite or negative weights by 0 and falling back to
/// `w = cw` when every weight is 0.
fn run_policy(policy: Policy, items: &[Item], fuzz: f64) -> Run {
    let mut run = match policy {
        Policy::Maglev => Run {
            rows: items
                .iter()
                .map(|it| Row {
                    weight: it.cw,
                    ..Row::default()
                })
                .collect(),
            summary: "maglev: w = cw (configured weights)".to_string(),
        },
        Policy::LinkLoad => {
            let loads: Vec<f64> = items
                .iter()
                .map(|it| it.link.map_or(0.0, |l| l.bytes_per_s))
                .collect();
            let drops: Vec<f64> = items
                .iter()
                .map(|it| it.link.map_or(0.0, |l| l.drop_fraction))
                .collect();
            let (rows, m) = inverse_load(items, &loads, LINK_EPS_BYTES, Some(&drops));
            Run {
                rows,
                summary: format!(
                    "link-load: w = cw*(1-drops)/(L/cw + mean + 1), L = bytes/s to and from the backend, \
                     mean relative load {m:.1} B/s"
                ),
            }
        }
        Policy::LeastConn => {
            let loads: Vec<f64> = items.iter().map(|it| it.flows.unwrap_or(0.0)).collect();
            let (rows, m) = inverse_load(items, &loads, FLOW_EPS, None);
            Run {
                rows,
                summary: format!(
                    "least-conn: w = cw/(F/cw + mean + 1), F = active flows, \
                     mean relative load {m:.2} flows"
                ),
            }
        }
        Policy::ResponseTime => response_time(items),
        Policy::AgentLoad => agent_load(items, fuzz),
        Policy::CapacityRanges => capacity_ranges(items),
    };
    for row in &mut run.rows {
        if !(row.weight.is_finite() && row.weight > 0.0) {
            row.weight = 0.0;
        }
    }
    if !items.is_empty() && run.rows.iter().all(|r| r.weight == 0.0) {
        for (row, it) in run.rows.iter_mut().zip(items) {
            row.weight = it.cw;
            append_note(
                &mut row.note,
                "the formula gave 0 to every backend; using the configured weight",
            );
        }
        run.summary
            .push_str("; the formula gave 0 to every backend, so w = cw");
    }
    run
}

/// `w_i = cw_i·(1 − d_i)/(l_i + mean(l) + eps)` with `l_i = load_i/cw_i`.
/// Returns the rows and `mean(l)`.
fn inverse_load(items: &[Item], loads: &[f64], eps: f64, drops: Option<&[f64]>) -> (Vec<Row>, f64) {
    let rel: Vec<f64> = items
        .iter()
        .zip(loads)
        .map(|(it, &l)| if it.cw > 0.0 { finite(l / it.cw) } else { 0.0 })
        .collect();
    let m = mean(rel.iter().copied()).unwrap_or(0.0);
    let rows = items
        .iter()
        .zip(&rel)
        .enumerate()
        .map(|(i, (it, &l))| {
            let keep = drops.map_or(1.0, |d| 1.0 - d.get(i).copied().unwrap_or(0.0));
            Row {
                weight: it.cw * keep / (l + m + eps),
                note: String::new(),
                inputs: vec![("relative_load", l)],
            }
        })
        .collect();
    (rows, m)
}

/// `w_i = cw_i / max(rtt_i, MIN_RTT_MS)`.
fn response_time(items: &[Item]) -> Run {
    let measured = items.iter().filter(|it| it.rtt.is_some()).count();
    let avg = mean(items.iter().filter_map(|it| it.rtt));
    let rows = items
        .iter()
        .map(|it| match (it.rtt, avg) {
            (Some(r), _) => Row {
                weight: it.cw / r.max(MIN_RTT_MS),
                ..Row::default()
            },
            (None, Some(a)) => Row {
                weight: it.cw / a.max(MIN_RTT_MS),
                note: format!("no rtt; using the mean {a:.3} ms"),
                inputs: vec![("rtt_ms_assumed", a)],
            },
            (None, None) => Row {
                weight: it.cw,
                note: "no rtt".to_string(),
                inputs: Vec::new(),
            },
        })
        .collect();
    let summary = match avg {
        Some(a) => format!(
            "response-time: w = cw/max(rtt, {MIN_RTT_MS} ms), {measured} of {} backends measured, \
             mean rtt {a:.3} ms (used for the unmeasured)",
            items.len()
        ),
        None => format!(
            "response-time: w = cw/max(rtt, {MIN_RTT_MS} ms), no backend has an rtt, so w = cw"
        ),
    };
    Run { rows, summary }
}

/// Seed 002: fuzz band over spare capacity, `w = cw·s` inside it.
fn agent_load(items: &[Item], fuzz: f64) -> Run {
    let reported = items.iter().filter(|it| it.spare.is_some()).count();
    if reported == 0 {
        return Run {
            rows: cw_rows(items, "no agent report"),
            summary: "agent-load: no eligible backend has an agent report, so w = cw".to_string(),
        };
    }
    let best = items
        .iter()
        .map(|it| it.spare.unwrap_or(0.0))
        .fold(0.0f64, f64::max);
    if best <= 0.0 {
        return Run {
            rows: cw_rows(
                items,
                "every server busy (no spare capacity anywhere; seed 002 treats a zero total as all busy), using the configured weight",
            ),
            summary: format!(
                "agent-load: every backend reports no spare capacity ({reported} of {} reporting), \
                 treated as all busy, so w = cw",
                items.len()
            ),
        };
    }
    let threshold = best * (1.0 - fuzz);
    let mut candidates = 0usize;
    let rows = items
        .iter()
        .map(|it| {
            let s = it.spare.unwrap_or(0.0);
            if s >= threshold && s > 0.0 {
                candidates += 1;
                Row {
                    weight: it.cw * s,
                    ..Row::default()
                }
            } else {
                let why = if it.spare.is_none() {
                    "no agent report (spare taken as 0); outside fuzz band".to_string()
                } else {
                    format!("outside fuzz band: spare {s:.3} < {threshold:.3}")
                };
                Row {
                    weight: 0.0,
                    note: why,
                    inputs: Vec::new(),
                }
            }
        })
        .collect();
    Run {
        rows,
        summary: format!(
            "agent-load: candidates have spare >= best*(1-fuzz) = {threshold:.3} \
             (best {best:.3}, fuzz {fuzz}), w = cw*spare for candidates, 0 otherwise; \
             {candidates} of {} in band, {reported} reporting",
            items.len()
        ),
    }
}

/// Seed 004: `w = A = cw·spare`.
fn capacity_ranges(items: &[Item]) -> Run {
    let reported = items.iter().filter(|it| it.spare.is_some()).count();
    let rows: Vec<Row> = items
        .iter()
        .map(|it| {
            let (a, note) = match it.spare {
                Some(s) => (it.cw * s, String::new()),
                None if reported == 0 => (it.cw, String::new()),
                None => (0.0, "no agent report; availability 0".to_string()),
            };
            Row {
                weight: a,
                note,
                inputs: vec![("availability", a)],
            }
        })
        .collect();
    let total = sat_sum(rows.iter().map(|r| r.weight));
    let summary = if reported == 0 {
        "capacity-ranges: contiguous hash ranges in input order, no eligible backend has an \
         agent report, so sizes are proportional to cw"
            .to_string()
    } else {
        format!(
            "capacity-ranges: contiguous hash ranges in input order, sizes proportional to \
             A = cw*spare, total availability {total:.3} ({reported} of {} reporting)",
            items.len()
        )
    };
    Run { rows, summary }
}

fn cw_rows(items: &[Item], note: &str) -> Vec<Row> {
    items
        .iter()
        .map(|it| Row {
            weight: it.cw,
            note: note.to_string(),
            inputs: Vec::new(),
        })
        .collect()
}

/// Records the (sanitised) measurements `policy` reads.
fn record_measurements(policy: Policy, it: &Item, prefix: &str, map: &mut BTreeMap<String, f64>) {
    let mut put = |k: &str, v: f64| {
        map.insert(format!("{prefix}{k}"), finite(v));
    };
    match policy {
        Policy::Maglev => {}
        Policy::LinkLoad => {
            let l = it.link.unwrap_or_default();
            put("bytes_per_s", l.bytes_per_s);
            put("packets_per_s", l.packets_per_s);
            put("drop_fraction", l.drop_fraction);
        }
        Policy::LeastConn => put("active_flows", it.flows.unwrap_or(0.0)),
        Policy::ResponseTime => {
            if let Some(r) = it.rtt {
                put("rtt_ms", r);
            }
        }
        Policy::AgentLoad | Policy::CapacityRanges => {
            if let Some(s) = it.spare {
                put("spare", s);
            }
        }
    }
}

fn append_note(note: &mut String, more: &str) {
    if more.is_empty() {
        return;
    }
    if !note.is_empty() {
        note.push_str("; ");
    }
    note.push_str(more);
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn sanitize_fuzz(fuzz: f64) -> f64 {
    if fuzz.is_finite() {
        fuzz.clamp(0.0, 1.0)
    } else {
        DEFAULT_FUZZ
    }
}

/// Finite and non-negative, else 0.
fn non_negative(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

/// Finite values kept (clamped to ±f64::MAX), NaN → 0.
fn finite(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(-f64::MAX, f64::MAX)
    }
}

/// `0..=1`, NaN → 0.
fn fraction(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// A measurement that is finite and non-negative, else missing.
fn measurement(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite() && *v >= 0.0)
}

/// Sum of non-negative values, saturating at f64::MAX.
fn sat_sum(values: impl Iterator<Item = f64>) -> f64 {
    finite(values.map(non_negative).sum::<f64>())
}

/// Mean of non-negative values, without overflow; `None` when empty.
fn mean(values: impl Iterator<Item = f64> + Clone) -> Option<f64> {
    let n = values.clone().count();
    (n > 0).then(|| {
        let n = n as f64;
        sat_sum(values.map(|v| v / n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn be(last: u8, cw: u32) -> BackendInput {
        BackendInput::new(Ipv4Addr::new(10, 0, 0, last), 80, cw)
    }

    fn weights(d: &Decision) -> Vec<u32> {
        d.backends.iter().map(|b| b.weight).collect()
    }

    fn run(policy: Policy, backends: &[BackendInput]) -> Decision {
        decide(policy, None, backends, &Params::default())
    }

    fn link(bytes: f64) -> Option<LinkLoad> {
        Some(LinkLoad {
            bytes_per_s: bytes,
            packets_per_s: bytes / 1000.0,
            drop_fraction: 0.0,
        })
    }

    fn share(d: &Decision, i: usize) -> f64 {
        let total: u32 = weights(d).iter().sum();
        f64::from(d.backends[i].weight) / f64::from(total)
    }

    #[test]
    fn maglev_uses_configured_weights() {
        let d = run(Policy::Maglev, &[be(1, 1), be(2, 2), be(3, 3)]);
        assert_eq!(d.kind, SelectionKind::Weights);
        assert_eq!(weights(&d), vec![3333, 6667, 10000]);
        assert!(d.summary.starts_with("maglev:"), "{}", d.summary);
        assert_eq!(d.backends[1].inputs["configured_weight"], 2.0);
        assert_eq!(d.backends[1].inputs["up"], 1.0);
    }

    #[test]
    fn link_load_heavy_backend_gets_a_ninth() {
        let h = 1e6;
        let mut bs = vec![be(1, 1), be(2, 1), be(3, 1)];
        bs[0].link = link(h);
        bs[1].link = link(0.0);
        // bs[2] has no link measurement: load 0.
        let d = run(Policy::LinkLoad, &bs);
        // w_heavy = 1/(H + H/3 + 1), w_idle = 1/(H/3 + 1): ratio ~ 1:4.
        assert_eq!(weights(&d), vec![2500, 10000, 10000]);
        let s = share(&d, 0);
        assert!((s - 1.0 / 9.0).abs() < 0.005, "heavy share {s}");
        let inp = &d.backends[0].inputs;
        assert_eq!(inp["bytes_per_s"], h);
        assert_eq!(inp["packets_per_s"], h / 1000.0);
        assert_eq!(inp["drop_fraction"], 0.0);
        assert_eq!(inp["relative_load"], h);
        assert_eq!(d.backends[2].inputs["bytes_per_s"], 0.0);
        assert!(d.summary.starts_with("link-load:"), "{}", d.summary);
        assert!(d.summary.contains("333333.3"), "{}", d.summary);
    }

    #[test]
    fn link_load_equal_relative_load_is_proportional_to_cw_and_drops_count() {
        let mut bs = vec![be(1, 1), be(2, 2)];
        bs[0].link = link(100.0);
        bs[1].link = link(200.0);
        assert_eq!(weights(&run(Policy::LinkLoad, &bs)), vec![5000, 10000]);
        // All idle: proportional to cw.
        let idle = vec![be(1, 1), be(2, 3)];
        assert_eq!(weights(&run(Policy::LinkLoad, &idle)), vec![3333, 10000]);
        // Same load, half the packets dropped: half the weight.
        let mut bs = vec![be(1, 1), be(2, 1)];
        bs[0].link = link(100.0);
        bs[1].link = Some(LinkLoad {
            bytes_per_s: 100.0,
            packets_per_s: 0.1,
            drop_fraction: 0.5,
        });
        assert_eq!(weights(&run(Policy::LinkLoad, &bs)), vec![10000, 5000]);
    }

    #[test]
    fn link_load_all_links_dropping_everything_falls_back_to_cw() {
        let mut bs = vec![be(1, 1), be(2, 2)];
        for b in &mut bs {
            b.link = Some(LinkLoad {
                bytes_per_s: 10.0,
                packets_per_s: 1.0,
                drop_fraction: 1.0,
            });
        }
        let d = run(Policy::LinkLoad, &bs);
        assert_eq!(weights(&d), vec![5000, 10000]);
        assert!(d.summary.contains("so w = cw"), "{}", d.summary);
        assert!(d.backends[0].note.contains("configured weight"));
    }

    #[test]
    fn least_conn_inverse_relative_load() {
        let mut bs = vec![be(1, 1), be(2, 1), be(3, 1)];
        bs[0].active_flows = Some(0.0);
        bs[1].active_flows = Some(10.0);
        // bs[2]: no count, taken as 0.
        let d = run(Policy::LeastConn, &bs);
        // mean = 10/3; w0 = w2 = 1/(0 + 10/3 + 1), w1 = 1/(10 + 10/3 + 1).
        let w0: f64 = 1.0 / (10.0 / 3.0 + 1.0);
        let w1: f64 = 1.0 / (10.0 + 10.0 / 3.0 + 1.0);
        let expect = (w1 / w0 * 10000.0).round() as u32;
        assert_eq!(weights(&d), vec![10000, expect, 10000]);
        assert_eq!(expect, 3023);
        assert_eq!(d.backends[1].inputs["active_flows"], 10.0);
        assert_eq!(d.backends[2].inputs["active_flows"], 0.0);
        assert!(d.summary.starts_with("least-conn:"), "{}", d.summary);
        // Relative to cw: 2 flows on cw 2 is as loaded as 1 flow on cw 1.
        let mut bs = vec![be(1, 1), be(2, 2)];
        bs[0].active_flows = Some(1.0);
        bs[1].active_flows = Some(2.0);
        assert_eq!(weights(&run(Policy::LeastConn, &bs)), vec![5000, 10000]);
    }

    #[test]
    fn response_time_inverse_rtt() {
        let mut bs = vec![be(1, 1), be(2, 1)];
        bs[0].rtt_ms = Some(1.0);
        bs[1].rtt_ms = Some(2.0);
        let d = run(Policy::ResponseTime, &bs);
        assert_eq!(weights(&d), vec![10000, 5000]);
        assert_eq!(d.backends[1].inputs["rtt_ms"], 2.0);

        // Missing rtt: the mean (2 ms) of the measured ones.
        let mut bs = vec![be(1, 1), be(2, 1), be(3, 1)];
        bs[0].rtt_ms = Some(1.0);
        bs[1].rtt_ms = Some(3.0);
        let d = run(Policy::ResponseTime, &bs);
        assert_eq!(weights(&d), vec![10000, 3333, 5000]);
        assert_eq!(d.backends[2].inputs["rtt_ms_assumed"], 2.0);
        assert!(d.backends[2].note.contains("no rtt"));

        // Floor at 0.05 ms.
        let mut bs = vec![be(1, 1), be(2, 1)];
        bs[0].rtt_ms = Some(0.0);
        bs[1].rtt_ms = Some(1.0);
        assert_eq!(weights(&run(Policy::ResponseTime, &bs)), vec![10000, 500]);

        // Nobody measured: proportional to cw.
        let bs = vec![be(1, 1), be(2, 4)];
        let d = run(Policy::ResponseTime, &bs);
        assert_eq!(weights(&d), vec![2500, 10000]);
        assert!(d.summary.contains("no backend has an rtt"), "{}", d.summary);
    }

    #[test]
    fn agent_load_fuzz_band() {
        let mut bs = vec![be(1, 1), be(2, 1), be(3, 1)];
        bs[0].spare = Some(0.90);
        bs[1].spare = Some(0.88);
        bs[2].spare = Some(0.40);
        let d = run(Policy::AgentLoad, &bs);
        assert_eq!(d.kind, SelectionKind::Weights);
        assert_eq!(weights(&d), vec![10000, 9778, 0]);
        assert!(d.backends[2].note.contains("outside fuzz band"));
        assert_eq!(d.backends[2].inputs["spare"], 0.40);
        assert!(d.summary.contains("0.855"), "{}", d.summary);

        // A wider fuzz takes the third in, proportional to spare.
        let d = decide(Policy::AgentLoad, None, &bs, &Params { fuzz: 0.6 });
        assert_eq!(weights(&d), vec![10000, 9778, 4444]);

        // cw scales within the band.
        let mut bs2 = bs.clone();
        bs2[1].configured_weight = 2;
        assert_eq!(weights(&run(Policy::AgentLoad, &bs2)), vec![5114, 10000, 0]);
    }

    #[test]
    fn agent_load_fallbacks() {
        // No reports at all: w = cw.
        let bs = vec![be(1, 1), be(2, 2)];
        let d = run(Policy::AgentLoad, &bs);
        assert_eq!(weights(&d), vec![5000, 10000]);
        assert!(d
            .summary
            .contains("no eligible backend has an agent report"));

        // Every one busy: w = cw.
        let mut bs = vec![be(1, 1), be(2, 2)];
        bs[0].spare = Some(0.0);
        bs[1].spare = Some(-3.0);
        let d = run(Policy::AgentLoad, &bs);
        assert_eq!(weights(&d), vec![5000, 10000]);
        assert!(
            d.backends[0].note.contains("busy"),
            "{}",
            d.backends[0].note
        );
        assert!(d.summary.contains("all busy"), "{}", d.summary);

        // One reports, the other does not: the silent one gets 0.
        let mut bs = vec![be(1, 1), be(2, 1)];
        bs[0].spare = Some(0.5);
        let d = run(Policy::AgentLoad, &bs);
        assert_eq!(weights(&d), vec![10000, 0]);
        assert!(d.backends[1].note.contains("no agent report"));
    }

    #[test]
    fn capacity_ranges_proportional_to_availability() {
        let mut bs = vec![be(1, 1), be(2, 2), be(3, 1)];
        bs[0].spare = Some(0.6);
        bs[1].spare = Some(0.15);
        bs[2].spare = Some(0.9);
        bs[2].up = false;
        let d = run(Policy::CapacityRanges, &bs);
        assert_eq!(d.kind, SelectionKind::Ranges);
        // A = 0.6, 0.3, dead 0.
        assert_eq!(weights(&d), vec![10000, 5000, 0]);
        assert_eq!(d.backends[1].inputs["availability"], 0.3);
        assert_eq!(d.backends[2].note, "down");
        assert!(d.summary.starts_with("capacity-ranges:"), "{}", d.summary);

        // No reports: proportional to cw.
        let d = run(Policy::CapacityRanges, &[be(1, 1), be(2, 4)]);
        assert_eq!(weights(&d), vec![2500, 10000]);
        // Some reports: the silent one gets 0.
        let mut bs = vec![be(1, 1), be(2, 4)];
        bs[0].spare = Some(0.5);
        assert_eq!(weights(&run(Policy::CapacityRanges, &bs)), vec![10000, 0]);
    }

    #[test]
    fn priority_failover() {
        let mut bs = vec![be(1, 1), be(2, 1), be(3, 1)];
        bs[2].priority = 1;
        let d = run(Policy::Maglev, &bs);
        assert_eq!(weights(&d), vec![10000, 10000, 0]);
        assert_eq!(
            d.backends[2].note,
            "standby: priority 1 while priority 0 has live backends"
        );
        assert!(
            d.summary.contains("1 backend(s) on standby"),
            "{}",
            d.summary
        );

        bs[0].up = false;
        bs[1].up = false;
        let d = run(Policy::Maglev, &bs);
        assert_eq!(weights(&d), vec![0, 0, 10000]);
        assert_eq!(d.backends[0].note, "down");
        assert_eq!(d.backends[2].note, "");

        // A draining primary does not hold the level either.
        bs[0].up = true;
        bs[0].drain = true;
        assert_eq!(weights(&run(Policy::LeastConn, &bs)), vec![0, 0, 10000]);
    }

    #[test]
    fn ineligible_get_zero_with_notes() {
        let mut bs = vec![be(1, 1), be(2, 1), be(3, 0), be(4, 1)];
        bs[0].up = false;
        bs[1].drain = true;
        for p in Policy::ALL {
            let d = run(p, &bs);
            assert_eq!(weights(&d), vec![0, 0, 0, 10000], "{p}");
            assert_eq!(d.backends[0].note, "down");
            assert_eq!(d.backends[1].note, "draining");
            assert_eq!(d.backends[2].note, "weight 0");
            assert_eq!(d.backends[0].inputs["up"], 0.0);
            assert_eq!(d.backends[1].inputs["drain"], 1.0);
            assert_eq!(d.backends[0].inputs["float_weight"], 0.0);
        }
    }

    #[test]
    fn groups_maglev_outside_least_conn_inside() {
        let mut bs = vec![be(1, 1), be(2, 2), be(3, 1)];
        bs[0].group = Some("a".into());
        bs[1].group = Some("a".into());
        bs[2].group = Some("b".into());
        bs[0].active_flows = Some(0.0);
        bs[1].active_flows = Some(10.0);
        bs[2].active_flows = Some(500.0);
        let d = decide(
            Policy::LeastConn,
            Some(Policy::Maglev),
            &bs,
            &Params::default(),
        );
        // Group shares ∝ summed cw: a = 3/4, b = 1/4.
        assert!((d.backends[0].inputs["group_share"] - 0.75).abs() < 1e-12);
        assert!((d.backends[2].inputs["group_share"] - 0.25).abs() < 1e-12);
        assert_eq!(d.backends[0].inputs["group_configured_weight"], 3.0);
        // Inside a: l = (0, 5), mean 2.5, w = 1/3.5 and 2/8.5.
        let (wa0, wa1) = (1.0 / 3.5, 2.0 / 8.5);
        let f0 = 0.75 * wa0 / (wa0 + wa1);
        let f1 = 0.75 * wa1 / (wa0 + wa1);
        let f2 = 0.25;
        assert!((d.backends[0].inputs["float_weight"] - f0).abs() < 1e-12);
        assert!((d.backends[1].inputs["float_weight"] - f1).abs() < 1e-12);
        assert!((d.backends[2].inputs["float_weight"] - f2).abs() < 1e-12);
        assert_eq!(d.backends[2].inputs["local_share"], 1.0);
        let scale = |f: f64| (f / f0 * 10000.0).round() as u32;
        assert_eq!(weights(&d), vec![10000, scale(f1), scale(f2)]);
        assert_eq!(weights(&d), vec![10000, 8235, 6078]);
        assert!(d.summary.starts_with("groups by maglev"), "{}", d.summary);
        assert!(d.summary.contains("a=0.750"), "{}", d.summary);
        // Same with the default group policy.
        let d2 = decide(Policy::LeastConn, None, &bs, &Params::default());
        assert_eq!(weights(&d2), weights(&d));
    }

    #[test]
    fn groups_least_conn_outside_uses_summed_flows() {
        let mut bs = vec![be(1, 1), be(2, 1), be(3, 1), be(4, 1)];
        for (b, g) in bs.iter_mut().zip(["x", "y", "x", "y"]) {
            b.group = Some(g.into());
        }
        bs[0].active_flows = Some(30.0);
        bs[2].active_flows = Some(30.0);
        // y: 0 flows, and its second member is down.
        bs[3].up = false;
        let d = decide(
            Policy::Maglev,
            Some(Policy::LeastConn),
            &bs,
            &Params::default(),
        );
        // Groups: x (cw 2, 60 flows, l = 30), y (cw 1, 0 flows, l = 0).
        // mean 15: wx = 2/(30+15+1) = 2/46, wy = 1/16.
        let (wx, wy) = (2.0 / 46.0, 1.0 / 16.0);
        let gx = wx / (wx + wy);
        assert!((d.backends[0].inputs["group_share"] - gx).abs() < 1e-12);
        assert_eq!(d.backends[0].inputs["group_active_flows"], 60.0);
        assert_eq!(d.backends[1].inputs["group_active_flows"], 0.0);
        let expect = ((gx / 2.0) / (1.0 - gx) * 10000.0).round() as u32;
        assert_eq!(weights(&d), vec![expect, 10000, expect, 0]);
        assert_eq!(d.backends[3].note, "down");
    }

    #[test]
    fn groups_ungrouped_backend_is_its_own_group_and_dead_group_gets_nothing() {
        let mut bs = vec![be(1, 1), be(2, 1), be(3, 2)];
        bs[0].group = Some("g".into());
        bs[1].group = Some("g".into());
        bs[1].up = false;
        // bs[2] has no group: a group of its own, share 2/3.
        let d = run(Policy::Maglev, &bs);
        assert_eq!(weights(&d), vec![5000, 0, 10000]);
        assert!(d.summary.contains("10.0.0.3:80="), "{}", d.summary);

        bs[0].up = false;
        let d = run(Policy::Maglev, &bs);
        assert_eq!(weights(&d), vec![0, 0, 10000]);
        assert_eq!(d.backends[0].inputs["group_share"], 0.0);
    }

    #[test]
    fn groups_with_capacity_ranges_inside_and_as_group_policy() {
        let mut bs = vec![be(1, 1), be(2, 1), be(3, 1)];
        bs[0].group = Some("a".into());
        bs[1].group = Some("a".into());
        bs[2].group = Some("b".into());
        bs[0].spare = Some(0.8);
        bs[1].spare = Some(0.2);
        bs[2].spare = Some(0.5);
        let d = decide(
            Policy::CapacityRanges,
            Some(Policy::CapacityRanges),
            &bs,
            &Params::default(),
        );
        assert_eq!(d.kind, SelectionKind::Ranges);
        // Group spare: a = 0.5 (cw-weighted), b = 0.5: both in band,
        // shares ∝ cw*spare = 1.0 and 0.5 → 2/3, 1/3.
        assert!((d.backends[0].inputs["group_spare"] - 0.5).abs() < 1e-12);
        assert!((d.backends[0].inputs["group_share"] - 2.0 / 3.0).abs() < 1e-12);
        // Inside a: 0.8 : 0.2.
        assert_eq!(weights(&d), vec![10000, 2500, 6250]);
        assert!(d.summary.contains("run as agent-load"), "{}", d.summary);
    }

    #[test]
    fn scaling() {
        assert_eq!(scale_weights(&[1e-9, 1.0, 0.0]), vec![1, 10000, 0]);
        assert_eq!(scale_weights(&[0.0, 0.0]), vec![0, 0]);
        assert_eq!(scale_weights(&[]), Vec::<u32>::new());
        assert_eq!(
            scale_weights(&[f64::NAN, f64::INFINITY, -1.0, 2.0, 1.0]),
            vec![0, 0, 0, 10000, 5000]
        );
        assert_eq!(scale_weights(&[f64::MAX, 1.0]), vec![10000, 1]);

        let d = run(Policy::Maglev, &[be(1, u32::MAX), be(2, 1)]);
        assert_eq!(weights(&d), vec![10000, 1]);
        let mut bs = vec![be(1, 1), be(2, 1)];
        bs[0].up = false;
        bs[1].drain = true;
        for p in Policy::ALL {
            let d = run(p, &bs);
            assert_eq!(weights(&d), vec![0, 0], "{p}");
            assert!(d.summary.contains("no eligible backend"), "{}", d.summary);
        }
        let d = run(Policy::Maglev, &[]);
        assert!(d.backends.is_empty());
    }

    #[test]
    fn garbage_measurements_are_sanitised() {
        let mut bs = vec![be(1, 1), be(2, 1)];
        bs[0].link = Some(LinkLoad {
            bytes_per_s: f64::NAN,
            packets_per_s: f64::INFINITY,
            drop_fraction: f64::NAN,
        });
        bs[1].link = Some(LinkLoad {
            bytes_per_s: -5.0,
            packets_per_s: -1.0,
            drop_fraction: 7.0,
        });
        let d = run(Policy::LinkLoad, &bs);
        // Both idle; the second drops everything (clamped to 1).
        assert_eq!(weights(&d), vec![10000, 0]);
        assert_eq!(d.backends[0].inputs["bytes_per_s"], 0.0);
        assert_eq!(d.backends[1].inputs["drop_fraction"], 1.0);

        let mut bs = vec![be(1, 1), be(2, 1)];
        bs[0].rtt_ms = Some(f64::NAN);
        bs[1].rtt_ms = Some(-1.0);
        assert_eq!(weights(&run(Policy::ResponseTime, &bs)), vec![10000, 10000]);

        let d = decide(
            Policy::AgentLoad,
            None,
            &[be(1, 1)],
            &Params { fuzz: f64::NAN },
        );
        assert_eq!(weights(&d), vec![10000]);
    }

    #[test]
    fn ewma() {
        let mut e = Ewma::new(0.5);
        assert_eq!(e.value(), None);
        assert_eq!(e.update(f64::NAN), 0.0);
        assert_eq!(e.value(), None);
        assert_eq!(e.update(10.0), 10.0);
        assert_eq!(e.update(20.0), 15.0);
        assert_eq!(e.update(0.0), 7.5);
        assert_eq!(e.update(f64::INFINITY), 7.5);
        assert_eq!(e.value(), Some(7.5));

        let mut e = Ewma::new(0.25);
        e.update(100.0);
        assert_eq!(e.update(0.0), 75.0);

        assert_eq!(Ewma::new(f64::NAN).alpha(), 1.0);
        assert_eq!(Ewma::new(3.0).alpha(), 1.0);
        assert_eq!(Ewma::new(-1.0).alpha(), 0.0);
        let mut e = Ewma::new(0.5);
        e.update(f64::MAX);
        assert!(e.update(f64::MAX).is_finite());
    }

    #[test]
    fn ewma_alpha_change_applies_to_an_existing_average() {
        let mut e = Ewma::new(0.5);
        e.update(100.0);
        assert_eq!(e.update(0.0), 50.0);
        // The value is kept; the next sample uses the new factor.
        e.set_alpha(0.1);
        assert_eq!(e.alpha(), 0.1);
        assert_eq!(e.value(), Some(50.0));
        assert!((e.update(100.0) - 55.0).abs() < 1e-12);
        // 1 = no smoothing from now on.
        e.set_alpha(1.0);
        assert_eq!(e.update(7.0), 7.0);
        // Clamped like new().
        e.set_alpha(f64::NAN);
        assert_eq!(e.alpha(), 1.0);
        e.set_alpha(-2.0);
        assert_eq!(e.alpha(), 0.0);
        assert_eq!(e.update(1000.0), 7.0);
        e.set_alpha(5.0);
        assert_eq!(e.alpha(), 1.0);
    }

    #[test]
    fn rates() {
        assert_eq!(rate(100, 300, 2.0), Some(100.0));
        assert_eq!(rate(100, 100, 1.0), Some(0.0));
        // Counter reset: the new value is the delta since the reset.
        assert_eq!(rate(1000, 50, 1.0), Some(50.0));
        assert_eq!(rate(0, 10, 0.0), None);
        assert_eq!(rate(0, 10, -1.0), None);
        assert_eq!(rate(0, 10, f64::NAN), None);
        assert_eq!(rate(0, 10, f64::INFINITY), None);
        assert_eq!(rate(0, u64::MAX, 1e-320), None);
        assert_eq!(rate(0, u64::MAX, 1.0), Some(u64::MAX as f64));
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            prop::num::f64::ANY,
            0.0..1.0f64,
            0.0..1e6f64,
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-1.0),
            Just(0.0),
        ]
    }

    fn any_backend() -> impl Strategy<Value = BackendInput> {
        (
            (
                any::<u8>(),
                prop_oneof![Just(0u32), 1..5u32, any::<u32>()],
                any::<bool>(),
                prop::bool::weighted(0.8),
                0..3u32,
                prop::option::of(prop_oneof![Just("a".to_string()), Just("b".to_string())]),
            ),
            (
                prop::option::of((any_f64(), any_f64(), any_f64())),
                prop::option::of(any_f64()),
                prop::option::of(any_f64()),
                prop::option::of(any_f64()),
            ),
        )
            .prop_map(
                |((last, cw, drain, up, priority, group), (l, flows, rtt, spare))| BackendInput {
                    address: Ipv4Addr::new(10, 0, 0, last),
                    port: 80,
                    configured_weight: cw,
                    drain,
                    up,
                    priority,
                    group,
                    link: l.map(|(b, p, d)| LinkLoad {
                        bytes_per_s: b,
                        packets_per_s: p,
                        drop_fraction: d,
                    }),
                    active_flows: flows,
                    rtt_ms: rtt,
                    spare,
                },
            )
    }

    proptest! {
        #[test]
        fn decide_is_total_and_bounded(
            backends in prop::collection::vec(any_backend(), 0..10),
            p in 0..6usize,
            gp in prop::option::of(0..6usize),
            fuzz in any_f64(),
        ) {
            let policy = Policy::ALL[p];
            let group_policy = gp.map(|g| Policy::ALL[g]);
            let d = decide(policy, group_policy, &backends, &Params { fuzz });
            prop_assert_eq!(d.backends.len(), backends.len());
            let kind = if policy == Policy::CapacityRanges {
                SelectionKind::Ranges
            } else {
                SelectionKind::Weights
            };
            prop_assert_eq!(d.kind, kind);
            let eligible = |b: &BackendInput| b.up && !b.drain && b.configured_weight > 0;
            let top = backends.iter().filter(|b| eligible(b)).map(|b| b.priority).min();
            for (b, out) in backends.iter().zip(&d.backends) {
                prop_assert!(out.weight <= MAX_WEIGHT);
                prop_assert!(out.weight <= SCALE);
                if !eligible(b) || Some(b.priority) != top {
                    prop_assert_eq!(out.weight, 0);
                    prop_assert!(!out.note.is_empty());
                }
                for (k, v) in &out.inputs {
                    prop_assert!(v.is_finite(), "{} = {}", k, v);
                }
            }
            let max = d.backends.iter().map(|b| b.weight).max().unwrap_or(0);
            if top.is_some() {
                prop_assert_eq!(max, SCALE);
            } else {
                prop_assert_eq!(max, 0);
            }
            // Deterministic.
            prop_assert_eq!(d, decide(policy, group_policy, &backends, &Params { fuzz }));
        }
    }
}
