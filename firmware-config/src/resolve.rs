//! Resolved views of the configuration used by the daemon.

use crate::schema::{Backend, Config, Vip};

impl Backend {
    /// The backend's port: `port` if given, else the VIP's port.
    pub fn port_or(&self, vip_port: u16) -> u16 {
        self.port.unwrap_or(vip_port)
    }
}

impl Vip {
    /// The operator's `name`, or [`Vip::service`].
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self.service(),
        }
    }

    /// `address:port/protocol` (`198.18.100.1:80/tcp`): what identifies the
    /// VIP whatever its name.
    pub fn service(&self) -> String {
        format!("{}:{}/{}", self.address, self.port, self.protocol)
    }
}

impl Config {
    /// Index into `ports` of the port that reaches backend `b`: the port named
    /// by `b.egress`; else the first backend-facing port whose prefix
    /// contains `b.address`; else the first backend-facing port. `None` if
    /// `egress` names no port or no port faces backends.
    pub fn egress_port_index(&self, b: &Backend) -> Option<usize> {
        if let Some(name) = &b.egress {
            return self.ports.iter().position(|p| &p.name == name);
        }
        self.ports
            .iter()
            .position(|p| p.role.faces_backends() && p.address.contains(b.address))
            .or_else(|| self.ports.iter().position(|p| p.role.faces_backends()))
    }

    /// Indices into `ports` of the client-facing ports (role `client` or `both`).
    pub fn client_port_indices(&self) -> Vec<usize> {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.role.faces_clients())
            .map(|(i, _)| i)
            .collect()
    }

    /// Indices into `ports` of the backend-facing ports (role `backend` or `both`).
    pub fn backend_port_indices(&self) -> Vec<usize> {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.role.faces_backends())
            .map(|(i, _)| i)
            .collect()
    }

    /// The configuration as TOML text; [`crate::parse`] reads it back to an
    /// equal `Config` (comments and layout of the original are not kept).
    pub fn to_toml(&self) -> String {
        // Every field is a string, integer, bool, table or array of those,
        // so serialization cannot fail.
        toml::to_string(self).expect("Config always serializes to TOML")
    }
}
