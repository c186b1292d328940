//! The commands a device performs on its tree for an authenticated server: Add, Replace,
//! Delete, Get, Exec and Copy, each checked against the ACLs for the acting ServerID and
//! answered with the exact SyncML status (OMA DM 1.2 RepPro 6.6 and TND 8).
//!
//! Every operation returns `Ok` (status 200) or an [`OpError`] whose [`OpError::status`] is
//! the code the device sends back. A failed operation changes nothing.

use base64::Engine as _;

use super::acl::{Acl, AclCmd};
use super::props::{AccessKind, Format, NodeType, Scope};
use super::status::StatusCode;
use super::tree::{DmTree, NodeId, NodeProps, Principal, tstamp_from_unix};
use super::uri::{ListKind, NodeUri, Query, Target};

/// Why a device refused a command, with the status code it answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// 404: no node at the target.
    #[error("no node at {uri}")]
    NotFound {
        /// The target.
        uri: String,
    },
    /// 405: the command is not allowed on this node.
    #[error("{cmd} is not allowed on {uri}: {reason}")]
    NotAllowed {
        /// The command.
        cmd: &'static str,
        /// The target.
        uri: String,
        /// Why, in plain words.
        reason: &'static str,
    },
    /// 406: an unsupported property or optional feature.
    #[error("{what} is not supported")]
    NotSupported {
        /// What was asked for.
        what: String,
    },
    /// 418: the node already exists.
    #[error("{uri} already exists")]
    AlreadyExists {
        /// The target.
        uri: String,
    },
    /// 425: the ACL denies the command to this server.
    #[error("server {server} may not {cmd} at {uri}")]
    PermissionDenied {
        /// The acting ServerID.
        server: String,
        /// The command (for an ACL change: "Replace ACL").
        cmd: &'static str,
        /// The target.
        uri: String,
    },
    /// 400: the command is malformed (bad ACL text, value not valid for its format...).
    #[error("bad request: {reason}")]
    BadRequest {
        /// Why.
        reason: String,
    },
    /// 414: the URI breaks the device's limits.
    #[error("URI refused: {reason}")]
    UriTooLong {
        /// Why.
        reason: String,
    },
    /// 413: the value is too large.
    #[error("a value of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// 420: the tree is full.
    #[error("the device is full ({limit} nodes)")]
    DeviceFull {
        /// The node limit.
        limit: usize,
    },
    /// 500: the command failed on the device.
    #[error("the command failed: {reason}")]
    CommandFailed {
        /// Why.
        reason: String,
    },
    /// 415: the data's media type or format is not supported.
    #[error("unsupported media type or format: {what}")]
    UnsupportedMedia {
        /// What.
        what: String,
    },
}

impl OpError {
    /// The SyncML status the device answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            OpError::NotFound { .. } => StatusCode::NOT_FOUND,
            OpError::NotAllowed { .. } => StatusCode::COMMAND_NOT_ALLOWED,
            OpError::NotSupported { .. } => StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED,
            OpError::AlreadyExists { .. } => StatusCode::ALREADY_EXISTS,
            OpError::PermissionDenied { .. } => StatusCode::PERMISSION_DENIED,
            OpError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            OpError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            OpError::TooLarge { .. } => StatusCode::REQUEST_ENTITY_TOO_LARGE,
            OpError::DeviceFull { .. } => StatusCode::DEVICE_FULL,
            OpError::UnsupportedMedia { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            OpError::CommandFailed { .. } => StatusCode::COMMAND_FAILED,
        }
    }
}

/// The status a command earned: 200 on success, else the error's code.
pub fn status_of<T>(result: &Result<T, OpError>) -> StatusCode {
    match result {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status(),
    }
}

/// The content of an Add or Replace item: the value with its Meta Format and Type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeData {
    /// Meta Format; `None` means `chr` for an Add and "unchanged" for a Replace.
    pub format: Option<Format>,
    /// Meta Type (MIME type of a leaf, MO identifier of an interior node).
    pub ty: Option<String>,
    /// The value (already decoded from base64 when Format is `b64`). Empty for interior nodes.
    pub value: Vec<u8>,
}

impl NodeData {
    /// A text leaf (`chr`, `text/plain`).
    pub fn text(value: impl Into<String>) -> NodeData {
        NodeData {
            format: Some(Format::Chr),
            ty: Some("text/plain".to_owned()),
            value: value.into().into_bytes(),
        }
    }

    /// An interior node, optionally with an MO type.
    pub fn interior(ty: Option<&str>) -> NodeData {
        NodeData {
            format: Some(Format::Node),
            ty: ty.map(str::to_owned),
            value: Vec::new(),
        }
    }

    /// A leaf with an explicit format and MIME type.
    pub fn leaf(format: Format, mime: &str, value: impl Into<Vec<u8>>) -> NodeData {
        NodeData {
            format: Some(format),
            ty: Some(mime.to_owned()),
            value: value.into(),
        }
    }
}

/// One item of a Get's Results: the node (or property) addressed, its Meta and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultItem {
    /// Source LocURI of the item (the node URI, with the query when one was asked).
    pub source: String,
    /// Meta Format.
    pub format: Format,
    /// Meta Type (may be empty).
    pub ty: String,
    /// The data; for Format `b64` these are the raw bytes, base64-encoded on the wire.
    pub data: Vec<u8>,
}

/// Longest Title property, in bytes (TND 8.3).
pub(crate) const MAX_TITLE: usize = 255;

fn who_name(who: Principal<'_>) -> String {
    match who {
        Principal::Device => "the device".to_owned(),
        Principal::Server(s) => s.to_owned(),
    }
}

fn denied(who: Principal<'_>, cmd: &'static str, uri: &NodeUri) -> OpError {
    OpError::PermissionDenied {
        server: who_name(who),
        cmd,
        uri: uri.to_string(),
    }
}

fn not_allowed(cmd: &'static str, uri: &NodeUri, reason: &'static str) -> OpError {
    OpError::NotAllowed {
        cmd,
        uri: uri.to_string(),
        reason,
    }
}

fn now_stamp(now: Option<i64>) -> Option<String> {
    now.map(tstamp_from_unix)
}

impl DmTree {
    fn check_uri(&self, uri: &NodeUri) -> Result<(), OpError> {
        self.limits()
            .uri
            .check(uri)
            .map_err(|e| OpError::UriTooLong {
                reason: e.to_string(),
            })
    }

    fn lookup(&self, uri: &NodeUri) -> Result<NodeId, OpError> {
        self.find(uri).ok_or_else(|| OpError::NotFound {
            uri: uri.to_string(),
        })
    }

    fn check_value_len(&self, len: usize) -> Result<(), OpError> {
        let limit = self.limits().max_value_len;
        if len > limit {
            return Err(OpError::TooLarge { len, limit });
        }
        Ok(())
    }

    fn check_access(&self, id: NodeId, kind: AccessKind, cmd: &'static str) -> Result<(), OpError> {
        if self.props(id).access.contains(kind) {
            Ok(())
        } else {
            Err(not_allowed(
                cmd,
                &self.uri_of(id),
                "the node's description does not allow it",
            ))
        }
    }

    /// Add: creates the node at `target`, with missing interior ancestors (which get an empty
    /// ACL, so they inherit). Checked against Add on the nearest existing ancestor. A server
    /// without Replace on the parent of a new interior node gets Add, Delete and Replace on it
    /// (TND 8.3.7.1.3), so it can manage what it created.
    pub fn add(
        &mut self,
        who: Principal<'_>,
        target: &Target,
        data: &NodeData,
        now: Option<i64>,
    ) -> Result<NodeId, OpError> {
        let uri = &target.uri;
        if target.query.is_some() {
            return Err(not_allowed("Add", uri, "properties cannot be added"));
        }
        self.check_uri(uri)?;
        if self.exists(uri) {
            return Err(OpError::AlreadyExists {
                uri: uri.to_string(),
            });
        }
        let (ancestor, missing) = self.nearest_existing(uri);
        self.create_below(who, ancestor, missing, uri, data, now)
    }

    /// Add of `uri` when the caller knows `parent`, the node `uri` names without its last
    /// segment (a TNDS document adds each node under the one created before it): the same
    /// checks and outcome as [`DmTree::add`], without looking the path up from the root twice.
    pub(crate) fn add_child(
        &mut self,
        who: Principal<'_>,
        parent: NodeId,
        uri: &NodeUri,
        data: &NodeData,
        now: Option<i64>,
    ) -> Result<NodeId, OpError> {
        self.check_uri(uri)?;
        let name = uri
            .segments()
            .last()
            .map(String::as_str)
            .unwrap_or_default();
        if self.child(parent, name).is_some() {
            return Err(OpError::AlreadyExists {
                uri: uri.to_string(),
            });
        }
        self.create_below(who, parent, 1, uri, data, now)
    }

    /// The creating half of Add: the last `missing` segments of `uri` below `ancestor`, the
    /// nearest existing node of `uri`.
    fn create_below(
        &mut self,
        who: Principal<'_>,
        ancestor: NodeId,
        missing: usize,
        uri: &NodeUri,
        data: &NodeData,
        now: Option<i64>,
    ) -> Result<NodeId, OpError> {
        if self.is_leaf(ancestor) {
            return Err(not_allowed("Add", uri, "the parent is a leaf node"));
        }
        if !self.allowed(who, ancestor, AclCmd::Add) {
            return Err(denied(who, "Add", uri));
        }
        let format = data.format.unwrap_or(Format::Chr);
        let interior = format == Format::Node;
        if interior && !data.value.is_empty() {
            return Err(OpError::BadRequest {
                reason: "an interior node (Format node) cannot carry a value".into(),
            });
        }
        self.check_value_len(data.value.len())?;
        if self.len() + missing > self.limits().max_nodes {
            return Err(OpError::DeviceFull {
                limit: self.limits().max_nodes,
            });
        }
        let stamp = now_stamp(now);
        let segments = uri.segments();
        let mut parent = ancestor;
        for (i, seg) in segments[segments.len() - missing..].iter().enumerate() {
            let last = i + 1 == missing;
            let is_interior = !last || interior;
            let mut props = if is_interior {
                let mut p = NodeProps::interior();
                if last && let Some(ty) = &data.ty {
                    p.ty = NodeType::DdfName(ty.clone());
                }
                p
            } else {
                NodeProps::leaf(format, data.ty.as_deref().unwrap_or("text/plain"))
            };
            props.tstamp = stamp.clone();
            if is_interior
                && let Principal::Server(server) = who
                && !self.allowed(who, parent, AclCmd::Replace)
            {
                props.acl =
                    Acl::for_server(server, &[AclCmd::Add, AclCmd::Delete, AclCmd::Replace])
                        .map_err(|e| OpError::BadRequest {
                            reason: e.to_string(),
                        })?;
            }
            let value = (!is_interior).then(|| data.value.clone());
            parent = self.insert_child(parent, seg, props, value);
        }
        Ok(parent)
    }

    /// Replace: a leaf's value, or one property (`?prop=ACL`, `Name`, `Title`). Replace never
    /// creates a node (404). Format, Type, Size, TStamp and VerNo cannot be replaced (405).
    pub fn replace(
        &mut self,
        who: Principal<'_>,
        target: &Target,
        data: &NodeData,
        now: Option<i64>,
    ) -> Result<(), OpError> {
        let uri = &target.uri;
        let id = self.lookup(uri)?;
        match &target.query {
            None => self.replace_value(who, id, uri, data, now),
            Some(Query::Prop(prop)) => self.replace_prop(who, id, uri, prop, data),
            Some(Query::List(_)) => {
                Err(not_allowed("Replace", uri, "a listing cannot be replaced"))
            }
        }
    }

    fn replace_value(
        &mut self,
        who: Principal<'_>,
        id: NodeId,
        uri: &NodeUri,
        data: &NodeData,
        now: Option<i64>,
    ) -> Result<(), OpError> {
        if !self.is_leaf(id) {
            return Err(not_allowed(
                "Replace",
                uri,
                "an interior node has no value (replace a subtree with TNDS)",
            ));
        }
        self.check_access(id, AccessKind::Replace, "Replace")?;
        if !self.allowed(who, id, AclCmd::Replace) {
            return Err(denied(who, "Replace", uri));
        }
        if data.format == Some(Format::Node) {
            return Err(OpError::BadRequest {
                reason: "a leaf cannot become an interior node".into(),
            });
        }
        self.check_value_len(data.value.len())?;
        let props = self.props(id);
        let permanent = props.scope == Scope::Permanent;
        if permanent
            && (data.format.is_some_and(|f| f != props.format)
                || data.ty.as_ref().is_some_and(|t| t != props.ty.as_str()))
        {
            return Err(not_allowed(
                "Replace",
                uri,
                "the Format and Type of a permanent node cannot change",
            ));
        }
        let stamp = now_stamp(now);
        // Nodes replaced together (same second, same VerNo) share their new properties.
        self.update_props(id, |p| {
            if let Some(f) = data.format {
                p.format = f;
            }
            if let Some(t) = &data.ty {
                p.ty = NodeType::Mime(t.clone());
            }
            p.verno = p.verno.wrapping_add(1);
            if stamp.is_some() {
                p.tstamp = stamp;
            }
        });
        self.set_value(id, data.value.clone());
        Ok(())
    }

    fn replace_prop(
        &mut self,
        who: Principal<'_>,
        id: NodeId,
        uri: &NodeUri,
        prop: &str,
        data: &NodeData,
    ) -> Result<(), OpError> {
        let text = || {
            std::str::from_utf8(&data.value).map_err(|_| OpError::BadRequest {
                reason: format!("the {prop} property must be UTF-8 text"),
            })
        };
        match prop {
            "ACL" => {
                let acl = Acl::parse(text()?.trim()).map_err(|e| OpError::BadRequest {
                    reason: e.to_string(),
                })?;
                if !self.may_replace_acl(who, id) {
                    return Err(denied(who, "Replace the ACL of", uri));
                }
                if self.parent(id).is_none() {
                    if acl.is_empty() {
                        return Err(not_allowed("Replace", uri, "the root must keep an ACL"));
                    }
                    let keeps_add = matches!(acl.ids(AclCmd::Add), Some(super::acl::AclIds::Any));
                    if !keeps_add {
                        return Err(not_allowed(
                            "Replace",
                            uri,
                            "the root's Add=* must not change",
                        ));
                    }
                }
                self.update_props(id, |p| p.acl = acl);
                Ok(())
            }
            "Name" => {
                let new_name = text()?;
                let Some(parent) = self.parent(id) else {
                    return Err(not_allowed("Replace", uri, "the root cannot be renamed"));
                };
                if self.props(id).scope == Scope::Permanent {
                    return Err(not_allowed(
                        "Replace",
                        uri,
                        "a permanent node cannot be renamed",
                    ));
                }
                if !self.allowed(who, id, AclCmd::Replace) {
                    return Err(denied(who, "Replace", uri));
                }
                let parent_uri = self.uri_of(parent);
                let new_uri = parent_uri.join(new_name).map_err(|e| OpError::BadRequest {
                    reason: e.to_string(),
                })?;
                self.check_uri(&new_uri)?;
                if new_name == self.name(id) {
                    return Ok(());
                }
                if self.exists(&new_uri) {
                    return Err(OpError::AlreadyExists {
                        uri: new_uri.to_string(),
                    });
                }
                self.rename(id, new_name);
                Ok(())
            }
            "Title" => {
                let title = text()?;
                if title.len() > MAX_TITLE {
                    return Err(OpError::TooLarge {
                        len: title.len(),
                        limit: MAX_TITLE,
                    });
                }
                if !self.allowed(who, id, AclCmd::Replace) {
                    return Err(denied(who, "Replace", uri));
                }
                self.update_props(id, |p| {
                    p.title = (!title.is_empty()).then(|| title.to_owned())
                });
                Ok(())
            }
            "Format" | "Type" | "Size" | "TStamp" | "VerNo" => Err(not_allowed(
                "Replace",
                uri,
                "this property can only be read",
            )),
            other => Err(OpError::NotSupported {
                what: format!("the property {other}"),
            }),
        }
    }

    /// Delete: removes the node and its subtree. The root and permanent nodes (also below the
    /// target) give 405.
    pub fn delete(&mut self, who: Principal<'_>, target: &Target) -> Result<(), OpError> {
        let uri = &target.uri;
        if target.query.is_some() {
            return Err(not_allowed("Delete", uri, "properties cannot be deleted"));
        }
        let id = self.lookup(uri)?;
        if id == self.root() {
            return Err(not_allowed("Delete", uri, "the root cannot be deleted"));
        }
        if self
            .subtree(id)
            .into_iter()
            .any(|n| self.props(n).scope == Scope::Permanent)
        {
            return Err(not_allowed(
                "Delete",
                uri,
                "the subtree holds a permanent node",
            ));
        }
        self.check_access(id, AccessKind::Delete, "Delete")?;
        if !self.allowed(who, id, AclCmd::Delete) {
            return Err(denied(who, "Delete", uri));
        }
        self.remove_subtree(id);
        Ok(())
    }

    /// Exec: checks that `who` may execute the node; what execution does is the device's
    /// business.
    pub fn exec(&self, who: Principal<'_>, target: &Target) -> Result<NodeId, OpError> {
        let uri = &target.uri;
        if target.query.is_some() {
            return Err(not_allowed("Exec", uri, "a property cannot be executed"));
        }
        let id = self.lookup(uri)?;
        self.check_access(id, AccessKind::Exec, "Exec")?;
        if !self.allowed(who, id, AclCmd::Exec) {
            return Err(denied(who, "Exec", uri));
        }
        Ok(id)
    }

    /// Get: a leaf's value, an interior node's child list, a property, or a listing of the
    /// subtree (`?list=Struct`, `StructData`, `TNDS`). `./Inbox` and below give 405.
    pub fn get(&self, who: Principal<'_>, target: &Target) -> Result<Vec<ResultItem>, OpError> {
        let uri = &target.uri;
        if uri.segments().first().is_some_and(|s| s == "Inbox") {
            return Err(not_allowed("Get", uri, "the Inbox cannot be read"));
        }
        let id = self.lookup(uri)?;
        if !self.allowed(who, id, AclCmd::Get) {
            return Err(denied(who, "Get", uri));
        }
        match &target.query {
            None => {
                self.check_access(id, AccessKind::Get, "Get")?;
                Ok(vec![self.node_item(id, uri.to_string(), true)])
            }
            Some(Query::Prop(prop)) => {
                let value = self.prop_value(id, prop)?;
                Ok(vec![ResultItem {
                    source: target.to_string(),
                    format: Format::Chr,
                    ty: "text/plain".to_owned(),
                    data: value.into_bytes(),
                }])
            }
            Some(Query::List(ListKind::Struct)) => Ok(self.struct_items(who, id, false)),
            Some(Query::List(ListKind::StructData)) => Ok(self.struct_items(who, id, true)),
            Some(Query::List(ListKind::Tnds(sel))) => {
                let xml = self.export_tnds_xml(who, uri, &NodeUri::root(), sel)?;
                Ok(vec![ResultItem {
                    source: target.to_string(),
                    format: Format::Xml,
                    ty: super::tree_tnds::TNDS_XML_MIME.to_owned(),
                    data: xml.into_bytes(),
                }])
            }
        }
    }

    fn node_item(&self, id: NodeId, source: String, with_data: bool) -> ResultItem {
        let props = self.props(id);
        let data = match self.value(id) {
            Some(v) if with_data && props.access.contains(AccessKind::Get) => v.to_vec(),
            Some(_) => Vec::new(),
            None if with_data => self.child_names(id).join("/").into_bytes(),
            None => Vec::new(),
        };
        ResultItem {
            source,
            format: props.format,
            ty: props.ty.as_str().to_owned(),
            data,
        }
    }

    fn struct_items(&self, who: Principal<'_>, id: NodeId, with_data: bool) -> Vec<ResultItem> {
        let mut out = Vec::new();
        let mut stack = vec![id];
        while let Some(cur) = stack.pop() {
            if !self.allowed(who, cur, AclCmd::Get) {
                continue;
            }
            let leaf_data = with_data && self.is_leaf(cur);
            out.push(self.node_item(cur, self.uri_of(cur).to_string(), leaf_data));
            let kids: Vec<NodeId> = self.child_ids(cur).collect();
            stack.extend(kids.into_iter().rev());
        }
        out
    }

    fn prop_value(&self, id: NodeId, prop: &str) -> Result<String, OpError> {
        let props = self.props(id);
        Ok(match prop {
            "ACL" => props.acl.to_string(),
            "Format" => props.format.as_str().to_owned(),
            "Name" => self.name(id).to_owned(),
            "Size" => match self.value(id) {
                Some(v) => v.len().to_string(),
                None => {
                    return Err(OpError::NotSupported {
                        what: "Size of an interior node".into(),
                    });
                }
            },
            "Title" => props.title.clone().unwrap_or_default(),
            "TStamp" => props.tstamp.clone().unwrap_or_default(),
            "Type" => props.ty.as_str().to_owned(),
            "VerNo" => props.verno.to_string(),
            other => {
                return Err(OpError::NotSupported {
                    what: format!("the property {other}"),
                });
            }
        })
    }

    /// Copy: copies the node (and its subtree) at `source` to `target`. Needs Get on the source;
    /// onto an existing leaf it is a Replace (Replace right), else an Add (Add right on the
    /// target's parent).
    pub fn copy(
        &mut self,
        who: Principal<'_>,
        source: &Target,
        target: &Target,
        now: Option<i64>,
    ) -> Result<(), OpError> {
        if source.query.is_some() || target.query.is_some() {
            return Err(not_allowed(
                "Copy",
                &target.uri,
                "properties cannot be copied",
            ));
        }
        let src = self.lookup(&source.uri)?;
        // Copy reads the whole source subtree: every node needs the Get right and a description
        // that allows Get, else the copy would be a readable duplicate of what the server may
        // not read.
        for node in self.subtree(src) {
            if !self.allowed(who, node, AclCmd::Get) {
                return Err(denied(who, "Get", &self.uri_of(node)));
            }
            self.check_access(node, AccessKind::Get, "Copy")?;
        }
        if source.uri.contains(&target.uri) {
            return Err(OpError::BadRequest {
                reason: "cannot copy a node into itself".into(),
            });
        }
        if let Some(dst) = self.find(&target.uri) {
            if !(self.is_leaf(dst) && self.is_leaf(src)) {
                return Err(not_allowed(
                    "Copy",
                    &target.uri,
                    "only a leaf can be copied onto an existing leaf",
                ));
            }
            let props = self.props(src);
            let data = NodeData {
                format: Some(props.format),
                ty: Some(props.ty.as_str().to_owned()),
                value: self.value(src).unwrap_or_default().to_vec(),
            };
            return self.replace(who, target, &data, now);
        }
        let parent = target.uri.parent().ok_or_else(|| OpError::AlreadyExists {
            uri: target.uri.to_string(),
        })?;
        let name = target.uri.name().unwrap_or_default();
        let mut doc = self.export_tnds(
            Principal::Device,
            &source.uri,
            &source.uri.parent().unwrap_or_default(),
            &crate::dm::uri::TndsSelection::CONTENT,
        )?;
        if let Some(top) = doc.nodes.first_mut() {
            top.name = name.to_owned();
            top.path = None;
        }
        self.apply_tnds(who, &parent, &doc, super::tree_tnds::TndsMode::Add, now)
    }

    /// Decodes an item's Data according to its Meta Format (base64 for `b64`).
    pub fn decode_data(format: Option<Format>, data: &str) -> Result<Vec<u8>, OpError> {
        match format {
            Some(Format::B64) => base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| OpError::BadRequest {
                    reason: format!("Data is not valid base64: {e}"),
                }),
            _ => Ok(data.as_bytes().to_vec()),
        }
    }
}
