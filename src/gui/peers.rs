//! The Peers view: each peer's ServerID, URL, policy, certificate fingerprint and expiry,
//! and whether it answers (a TLS handshake). Adding a peer: the engine reads its peers at
//! start, so the view reads the peer's certificate file and gives the configuration to add.

use egui::{RichText, Ui};

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
            if server.peers.is_empty() {
                ui.label("No peer is configured: add one below.");
            }
            for p in server.peers.iter() {
                egui::Frame::group(ui.style()).show(ui, |ui| {
                    ui.set_width(ui.available_width());
                    ui.horizontal(|ui| {
                        ui.label(RichText::new(&p.server_id).strong().size(16.0));
                        match &p.reach {
                            Reach::Unknown => {
                                ui.weak("not checked yet");
                            }
                            Reach::Checking => {
                                ui.spinner();
                                ui.label("checking…");
                            }
                            Reach::Up(ms) => {
                                ui.colored_label(
                                    super::common::state_color(
                                        ui,
                                        crate::delegation::machine::State::Completed,
                                    ),
                                    format!("● reachable: TLS handshake in {ms} ms"),
                                );
                            }
                            Reach::Down(why) => {
                                ui.colored_label(
                                    ui.visuals().error_fg_color,
                                    format!("● unreachable: {why}"),
                                );
                            }
                        }
                    });
                    egui::Grid::new(("peer", &p.server_id))
                        .num_columns(2)
                        .spacing([14.0, 4.0])
                        .show(ui, |ui| {
                            ui.label("Peer endpoint");
                            ui.monospace(&p.url);
                            ui.end_row();
                            ui.label("Its requests");
                            ui.label(match p.policy.as_str() {
                                "accept" => "accepted at once (policy accept)",
                                "decline" => "declined at once (policy decline)",
                                _ => "wait for an operator (policy operator)",
                            });
                            ui.end_row();
                            ui.label("Recognised by");
                            ui.label(&p.auth);
                            ui.end_row();
                            ui.label("SHA-256 fingerprint");
                            match &p.fingerprint {
                                Some(fp) => ui.monospace(fp),
                                None => ui.weak("unknown until it answers"),
                            };
                            ui.end_row();
                            ui.label("Certificate expires");
                            match (&p.expires, p.expires_ms) {
                                (Some(t), Some(ms)) if ms < now => ui.colored_label(
                                    ui.visuals().error_fg_color,
                                    format!("EXPIRED {t} UTC"),
                                ),
                                (Some(t), Some(ms)) if ms < now + 30 * 86_400_000 => ui
                                    .colored_label(
                                        ui.visuals().warn_fg_color,
                                        format!("{t} UTC (within 30 days)"),
                                    ),
                                (Some(t), Some(ms)) => ui.label(format!(
                                    "{t} UTC (in {} days)",
                                    (ms - now) / 86_400_000
                                )),
                                _ => ui.weak("unknown until it answers"),
                            };
                            ui.end_row();
                        });
                });
                ui.add_space(4.0);
            }
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
