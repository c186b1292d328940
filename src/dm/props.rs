//! Node property value types shared by the DM tree and TNDS: Format, Type, AccessType, Scope,
//! Occurrence and CaseSense (OMA DM 1.2 TND section 8.3, DDF section 8.5).

use std::fmt;
use std::str::FromStr;

/// A property or DDF value that is not one of the names the spec allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what}")]
pub struct UnknownValue {
    /// Which kind of value was expected (e.g. "Format").
    pub what: &'static str,
    /// The text found.
    pub value: String,
}

macro_rules! name_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in the spec's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spec's name of this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue { what: $what, value: s.chars().take(64).collect() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

name_enum!(
    /// The `Format` of a node: how its value is to be read. Interior nodes are `node`.
    Format, "Format", {
        /// Base64-encoded binary; the tree stores the decoded bytes.
        B64 => "b64",
        /// Raw binary.
        Bin => "bin",
        /// `true` or `false`.
        Bool => "bool",
        /// Text.
        Chr => "chr",
        /// A signed integer in decimal.
        Int => "int",
        /// An interior node.
        Node => "node",
        /// No value.
        Null => "null",
        /// XML data.
        Xml => "xml",
        /// An ISO 8601 date.
        Date => "date",
        /// An ISO 8601 time.
        Time => "time",
        /// A floating-point number.
        Float => "float",
    }
);

name_enum!(
    /// A DDF `AccessType` command.
    AccessKind, "AccessType", {
        /// Add.
        Add => "Add",
        /// Copy.
        Copy => "Copy",
        /// Delete.
        Delete => "Delete",
        /// Exec.
        Exec => "Exec",
        /// Get.
        Get => "Get",
        /// Replace.
        Replace => "Replace",
    }
);

name_enum!(
    /// DDF `Scope`: permanent nodes cannot be deleted or renamed.
    Scope, "Scope", {
        /// Created by the device; cannot be deleted or renamed.
        Permanent => "Permanent",
        /// Created and deleted at run time.
        Dynamic => "Dynamic",
    }
);

name_enum!(
    /// DDF `CaseSense`.
    CaseSense, "CaseSense", {
        /// Case sensitive.
        Cs => "CS",
        /// Case insensitive.
        Cis => "CIS",
    }
);

/// A set of DDF access types: which commands a node's description allows at all,
/// independent of the ACL. A command outside it gets 405.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AccessSet(u8);

impl AccessSet {
    /// Nothing allowed.
    pub const EMPTY: AccessSet = AccessSet(0);
    /// Every command allowed.
    pub const ALL: AccessSet = AccessSet(0b11_1111);

    fn bit(kind: AccessKind) -> u8 {
        1 << (kind as u8)
    }

    /// True when `kind` is in the set.
    pub fn contains(self, kind: AccessKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    /// Adds `kind`.
    pub fn insert(&mut self, kind: AccessKind) {
        self.0 |= Self::bit(kind);
    }

    /// Removes `kind`.
    pub fn remove(&mut self, kind: AccessKind) {
        self.0 &= !Self::bit(kind);
    }

    /// The set with `kind` added.
    pub fn with(mut self, kind: AccessKind) -> AccessSet {
        self.insert(kind);
        self
    }

    /// The set with `kind` removed.
    pub fn without(mut self, kind: AccessKind) -> AccessSet {
        self.remove(kind);
        self
    }

    /// The members, in the spec's order.
    pub fn iter(self) -> impl Iterator<Item = AccessKind> {
        AccessKind::ALL
            .iter()
            .copied()
            .filter(move |k| self.contains(*k))
    }

    /// True when nothing is allowed.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for AccessSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<AccessKind> for AccessSet {
    fn from_iter<T: IntoIterator<Item = AccessKind>>(iter: T) -> Self {
        let mut set = AccessSet::EMPTY;
        for k in iter {
            set.insert(k);
        }
        set
    }
}

/// DDF `Occurrence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occurrence {
    /// Exactly one.
    One,
    /// Zero or one.
    ZeroOrOne,
    /// Zero or more.
    ZeroOrMore,
    /// One or more.
    OneOrMore,
    /// Zero to N (2..=65536).
    ZeroOrN(u32),
    /// One to N (2..=65536).
    OneOrN(u32),
}

impl Occurrence {
    /// The element name of this occurrence in DDF XML.
    pub fn element_name(self) -> &'static str {
        match self {
            Occurrence::One => "One",
            Occurrence::ZeroOrOne => "ZeroOrOne",
            Occurrence::ZeroOrMore => "ZeroOrMore",
            Occurrence::OneOrMore => "OneOrMore",
            Occurrence::ZeroOrN(_) => "ZeroOrN",
            Occurrence::OneOrN(_) => "OneOrN",
        }
    }

    /// The N of `ZeroOrN`/`OneOrN`.
    pub fn bound(self) -> Option<u32> {
        match self {
            Occurrence::ZeroOrN(n) | Occurrence::OneOrN(n) => Some(n),
            _ => None,
        }
    }

    /// Builds an occurrence from its element name and, for the `N` forms, its text.
    pub fn from_parts(name: &str, n: Option<&str>) -> Result<Occurrence, UnknownValue> {
        let bad = |v: &str| UnknownValue {
            what: "Occurrence",
            value: v.chars().take(64).collect(),
        };
        let parse_n = || -> Result<u32, UnknownValue> {
            let text = n.unwrap_or("").trim();
            match text.parse::<u32>() {
                Ok(v) if (2..=65536).contains(&v) => Ok(v),
                _ => Err(bad(&format!("{name} {text}"))),
            }
        };
        Ok(match name {
            "One" => Occurrence::One,
            "ZeroOrOne" => Occurrence::ZeroOrOne,
            "ZeroOrMore" => Occurrence::ZeroOrMore,
            "OneOrMore" => Occurrence::OneOrMore,
            "ZeroOrN" => Occurrence::ZeroOrN(parse_n()?),
            "OneOrN" => Occurrence::OneOrN(parse_n()?),
            other => return Err(bad(other)),
        })
    }
}

/// A node's `Type`: a MIME type for a leaf, an MO identifier (`DDFName`) for an interior node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeType {
    /// `<MIME>`: the media type of a leaf's value.
    Mime(String),
    /// `<DDFName>`: the MO identifier of an interior node (URN or reversed domain), possibly empty.
    DdfName(String),
}

impl NodeType {
    /// The type text, whichever form.
    pub fn as_str(&self) -> &str {
        match self {
            NodeType::Mime(s) | NodeType::DdfName(s) => s,
        }
    }

    /// `text/plain`, the usual leaf type.
    pub fn text_plain() -> NodeType {
        NodeType::Mime("text/plain".to_owned())
    }

    /// An interior node with no MO identifier.
    pub fn untyped_interior() -> NodeType {
        NodeType::DdfName(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.as_str().parse::<Format>().unwrap(), *f);
        }
        assert!("CHR".parse::<Format>().is_err());
    }

    #[test]
    fn access_set_membership() {
        let s: AccessSet = [AccessKind::Get, AccessKind::Replace].into_iter().collect();
        assert!(s.contains(AccessKind::Get));
        assert!(!s.contains(AccessKind::Add));
        assert_eq!(s.iter().count(), 2);
        assert_eq!(AccessSet::ALL.iter().count(), 6);
    }

    #[test]
    fn occurrence_bounds() {
        assert_eq!(
            Occurrence::from_parts("ZeroOrN", Some("5")).unwrap(),
            Occurrence::ZeroOrN(5)
        );
        assert!(Occurrence::from_parts("ZeroOrN", Some("1")).is_err());
        assert!(Occurrence::from_parts("OneOrN", Some("70000")).is_err());
        assert!(Occurrence::from_parts("Many", None).is_err());
    }
}
