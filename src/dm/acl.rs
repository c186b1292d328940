//! Access control lists of DM tree nodes: parse, format and evaluate.
//!
//! Grammar (OMA DM 1.2 TND 8.3.7.1.5): `acl := entry ("&" entry)*`, `entry := cmd "=" ids`,
//! `ids := id ("+" id)*`, `cmd` one of Add, Delete, Exec, Get, Replace. An `id` is `*` (any
//! server) or a ServerID of printable, non-space characters other than `= & * +`. An entry with
//! no ids is illegal, so a command nobody holds is simply absent. The empty string is the empty
//! ACL, which inherits the nearest ancestor's ACL as a whole (the tree applies that rule).
//!
//! An [`Acl`] keeps at most one entry per command, in canonical order; [`Acl::to_string`] writes
//! `Add`, `Delete`, `Exec`, `Get`, `Replace` in that order and ids in the order first seen.

use std::fmt;
use std::str::FromStr;

/// A command an ACL grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AclCmd {
    /// Add a child node.
    Add,
    /// Delete the node.
    Delete,
    /// Execute the node.
    Exec,
    /// Read the node.
    Get,
    /// Replace the node's value or properties.
    Replace,
}

impl AclCmd {
    /// Every command, in canonical order.
    pub const ALL: [AclCmd; 5] = [
        AclCmd::Add,
        AclCmd::Delete,
        AclCmd::Exec,
        AclCmd::Get,
        AclCmd::Replace,
    ];

    /// The command's name in ACL text.
    pub fn as_str(self) -> &'static str {
        match self {
            AclCmd::Add => "Add",
            AclCmd::Delete => "Delete",
            AclCmd::Exec => "Exec",
            AclCmd::Get => "Get",
            AclCmd::Replace => "Replace",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for AclCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AclCmd {
    type Err = AclError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AclCmd::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| AclError::UnknownCommand {
                command: s.chars().take(64).collect(),
                offset: 0,
            })
    }
}

/// Why an ACL string was refused. Offsets are byte offsets into the ACL text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AclError {
    /// An entry has no `=`.
    #[error("ACL entry at byte {offset} has no `=`")]
    MissingEquals {
        /// Where the entry starts.
        offset: usize,
    },
    /// An entry is empty (`&&`, or a leading or trailing `&`).
    #[error("ACL has an empty entry at byte {offset}")]
    EmptyEntry {
        /// Where the empty entry is.
        offset: usize,
    },
    /// The command is not Add, Delete, Exec, Get or Replace.
    #[error(
        "ACL command `{command}` at byte {offset} is not one of Add, Delete, Exec, Get, Replace"
    )]
    UnknownCommand {
        /// The command text.
        command: String,
        /// Where it starts.
        offset: usize,
    },
    /// A command has no server ids (`Get=`), which the grammar forbids.
    #[error("ACL command `{command}` at byte {offset} has no server id")]
    NoIds {
        /// The command.
        command: AclCmd,
        /// Where the entry starts.
        offset: usize,
    },
    /// An id is empty (`Get=A++B`).
    #[error("ACL has an empty server id at byte {offset}")]
    EmptyId {
        /// Where the empty id is.
        offset: usize,
    },
    /// An id holds a character ids may not contain.
    #[error("ACL server id at byte {offset} contains the character {ch:?}")]
    InvalidIdChar {
        /// Where the id starts.
        offset: usize,
        /// The character.
        ch: char,
    },
    /// A ServerID handed to an ACL operation is not a valid id.
    #[error("`{id}` is not a valid ServerID for an ACL")]
    InvalidServerId {
        /// The id (shortened).
        id: String,
    },
}

/// True when `id` may stand in an ACL as a ServerID.
pub fn is_valid_server_id(id: &str) -> bool {
    !id.is_empty() && first_invalid_id_char(id).is_none()
}

fn first_invalid_id_char(id: &str) -> Option<char> {
    id.chars()
        .find(|c| matches!(c, '=' | '&' | '*' | '+') || c.is_whitespace() || c.is_control())
}

/// Who holds one command: any server, or a list of named servers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AclIds {
    /// `*`: every server.
    Any,
    /// Named servers; never empty, no duplicates.
    Servers(Vec<String>),
}

impl AclIds {
    /// True when `server` is granted.
    pub fn grants(&self, server: &str) -> bool {
        match self {
            AclIds::Any => true,
            AclIds::Servers(ids) => ids.iter().any(|id| id == server),
        }
    }
}

/// An ACL: for each command, who holds it. The empty ACL inherits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Acl {
    entries: [Option<AclIds>; 5],
}

impl Acl {
    /// The empty ACL (inherits its ancestor's).
    pub fn empty() -> Acl {
        Acl::default()
    }

    /// `Add=*&Get=*`, the default root ACL the spec recommends.
    pub fn default_root() -> Acl {
        let mut acl = Acl::empty();
        acl.entries[AclCmd::Add.index()] = Some(AclIds::Any);
        acl.entries[AclCmd::Get.index()] = Some(AclIds::Any);
        acl
    }

    /// Grants every command in `cmds` to `server`.
    pub fn for_server(server: &str, cmds: &[AclCmd]) -> Result<Acl, AclError> {
        let mut acl = Acl::empty();
        for cmd in cmds {
            acl.grant(*cmd, server)?;
        }
        Ok(acl)
    }

    /// Parses ACL text; the empty string is the empty ACL. Repeated commands are merged,
    /// repeated ids dropped, and a `*` among ids makes the command `Any`.
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        let mut acl = Acl::empty();
        if text.is_empty() {
            return Ok(acl);
        }
        let mut offset = 0;
        for entry in text.split('&') {
            let entry_offset = offset;
            offset += entry.len() + 1;
            if entry.is_empty() {
                return Err(AclError::EmptyEntry {
                    offset: entry_offset,
                });
            }
            let (cmd_text, ids_text) = entry.split_once('=').ok_or(AclError::MissingEquals {
                offset: entry_offset,
            })?;
            let cmd = AclCmd::from_str(cmd_text).map_err(|_| AclError::UnknownCommand {
                command: cmd_text.chars().take(64).collect(),
                offset: entry_offset,
            })?;
            if ids_text.is_empty() {
                return Err(AclError::NoIds {
                    command: cmd,
                    offset: entry_offset,
                });
            }
            let mut id_offset = entry_offset + cmd_text.len() + 1;
            for id in ids_text.split('+') {
                let this_offset = id_offset;
                id_offset += id.len() + 1;
                if id.is_empty() {
                    return Err(AclError::EmptyId {
                        offset: this_offset,
                    });
                }
                if id == "*" {
                    acl.entries[cmd.index()] = Some(AclIds::Any);
                    continue;
                }
                if let Some(ch) = first_invalid_id_char(id) {
                    return Err(AclError::InvalidIdChar {
                        offset: this_offset,
                        ch,
                    });
                }
                acl.add_id(cmd, id);
            }
        }
        Ok(acl)
    }

    fn add_id(&mut self, cmd: AclCmd, id: &str) {
        match &mut self.entries[cmd.index()] {
            Some(AclIds::Any) => {}
            Some(AclIds::Servers(ids)) => {
                if !ids.iter().any(|x| x == id) {
                    ids.push(id.to_owned());
                }
            }
            slot @ None => *slot = Some(AclIds::Servers(vec![id.to_owned()])),
        }
    }

    /// True when no command is listed: the node inherits its ancestor's ACL.
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(Option::is_none)
    }

    /// Who holds `cmd`, if anyone.
    pub fn ids(&self, cmd: AclCmd) -> Option<&AclIds> {
        self.entries[cmd.index()].as_ref()
    }

    /// True when `server` holds `cmd` under this ACL (ignoring inheritance).
    pub fn allows(&self, cmd: AclCmd, server: &str) -> bool {
        self.ids(cmd).is_some_and(|ids| ids.grants(server))
    }

    /// Sets who holds `cmd` (`None` drops the command).
    pub fn set(&mut self, cmd: AclCmd, ids: Option<AclIds>) {
        self.entries[cmd.index()] = match ids {
            Some(AclIds::Servers(v)) if v.is_empty() => None,
            other => other,
        };
    }

    /// Grants `cmd` to `server` (no change when already held, by name or by `*`).
    pub fn grant(&mut self, cmd: AclCmd, server: &str) -> Result<(), AclError> {
        if !is_valid_server_id(server) {
            return Err(AclError::InvalidServerId {
                id: server.chars().take(64).collect(),
            });
        }
        self.add_id(cmd, server);
        Ok(())
    }

    /// Removes `server` from `cmd`'s named ids; a command left with no id is dropped.
    /// `*` is left alone: it grants every server, which no single removal changes.
    /// Returns true when something changed.
    pub fn revoke(&mut self, cmd: AclCmd, server: &str) -> bool {
        let slot = &mut self.entries[cmd.index()];
        if let Some(AclIds::Servers(ids)) = slot {
            let before = ids.len();
            ids.retain(|id| id != server);
            let changed = ids.len() != before;
            if ids.is_empty() {
                *slot = None;
            }
            return changed;
        }
        false
    }

    /// Removes `server` from every command (the rule for deleting a ServerID, TND 8.3.7.1.4).
    /// With `is_root`, a command left with no id becomes `*` instead of being dropped.
    pub fn remove_server(&mut self, server: &str, is_root: bool) -> bool {
        let mut changed = false;
        for cmd in AclCmd::ALL {
            let slot = &mut self.entries[cmd.index()];
            if let Some(AclIds::Servers(ids)) = slot {
                let before = ids.len();
                ids.retain(|id| id != server);
                if ids.len() != before {
                    changed = true;
                    if ids.is_empty() {
                        *slot = if is_root { Some(AclIds::Any) } else { None };
                    }
                }
            }
        }
        changed
    }

    /// Every named server id appearing in the ACL, without duplicates.
    pub fn servers(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for ids in self.entries.iter().flatten() {
            if let AclIds::Servers(v) = ids {
                for id in v {
                    if !out.contains(&id.as_str()) {
                        out.push(id);
                    }
                }
            }
        }
        out
    }

    /// The commands `server` holds here (by name or by `*`).
    pub fn commands_of(&self, server: &str) -> Vec<AclCmd> {
        AclCmd::ALL
            .into_iter()
            .filter(|c| self.allows(*c, server))
            .collect()
    }
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for cmd in AclCmd::ALL {
            let Some(ids) = &self.entries[cmd.index()] else {
                continue;
            };
            if !first {
                f.write_str("&")?;
            }
            first = false;
            f.write_str(cmd.as_str())?;
            f.write_str("=")?;
            match ids {
                AclIds::Any => f.write_str("*")?,
                AclIds::Servers(v) => {
                    for (i, id) in v.iter().enumerate() {
                        if i > 0 {
                            f.write_str("+")?;
                        }
                        f.write_str(id)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl FromStr for Acl {
    type Err = AclError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Acl::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example() {
        let acl = Acl::parse("Add=*&Get=ServerA+ServerB&Replace=ServerA").unwrap();
        assert!(acl.allows(AclCmd::Add, "anyone"));
        assert!(acl.allows(AclCmd::Get, "ServerB"));
        assert!(!acl.allows(AclCmd::Replace, "ServerB"));
        assert!(!acl.allows(AclCmd::Delete, "ServerA"));
        assert_eq!(acl.to_string(), "Add=*&Get=ServerA+ServerB&Replace=ServerA");
    }

    #[test]
    fn canonical_order_and_merging() {
        let acl = Acl::parse("Replace=B&Get=A&Get=B+A&Add=X+*").unwrap();
        assert_eq!(acl.to_string(), "Add=*&Get=A+B&Replace=B");
    }

    #[test]
    fn refuses_malformed() {
        assert!(matches!(Acl::parse("Get="), Err(AclError::NoIds { .. })));
        assert!(matches!(
            Acl::parse("Get=A&"),
            Err(AclError::EmptyEntry { offset: 6 })
        ));
        assert!(matches!(
            Acl::parse("Copy=A"),
            Err(AclError::UnknownCommand { .. })
        ));
        assert!(matches!(
            Acl::parse("Get"),
            Err(AclError::MissingEquals { offset: 0 })
        ));
        assert!(matches!(
            Acl::parse("Get=A++B"),
            Err(AclError::EmptyId { offset: 6 })
        ));
        assert!(matches!(
            Acl::parse("Get=A B"),
            Err(AclError::InvalidIdChar { ch: ' ', .. })
        ));
        assert!(matches!(
            Acl::parse("Get=A=B"),
            Err(AclError::InvalidIdChar { ch: '=', .. })
        ));
        assert!(matches!(
            Acl::parse("get=A"),
            Err(AclError::UnknownCommand { .. })
        ));
    }

    #[test]
    fn removing_a_server() {
        let mut acl = Acl::parse("Get=A+B&Replace=A").unwrap();
        assert!(acl.remove_server("A", false));
        assert_eq!(acl.to_string(), "Get=B");
        let mut root = Acl::parse("Add=*&Get=A&Replace=A+B").unwrap();
        root.remove_server("A", true);
        assert_eq!(root.to_string(), "Add=*&Get=*&Replace=B");
        let mut last = Acl::parse("Get=A").unwrap();
        last.remove_server("A", false);
        assert!(last.is_empty());
    }

    #[test]
    fn grant_and_revoke() {
        let mut acl = Acl::empty();
        acl.grant(AclCmd::Get, "dms2").unwrap();
        acl.grant(AclCmd::Get, "dms2").unwrap();
        assert_eq!(acl.to_string(), "Get=dms2");
        assert!(acl.grant(AclCmd::Get, "bad id").is_err());
        assert!(acl.revoke(AclCmd::Get, "dms2"));
        assert!(acl.is_empty());
    }
}
