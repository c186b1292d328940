//! A device's DM tree for the console: flattened once off the UI thread ([`TreeModel`]),
//! with each node's own and effective ACL and who holds which rights there (the authority
//! map), and the view state that expands nodes and ticks subtrees ([`TreeView`]). Only the
//! rows on screen are drawn, so a 10,000-node tree costs what 30 rows cost.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::dm::acl::AclCmd;
use crate::dm::tree::{DmTree, NodeId};

/// One node, flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeNode {
    /// Its name (empty for the root).
    pub name: String,
    /// Its URI (`.` for the root).
    pub uri: String,
    /// Depth below the root.
    pub depth: u16,
    /// Its children, in name order.
    pub children: Vec<u32>,
    /// True for a leaf.
    pub leaf: bool,
    /// Its own ACL (empty: inherited).
    pub own_acl: String,
    /// The ACL in force.
    pub effective_acl: String,
    /// Where the ACL in force comes from, when inherited.
    pub inherited_from: Option<String>,
    /// A leaf's value, shortened.
    pub value: Option<String>,
    /// Per server of [`TreeModel::servers`], the rights it holds here (bit i: `AclCmd::ALL[i]`).
    pub rights: Vec<u8>,
}

/// A device's tree as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TreeModel {
    /// The device.
    pub dev_id: String,
    /// Nodes; index 0 is the root, parents come before children.
    pub nodes: Vec<TreeNode>,
    /// The ServerIDs named in some ACL, then `*` when some ACL grants to anyone.
    pub servers: Vec<String>,
    /// The device's last session when the tree was read, Unix milliseconds.
    pub last_seen_ms: Option<i64>,
    /// Node index by URI.
    by_uri: HashMap<String, u32>,
}

/// The letters of a rights mask, `A D E G R` order, `-` where absent.
pub fn rights_letters(mask: u8) -> String {
    AclCmd::ALL
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if mask & (1 << i) != 0 {
                c.as_str().chars().next().unwrap_or('?')
            } else {
                '·'
            }
        })
        .collect()
}

impl TreeModel {
    /// Flattens `tree`.
    pub fn build(dev_id: &str, tree: &DmTree, last_seen_ms: Option<i64>) -> TreeModel {
        let mut servers = tree.servers_in_acls();
        let wildcard = tree
            .subtree(tree.root())
            .into_iter()
            .any(|id| acl_has_any(tree, id));
        if wildcard {
            servers.push("*".into());
        }
        let order = tree.subtree(tree.root());
        let mut index = std::collections::HashMap::with_capacity(order.len());
        for (i, id) in order.iter().enumerate() {
            index.insert(*id, i as u32);
        }
        let mut nodes = Vec::with_capacity(order.len());
        for id in &order {
            nodes.push(node_of(tree, *id, &servers, &index));
        }
        let by_uri = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.uri.clone(), i as u32))
            .collect();
        TreeModel {
            dev_id: dev_id.to_owned(),
            nodes,
            servers,
            last_seen_ms,
            by_uri,
        }
    }

    /// The index of the node with this URI.
    pub fn find(&self, uri: &str) -> Option<usize> {
        self.by_uri.get(uri).map(|&i| i as usize)
    }
}

fn acl_has_any(tree: &DmTree, id: NodeId) -> bool {
    let acl = &tree.props(id).acl;
    AclCmd::ALL
        .iter()
        .any(|c| matches!(acl.ids(*c), Some(crate::dm::acl::AclIds::Any)))
}

fn node_of(
    tree: &DmTree,
    id: NodeId,
    servers: &[String],
    index: &std::collections::HashMap<NodeId, u32>,
) -> TreeNode {
    let uri = tree.uri_of(id).to_string();
    let (eff, holder) = tree.effective_acl(id);
    let own = tree.props(id).acl.to_string();
    let rights = servers
        .iter()
        .map(|s| {
            let mut m = 0u8;
            for (i, c) in AclCmd::ALL.iter().enumerate() {
                let granted = if s == "*" {
                    matches!(eff.ids(*c), Some(crate::dm::acl::AclIds::Any))
                } else {
                    eff.allows(*c, s)
                };
                if granted {
                    m |= 1 << i;
                }
            }
            m
        })
        .collect();
    let value = if tree.is_leaf(id) {
        tree.value(id).map(|v| {
            let s = String::from_utf8_lossy(v);
            let mut t: String = s.chars().take(40).collect();
            if s.chars().count() > 40 {
                t.push('…');
            }
            t
        })
    } else {
        None
    };
    TreeNode {
        name: tree.name(id).to_owned(),
        depth: uri.matches('/').count() as u16,
        inherited_from: (holder != id).then(|| tree.uri_of(holder).to_string()),
        uri,
        children: tree
            .children(id)
            .filter_map(|(_, c)| index.get(&c).copied())
            .collect(),
        leaf: tree.is_leaf(id),
        own_acl: own,
        effective_acl: eff.to_string(),
        value,
        rights,
    }
}

/// What the operator did with the tree: which nodes are open, which subtrees are ticked,
/// which node is selected. Keyed by URI, so it survives a reload of the tree.
#[derive(Debug, Clone, Default)]
pub struct TreeView {
    /// Open interior nodes.
    pub expanded: BTreeSet<String>,
    /// Subtrees ticked for a Partial delegation.
    pub ticked: BTreeSet<String>,
    /// The node whose details show.
    pub selected: Option<String>,
    /// The open tree flattened: the node indices of its rows, in order; recomputed only
    /// when the expansion or the model changes, and only the rows on screen are laid out.
    visible: Arc<[u32]>,
    /// The model and expansion `visible` was computed for.
    visible_key: Option<(usize, usize, u64)>,
    generation: u64,
}

impl TreeView {
    /// Forgets everything (another device).
    pub fn reset(&mut self) {
        *self = TreeView::default();
    }

    /// Says the model or `expanded` changed behind the view's back (a reloaded tree).
    pub fn invalidate(&mut self) {
        self.generation += 1;
    }

    /// Opens or closes a node.
    pub fn toggle(&mut self, uri: &str) {
        if !self.expanded.remove(uri) {
            self.expanded.insert(uri.to_owned());
        }
        self.generation += 1;
    }

    /// Opens every interior node.
    pub fn expand_all(&mut self, model: &TreeModel) {
        for n in &model.nodes {
            if !n.leaf {
                self.expanded.insert(n.uri.clone());
            }
        }
        self.generation += 1;
    }

    /// Closes every node but the root.
    pub fn collapse_all(&mut self) {
        self.expanded.clear();
        self.expanded.insert(".".into());
        self.generation += 1;
    }

    /// The node indices to show, in order (a cheap `Arc` clone unless something changed).
    pub fn visible(&mut self, model: &TreeModel) -> Arc<[u32]> {
        let key = (
            model.nodes.as_ptr() as usize,
            model.nodes.len(),
            self.generation,
        );
        if self.visible_key != Some(key) {
            let mut visible = Vec::new();
            if !model.nodes.is_empty() {
                let mut stack = vec![0u32];
                while let Some(i) = stack.pop() {
                    visible.push(i);
                    let n = &model.nodes[i as usize];
                    if self.expanded.contains(&n.uri) {
                        stack.extend(n.children.iter().rev().copied());
                    }
                }
            }
            self.visible = Arc::from(visible);
            self.visible_key = Some(key);
        }
        self.visible.clone()
    }

    /// True when `uri` lies inside a ticked subtree (itself ticked or below one).
    pub fn covered(&self, uri: &str) -> bool {
        self.ticked
            .iter()
            .any(|t| uri == t || (uri.starts_with(t.as_str()) && uri[t.len()..].starts_with('/')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_letters_follow_acl_cmd_order() {
        assert_eq!(rights_letters(0), "·····");
        assert_eq!(rights_letters(0b11111), "ADEGR");
    }

    #[test]
    fn covered_means_inside_a_ticked_subtree() {
        let mut v = TreeView::default();
        v.ticked.insert("./Vendor".into());
        assert!(v.covered("./Vendor"));
        assert!(v.covered("./Vendor/Enterprise"));
        assert!(!v.covered("./VendorX"));
    }
}
