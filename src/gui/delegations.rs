//! The Delegations view: a virtualised list with state and text filters, and the selected
//! delegation's timeline: the eight steps with timestamps, durations and who acts, the
//! device commands with their statuses, the messages exchanged (pretty XML to copy), the
//! operator's and policies' decisions; Abort (confirmed) and Retry. It follows the engine
//! live: the backend reloads the open timeline whenever the engine's board changes.

use std::sync::Arc;

use egui::{Key, RichText, Ui};
use egui_extras::{Column, TableBuilder};

use super::Ctx;
use super::common::{activity, labelled_edit_hint, state_color, state_text};
use super::model::*;
use super::table::{DelegationTable, needle};
use crate::delegation::machine::{Role, State};

/// What the rows shown were computed for.
#[derive(Debug, Clone)]
struct ShownKey {
    /// The table (held, so its address cannot be reused by another).
    table: Arc<DelegationTable>,
    state: Option<State>,
    live_only: bool,
    /// The filter as typed.
    filter: String,
    /// The filter as searched.
    needle: String,
}

/// The Delegations view's state.
#[derive(Debug, Default)]
pub struct DelegationsPanel {
    /// Text filter (device, peer, id).
    pub filter: String,
    /// Only this state.
    pub state_filter: Option<State>,
    /// Only live ones (not over).
    pub live_only: bool,
    /// The rows shown (indices into the table), in order.
    shown: Arc<[u32]>,
    shown_key: Option<ShownKey>,
    /// Where the open delegation is in the table: (table, id, index).
    found: Option<(Arc<DelegationTable>, String, Option<usize>)>,
    /// The open delegation.
    pub selected: Option<String>,
    watching: Option<(usize, String)>,
    detail: Option<Arc<Detail>>,
    /// A delegation waiting for the operator to confirm its abort.
    pub confirm_abort: Option<String>,
    scroll_to: Option<usize>,
}

impl DelegationsPanel {
    /// Forgets the selection (another server).
    pub fn reset(&mut self) {
        *self = DelegationsPanel::default();
    }

    /// Opens a delegation.
    pub fn select(&mut self, id: &str) {
        if self.selected.as_deref() != Some(id) {
            self.selected = Some(id.to_owned());
            self.detail = None;
            self.confirm_abort = None;
        }
    }

    /// The open timeline, when loaded.
    pub fn detail(&self) -> Option<&Arc<Detail>> {
        self.detail.as_ref()
    }

    /// A timeline arrived.
    pub fn on_detail(&mut self, detail: Arc<Detail>) {
        if self.selected.as_deref() == Some(detail.id.as_str()) {
            self.detail = Some(detail);
        }
    }

    /// The delegations shown, in order; recomputed only when the table or a filter changed
    /// (only what is shown when the text filter grew, as while typing).
    fn ordered(&mut self, list: &Arc<DelegationTable>) -> Arc<[u32]> {
        let same = |k: &ShownKey| {
            Arc::ptr_eq(&k.table, list)
                && k.state == self.state_filter
                && k.live_only == self.live_only
        };
        if self
            .shown_key
            .as_ref()
            .is_some_and(|k| same(k) && k.filter == self.filter)
        {
            return self.shown.clone();
        }
        let needle = needle(&self.filter);
        let keep = |&i: &u32| {
            let d = &list[i as usize];
            self.state_filter.is_none_or(|s| d.state == s)
                && (!self.live_only || !d.state.is_terminal())
                && (needle.is_empty() || list.matches(i as usize, &needle))
        };
        let narrowing = self
            .shown_key
            .as_ref()
            .is_some_and(|k| same(k) && needle.contains(&k.needle));
        let shown: Vec<u32> = if narrowing {
            self.shown.iter().copied().filter(keep).collect()
        } else {
            let n = u32::try_from(list.len()).unwrap_or(u32::MAX);
            (0..n).filter(keep).collect()
        };
        self.shown = Arc::from(shown);
        self.shown_key = Some(ShownKey {
            table: list.clone(),
            state: self.state_filter,
            live_only: self.live_only,
            filter: self.filter.clone(),
            needle,
        });
        self.shown.clone()
    }

    /// The open delegation's row, found once per table.
    fn open_row(&mut self, list: &Arc<DelegationTable>) -> Option<usize> {
        let id = self.selected.as_deref()?;
        match &self.found {
            Some((t, found, i)) if Arc::ptr_eq(t, list) && found == id => *i,
            _ => {
                let i = list.iter().position(|d| d.id == id);
                self.found = Some((list.clone(), id.to_owned(), i));
                i
            }
        }
    }

    /// Draws the view.
    pub fn ui(&mut self, ui: &mut Ui, cx: &mut Ctx<'_>) {
        let Some(server) = cx.snap.servers.get(cx.server).cloned() else {
            return;
        };
        // Follow the open delegation's timeline.
        let want = self.selected.clone().map(|id| (cx.server, id));
        if want != self.watching {
            self.watching = want.clone();
            cx.send(UiCommand::Watch {
                server: cx.server,
                id: want.map(|w| w.1),
            });
        }
        egui::Panel::left("delegations-list")
            .resizable(true)
            .default_size(ui.available_width() * 0.5)
            .min_size(360.0)
            .show(ui, |ui| self.list_ui(ui, &server));
        egui::CentralPanel::default_margins().show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("timeline-scroll")
                .show(ui, |ui| self.timeline_ui(ui, cx, &server));
        });
        self.abort_modal(ui, cx);
    }

    fn list_ui(&mut self, ui: &mut Ui, server: &ServerView) {
        let list = server.delegations.clone();
        ui.horizontal(|ui| {
            ui.heading("All delegations");
            ui.label(format!(
                "{} on {}, {} in flight",
                list.len(),
                server.server_id,
                list.live()
            ));
        });
        ui.horizontal(|ui| {
            labelled_edit_hint(ui, "Filter", &mut self.filter, "device, peer or id", 180.0);
            let l = ui.label("State");
            egui::ComboBox::from_id_salt("state-filter")
                .selected_text(self.state_filter.map_or("any", state_words))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.state_filter, None, "any");
                    for s in STATES {
                        ui.selectable_value(&mut self.state_filter, Some(s), state_words(s));
                    }
                })
                .response
                .labelled_by(l.id);
            ui.checkbox(&mut self.live_only, "In flight only");
        });
        let order = self.ordered(&list);
        if !ui.ctx().egui_wants_keyboard_input() && !order.is_empty() {
            let down = ui.input(|i| i.key_pressed(Key::ArrowDown));
            let up = ui.input(|i| i.key_pressed(Key::ArrowUp));
            if down || up {
                let at = self.open_row(&list);
                let pos = at.and_then(|at| order.iter().position(|&i| i as usize == at));
                let next = match (pos, down) {
                    (None, _) => 0,
                    (Some(p), true) => (p + 1).min(order.len() - 1),
                    (Some(p), false) => p.saturating_sub(1),
                };
                let id = list[order[next] as usize].id.clone();
                self.select(&id);
                self.scroll_to = Some(next);
            }
        }
        ui.label(format!("{} shown", order.len()));
        let now = crate::engine::driver::now_ms();
        let mut table = TableBuilder::new(ui)
            .id_salt("delegations-table")
            .striped(true)
            .resizable(true)
            .cell_layout(egui::Layout::left_to_right(egui::Align::Center))
            .column(Column::initial(128.0).at_least(60.0).clip(true))
            .column(Column::initial(30.0))
            .column(Column::initial(160.0).at_least(60.0).clip(true))
            .column(Column::initial(100.0).at_least(50.0).clip(true))
            .column(Column::initial(80.0).at_least(40.0).clip(true))
            .column(Column::initial(70.0).at_least(40.0).clip(true))
            .column(Column::remainder().at_least(100.0).clip(true))
            .min_scrolled_height(0.0);
        if let Some(r) = self.scroll_to.take() {
            table = table.scroll_to_row(r, None);
        }
        let mut clicked = None;
        table
            .header(22.0, |mut h| {
                for t in [
                    "State", "Step", "Device", "Peer", "Kind", "Updated", "Doing",
                ] {
                    h.col(|ui| {
                        ui.strong(t);
                    });
                }
            })
            .body(|body| {
                body.rows(20.0, order.len(), |mut row| {
                    let d = &list[order[row.index()] as usize];
                    let selected = self.selected.as_deref() == Some(d.id.as_str());
                    row.set_selected(selected);
                    row.col(|ui| {
                        if ui
                            .selectable_label(selected, state_text(ui, d))
                            .accessible_name(format!("Open {}", d.id))
                            .clicked()
                        {
                            clicked = Some(d.id.clone());
                        }
                    });
                    row.col(|ui| {
                        ui.label(d.step.to_string());
                    });
                    row.col(|ui| {
                        ui.label(&d.dev_id);
                    });
                    row.col(|ui| {
                        ui.label(&d.peer);
                    });
                    row.col(|ui| {
                        ui.label(d.kind());
                    });
                    row.col(|ui| {
                        ui.label(ago_text(now, d.updated_ms))
                            .on_hover_text(time_text(d.updated_ms));
                    });
                    row.col(|ui| {
                        let text = activity(d);
                        if d.waits_for_device() {
                            ui.colored_label(ui.visuals().warn_fg_color, text);
                        } else if matches!(d.state, State::Failed | State::RollingBack) {
                            ui.colored_label(ui.visuals().error_fg_color, text);
                        } else {
                            ui.label(text);
                        }
                    });
                });
            });
        if let Some(id) = clicked {
            self.select(&id);
        }
    }

    fn timeline_ui(&mut self, ui: &mut Ui, cx: &mut Ctx<'_>, server: &ServerView) {
        let Some(id) = self.selected.clone() else {
            ui.add_space(40.0);
            ui.vertical_centered(|ui| {
                ui.heading("Select a delegation");
                ui.label("Its timeline, device commands and messages show here.");
            });
            return;
        };
        let list = server.delegations.clone();
        let Some(d) = self.open_row(&list).map(|i| list[i].clone()) else {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("Waiting for {id} to be stored…"));
            });
            return;
        };
        ui.horizontal_wrapped(|ui| {
            ui.heading(RichText::new(state_words(d.state)).color(state_color(ui, d.state)));
            ui.label(RichText::new(format!("step {} of 8", d.step)).strong());
            ui.monospace(&d.id);
        });
        egui::Grid::new("delegation-facts")
            .num_columns(2)
            .spacing([12.0, 4.0])
            .show(ui, |ui| {
                ui.label("Device");
                ui.label(&d.dev_id);
                ui.end_row();
                ui.label("This server");
                ui.label(format!(
                    "{} ({})",
                    server.server_id,
                    match d.role {
                        Role::Delegating => "delegating: hands the device over",
                        Role::Delegated => "delegated: receives the device",
                    }
                ));
                ui.end_row();
                ui.label("Peer");
                ui.label(&d.peer);
                ui.end_row();
                ui.label("Kind");
                ui.label(if d.full {
                    d.kind()
                } else {
                    format!("{}: {}", d.kind(), d.paths.join(", "))
                });
                ui.end_row();
                ui.label("Started");
                ui.label(time_text(d.created_ms));
                ui.end_row();
                ui.label("Now");
                let text = activity(&d);
                if d.waits_for_device() {
                    ui.colored_label(
                        ui.visuals().warn_fg_color,
                        format!("{text} (not a failure: devices may be offline for a while)"),
                    );
                } else if d.state == State::Failed {
                    ui.colored_label(ui.visuals().error_fg_color, format!("failed: {text}"));
                } else {
                    ui.label(text);
                }
                ui.end_row();
                if let Some(dl) = d.deadline.filter(|_| !d.state.is_terminal()) {
                    ui.label("Deadline");
                    ui.label(time_text(dl));
                    ui.end_row();
                }
                if let Some(r) = &d.retry_of {
                    ui.label("Retries");
                    ui.monospace(r);
                    ui.end_row();
                }
            });
        ui.horizontal(|ui| {
            let live = !d.state.is_terminal();
            if ui
                .add_enabled(live, egui::Button::new("Abort…"))
                .on_hover_text("Stop it and put the device back as it was")
                .clicked()
            {
                self.confirm_abort = Some(d.id.clone());
            }
            let retry = matches!(d.state, State::Failed | State::Aborted);
            if ui
                .add_enabled(retry, egui::Button::new("Retry"))
                .on_hover_text("Start it again as a new attempt, linked to this one")
                .clicked()
            {
                cx.send(UiCommand::Retry {
                    server: cx.server,
                    id: d.id.clone(),
                });
            }
        });
        ui.separator();
        let Some(detail) = self.detail.clone().filter(|x| x.id == id) else {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Reading the timeline…");
            });
            return;
        };
        ui.strong("Timeline");
        for s in &detail.steps {
            let reached = s.started_ms.is_some();
            let current = !d.state.is_terminal() && s.step == d.step;
            let mark = if current {
                "▶"
            } else if reached {
                "✔"
            } else {
                "·"
            };
            ui.horizontal(|ui| {
                let title = RichText::new(format!("{mark} {} {}", s.step, s.name));
                let title = if current {
                    title.strong().color(state_color(ui, State::Running))
                } else if reached {
                    title.strong()
                } else {
                    title.weak()
                };
                ui.allocate_ui_with_layout(
                    egui::vec2(190.0, 18.0),
                    egui::Layout::left_to_right(egui::Align::Center),
                    |ui| {
                        ui.set_min_width(190.0);
                        ui.label(title);
                    },
                );
                match s.started_ms {
                    Some(t) => ui.monospace(time_text(t)),
                    None => ui.weak("not reached"),
                };
                if let Some(ms) = s.duration_ms {
                    ui.label(RichText::new(format!("took {}", duration_text(ms))).strong());
                }
                ui.add(egui::Label::new(RichText::new(&s.who).weak()).wrap());
            });
            ui.indent(("step-events", s.step), |ui| {
                for e in &s.events {
                    let failed = e.text.starts_with("failed") || e.text.contains("refused");
                    let line =
                        format!("{}  {}", time_text(e.at_ms).get(11..).unwrap_or(""), e.text);
                    if failed {
                        ui.colored_label(ui.visuals().error_fg_color, line);
                    } else {
                        ui.label(line);
                    }
                }
            });
        }
        if !detail.audit.is_empty() {
            ui.add_space(6.0);
            ui.strong("Decisions");
            for a in &detail.audit {
                ui.label(format!(
                    "{}  {} {}: {}",
                    time_text(a.at_ms),
                    a.actor,
                    a.action,
                    a.detail
                ));
            }
        }
        ui.add_space(6.0);
        ui.strong(format!("Device commands ({})", detail.commands.len()));
        if detail.commands.is_empty() {
            ui.weak(
                "None known: the engine empties a delegation's device journal as the device \
                 takes it, and this console shows what it saw while the delegation ran. The \
                 events above say what the device did.",
            );
        } else {
            for c in &detail.commands {
                ui.horizontal(|ui| {
                    let color = if c.status.starts_with("200") {
                        state_color(ui, State::Completed)
                    } else if c.status.starts_with(|ch: char| ch.is_ascii_digit()) {
                        ui.visuals().error_fg_color
                    } else {
                        ui.visuals().weak_text_color()
                    };
                    ui.label(RichText::new(c.kind).weak());
                    ui.label(RichText::new(&c.status).color(color).strong());
                    ui.add(egui::Label::new(&c.text).wrap());
                });
            }
        }
        ui.add_space(6.0);
        ui.strong(format!(
            "Messages with {} ({})",
            d.peer,
            detail.messages.len()
        ));
        for (k, m) in detail.messages.iter().enumerate() {
            let arrow = if m.outgoing {
                "→ sent"
            } else {
                "← received"
            };
            egui::CollapsingHeader::new(format!(
                "{arrow} {} (Seq {}) at {}",
                m.msg_type,
                m.seq,
                time_text(m.at_ms)
            ))
            .id_salt(("msg", k))
            .show(ui, |ui| {
                if ui
                    .button("Copy XML")
                    .on_hover_text("Copy this message to the clipboard")
                    .clicked()
                {
                    ui.ctx().copy_text(m.xml.clone());
                }
                let mut text = m.xml.as_str();
                ui.add(
                    egui::TextEdit::multiline(&mut text)
                        .code_editor()
                        .desired_width(f32::INFINITY),
                );
            });
        }
    }

    fn abort_modal(&mut self, ui: &mut Ui, cx: &mut Ctx<'_>) {
        let Some(id) = self.confirm_abort.clone() else {
            return;
        };
        let mut close = false;
        egui::Modal::new(egui::Id::unique("confirm-abort")).show(ui.ctx(), |ui| {
            ui.heading("Abort this delegation?");
            ui.label(format!("{id} stops now."));
            ui.label(
                "The peer is told (FAILURE 1001) and every change made on the device is undone.",
            );
            ui.horizontal(|ui| {
                if ui
                    .button(RichText::new("Abort delegation").color(ui.visuals().error_fg_color))
                    .clicked()
                {
                    cx.send(UiCommand::Abort {
                        server: cx.server,
                        id: id.clone(),
                    });
                    close = true;
                }
                if ui.button("Keep it running").clicked()
                    || ui.input(|i| i.key_pressed(Key::Escape))
                {
                    close = true;
                }
            });
        });
        if close {
            self.confirm_abort = None;
        }
    }
}
