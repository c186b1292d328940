//! The Peers view: each peer's ServerID, URL, policy, certificate fingerprint and expiry,
//! and whether it answers (a TLS handshake). Adding a peer: the engine reads its peers at
//! start, so the view reads the peer's certificate file and gives the configuration to add.

use egui::{RichText, Ui};
use egui_extras::{Column, TableBuilder};

use super::Ctx;
use super::common::labelled_edit_hint;
use super::model::*;

/// The Peers view's state.
#[derive(Debug, Default)]
pub struct PeersPanel {
    /// New peer: its ServerID.
    pub new_id: String,
    /// New peer: its peer endpoint URL.
    pub new_url: String,
    /// New peer: its certificate file.
    pub new_cert: String,
    /// The configuration snippet made, or why not.
    pub snippet: Option<Result<String, String>>,
}

impl PeersPanel {
    /// Draws the view.
    pub fn ui(&mut self, ui: &mut Ui, cx: &mut Ctx<'_>) {
        let Some(server) = cx.snap.servers.get(cx.server).cloned() else {
            return;
        };
        egui::CentralPanel::default_margins().show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading("Peer servers");
                ui.label(format!(
                    "servers {} delegates to or accepts delegations from",
                    server.server_id
                ));
                if ui.button("Check again").clicked() {
                    cx.send(UiCommand::CheckPeers { server: cx.server });
                }
            });
            if let Some(url) = &server.peer_url {
                ui.label(format!(
                    "This server's peer endpoint: {url} (mutual TLS 1.3)"
                ));
            } else {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    "This server has no peer endpoint: it takes part in no delegation.",
                );
            }
            let now = crate::engine::driver::now_ms();
            TableBuilder::new(ui)
                .id_salt("peers-table")
                .striped(true)
                .resizable(true)
                .cell_layout(egui::Layout::left_to_right(egui::Align::Center))
                .column(Column::initial(130.0).clip(true))
                .column(Column::initial(190.0).clip(true))
                .column(Column::initial(70.0))
                .column(Column::initial(200.0).clip(true))
                .column(Column::initial(250.0).clip(true))
                .column(Column::initial(150.0).clip(true))
                .column(Column::remainder().clip(true))
                .min_scrolled_height(0.0)
                .header(22.0, |mut h| {
                    for t in [
                        "ServerID",
                        "URL",
                        "Policy",
                        "Certificate",
                        "SHA-256 fingerprint",
                        "Expires",
                        "Reachable",
                    ] {
                        h.col(|ui| {
                            ui.strong(t);
                        });
                    }
                })
                .body(|body| {
                    body.rows(22.0, server.peers.len(), |mut row| {
                        let p = &server.peers[row.index()];
                        row.col(|ui| {
                            ui.label(RichText::new(&p.server_id).strong());
                        });
                        row.col(|ui| {
                            ui.monospace(&p.url);
                        });
                        row.col(|ui| {
                            ui.label(&p.policy);
                        });
                        row.col(|ui| {
                            ui.label(&p.auth);
                        });
                        row.col(|ui| {
                            match &p.fingerprint {
                                Some(fp) => ui
                                    .monospace(fp.get(..23).map_or(fp.clone(), |s| format!("{s}…")))
                                    .on_hover_text(fp),
                                None => ui.weak("unknown until it answers"),
                            };
                        });
                        row.col(|ui| {
                            match (&p.expires, p.expires_ms) {
                                (Some(t), Some(ms)) if ms < now => ui.colored_label(
                                    ui.visuals().error_fg_color,
                                    format!("EXPIRED {t}"),
                                ),
                                (Some(t), Some(ms)) if ms < now + 30 * 86_400_000 => {
                                    ui.colored_label(ui.visuals().warn_fg_color, t)
                                }
                                (Some(t), _) => ui.label(t),
                                _ => ui.weak("—"),
                            };
                        });
                        row.col(|ui| {
                            match &p.reach {
                                Reach::Unknown => ui.weak("not checked"),
                                Reach::Checking => ui.spinner(),
                                Reach::Up(ms) => ui.colored_label(
                                    super::common::state_color(
                                        ui,
                                        crate::delegation::machine::State::Completed,
                                    ),
                                    format!("yes, TLS in {ms} ms"),
                                ),
                                Reach::Down(why) => {
                                    ui.colored_label(ui.visuals().error_fg_color, why)
                                }
                            };
                        });
                    });
                });
            ui.add_space(12.0);
            ui.separator();
            ui.heading("Add a peer");
            ui.label(
                "The engine reads its peers when it starts. Give the peer's certificate file: \
                 the console reads its fingerprint and expiry and writes the [[peers]] entry to \
                 add to the configuration file; restart the console or `dmdeleg serve` after.",
            );
            egui::Grid::new("add-peer")
                .num_columns(2)
                .spacing([10.0, 6.0])
                .show(ui, |ui| {
                    labelled_edit_hint(
                        ui,
                        "Peer ServerID",
                        &mut self.new_id,
                        "dms3.example",
                        260.0,
                    );
                    ui.end_row();
                    labelled_edit_hint(
                        ui,
                        "Peer URL",
                        &mut self.new_url,
                        "https://dms3.example:7443",
                        260.0,
                    );
                    ui.end_row();
                    labelled_edit_hint(
                        ui,
                        "Certificate file",
                        &mut self.new_cert,
                        "/etc/dmdeleg/dms3.example.pem",
                        360.0,
                    );
                    ui.end_row();
                });
            if ui.button("Read the certificate").clicked() {
                self.snippet = None;
                cx.send(UiCommand::PeerFromCert {
                    server: cx.server,
                    path: self.new_cert.trim().into(),
                    server_id: self.new_id.clone(),
                    url: self.new_url.clone(),
                });
            }
            match &self.snippet {
                Some(Ok(s)) => {
                    ui.label("Add this to the configuration file, then restart:");
                    let mut text = s.as_str();
                    ui.add(
                        egui::TextEdit::multiline(&mut text)
                            .code_editor()
                            .desired_width(f32::INFINITY),
                    );
                    if ui.button("Copy configuration").clicked() {
                        ui.ctx().copy_text(s.clone());
                    }
                }
                Some(Err(e)) => {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
                None => {}
            }
        });
    }
}
