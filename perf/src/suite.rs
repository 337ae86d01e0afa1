//! The pure part of the `sluice-perf` runner: scenarios, what one trial
//! measured, medians and spreads, the table and the chart.

use crate::gen::FrameSize;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The device under test in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Forwarder {
    /// `dpdk-testpmd --forward-mode=io`: receive and send back out, untouched.
    #[serde(rename = "testpmd-io")]
    TestpmdIo,
    /// `dpdk-testpmd --forward-mode=macswap`: swaps the MACs (touches every
    /// packet, like a dispatcher): the baseline of the ratios.
    #[serde(rename = "testpmd-macswap")]
    TestpmdMacswap,
    #[serde(rename = "sluiced-dr")]
    SluicedDr,
    #[serde(rename = "sluiced-nat")]
    SluicedNat,
}

impl Forwarder {
    pub const ALL: [Forwarder; 4] = [
        Forwarder::TestpmdIo,
        Forwarder::TestpmdMacswap,
        Forwarder::SluicedDr,
        Forwarder::SluicedNat,
    ];

    /// The forwarder every ratio is taken against.
    pub const BASELINE: Forwarder = Forwarder::TestpmdMacswap;

    pub fn name(self) -> &'static str {
        match self {
            Forwarder::TestpmdIo => "testpmd-io",
            Forwarder::TestpmdMacswap => "testpmd-macswap",
            Forwarder::SluicedDr => "sluiced-dr",
            Forwarder::SluicedNat => "sluiced-nat",
        }
    }

    pub fn parse(s: &str) -> Result<Forwarder, String> {
        Forwarder::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!("forwarder {s:?}: expected testpmd-io, testpmd-macswap, sluiced-dr or sluiced-nat")
            })
    }

    pub fn is_sluiced(self) -> bool {
        matches!(self, Forwarder::SluicedDr | Forwarder::SluicedNat)
    }
}

/// One cell of the matrix: a forwarder under one kind of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scenario {
    pub forwarder: Forwarder,
    pub flows: u32,
    pub size: FrameSize,
}

impl Scenario {
    /// `flows/size`, the traffic part (what the baseline is matched on).
    pub fn traffic_label(&self) -> String {
        format!("{}/{}", flows_label(self.flows), self.size)
    }
}

/// `1K`, `1M`, `250`.
pub fn flows_label(n: u32) -> String {
    // (Not `is_multiple_of`: the workspace's rust-version is 1.85.)
    if n >= 1_000_000 && n / 1_000_000 * 1_000_000 == n {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n / 1000 * 1000 == n {
        format!("{}K", n / 1000)
    } else {
        n.to_string()
    }
}

/// Packets that did not make it, by where they were lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    /// Not put on the link: refused by the generator's TX queue, no
    /// buffers, or lost in the generator's own RX queue.
    pub generator: u64,
    /// Left one end of a link and never arrived at the other.
    pub link: u64,
    /// Received by the device under test and not sent on (its own drops,
    /// counted or not, and its RX queue overflows).
    pub dispatcher: u64,
}

impl Drops {
    pub fn total(&self) -> u64 {
        self.generator + self.link + self.dispatcher
    }
}

/// Counts of one run taken from both ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RunCounts {
    /// Frames the generator put on its TX link.
    pub gen_sent: u64,
    /// Frames the generator refused or could not build.
    pub gen_refused: u64,
    /// Frames lost in the generator's RX queue (missed, no buffers).
    pub gen_rx_lost: u64,
    /// Frames the generator received back.
    pub gen_received: u64,
    /// Frames the device received on its client link.
    pub dut_received: u64,
    /// Frames the device sent on its backend link.
    pub dut_sent: u64,
    /// Frames the device dropped in its RX queue (missed, no buffers).
    pub dut_rx_lost: u64,
}

impl RunCounts {
    /// Splits the difference between what was offered and what came back
    /// by place.
    pub fn drops(&self) -> Drops {
        let forward_link = self
            .gen_sent
            .saturating_sub(self.dut_received + self.dut_rx_lost);
        let return_link = self
            .dut_sent
            .saturating_sub(self.gen_received + self.gen_rx_lost);
        Drops {
            generator: self.gen_refused + self.gen_rx_lost,
            link: forward_link + return_link,
            dispatcher: self.dut_received.saturating_sub(self.dut_sent) + self.dut_rx_lost,
        }
    }
}

/// A latency distribution's key points, nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyNs {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

/// What one repetition of a scenario measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Forwarded rate at full speed (frames back at the generator).
    pub mpps: f64,
    /// The same in Gbit/s (frames with FCS, without preamble and gap).
    pub gbps: f64,
    /// The device's cycles per packet on its worker core at full speed.
    pub cycles_per_packet: Option<f64>,
    /// Full-speed counts and drops (the generator refusing frames is
    /// expected there: it offers more than the link takes).
    pub max: RunCounts,
    /// Rate asked for in the latency ("half-rate") run: `--latency-share`
    /// of `mpps`, half by default.
    pub half_rate_mpps: f64,
    /// The device's cycles per packet on its worker core in the half-rate
    /// run: with few packets per poll a packet costs more than at full
    /// speed, so the core is busier than the rate alone says.
    #[serde(default)]
    pub half_cycles_per_packet: Option<f64>,
    /// Latency in the half-rate run.
    pub latency: Option<LatencyNs>,
    /// Counts and drops at half rate: all three should be zero.
    pub half: RunCounts,
    /// Every sampled frame passed the rewrite and checksum checks (and at
    /// least one was sampled), in both runs.
    pub check_ok: bool,
    /// First check failures, if any.
    pub check_examples: Vec<String>,
}

/// Median and range of a set of values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// None for an empty set.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    /// Half the range relative to the median, in percent.
    pub fn spread_percent(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / 2.0 / self.median * 100.0
        }
    }
}

/// A scenario's repetitions and their summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub trials: Vec<Trial>,
    pub mpps: Option<Spread>,
    pub gbps: Option<Spread>,
    pub cycles_per_packet: Option<Spread>,
    #[serde(default)]
    pub half_cycles_per_packet: Option<Spread>,
    pub p50_ns: Option<Spread>,
    pub p99_ns: Option<Spread>,
    pub p999_ns: Option<Spread>,
    /// Median Mpps over the baseline's median Mpps for the same traffic.
    pub ratio: Option<f64>,
    /// Median p99 latency over the baseline's.
    pub p99_ratio: Option<f64>,
    /// Drops at half rate, summed over the repetitions.
    pub half_rate_drops: Drops,
    /// Device drops at full speed, summed over the repetitions.
    pub max_rate_dispatcher_drops: u64,
    pub check_ok: bool,
    /// Why the scenario has no figures, if it failed.
    pub error: Option<String>,
    /// Baseline rows only: the median Mpps of the baseline measured again
    /// after the other forwarders ran the same traffic. Far from `mpps`,
    /// the machine's speed changed meanwhile (see [`DRIFT_LIMIT`]).
    pub recheck_mpps: Option<f64>,
}

/// How far (as a share) the baseline's re-check may be from its first
/// measurement before the ratios of that traffic are marked unreliable.
pub const DRIFT_LIMIT: f64 = 0.15;

impl ScenarioResult {
    /// Baseline rows: the re-check's drift from the first measurement
    /// (`recheck / first − 1`), when both exist.
    pub fn drift(&self) -> Option<f64> {
        match (self.mpps, self.recheck_mpps) {
            (Some(m), Some(r)) if m.median > 0.0 => Some(r / m.median - 1.0),
            _ => None,
        }
    }

    pub fn new(scenario: Scenario, trials: Vec<Trial>, error: Option<String>) -> ScenarioResult {
        let lat = |f: fn(&LatencyNs) -> f64| {
            Spread::of(trials.iter().filter_map(|t| t.latency.as_ref().map(f)))
        };
        let mut half = Drops::default();
        let mut max_disp = 0;
        for t in &trials {
            let d = t.half.drops();
            half.generator += d.generator;
            half.link += d.link;
            half.dispatcher += d.dispatcher;
            max_disp += t.max.drops().dispatcher;
        }
        ScenarioResult {
            scenario,
            mpps: Spread::of(trials.iter().map(|t| t.mpps)),
            gbps: Spread::of(trials.iter().map(|t| t.gbps)),
            cycles_per_packet: Spread::of(trials.iter().filter_map(|t| t.cycles_per_packet)),
            half_cycles_per_packet: Spread::of(
                trials.iter().filter_map(|t| t.half_cycles_per_packet),
            ),
            p50_ns: lat(|l| l.p50),
            p99_ns: lat(|l| l.p99),
            p999_ns: lat(|l| l.p999),
            ratio: None,
            p99_ratio: None,
            half_rate_drops: half,
            max_rate_dispatcher_drops: max_disp,
            check_ok: !trials.is_empty() && trials.iter().all(|t| t.check_ok),
            trials,
            error,
            recheck_mpps: None,
        }
    }
}

/// Fills in every scenario's ratios against the baseline forwarder under
/// the same traffic.
pub fn compute_ratios(results: &mut [ScenarioResult]) {
    let base: Vec<(String, Option<f64>, Option<f64>)> = results
        .iter()
        .filter(|r| r.scenario.forwarder == Forwarder::BASELINE)
        .map(|r| {
            (
                r.scenario.traffic_label(),
                r.mpps.map(|s| s.median),
                r.p99_ns.map(|s| s.median),
            )
        })
        .collect();
    for r in results.iter_mut() {
        let label = r.scenario.traffic_label();
        if let Some((_, mpps, p99)) = base.iter().find(|(l, _, _)| *l == label) {
            r.ratio = match (r.mpps, mpps) {
                (Some(m), Some(b)) if *b > 0.0 => Some(m.median / b),
                _ => None,
            };
            r.p99_ratio = match (r.p99_ns, p99) {
                (Some(m), Some(b)) if *b > 0.0 => Some(m.median / b),
                _ => None,
            };
        }
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

/// The results as a fixed-width text table.
pub fn table(results: &[ScenarioResult]) -> String {
    let header = [
        "forwarder",
        "flows",
        "frame",
        "Mpps",
        "±%",
        "Gbps",
        "ratio",
        "cyc/pkt",
        "½ cyc",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "p99 ratio",
        "drops g/l/d",
        "max d",
        "check",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in results {
        let s = &r.scenario;
        let us = |v: Option<Spread>| opt(v.map(|s| s.median), |x| format!("{:.1}", x / 1000.0));
        let d = &r.half_rate_drops;
        rows.push(vec![
            s.forwarder.name().to_string(),
            flows_label(s.flows),
            s.size.to_string(),
            opt(r.mpps.map(|m| m.median), |x| format!("{x:.2}")),
            opt(r.mpps.map(|m| m.spread_percent()), |x| format!("{x:.1}")),
            opt(r.gbps.map(|m| m.median), |x| format!("{x:.2}")),
            opt(r.ratio, |x| format!("{x:.2}")),
            opt(r.cycles_per_packet.map(|m| m.median), |x| format!("{x:.0}")),
            opt(r.half_cycles_per_packet.map(|m| m.median), |x| {
                format!("{x:.0}")
            }),
            us(r.p50_ns),
            us(r.p99_ns),
            us(r.p999_ns),
            opt(r.p99_ratio, |x| format!("{x:.2}")),
            format!("{}/{}/{}", d.generator, d.link, d.dispatcher),
            r.max_rate_dispatcher_drops.to_string(),
            match (&r.error, r.check_ok) {
                (Some(_), _) => "FAILED".to_string(),
                (None, true) => "ok".to_string(),
                (None, false) => "BAD".to_string(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                if c < 3 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
        if i == 0 {
            let _ = writeln!(
                out,
                "{}",
                "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
            );
        }
    }
    for r in results {
        if let Some(e) = &r.error {
            let s = &r.scenario;
            let _ = writeln!(out, "{} {}: {e}", s.forwarder.name(), s.traffic_label());
        }
    }
    for r in results {
        if let Some(m) = r.mpps.filter(|m| m.spread_percent() > DRIFT_LIMIT * 100.0) {
            let _ = writeln!(
                out,
                "UNRELIABLE {}: {}'s repetitions spread ±{:.0}% ({:.2} to {:.2} Mpps): \
                 the machine's speed changed during them",
                r.scenario.traffic_label(),
                r.scenario.forwarder.name(),
                m.spread_percent(),
                m.min,
                m.max
            );
        }
    }
    for r in results {
        if let (Some(d), Some(m), Some(again)) = (r.drift(), r.mpps, r.recheck_mpps) {
            if d.abs() > DRIFT_LIMIT {
                let _ = writeln!(
                    out,
                    "UNRELIABLE {}: {} measured {:.2} Mpps, then {:.2} after the others ({:+.0}%): \
                     the machine's speed changed during this traffic; its ratios compare different speeds",
                    r.scenario.traffic_label(),
                    r.scenario.forwarder.name(),
                    m.median,
                    again,
                    d * 100.0
                );
            }
        }
    }
    out
}

/// A grouped bar chart (SVG) of each forwarder's rate relative to the
/// baseline, one group per kind of traffic, with the 0.8 target line.
pub fn chart_svg(results: &[ScenarioResult], title: &str) -> Result<String, String> {
    use plotters::prelude::*;
    let mut labels: Vec<String> = Vec::new();
    for r in results {
        let l = r.scenario.traffic_label();
        if !labels.contains(&l) {
            labels.push(l);
        }
    }
    let forwarders: Vec<Forwarder> = Forwarder::ALL
        .into_iter()
        .filter(|f| results.iter().any(|r| r.scenario.forwarder == *f))
        .collect();
    let top = results
        .iter()
        .filter_map(|r| r.ratio)
        .fold(1.2f64, f64::max)
        * 1.1;
    let colors = [
        RGBColor(0x99, 0x99, 0x99),
        RGBColor(0x44, 0x44, 0x44),
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
    ];
    let mut svg = String::new();
    {
        let width = 200 + 180 * labels.len() as u32;
        let root = SVGBackend::with_string(&mut svg, (width, 420)).into_drawing_area();
        let e = |x: &dyn std::fmt::Display| x.to_string();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let n = labels.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..n as f64, 0f64..top)
            .map_err(|x| e(&x))?;
        let labels_for_axis = labels.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&move |x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 1e-6 {
                    labels_for_axis.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("packets/s relative to testpmd macswap")
            .draw()
            .map_err(|x| e(&x))?;
        let slot = 0.8 / forwarders.len().max(1) as f64;
        for (fi, f) in forwarders.iter().enumerate() {
            let color = colors[Forwarder::ALL.iter().position(|x| x == f).unwrap_or(0)];
            let bars: Vec<Rectangle<(f64, f64)>> = results
                .iter()
                .filter(|r| r.scenario.forwarder == *f)
                .filter_map(|r| {
                    let g = labels
                        .iter()
                        .position(|l| *l == r.scenario.traffic_label())?;
                    let x0 = g as f64 + 0.1 + fi as f64 * slot;
                    Some(Rectangle::new(
                        [(x0, 0.0), (x0 + slot * 0.9, r.ratio?)],
                        color.filled(),
                    ))
                })
                .collect();
            chart
                .draw_series(bars)
                .map_err(|x| e(&x))?
                .label(f.name())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.8), (n as f64, 0.8)],
                RED.stroke_width(1),
            ))
            .map_err(|x| e(&x))?
            .label("target 0.8")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], RED));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(mpps: f64, p99: f64) -> Trial {
        Trial {
            mpps,
            gbps: mpps * 0.512,
            cycles_per_packet: Some(2600.0 / mpps),
            latency: Some(LatencyNs {
                p50: p99 / 2.0,
                p99,
                p999: p99 * 2.0,
            }),
            check_ok: true,
            ..Trial::default()
        }
    }

    fn result(f: Forwarder, flows: u32, mpps: &[f64]) -> ScenarioResult {
        ScenarioResult::new(
            Scenario {
                forwarder: f,
                flows,
                size: FrameSize::Fixed(64),
            },
            mpps.iter().map(|&m| trial(m, 1000.0 * m)).collect(),
            None,
        )
    }

    #[test]
    fn a_baseline_that_drifted_marks_its_traffic_unreliable() {
        let mut base = result(Forwarder::BASELINE, 1000, &[20.0, 20.0, 20.0]);
        let dr = result(Forwarder::SluicedDr, 1000, &[18.0]);
        base.recheck_mpps = Some(21.0);
        assert!((base.drift().unwrap() - 0.05).abs() < 1e-9);
        let t = table(&[base.clone(), dr.clone()]);
        assert!(!t.contains("UNRELIABLE"), "{t}");
        base.recheck_mpps = Some(10.0);
        assert!((base.drift().unwrap() + 0.5).abs() < 1e-9);
        let t = table(&[base, dr]);
        assert!(
            t.contains("UNRELIABLE 1K/64: testpmd-macswap measured 20.00 Mpps, then 10.00"),
            "{t}"
        );
        // Repetitions far apart say the same of their own row.
        let t = table(&[result(Forwarder::SluicedNat, 1000, &[10.0, 20.0, 19.0])]);
        assert!(
            t.contains("UNRELIABLE 1K/64: sluiced-nat's repetitions spread ±26%"),
            "{t}"
        );
    }

    #[test]
    fn median_and_spread() {
        let s = Spread::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.spread_percent(), 50.0);
        assert_eq!(Spread::of([4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Spread::of([]).is_none());
        assert!(Spread::of([f64::NAN]).is_none());
    }

    #[test]
    fn drops_are_split_by_place() {
        let c = RunCounts {
            gen_sent: 1000,
            gen_refused: 5,
            gen_rx_lost: 2,
            gen_received: 980,
            dut_received: 990,
            dut_sent: 985,
            dut_rx_lost: 3,
        };
        let d = c.drops();
        assert_eq!(d.generator, 7);
        assert_eq!(d.link, (1000 - 993) + (985 - 982));
        assert_eq!(d.dispatcher, 5 + 3);
        assert_eq!(RunCounts::default().drops().total(), 0);
    }

    #[test]
    fn ratios_match_the_baseline_with_the_same_traffic() {
        let mut r = vec![
            result(Forwarder::TestpmdMacswap, 1000, &[10.0, 9.0, 11.0]),
            result(Forwarder::TestpmdMacswap, 1_000_000, &[8.0]),
            result(Forwarder::SluicedDr, 1000, &[9.0, 8.0, 8.5]),
            result(Forwarder::SluicedDr, 1_000_000, &[4.0]),
            result(Forwarder::SluicedNat, 10, &[4.0]),
        ];
        compute_ratios(&mut r);
        assert_eq!(r[0].ratio, Some(1.0));
        assert!((r[2].ratio.unwrap() - 0.85).abs() < 1e-9);
        assert_eq!(r[3].ratio, Some(0.5));
        assert_eq!(r[3].p99_ratio, Some(0.5));
        assert_eq!(r[4].ratio, None, "no baseline for that traffic");
        let t = table(&r);
        assert!(t.contains("sluiced-dr"));
        assert!(t.contains("0.85"));
        assert_eq!(t.lines().count(), 2 + r.len());
        let svg = chart_svg(&r, "test").unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("sluiced-dr"));
    }

    #[test]
    fn failed_scenarios_show_as_failed() {
        let r = ScenarioResult::new(
            Scenario {
                forwarder: Forwarder::SluicedNat,
                flows: 1000,
                size: FrameSize::Imix,
            },
            vec![],
            Some("link never came up".into()),
        );
        assert!(!r.check_ok);
        let t = table(&[r]);
        assert!(t.contains("FAILED"));
        assert!(t.contains("link never came up"));
    }
}
