//! TNDS and the DM tree: apply a TNDS document to a tree as one all-or-nothing Add or Replace,
//! export any subtree as TNDS, and load a whole tree (or a DDF description) from a document.
//!
//! Placement follows TND 9.2: a top-level node's `Path` is relative to the target URI of the
//! command that carries the document, and a node without `Path` lands directly under the
//! target. On nested nodes `Path` is ignored (DDF files repeat it). One status covers the whole
//! document: on any failure the tree is left exactly as it was.

use std::borrow::Cow;

use base64::Engine as _;

use super::acl::{Acl, AclCmd};
use super::ops::{NodeData, OpError};
use super::props::{AccessSet, Format, NodeType, Scope};
use super::tnds::{DfProperties, NumText, RtProperties, RtView, TndsDocument, TndsNode};
use super::tree::{DmTree, NodeId, Principal, TreeLimits};
use super::uri::{NodeUri, Target, TndsSelection};
use crate::xmltext::XmlWriter;

/// Media type of TNDS in XML.
pub const TNDS_XML_MIME: &str = "application/vnd.syncml.dmtnds+xml";
/// Media type of TNDS in WBXML.
pub const TNDS_WBXML_MIME: &str = "application/vnd.syncml.dmtnds+wbxml";

/// Deepest subtree an export writes (real trees stay far below it).
pub const MAX_EXPORT_DEPTH: usize = 64;

/// The error for a subtree deeper than [`MAX_EXPORT_DEPTH`].
fn too_deep() -> OpError {
    OpError::NotSupported {
        what: format!("exporting a subtree deeper than {MAX_EXPORT_DEPTH} levels"),
    }
}

/// One step of [`DmTree::export_walk`]: a node and its depth.
enum ExportStep {
    Open(NodeId, usize),
    Close(NodeId, usize),
}

/// Which command carries the TNDS document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TndsMode {
    /// Add: every node is created; an existing node gives 418.
    Add,
    /// Replace: each top-level node must exist; its subtree is replaced by the document's.
    Replace,
}

fn bad(reason: impl Into<String>) -> OpError {
    OpError::BadRequest {
        reason: reason.into(),
    }
}

/// What a TNDS node says about itself once defaults are applied.
struct Shape {
    format: Format,
    ty: Option<String>,
    value: Vec<u8>,
}

fn shape(node: &TndsNode) -> Result<Shape, OpError> {
    let rt = node.rt.as_ref();
    let df = node.df.as_ref();
    if let Some(title) = rt.and_then(|r| r.title.as_ref())
        && title.len() > super::ops::MAX_TITLE
    {
        return Err(OpError::TooLarge {
            len: title.len(),
            limit: super::ops::MAX_TITLE,
        });
    }
    let format = rt
        .and_then(|r| r.format)
        .or_else(|| df.and_then(|d| d.df_format))
        .unwrap_or(
            if node.value.is_some() || node.children.is_empty() && has_leaf_hint(node) {
                Format::Chr
            } else {
                Format::Node
            },
        );
    if format == Format::Node && node.value.is_some() {
        return Err(bad(format!(
            "node `{}` has Format node and a Value",
            node.name
        )));
    }
    if format != Format::Node && !node.children.is_empty() {
        return Err(bad(format!(
            "node `{}` has child nodes but Format {}",
            node.name, format
        )));
    }
    let ty = rt
        .and_then(|r| r.ty.as_ref())
        .or_else(|| df.and_then(|d| d.df_type.as_ref()))
        .map(|t| t.as_str().to_owned());
    let text = node
        .value
        .as_deref()
        .or_else(|| df.and_then(|d| d.default_value.as_deref()));
    let value = match (format, text) {
        (Format::Node, _) | (_, None) => Vec::new(),
        (Format::B64, Some(t)) => base64::engine::general_purpose::STANDARD
            .decode(t.trim())
            .map_err(|e| {
                bad(format!(
                    "node `{}`: Value is not valid base64: {e}",
                    node.name
                ))
            })?,
        (_, Some(t)) => t.as_bytes().to_vec(),
    };
    Ok(Shape { format, ty, value })
}

/// A node with a MIME Type but neither Value nor children is an empty leaf.
fn has_leaf_hint(node: &TndsNode) -> bool {
    matches!(
        node.rt.as_ref().and_then(|r| r.ty.as_ref()),
        Some(NodeType::Mime(_))
    )
}

/// Resolves where a top-level node goes: `target`/`Path`/`NodeName`.
fn placement(target: &NodeUri, node: &TndsNode) -> Result<NodeUri, OpError> {
    let base = match node.path.as_deref().map(str::trim) {
        None | Some("") | Some(".") | Some("./") => target.clone(),
        Some(p) => {
            let rel = NodeUri::parse(p).map_err(|e| bad(format!("Path `{p}`: {e}")))?;
            target.concat(&rel)
        }
    };
    Ok(base)
}

/// A free name for a node whose NodeName is empty (the device assigns it): the smallest
/// positive integer not yet used under `parent`.
fn assign_name(tree: &DmTree, parent: &NodeUri) -> String {
    let taken: Vec<String> = tree
        .find(parent)
        .map(|id| tree.child_names(id))
        .unwrap_or_default();
    (1..)
        .map(|n: u32| n.to_string())
        .find(|n| !taken.contains(n))
        .unwrap_or_default()
}

struct ApplyCtx<'a> {
    who: Principal<'a>,
    now: Option<i64>,
    /// Skip nodes with an empty name (DDF placeholders) instead of naming them.
    skip_unnamed: bool,
    /// ACLs to set once every node exists, so that a node's ACL cannot lock its creator out of
    /// adding the node's own children.
    acls: Vec<(NodeUri, Acl)>,
}

impl DmTree {
    /// Applies a TNDS document at `target` as one Add or Replace. All or nothing: on error the
    /// tree is unchanged and the error's status is the one a plain Add or Replace would give.
    pub fn apply_tnds(
        &mut self,
        who: Principal<'_>,
        target: &NodeUri,
        doc: &TndsDocument,
        mode: TndsMode,
        now: Option<i64>,
    ) -> Result<(), OpError> {
        if doc.nodes.is_empty() {
            return Err(bad("the TNDS document holds no node"));
        }
        let mut work = self.clone();
        let mut ctx = ApplyCtx {
            who,
            now,
            skip_unnamed: false,
            acls: Vec::new(),
        };
        for node in &doc.nodes {
            if node.name == "." {
                return Err(bad("a TNDS command cannot address the root node"));
            }
            let base = placement(target, node)?;
            match mode {
                TndsMode::Add => work.add_tnds_subtree(&mut ctx, &base, node)?,
                TndsMode::Replace => work.replace_tnds_subtree(&mut ctx, &base, node)?,
            }
        }
        work.finish_acls(&mut ctx)?;
        work.shrink_to_fit();
        *self = work;
        Ok(())
    }

    /// Builds a tree from a document as a device loads its own state or a DDF: a top-level node
    /// named `.` describes the root; nodes with an empty name (DDF placeholders for dynamic
    /// instances) are skipped with their subtrees; description properties (AccessType, Scope)
    /// are honoured.
    pub fn from_tnds(doc: &TndsDocument, limits: TreeLimits) -> Result<DmTree, OpError> {
        let mut tree = DmTree::with_limits(limits);
        let mut ctx = ApplyCtx {
            who: Principal::Device,
            now: None,
            skip_unnamed: true,
            acls: Vec::new(),
        };
        let root = NodeUri::root();
        for node in &doc.nodes {
            let base = placement(&root, node)?;
            if node.name == "." {
                if !base.is_root() {
                    return Err(bad("a node named `.` must be the root"));
                }
                let root_id = tree.root();
                tree.set_tnds_props(&mut ctx, root_id, &root, node);
                for child in &node.children {
                    tree.add_tnds_subtree(&mut ctx, &root, child)?;
                }
            } else {
                tree.add_tnds_subtree(&mut ctx, &base, node)?;
            }
        }
        tree.finish_acls(&mut ctx)?;
        tree.shrink_to_fit();
        Ok(tree)
    }

    fn finish_acls(&mut self, ctx: &mut ApplyCtx<'_>) -> Result<(), OpError> {
        for (uri, acl) in ctx.acls.drain(..) {
            let id = self.find(&uri).ok_or_else(|| OpError::NotFound {
                uri: uri.to_string(),
            })?;
            if id == self.root() && acl.is_empty() {
                return Err(bad("the root must keep an ACL"));
            }
            if self.props(id).acl != acl {
                self.update_props(id, |p| p.acl = acl);
            }
        }
        Ok(())
    }

    /// Copies the run-time (and, for the device, description) properties a document gives.
    fn set_tnds_props(
        &mut self,
        ctx: &mut ApplyCtx<'_>,
        id: NodeId,
        uri: &NodeUri,
        node: &TndsNode,
    ) {
        let device = ctx.who == Principal::Device;
        let rt = node.rt.as_ref();
        if let Some(acl) = rt.and_then(|r| r.acl.as_ref()) {
            ctx.acls.push((uri.clone(), acl.clone()));
        }
        let title = rt.and_then(|r| r.title.as_ref());
        let tstamp = rt.and_then(|r| r.tstamp.as_ref()).filter(|_| device);
        let verno = rt
            .and_then(|r| r.verno.as_deref())
            .and_then(|v| v.trim().parse::<u16>().ok())
            .filter(|_| device);
        let ty = rt.and_then(|r| r.ty.as_ref()).filter(|_| id == self.root());
        let df = node.df.as_ref().filter(|_| device);
        let access = df.map(|d| d.access_type).filter(|a| !a.is_empty());
        let scope = df.and_then(|d| d.scope);
        // Most nodes change nothing here: leave their (shared) properties alone.
        let cur = self.props(id);
        let changes = title.is_some_and(|t| cur.title.as_ref() != Some(t))
            || tstamp.is_some_and(|t| cur.tstamp.as_ref() != Some(t))
            || verno.is_some_and(|v| cur.verno != v)
            || ty.is_some_and(|t| cur.ty != *t)
            || access.is_some_and(|a| cur.access != a)
            || scope.is_some_and(|s| cur.scope != s);
        if !changes {
            return;
        }
        self.update_props(id, |p| {
            if let Some(title) = title {
                p.title = Some(title.clone());
            }
            if let Some(ts) = tstamp {
                p.tstamp = Some(ts.clone());
            }
            if let Some(v) = verno {
                p.verno = v;
            }
            if let Some(ty) = ty {
                p.ty = ty.clone();
            }
            if let Some(a) = access {
                p.access = a;
            }
            if let Some(s) = scope {
                p.scope = s;
            }
        });
    }

    /// Adds `node` and its subtree under `base`, iteratively.
    fn add_tnds_subtree(
        &mut self,
        ctx: &mut ApplyCtx<'_>,
        base: &NodeUri,
        node: &TndsNode,
    ) -> Result<(), OpError> {
        // One URI walks the document: a node's name is pushed when it is entered and popped
        // when its subtree is done, so no node's URI is copied from its parent's (that copy,
        // a string per segment, was most of this walk's allocations). A stack entry is a node
        // to enter, with the node this call made for its parent (its children go under it
        // without a lookup), or the way back up.
        enum Walk<'n> {
            Enter(Option<NodeId>, &'n TndsNode),
            Leave,
        }
        let mut uri = base.clone();
        let mut stack = vec![Walk::Enter(None, node)];
        while let Some(step) = stack.pop() {
            let (parent_id, node) = match step {
                Walk::Enter(parent_id, node) => (parent_id, node),
                Walk::Leave => {
                    uri.pop();
                    continue;
                }
            };
            let name = if node.name.is_empty() {
                if ctx.skip_unnamed {
                    continue;
                }
                assign_name(self, &uri)
            } else {
                node.name.clone()
            };
            // (An assigned name is always valid: a failure names the document's.)
            uri.push(name)
                .map_err(|e| bad(format!("NodeName `{}`: {e}", node.name)))?;
            let shape = shape(node)?;
            let data = NodeData {
                format: Some(shape.format),
                ty: shape.ty,
                value: shape.value,
            };
            let id = match parent_id {
                Some(parent_id) => self.add_child(ctx.who, parent_id, &uri, &data, ctx.now)?,
                None => self.add(ctx.who, &Target::from(uri.clone()), &data, ctx.now)?,
            };
            self.set_tnds_props(ctx, id, &uri, node);
            if node.children.is_empty() {
                uri.pop();
            } else {
                stack.push(Walk::Leave);
                for child in node.children.iter().rev() {
                    stack.push(Walk::Enter(Some(id), child));
                }
            }
        }
        Ok(())
    }

    /// Replaces the existing node `base/node.name` with `node`: its sub-nodes are deleted, its
    /// own properties and value replaced, and the document's children added.
    fn replace_tnds_subtree(
        &mut self,
        ctx: &mut ApplyCtx<'_>,
        base: &NodeUri,
        node: &TndsNode,
    ) -> Result<(), OpError> {
        if node.name.is_empty() {
            return Err(bad("a TNDS Replace needs the NodeName of an existing node"));
        }
        let uri = base
            .join(&node.name)
            .map_err(|e| bad(format!("NodeName `{}`: {e}", node.name)))?;
        let id = self.find(&uri).ok_or_else(|| OpError::NotFound {
            uri: uri.to_string(),
        })?;
        let shape = shape(node)?;
        let target = Target::from(uri.clone());
        if let Some(acl) = node.rt.as_ref().and_then(|r| r.acl.as_ref())
            && *acl != self.props(id).acl
            && !self.may_replace_acl(ctx.who, id)
        {
            return Err(OpError::PermissionDenied {
                server: match ctx.who {
                    Principal::Device => "the device".into(),
                    Principal::Server(s) => s.into(),
                },
                cmd: "Replace the ACL of",
                uri: uri.to_string(),
            });
        }
        match (self.is_leaf(id), shape.format == Format::Node) {
            (true, false) => {
                let data = NodeData {
                    format: Some(shape.format),
                    ty: shape.ty,
                    value: shape.value,
                };
                self.replace(ctx.who, &target, &data, ctx.now)?;
            }
            (false, true) => {
                if !self.allowed(ctx.who, id, AclCmd::Replace) {
                    return Err(OpError::PermissionDenied {
                        server: match ctx.who {
                            Principal::Device => "the device".into(),
                            Principal::Server(s) => s.into(),
                        },
                        cmd: "Replace",
                        uri: uri.to_string(),
                    });
                }
                // "Delete the sub-nodes, then Add each node" (TND 9.2): each sub-node is
                // deleted as a plain Delete would be, with its permanence, AccessType and ACL
                // checks (405/425), so a Replace right on the node is not a Delete right below.
                let children: Vec<NodeId> = self.child_ids(id).collect();
                for child in children {
                    let child_uri = self.uri_of(child);
                    self.delete(ctx.who, &Target::from(child_uri))?;
                }
                if let Some(ty) = shape.ty {
                    self.update_props(id, |p| p.ty = NodeType::DdfName(ty));
                }
                for child in &node.children {
                    self.add_tnds_subtree(ctx, &uri, child)?;
                }
            }
            _ => {
                return Err(OpError::NotAllowed {
                    cmd: "Replace",
                    uri: uri.to_string(),
                    reason: "a TNDS Replace cannot turn a leaf into an interior node or back",
                });
            }
        }
        self.set_tnds_props(ctx, id, &uri, node);
        Ok(())
    }

    /// Exports the subtree at `uri` as a TNDS document whose top node's `Path` is relative to
    /// `relative_to` (an ancestor of `uri`, or `uri`'s parent for no Path). Nodes `who` may not
    /// Get are left out with their subtrees, and values whose AccessType forbids Get (secrets)
    /// are left out unless `who` is the device. Exporting the root lists its children as the
    /// document's top-level nodes.
    pub fn export_tnds(
        &self,
        who: Principal<'_>,
        uri: &NodeUri,
        relative_to: &NodeUri,
        sel: &TndsSelection,
    ) -> Result<TndsDocument, OpError> {
        let (tops, path) = self.export_tops(who, uri, relative_to)?;
        let mut doc = TndsDocument::default();
        for top in tops {
            let mut node = self.export_node(who, top, sel)?;
            node.path = path.clone();
            doc.nodes.push(node);
        }
        Ok(doc)
    }

    /// [`DmTree::export_tnds`] written straight to compact XML: the same text as
    /// `export_tnds(..)?.to_xml()`, without building the document first (a device's listing
    /// answers a Get this way).
    pub fn export_tnds_xml(
        &self,
        who: Principal<'_>,
        uri: &NodeUri,
        relative_to: &NodeUri,
        sel: &TndsSelection,
    ) -> Result<String, OpError> {
        let (tops, path) = self.export_tops(who, uri, relative_to)?;
        let mut out = String::with_capacity(4096);
        let mut w = XmlWriter {
            out: &mut out,
            pretty: false,
        };
        w.document_start(super::tnds::VER_DTD, None, None);
        for top in tops {
            self.export_walk(who, top, |step| match step {
                ExportStep::Open(id, depth) => {
                    let (rt, df) = self.node_props(id, sel);
                    let node_path = if id == top { path.as_deref() } else { None };
                    w.node_start(
                        depth,
                        self.name(id),
                        node_path,
                        (!rt.is_empty()).then_some(&rt),
                        df.as_ref(),
                    );
                }
                ExportStep::Close(id, depth) => {
                    w.node_end(depth, self.node_value(who, id, sel).as_deref());
                }
            })?;
        }
        w.document_end();
        Ok(out)
    }

    /// Walks `top` and its subtree as an export writes them, without recursion: each node
    /// `who` may Get is opened (with its depth, `top` at 1) before its children and closed
    /// after them, in document order. Deeper than [`MAX_EXPORT_DEPTH`] is an error.
    fn export_walk(
        &self,
        who: Principal<'_>,
        top: NodeId,
        mut visit: impl FnMut(ExportStep),
    ) -> Result<(), OpError> {
        let mut stack = vec![ExportStep::Open(top, 1)];
        while let Some(step) = stack.pop() {
            let ExportStep::Open(id, depth) = step else {
                visit(step);
                continue;
            };
            if depth > MAX_EXPORT_DEPTH {
                return Err(too_deep());
            }
            visit(step);
            stack.push(ExportStep::Close(id, depth));
            let first = stack.len();
            stack.extend(
                self.child_ids(id)
                    .filter(|c| self.allowed(who, *c, AclCmd::Get))
                    .map(|c| ExportStep::Open(c, depth + 1)),
            );
            stack[first..].reverse();
        }
        Ok(())
    }

    /// What an export of `uri` starts from: the nodes at the top of the document (the root's
    /// children for the root), those `who` may Get, and the `Path` the first level carries.
    fn export_tops(
        &self,
        who: Principal<'_>,
        uri: &NodeUri,
        relative_to: &NodeUri,
    ) -> Result<(Vec<NodeId>, Option<String>), OpError> {
        let id = self.find(uri).ok_or_else(|| OpError::NotFound {
            uri: uri.to_string(),
        })?;
        if !self.allowed(who, id, AclCmd::Get) {
            return Err(OpError::PermissionDenied {
                server: match who {
                    Principal::Device => "the device".into(),
                    Principal::Server(s) => s.into(),
                },
                cmd: "Get",
                uri: uri.to_string(),
            });
        }
        let tops: Vec<NodeId> = if id == self.root() {
            self.child_ids(id)
                .filter(|c| self.allowed(who, *c, AclCmd::Get))
                .collect()
        } else {
            vec![id]
        };
        let path = if id == self.root() {
            None
        } else {
            let parent = uri.parent().unwrap_or_default();
            let rel = parent
                .strip_prefix(relative_to)
                .ok_or_else(|| bad(format!("{relative_to} is not an ancestor of {uri}")))?;
            (!rel.is_root()).then(|| rel.to_relative_string())
        };
        Ok((tops, path))
    }

    /// Builds the TNDS node for `id` and its visible subtree: each node is made when the walk
    /// opens it and attached to its parent when the walk closes it.
    fn export_node(
        &self,
        who: Principal<'_>,
        id: NodeId,
        sel: &TndsSelection,
    ) -> Result<TndsNode, OpError> {
        let mut open: Vec<TndsNode> = Vec::new();
        let mut top = None;
        self.export_walk(who, id, |step| match step {
            ExportStep::Open(n, _) => open.push(self.tnds_node_of(who, n, sel)),
            ExportStep::Close(..) => {
                if let Some(node) = open.pop() {
                    match open.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => top = Some(node),
                    }
                }
            }
        })?;
        top.ok_or_else(|| bad("nothing to export"))
    }

    fn tnds_node_of(&self, who: Principal<'_>, id: NodeId, sel: &TndsSelection) -> TndsNode {
        let (rt, df) = self.node_props(id, sel);
        let value = self.node_value(who, id, sel);
        let text = |n: Option<NumText<'_>>| {
            n.map(|n| match n {
                NumText::Num(n) => n.to_string(),
                NumText::Text(t) => t.to_owned(),
            })
        };
        let rt = RtProperties {
            acl: rt.acl.cloned(),
            format: rt.format,
            name: rt.name.map(str::to_owned),
            size: text(rt.size),
            title: rt.title.map(str::to_owned),
            tstamp: rt.tstamp.map(str::to_owned),
            ty: rt.ty.cloned(),
            verno: text(rt.verno),
        };
        TndsNode {
            name: self.name(id).to_owned(),
            path: None,
            rt: (rt != RtProperties::default()).then_some(rt),
            df,
            children: Vec::new(),
            value: value.map(Cow::into_owned),
        }
    }

    /// What an export writes of one node's properties: its `RTProperties` as `sel` asks,
    /// and its `DFProperties` when `sel` asks for descriptions and the node has any worth
    /// writing.
    fn node_props(&self, id: NodeId, sel: &TndsSelection) -> (RtView<'_>, Option<DfProperties>) {
        let props = self.props(id);
        let value = self.value(id);
        let rt = RtView {
            acl: (sel.acl && !props.acl.is_empty()).then_some(&props.acl),
            format: sel.format.then_some(props.format),
            name: sel.name.then(|| self.name(id)),
            size: match value {
                Some(v) if sel.size => Some(NumText::Num(v.len() as u64)),
                _ => None,
            },
            title: if sel.title {
                props.title.as_deref()
            } else {
                None
            },
            tstamp: if sel.tstamp {
                props.tstamp.as_deref()
            } else {
                None
            },
            ty: sel.ty.then_some(&props.ty),
            verno: sel.verno.then_some(NumText::Num(u64::from(props.verno))),
        };
        let df = (sel.description
            && (props.access != AccessSet::ALL || props.scope == Scope::Permanent))
            .then(|| DfProperties {
                access_type: props.access,
                scope: Some(props.scope),
                ..DfProperties::default()
            });
        (rt, df)
    }

    /// What an export writes of one node's value: as text (base64 for binary formats), when
    /// `sel` asks for values and `who` may read it.
    fn node_value(
        &self,
        who: Principal<'_>,
        id: NodeId,
        sel: &TndsSelection,
    ) -> Option<Cow<'_, str>> {
        let props = self.props(id);
        let may_read =
            who == Principal::Device || props.access.contains(super::props::AccessKind::Get);
        match self.value(id) {
            Some(v) if sel.value && may_read => Some(match props.format {
                Format::B64 => Cow::Owned(base64::engine::general_purpose::STANDARD.encode(v)),
                _ => String::from_utf8_lossy(v),
            }),
            _ => None,
        }
    }
}
