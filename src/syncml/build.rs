//! The element grammar of the DM subset of SyncML and the model builder shared by the XML
//! ([`super::xml`]) and WBXML ([`super::wbxml`]) decoders.
//!
//! Each front end tokenizes its own syntax and feeds the [`Builder`] a stream of element
//! events: a start element (resolved to an [`El`] with [`child_of`]), text appended to
//! [`Builder::text`], and an end element. The builder enforces the grammar rules (duplicate
//! and required elements, numbers, the `Final`/`NoResp`/`MoreData` flags, `Meta` children,
//! `Status`/`Results`/`Atomic`/`Sequence` nesting, depth, command and text limits) and
//! assembles the [`SyncMl`] model. Errors come back as a neutral [`BuildError`] carrying the
//! position value the caller supplied with the event; each front end maps it to its own error
//! type.

use super::StatusCode;
use super::message::{
    Alert, Chal, Command, Container, Cred, Data, Exec, Item, ItemCmd, LocRef, Meta, Results,
    Status, SyncBody, SyncHdr, SyncMl, SyncMlVersion,
};
use super::xml::DecodeLimits;
use crate::xmltext::{shorten, take_trimmed, trim_xml};

/// An unsigned decimal number: ASCII digits only (no sign, no spaces), without overflow.
fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The commands of DM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmdKind {
    Alert,
    Add,
    Replace,
    Delete,
    Get,
    Copy,
    Exec,
    Atomic,
    Sequence,
    Results,
    Status,
}

impl CmdKind {
    fn from_name(local: &str) -> Option<CmdKind> {
        Some(match local {
            "Alert" => CmdKind::Alert,
            "Add" => CmdKind::Add,
            "Replace" => CmdKind::Replace,
            "Delete" => CmdKind::Delete,
            "Get" => CmdKind::Get,
            "Copy" => CmdKind::Copy,
            "Exec" => CmdKind::Exec,
            "Atomic" => CmdKind::Atomic,
            "Sequence" => CmdKind::Sequence,
            "Results" => CmdKind::Results,
            "Status" => CmdKind::Status,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            CmdKind::Alert => "Alert",
            CmdKind::Add => "Add",
            CmdKind::Replace => "Replace",
            CmdKind::Delete => "Delete",
            CmdKind::Get => "Get",
            CmdKind::Copy => "Copy",
            CmdKind::Exec => "Exec",
            CmdKind::Atomic => "Atomic",
            CmdKind::Sequence => "Sequence",
            CmdKind::Results => "Results",
            CmdKind::Status => "Status",
        }
    }

    fn is_container(self) -> bool {
        matches!(self, CmdKind::Atomic | CmdKind::Sequence)
    }

    /// Commands allowed inside `Atomic` and `Sequence`.
    fn nestable(self) -> bool {
        !matches!(self, CmdKind::Results | CmdKind::Status)
    }
}

/// The meta-information elements DM uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetField {
    Format,
    Type,
    Mark,
    Size,
    NextNonce,
    Version,
    MaxMsgSize,
    MaxObjSize,
}

impl MetField {
    fn from_name(local: &str) -> Option<MetField> {
        Some(match local {
            "Format" => MetField::Format,
            "Type" => MetField::Type,
            "Mark" => MetField::Mark,
            "Size" => MetField::Size,
            "NextNonce" => MetField::NextNonce,
            "Version" => MetField::Version,
            "MaxMsgSize" => MetField::MaxMsgSize,
            "MaxObjSize" => MetField::MaxObjSize,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            MetField::Format => "Format",
            MetField::Type => "Type",
            MetField::Mark => "Mark",
            MetField::Size => "Size",
            MetField::NextNonce => "NextNonce",
            MetField::Version => "Version",
            MetField::MaxMsgSize => "MaxMsgSize",
            MetField::MaxObjSize => "MaxObjSize",
        }
    }
}

/// Elements of the DM subset of SyncML, by role (the same name can play several roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum El {
    SyncMl,
    SyncHdr,
    SyncBody,
    VerDtd,
    VerProto,
    SessionId,
    MsgId,
    RespUri,
    Target,
    Source,
    LocUri,
    LocName,
    NoResp,
    Final,
    MoreData,
    Cred,
    Chal,
    Meta,
    MetInf(MetField),
    Cmd(CmdKind),
    CmdId,
    MsgRef,
    CmdRef,
    /// `Status/Cmd`.
    CmdName,
    TargetRef,
    SourceRef,
    Correlator,
    /// `Data` of `Alert`, `Status` and `Cred` (trimmed text).
    Data,
    Item,
    /// `Item/Data` (exact text or inline XML).
    ItemData,
}

/// How an element's content is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Content {
    /// Only child elements (and whitespace).
    Elements,
    /// Text (collected into the text buffer).
    Text,
    /// Nothing but whitespace.
    Empty,
    /// `Item/Data`: text or arbitrary child elements.
    Raw,
}

impl El {
    pub(crate) fn name(self) -> &'static str {
        match self {
            El::SyncMl => "SyncML",
            El::SyncHdr => "SyncHdr",
            El::SyncBody => "SyncBody",
            El::VerDtd => "VerDTD",
            El::VerProto => "VerProto",
            El::SessionId => "SessionID",
            El::MsgId => "MsgID",
            El::RespUri => "RespURI",
            El::Target => "Target",
            El::Source => "Source",
            El::LocUri => "LocURI",
            El::LocName => "LocName",
            El::NoResp => "NoResp",
            El::Final => "Final",
            El::MoreData => "MoreData",
            El::Cred => "Cred",
            El::Chal => "Chal",
            El::Meta => "Meta",
            El::MetInf(f) => f.name(),
            El::Cmd(k) => k.name(),
            El::CmdId => "CmdID",
            El::MsgRef => "MsgRef",
            El::CmdRef => "CmdRef",
            El::CmdName => "Cmd",
            El::TargetRef => "TargetRef",
            El::SourceRef => "SourceRef",
            El::Correlator => "Correlator",
            El::Data | El::ItemData => "Data",
            El::Item => "Item",
        }
    }

    pub(crate) fn content(self) -> Content {
        match self {
            El::SyncMl
            | El::SyncHdr
            | El::SyncBody
            | El::Target
            | El::Source
            | El::Cred
            | El::Chal
            | El::Meta
            | El::Cmd(_)
            | El::Item => Content::Elements,
            El::NoResp | El::Final | El::MoreData => Content::Empty,
            El::ItemData => Content::Raw,
            El::VerDtd
            | El::VerProto
            | El::SessionId
            | El::MsgId
            | El::RespUri
            | El::LocUri
            | El::LocName
            | El::MetInf(_)
            | El::CmdId
            | El::MsgRef
            | El::CmdRef
            | El::CmdName
            | El::TargetRef
            | El::SourceRef
            | El::Correlator
            | El::Data => Content::Text,
        }
    }

    /// The bit recording that this element was seen in its parent.
    fn bit(self) -> u64 {
        let index = match self {
            El::SyncMl => 0,
            El::SyncHdr => 1,
            El::SyncBody => 2,
            El::VerDtd => 3,
            El::VerProto => 4,
            El::SessionId => 5,
            El::MsgId => 6,
            El::RespUri => 7,
            El::Target => 8,
            El::Source => 9,
            El::LocUri => 10,
            El::LocName => 11,
            El::NoResp => 12,
            El::Final => 13,
            El::MoreData => 14,
            El::Cred => 15,
            El::Chal => 16,
            El::Meta => 17,
            El::Cmd(_) => 18,
            El::CmdId => 19,
            El::MsgRef => 20,
            El::CmdRef => 21,
            El::CmdName => 22,
            El::TargetRef => 23,
            El::SourceRef => 24,
            El::Correlator => 25,
            El::Data => 26,
            El::Item => 27,
            El::ItemData => 28,
            El::MetInf(f) => 29 + f as u32,
        };
        1u64 << index
    }

    /// Whether this element may appear at most once in `parent`.
    fn single_in(self, parent: El) -> bool {
        match self {
            El::Cmd(_) => false,
            El::Item => parent == El::Cmd(CmdKind::Exec),
            El::TargetRef | El::SourceRef => parent != El::Cmd(CmdKind::Status),
            _ => true,
        }
    }
}

/// The element `local` in `parent`, if the DM subset allows it there.
pub(crate) fn child_of(parent: El, local: &str) -> Option<El> {
    Some(match parent {
        El::SyncMl => match local {
            "SyncHdr" => El::SyncHdr,
            "SyncBody" => El::SyncBody,
            _ => return None,
        },
        El::SyncHdr => match local {
            "VerDTD" => El::VerDtd,
            "VerProto" => El::VerProto,
            "SessionID" => El::SessionId,
            "MsgID" => El::MsgId,
            "Target" => El::Target,
            "Source" => El::Source,
            "RespURI" => El::RespUri,
            "NoResp" => El::NoResp,
            "Cred" => El::Cred,
            "Meta" => El::Meta,
            _ => return None,
        },
        El::SyncBody => match local {
            "Final" => El::Final,
            _ => El::Cmd(CmdKind::from_name(local)?),
        },
        El::Cmd(kind) => {
            let el = match local {
                "CmdID" => El::CmdId,
                "NoResp" => El::NoResp,
                "Cred" => El::Cred,
                "Meta" => El::Meta,
                "Item" => El::Item,
                "Data" => El::Data,
                "Correlator" => El::Correlator,
                "MsgRef" => El::MsgRef,
                "CmdRef" => El::CmdRef,
                "Cmd" => El::CmdName,
                "TargetRef" => El::TargetRef,
                "SourceRef" => El::SourceRef,
                "Chal" => El::Chal,
                _ => {
                    let nested = CmdKind::from_name(local)?;
                    return (kind.is_container() && nested.nestable()).then_some(El::Cmd(nested));
                }
            };
            let allowed = match kind {
                CmdKind::Add
                | CmdKind::Replace
                | CmdKind::Delete
                | CmdKind::Get
                | CmdKind::Copy => {
                    matches!(el, El::CmdId | El::NoResp | El::Cred | El::Meta | El::Item)
                }
                CmdKind::Alert => matches!(
                    el,
                    El::CmdId | El::NoResp | El::Cred | El::Data | El::Correlator | El::Item
                ),
                CmdKind::Exec => matches!(
                    el,
                    El::CmdId | El::NoResp | El::Cred | El::Meta | El::Correlator | El::Item
                ),
                CmdKind::Atomic | CmdKind::Sequence => {
                    matches!(el, El::CmdId | El::NoResp | El::Meta)
                }
                CmdKind::Results => matches!(
                    el,
                    El::CmdId
                        | El::MsgRef
                        | El::CmdRef
                        | El::Meta
                        | El::TargetRef
                        | El::SourceRef
                        | El::Item
                ),
                CmdKind::Status => matches!(
                    el,
                    El::CmdId
                        | El::MsgRef
                        | El::CmdRef
                        | El::CmdName
                        | El::TargetRef
                        | El::SourceRef
                        | El::Cred
                        | El::Chal
                        | El::Data
                        | El::Item
                ),
            };
            return allowed.then_some(el);
        }
        El::Item => match local {
            "Target" => El::Target,
            "Source" => El::Source,
            "Meta" => El::Meta,
            "Data" => El::ItemData,
            "MoreData" => El::MoreData,
            _ => return None,
        },
        El::Target | El::Source => match local {
            "LocURI" => El::LocUri,
            "LocName" => El::LocName,
            _ => return None,
        },
        El::Cred => match local {
            "Meta" => El::Meta,
            "Data" => El::Data,
            _ => return None,
        },
        El::Chal => match local {
            "Meta" => El::Meta,
            _ => return None,
        },
        El::Meta => El::MetInf(MetField::from_name(local)?),
        _ => return None,
    })
}

/// A grammar or limit violation found by the [`Builder`], placed at the position value the
/// caller supplied (`at`).
#[derive(Debug)]
pub(crate) enum BuildError {
    /// A decoder state that cannot happen (reported rather than panicking).
    Internal { at: usize },
    /// An end element with no open element.
    Unbalanced { at: usize },
    /// An element that may appear once appears again.
    Duplicate {
        at: usize,
        element: &'static str,
        parent: &'static str,
    },
    /// A required element is missing (`at` is where its parent starts).
    Missing {
        at: usize,
        element: &'static str,
        parent: &'static str,
    },
    /// A value that does not parse (`value` is shortened).
    BadValue {
        at: usize,
        what: &'static str,
        value: String,
    },
    /// Elements are nested deeper than the limit.
    TooDeep { at: usize, limit: usize },
    /// More commands than the limit.
    TooMany { what: &'static str, limit: usize },
    /// One text value is longer than the limit (`at` is where its element starts).
    TextTooLarge {
        at: usize,
        element: &'static str,
        len: usize,
        limit: usize,
    },
}

type Result<T> = std::result::Result<T, BuildError>;

/// A command being built: the union of all command fields.
#[derive(Default)]
struct CmdBuild {
    cmd_id: u32,
    no_resp: bool,
    cred: Option<Cred>,
    meta: Option<Meta>,
    data: Option<String>,
    correlator: Option<String>,
    msg_ref: Option<u32>,
    cmd_ref: Option<u32>,
    cmd: Option<String>,
    target_refs: Vec<String>,
    source_refs: Vec<String>,
    chal: Option<Chal>,
    code: Option<StatusCode>,
    items: Vec<Item>,
    commands: Vec<Command>,
    /// An item's data was marked by the front end (see [`Builder::end`]).
    marked: bool,
}

/// A value under construction, one per open element that has fields.
enum Build {
    Hdr(Box<SyncHdr>),
    Body(SyncBody),
    Cmd(Box<CmdBuild>),
    Item(Box<Item>),
    Loc(LocRef),
    Meta(Meta),
    Cred(Cred),
    Chal(Chal),
}

/// An open element.
struct Open {
    el: El,
    /// Where the start element is (the caller's position value).
    at: usize,
    /// Children seen so far ([`El::bit`]).
    seen: u64,
}

/// Builds a [`SyncMl`] from element events.
pub(crate) struct Builder<'a> {
    limits: &'a DecodeLimits,
    stack: Vec<Open>,
    builds: Vec<Build>,
    /// Text of the open text element (or `Item/Data`); the front end appends to it.
    pub(crate) text: String,
    /// The version from the document (`None`: taken from `VerDTD`).
    version: Option<SyncMlVersion>,
    hdr: Option<SyncHdr>,
    body: Option<SyncBody>,
    root_done: bool,
    commands: usize,
    /// The open item's data was marked by the front end.
    item_marked: bool,
    /// Applied to the `Meta` of a marked item and of its command.
    retype: fn(Option<&mut Meta>),
}

impl<'a> Builder<'a> {
    /// A builder enforcing `limits`; `retype` is applied to the `Meta` of items whose data is
    /// marked (and of their commands).
    pub(crate) fn new(
        limits: &'a DecodeLimits,
        version: Option<SyncMlVersion>,
        retype: fn(Option<&mut Meta>),
    ) -> Builder<'a> {
        Builder {
            limits,
            stack: Vec::with_capacity(16),
            builds: Vec::with_capacity(16),
            text: String::new(),
            version,
            hdr: None,
            body: None,
            root_done: false,
            commands: 0,
            item_marked: false,
            retype,
        }
    }

    /// The document's version, if known.
    pub(crate) fn version(&self) -> Option<SyncMlVersion> {
        self.version
    }

    /// Sets the document's version (from the root namespace).
    pub(crate) fn set_version(&mut self, v: SyncMlVersion) {
        self.version = Some(v);
    }

    /// Whether the root element was closed.
    pub(crate) fn root_done(&self) -> bool {
        self.root_done
    }

    /// The number of open elements.
    pub(crate) fn depth(&self) -> usize {
        self.stack.len()
    }

    /// The innermost open element: its content kind, role and start position.
    pub(crate) fn current(&self) -> Option<(Content, El, usize)> {
        self.stack.last().map(|o| (o.el.content(), o.el, o.at))
    }

    /// The innermost open element.
    pub(crate) fn parent(&self) -> Option<El> {
        self.stack.last().map(|o| o.el)
    }

    /// Fails with [`BuildError::TextTooLarge`] for the innermost open element when `len`
    /// passes the text limit.
    pub(crate) fn check_len(&self, len: usize) -> Result<()> {
        if len > self.limits.max_text_len
            && let Some(open) = self.stack.last()
        {
            return Err(BuildError::TextTooLarge {
                at: open.at,
                element: open.el.name(),
                len,
                limit: self.limits.max_text_len,
            });
        }
        Ok(())
    }

    /// Fails with [`BuildError::TooDeep`] unless one more element fits at `at`.
    pub(crate) fn check_depth(&self, at: usize) -> Result<()> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(BuildError::TooDeep {
                at,
                limit: self.limits.max_depth,
            });
        }
        Ok(())
    }

    /// Opens `el` (already resolved in the innermost open element) at `at`: checks the depth
    /// and duplicates, and prepares its state.
    pub(crate) fn start(&mut self, el: El, at: usize) -> Result<()> {
        self.check_depth(at)?;
        if let Some(open) = self.stack.last_mut() {
            let parent = open.el;
            let bit = el.bit();
            if open.seen & bit != 0 && el.single_in(parent) {
                return Err(BuildError::Duplicate {
                    at,
                    element: el.name(),
                    parent: parent.name(),
                });
            }
            open.seen |= bit;
        }
        self.open(el, at)?;
        self.stack.push(Open { el, at, seen: 0 });
        Ok(())
    }

    /// Prepares the state of a newly opened element.
    fn open(&mut self, el: El, at: usize) -> Result<()> {
        match el {
            El::SyncMl => {}
            El::SyncHdr => self.builds.push(Build::Hdr(Box::new(SyncHdr {
                version: self.version.unwrap_or_default(),
                ver_dtd: String::new(),
                ver_proto: String::new(),
                session_id: String::new(),
                msg_id: 0,
                target: LocRef::default(),
                source: LocRef::default(),
                resp_uri: None,
                no_resp: false,
                cred: None,
                meta: None,
            }))),
            El::SyncBody => self.builds.push(Build::Body(SyncBody::default())),
            El::Cmd(_) => {
                self.commands += 1;
                if self.commands > self.limits.max_commands {
                    return Err(BuildError::TooMany {
                        what: "commands",
                        limit: self.limits.max_commands,
                    });
                }
                self.builds.push(Build::Cmd(Box::default()));
            }
            El::Item => {
                self.item_marked = false;
                self.builds.push(Build::Item(Box::default()));
            }
            El::Target | El::Source => self.builds.push(Build::Loc(LocRef::default())),
            El::Meta => self.builds.push(Build::Meta(Meta::default())),
            El::Cred => self.builds.push(Build::Cred(Cred::default())),
            El::Chal => self.builds.push(Build::Chal(Chal::default())),
            El::NoResp => match self.builds.last_mut() {
                Some(Build::Hdr(h)) => h.no_resp = true,
                Some(Build::Cmd(c)) => c.no_resp = true,
                _ => return Err(BuildError::Internal { at }),
            },
            El::Final => match self.builds.last_mut() {
                Some(Build::Body(b)) => b.is_final = true,
                _ => return Err(BuildError::Internal { at }),
            },
            El::MoreData => match self.builds.last_mut() {
                Some(Build::Item(i)) => i.more_data = true,
                _ => return Err(BuildError::Internal { at }),
            },
            El::ItemData
            | El::VerDtd
            | El::VerProto
            | El::SessionId
            | El::MsgId
            | El::RespUri
            | El::LocUri
            | El::LocName
            | El::MetInf(_)
            | El::CmdId
            | El::MsgRef
            | El::CmdRef
            | El::CmdName
            | El::TargetRef
            | El::SourceRef
            | El::Correlator
            | El::Data => self.text.clear(),
        }
        Ok(())
    }

    fn missing(element: &'static str, open: &Open) -> BuildError {
        BuildError::Missing {
            at: open.at,
            element,
            parent: open.el.name(),
        }
    }

    /// Fails with [`BuildError::Missing`] for the first of `required` not seen in `open`.
    fn require(open: &Open, required: &[El]) -> Result<()> {
        match required.iter().find(|el| open.seen & el.bit() == 0) {
            Some(el) => Err(Self::missing(el.name(), open)),
            None => Ok(()),
        }
    }

    fn bad_value(what: &'static str, value: &str, at: usize) -> BuildError {
        BuildError::BadValue {
            at,
            what,
            value: shorten(value),
        }
    }

    fn take_trimmed(&mut self) -> String {
        take_trimmed(&mut self.text)
    }

    fn take_number<T: std::str::FromStr>(&mut self, what: &'static str, at: usize) -> Result<T> {
        let text = trim_xml(&self.text);
        number(text).ok_or_else(|| Self::bad_value(what, text, at))
    }

    fn top(&mut self, at: usize) -> Result<&mut Build> {
        self.builds.last_mut().ok_or(BuildError::Internal { at })
    }

    fn top_hdr(&mut self, at: usize) -> Result<&mut SyncHdr> {
        match self.builds.last_mut() {
            Some(Build::Hdr(h)) => Ok(h),
            _ => Err(BuildError::Internal { at }),
        }
    }

    fn top_cmd(&mut self, at: usize) -> Result<&mut CmdBuild> {
        match self.builds.last_mut() {
            Some(Build::Cmd(c)) => Ok(c),
            _ => Err(BuildError::Internal { at }),
        }
    }

    fn top_loc(&mut self, at: usize) -> Result<&mut LocRef> {
        match self.builds.last_mut() {
            Some(Build::Loc(l)) => Ok(l),
            _ => Err(BuildError::Internal { at }),
        }
    }

    fn top_meta(&mut self, at: usize) -> Result<&mut Meta> {
        match self.builds.last_mut() {
            Some(Build::Meta(m)) => Ok(m),
            _ => Err(BuildError::Internal { at }),
        }
    }

    /// Closes the innermost element at `at`. Closing `Item/Data` takes its value, computed by
    /// the front end, in `item_data`, with whether it is marked (then [`Builder::new`]'s
    /// `retype` applies to the `Meta` of its item and command).
    pub(crate) fn end(&mut self, at: usize, item_data: Option<(Data, bool)>) -> Result<()> {
        let Some(open) = self.stack.pop() else {
            return Err(BuildError::Unbalanced { at });
        };
        let start = open.at;
        match open.el {
            El::SyncMl => {
                Self::require(&open, &[El::SyncHdr, El::SyncBody])?;
                self.root_done = true;
            }
            El::SyncHdr => {
                Self::require(
                    &open,
                    &[
                        El::VerDtd,
                        El::VerProto,
                        El::SessionId,
                        El::MsgId,
                        El::Target,
                        El::Source,
                    ],
                )?;
                let Some(Build::Hdr(mut hdr)) = self.builds.pop() else {
                    return Err(BuildError::Internal { at });
                };
                if self.version.is_none() {
                    hdr.version = SyncMlVersion::from_ver_dtd(&hdr.ver_dtd)
                        .ok_or_else(|| Self::bad_value("VerDTD", &hdr.ver_dtd, start))?;
                }
                self.hdr = Some(*hdr);
            }
            El::SyncBody => {
                let Some(Build::Body(body)) = self.builds.pop() else {
                    return Err(BuildError::Internal { at });
                };
                self.body = Some(body);
            }
            El::Cmd(kind) => self.end_command(kind, &open, at)?,
            El::Item => {
                let Some(Build::Item(item)) = self.builds.pop() else {
                    return Err(BuildError::Internal { at });
                };
                let mut item = *item;
                let marked = std::mem::take(&mut self.item_marked);
                if marked {
                    (self.retype)(item.meta.as_mut());
                }
                let cmd = self.top_cmd(at)?;
                cmd.marked |= marked;
                cmd.items.push(item);
            }
            El::Target | El::Source => {
                Self::require(&open, &[El::LocUri])?;
                let Some(Build::Loc(loc)) = self.builds.pop() else {
                    return Err(BuildError::Internal { at });
                };
                let is_target = open.el == El::Target;
                match self.top(at)? {
                    Build::Hdr(h) if is_target => h.target = loc,
                    Build::Hdr(h) => h.source = loc,
                    Build::Item(i) if is_target => i.target = Some(loc),
                    Build::Item(i) => i.source = Some(loc),
                    _ => return Err(BuildError::Internal { at }),
                }
            }
            El::Meta => {
                let Some(Build::Meta(meta)) = self.builds.pop() else {
                    return Err(BuildError::Internal { at });
                };
                match self.top(at)? {
                    Build::Hdr(h) => h.meta = Some(meta),
                    Build::Cmd(c) => c.meta = Some(meta),
                    Build::Item(i) => i.meta = Some(meta),
                    Build::Cred(c) => c.meta = meta,
                    Build::Chal(c) => c.meta = meta,
                    _ => return Err(BuildError::Internal { at }),
                }
            }
            El::Cred => {
                Self::require(&open, &[El::Data])?;
                let Some(Build::Cred(cred)) = self.builds.pop() else {
                    return Err(BuildError::Internal { at });
                };
                match self.top(at)? {
                    Build::Hdr(h) => h.cred = Some(cred),
                    Build::Cmd(c) => c.cred = Some(cred),
                    _ => return Err(BuildError::Internal { at }),
                }
            }
            El::Chal => {
                Self::require(&open, &[El::Meta])?;
                let Some(Build::Chal(chal)) = self.builds.pop() else {
                    return Err(BuildError::Internal { at });
                };
                self.top_cmd(at)?.chal = Some(chal);
            }
            El::NoResp | El::Final | El::MoreData => {}
            El::VerDtd => {
                let v = self.take_trimmed();
                self.top_hdr(at)?.ver_dtd = v;
            }
            El::VerProto => {
                let v = self.take_trimmed();
                self.top_hdr(at)?.ver_proto = v;
            }
            El::SessionId => {
                let v = self.take_trimmed();
                self.top_hdr(at)?.session_id = v;
            }
            El::MsgId => {
                let v = self.take_number("MsgID", start)?;
                self.top_hdr(at)?.msg_id = v;
            }
            El::RespUri => {
                let v = self.take_trimmed();
                self.top_hdr(at)?.resp_uri = Some(v);
            }
            El::LocUri => {
                let v = self.take_trimmed();
                self.top_loc(at)?.loc_uri = v;
            }
            El::LocName => {
                let v = self.take_trimmed();
                self.top_loc(at)?.loc_name = Some(v);
            }
            El::MetInf(field) => {
                let (text, num) = match field {
                    MetField::Size | MetField::MaxMsgSize | MetField::MaxObjSize => {
                        (None, Some(self.take_number::<u64>(field.name(), start)?))
                    }
                    _ => (Some(self.take_trimmed()), None),
                };
                let meta = self.top_meta(at)?;
                match field {
                    MetField::Format => meta.format = text,
                    MetField::Type => meta.ty = text,
                    MetField::Mark => meta.mark = text,
                    MetField::NextNonce => meta.next_nonce = text,
                    MetField::Version => meta.version = text,
                    MetField::Size => meta.size = num,
                    MetField::MaxMsgSize => meta.max_msg_size = num,
                    MetField::MaxObjSize => meta.max_obj_size = num,
                }
            }
            El::CmdId => {
                let v = self.take_number("CmdID", start)?;
                self.top_cmd(at)?.cmd_id = v;
            }
            El::MsgRef => {
                let v = self.take_number("MsgRef", start)?;
                self.top_cmd(at)?.msg_ref = Some(v);
            }
            El::CmdRef => {
                let v = self.take_number("CmdRef", start)?;
                self.top_cmd(at)?.cmd_ref = Some(v);
            }
            El::CmdName => {
                let v = self.take_trimmed();
                self.top_cmd(at)?.cmd = Some(v);
            }
            El::TargetRef => {
                let v = self.take_trimmed();
                self.top_cmd(at)?.target_refs.push(v);
            }
            El::SourceRef => {
                let v = self.take_trimmed();
                self.top_cmd(at)?.source_refs.push(v);
            }
            El::Correlator => {
                let v = self.take_trimmed();
                self.top_cmd(at)?.correlator = Some(v);
            }
            El::Data => {
                let parent = self.stack.last().map(|o| o.el);
                if parent == Some(El::Cmd(CmdKind::Status)) {
                    let code = self.take_number::<u16>("status code", start)?;
                    self.top_cmd(at)?.code = Some(StatusCode(code));
                } else {
                    let v = self.take_trimmed();
                    match self.top(at)? {
                        Build::Cmd(c) => c.data = Some(v),
                        Build::Cred(c) => c.data = v,
                        _ => return Err(BuildError::Internal { at }),
                    }
                }
            }
            El::ItemData => {
                let Some((data, marked)) = item_data else {
                    return Err(BuildError::Internal { at });
                };
                self.item_marked = marked;
                match self.top(at)? {
                    Build::Item(i) => i.data = Some(data),
                    _ => return Err(BuildError::Internal { at }),
                }
            }
        }
        Ok(())
    }

    fn end_command(&mut self, kind: CmdKind, open: &Open, at: usize) -> Result<()> {
        let Some(Build::Cmd(b)) = self.builds.pop() else {
            return Err(BuildError::Internal { at });
        };
        Self::require(open, &[El::CmdId])?;
        let mut b = *b;
        if b.marked {
            (self.retype)(b.meta.as_mut());
        }
        let item_cmd = |b: CmdBuild| ItemCmd {
            cmd_id: b.cmd_id,
            no_resp: b.no_resp,
            cred: b.cred,
            meta: b.meta,
            items: b.items,
        };
        let container = |b: CmdBuild| Container {
            cmd_id: b.cmd_id,
            no_resp: b.no_resp,
            meta: b.meta,
            commands: b.commands,
        };
        let command = match kind {
            CmdKind::Add => Command::Add(item_cmd(b)),
            CmdKind::Replace => Command::Replace(item_cmd(b)),
            CmdKind::Delete => Command::Delete(item_cmd(b)),
            CmdKind::Get => Command::Get(item_cmd(b)),
            CmdKind::Copy => Command::Copy(item_cmd(b)),
            CmdKind::Atomic => Command::Atomic(container(b)),
            CmdKind::Sequence => Command::Sequence(container(b)),
            CmdKind::Alert => Command::Alert(Alert {
                cmd_id: b.cmd_id,
                no_resp: b.no_resp,
                cred: b.cred,
                data: b.data,
                correlator: b.correlator,
                items: b.items,
            }),
            CmdKind::Exec => {
                let mut items = b.items;
                let Some(item) = items.pop() else {
                    return Err(Self::missing("Item", open));
                };
                Command::Exec(Exec {
                    cmd_id: b.cmd_id,
                    no_resp: b.no_resp,
                    cred: b.cred,
                    meta: b.meta,
                    correlator: b.correlator,
                    item,
                })
            }
            CmdKind::Results => {
                let Some(cmd_ref) = b.cmd_ref else {
                    return Err(Self::missing("CmdRef", open));
                };
                let mut target_refs = b.target_refs;
                let mut source_refs = b.source_refs;
                Command::Results(Results {
                    cmd_id: b.cmd_id,
                    msg_ref: b.msg_ref,
                    cmd_ref,
                    meta: b.meta,
                    target_ref: target_refs.pop(),
                    source_ref: source_refs.pop(),
                    items: b.items,
                })
            }
            CmdKind::Status => {
                Self::require(open, &[El::MsgRef, El::CmdName, El::Data])?;
                let (Some(msg_ref), Some(cmd), Some(data)) = (b.msg_ref, b.cmd, b.code) else {
                    return Err(BuildError::Internal { at });
                };
                // The Status of a SyncHdr refers to command 0; some senders omit it.
                let cmd_ref = match b.cmd_ref {
                    Some(r) => r,
                    None if cmd == "SyncHdr" => 0,
                    None => return Err(Self::missing("CmdRef", open)),
                };
                Command::Status(Status {
                    cmd_id: b.cmd_id,
                    msg_ref,
                    cmd_ref,
                    cmd,
                    target_refs: b.target_refs,
                    source_refs: b.source_refs,
                    cred: b.cred,
                    chal: b.chal,
                    data,
                    items: b.items,
                })
            }
        };
        match self.top(at)? {
            Build::Body(body) => body.commands.push(command),
            Build::Cmd(parent) => parent.commands.push(command),
            _ => return Err(BuildError::Internal { at }),
        }
        Ok(())
    }

    /// The message, once the root element was closed.
    pub(crate) fn finish(self) -> Option<SyncMl> {
        match (self.hdr, self.body) {
            (Some(hdr), Some(body)) => Some(SyncMl { hdr, body }),
            _ => None,
        }
    }
}
