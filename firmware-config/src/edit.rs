//! Live changes as edits of the running configuration: every change made
//! over the control protocol produces a whole new [`Config`] that passes the
//! same validation as a file, or an error that changes nothing. Pure: the
//! daemon applies the result.

use crate::control::{BackendField, Command, VipField};
use crate::error::{ConfigError, ConfigErrors};
use crate::locate::Locator;
use crate::schema::{Config, Policy};
use crate::validate::{validate_with, Environment};

/// Index of the VIP `sel` names: its `name`, its `address:port/protocol`,
/// or `address:port` / `address` when only one VIP matches.
pub fn find_vip(cfg: &Config, sel: &str) -> Result<usize, String> {
    let sel = sel.trim();
    if let Some(i) = cfg
        .vips
        .iter()
        .position(|v| v.name.as_deref() == Some(sel) || v.label() == sel)
    {
        return Ok(i);
    }
    let matches: Vec<usize> = cfg
        .vips
        .iter()
        .enumerate()
        .filter(|(_, v)| {
            v.service() == sel
                || format!("{}:{}", v.address, v.port) == sel
                || v.address.to_string() == sel
        })
        .map(|(i, _)| i)
        .collect();
    match matches.as_slice() {
        [i] => Ok(*i),
        [] => Err(format!(
            "no VIP \"{sel}\"; the VIPs are: {}",
            vip_names(cfg)
        )),
        _ => Err(format!(
            "\"{sel}\" matches {} VIPs ({}); name one as address:port/protocol",
            matches.len(),
            matches
                .iter()
                .map(|&i| cfg.vips[i].service())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn vip_names(cfg: &Config) -> String {
    if cfg.vips.is_empty() {
        return "(none)".into();
    }
    cfg.vips
        .iter()
        .map(|v| v.label())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether backend `b` of a VIP on port `vip_port` is what `sel` names:
/// its `address`, or its `address:port`.
pub fn backend_matches(b: &crate::schema::Backend, vip_port: u16, sel: &str) -> bool {
    let sel = sel.trim();
    b.address.to_string() == sel || format!("{}:{}", b.address, b.port_or(vip_port)) == sel
}

/// Index of the backend `sel` (`address` or `address:port`) of VIP `vip`.
pub fn find_backend(cfg: &Config, vip: usize, sel: &str) -> Result<usize, String> {
    let v = &cfg.vips[vip];
    let sel = sel.trim();
    let matches: Vec<usize> = v
        .backends
        .iter()
        .enumerate()
        .filter(|(_, b)| backend_matches(b, v.port, sel))
        .map(|(i, _)| i)
        .collect();
    match matches.as_slice() {
        [i] => Ok(*i),
        [] => Err(format!(
            "VIP {} has no backend \"{sel}\"; its backends are: {}",
            v.label(),
            v.backends
                .iter()
                .map(|b| format!("{}:{}", b.address, b.port_or(v.port)))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => Err(format!(
            "\"{sel}\" matches {} backends of VIP {}; name one as address:port",
            matches.len(),
            v.label()
        )),
    }
}

/// Applies a configuration-changing command to `cfg`. Returns the new
/// configuration (validated against `env`) and one line per change, or why
/// it is refused. Commands that change nothing in the configuration are
/// refused with an error (they are not edits).
pub fn apply(
    cfg: &Config,
    cmd: &Command,
    env: &Environment,
) -> Result<(Config, Vec<String>), String> {
    let mut new = cfg.clone();
    let mut changes = Vec::new();
    match cmd {
        Command::VipAdd { vip } => {
            let label = vip.label();
            changes.push(format!(
                "added VIP {label} ({} mode, policy {}, {} backend(s))",
                vip.mode,
                vip.policy,
                vip.backends.len()
            ));
            new.vips.push(vip.clone());
        }
        Command::VipSet {
            vip,
            name,
            mode,
            policy,
            group_policy,
            clear,
        } => {
            let clears = |f: VipField| clear.contains(&f);
            if name.is_some() && clears(VipField::Name) {
                return Err("vip set: name is both set and cleared; give one or the other".into());
            }
            if group_policy.is_some() && clears(VipField::GroupPolicy) {
                return Err(
                    "vip set: group_policy is both set and cleared; give one or the other".into(),
                );
            }
            let i = find_vip(cfg, vip)?;
            let v = &mut new.vips[i];
            let label = v.label();
            if let Some(n) = name {
                changes.push(format!("VIP {label}: name set to \"{n}\""));
                v.name = Some(n.clone());
            } else if clears(VipField::Name) {
                changes.push(match v.name.take() {
                    Some(old) => {
                        format!("VIP {label}: name \"{old}\" cleared (now {})", v.service())
                    }
                    None => format!("VIP {label}: name not set (unchanged)"),
                });
            }
            if let Some(m) = mode {
                changes.push(format!("VIP {label}: mode {} -> {m}", v.mode));
                v.mode = *m;
            }
            if let Some(p) = policy {
                changes.push(format!("VIP {label}: policy {} -> {p}", v.policy));
                v.policy = *p;
            }
            if let Some(g) = group_policy {
                changes.push(format!("VIP {label}: group policy set to {g}"));
                v.group_policy = Some(*g);
            } else if clears(VipField::GroupPolicy) {
                changes.push(match v.group_policy.take() {
                    Some(old) => format!(
                        "VIP {label}: group policy {old} cleared (default {})",
                        Policy::default()
                    ),
                    None => format!("VIP {label}: group policy not set (unchanged)"),
                });
            }
            if changes.is_empty() {
                return Err(
                    "vip set: nothing to change (give name, mode, policy or group_policy, or clear name or group_policy)".into(),
                );
            }
        }
        Command::VipRemove { vip } => {
            let i = find_vip(cfg, vip)?;
            changes.push(format!(
                "removed VIP {} and its {} backend(s)",
                cfg.vips[i].label(),
                cfg.vips[i].backends.len()
            ));
            new.vips.remove(i);
        }
        Command::BackendAdd { vip, backend } => {
            let i = find_vip(cfg, vip)?;
            let v = &mut new.vips[i];
            changes.push(format!(
                "VIP {}: added backend {}:{} (weight {})",
                v.label(),
                backend.address,
                backend.port_or(v.port),
                backend.weight
            ));
            v.backends.push(backend.clone());
        }
        Command::BackendRemove { vip, backend } => {
            let i = find_vip(cfg, vip)?;
            let k = find_backend(cfg, i, backend)?;
            let v = &mut new.vips[i];
            let b = v.backends.remove(k);
            changes.push(format!(
                "VIP {}: removed backend {}:{}",
                v.label(),
                b.address,
                b.port_or(v.port)
            ));
        }
        Command::BackendSet {
            vip,
            backend,
            weight,
            drain,
            priority,
            group,
            clear,
        } => {
            if group.is_some() && clear.contains(&BackendField::Group) {
                return Err(
                    "backend set: group is both set and cleared; give one or the other".into(),
                );
            }
            let i = find_vip(cfg, vip)?;
            let k = find_backend(cfg, i, backend)?;
            let v = &mut new.vips[i];
            let (label, port) = (v.label(), v.port);
            let b = &mut v.backends[k];
            let who = format!("VIP {label}: backend {}:{}", b.address, b.port_or(port));
            if let Some(w) = weight {
                changes.push(format!("{who}: weight {} -> {w}", b.weight));
                b.weight = *w;
            }
            if let Some(d) = drain {
                changes.push(format!(
                    "{who}: {}",
                    if *d {
                        "draining (no new connections)"
                    } else {
                        "undrained (takes new connections)"
                    }
                ));
                b.drain = *d;
            }
            if let Some(p) = priority {
                changes.push(format!("{who}: priority {} -> {p}", b.priority));
                b.priority = *p;
            }
            if let Some(g) = group {
                changes.push(format!("{who}: group set to \"{g}\""));
                b.group = Some(g.clone());
            } else if clear.contains(&BackendField::Group) {
                changes.push(match b.group.take() {
                    Some(old) => format!("{who}: group \"{old}\" cleared (no group)"),
                    None => format!("{who}: group not set (unchanged)"),
                });
            }
            if changes.is_empty() {
                return Err(
                    "backend set: nothing to change (give weight, drain, priority or group, or clear group)".into(),
                );
            }
        }
        Command::PolicySet {
            vip,
            policy,
            group_policy,
        } => {
            let i = find_vip(cfg, vip)?;
            let v = &mut new.vips[i];
            changes.push(format!(
                "VIP {}: policy {} -> {policy}",
                v.label(),
                v.policy
            ));
            v.policy = *policy;
            if let Some(g) = group_policy {
                changes.push(format!("VIP {}: group policy set to {g}", v.label()));
                v.group_policy = Some(*g);
            }
        }
        other => return Err(format!("{other:?} does not change the configuration")),
    }
    check_edited(&new, env)?;
    Ok((new, changes))
}

/// Validates an edited configuration; errors name the field, the problem
/// and the fix (there is no file line: the change came over the socket).
pub fn check_edited(cfg: &Config, env: &Environment) -> Result<(), String> {
    let text = cfg.to_toml();
    validate_with(cfg, &text, "change", env).map_err(|errs| {
        errs.iter()
            .map(|e| format!("{}: {}; {}", e.field, e.problem, e.hint))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Refuses a new configuration (`text`, read from `file`) that changes what
/// only a restart can change: `[eal]`, `[control]`, `[flows]`, `[maglev]`
/// and the ports. Each difference is an error located in the file.
pub fn check_live(
    running: &Config,
    new: &Config,
    text: &str,
    file: &str,
) -> Result<(), ConfigErrors> {
    let loc = Locator::new(text);
    let mut errors = Vec::new();
    let mut differ = |field: String, what: &str| {
        let (line, column) = loc.locate(&field);
        errors.push(ConfigError {
            file: file.to_string(),
            line,
            column,
            field,
            problem: format!("{what} cannot change while sluiced runs"),
            hint: "keep the running value (`sluicectl config dump` shows it), or restart sluiced with the new file".into(),
        });
    };
    if running.eal != new.eal {
        differ("eal".into(), "the DPDK environment");
    }
    if running.control != new.control {
        differ("control.socket".into(), "the control socket");
    }
    if running.flows != new.flows {
        differ("flows".into(), "flow-table sizing and timeouts");
    }
    if running.maglev != new.maglev {
        differ("maglev.table_size".into(), "the Maglev table size");
    }
    if running.ports.len() != new.ports.len() {
        differ("port".into(), "the number of ports");
    } else {
        for (i, (a, b)) in running.ports.iter().zip(&new.ports).enumerate() {
            if a != b {
                differ(format!("port[{i}]"), "a port");
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Backend, Policy};

    const BASE: &str = r#"
[eal]
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
name = "web"
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
address = "198.18.100.1"
port = 53
protocol = "udp"
mode = "nat"
[[vip.backend]]
address = "198.18.2.21"
"#;

    fn env() -> Environment {
        Environment { cpus: 2 }
    }

    fn cfg() -> Config {
        crate::parse_with(BASE, "t.toml", &env()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn backend(addr: &str) -> Backend {
        toml::from_str(&format!("address = \"{addr}\"")).unwrap()
    }

    #[test]
    fn selectors() {
        let c = cfg();
        assert_eq!(find_vip(&c, "web"), Ok(0));
        assert_eq!(find_vip(&c, "198.18.100.1:53/udp"), Ok(1));
        assert_eq!(find_vip(&c, "198.18.100.1:80"), Ok(0));
        let e = find_vip(&c, "198.18.100.1").unwrap_err();
        assert!(e.contains("matches 2 VIPs"), "{e}");
        let e = find_vip(&c, "nope").unwrap_err();
        assert!(e.contains("the VIPs are: web, 198.18.100.1:53/udp"), "{e}");
        assert_eq!(find_backend(&c, 0, "198.18.2.12"), Ok(1));
        assert_eq!(find_backend(&c, 0, "198.18.2.12:8080"), Ok(1));
        assert!(find_backend(&c, 0, "198.18.2.12:80").is_err());
    }

    #[test]
    fn edits_validate_and_failures_change_nothing() {
        let c = cfg();
        let (n, ch) = apply(
            &c,
            &Command::BackendSet {
                vip: "web".into(),
                backend: "198.18.2.11".into(),
                weight: Some(5),
                drain: Some(true),
                priority: None,
                group: None,
                clear: vec![],
            },
            &env(),
        )
        .unwrap();
        assert_eq!(n.vips[0].backends[0].weight, 5);
        assert!(n.vips[0].backends[0].drain);
        assert_eq!(ch.len(), 2, "{ch:?}");
        // A duplicate backend is refused by the same validation as a file.
        let mut dup = backend("198.18.2.12");
        dup.port = Some(8080);
        let e = apply(
            &c,
            &Command::BackendAdd {
                vip: "web".into(),
                backend: dup,
            },
            &env(),
        )
        .unwrap_err();
        assert!(
            e.contains("vip[0].backend[2]: 198.18.2.12:8080 is already backend[1]"),
            "{e}"
        );
        // Removing the last backend of a VIP is refused: remove the VIP.
        let e = apply(
            &c,
            &Command::BackendRemove {
                vip: "198.18.100.1:53/udp".into(),
                backend: "198.18.2.21".into(),
            },
            &env(),
        )
        .unwrap_err();
        assert!(e.contains("has no backends"), "{e}");
        let (n, _) = apply(
            &c,
            &Command::PolicySet {
                vip: "web".into(),
                policy: Policy::LeastConn,
                group_policy: None,
            },
            &env(),
        )
        .unwrap();
        assert_eq!(n.vips[0].policy, Policy::LeastConn);
        let (n, _) = apply(&c, &Command::VipRemove { vip: "web".into() }, &env()).unwrap();
        assert_eq!(n.vips.len(), 1);
        assert!(apply(&c, &Command::Status, &env()).is_err());
        let e = apply(
            &c,
            &Command::BackendSet {
                vip: "web".into(),
                backend: "198.18.2.11".into(),
                weight: None,
                drain: None,
                priority: None,
                group: None,
                clear: vec![],
            },
            &env(),
        )
        .unwrap_err();
        assert!(e.contains("nothing to change"), "{e}");
    }

    fn vip_set(vip: &str) -> Command {
        Command::VipSet {
            vip: vip.into(),
            name: None,
            mode: None,
            policy: None,
            group_policy: None,
            clear: vec![],
        }
    }

    fn backend_set(vip: &str, backend: &str) -> Command {
        Command::BackendSet {
            vip: vip.into(),
            backend: backend.into(),
            weight: None,
            drain: None,
            priority: None,
            group: None,
            clear: vec![],
        }
    }

    fn with_vip(
        mut cmd: Command,
        f: impl FnOnce(&mut Option<String>, &mut Option<Policy>, &mut Vec<VipField>),
    ) -> Command {
        if let Command::VipSet {
            name,
            group_policy,
            clear,
            ..
        } = &mut cmd
        {
            f(name, group_policy, clear);
        }
        cmd
    }

    fn with_backend(
        mut cmd: Command,
        f: impl FnOnce(&mut Option<String>, &mut Vec<BackendField>),
    ) -> Command {
        if let Command::BackendSet { group, clear, .. } = &mut cmd {
            f(group, clear);
        }
        cmd
    }

    /// `cfg()` with VIP web's two backends in groups `a` and `b`, chosen by
    /// `least-conn`.
    fn grouped() -> Config {
        let mut c = cfg();
        c.vips[0].backends[0].group = Some("a".into());
        c.vips[0].backends[1].group = Some("b".into());
        c.vips[0].group_policy = Some(Policy::LeastConn);
        check_edited(&c, &env()).unwrap();
        c
    }

    #[test]
    fn vip_name_set_then_cleared() {
        let c = cfg();
        let clear_name = with_vip(vip_set("web"), |_, _, c| c.push(VipField::Name));
        let (n, ch) = apply(&c, &clear_name, &env()).unwrap();
        assert_eq!(n.vips[0].name, None);
        assert_eq!(
            ch,
            ["VIP web: name \"web\" cleared (now 198.18.100.1:80/tcp)"]
        );
        assert!(find_vip(&n, "web").is_err(), "the old name selects nothing");
        assert!(!n.to_toml().contains("name = \"web\""), "{}", n.to_toml());
        // Set it again on the edited configuration: back where we started.
        let set_name = with_vip(vip_set("198.18.100.1:80/tcp"), |n, _, _| {
            *n = Some("web".into())
        });
        let (back, _) = apply(&n, &set_name, &env()).unwrap();
        assert_eq!(back, c);
        // Clearing it once more is a no-op that succeeds and says so.
        let again = with_vip(vip_set("198.18.100.1:80/tcp"), |_, _, c| {
            c.push(VipField::Name)
        });
        let (same, ch) = apply(&n, &again, &env()).unwrap();
        assert_eq!(same, n);
        assert_eq!(ch, ["VIP 198.18.100.1:80/tcp: name not set (unchanged)"]);
    }

    #[test]
    fn clearing_an_absent_field_changes_nothing_and_succeeds() {
        let c = cfg();
        let cmd = with_vip(vip_set("198.18.100.1:53/udp"), |_, _, cl| {
            cl.extend([VipField::Name, VipField::GroupPolicy])
        });
        let (n, ch) = apply(&c, &cmd, &env()).unwrap();
        assert_eq!(n, c);
        assert_eq!(
            ch,
            [
                "VIP 198.18.100.1:53/udp: name not set (unchanged)",
                "VIP 198.18.100.1:53/udp: group policy not set (unchanged)"
            ]
        );
        let cmd = with_backend(backend_set("web", "198.18.2.11"), |_, cl| {
            cl.push(BackendField::Group)
        });
        let (n, ch) = apply(&c, &cmd, &env()).unwrap();
        assert_eq!(n, c);
        assert_eq!(
            ch,
            ["VIP web: backend 198.18.2.11:8080: group not set (unchanged)"]
        );
    }

    #[test]
    fn group_policy_set_then_cleared_while_groups_are_used() {
        let mut c = grouped();
        c.vips[0].group_policy = None;
        let set = with_vip(vip_set("web"), |_, g, _| *g = Some(Policy::AgentLoad));
        let (n, _) = apply(&c, &set, &env()).unwrap();
        assert_eq!(n.vips[0].group_policy, Some(Policy::AgentLoad));
        // Groups without a group_policy are valid (maglev chooses them).
        let clear = with_vip(vip_set("web"), |_, _, cl| cl.push(VipField::GroupPolicy));
        let (back, ch) = apply(&n, &clear, &env()).unwrap();
        assert_eq!(back, c);
        assert_eq!(
            ch,
            ["VIP web: group policy agent-load cleared (default maglev)"]
        );
        assert!(
            !back.to_toml().contains("group_policy"),
            "{}",
            back.to_toml()
        );
        // With the groups gone (a whole-file change), group_policy is refused
        // by validation, so it is cleared along with them, not after.
        let mut ungrouped = grouped();
        for b in &mut ungrouped.vips[0].backends {
            b.group = None;
        }
        assert!(check_edited(&ungrouped, &env())
            .unwrap_err()
            .contains("group_policy is set but no backend has a group"));
    }

    #[test]
    fn backend_group_set_then_cleared() {
        // A single-backend VIP can have its group set and cleared.
        let c = cfg();
        let set = with_backend(backend_set("198.18.100.1:53/udp", "198.18.2.21"), |g, _| {
            *g = Some("x".into())
        });
        let (n, _) = apply(&c, &set, &env()).unwrap();
        assert_eq!(n.vips[1].backends[0].group.as_deref(), Some("x"));
        let clear = with_backend(
            backend_set("198.18.100.1:53/udp", "198.18.2.21"),
            |_, cl| cl.push(BackendField::Group),
        );
        let (back, ch) = apply(&n, &clear, &env()).unwrap();
        assert_eq!(back, c);
        assert_eq!(
            ch,
            ["VIP 198.18.100.1:53/udp: backend 198.18.2.21:53: group \"x\" cleared (no group)"]
        );
        // Combined with another change in the same command.
        let both = Command::BackendSet {
            vip: "198.18.100.1:53/udp".into(),
            backend: "198.18.2.21".into(),
            weight: Some(4),
            drain: None,
            priority: None,
            group: None,
            clear: vec![BackendField::Group],
        };
        let (n2, ch) = apply(&n, &both, &env()).unwrap();
        assert_eq!(n2.vips[1].backends[0].group, None);
        assert_eq!(n2.vips[1].backends[0].weight, 4);
        assert_eq!(ch.len(), 2, "{ch:?}");
    }

    #[test]
    fn a_clear_that_leaves_the_config_invalid_is_refused() {
        // Every backend of a VIP has a group or none does: clearing one of
        // two is refused by the file's validation.
        let c = grouped();
        let clear = with_backend(backend_set("web", "198.18.2.12"), |_, cl| {
            cl.push(BackendField::Group)
        });
        let e = apply(&c, &clear, &env()).unwrap_err();
        assert!(
            e.contains("1 of the 2 backends of VIP web have a group and the others do not"),
            "{e}"
        );
    }

    #[test]
    fn set_and_clear_of_one_field_is_refused() {
        let c = grouped();
        let cmd = with_vip(vip_set("web"), |n, _, cl| {
            *n = Some("www".into());
            cl.push(VipField::Name);
        });
        let e = apply(&c, &cmd, &env()).unwrap_err();
        assert!(e.contains("name is both set and cleared"), "{e}");
        let cmd = with_vip(vip_set("web"), |_, g, cl| {
            *g = Some(Policy::Maglev);
            cl.push(VipField::GroupPolicy);
        });
        let e = apply(&c, &cmd, &env()).unwrap_err();
        assert!(e.contains("group_policy is both set and cleared"), "{e}");
        let cmd = with_backend(backend_set("web", "198.18.2.11"), |g, cl| {
            *g = Some("b".into());
            cl.push(BackendField::Group);
        });
        let e = apply(&c, &cmd, &env()).unwrap_err();
        assert!(e.contains("group is both set and cleared"), "{e}");
        // Setting one field and clearing another is fine.
        let cmd = with_vip(vip_set("web"), |n, _, cl| {
            *n = Some("www".into());
            cl.push(VipField::GroupPolicy);
        });
        let (n, ch) = apply(&c, &cmd, &env()).unwrap();
        assert_eq!(n.vips[0].name.as_deref(), Some("www"));
        assert_eq!(n.vips[0].group_policy, None);
        assert_eq!(ch.len(), 2, "{ch:?}");
    }

    #[test]
    fn clear_from_the_wire_applies() {
        let req = crate::control::Request::from_value(serde_json::json!({
            "version": 1, "command": "vip_set", "vip": "web",
            "name": null, "policy": "least-conn", "clear": ["name"]
        }))
        .unwrap();
        let (n, ch) = apply(&cfg(), &req.command, &env()).unwrap();
        assert_eq!(n.vips[0].name, None);
        assert_eq!(n.vips[0].policy, Policy::LeastConn);
        assert_eq!(ch.len(), 2, "{ch:?}");
    }

    #[test]
    fn dump_round_trips_and_live_check_names_fields() {
        let c = cfg();
        let text = c.to_toml();
        let back = crate::parse_with(&text, "dump.toml", &env()).unwrap();
        assert_eq!(back, c);
        assert!(check_live(&c, &back, &text, "dump.toml").is_ok());
        let changed = text.replace("memory_mb = 1024", "memory_mb = 512");
        let new = crate::parse_with(&changed, "new.toml", &env()).unwrap();
        let errs = check_live(&c, &new, &changed, "new.toml").unwrap_err();
        let e = &errs.0[0];
        assert_eq!((e.file.as_str(), e.field.as_str()), ("new.toml", "eal"));
        assert!(e.line > 0, "{e}");
    }
}
