//! The Devices view: a virtualised, sortable, filterable table of enrolled devices; the
//! selected device's DM tree with each node's ACL and an authority map (who holds which
//! rights where); ticking subtrees, the delegation form with its preview (nodes added, each
//! ACL before and after, the undo), Delegate; and bulk delegation with progress.

use std::collections::BTreeSet;
use std::sync::Arc;

use egui::{Key, RichText, Ui};
use egui_extras::{Column, TableBuilder};

use super::Ctx;
use super::common::{labelled_edit, labelled_edit_hint, server_color};
use super::model::*;
use super::table::{DeviceTable, needle};
use super::tree::{TreeModel, TreeView, rights_letters};
use crate::delegation::machine::Role;
use crate::dm::acl::AclCmd;
use crate::engine::driver::StartRequest;

pub use super::table::DevCol;

/// What the rows shown were computed for.
#[derive(Debug, Clone)]
struct ShownKey {
    /// The table (held, so its address cannot be reused by another).
    table: Arc<DeviceTable>,
    sort: (DevCol, bool),
    /// The filter as typed.
    filter: String,
    /// The filter as searched.
    needle: String,
}

/// The Devices view's state.
#[derive(Debug)]
pub struct DevicesPanel {
    /// The filter text (matches id, manufacturer, model, managers).
    pub filter: String,
    /// Sort column and direction (true: ascending).
    pub sort: (DevCol, bool),
    /// The rows shown (indices into the table), in order.
    shown: Arc<[u32]>,
    shown_key: Option<ShownKey>,
    /// Per row of the table, whether it matches the filter (empty: no filter).
    hits: Vec<bool>,
    /// The selected device.
    pub selected: Option<String>,
    scroll_to: Option<usize>,
    /// Devices ticked for a bulk delegation.
    pub bulk: BTreeSet<String>,
    tree: Option<Arc<TreeModel>>,
    tree_error: Option<String>,
    tree_asked: Option<(String, Option<i64>)>,
    /// Expansion, ticks and the selected node.
    pub tree_view: TreeView,
    /// Full (true) or Partial with the ticked subtrees.
    pub full: bool,
    /// The Bootstrap Server URL approach instead of DMAcc.
    pub bootstrap: bool,
    /// The peer to delegate to.
    pub peer: String,
    /// A temporary delegation.
    pub lease_on: bool,
    /// Its length in seconds, as typed.
    pub lease_secs: String,
    preview: Option<(PreviewKey, Result<PreviewView, String>)>,
    preview_asked: Option<PreviewKey>,
    /// Bulk: at most this many at a time.
    pub bulk_concurrency: usize,
    /// Bulk: stop after this many failures.
    pub bulk_max_failures: usize,
    form_error: Option<String>,
    /// Lab devices set to refuse changes under ./Vendor.
    pub faulty: BTreeSet<String>,
    /// The device whose removal waits for the operator's confirmation.
    confirm_remove: Option<String>,
}

impl Default for DevicesPanel {
    fn default() -> Self {
        DevicesPanel {
            filter: String::new(),
            sort: (DevCol::Id, true),
            shown: Arc::from(Vec::new()),
            shown_key: None,
            hits: Vec::new(),
            selected: None,
            scroll_to: None,
            bulk: BTreeSet::new(),
            tree: None,
            tree_error: None,
            tree_asked: None,
            tree_view: TreeView::default(),
            full: false,
            bootstrap: false,
            peer: String::new(),
            lease_on: false,
            lease_secs: "3600".into(),
            preview: None,
            preview_asked: None,
            bulk_concurrency: 8,
            bulk_max_failures: 5,
            form_error: None,
            faulty: BTreeSet::new(),
            confirm_remove: None,
        }
    }
}

impl DevicesPanel {
    /// Forgets the selection (another server).
    pub fn reset(&mut self) {
        *self = DevicesPanel {
            bulk_concurrency: self.bulk_concurrency,
            bulk_max_failures: self.bulk_max_failures,
            faulty: std::mem::take(&mut self.faulty),
            ..DevicesPanel::default()
        };
    }

    /// Selects a device.
    pub fn select(&mut self, dev_id: &str) {
        if self.selected.as_deref() != Some(dev_id) {
            self.selected = Some(dev_id.to_owned());
            self.tree = None;
            self.tree_error = None;
            self.tree_asked = None;
            self.tree_view.reset();
            self.preview = None;
            self.preview_asked = None;
            self.form_error = None;
        }
    }

    /// The tree shown, if loaded.
    pub fn tree(&self) -> Option<&Arc<TreeModel>> {
        self.tree.as_ref()
    }

    /// The current preview's answer, if any.
    pub fn preview(&self) -> Option<&Result<PreviewView, String>> {
        self.preview.as_ref().map(|(_, r)| r)
    }

    /// A tree arrived.
    pub fn on_tree(&mut self, dev_id: &str, tree: Result<Arc<TreeModel>, String>) {
        if self.selected.as_deref() != Some(dev_id) {
            return;
        }
        match tree {
            Ok(t) => {
                if self.tree_view.expanded.is_empty() {
                    // Open the root, and the accounts and vendor subtrees below it (where
                    // delegations usually happen).
                    for n in t.nodes.iter().filter(|n| {
                        n.depth == 0
                            || (n.depth == 1 && matches!(n.name.as_str(), "DMAcc" | "Vendor"))
                    }) {
                        self.tree_view.expanded.insert(n.uri.clone());
                    }
                }
                self.tree = Some(t);
                self.tree_view.invalidate();
                self.tree_error = None;
            }
            Err(e) => {
                self.tree = None;
                self.tree_error = Some(e);
            }
        }
    }

    /// A preview arrived.
    pub fn on_preview(&mut self, key: PreviewKey, result: Result<PreviewView, String>) {
        if self.preview_asked.as_ref() == Some(&key) {
            self.preview = Some((key, result));
        }
    }

    /// The device indices shown, in order. Recomputed only when the table, the sort or the
    /// filter changed: the sort picks one of the table's precomputed orders, and the filter
    /// is matched in row order (memory order: a walk in sort order would jump around the
    /// search texts), once per filter, then only over the earlier matches while it grows.
    fn ordered(&mut self, devices: &Arc<DeviceTable>) -> Arc<[u32]> {
        if let Some(k) = &self.shown_key
            && Arc::ptr_eq(&k.table, devices)
            && k.sort == self.sort
            && k.filter == self.filter
        {
            return self.shown.clone();
        }
        let needle = needle(&self.filter);
        let same_table = self
            .shown_key
            .as_ref()
            .is_some_and(|k| Arc::ptr_eq(&k.table, devices));
        let previous = self.shown_key.as_ref().map_or("", |k| k.needle.as_str());
        if needle.is_empty() {
            self.hits.clear();
        } else if !(same_table && needle == previous && !self.hits.is_empty()) {
            let narrowing = same_table && !previous.is_empty() && needle.contains(previous);
            if narrowing && self.hits.len() == devices.len() {
                for (i, hit) in self.hits.iter_mut().enumerate() {
                    *hit = *hit && devices.matches(i, &needle);
                }
            } else {
                self.hits = (0..devices.len())
                    .map(|i| devices.matches(i, &needle))
                    .collect();
            }
        }
        let hits = &self.hits;
        let keep = |i: &u32| hits.is_empty() || hits[*i as usize];
        let order = devices.order(self.sort.0).iter().copied();
        let shown: Vec<u32> = if self.sort.1 {
            order.filter(keep).collect()
        } else {
            order.rev().filter(keep).collect()
        };
        self.shown = Arc::from(shown);
        self.shown_key = Some(ShownKey {
            table: devices.clone(),
            sort: self.sort,
            filter: self.filter.clone(),
            needle,
        });
        self.shown.clone()
    }

    fn paths(&self) -> Vec<String> {
        if self.full {
            Vec::new()
        } else {
            self.tree_view.ticked.iter().cloned().collect()
        }
    }

    fn request(&self, dev_id: &str) -> Result<StartRequest, String> {
        if self.peer.is_empty() {
            return Err("pick the peer to delegate to".into());
        }
        if !self.full && self.tree_view.ticked.is_empty() {
            return Err("tick the subtrees to delegate, or choose Full".into());
        }
        let lease = if self.lease_on {
            match self.lease_secs.trim().parse::<u64>() {
                Ok(s) if s > 0 => Some(s),
                _ => return Err("the lease is a whole number of seconds".into()),
            }
        } else {
            None
        };
        Ok(StartRequest {
            peer: self.peer.clone(),
            dev_id: dev_id.to_owned(),
            role: Role::Delegating,
            full: self.full,
            paths: self.paths(),
            bootstrap: self.bootstrap,
            lease,
            device: None,
            retry_of: None,
        })
    }

    /// Draws the view.
    pub fn ui(&mut self, ui: &mut Ui, cx: &mut Ctx<'_>) {
        let Some(server) = cx.snap.servers.get(cx.server).cloned() else {
            return;
        };
        if self.peer.is_empty() || !server.peers.iter().any(|p| p.server_id == self.peer) {
            self.peer = server
                .peers
                .first()
                .map(|p| p.server_id.clone())
                .unwrap_or_default();
        }
        // Keep the tree as fresh as the device's last session.
        if let Some(sel) = self.selected.clone() {
            let seen = server.devices.by_id(&sel).and_then(|d| d.last_seen_ms);
            let want = (sel.clone(), seen);
            if self.tree_asked.as_ref() != Some(&want) {
                self.tree_asked = Some(want);
                cx.send(UiCommand::LoadTree {
                    server: cx.server,
                    dev_id: sel,
                });
            }
        }
        egui::Panel::left("devices-list")
            .resizable(true)
            .default_size(ui.available_width() * 0.46)
            .min_size(320.0)
            .show(ui, |ui| self.list_ui(ui, cx, &server));
        egui::CentralPanel::default_margins().show(ui, |ui| self.device_ui(ui, cx, &server));
    }

    fn list_ui(&mut self, ui: &mut Ui, cx: &mut Ctx<'_>, server: &ServerView) {
        ui.horizontal(|ui| {
            ui.heading("Enrolled devices");
            ui.label(format!(
                "{} enrolled on {}",
                server.devices.len(),
                server.server_id
            ));
        });
        ui.horizontal(|ui| {
            labelled_edit_hint(
                ui,
                "Filter",
                &mut self.filter,
                "id, maker, model, server",
                220.0,
            );
            if ui.button("Clear filter").clicked() {
                self.filter.clear();
            }
        });
        let devices = server.devices.clone();
        let order = self.ordered(&devices);
        // Arrow keys move the selection when no text field has the keyboard.
        if !ui.ctx().egui_wants_keyboard_input() && !order.is_empty() {
            let down = ui.input(|i| i.key_pressed(Key::ArrowDown));
            let up = ui.input(|i| i.key_pressed(Key::ArrowUp));
            if down || up {
                let at = self.selected.as_deref().and_then(|s| devices.position(s));
                let pos = at.and_then(|at| order.iter().position(|&i| i as usize == at));
                let next = match (pos, down) {
                    (None, _) => 0,
                    (Some(p), true) => (p + 1).min(order.len() - 1),
                    (Some(p), false) => p.saturating_sub(1),
                };
                let id = devices[order[next] as usize].dev_id.clone();
                self.select(&id);
                self.scroll_to = Some(next);
            }
        }
        ui.separator();
        self.bulk_ui(ui, cx, &devices, &order);
        ui.separator();
        ui.label(format!("{} shown", order.len()));
        let now = now_ms();
        let mut table = TableBuilder::new(ui)
            .id_salt("devices-table")
            .striped(true)
            .resizable(true)
            .cell_layout(egui::Layout::left_to_right(egui::Align::Center))
            .column(Column::exact(22.0))
            .column(Column::initial(170.0).at_least(80.0).clip(true))
            .column(Column::initial(70.0).at_least(40.0).clip(true))
            .column(Column::initial(80.0).at_least(40.0).clip(true))
            .column(Column::initial(80.0).at_least(50.0).clip(true))
            .column(Column::remainder().at_least(80.0).clip(true))
            .min_scrolled_height(0.0);
        if let Some(row) = self.scroll_to.take() {
            table = table.scroll_to_row(row, None);
        }
        let mut clicked: Option<String> = None;
        let mut sort = self.sort;
        let mut header_btn = |ui: &mut Ui, title: &str, col: DevCol| {
            let arrow = match (sort.0 == col, sort.1) {
                (true, true) => " ⏶",
                (true, false) => " ⏷",
                _ => "",
            };
            if ui
                .add(
                    egui::Button::new(RichText::new(format!("{title}{arrow}")).strong())
                        .frame(false),
                )
                .on_hover_text(format!("Sort by {title}"))
                .clicked()
            {
                sort = if sort.0 == col {
                    (col, !sort.1)
                } else {
                    (col, true)
                };
            }
        };
        table
            .header(22.0, |mut h| {
                h.col(|ui| {
                    ui.label("");
                });
                h.col(|ui| header_btn(ui, "Device", DevCol::Id));
                h.col(|ui| header_btn(ui, "Maker", DevCol::Man));
                h.col(|ui| header_btn(ui, "Model", DevCol::Model));
                h.col(|ui| header_btn(ui, "Last seen", DevCol::LastSeen));
                h.col(|ui| header_btn(ui, "Managed by", DevCol::Managers));
            })
            .body(|body| {
                body.rows(20.0, order.len(), |mut row| {
                    let d = &devices[order[row.index()] as usize];
                    let selected = self.selected.as_deref() == Some(d.dev_id.as_str());
                    row.set_selected(selected);
                    row.col(|ui| {
                        let mut on = self.bulk.contains(&d.dev_id);
                        if ui
                            .add(egui::Checkbox::without_text(&mut on))
                            .accessible_name(format!("Bulk {}", d.dev_id))
                            .changed()
                        {
                            if on {
                                self.bulk.insert(d.dev_id.clone());
                            } else {
                                self.bulk.remove(&d.dev_id);
                            }
                        }
                    });
                    row.col(|ui| {
                        if ui.selectable_label(selected, &d.dev_id).clicked() {
                            clicked = Some(d.dev_id.clone());
                        }
                    });
                    row.col(|ui| {
                        ui.label(&d.man);
                    });
                    row.col(|ui| {
                        ui.label(&d.model);
                    });
                    row.col(|ui| {
                        match d.last_seen_ms {
                            Some(ms) => ui.label(ago_text(now, ms)).on_hover_text(time_text(ms)),
                            None => ui.weak("never"),
                        };
                    });
                    row.col(|ui| {
                        ui.label(&d.managers);
                    });
                });
            });
        self.sort = sort;
        if let Some(id) = clicked {
            self.select(&id);
        }
    }

    fn bulk_ui(&mut self, ui: &mut Ui, cx: &mut Ctx<'_>, devices: &DeviceTable, shown: &[u32]) {
        egui::CollapsingHeader::new("Bulk delegation")
            .default_open(false)
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    if ui
                        .button(format!("Tick the {} shown", shown.len()))
                        .clicked()
                    {
                        self.bulk
                            .extend(shown.iter().map(|&i| devices[i as usize].dev_id.clone()));
                    }
                    if ui.button("Untick all").clicked() {
                        self.bulk.clear();
                    }
                    ui.label(format!("{} ticked", self.bulk.len()));
                });
                ui.horizontal(|ui| {
                    let l = ui.label("At most at a time");
                    ui.add(egui::DragValue::new(&mut self.bulk_concurrency).range(1..=512))
                        .labelled_by(l.id);
                    let l = ui.label("Stop after failures");
                    ui.add(egui::DragValue::new(&mut self.bulk_max_failures).range(1..=100_000))
                        .labelled_by(l.id);
                });
                ui.label(format!(
                    "Uses the form on the right: {} to {}, {}{}.",
                    if self.full { "Full" } else { "Partial" },
                    if self.peer.is_empty() {
                        "?"
                    } else {
                        &self.peer
                    },
                    if self.bootstrap {
                        "bootstrap URL"
                    } else {
                        "DMAcc"
                    },
                    if self.full {
                        String::new()
                    } else {
                        format!(", subtrees {:?}", self.paths())
                    }
                ));
                let bulk = cx.snap.bulk.clone();
                let running = bulk.as_ref().is_some_and(|b| !b.finished);
                ui.horizontal(|ui| {
                    let n = self.bulk.len();
                    if ui
                        .add_enabled(
                            n > 0 && !running,
                            egui::Button::new(format!("Delegate {n} devices")),
                        )
                        .clicked()
                    {
                        match self.request("") {
                            Ok(template) => cx.send(UiCommand::Bulk {
                                server: cx.server,
                                dev_ids: self.bulk.iter().cloned().collect(),
                                template,
                                concurrency: self.bulk_concurrency,
                                max_failures: self.bulk_max_failures,
                            }),
                            Err(e) => self.form_error = Some(e),
                        }
                    }
                    if ui
                        .add_enabled(running, egui::Button::new("Stop bulk"))
                        .clicked()
                    {
                        cx.send(UiCommand::StopBulk);
                    }
                });
                if let Some(b) = bulk.filter(|b| b.server == cx.server) {
                    let frac = if b.total == 0 {
                        1.0
                    } else {
                        b.done() as f32 / b.total as f32
                    };
                    ui.add(egui::ProgressBar::new(frac).text(format!(
                        "{} of {} done: {} completed, {} failed, {} running",
                        b.done(),
                        b.total,
                        b.completed,
                        b.failed,
                        b.started - b.done()
                    )));
                    if let Some(s) = &b.stopped {
                        ui.colored_label(ui.visuals().warn_fg_color, s);
                    }
                    for e in b.errors.iter().take(5) {
                        ui.colored_label(ui.visuals().error_fg_color, e);
                    }
                }
            });
    }

    fn device_ui(&mut self, ui: &mut Ui, cx: &mut Ctx<'_>, server: &ServerView) {
        let Some(dev_id) = self.selected.clone() else {
            ui.add_space(40.0);
            ui.vertical_centered(|ui| {
                ui.heading("Select a device");
                ui.label("Its DM tree, who holds which rights, and the delegation form show here.");
                ui.label("↑ ↓ move through the list; Tab moves between fields.");
            });
            return;
        };
        let row = server.devices.by_id(&dev_id);
        if row.is_none() && !server.devices.is_empty() {
            // Removed meanwhile (here, or from the command line).
            ui.add_space(40.0);
            ui.vertical_centered(|ui| {
                ui.heading(format!("{dev_id} is no longer enrolled on this server"));
                ui.label("Its delegations stay in the Delegations and Audit views.");
            });
            return;
        }
        ui.horizontal(|ui| {
            ui.heading(RichText::new(format!("Device {dev_id}")).strong());
            if let Some(r) = row {
                ui.label(format!("{} {}", r.man, r.model));
                if let Some(ms) = r.last_seen_ms {
                    ui.weak(format!("last session {}", time_text(ms)));
                }
            }
        });
        if let Some(r) = row {
            ui.label(format!(
                "Managed by: {}",
                if r.managers.is_empty() {
                    "(no account known)"
                } else {
                    &r.managers
                }
            ));
        }
        self.remove_ui(ui, cx, &dev_id);
        if cx.snap.lab && cx.server == 0 {
            let mut on = self.faulty.contains(&dev_id);
            if ui
                .checkbox(
                    &mut on,
                    "Lab: this device refuses changes under ./Vendor (HTTP 500)",
                )
                .changed()
            {
                if on {
                    self.faulty.insert(dev_id.clone());
                } else {
                    self.faulty.remove(&dev_id);
                }
                cx.send(UiCommand::LabFault {
                    dev_id: dev_id.clone(),
                    fail_path: on.then(|| "./Vendor".to_owned()),
                });
            }
        }
        if let Some(e) = &self.tree_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        let Some(tree) = self.tree.clone() else {
            if self.tree_error.is_none() {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Reading the tree…");
                });
            }
            return;
        };
        // The tree on top, the form and its preview below, half and half.
        let tree_h = (ui.available_height() * 0.5).max(180.0);
        self.tree_ui(ui, &tree, tree_h);
        ui.separator();
        egui::ScrollArea::vertical()
            .id_salt("form-scroll")
            .auto_shrink([false, false])
            .show(ui, |ui| self.form_ui(ui, cx, &dev_id, &tree));
    }

    /// "Remove from this server", confirmed before it is sent.
    fn remove_ui(&mut self, ui: &mut Ui, cx: &mut Ctx<'_>, dev_id: &str) {
        if self.confirm_remove.as_deref() != Some(dev_id) {
            if ui
                .small_button("Remove from this server…")
                .on_hover_text("Un-enrol the device: decommissioned, or handed over for good")
                .clicked()
            {
                self.confirm_remove = Some(dev_id.to_owned());
            }
            return;
        }
        ui.group(|ui| {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!(
                    "Remove {dev_id}? Its credentials and cached tree leave this server; its \
                     delegation history stays. It is refused while the device is in a delegation."
                ),
            );
            ui.horizontal(|ui| {
                if ui.button(format!("Remove {dev_id}")).clicked() {
                    cx.send(UiCommand::RemoveDevice {
                        server: cx.server,
                        dev_id: dev_id.to_owned(),
                    });
                    self.confirm_remove = None;
                }
                if ui.button("Cancel").clicked() {
                    self.confirm_remove = None;
                }
            });
        });
    }

    fn tree_ui(&mut self, ui: &mut Ui, tree: &Arc<TreeModel>, height: f32) {
        ui.horizontal(|ui| {
            ui.strong(format!("DM tree, {} nodes", tree.nodes.len()));
            if ui.button("Expand all").clicked() {
                self.tree_view.expand_all(tree);
            }
            if ui.button("Collapse").clicked() {
                self.tree_view.collapse_all();
            }
            ui.separator();
            ui.label("Rights (Add Delete Exec Get Replace):");
            for (i, s) in tree.servers.iter().enumerate() {
                ui.label(RichText::new(format!("■ {s}")).color(server_color(ui, i)));
            }
        });
        if let Some(sel) = self.tree_view.selected.clone()
            && let Some(n) = tree.find(&sel).map(|i| &tree.nodes[i])
        {
            ui.horizontal_wrapped(|ui| {
                ui.monospace(&n.uri);
                ui.label("ACL");
                if n.own_acl.is_empty() {
                    ui.monospace(&n.effective_acl);
                    ui.weak(format!(
                        "(inherited from {})",
                        n.inherited_from.as_deref().unwrap_or(".")
                    ));
                } else {
                    ui.monospace(&n.own_acl);
                }
                if let Some(v) = &n.value {
                    ui.label("value");
                    ui.monospace(v);
                }
                for (i, s) in tree.servers.iter().enumerate() {
                    let m = n.rights.get(i).copied().unwrap_or(0);
                    if m != 0 {
                        let cmds: Vec<&str> = AclCmd::ALL
                            .iter()
                            .enumerate()
                            .filter(|(k, _)| m & (1 << k) != 0)
                            .map(|(_, c)| c.as_str())
                            .collect();
                        ui.label(
                            RichText::new(format!("{s}: {}", cmds.join(" ")))
                                .color(server_color(ui, i)),
                        );
                    }
                }
            });
        }
        let visible = self.tree_view.visible(tree);
        let n_servers = tree.servers.len();
        let mut toggle: Option<String> = None;
        let mut tick: Option<(String, bool)> = None;
        let mut select: Option<String> = None;
        let table_h = (height - 60.0).max(120.0);
        let mut builder = TableBuilder::new(ui)
            .id_salt("tree-table")
            .striped(true)
            .resizable(false)
            .max_scroll_height(table_h)
            .auto_shrink([false, true])
            .cell_layout(egui::Layout::left_to_right(egui::Align::Center))
            .column(Column::exact(22.0))
            .column(Column::initial(260.0).at_least(120.0).clip(true));
        for _ in 0..n_servers {
            builder = builder.column(Column::exact(56.0));
        }
        builder
            .column(Column::remainder().at_least(100.0).clip(true))
            .min_scrolled_height(table_h)
            .header(20.0, |mut h| {
                h.col(|ui| {
                    ui.label("");
                });
                h.col(|ui| {
                    ui.strong("Node");
                });
                for (i, s) in tree.servers.iter().enumerate() {
                    h.col(|ui| {
                        let short: String =
                            s.split('.').next().unwrap_or(s).chars().take(7).collect();
                        ui.label(RichText::new(short).strong().color(server_color(ui, i)))
                            .on_hover_text(s);
                    });
                }
                h.col(|ui| {
                    ui.strong("ACL");
                });
            })
            .body(|body| {
                body.rows(20.0, visible.len(), |mut row| {
                    let n = &tree.nodes[visible[row.index()] as usize];
                    let selected = self.tree_view.selected.as_deref() == Some(n.uri.as_str());
                    row.set_selected(selected);
                    let covered = self.tree_view.covered(&n.uri);
                    row.col(|ui| {
                        let mut on = self.tree_view.ticked.contains(&n.uri);
                        let enabled = !self.full && (on || !covered);
                        let r = ui
                            .add_enabled(enabled, egui::Checkbox::without_text(&mut on))
                            .accessible_name(format!("Delegate {}", n.uri));
                        if r.changed() {
                            tick = Some((n.uri.clone(), on));
                        }
                    });
                    row.col(|ui| {
                        ui.add_space(f32::from(n.depth) * 14.0);
                        if n.leaf {
                            ui.add_space(18.0);
                        } else {
                            let open = self.tree_view.expanded.contains(&n.uri);
                            if ui
                                .add(egui::Button::new(if open { "⏷" } else { "⏵" }).frame(false))
                                .accessible_name(format!(
                                    "{} {}",
                                    if open { "Close" } else { "Open" },
                                    n.uri
                                ))
                                .clicked()
                            {
                                toggle = Some(n.uri.clone());
                            }
                        }
                        let name = if n.name.is_empty() { "." } else { &n.name };
                        let mut text = RichText::new(name);
                        if covered {
                            text = text.strong().underline();
                        }
                        if ui.selectable_label(selected, text).clicked() {
                            select = Some(n.uri.clone());
                        }
                        if let Some(v) = &n.value {
                            ui.weak(v);
                        }
                    });
                    for i in 0..n_servers {
                        row.col(|ui| {
                            let m = n.rights.get(i).copied().unwrap_or(0);
                            if m != 0 {
                                ui.label(
                                    RichText::new(rights_letters(m))
                                        .monospace()
                                        .color(server_color(ui, i)),
                                );
                            }
                        });
                    }
                    row.col(|ui| {
                        if n.own_acl.is_empty() {
                            ui.weak("inherited");
                        } else {
                            ui.monospace(&n.own_acl)
                                .on_hover_text(n.own_acl.replace('&', "\n"));
                        }
                    });
                });
            });
        if let Some(u) = toggle {
            self.tree_view.toggle(&u);
        }
        if let Some((u, on)) = tick {
            if on {
                // A ticked subtree covers what is below it.
                self.tree_view
                    .ticked
                    .retain(|t| !(t.starts_with(u.as_str()) && t[u.len()..].starts_with('/')));
                self.tree_view.ticked.insert(u);
            } else {
                self.tree_view.ticked.remove(&u);
            }
        }
        if let Some(u) = select {
            self.tree_view.selected = Some(u);
        }
    }

    fn form_ui(&mut self, ui: &mut Ui, cx: &mut Ctx<'_>, dev_id: &str, tree: &Arc<TreeModel>) {
        let server = &cx.snap.servers[cx.server];
        ui.heading("Delegate this device");
        egui::Grid::new("delegate-grid")
            .num_columns(2)
            .spacing([12.0, 6.0])
            .show(ui, |ui| {
                let l = ui.label("Peer");
                egui::ComboBox::from_id_salt("peer-combo")
                    .selected_text(if self.peer.is_empty() {
                        "(no peer)"
                    } else {
                        &self.peer
                    })
                    .show_ui(ui, |ui| {
                        for p in server.peers.iter() {
                            ui.selectable_value(&mut self.peer, p.server_id.clone(), &p.server_id);
                        }
                    })
                    .response
                    .labelled_by(l.id);
                ui.end_row();
                ui.label("What");
                ui.horizontal(|ui| {
                    ui.radio_value(&mut self.full, false, "Partial: the ticked subtrees");
                    ui.radio_value(&mut self.full, true, "Full: the whole device");
                });
                ui.end_row();
                ui.label("Approach");
                ui.horizontal(|ui| {
                    ui.radio_value(&mut self.bootstrap, false, "DMAcc account");
                    ui.radio_value(&mut self.bootstrap, true, "Bootstrap server URL");
                });
                ui.end_row();
                ui.label("Lease");
                ui.horizontal(|ui| {
                    ui.checkbox(&mut self.lease_on, "Temporary");
                    ui.add_enabled_ui(self.lease_on, |ui| {
                        labelled_edit(ui, "seconds", &mut self.lease_secs, 80.0);
                    });
                });
                ui.end_row();
                ui.label("Subtrees");
                if self.full {
                    ui.label("the whole tree (Full)");
                } else if self.tree_view.ticked.is_empty() {
                    ui.weak("none ticked: tick nodes in the tree above");
                } else {
                    ui.vertical(|ui| {
                        let mut untick = None;
                        for t in &self.tree_view.ticked {
                            ui.horizontal(|ui| {
                                ui.monospace(t);
                                if ui
                                    .small_button("✖")
                                    .accessible_name(format!("Untick {t}"))
                                    .clicked()
                                {
                                    untick = Some(t.clone());
                                }
                            });
                        }
                        if let Some(t) = untick {
                            self.tree_view.ticked.remove(&t);
                        }
                    });
                }
                ui.end_row();
            });
        // The preview follows the form.
        let key = PreviewKey {
            server: cx.server,
            dev_id: dev_id.to_owned(),
            peer: self.peer.clone(),
            full: self.full,
            paths: self.paths(),
            bootstrap: self.bootstrap,
        };
        let ready = !key.peer.is_empty() && (key.full || !key.paths.is_empty());
        let stale_tree = self
            .preview
            .as_ref()
            .is_some_and(|_| self.tree_asked.as_ref().map(|t| t.1) != Some(tree.last_seen_ms));
        if ready && (self.preview_asked.as_ref() != Some(&key) || stale_tree) {
            self.preview_asked = Some(key.clone());
            cx.send(UiCommand::Preview(key.clone()));
        }
        ui.horizontal(|ui| {
            let can = ready && matches!(&self.preview, Some((k, Ok(_))) if *k == key);
            if ui
                .add_enabled(can, egui::Button::new(RichText::new("Delegate").strong()))
                .on_disabled_hover_text("Pick a peer and tick subtrees (or Full) first")
                .clicked()
            {
                match self.request(dev_id) {
                    Ok(req) => {
                        self.form_error = None;
                        cx.send(UiCommand::Delegate {
                            server: cx.server,
                            req,
                        });
                    }
                    Err(e) => self.form_error = Some(e),
                }
            }
            if let Some(e) = &self.form_error {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
        });
        ui.separator();
        match &self.preview {
            _ if !ready => {
                ui.weak("Pick a peer and tick subtrees (or choose Full) to see what would change.");
            }
            Some((k, result)) if *k == key => preview_ui(ui, result),
            _ => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Computing the preview…");
                });
            }
        }
    }
}

fn preview_ui(ui: &mut Ui, result: &Result<PreviewView, String>) {
    let p = match result {
        Ok(p) => p,
        Err(e) => {
            ui.colored_label(
                ui.visuals().error_fg_color,
                format!("This delegation cannot be made: {e}"),
            );
            return;
        }
    };
    ui.strong("Preview: what changes on the device");
    for a in &p.added {
        ui.label(format!("Adds {a}"));
    }
    egui::Grid::new("preview-acls")
        .striped(true)
        .num_columns(3)
        .show(ui, |ui| {
            ui.strong("Node");
            ui.strong("ACL before");
            ui.strong("ACL after (new in bold)");
            ui.end_row();
            for (uri, before, after) in &p.acls {
                ui.monospace(uri);
                ui.vertical(|ui| {
                    if before.is_empty() {
                        ui.weak("(none: inherited)");
                    }
                    for l in before.split('&').filter(|l| !l.is_empty()) {
                        ui.monospace(l);
                    }
                });
                ui.vertical(|ui| {
                    for l in after.split('&').filter(|l| !l.is_empty()) {
                        if before.split('&').any(|b| b == l) {
                            ui.monospace(l);
                        } else {
                            ui.label(RichText::new(l).monospace().strong());
                        }
                    }
                });
                ui.end_row();
            }
        });
    egui::CollapsingHeader::new(format!("Commands sent ({})", p.changes.len()))
        .default_open(false)
        .show(ui, |ui| {
            for (i, c) in p.changes.iter().enumerate() {
                ui.label(format!("{}. {c}", i + 1));
            }
        });
    egui::CollapsingHeader::new(format!("Undo, if anything fails ({})", p.undo.len()))
        .default_open(true)
        .show(ui, |ui| {
            for (i, c) in p.undo.iter().enumerate() {
                ui.label(format!("{}. {c}", i + 1));
            }
        });
    if let Some(n) = &p.note {
        ui.colored_label(ui.visuals().warn_fg_color, n);
    }
}

fn now_ms() -> i64 {
    crate::engine::driver::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the list must show, computed the slow way.
    fn expected(table: &DeviceTable, filter: &str, sort: (DevCol, bool)) -> Vec<u32> {
        let f = filter.trim().to_lowercase();
        let mut rows: Vec<u32> = (0..table.len() as u32)
            .filter(|&i| {
                let d = &table[i as usize];
                [&d.dev_id, &d.man, &d.model, &d.managers]
                    .iter()
                    .any(|s| s.to_lowercase().contains(&f))
            })
            .collect();
        rows.sort_by(|&a, &b| {
            let (a, b) = (&table[a as usize], &table[b as usize]);
            let o = match sort.0 {
                DevCol::Id => a.dev_id.cmp(&b.dev_id),
                DevCol::Man => a.man.cmp(&b.man).then(a.dev_id.cmp(&b.dev_id)),
                DevCol::Model => a.model.cmp(&b.model).then(a.dev_id.cmp(&b.dev_id)),
                DevCol::LastSeen => a
                    .last_seen_ms
                    .cmp(&b.last_seen_ms)
                    .then(a.dev_id.cmp(&b.dev_id)),
                DevCol::Managers => a.managers.cmp(&b.managers).then(a.dev_id.cmp(&b.dev_id)),
            };
            if sort.1 { o } else { o.reverse() }
        });
        rows
    }

    #[test]
    fn the_rows_shown_follow_filter_sort_and_table_as_typed() {
        let table = Arc::new(DeviceTable::new(super::super::synthetic::devices(
            300, 1_000_000,
        )));
        let mut p = DevicesPanel::default();
        let cols = [
            DevCol::Id,
            DevCol::Man,
            DevCol::Model,
            DevCol::LastSeen,
            DevCol::Managers,
        ];
        // Typing a filter letter by letter (each narrows the last), then other filters, under
        // every sort.
        for sort in cols.iter().flat_map(|&c| [(c, true), (c, false)]) {
            p.sort = sort;
            for f in [
                "",
                "s",
                "si",
                "sim",
                "simphone 1",
                "SimPhone 12",
                "ACME",
                "dms2",
                "zzz",
                "",
            ] {
                p.filter = f.to_owned();
                assert_eq!(
                    &*p.ordered(&table),
                    expected(&table, f, sort),
                    "{f:?} {sort:?}"
                );
            }
        }
        // A new snapshot with other rows: recomputed, though the filter did not change.
        p.filter = "acme".into();
        let fewer = Arc::new(DeviceTable::new(super::super::synthetic::devices(
            40, 1_000_000,
        )));
        assert_eq!(&*p.ordered(&fewer), expected(&fewer, "acme", p.sort));
        assert_eq!(&*p.ordered(&table), expected(&table, "acme", p.sort));
    }
}
