//! The Requests view: incoming DELEGATION_NOTIFs that wait for an operator's decision, with
//! Accept and Decline (the reason goes to the peer).

use std::collections::HashMap;

use egui::{RichText, Ui};

use super::Ctx;
use super::common::labelled_edit_hint;
use super::model::*;
use crate::delegation::machine::State;

/// The Requests view's state.
#[derive(Debug, Default)]
pub struct RequestsPanel {
    /// The reason typed for each request, by DelegationID.
    pub reasons: HashMap<String, String>,
    /// Requests decided here and not yet out of the list.
    pub decided: HashMap<String, &'static str>,
}

impl RequestsPanel {
    /// How many requests wait on `server`.
    pub fn count(snap: &Snapshot, server: usize) -> usize {
        // Counted when the snapshot was made: this runs every frame, whatever the view.
        snap.servers
            .get(server)
            .map_or(0, |s| s.delegations.awaiting_operator())
    }

    /// Draws the view.
    pub fn ui(&mut self, ui: &mut Ui, cx: &mut Ctx<'_>) {
        let Some(server) = cx.snap.servers.get(cx.server).cloned() else {
            return;
        };
        egui::CentralPanel::default_margins().show(ui, |ui| {
            ui.heading("Incoming requests");
            let waiting: Vec<&DelegationItem> = server
                .delegations
                .iter()
                .filter(|d| d.state == State::AwaitingOperator)
                .collect();
            self.decided
                .retain(|id, _| waiting.iter().any(|d| &d.id == id));
            if waiting.is_empty() {
                ui.label(format!(
                    "No request waits for a decision on {}. Peers whose policy is \"operator\" \
                     land here.",
                    server.server_id
                ));
                return;
            }
            ui.label(format!(
                "{} request(s) from peers wait for a decision on {}.",
                waiting.len(),
                server.server_id
            ));
            egui::ScrollArea::vertical().show(ui, |ui| {
                for d in waiting {
                    egui::Frame::group(ui.style()).show(ui, |ui| {
                        ui.set_width(ui.available_width());
                        ui.horizontal(|ui| {
                            ui.label(
                                RichText::new(format!("{} asks about {}", d.peer, d.dev_id))
                                    .strong(),
                            );
                            ui.weak(&d.id);
                        });
                        egui::Grid::new(("request", &d.id))
                            .num_columns(2)
                            .spacing([14.0, 3.0])
                            .show(ui, |ui| {
                                ui.label("What");
                                ui.label(if d.full {
                                    "Full: the whole device".to_owned()
                                } else {
                                    format!("Partial: {}", d.paths.join(", "))
                                });
                                ui.end_row();
                                ui.label("Approach");
                                ui.label(if d.bootstrap {
                                    "bootstrap server URL"
                                } else {
                                    "DMAcc account"
                                });
                                ui.end_row();
                                ui.label("This server");
                                ui.label(match d.role {
                                    crate::delegation::machine::Role::Delegated => {
                                        "would manage the device (delegated)"
                                    }
                                    crate::delegation::machine::Role::Delegating => {
                                        "would hand the device over (delegating)"
                                    }
                                });
                                ui.end_row();
                                ui.label("Received");
                                ui.label(time_text(d.created_ms));
                                ui.end_row();
                                if let Some(t) = d.deadline {
                                    ui.label("Undecided until");
                                    ui.label(format!("{} (then declined)", time_text(t)));
                                    ui.end_row();
                                }
                            });
                        if let Some(what) = self.decided.get(&d.id) {
                            ui.horizontal(|ui| {
                                ui.spinner();
                                ui.label(format!("{what}…"));
                            });
                            return;
                        }
                        let reason = self.reasons.entry(d.id.clone()).or_default();
                        ui.horizontal(|ui| {
                            if ui.button(RichText::new("Accept").strong()).clicked() {
                                cx.send(UiCommand::Accept {
                                    server: cx.server,
                                    id: d.id.clone(),
                                });
                                self.decided.insert(d.id.clone(), "Accepting");
                            }
                            ui.separator();
                            labelled_edit_hint(
                                ui,
                                "Reason",
                                reason,
                                "why it is declined (sent to the peer)",
                                260.0,
                            );
                            if ui.button("Decline").clicked() {
                                let r = if reason.trim().is_empty() {
                                    "declined by the operator".to_owned()
                                } else {
                                    reason.trim().to_owned()
                                };
                                cx.send(UiCommand::Decline {
                                    server: cx.server,
                                    id: d.id.clone(),
                                    reason: r,
                                });
                                self.decided.insert(d.id.clone(), "Declining");
                            }
                        });
                    });
                }
            });
        });
    }
}
