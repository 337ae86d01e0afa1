//! Reading configuration text: TOML syntax and type errors become
//! [`ConfigError`]s with file, line, column and field path, then
//! [`crate::validate_with`] adds the semantic checks.

use crate::error::{ConfigError, ConfigErrors};
use crate::locate::{guess_path, Locator};
use crate::schema::Config;
use crate::validate::{validate_with, Environment};
use std::path::Path;

/// Parses and validates `text` against this machine; `file` names it in
/// error messages. See [`parse_with`].
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    parse_with(text, file, &Environment::current())
}

/// Parses `text` and validates it assuming the machine `env`.
///
/// A TOML syntax or type error (including an unknown key, a missing
/// required key, or a malformed address) stops parsing and is returned
/// alone; otherwise all semantic problems are returned together.
pub fn parse_with(text: &str, file: &str, env: &Environment) -> Result<Config, ConfigErrors> {
    let cfg: Config =
        toml::from_str(text).map_err(|e| ConfigErrors(vec![from_toml(&e, text, file)]))?;
    validate_with(&cfg, text, file, env)?;
    Ok(cfg)
}

/// Reads, parses and validates the file at `path` against this machine.
/// An unreadable file is reported as an error at line 0.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, &Environment::current())
}

/// Reads, parses and validates the file at `path` assuming the machine `env`.
pub fn load_with(path: &Path, env: &Environment) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            field: "(file)".to_string(),
            problem: format!("cannot read the configuration file: {e}"),
            hint: "check the path and its permissions, and that it is UTF-8 text".to_string(),
        }])
    })?;
    parse_with(&text, &file, env)
}

/// Text between the first `start` and the following `end`.
fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)?;
    Some(&s[i..i + j])
}

/// Joins a table path and a key.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A toml message as one line.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

fn from_toml(e: &toml::de::Error, text: &str, file: &str) -> ConfigError {
    let loc = Locator::new(text);
    let msg = e.message().trim();
    let offset = e.span().map(|s| s.start);
    let (line, column) = offset.map_or((1, 1), |o| loc.position(o));
    let path_here = || offset.and_then(|o| loc.path_at(o)).unwrap_or_default();

    let (field, problem, hint) = if let Some(name) = between(msg, "unknown field `", "`") {
        let here = path_here();
        let field = if here == name || here.ends_with(&format!(".{name}")) {
            here
        } else {
            join(&here, name)
        };
        let allowed = msg
            .split_once("expected ")
            .map(|(_, rest)| rest.trim_start_matches("one of ").replace('`', ""))
            .unwrap_or_default();
        let hint = if allowed.is_empty() || allowed == "nothing" {
            "remove it or fix its spelling (see docs/configuration.md)".to_string()
        } else {
            format!("remove it or fix its spelling; keys allowed here: {allowed}")
        };
        (field, format!("unknown key `{name}`"), hint)
    } else if let Some(name) = between(msg, "missing field `", "`") {
        let field = join(&path_here(), name);
        let place = if field.contains('.') {
            "to this table"
        } else {
            "to the file"
        };
        let hint = format!("add it {place}, as {}", example_for(&field));
        (field, format!("required key `{name}` is missing"), hint)
    } else if let Some(o) = offset.filter(|_| toml_edit::ImDocument::parse(text).is_err()) {
        (
            guess_path(text, o),
            format!("TOML syntax error: {}", one_line(msg)),
            "fix the TOML syntax here: strings need double quotes, tables are written [name], arrays of tables [[name]], and each key may appear once per table".to_string(),
        )
    } else {
        let field = offset
            .and_then(|o| loc.path_at(o))
            .unwrap_or_else(|| "(document)".to_string());
        let hint = format!("write {}", example_for(&field));
        let mut problem = one_line(msg);
        // Quote the offending value when the message does not already.
        if let Some(snippet) = e.span().and_then(|s| text.get(s)) {
            let snippet = snippet.trim();
            let bare = snippet.trim_matches(|c| c == '"' || c == '\'');
            if !bare.is_empty()
                && snippet.len() <= 60
                && !snippet.contains('\n')
                && !problem.contains(bare)
            {
                problem = format!("{problem} (found {snippet})");
            }
        }
        (field, problem, hint)
    };
    ConfigError {
        file: file.to_string(),
        line,
        column,
        field,
        problem,
        hint,
    }
}

/// What a value of the field at `path` looks like, for hints.
fn example_for(path: &str) -> String {
    let leaf = path.rsplit('.').next().unwrap_or(path);
    let leaf = leaf.split('[').next().unwrap_or(leaf);
    let in_port = path.starts_with("port[") || path == "port";
    let s = match leaf {
        "eal" => "an [eal] table with at least worker_cores = [1]",
        "main_core" => "an lcore id, e.g. main_core = 0",
        "worker_cores" => "a list of lcore ids, e.g. worker_cores = [1, 2]",
        "memory_mb" => "a whole number of MiB, e.g. memory_mb = 1024",
        "hugepages" => "true or false, e.g. hugepages = true",
        "file_prefix" => "a string, e.g. file_prefix = \"sluice\"",
        "extra_args" => "a list of strings, e.g. extra_args = [\"--no-pci\"]",
        "socket" => "an absolute path string, e.g. socket = \"/run/sluice/sluiced.sock\"",
        "capacity_per_worker" => "a whole number of flows, e.g. capacity_per_worker = 1048576",
        "syn_timeout_s" | "established_timeout_s" | "closing_timeout_s" | "udp_timeout_s" => {
            "a whole number of seconds, e.g. 30"
        }
        "event_ring_size" => "a power of two, e.g. event_ring_size = 65536",
        "table_size" => "a prime number, e.g. table_size = 65537",
        "name" => "a string, e.g. name = \"client0\"",
        "pci" => "a PCI address string, e.g. pci = \"0000:01:00.0\"",
        "vdev" => "a DPDK devargs string, e.g. vdev = \"net_af_packet0,iface=eth1\"",
        "role" => "one of \"client\", \"backend\" or \"both\", e.g. role = \"client\"",
        "address" if in_port => {
            "the port address with prefix length, e.g. address = \"198.18.1.254/24\""
        }
        "address" => "an IPv4 address string, e.g. address = \"198.18.100.1\"",
        "mac" => "a MAC address string, e.g. mac = \"02:00:00:00:00:01\"",
        "gateway" => "an IPv4 address string, e.g. gateway = \"198.18.1.1\"",
        "port" => "a port number from 1 to 65535, e.g. port = 80",
        "protocol" => "\"tcp\" or \"udp\", e.g. protocol = \"tcp\"",
        "mode" => "\"nat\" or \"dr\", e.g. mode = \"nat\"",
        "weight" => "a whole number from 0 to 65535, e.g. weight = 1",
        "egress" => "the name of a backend-facing port, e.g. egress = \"back0\"",
        "backend" => "[[vip.backend]] tables, each with at least address = \"198.18.2.11\"",
        "vip" => "[[vip]] tables with address, port, protocol and mode",
        _ => "a value of the type given in docs/configuration.md",
    };
    s.to_string()
}
