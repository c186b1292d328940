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
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

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
    if id.is_ascii() {
        // The same test on bytes: an ASCII character is whitespace or a control exactly when
        // it is one of these.
        return id
            .bytes()
            .find(|&b| b <= b' ' || b == 0x7F || matches!(b, b'=' | b'&' | b'*' | b'+'))
            .map(char::from);
    }
    id.chars()
        .find(|c| matches!(c, '=' | '&' | '*' | '+') || c.is_whitespace() || c.is_control())
}

/// True when `text` is a valid ACL already in its canonical form (what [`Acl::parse`] would
/// write back): commands in [`AclCmd::ALL`] order, each once, with `*` alone or distinct valid
/// ids. The tests' statement of the form; [`canonical_ids_at`] is the one pass that parsing
/// uses.
#[cfg(test)]
fn is_canonical(text: &str) -> bool {
    let mut next_cmd = 0;
    for entry in text.split('&') {
        let Some((cmd_text, ids_text)) = entry.split_once('=') else {
            return false;
        };
        let Some(pos) = AclCmd::ALL[next_cmd..]
            .iter()
            .position(|c| c.as_str() == cmd_text)
        else {
            return false;
        };
        next_cmd += pos + 1;
        if ids_text == "*" {
            continue;
        }
        for (seen, id) in ids_text.split('+').enumerate() {
            if id.is_empty()
                || first_invalid_id_char(id).is_some()
                || ids_text.split('+').take(seen).any(|earlier| earlier == id)
            {
                return false;
            }
        }
    }
    true
}

/// For a valid ACL already in its canonical form (what [`Acl::parse`] would write back:
/// commands in [`AclCmd::ALL`] order, each once, with `*` alone or distinct valid ids), where
/// each command's ids start, as [`Acl::ids_at`] keeps them; `None` for any other text.
/// Listings written by devices (and by this crate) are in this form, so parsing them need not
/// rebuild the text, and one pass over it both checks the form and finds the offsets.
fn canonical_ids_at(text: &str) -> Option<[u8; 5]> {
    let bytes = text.as_bytes();
    let mut ids_at = [0u8; 5];
    let mut next_cmd = 0;
    let mut start = 0;
    loop {
        // Every split below is at an ASCII byte, so the `str` slices are whole characters.
        let rest = bytes.get(start..)?;
        let len = rest.iter().position(|&b| b == b'&').unwrap_or(rest.len());
        let entry = rest.get(..len)?;
        let eq = entry.iter().position(|&b| b == b'=')?;
        let cmd_text = entry.get(..eq)?;
        let pos = AclCmd::ALL
            .get(next_cmd..)?
            .iter()
            .position(|c| c.as_str().as_bytes() == cmd_text)?;
        let cmd = AclCmd::ALL.get(next_cmd + pos).copied()?;
        next_cmd += pos + 1;
        let at = start + eq + 1;
        ids_at[cmd.index()] = ids_offset(at);
        let ids = text.get(at..start + len)?;
        if ids != "*" && !distinct_valid_ids(ids) {
            return None;
        }
        if len == rest.len() {
            return Some(ids_at);
        }
        start += len + 1;
    }
}

/// Whether `ids` (a command's ids, without `*`) are `+`-separated valid ids, none twice.
fn distinct_valid_ids(ids: &str) -> bool {
    ids.split('+').enumerate().all(|(n, id)| {
        !id.is_empty()
            && first_invalid_id_char(id).is_none()
            && !ids.split('+').take(n).any(|earlier| earlier == id)
    })
}

/// [`Acl::ids_at`]'s byte for ids that start at `at` in the text.
fn ids_offset(at: usize) -> u8 {
    u8::try_from(at)
        .ok()
        .filter(|a| *a != IDS_AT_FAR)
        .unwrap_or(IDS_AT_FAR)
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

/// For each command (in [`AclCmd::ALL`] order), who holds it: the structured form of an ACL.
type Entries = [Option<AclIds>; 5];

/// An ACL: for each command, who holds it. The empty ACL inherits.
///
/// Held as its canonical text (the [`fmt::Display`] form), shared between clones: trees hold
/// thousands of ACLs, most of them copies of a few, and checking a right scans a few dozen
/// bytes. The structured form [`Acl::ids`] hands out references into is built on first use.
#[derive(Clone, Default)]
pub struct Acl {
    /// The canonical text; `None` for the empty ACL. Ids are valid ServerIDs, so `&`, `=`
    /// and `+` only ever separate.
    text: Option<Arc<str>>,
    /// For each command, where its ids start in `text`: 0 when nobody holds it,
    /// [`IDS_AT_FAR`] when beyond what a byte holds (then the text is scanned).
    ids_at: [u8; 5],
    /// The structured form, for [`Acl::ids`]; not carried over by clones.
    parsed: OnceLock<Box<Entries>>,
}

/// `Acl::ids_at` of ids that start too far into the text to say.
const IDS_AT_FAR: u8 = u8::MAX;

impl PartialEq for Acl {
    fn eq(&self, other: &Acl) -> bool {
        self.text == other.text
    }
}

impl Eq for Acl {}

impl Hash for Acl {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Debug for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Acl").field(&self.as_str()).finish()
    }
}

impl Acl {
    /// The empty ACL (inherits its ancestor's).
    pub fn empty() -> Acl {
        Acl::default()
    }

    /// `Add=*&Get=*`, the default root ACL the spec recommends.
    pub fn default_root() -> Acl {
        Acl::from_canonical("Add=*&Get=*")
    }

    /// An ACL from text already in canonical form.
    fn from_canonical(text: &str) -> Acl {
        let mut ids_at = [0u8; 5];
        let mut start = 0;
        for entry in text.split('&') {
            if let Some((cmd, _)) = entry.split_once('=')
                && let Some(cmd) = AclCmd::ALL.into_iter().find(|c| c.as_str() == cmd)
            {
                ids_at[cmd.index()] = ids_offset(start + cmd.as_str().len() + 1);
            }
            start += entry.len() + 1;
        }
        Acl::with_offsets(text, ids_at)
    }

    /// An ACL from canonical `text` and where its commands' ids start.
    fn with_offsets(text: &str, ids_at: [u8; 5]) -> Acl {
        Acl {
            text: (!text.is_empty()).then(|| Arc::from(text)),
            ids_at,
            parsed: OnceLock::new(),
        }
    }

    /// An ACL from its structured form.
    fn from_entries(entries: &Entries) -> Acl {
        let mut text = String::new();
        for cmd in AclCmd::ALL {
            let Some(ids) = &entries[cmd.index()] else {
                continue;
            };
            if !text.is_empty() {
                text.push('&');
            }
            text.push_str(cmd.as_str());
            text.push('=');
            match ids {
                AclIds::Any => text.push('*'),
                AclIds::Servers(v) => {
                    for (i, id) in v.iter().enumerate() {
                        if i > 0 {
                            text.push('+');
                        }
                        text.push_str(id);
                    }
                }
            }
        }
        Acl::from_canonical(&text)
    }

    /// The structured form, read from the canonical text.
    fn entries(&self) -> Entries {
        let mut entries = Entries::default();
        for (cmd, ids) in self.raw_entries() {
            entries[cmd.index()] = Some(if ids == "*" {
                AclIds::Any
            } else {
                AclIds::Servers(ids.split('+').map(str::to_owned).collect())
            });
        }
        entries
    }

    /// The (command, ids text) pairs of the canonical text.
    fn raw_entries(&self) -> impl Iterator<Item = (AclCmd, &str)> {
        self.as_str().split('&').filter_map(|entry| {
            let (cmd, ids) = entry.split_once('=')?;
            let cmd = AclCmd::ALL.into_iter().find(|c| c.as_str() == cmd)?;
            Some((cmd, ids))
        })
    }

    /// The text from where `cmd`'s ids start (they end at the next `&`), if anyone holds it.
    #[inline]
    fn ids_and_rest(&self, cmd: AclCmd) -> Option<&str> {
        let text = self.text.as_deref()?;
        match self.ids_at[cmd.index()] {
            0 => None,
            IDS_AT_FAR => self.scan_ids(cmd),
            at => text.get(usize::from(at)..),
        }
    }

    /// The ids text (`*` or ids joined by `+`) of `cmd`, if anyone holds it.
    fn raw_ids(&self, cmd: AclCmd) -> Option<&str> {
        let rest = self.ids_and_rest(cmd)?;
        // Ids hold no `&`: the entry ends at the next one.
        let end = rest.bytes().position(|b| b == b'&').unwrap_or(rest.len());
        rest.get(..end)
    }

    /// [`Acl::ids_and_rest`] the slow way, for an entry far into a long text.
    fn scan_ids(&self, cmd: AclCmd) -> Option<&str> {
        let text = self.as_str();
        let mut start = 0;
        for entry in text.split('&') {
            if entry
                .split_once('=')
                .is_some_and(|(c, _)| c == cmd.as_str())
            {
                return text.get(start + cmd.as_str().len() + 1..);
            }
            start += entry.len() + 1;
        }
        None
    }

    /// The canonical text (what [`fmt::Display`] writes); empty for the empty ACL.
    pub fn as_str(&self) -> &str {
        self.text.as_deref().unwrap_or("")
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
        if text.is_empty() {
            return Ok(Acl::empty());
        }
        if let Some(ids_at) = canonical_ids_at(text) {
            return Ok(Acl::with_offsets(text, ids_at));
        }
        Acl::parse_any(text)
    }

    /// [`Acl::parse`] for any text but the empty one: each entry read into the structured
    /// form, which then writes the canonical text.
    fn parse_any(text: &str) -> Result<Acl, AclError> {
        let mut entries = Entries::default();
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
                    entries[cmd.index()] = Some(AclIds::Any);
                    continue;
                }
                if let Some(ch) = first_invalid_id_char(id) {
                    return Err(AclError::InvalidIdChar {
                        offset: this_offset,
                        ch,
                    });
                }
                add_id(&mut entries, cmd, id);
            }
        }
        Ok(Acl::from_entries(&entries))
    }

    /// True when no command is listed: the node inherits its ancestor's ACL.
    pub fn is_empty(&self) -> bool {
        self.text.is_none()
    }

    /// Who holds `cmd`, if anyone.
    pub fn ids(&self, cmd: AclCmd) -> Option<&AclIds> {
        self.parsed.get_or_init(|| Box::new(self.entries()))[cmd.index()].as_ref()
    }

    /// True when `server` holds `cmd` under this ACL (ignoring inheritance).
    #[inline]
    pub fn allows(&self, cmd: AclCmd, server: &str) -> bool {
        self.holds(cmd, server, true)
    }

    /// True when `cmd` names `server` itself (not through `*`): what
    /// `matches!(acl.ids(cmd), Some(AclIds::Servers(v)) if v.contains(server))` says, read
    /// from the text without building the structured form.
    #[inline]
    pub fn names(&self, cmd: AclCmd, server: &str) -> bool {
        self.holds(cmd, server, false)
    }

    /// Whether `cmd`'s ids hold `server`, `*` counting for everyone when `star` is true.
    #[inline]
    fn holds(&self, cmd: AclCmd, server: &str, star: bool) -> bool {
        let Some(rest) = self.ids_and_rest(cmd) else {
            return false;
        };
        let (ids, s) = (rest.as_bytes(), server.as_bytes());
        if ids.first() == Some(&b'*') {
            // `*` stands alone.
            return star;
        }
        // One pass over the ids, in place: does one of them, ended by `+`, `&` or the end,
        // equal `server`?
        let mut i = 0;
        loop {
            let end = i + s.len();
            if matches!(ids.get(end), None | Some(b'+' | b'&')) && ids.get(i..end) == Some(s) {
                // Ids hold no `+` or `&`, so a `server` with one only seemed to match.
                return !s.iter().any(|b| matches!(b, b'+' | b'&'));
            }
            match ids[i..].iter().position(|b| matches!(b, b'+' | b'&')) {
                Some(p) if ids[i + p] == b'+' => i += p + 1,
                _ => return false,
            }
        }
    }

    /// Sets who holds `cmd` (`None` drops the command). Named ids are kept in order without
    /// repeats; a `*` among them makes the command `Any`, and an id that cannot stand in an
    /// ACL (empty, or with a character ids may not hold) is dropped.
    pub fn set(&mut self, cmd: AclCmd, ids: Option<AclIds>) {
        let mut entries = self.entries();
        entries[cmd.index()] = match ids {
            Some(AclIds::Servers(v)) => {
                let mut slot = None;
                for id in &v {
                    if id == "*" {
                        slot = Some(AclIds::Any);
                    } else if is_valid_server_id(id) {
                        add_id_to(&mut slot, id);
                    }
                }
                slot
            }
            other => other,
        };
        *self = Acl::from_entries(&entries);
    }

    /// Grants `cmd` to `server` (no change when already held, by name or by `*`).
    pub fn grant(&mut self, cmd: AclCmd, server: &str) -> Result<(), AclError> {
        self.grant_all(&[cmd], server)
    }

    /// Grants each of `cmds` to `server`, as [`Acl::grant`] one by one would, with the ACL
    /// read and rewritten once.
    pub fn grant_all(&mut self, cmds: &[AclCmd], server: &str) -> Result<(), AclError> {
        if !is_valid_server_id(server) {
            return Err(AclError::InvalidServerId {
                id: server.chars().take(64).collect(),
            });
        }
        let missing = cmds.iter().filter(|&&c| !self.allows(c, server));
        if missing.clone().next().is_none() {
            return Ok(());
        }
        let mut entries = self.entries();
        for &cmd in missing {
            add_id(&mut entries, cmd, server);
        }
        *self = Acl::from_entries(&entries);
        Ok(())
    }

    /// Removes `server` from `cmd`'s named ids; a command left with no id is dropped.
    /// `*` is left alone: it grants every server, which no single removal changes.
    /// Returns true when something changed.
    pub fn revoke(&mut self, cmd: AclCmd, server: &str) -> bool {
        if !self
            .raw_ids(cmd)
            .is_some_and(|ids| ids.split('+').any(|id| id == server) && ids != "*")
        {
            return false;
        }
        let mut entries = self.entries();
        let slot = &mut entries[cmd.index()];
        if let Some(AclIds::Servers(ids)) = slot {
            ids.retain(|id| id != server);
            if ids.is_empty() {
                *slot = None;
            }
        }
        *self = Acl::from_entries(&entries);
        true
    }

    /// Removes `server` from every command (the rule for deleting a ServerID, TND 8.3.7.1.4).
    /// With `is_root`, a command left with no id becomes `*` instead of being dropped.
    pub fn remove_server(&mut self, server: &str, is_root: bool) -> bool {
        if !self.servers().contains(&server) {
            return false;
        }
        let mut entries = self.entries();
        for slot in &mut entries {
            if let Some(AclIds::Servers(ids)) = slot {
                let before = ids.len();
                ids.retain(|id| id != server);
                if ids.len() != before && ids.is_empty() {
                    *slot = if is_root { Some(AclIds::Any) } else { None };
                }
            }
        }
        *self = Acl::from_entries(&entries);
        true
    }

    /// Every named server id appearing in the ACL, without duplicates.
    pub fn servers(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (_, ids) in self.raw_entries() {
            for id in ids.split('+') {
                if id != "*" && !out.contains(&id) {
                    out.push(id);
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

/// Adds a named id to `cmd`'s entry (no change when `*` or the id is already there).
fn add_id(entries: &mut Entries, cmd: AclCmd, id: &str) {
    add_id_to(&mut entries[cmd.index()], id);
}

fn add_id_to(slot: &mut Option<AclIds>, id: &str) {
    match slot {
        Some(AclIds::Any) => {}
        Some(AclIds::Servers(ids)) => {
            if !ids.iter().any(|x| x == id) {
                ids.push(id.to_owned());
            }
        }
        None => *slot = Some(AclIds::Servers(vec![id.to_owned()])),
    }
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    fn rights_match_whole_ids_only() {
        let acl = Acl::parse("Get=dms1+dms&Replace=dms").unwrap();
        assert!(acl.allows(AclCmd::Get, "dms1"));
        assert!(acl.allows(AclCmd::Get, "dms"));
        assert!(!acl.allows(AclCmd::Get, "dms1+dms"));
        assert!(!acl.allows(AclCmd::Get, "dm"));
        assert!(!acl.allows(AclCmd::Get, "dms12"));
        assert!(!acl.allows(AclCmd::Get, ""));
        assert!(!acl.allows(AclCmd::Get, "*"));
        assert!(!acl.allows(AclCmd::Replace, "dms1"));
        assert!(!acl.allows(AclCmd::Add, "dms"));
        assert!(Acl::default_root().allows(AclCmd::Add, "*"));
        assert_eq!(acl.servers(), ["dms1", "dms"]);
        assert_eq!(acl.commands_of("dms"), [AclCmd::Get, AclCmd::Replace]);
    }

    #[test]
    fn a_long_acl_is_read_past_its_first_bytes() {
        let many: Vec<String> = (0..40).map(|i| format!("server-{i:02}.example")).collect();
        let text = format!("Add={}&Get=late&Replace=*", many.join("+"));
        let acl = Acl::parse(&text).unwrap();
        assert!(acl.as_str().len() > 255);
        assert!(acl.allows(AclCmd::Add, "server-39.example"));
        assert!(acl.allows(AclCmd::Get, "late"));
        assert!(!acl.allows(AclCmd::Get, "server-01.example"));
        assert!(acl.allows(AclCmd::Replace, "anyone"));
        assert_eq!(
            acl.ids(AclCmd::Get),
            Some(&AclIds::Servers(vec!["late".into()]))
        );
        assert_eq!(acl.ids(AclCmd::Replace), Some(&AclIds::Any));
        assert_eq!(acl.ids(AclCmd::Delete), None);
        let mut less = acl.clone();
        assert!(less.revoke(AclCmd::Get, "late"));
        assert_eq!(
            less.to_string(),
            format!("Add={}&Replace=*", many.join("+"))
        );
    }

    #[test]
    fn set_keeps_the_acl_canonical() {
        let mut acl = Acl::empty();
        acl.set(
            AclCmd::Get,
            Some(AclIds::Servers(vec![
                "b".into(),
                "a".into(),
                "b".into(),
                "bad id".into(),
            ])),
        );
        acl.set(
            AclCmd::Add,
            Some(AclIds::Servers(vec!["x".into(), "*".into()])),
        );
        acl.set(AclCmd::Delete, Some(AclIds::Servers(Vec::new())));
        assert_eq!(acl.to_string(), "Add=*&Get=b+a");
        assert_eq!(acl, Acl::parse("Get=b+a&Add=*").unwrap());
        assert_eq!(
            acl.ids(AclCmd::Get),
            Some(&AclIds::Servers(vec!["b".into(), "a".into()]))
        );
        acl.set(AclCmd::Get, None);
        acl.set(AclCmd::Add, None);
        assert!(acl.is_empty());
        assert_eq!(acl, Acl::empty());
    }

    #[test]
    fn granting_several_commands_at_once_is_granting_them_one_by_one() {
        for text in ["", "Get=*", "Add=a+b&Get=b", "Delete=b&Exec=a&Replace=*"] {
            let base = Acl::parse(text).unwrap();
            let cmds = [AclCmd::Add, AclCmd::Get, AclCmd::Replace];
            let mut one_by_one = base.clone();
            for c in cmds {
                one_by_one.grant(c, "b").unwrap();
            }
            let mut at_once = base.clone();
            at_once.grant_all(&cmds, "b").unwrap();
            assert_eq!(at_once.to_string(), one_by_one.to_string(), "{text}");
        }
        assert!(Acl::default().grant_all(&[AclCmd::Get], "a b").is_err());
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

    mod canonical {
        use super::super::*;
        use proptest::prelude::*;

        /// ACL-like text: real and unknown commands in any order and number, ids with
        /// duplicates, `*`, empty pieces, ASCII and Unicode whitespace and controls.
        fn acl_like() -> impl Strategy<Value = String> {
            let id = prop_oneof![
                6 => prop::sample::select(vec!["dms1", "dms2", "srv.example", "a", "é"]),
                1 => prop::sample::select(vec![
                    "*", "", " x", "x\t", "a\u{85}", "b\u{a0}", "c\u{7f}", "d=e", "z\u{2028}",
                ]),
            ];
            let cmd = prop_oneof![
                8 => prop::sample::select(vec!["Add", "Delete", "Exec", "Get", "Replace"]),
                1 => prop::sample::select(vec!["Copy", "get", ""]),
            ];
            let entry = (cmd, prop::collection::vec(id, 0..4))
                .prop_map(|(c, ids)| format!("{c}={}", ids.join("+")));
            prop_oneof![
                8 => prop::collection::vec(entry, 1..6).prop_map(|e| e.join("&")),
                1 => "[A-Za-z=&+* ]{0,20}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

            /// The fast path for canonical text gives what reading the entries gives, and
            /// takes only text that reads back as itself.
            #[test]
            fn canonical_text_parses_as_the_entries_do(text in acl_like()) {
                // (The empty text is the empty ACL before either path.)
                let slow = if text.is_empty() { Ok(Acl::empty()) } else { Acl::parse_any(&text) };
                prop_assert_eq!(Acl::parse(&text), slow.clone());
                if !text.is_empty() && is_canonical(&text) {
                    prop_assert_eq!(slow.map(|a| a.as_str().to_owned()), Ok(text.clone()));
                }
                if let Ok(acl) = Acl::parse(&text) {
                    prop_assert!(is_canonical(acl.as_str()) || acl.is_empty());
                }
            }

            /// The one pass that parsing uses takes exactly the canonical texts, and finds
            /// the offsets the canonical reading finds.
            #[test]
            fn canonical_ids_at_agrees_with_the_canonical_form(text in acl_like()) {
                let expected = (!text.is_empty() && is_canonical(&text))
                    .then(|| Acl::from_canonical(&text).ids_at);
                prop_assert_eq!(canonical_ids_at(&text), expected, "{}", text);
            }

            #[test]
            fn names_reads_the_text_as_ids_reads_the_entries(
                text in acl_like(),
                server in prop::sample::select(vec!["dms1", "dms2", "srv.example", "a", "é", "*", "d+e"]),
            ) {
                if let Ok(acl) = Acl::parse(&text) {
                    for cmd in AclCmd::ALL {
                        let by_entries = matches!(
                            acl.ids(cmd),
                            Some(AclIds::Servers(v)) if v.iter().any(|id| id == server)
                        );
                        prop_assert_eq!(acl.names(cmd, server), by_entries, "{} {}", text, cmd);
                    }
                }
            }

            #[test]
            fn ids_are_checked_the_same_on_bytes(id in "[ -~\u{80}-\u{a0}\u{2028}é]{0,6}") {
                let by_chars = id.chars().find(|c| {
                    matches!(c, '=' | '&' | '*' | '+') || c.is_whitespace() || c.is_control()
                });
                prop_assert_eq!(first_invalid_id_char(&id), by_chars);
            }
        }

        #[test]
        fn canonical_examples() {
            assert!(is_canonical("Add=*&Get=ServerA+ServerB&Replace=ServerA"));
            assert!(!is_canonical("Get=a&Add=b"));
            assert!(!is_canonical("Get=a+a"));
            assert!(!is_canonical("Get=a&Get=b"));
            assert!(!is_canonical("Get=*+a"));
            assert!(!is_canonical("Get="));
            // Many ids, and offsets past what a byte holds.
            let ids: Vec<String> = (0..20).map(|i| format!("server{i}.example")).collect();
            let long = format!("Add={}&Get=a&Replace={}", ids.join("+"), ids[0]);
            assert!(is_canonical(&long));
            let at = canonical_ids_at(&long).unwrap();
            assert_eq!(at, Acl::from_canonical(&long).ids_at);
            assert_eq!(at[AclCmd::Replace.index()], IDS_AT_FAR);
            let twice = format!("Add={}+{}", ids.join("+"), ids[10]);
            assert!(!is_canonical(&twice));
            assert_eq!(canonical_ids_at(&twice), None);
            assert_eq!(canonical_ids_at(""), None);
            assert_eq!(Acl::parse("Get=a+a&Add=b").unwrap().as_str(), "Add=b&Get=a");
        }
    }
}
