//! The engine's configuration file (TOML), checked at start: an unknown key, a missing one or
//! a bad value is reported with its key and line, and nothing starts.
//!
//! ```toml
//! server_id = "dms1.example"          # this server's ServerID
//! data_dir = "/var/lib/dmdeleg"       # optional; the platform's data directory otherwise
//!
//! [devices]                           # the device endpoint
//! listen = "0.0.0.0:8443"
//! path = "/dm"                        # optional, default /dm
//! max_msg_size = 65536                # optional
//! tls_cert = "/etc/dmdeleg/dms1.pem"  # optional: HTTPS when both are given
//! tls_key = "/etc/dmdeleg/dms1.key"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TOML is invalid, or a key is unknown, missing or of the wrong type (the message
    /// names the key and the line).
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What and where.
        reason: String,
    },
}

/// The device endpoint's settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DevicesSection {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// URL path devices post to.
    #[serde(default = "default_path")]
    pub path: String,
    /// Largest message accepted.
    #[serde(default = "default_max_msg")]
    pub max_msg_size: u64,
    /// Server certificate (PEM) for HTTPS.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

fn default_path() -> String {
    "/dm".to_owned()
}

fn default_max_msg() -> u64 {
    65_536
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This server's ServerID.
    pub server_id: String,
    /// Where the database lives.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The device endpoint.
    pub devices: DevicesSection,
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Config::parse(&text).map_err(|reason| ConfigError::Invalid {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if cfg.server_id.trim().is_empty() || !crate::dm::acl::is_valid_server_id(&cfg.server_id) {
            return Err(format!(
                "server_id `{}` is not a valid ServerID (no spaces or = & * +)",
                cfg.server_id
            ));
        }
        if !cfg.devices.path.starts_with('/') {
            return Err(format!(
                "devices.path `{}` must start with /",
                cfg.devices.path
            ));
        }
        if cfg.devices.tls_cert.is_some() != cfg.devices.tls_key.is_some() {
            return Err("devices.tls_cert and devices.tls_key go together".to_owned());
        }
        Ok(cfg)
    }

    /// The data directory: the configured one, else the platform's (e.g.
    /// `~/.local/share/dmdeleg`).
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }
}

/// The platform's data directory for dmdeleg, or `./dmdeleg-data` when none is known.
pub fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("org", "dmdeleg", "dmdeleg")
        .map(|d| d.data_dir().to_owned())
        .unwrap_or_else(|| PathBuf::from("dmdeleg-data"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_file_parses_and_errors_name_the_key_and_line() {
        let good = "server_id = \"dms1.example\"\n[devices]\nlisten = \"127.0.0.1:8080\"\n";
        let cfg = Config::parse(good).unwrap();
        assert_eq!(cfg.devices.path, "/dm");
        let unknown = format!("{good}colour = \"blue\"\n");
        let err = Config::parse(&unknown).unwrap_err();
        assert!(err.contains("colour") && err.contains("line 4"), "{err}");
        let bad_addr = "server_id = \"x\"\n[devices]\nlisten = \"nowhere\"\n";
        let err = Config::parse(bad_addr).unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        let missing = "server_id = \"x\"\n";
        assert!(Config::parse(missing).unwrap_err().contains("devices"));
        let bad_id = "server_id = \"a b\"\n[devices]\nlisten = \"127.0.0.1:1\"\n";
        assert!(Config::parse(bad_id).unwrap_err().contains("server_id"));
    }
}
