//! The DM tree a device holds: interior and leaf nodes with their run-time properties, ACL
//! evaluation with inheritance, and ACL maintenance (grant, revoke, remove a ServerID).
//!
//! Nodes live in an arena (`Vec` of slots), so deep trees need no recursion to walk, clone or
//! drop. The commands a device performs for a server (Add, Replace, Delete, Get, Exec, Copy)
//! are in [`super::ops`]; TNDS import and export in [`super::tree_tnds`].
//!
//! A lab holds tens of thousands of trees, so a node is kept small: an interior node lists its
//! children sorted by name, each as its id and a key made from the start of its name (so a
//! lookup seldom needs to visit a child to compare names), and properties are shared, copy on
//! write, between nodes that have the same ones (most leaves of a tree look alike, and so do
//! most interior nodes), between a tree and its clones, and between trees (a lab's devices
//! hold the same ACLs and MO types).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use super::acl::{Acl, AclCmd, AclError};
use super::props::{AccessSet, Format, NodeType, Scope};
use super::uri::{NodeUri, UriLimits};

/// Index of a node in the tree's arena. Only valid for the tree that returned it, until the
/// node is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

/// Who performs an operation on the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal<'a> {
    /// The device itself (its own set-up, a bootstrap it accepted): ACLs do not apply.
    Device,
    /// A DM server, authenticated under this ServerID: every command is checked against ACLs.
    Server(&'a str),
}

/// Run-time properties of a node (OMA DM 1.2 TND 8.3), plus the description properties the
/// device enforces (AccessType, Scope).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeProps {
    /// The node's own ACL; empty means it inherits its nearest ancestor's.
    pub acl: Acl,
    /// How the value is to be read; `node` for interior nodes.
    pub format: Format,
    /// MIME type (leaf) or MO identifier (interior).
    pub ty: NodeType,
    /// Optional human-readable title (at most 255 bytes).
    pub title: Option<String>,
    /// Time of the last change, ISO 8601 basic UTC (`20010711T163817Z`), when known.
    pub tstamp: Option<String>,
    /// Version number, incremented on every change of the value; wraps at 0xFFFF.
    pub verno: u16,
    /// Permanent nodes cannot be deleted or renamed.
    pub scope: Scope,
    /// Commands the node's description allows at all (a command outside gets 405).
    pub access: AccessSet,
}

impl NodeProps {
    /// Properties of a new interior node: empty ACL, Format `node`, no MO type.
    pub fn interior() -> NodeProps {
        NodeProps {
            acl: Acl::empty(),
            format: Format::Node,
            ty: NodeType::untyped_interior(),
            title: None,
            tstamp: None,
            verno: 0,
            scope: Scope::Dynamic,
            access: AccessSet::ALL,
        }
    }

    /// Properties of a new leaf with the given format and MIME type.
    pub fn leaf(format: Format, mime: &str) -> NodeProps {
        NodeProps {
            format,
            ty: NodeType::Mime(mime.to_owned()),
            ..NodeProps::interior()
        }
    }

    /// The same properties with the given ACL.
    pub fn with_acl(mut self, acl: Acl) -> NodeProps {
        self.acl = acl;
        self
    }

    /// The same properties, permanent.
    pub fn permanent(mut self) -> NodeProps {
        self.scope = Scope::Permanent;
        self
    }

    /// The same properties with a restricted AccessType.
    pub fn with_access(mut self, access: AccessSet) -> NodeProps {
        self.access = access;
        self
    }

    /// The same properties with an MO type (interior nodes).
    pub fn with_type(mut self, ty: NodeType) -> NodeProps {
        self.ty = ty;
        self
    }
}

#[derive(Debug, Clone)]
enum Kind {
    /// The children, sorted by name.
    Interior(Vec<Child>),
    Leaf(Box<[u8]>),
}

/// A child in its parent's list (12 bytes: packed to the id's alignment).
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
struct Child {
    /// [`name_key`] of the child's name.
    key: u64,
    id: NodeId,
}

/// A sort key for a node name: its first 7 bytes (zero-padded) in the high bytes, then its
/// length, or 8 for a longer name. Keys compare the way the names do, except that two long
/// names with the same 7 first bytes have equal keys and must be compared in full; equal keys
/// of short names are equal names.
#[inline]
fn name_key(name: &str) -> u64 {
    let b = name.as_bytes();
    match b.first_chunk::<8>() {
        Some(head) => u64::from_be_bytes(*head) & !0xFF | 8,
        None => {
            let text = b.iter().fold(0u64, |k, c| k << 8 | u64::from(*c));
            // The empty name (never a child's) has key 0.
            text.checked_shl(8 * (8 - b.len() as u32)).unwrap_or(0) | b.len() as u64
        }
    }
}

/// Whether a slot's node has an ACL of its own, known without reading its properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnAcl {
    No,
    Yes,
    /// The properties were handed out for change ([`DmTree::props_mut`]): read them.
    Unknown,
}

impl OwnAcl {
    fn of(props: &NodeProps) -> OwnAcl {
        if props.acl.is_empty() {
            OwnAcl::No
        } else {
            OwnAcl::Yes
        }
    }
}

/// `Slot::parent` of the root.
const NO_PARENT: u32 = u32::MAX;
/// `Slot::parent` of a free slot.
const FREE: u32 = u32::MAX - 1;

/// A node, or a free slot (`parent` is [`FREE`]). `repr(C)`, to keep what an ACL check reads
/// on its way up (`parent`, which also tells whether the slot is in use, and `own_acl`) in
/// its first bytes.
#[derive(Debug, Clone)]
#[repr(C)]
struct Slot {
    /// The parent's index, [`NO_PARENT`] for the root, [`FREE`] for a free slot.
    parent: u32,
    /// Whether `props.acl` is non-empty (ACL inheritance walks up without reading `props`).
    own_acl: OwnAcl,
    /// Shared with the nodes (of this tree, its clones, or [`COMMON_PROPS`]) that have the
    /// same properties.
    props: Arc<NodeProps>,
    name: Box<str>,
    kind: Kind,
}

impl Slot {
    fn parent(&self) -> Option<NodeId> {
        (self.parent != NO_PARENT).then_some(NodeId(self.parent))
    }

    fn in_use(&self) -> bool {
        self.parent != FREE
    }

    /// A free slot: holds nothing of its own on the heap.
    fn free() -> Slot {
        Slot {
            parent: FREE,
            own_acl: OwnAcl::No,
            props: COMMON_PROPS[0].clone(),
            name: Box::from(""),
            kind: Kind::Leaf(Box::new([])),
        }
    }
}

/// The property sets most nodes of most trees have, shared by every tree.
static COMMON_PROPS: LazyLock<[Arc<NodeProps>; 4]> = LazyLock::new(|| {
    let leaf = NodeProps::leaf(Format::Chr, "text/plain");
    [
        Arc::new(NodeProps::interior()),
        Arc::new(leaf.clone()),
        Arc::new(NodeProps::interior().permanent()),
        Arc::new(leaf.permanent()),
    ]
});

/// Property sets shared between trees: those nodes were given that no node nearby had (a lab's
/// devices have the same ACLs and MO types, node for node). Weak, so that a set no tree uses
/// any more goes; dead entries are swept once the table has doubled since the last sweep.
static SHARED_PROPS: LazyLock<Mutex<SharedProps>> = LazyLock::new(Mutex::default);

#[derive(Default)]
struct SharedProps {
    sets: HashMap<NodeProps, Weak<NodeProps>, foldhash::fast::RandomState>,
    /// Entries left by the last sweep.
    swept: usize,
}

/// `props` as a set shared with the other trees.
fn shared_props(props: NodeProps) -> Arc<NodeProps> {
    // Nothing here can panic halfway through a change of the table: a poisoned lock is fine.
    let mut table = SHARED_PROPS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(live) = table.sets.get(&props).and_then(Weak::upgrade) {
        return live;
    }
    if table.sets.len() >= 2 * table.swept.max(256) {
        table.sets.retain(|_, set| set.strong_count() > 0);
        table.swept = table.sets.len();
    }
    let set = Arc::new(props);
    table.sets.insert((*set).clone(), Arc::downgrade(&set));
    set
}

/// Limits a device enforces on its tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLimits {
    /// URI limits (`./DevDetail/URI`).
    pub uri: UriLimits,
    /// Largest value of one leaf, in bytes.
    pub max_value_len: usize,
    /// Most nodes the tree may hold (beyond it: 420 Device full).
    pub max_nodes: usize,
}

impl Default for TreeLimits {
    fn default() -> Self {
        TreeLimits {
            uri: UriLimits::UNLIMITED,
            max_value_len: 1 << 20,
            max_nodes: 1_000_000,
        }
    }
}

/// A DM tree.
#[derive(Debug, Clone)]
pub struct DmTree {
    /// The arena; free slots (listed in `free`) are marked [`FREE`].
    slots: Vec<Slot>,
    free: Vec<u32>,
    len: usize,
    limits: TreeLimits,
}

const ROOT: NodeId = NodeId(0);

impl Default for DmTree {
    fn default() -> Self {
        DmTree::new()
    }
}

impl DmTree {
    /// A tree holding only the root, with the default root ACL `Add=*&Get=*`.
    pub fn new() -> DmTree {
        DmTree::with_limits(TreeLimits::default())
    }

    /// A tree holding only the root, with the given limits.
    pub fn with_limits(limits: TreeLimits) -> DmTree {
        let root = Slot {
            parent: NO_PARENT,
            own_acl: OwnAcl::Yes,
            name: Box::from(""),
            props: Arc::new(
                NodeProps::interior()
                    .with_acl(Acl::default_root())
                    .permanent(),
            ),
            kind: Kind::Interior(Vec::new()),
        };
        DmTree {
            slots: vec![root],
            free: Vec::new(),
            len: 1,
            limits,
        }
    }

    /// The limits this tree enforces.
    pub fn limits(&self) -> &TreeLimits {
        &self.limits
    }

    /// Changes the limits (existing nodes are kept).
    pub fn set_limits(&mut self, limits: TreeLimits) {
        self.limits = limits;
    }

    /// Number of nodes, the root included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the tree holds only its root.
    pub fn is_empty(&self) -> bool {
        self.len == 1
    }

    /// The root's id.
    pub fn root(&self) -> NodeId {
        ROOT
    }

    #[inline]
    fn slot(&self, id: NodeId) -> &Slot {
        match self.slots.get(id.0 as usize) {
            Some(slot) if slot.in_use() => slot,
            _ => panic!("stale NodeId {id:?}"),
        }
    }

    fn slot_mut(&mut self, id: NodeId) -> &mut Slot {
        match self.slots.get_mut(id.0 as usize) {
            Some(slot) if slot.in_use() => slot,
            _ => panic!("stale NodeId {id:?}"),
        }
    }

    /// Where `name` is, or would go, among the sorted `children`. The usual case (a few
    /// children, a short name: keys decide alone) is a scan of the keys, kept small enough to
    /// inline.
    #[inline]
    fn child_pos(&self, children: &[Child], name: &str) -> Result<usize, usize> {
        let key = name_key(name);
        if children.len() > 8 || name.len() > 7 {
            return self.child_pos_search(children, name, key);
        }
        for (i, c) in children.iter().enumerate() {
            match { c.key }.cmp(&key) {
                Ordering::Less => {}
                Ordering::Equal => return Ok(i),
                Ordering::Greater => return Err(i),
            }
        }
        Err(children.len())
    }

    /// [`DmTree::child_pos`] in general: a binary search down to a few children, then a scan.
    fn child_pos_search(&self, children: &[Child], name: &str, key: u64) -> Result<usize, usize> {
        let long = name.len() > 7;
        let order = |c: &Child| match { c.key }.cmp(&key) {
            Ordering::Equal if long => (*self.slot(c.id).name).cmp(name),
            order => order,
        };
        // Everything before `lo` sorts before `name`, everything from `hi` after it.
        let (mut lo, mut hi) = (0, children.len());
        while hi - lo > 8 {
            let mid = lo + (hi - lo) / 2;
            match order(&children[mid]) {
                Ordering::Less => lo = mid + 1,
                Ordering::Equal => return Ok(mid),
                Ordering::Greater => hi = mid,
            }
        }
        for (i, c) in children.iter().enumerate().take(hi).skip(lo) {
            match order(c) {
                Ordering::Less => {}
                Ordering::Equal => return Ok(i),
                Ordering::Greater => return Err(i),
            }
        }
        Err(hi)
    }

    /// The child of `id` named `name` (`None` for a leaf or a missing child).
    #[inline]
    pub fn child(&self, id: NodeId, name: &str) -> Option<NodeId> {
        match &self.slot(id).kind {
            Kind::Interior(children) => self.child_pos(children, name).ok().map(|i| children[i].id),
            Kind::Leaf(_) => None,
        }
    }

    /// Looks up a node below `id` by a relative path of `/`-separated names (`AppAuth/X`);
    /// the empty path is `id` itself.
    pub fn find_below(&self, id: NodeId, path: &str) -> Option<NodeId> {
        if path.is_empty() {
            return Some(id);
        }
        path.split('/')
            .try_fold(id, |cur, name| self.child(cur, name))
    }

    /// Looks up a node.
    pub fn find(&self, uri: &NodeUri) -> Option<NodeId> {
        uri.segments()
            .iter()
            .try_fold(ROOT, |id, seg| self.child(id, seg))
    }

    /// The nearest existing node at or above `uri`, with the number of segments still missing.
    pub fn nearest_existing(&self, uri: &NodeUri) -> (NodeId, usize) {
        let mut id = ROOT;
        for (depth, seg) in uri.segments().iter().enumerate() {
            match self.child(id, seg) {
                Some(child) => id = child,
                None => return (id, uri.depth() - depth),
            }
        }
        (id, 0)
    }

    /// True when a node exists at `uri`.
    pub fn exists(&self, uri: &NodeUri) -> bool {
        self.find(uri).is_some()
    }

    /// A node's URI.
    pub fn uri_of(&self, id: NodeId) -> NodeUri {
        // Most nodes sit fewer than 8 levels down: one allocation.
        let mut names = Vec::with_capacity(8);
        let mut cur = id;
        while let Some(parent) = self.slot(cur).parent() {
            names.push(self.slot(cur).name.to_string());
            cur = parent;
        }
        names.reverse();
        // Names in the tree were checked when their nodes were created.
        NodeUri::from_segments(names).unwrap_or_default()
    }

    /// A node's name (empty for the root).
    pub fn name(&self, id: NodeId) -> &str {
        &self.slot(id).name
    }

    /// A node's parent (`None` for the root).
    pub fn parent(&self, id: NodeId) -> Option<NodeId> {
        self.slot(id).parent()
    }

    /// A node's properties.
    pub fn props(&self, id: NodeId) -> &NodeProps {
        &self.slot(id).props
    }

    /// A node's properties, for the device's own changes (no ACL check). The node gets
    /// properties of its own (they were shared with nodes that had the same ones).
    pub fn props_mut(&mut self, id: NodeId) -> &mut NodeProps {
        let slot = self.slot_mut(id);
        slot.own_acl = OwnAcl::Unknown;
        Arc::make_mut(&mut slot.props)
    }

    /// Gives a node these properties, shared with a node nearby (its parent or a neighbouring
    /// sibling) or a common set that has the same ones.
    pub(crate) fn set_props(&mut self, id: NodeId, props: NodeProps) {
        if *self.slot(id).props == props {
            return;
        }
        let parent = self.slot(id).parent();
        let near = parent.map(|p| self.neighbours(p, &self.slot(id).name, Some(id)));
        let shared = self.share(props, parent, near.unwrap_or_default());
        let slot = self.slot_mut(id);
        slot.own_acl = OwnAcl::of(&shared);
        slot.props = shared;
    }

    /// Changes a node's properties through `change`, keeping them shared when possible: does
    /// nothing when `change` leaves them as they are.
    pub(crate) fn update_props(&mut self, id: NodeId, change: impl FnOnce(&mut NodeProps)) {
        let mut props = (*self.slot(id).props).clone();
        change(&mut props);
        self.set_props(id, props);
    }

    /// The children of `parent` on either side of where `name` is or would go (`me` left out).
    fn neighbours(&self, parent: NodeId, name: &str, me: Option<NodeId>) -> [Option<NodeId>; 2] {
        let Kind::Interior(children) = &self.slot(parent).kind else {
            return [None, None];
        };
        let (before, after) = match self.child_pos(children, name) {
            Ok(i) => (i.checked_sub(1), i + 1),
            Err(i) => (i.checked_sub(1), i),
        };
        let pick = |i: Option<usize>| {
            i.and_then(|i| children.get(i).map(|c| c.id))
                .filter(|c| Some(*c) != me)
        };
        [pick(before), pick(Some(after))]
    }

    /// `props` as shared properties: those of `parent` or of a node in `near` when equal, else
    /// a common set when equal, else the set other trees share.
    fn share(
        &self,
        props: NodeProps,
        parent: Option<NodeId>,
        near: [Option<NodeId>; 2],
    ) -> Arc<NodeProps> {
        let candidates = parent.into_iter().chain(near.into_iter().flatten());
        for c in candidates {
            let theirs = &self.slot(c).props;
            if **theirs == props {
                return theirs.clone();
            }
        }
        COMMON_PROPS
            .iter()
            .find(|p| ***p == props)
            .cloned()
            .unwrap_or_else(|| shared_props(props))
    }

    /// True for a leaf.
    pub fn is_leaf(&self, id: NodeId) -> bool {
        matches!(self.slot(id).kind, Kind::Leaf(_))
    }

    /// A leaf's value (`None` for an interior node).
    pub fn value(&self, id: NodeId) -> Option<&[u8]> {
        match &self.slot(id).kind {
            Kind::Leaf(v) => Some(v.as_ref()),
            Kind::Interior(_) => None,
        }
    }

    /// A leaf's value read as UTF-8 text.
    pub fn value_str(&self, uri: &NodeUri) -> Option<&str> {
        let id = self.find(uri)?;
        std::str::from_utf8(self.value(id)?).ok()
    }

    /// An interior node's children in name order (empty for a leaf).
    pub fn children(&self, id: NodeId) -> impl Iterator<Item = (&str, NodeId)> + '_ {
        let children: &[Child] = match &self.slot(id).kind {
            Kind::Interior(children) => children,
            Kind::Leaf(_) => &[],
        };
        children.iter().map(|c| (&*self.slot(c.id).name, c.id))
    }

    /// An interior node's children in name order, without their names (empty for a leaf).
    pub fn child_ids(&self, id: NodeId) -> impl DoubleEndedIterator<Item = NodeId> + '_ {
        let children: &[Child] = match &self.slot(id).kind {
            Kind::Interior(children) => children,
            Kind::Leaf(_) => &[],
        };
        children.iter().map(|c| c.id)
    }

    /// The names of an interior node's children.
    pub fn child_names(&self, id: NodeId) -> Vec<String> {
        self.children(id).map(|(n, _)| n.to_owned()).collect()
    }

    /// Every node of the subtree at `id`, parents before children (pre-order).
    pub fn subtree(&self, id: NodeId) -> Vec<NodeId> {
        let mut out = Vec::new();
        let mut stack = vec![id];
        while let Some(cur) = stack.pop() {
            out.push(cur);
            if let Kind::Interior(children) = &self.slot(cur).kind {
                // Reverse so that children come out in name order.
                stack.extend(children.iter().rev().map(|c| c.id));
            }
        }
        out
    }

    // ----- ACL evaluation -----

    /// The ACL in force at a node: its own, or the nearest ancestor's non-empty ACL, with the
    /// node that holds it.
    pub fn effective_acl(&self, id: NodeId) -> (&Acl, NodeId) {
        let mut cur = id;
        loop {
            let slot = self.slot(cur);
            let own = match slot.own_acl {
                OwnAcl::No => false,
                OwnAcl::Yes => true,
                OwnAcl::Unknown => !slot.props.acl.is_empty(),
            };
            if own {
                return (&slot.props.acl, cur);
            }
            match slot.parent() {
                Some(p) => cur = p,
                None => return (&slot.props.acl, cur),
            }
        }
    }

    /// True when `who` holds `cmd` at node `id` (the device holds every right).
    pub fn allowed(&self, who: Principal<'_>, id: NodeId, cmd: AclCmd) -> bool {
        match who {
            Principal::Device => true,
            Principal::Server(server) => self.effective_acl(id).0.allows(cmd, server),
        }
    }

    /// True when `server` holds `cmd` at `uri`. For a node that does not exist the question is
    /// asked of its nearest existing ancestor (that is how Add is checked).
    pub fn has_right(&self, uri: &NodeUri, server: &str, cmd: AclCmd) -> bool {
        let (id, _) = self.nearest_existing(uri);
        self.allowed(Principal::Server(server), id, cmd)
    }

    /// True when `who` may replace the ACL of node `id`: for an interior node, Replace on the
    /// node or on its parent; for a leaf, Replace on its parent only; for the root, Replace on
    /// the root (TND 8.3.7.1.3).
    pub fn may_replace_acl(&self, who: Principal<'_>, id: NodeId) -> bool {
        let parent = self.slot(id).parent();
        let via_parent = parent.is_some_and(|p| self.allowed(who, p, AclCmd::Replace));
        match (&self.slot(id).kind, parent) {
            (_, None) => self.allowed(who, id, AclCmd::Replace),
            (Kind::Interior(_), Some(_)) => via_parent || self.allowed(who, id, AclCmd::Replace),
            (Kind::Leaf(_), Some(_)) => via_parent,
        }
    }

    // ----- ACL maintenance (device-level; callers journal before-images) -----

    /// Gives `server` the commands `cmds` on the whole subtree at `uri`: the subtree's root gets
    /// an explicit ACL (its inherited one made explicit, plus the grant) and every descendant
    /// with an ACL of its own gets the grant too, so no descendant shuts the server out.
    /// Returns the before-images of every ACL it changed, for an exact undo.
    pub fn grant_subtree(
        &mut self,
        uri: &NodeUri,
        server: &str,
        cmds: &[AclCmd],
    ) -> Result<Vec<(NodeUri, Acl)>, TreeError> {
        let id = self
            .find(uri)
            .ok_or_else(|| TreeError::NotFound(uri.clone()))?;
        if !super::acl::is_valid_server_id(server) {
            return Err(TreeError::Acl(AclError::InvalidServerId {
                id: server.chars().take(64).collect(),
            }));
        }
        let mut changed = Vec::new();
        for node in self.subtree(id) {
            let current = self.slot(node).props.acl.clone();
            let mut acl = if node == id && current.is_empty() {
                self.effective_acl(node).0.clone()
            } else if current.is_empty() {
                continue;
            } else {
                current.clone()
            };
            for cmd in cmds {
                acl.grant(*cmd, server)?;
            }
            if acl != current {
                changed.push((self.uri_of(node), current));
                self.update_props(node, |p| p.acl = acl);
            }
        }
        Ok(changed)
    }

    /// Takes the commands `cmds` from `server` on the whole subtree at `uri`: the subtree's root
    /// gets its effective ACL made explicit without the server, and every descendant with its own
    /// ACL loses the server too; a command left with no id is dropped. When an ACL would become
    /// empty, and so inherit an ancestor's ACL that still grants the server one of `cmds`, the
    /// call fails with [`TreeError::WouldInherit`] and changes nothing. Returns the
    /// before-images of the changed ACLs, for an exact undo.
    pub fn revoke_subtree(
        &mut self,
        uri: &NodeUri,
        server: &str,
        cmds: &[AclCmd],
    ) -> Result<Vec<(NodeUri, Acl)>, TreeError> {
        let id = self
            .find(uri)
            .ok_or_else(|| TreeError::NotFound(uri.clone()))?;
        let mut changed = Vec::new();
        let mut work = self.clone();
        for node in self.subtree(id) {
            let current = self.slot(node).props.acl.clone();
            let mut acl = if node == id && current.is_empty() {
                self.effective_acl(node).0.clone()
            } else if current.is_empty() {
                continue;
            } else {
                current.clone()
            };
            for cmd in cmds {
                acl.revoke(*cmd, server);
            }
            if acl.is_empty() {
                // Judged on the tree as revoked so far (pre-order: ancestors inside the
                // subtree are already done), not on the tree before the revoke.
                let inherited_grants = match self.slot(node).parent() {
                    Some(p) => cmds
                        .iter()
                        .any(|c| work.effective_acl(p).0.allows(*c, server)),
                    None => false,
                };
                if inherited_grants {
                    return Err(TreeError::WouldInherit(self.uri_of(node)));
                }
            }
            if acl != current {
                changed.push((self.uri_of(node), current));
                work.update_props(node, |p| p.acl = acl);
            }
        }
        *self = work;
        Ok(changed)
    }

    /// Removes `server` from every ACL in the tree (TND 8.3.7.1.4): commands left with no id are
    /// dropped, and at the root they become `*`. Returns the before-images of the changed ACLs.
    pub fn remove_server_everywhere(&mut self, server: &str) -> Vec<(NodeUri, Acl)> {
        let mut changed = Vec::new();
        for id in self.subtree(ROOT) {
            let is_root = id == ROOT;
            let before = &self.slot(id).props.acl;
            let mut acl = before.clone();
            if acl.remove_server(server, is_root) {
                changed.push((self.uri_of(id), before.clone()));
                self.update_props(id, |p| p.acl = acl);
            }
        }
        changed
    }

    /// Every ServerID that appears in some ACL of the tree.
    pub fn servers_in_acls(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for slot in self.slots.iter().filter(|s| s.in_use()) {
            for s in slot.props.acl.servers() {
                if !out.iter().any(|x| x == s) {
                    out.push(s.to_owned());
                }
            }
        }
        out.sort();
        out
    }

    /// Sets a node's ACL directly (the device's own change, or an undo from a journal).
    pub fn set_acl(&mut self, uri: &NodeUri, acl: Acl) -> Result<Acl, TreeError> {
        let id = self
            .find(uri)
            .ok_or_else(|| TreeError::NotFound(uri.clone()))?;
        let before = self.slot(id).props.acl.clone();
        self.update_props(id, |p| p.acl = acl);
        Ok(before)
    }

    // ----- structural changes (device-level, no ACL checks) -----

    fn alloc(&mut self, slot: Slot) -> NodeId {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                NodeId(i)
            }
            None => {
                self.slots.push(slot);
                NodeId((self.slots.len() - 1) as u32)
            }
        }
    }

    /// Creates a child of the interior node `parent`. The caller has checked that the name is
    /// free and valid.
    pub(crate) fn insert_child(
        &mut self,
        parent: NodeId,
        name: &str,
        props: NodeProps,
        value: Option<Vec<u8>>,
    ) -> NodeId {
        let kind = match value {
            Some(v) => Kind::Leaf(v.into_boxed_slice()),
            None => Kind::Interior(Vec::new()),
        };
        let Kind::Interior(children) = &self.slot(parent).kind else {
            panic!("insert_child under the leaf {parent:?}");
        };
        let pos = match self.child_pos(children, name) {
            Ok(_) => panic!("insert_child: {parent:?} already has a child named {name:?}"),
            Err(pos) => pos,
        };
        let props = self.share(props, Some(parent), self.neighbours(parent, name, None));
        let id = self.alloc(Slot {
            parent: parent.0,
            own_acl: OwnAcl::of(&props),
            name: Box::from(name),
            props,
            kind,
        });
        if let Kind::Interior(children) = &mut self.slot_mut(parent).kind {
            children.insert(
                pos,
                Child {
                    key: name_key(name),
                    id,
                },
            );
        }
        id
    }

    /// Removes `id` from its parent's list of children.
    fn unlink(&mut self, id: NodeId) {
        let Some(parent) = self.slot(id).parent() else {
            return;
        };
        let Kind::Interior(children) = &self.slot(parent).kind else {
            return;
        };
        if let Ok(pos) = self.child_pos(children, &self.slot(id).name)
            && let Kind::Interior(children) = &mut self.slot_mut(parent).kind
        {
            children.remove(pos);
        }
    }

    /// Removes the subtree at `id` (not the root).
    pub(crate) fn remove_subtree(&mut self, id: NodeId) {
        if self.slot(id).parent().is_none() {
            return;
        }
        self.unlink(id);
        for node in self.subtree(id) {
            self.slots[node.0 as usize] = Slot::free();
            self.free.push(node.0);
            self.len -= 1;
        }
    }

    /// Renames a node (the caller checked the new name is free and valid).
    pub(crate) fn rename(&mut self, id: NodeId, new_name: &str) {
        let Some(parent) = self.slot(id).parent() else {
            return;
        };
        self.unlink(id);
        self.slot_mut(id).name = Box::from(new_name);
        let Kind::Interior(children) = &self.slot(parent).kind else {
            return;
        };
        let pos = self.child_pos(children, new_name).unwrap_or_else(|pos| pos);
        if let Kind::Interior(children) = &mut self.slot_mut(parent).kind {
            children.insert(
                pos,
                Child {
                    key: name_key(new_name),
                    id,
                },
            );
        }
    }

    pub(crate) fn set_value(&mut self, id: NodeId, value: Vec<u8>) {
        if let Kind::Leaf(v) = &mut self.slot_mut(id).kind {
            *v = value.into_boxed_slice();
        }
    }

    /// True when the URI of a child `name` of `parent` keeps within the tree's URI limits (as
    /// [`UriLimits::check`] would find), found without building the URI.
    pub(crate) fn child_uri_fits(&self, parent: NodeId, name: &str) -> bool {
        let limits = self.limits.uri;
        let (mut depth, mut len, mut longest) = (1, name.len(), name.len());
        let mut cur = parent;
        while let Some(up) = self.slot(cur).parent() {
            let seg = self.slot(cur).name.len();
            depth += 1;
            len += seg + 1;
            longest = longest.max(seg);
            cur = up;
        }
        let within = |value: usize, limit: u16| limit == 0 || value <= usize::from(limit);
        within(depth, limits.max_depth)
            && within(longest, limits.max_seg_len)
            && within(len, limits.max_tot_len)
    }

    /// Gives back memory held for growth (the arena's and the children lists' spare room):
    /// for a tree that is built once and then mostly read.
    pub fn shrink_to_fit(&mut self) {
        while self.slots.last().is_some_and(|s| !s.in_use()) {
            self.slots.pop();
        }
        let end = self.slots.len() as u32;
        self.free.retain(|i| *i < end);
        self.free.shrink_to_fit();
        self.slots.shrink_to_fit();
        for slot in self.slots.iter_mut() {
            if let Kind::Interior(children) = &mut slot.kind {
                children.shrink_to_fit();
            }
        }
    }

    /// The device's own set-up: makes sure an interior node exists at `uri`, creating it and
    /// missing ancestors with `props` (ancestors get plain interior properties). Returns its id.
    pub fn ensure_interior(
        &mut self,
        uri: &NodeUri,
        props: NodeProps,
    ) -> Result<NodeId, TreeError> {
        self.limits.uri.check(uri).map_err(TreeError::Uri)?;
        let mut id = ROOT;
        let depth = uri.depth();
        for (i, seg) in uri.segments().iter().enumerate() {
            if self.is_leaf(id) {
                return Err(TreeError::UnderLeaf(uri.clone()));
            }
            let existing = self.child(id, seg);
            id = match existing {
                Some(child) => child,
                None => {
                    self.check_room()?;
                    let p = if i + 1 == depth {
                        props.clone()
                    } else {
                        NodeProps::interior()
                    };
                    self.insert_child(id, seg, p, None)
                }
            };
        }
        if self.is_leaf(id) {
            return Err(TreeError::UnderLeaf(uri.clone()));
        }
        Ok(id)
    }

    /// The device's own set-up: creates or overwrites the leaf at `uri` with `value` and `props`,
    /// creating missing interior ancestors.
    pub fn put_leaf(
        &mut self,
        uri: &NodeUri,
        value: impl Into<Vec<u8>>,
        props: NodeProps,
    ) -> Result<NodeId, TreeError> {
        let value = value.into();
        let parent_uri = uri.parent().ok_or(TreeError::RootIsInterior)?;
        let name = uri.name().unwrap_or_default().to_owned();
        if value.len() > self.limits.max_value_len {
            return Err(TreeError::ValueTooLarge {
                len: value.len(),
                limit: self.limits.max_value_len,
            });
        }
        self.limits.uri.check(uri).map_err(TreeError::Uri)?;
        let parent = self.ensure_interior(&parent_uri, NodeProps::interior())?;
        match self.child(parent, &name) {
            Some(id) if self.is_leaf(id) => {
                self.set_props(id, props);
                self.set_value(id, value);
                Ok(id)
            }
            Some(_) => Err(TreeError::NotALeaf(uri.clone())),
            None => {
                self.check_room()?;
                Ok(self.insert_child(parent, &name, props, Some(value)))
            }
        }
    }

    /// The device's own change: deletes the subtree at `uri`.
    pub fn remove(&mut self, uri: &NodeUri) -> Result<(), TreeError> {
        let id = self
            .find(uri)
            .ok_or_else(|| TreeError::NotFound(uri.clone()))?;
        if id == ROOT {
            return Err(TreeError::RootIsInterior);
        }
        self.remove_subtree(id);
        Ok(())
    }

    pub(crate) fn check_room(&self) -> Result<(), TreeError> {
        if self.len >= self.limits.max_nodes {
            Err(TreeError::Full {
                limit: self.limits.max_nodes,
            })
        } else {
            Ok(())
        }
    }

    /// True when the two trees hold the same nodes with the same names, properties and values
    /// (arena layout aside).
    pub fn same_as(&self, other: &DmTree) -> bool {
        self.diff(other).is_none()
    }

    /// The first difference between two trees, as a plain description, or `None` when equal.
    pub fn diff(&self, other: &DmTree) -> Option<String> {
        let mut stack = vec![(ROOT, ROOT)];
        while let Some((a, b)) = stack.pop() {
            let (sa, sb) = (self.slot(a), other.slot(b));
            let uri = || self.uri_of(a);
            if !Arc::ptr_eq(&sa.props, &sb.props) && sa.props != sb.props {
                return Some(format!(
                    "{}: properties differ ({:?} vs {:?})",
                    uri(),
                    sa.props,
                    sb.props
                ));
            }
            match (&sa.kind, &sb.kind) {
                (Kind::Leaf(x), Kind::Leaf(y)) => {
                    if x != y {
                        return Some(format!(
                            "{}: value `{}` vs `{}`",
                            uri(),
                            String::from_utf8_lossy(x),
                            String::from_utf8_lossy(y)
                        ));
                    }
                }
                (Kind::Interior(x), Kind::Interior(y)) => {
                    let xs: Vec<&str> = x.iter().map(|c| &*self.slot(c.id).name).collect();
                    let ys: Vec<&str> = y.iter().map(|c| &*other.slot(c.id).name).collect();
                    if xs != ys {
                        return Some(format!("{}: children {xs:?} vs {ys:?}", uri()));
                    }
                    stack.extend(x.iter().map(|c| c.id).zip(y.iter().map(|c| c.id)));
                }
                _ => {
                    return Some(format!(
                        "{}: leaf in one tree, interior in the other",
                        uri()
                    ));
                }
            }
        }
        None
    }
}

/// Why a device-level tree change failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// No node at this URI.
    #[error("no node at {0}")]
    NotFound(NodeUri),
    /// A node would go under a leaf.
    #[error("{0} lies under a leaf node")]
    UnderLeaf(NodeUri),
    /// The node is interior where a leaf was expected.
    #[error("{0} is an interior node, not a leaf")]
    NotALeaf(NodeUri),
    /// The root cannot be a leaf, be deleted or renamed.
    #[error("the root node cannot be changed this way")]
    RootIsInterior,
    /// The URI breaks the tree's limits.
    #[error(transparent)]
    Uri(#[from] super::uri::UriError),
    /// An ACL operation failed.
    #[error(transparent)]
    Acl(#[from] AclError),
    /// A value is larger than the tree allows.
    #[error("a value of {len} bytes exceeds the limit of {limit} bytes")]
    ValueTooLarge {
        /// The value's size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The tree holds as many nodes as it may.
    #[error("the tree is full ({limit} nodes)")]
    Full {
        /// The node limit.
        limit: usize,
    },
    /// Revoking would leave an empty ACL that inherits the very rights being revoked.
    #[error("revoking at {0} would leave an empty ACL that inherits the revoked rights")]
    WouldInherit(NodeUri),
}

/// Formats Unix seconds as a TStamp, ISO 8601 basic UTC (`20010711T163817Z`).
pub fn tstamp_from_unix(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return format!(
            "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        );
    }
    // Written digit by digit: a device stamps every node it creates (`format!` cost a few
    // hundred instructions a stamp).
    fn two(out: &mut String, n: i64) {
        out.push(char::from(b'0' + (n / 10 % 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
    }
    let mut out = String::with_capacity(16);
    two(&mut out, y / 100);
    two(&mut out, y % 100);
    two(&mut out, i64::from(m));
    two(&mut out, i64::from(d));
    out.push('T');
    two(&mut out, rem / 3600);
    two(&mut out, rem % 3600 / 60);
    two(&mut out, rem % 60);
    out.push('Z');
    out
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dm::uri::UriLimits;

    fn uri(s: &str) -> NodeUri {
        NodeUri::parse(s).unwrap()
    }

    #[test]
    fn tstamp_format() {
        assert_eq!(tstamp_from_unix(0), "19700101T000000Z");
        assert_eq!(tstamp_from_unix(994_869_497), "20010711T163817Z");
        assert_eq!(tstamp_from_unix(4_102_444_799), "20991231T235959Z");
        assert_eq!(tstamp_from_unix(-1), "19691231T235959Z");
    }

    #[test]
    fn inheritance_is_whole_acl() {
        let mut t = DmTree::new();
        t.ensure_interior(
            &uri("./A"),
            NodeProps::interior().with_acl(Acl::parse("Get=s1&Replace=s1+s2").unwrap()),
        )
        .unwrap();
        t.ensure_interior(
            &uri("./A/B"),
            NodeProps::interior().with_acl(Acl::parse("Get=s2").unwrap()),
        )
        .unwrap();
        t.put_leaf(
            &uri("./A/B/C"),
            "v",
            NodeProps::leaf(Format::Chr, "text/plain"),
        )
        .unwrap();
        assert!(t.has_right(&uri("./A/B/C"), "s2", AclCmd::Get));
        // No per-command merge: B's ACL has no Replace, so A's Replace does not leak through.
        assert!(!t.has_right(&uri("./A/B/C"), "s1", AclCmd::Replace));
        assert!(!t.has_right(&uri("./A/B/C"), "s2", AclCmd::Replace));
        assert!(t.has_right(&uri("./A"), "s2", AclCmd::Replace));
        // Root default: Add=*&Get=*.
        assert!(t.has_right(&uri("./Other"), "anyone", AclCmd::Add));
    }

    #[test]
    fn grant_revoke_and_remove_server() {
        let mut t = DmTree::new();
        t.ensure_interior(
            &uri("./V"),
            NodeProps::interior().with_acl(Acl::parse("Get=s1&Replace=s1").unwrap()),
        )
        .unwrap();
        t.ensure_interior(
            &uri("./V/E/X"),
            NodeProps::interior().with_acl(Acl::parse("Get=s1").unwrap()),
        )
        .unwrap();
        let before = t.clone();
        let undo = t
            .grant_subtree(&uri("./V/E"), "s2", &[AclCmd::Get, AclCmd::Replace])
            .unwrap();
        assert!(t.has_right(&uri("./V/E/X"), "s2", AclCmd::Get));
        assert!(t.has_right(&uri("./V/E"), "s2", AclCmd::Replace));
        assert!(!t.has_right(&uri("./V"), "s2", AclCmd::Get));
        for (u, acl) in undo.into_iter().rev() {
            t.set_acl(&u, acl).unwrap();
        }
        assert!(t.same_as(&before), "{:?}", t.diff(&before));

        let mut root_acl = Acl::parse("Add=*&Get=s1&Replace=s1").unwrap();
        root_acl.remove_server("s1", true);
        t.set_acl(
            &NodeUri::root(),
            Acl::parse("Add=*&Get=s1&Replace=s1").unwrap(),
        )
        .unwrap();
        let changed = t.remove_server_everywhere("s1");
        assert_eq!(changed.len(), 3);
        assert_eq!(t.props(t.root()).acl, root_acl);
        assert_eq!(t.props(t.root()).acl.to_string(), "Add=*&Get=*&Replace=*");
        assert!(t.props(t.find(&uri("./V/E/X")).unwrap()).acl.is_empty());
        assert!(t.servers_in_acls().is_empty());
    }

    #[test]
    fn revoke_refuses_to_fall_back_to_inherited_grant() {
        let mut t = DmTree::new();
        t.ensure_interior(
            &uri("./V"),
            NodeProps::interior().with_acl(Acl::parse("Get=s1+s2").unwrap()),
        )
        .unwrap();
        t.ensure_interior(
            &uri("./V/E"),
            NodeProps::interior().with_acl(Acl::parse("Get=s2").unwrap()),
        )
        .unwrap();
        assert!(matches!(
            t.revoke_subtree(&uri("./V/E"), "s2", &[AclCmd::Get]),
            Err(TreeError::WouldInherit(_))
        ));
        t.ensure_interior(&uri("./V/F"), NodeProps::interior())
            .unwrap();
        let undo = t
            .revoke_subtree(&uri("./V/F"), "s1", &[AclCmd::Get])
            .unwrap();
        assert_eq!(undo.len(), 1);
        assert!(!t.has_right(&uri("./V/F"), "s1", AclCmd::Get));
        assert!(t.has_right(&uri("./V/F"), "s2", AclCmd::Get));
    }

    #[test]
    fn name_keys_sort_as_names_do() {
        let names = [
            "",
            "a",
            "a\u{1}",
            "ab",
            "abcdefg",
            "abcdefg\u{1}",
            "abcdefgA",
            "abcdefgAA",
            "abcdefgB",
            "abcdefh",
            "b",
            "ß",
            "中文节点名称",
        ];
        for x in names {
            for y in names {
                let (kx, ky) = (name_key(x), name_key(y));
                let both_long = x.len() > 7 && y.len() > 7;
                if kx != ky || !both_long {
                    assert_eq!(kx.cmp(&ky), x.cmp(y), "{x:?} vs {y:?}");
                }
            }
        }
    }

    #[test]
    fn children_stay_sorted_through_adds_renames_and_removes() {
        let mut t = DmTree::new();
        let names = [
            "Zeta",
            "AAuthSecret",
            "AAuthName",
            "AAuthSecretX",
            "a",
            "AAuthSecre",
            "Leaf10",
            "Leaf09",
            "Leaf100",
            "m",
            "AAuthLevel",
            "b",
            "Leaf1",
        ];
        for n in names {
            t.put_leaf(
                &uri(&format!("./P/{n}")),
                n,
                NodeProps::leaf(Format::Chr, "text/plain"),
            )
            .unwrap();
        }
        let parent = t.find(&uri("./P")).unwrap();
        let mut sorted: Vec<&str> = names.to_vec();
        sorted.sort();
        assert_eq!(t.child_names(parent), sorted);
        for n in names {
            let id = t.find(&uri(&format!("./P/{n}"))).unwrap();
            assert_eq!(t.value(id), Some(n.as_bytes()));
            assert_eq!(t.child(parent, n), Some(id));
        }
        assert_eq!(t.child(parent, "AAuthSecretY"), None);
        assert_eq!(t.child(parent, "Leaf"), None);
        let id = t.find(&uri("./P/AAuthSecret")).unwrap();
        t.rename(id, "zz");
        t.remove(&uri("./P/Leaf09")).unwrap();
        let mut expect: Vec<&str> = sorted
            .iter()
            .copied()
            .filter(|n| !["AAuthSecret", "Leaf09"].contains(n))
            .chain(["zz"])
            .collect();
        expect.sort();
        assert_eq!(t.child_names(parent), expect);
        assert_eq!(t.find(&uri("./P/zz")), Some(id));
        assert_eq!(t.find_below(t.root(), "P/zz"), Some(id));
        // A freed slot is taken again, and the lists stay right.
        t.put_leaf(
            &uri("./P/Leaf09"),
            "again",
            NodeProps::leaf(Format::Chr, "text/plain"),
        )
        .unwrap();
        assert_eq!(t.value_str(&uri("./P/Leaf09")), Some("again"));
        assert_eq!(t.len(), names.len() + 2);
        t.shrink_to_fit();
        assert!(t.clone().same_as(&t));
    }

    #[test]
    fn shared_properties_change_for_one_node_only() {
        let mut t = DmTree::new();
        for n in ["a", "b", "c"] {
            t.put_leaf(
                &uri(&format!("./S/{n}")),
                "v",
                NodeProps::leaf(Format::Chr, "text/plain"),
            )
            .unwrap();
        }
        let copy = t.clone();
        let b = t.find(&uri("./S/b")).unwrap();
        t.props_mut(b).title = Some("B".into());
        t.set_acl(&uri("./S/c"), Acl::parse("Get=s1").unwrap())
            .unwrap();
        assert_eq!(t.props(b).title.as_deref(), Some("B"));
        assert_eq!(t.props(t.find(&uri("./S/a")).unwrap()).title, None);
        assert!(t.has_right(&uri("./S/c"), "s1", AclCmd::Get));
        assert!(t.has_right(&uri("./S/a"), "s1", AclCmd::Get), "root: Get=*");
        assert!(!t.has_right(&uri("./S/c"), "s2", AclCmd::Get));
        // An ACL given through props_mut is seen by the checks too.
        let a = t.find(&uri("./S/a")).unwrap();
        t.props_mut(a).acl = Acl::parse("Get=s3").unwrap();
        assert!(!t.allowed(Principal::Server("s1"), a, AclCmd::Get));
        assert!(t.allowed(Principal::Server("s3"), a, AclCmd::Get));
        // The clone kept what the tree had.
        assert!(
            copy.props(copy.find(&uri("./S/b")).unwrap())
                .title
                .is_none()
        );
        assert!(copy.props(copy.find(&uri("./S/c")).unwrap()).acl.is_empty());
        assert!(copy.diff(&t).is_some());
    }

    #[test]
    fn uri_limits_are_judged_without_building_the_uri() {
        let mut t = DmTree::with_limits(TreeLimits {
            uri: UriLimits {
                max_depth: 3,
                max_tot_len: 10,
                max_seg_len: 5,
            },
            ..TreeLimits::default()
        });
        let ab = t
            .ensure_interior(&uri("./ab/cd"), NodeProps::interior())
            .unwrap();
        assert!(t.child_uri_fits(ab, "efg"));
        assert!(
            !t.child_uri_fits(ab, "efghi"),
            "11 bytes with the separators"
        );
        assert!(!t.child_uri_fits(ab, "efghij"), "a segment over 5 bytes");
        let deep = t
            .ensure_interior(&uri("./ab/cd/e"), NodeProps::interior())
            .unwrap();
        assert!(!t.child_uri_fits(deep, "f"), "depth 4");
        for (parent, name) in [(ab, "efg"), (ab, "efghi"), (ab, "efghij"), (deep, "f")] {
            let child = t.uri_of(parent).join(name).unwrap();
            assert_eq!(
                t.child_uri_fits(parent, name),
                t.limits().uri.check(&child).is_ok(),
                "{child}"
            );
        }
    }

    #[test]
    fn property_sets_no_tree_uses_are_swept() {
        for i in 0..3000 {
            let mut t = DmTree::new();
            let acl = Acl::parse(&format!("Get=sweep{i}")).unwrap();
            t.ensure_interior(&uri("./X"), NodeProps::interior().with_acl(acl))
                .unwrap();
        }
        // Other tests share the table: only a bound can be checked.
        let table = SHARED_PROPS.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(table.sets.len() < 2000, "{} sets kept", table.sets.len());
    }

    #[test]
    fn deep_trees_drop_without_recursion() {
        let mut t = DmTree::new();
        let segs: Vec<String> = (0..50_000).map(|i| format!("n{i}")).collect();
        let deep = NodeUri::from_segments(segs).unwrap();
        t.ensure_interior(&deep, NodeProps::interior()).unwrap();
        assert_eq!(t.len(), 50_001);
        let copy = t.clone();
        assert!(copy.same_as(&t));
        t.remove(&uri("./n0")).unwrap();
        assert_eq!(t.len(), 1);
    }
}
