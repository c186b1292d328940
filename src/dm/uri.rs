//! Node URIs of the DM tree: parsing, normalisation, limits and ancestry.
//!
//! A node URI names a node relative to the tree's root `.`; `./DMAcc/x` and `DMAcc/x` are the
//! same node (OMA DM 1.2 TND section 8.1). A URI must not end with `/`, must not contain `..`,
//! empty segments or a `.` other than the leading one. Devices advertise limits in
//! `./DevDetail/URI/{MaxDepth,MaxTotLen,MaxSegLen}` (0 means unlimited); [`UriLimits`] carries
//! them. A target may carry a query (`?prop=ACL`, `?list=Struct`), split off by [`Target`].
//!
//! [`NodeUri::is_ancestor_of`] and [`NodeUri::starts_with`] are the scope tests partial
//! delegation uses to decide whether a node lies inside a delegated subtree.

use std::fmt;
use std::str::FromStr;

/// Why a node URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// The URI was the empty string.
    #[error("the node URI is empty")]
    Empty,
    /// The URI ends with `/`, which the DM tree forbids.
    #[error("the node URI `{uri}` ends with `/`")]
    TrailingSlash {
        /// The offending URI.
        uri: String,
    },
    /// The URI has an empty segment (`A//B` or a leading `/`).
    #[error("the node URI `{uri}` has an empty segment at position {segment}")]
    EmptySegment {
        /// The offending URI.
        uri: String,
        /// 1-based index of the empty segment.
        segment: usize,
    },
    /// The URI contains `..`, which is forbidden.
    #[error("the node URI `{uri}` contains `..`")]
    ParentSegment {
        /// The offending URI.
        uri: String,
    },
    /// The URI contains `.` other than as its leading segment.
    #[error("the node URI `{uri}` contains `.` after its start (segment {segment})")]
    DotSegment {
        /// The offending URI.
        uri: String,
        /// 1-based index of the segment.
        segment: usize,
    },
    /// A segment contains a character a node name may not hold (`?` or a control character).
    #[error("the node URI `{uri}` has an invalid character {ch:?} in segment {segment}")]
    InvalidChar {
        /// The offending URI.
        uri: String,
        /// 1-based index of the segment.
        segment: usize,
        /// The character.
        ch: char,
    },
    /// The URI has more segments than `MaxDepth` allows.
    #[error("the node URI `{uri}` is {depth} levels deep; the limit is {limit}")]
    TooDeep {
        /// The offending URI (possibly shortened).
        uri: String,
        /// Its depth.
        depth: usize,
        /// The configured limit.
        limit: u16,
    },
    /// The URI is longer than `MaxTotLen` bytes.
    #[error("the node URI is {len} bytes long; the limit is {limit}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The configured limit.
        limit: u16,
    },
    /// A segment is longer than `MaxSegLen` bytes.
    #[error("segment {segment} of the node URI is {len} bytes long; the limit is {limit}")]
    SegmentTooLong {
        /// 1-based index of the segment.
        segment: usize,
        /// Its length in bytes.
        len: usize,
        /// The configured limit.
        limit: u16,
    },
    /// The query part after `?` is not one the DM tree understands.
    #[error(
        "the query `{query}` is not understood (expected prop=NAME or list=Struct|StructData|TNDS)"
    )]
    BadQuery {
        /// The query text after `?`.
        query: String,
    },
}

/// Shortens long input for error messages so a 50 MB URI does not become a 50 MB message.
fn excerpt(s: &str) -> String {
    const MAX: usize = 120;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Limits on node URIs, as advertised in `./DevDetail/URI`. A value of 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UriLimits {
    /// Maximum number of segments below the root (`MaxDepth`).
    pub max_depth: u16,
    /// Maximum total length in bytes of the URI without the leading `./` (`MaxTotLen`).
    pub max_tot_len: u16,
    /// Maximum length in bytes of one segment (`MaxSegLen`).
    pub max_seg_len: u16,
}

impl UriLimits {
    /// No limits at all.
    pub const UNLIMITED: UriLimits = UriLimits {
        max_depth: 0,
        max_tot_len: 0,
        max_seg_len: 0,
    };

    /// The limits an Android DM client advertises: depth 20, 255 bytes, 120 bytes a segment.
    pub const ANDROID: UriLimits = UriLimits {
        max_depth: 20,
        max_tot_len: 255,
        max_seg_len: 120,
    };

    /// Checks a parsed URI against these limits.
    pub fn check(&self, uri: &NodeUri) -> Result<(), UriError> {
        if self.max_depth != 0 && uri.depth() > usize::from(self.max_depth) {
            return Err(UriError::TooDeep {
                uri: excerpt(&uri.to_string()),
                depth: uri.depth(),
                limit: self.max_depth,
            });
        }
        if self.max_seg_len != 0 {
            for (i, seg) in uri.segments().iter().enumerate() {
                if seg.len() > usize::from(self.max_seg_len) {
                    return Err(UriError::SegmentTooLong {
                        segment: i + 1,
                        len: seg.len(),
                        limit: self.max_seg_len,
                    });
                }
            }
        }
        if self.max_tot_len != 0 {
            let len = uri.relative_len();
            if len > usize::from(self.max_tot_len) {
                return Err(UriError::TooLong {
                    len,
                    limit: self.max_tot_len,
                });
            }
        }
        Ok(())
    }
}

impl Default for UriLimits {
    fn default() -> Self {
        UriLimits::UNLIMITED
    }
}

/// A normalised node URI: the root `.` or a list of non-empty segments below it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeUri {
    segments: Vec<String>,
}

impl NodeUri {
    /// The root node `.`.
    pub fn root() -> NodeUri {
        NodeUri::default()
    }

    /// Parses and normalises a URI with no limits. `./A/B`, `A/B` name the same node; `.` and
    /// `./` alone are refused except `.` which is the root.
    pub fn parse(text: &str) -> Result<NodeUri, UriError> {
        if text.is_empty() {
            return Err(UriError::Empty);
        }
        if text == "." {
            return Ok(NodeUri::root());
        }
        if text.ends_with('/') {
            return Err(UriError::TrailingSlash { uri: excerpt(text) });
        }
        let body = text.strip_prefix("./").unwrap_or(text);
        let mut segments = Vec::new();
        for (i, seg) in body.split('/').enumerate() {
            let position = i + 1;
            match seg {
                "" => {
                    return Err(UriError::EmptySegment {
                        uri: excerpt(text),
                        segment: position,
                    });
                }
                ".." => return Err(UriError::ParentSegment { uri: excerpt(text) }),
                "." => {
                    return Err(UriError::DotSegment {
                        uri: excerpt(text),
                        segment: position,
                    });
                }
                _ => {}
            }
            check_segment(seg).map_err(|ch| UriError::InvalidChar {
                uri: excerpt(text),
                segment: position,
                ch,
            })?;
            segments.push(seg.to_owned());
        }
        Ok(NodeUri { segments })
    }

    /// Parses a URI and checks it against `limits`.
    pub fn parse_with(text: &str, limits: &UriLimits) -> Result<NodeUri, UriError> {
        let uri = NodeUri::parse(text)?;
        limits.check(&uri)?;
        Ok(uri)
    }

    /// Builds a URI from segments, checking each as a node name.
    pub fn from_segments<I, S>(segments: I) -> Result<NodeUri, UriError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut uri = NodeUri::root();
        for seg in segments {
            uri.push(seg.into())?;
        }
        Ok(uri)
    }

    /// Appends one segment in place, checking it as a node name.
    pub fn push(&mut self, name: String) -> Result<(), UriError> {
        let position = self.depth() + 1;
        let uri_text = |u: &NodeUri| excerpt(&format!("{u}/{name}"));
        match name.as_str() {
            "" => {
                return Err(UriError::EmptySegment {
                    uri: uri_text(self),
                    segment: position,
                });
            }
            ".." => {
                return Err(UriError::ParentSegment {
                    uri: uri_text(self),
                });
            }
            "." => {
                return Err(UriError::DotSegment {
                    uri: uri_text(self),
                    segment: position,
                });
            }
            _ => {}
        }
        if let Some(ch) = name
            .chars()
            .find(|c| *c == '/' || *c == '?' || c.is_control())
        {
            return Err(UriError::InvalidChar {
                uri: uri_text(self),
                segment: position,
                ch,
            });
        }
        self.segments.push(name);
        Ok(())
    }

    /// The segments below the root; empty for the root.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Number of segments below the root (0 for the root).
    pub fn depth(&self) -> usize {
        self.segments.len()
    }

    /// True for the root `.`.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The last segment, or `None` for the root.
    pub fn name(&self) -> Option<&str> {
        self.segments.last().map(String::as_str)
    }

    /// Removes and returns the last segment (`None` at the root): the way back up after a
    /// [`NodeUri::push`].
    pub fn pop(&mut self) -> Option<String> {
        self.segments.pop()
    }

    /// The parent URI, or `None` for the root.
    pub fn parent(&self) -> Option<NodeUri> {
        if self.segments.is_empty() {
            return None;
        }
        Some(NodeUri {
            segments: self.segments[..self.segments.len() - 1].to_vec(),
        })
    }

    /// The child named `name`; `name` must be one valid segment.
    pub fn join(&self, name: &str) -> Result<NodeUri, UriError> {
        self.child(name.to_owned())
    }

    /// The child named `name`, taking the name; `name` must be one valid segment. The
    /// segments are copied once, with room for the new one.
    pub fn child(&self, name: String) -> Result<NodeUri, UriError> {
        let mut segments = Vec::with_capacity(self.segments.len() + 1);
        segments.extend(self.segments.iter().cloned());
        let mut uri = NodeUri { segments };
        uri.push(name)?;
        Ok(uri)
    }

    /// Appends every segment of `relative` (a URI read relative to this one).
    pub fn concat(&self, relative: &NodeUri) -> NodeUri {
        let mut segments = self.segments.clone();
        segments.extend(relative.segments.iter().cloned());
        NodeUri { segments }
    }

    /// The part of `self` below `base`, if `base` is `self` or one of its ancestors.
    pub fn strip_prefix(&self, base: &NodeUri) -> Option<NodeUri> {
        if self.starts_with(base) {
            Some(NodeUri {
                segments: self.segments[base.depth()..].to_vec(),
            })
        } else {
            None
        }
    }

    /// True when `self` is `other` or an ancestor of it: `other` lies in the subtree at `self`.
    pub fn contains(&self, other: &NodeUri) -> bool {
        other.starts_with(self)
    }

    /// True when `prefix` is `self` or an ancestor of `self`.
    pub fn starts_with(&self, prefix: &NodeUri) -> bool {
        prefix.segments.len() <= self.segments.len()
            && prefix
                .segments
                .iter()
                .zip(&self.segments)
                .all(|(a, b)| a == b)
    }

    /// True when `self` is a proper ancestor of `other`.
    pub fn is_ancestor_of(&self, other: &NodeUri) -> bool {
        self.depth() < other.depth() && other.starts_with(self)
    }

    /// Every ancestor from the root down to the parent, then `self`.
    pub fn ancestors_and_self(&self) -> impl Iterator<Item = NodeUri> + '_ {
        (0..=self.segments.len()).map(|n| NodeUri {
            segments: self.segments[..n].to_vec(),
        })
    }

    /// Length in bytes of the URI without the leading `./` (what `MaxTotLen` counts).
    pub fn relative_len(&self) -> usize {
        if self.segments.is_empty() {
            return 1;
        }
        self.segments.iter().map(String::len).sum::<usize>() + self.segments.len() - 1
    }

    /// The URI without the leading `./`, as TNDS `Path` elements and relative targets use it;
    /// the root is `.`.
    pub fn to_relative_string(&self) -> String {
        if self.segments.is_empty() {
            ".".to_owned()
        } else {
            self.segments.join("/")
        }
    }
}

/// Returns the first character a node name may not contain.
fn check_segment(seg: &str) -> Result<(), char> {
    match seg.chars().find(|c| *c == '?' || c.is_control()) {
        Some(ch) => Err(ch),
        None => Ok(()),
    }
}

impl fmt::Display for NodeUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(".")?;
        for seg in &self.segments {
            f.write_str("/")?;
            f.write_str(seg)?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeUri({self})")
    }
}

impl FromStr for NodeUri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeUri::parse(s)
    }
}

/// Which form of a subtree a `?list=` Get asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListKind {
    /// `?list=Struct`: every node's URI, Format and Type, without values.
    Struct,
    /// `?list=StructData`: as `Struct`, with the values of leaves.
    StructData,
    /// `?list=TNDS` with an optional property selection (`+ACL+Value`, `-Value`).
    Tnds(TndsSelection),
}

/// The properties a `?list=TNDS` Get includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TndsSelection {
    /// Include each node's ACL.
    pub acl: bool,
    /// Include Format.
    pub format: bool,
    /// Include Type.
    pub ty: bool,
    /// Include leaf values.
    pub value: bool,
    /// Include Name.
    pub name: bool,
    /// Include Size (leaves).
    pub size: bool,
    /// Include Title where set.
    pub title: bool,
    /// Include TStamp where set.
    pub tstamp: bool,
    /// Include VerNo.
    pub verno: bool,
    /// Include description properties (AccessType, Scope) where they differ from the defaults.
    pub description: bool,
}

impl TndsSelection {
    /// Everything.
    pub const ALL: TndsSelection = TndsSelection {
        acl: true,
        format: true,
        ty: true,
        value: true,
        name: true,
        size: true,
        title: true,
        tstamp: true,
        verno: true,
        description: true,
    };

    /// Nothing but the structure (node names).
    pub const NONE: TndsSelection = TndsSelection {
        acl: false,
        format: false,
        ty: false,
        value: false,
        name: false,
        size: false,
        title: false,
        tstamp: false,
        verno: false,
        description: false,
    };

    /// What a TNDS Add needs to recreate a subtree: ACL, Format, Type, Title, Value and the
    /// description properties; no bookkeeping (Name, Size, TStamp, VerNo).
    pub const CONTENT: TndsSelection = TndsSelection {
        name: false,
        size: false,
        tstamp: false,
        verno: false,
        ..TndsSelection::ALL
    };

    /// Parses the part after `TNDS`: empty (everything), `+A+B` (only those) or `-A-B`
    /// (everything but those). Names: ACL, Format, Type, Value, Name, Size, Title, TStamp, VerNo.
    fn parse(rest: &str) -> Option<TndsSelection> {
        if rest.is_empty() {
            return Some(TndsSelection::ALL);
        }
        let adding = rest.starts_with('+');
        if !adding && !rest.starts_with('-') {
            return None;
        }
        let sep = if adding { '+' } else { '-' };
        let mut sel = if adding {
            TndsSelection::NONE
        } else {
            TndsSelection::ALL
        };
        for name in rest[1..].split(sep) {
            let flag = match name {
                "ACL" => &mut sel.acl,
                "Format" => &mut sel.format,
                "Type" => &mut sel.ty,
                "Value" => &mut sel.value,
                "Name" => &mut sel.name,
                "Size" => &mut sel.size,
                "Title" => &mut sel.title,
                "TStamp" => &mut sel.tstamp,
                "VerNo" => &mut sel.verno,
                _ => return None,
            };
            *flag = adding;
        }
        Some(sel)
    }
}

/// What a command addresses beyond the node itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `?prop=NAME`: one run-time property of the node.
    Prop(String),
    /// `?list=...`: a listing of the subtree.
    List(ListKind),
}

/// A command target: a node URI with an optional query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node.
    pub uri: NodeUri,
    /// The query after `?`, if any.
    pub query: Option<Query>,
}

impl Target {
    /// Parses `URI[?prop=NAME|?list=KIND]` against `limits`.
    pub fn parse_with(text: &str, limits: &UriLimits) -> Result<Target, UriError> {
        let (path, query) = match text.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (text, None),
        };
        let uri = NodeUri::parse_with(path, limits)?;
        let query = match query {
            None => None,
            Some(q) => {
                Some(parse_query(q).ok_or_else(|| UriError::BadQuery { query: excerpt(q) })?)
            }
        };
        Ok(Target { uri, query })
    }

    /// Parses a target with no limits.
    pub fn parse(text: &str) -> Result<Target, UriError> {
        Target::parse_with(text, &UriLimits::UNLIMITED)
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Query::Prop(name) => write!(f, "prop={name}"),
            Query::List(ListKind::Struct) => f.write_str("list=Struct"),
            Query::List(ListKind::StructData) => f.write_str("list=StructData"),
            Query::List(ListKind::Tnds(sel)) => {
                f.write_str("list=TNDS")?;
                if *sel != TndsSelection::ALL {
                    let names = [
                        (sel.acl, "ACL"),
                        (sel.format, "Format"),
                        (sel.ty, "Type"),
                        (sel.value, "Value"),
                        (sel.name, "Name"),
                        (sel.size, "Size"),
                        (sel.title, "Title"),
                        (sel.tstamp, "TStamp"),
                        (sel.verno, "VerNo"),
                    ];
                    for (on, name) in names {
                        if on {
                            write!(f, "+{name}")?;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.query {
            Some(q) => write!(f, "{}?{q}", self.uri),
            None => write!(f, "{}", self.uri),
        }
    }
}

impl From<NodeUri> for Target {
    fn from(uri: NodeUri) -> Target {
        Target { uri, query: None }
    }
}

fn parse_query(q: &str) -> Option<Query> {
    if let Some(name) = q.strip_prefix("prop=") {
        if name.is_empty() {
            return None;
        }
        return Some(Query::Prop(name.to_owned()));
    }
    let list = q.strip_prefix("list=")?;
    match list {
        "Struct" => Some(Query::List(ListKind::Struct)),
        "StructData" => Some(Query::List(ListKind::StructData)),
        _ => {
            let rest = list.strip_prefix("TNDS")?;
            Some(Query::List(ListKind::Tnds(TndsSelection::parse(rest)?)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_prefix_and_bare_are_one_node() {
        assert_eq!(
            NodeUri::parse("./A/B").unwrap(),
            NodeUri::parse("A/B").unwrap()
        );
        assert_eq!(NodeUri::parse("./A/B").unwrap().to_string(), "./A/B");
        assert!(NodeUri::parse(".").unwrap().is_root());
    }

    #[test]
    fn push_and_pop_walk_down_and_back() {
        let mut uri = NodeUri::parse("./A").unwrap();
        uri.push("B".into()).unwrap();
        assert_eq!(uri, NodeUri::parse("./A/B").unwrap());
        assert!(uri.push("C/D".into()).is_err());
        assert_eq!(
            uri,
            NodeUri::parse("./A/B").unwrap(),
            "a refused push changes nothing"
        );
        assert_eq!(uri.pop().as_deref(), Some("B"));
        assert_eq!(uri.pop().as_deref(), Some("A"));
        assert!(uri.is_root());
        assert_eq!(uri.pop(), None);
    }

    #[test]
    fn refuses_bad_forms() {
        assert_eq!(NodeUri::parse(""), Err(UriError::Empty));
        assert!(matches!(
            NodeUri::parse("./A/"),
            Err(UriError::TrailingSlash { .. })
        ));
        assert!(matches!(
            NodeUri::parse("./"),
            Err(UriError::TrailingSlash { .. })
        ));
        assert!(matches!(
            NodeUri::parse("A//B"),
            Err(UriError::EmptySegment { segment: 2, .. })
        ));
        assert!(matches!(
            NodeUri::parse("/A"),
            Err(UriError::EmptySegment { segment: 1, .. })
        ));
        assert!(matches!(
            NodeUri::parse("./A/../B"),
            Err(UriError::ParentSegment { .. })
        ));
        assert!(matches!(
            NodeUri::parse("A/./B"),
            Err(UriError::DotSegment { segment: 2, .. })
        ));
        assert!(matches!(
            NodeUri::parse("A/B\u{0}"),
            Err(UriError::InvalidChar { .. })
        ));
    }

    #[test]
    fn limits_apply() {
        let limits = UriLimits {
            max_depth: 2,
            max_tot_len: 10,
            max_seg_len: 4,
        };
        assert!(NodeUri::parse_with("./A/B", &limits).is_ok());
        assert!(matches!(
            NodeUri::parse_with("./A/B/C", &limits),
            Err(UriError::TooDeep { depth: 3, .. })
        ));
        assert!(matches!(
            NodeUri::parse_with("./ABCDE", &limits),
            Err(UriError::SegmentTooLong { len: 5, .. })
        ));
        assert!(matches!(
            NodeUri::parse_with(
                "./ABCD/EFGHIJ",
                &UriLimits {
                    max_seg_len: 0,
                    ..limits
                }
            ),
            Err(UriError::TooLong { len: 11, .. })
        ));
        assert!(NodeUri::parse_with("./A/B/C/D/E", &UriLimits::UNLIMITED).is_ok());
    }

    #[test]
    fn ancestry() {
        let a = NodeUri::parse("./Vendor").unwrap();
        let b = NodeUri::parse("./Vendor/Operator/X").unwrap();
        let c = NodeUri::parse("./VendorX").unwrap();
        assert!(a.is_ancestor_of(&b));
        assert!(!b.is_ancestor_of(&a));
        assert!(!a.is_ancestor_of(&a));
        assert!(a.contains(&a));
        assert!(!a.contains(&c), "prefix test is by segment, not by text");
        assert!(NodeUri::root().is_ancestor_of(&a));
        assert_eq!(
            b.strip_prefix(&a).unwrap().to_relative_string(),
            "Operator/X"
        );
        assert_eq!(b.parent().unwrap().parent().unwrap(), a);
        assert_eq!(b.ancestors_and_self().count(), 4);
    }

    #[test]
    fn targets_with_queries() {
        let t = Target::parse("./DMAcc/x?prop=ACL").unwrap();
        assert_eq!(t.query, Some(Query::Prop("ACL".into())));
        let t = Target::parse("./DMAcc?list=Struct").unwrap();
        assert_eq!(t.query, Some(Query::List(ListKind::Struct)));
        let t = Target::parse(".?list=TNDS+ACL+Value").unwrap();
        match t.query {
            Some(Query::List(ListKind::Tnds(sel))) => {
                assert!(sel.acl && sel.value && !sel.format && !sel.ty)
            }
            other => panic!("unexpected {other:?}"),
        }
        let t = Target::parse(".?list=TNDS-Value").unwrap();
        match t.query {
            Some(Query::List(ListKind::Tnds(sel))) => assert!(sel.acl && !sel.value),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            Target::parse("./A?foo=bar"),
            Err(UriError::BadQuery { .. })
        ));
        assert!(matches!(
            Target::parse("./A?list=TNDS+Bogus"),
            Err(UriError::BadQuery { .. })
        ));
    }
}
