//! The Peers view: each peer's ServerID, URL, policy, certificate fingerprint and expiry,
//! and whether it answers (a TLS handshake). Adding a peer: the operator names it, gives its
//! URL and its certificate file, sees the fingerprint and expiry of the certificate that will
//! be pinned, then confirms; the engine takes the peer at once (no restart) and keeps it.
//! Peers added that way can be removed again here.

use std::path::PathBuf;

use egui::{RichText, Ui};

use super::Ctx;
use super::common::labelled_edit_hint;
use super::model::*;
use crate::engine::peers::{NewPeer, Policy};

/// The Peers view's state.
#[derive(Debug, Default)]
pub struct PeersPanel {
    /// New peer: its ServerID.
    pub new_id: String,
    /// New peer: its peer endpoint URL.
    pub new_url: String,
    /// New peer: its certificate file.
    pub new_cert: String,
    /// New peer: what happens to its requests.
    pub new_policy: Policy,
    /// The certificate file read last, and what it holds (or why it cannot be used).
    pub cert: Option<(PathBuf, Result<CertSummary, String>)>,
    /// A file is being read.
    pub reading: bool,
    /// The peer is being added.
    pub adding: bool,
    /// Why the last add was refused, in the engine's words.
    pub add_error: Option<String>,
    /// The ServerID of the peer added last.
    pub added: Option<String>,
    /// A peer whose removal waits for the operator's confirmation.
    pub confirm_remove: Option<String>,
}

impl PeersPanel {
    /// Forgets the form's answers (another server); what was typed stays.
    pub fn reset(&mut self) {
        self.cert = None;
        self.reading = false;
        self.adding = false;
        self.add_error = None;
        self.added = None;
        self.confirm_remove = None;
    }

    /// A certificate file was read.
    pub fn on_cert(&mut self, path: PathBuf, result: Result<CertSummary, String>) {
        if path.as_path() == std::path::Path::new(self.new_cert.trim()) {
            self.reading = false;
            self.cert = Some((path, result));
        }
    }

    /// The engine added the peer, or said why not.
    pub fn on_added(&mut self, result: Result<String, String>) {
        self.adding = false;
        match result {
            Ok(id) => {
                self.added = Some(id);
                self.add_error = None;
                self.new_id.clear();
                self.new_url.clear();
                self.new_cert.clear();
                self.new_policy = Policy::default();
                self.cert = None;
            }
            Err(e) => self.add_error = Some(e),
        }
    }

    /// The engine removed a peer, or said why not (the notice says it too).
    pub fn on_removed(&mut self, result: Result<String, String>) {
        self.confirm_remove = None;
        if let Err(e) = result {
            self.add_error = Some(e);
        }
    }

    /// The certificate read for the file as typed now, if any.
    fn current_cert(&self) -> Option<&Result<CertSummary, String>> {
        self.cert
            .as_ref()
            .filter(|(p, _)| p.as_path() == std::path::Path::new(self.new_cert.trim()))
            .map(|(_, r)| r)
    }

    /// Draws the view.
    pub fn ui(&mut self, ui: &mut Ui, cx: &mut Ctx<'_>) {
        let Some(server) = cx.snap.servers.get(cx.server).cloned() else {
            return;
        };
        egui::CentralPanel::default_margins().show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("peers-scroll")
                .auto_shrink([false, false])
                .show(ui, |ui| {
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
                        ui.label("No peer yet: add one below.");
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
                            if p.removable {
                                self.remove_ui(ui, cx, &p.server_id);
                            }
                        });
                        ui.add_space(4.0);
                    }
                    ui.add_space(12.0);
                    ui.separator();
                    self.add_ui(ui, cx, now);
                });
        });
    }

    fn remove_ui(&mut self, ui: &mut Ui, cx: &mut Ctx<'_>, server_id: &str) {
        ui.horizontal(|ui| {
            if self.confirm_remove.as_deref() == Some(server_id) {
                ui.label(format!(
                    "Remove {server_id}? Its connections are refused from then on."
                ));
                if ui.button(format!("Yes, remove {server_id}")).clicked() {
                    cx.send(UiCommand::RemovePeer {
                        server: cx.server,
                        server_id: server_id.to_owned(),
                    });
                }
                if ui.button("Keep it").clicked() {
                    self.confirm_remove = None;
                }
            } else if ui
                .button(format!("Remove {server_id}"))
                .on_hover_text("Added here: it can be removed here")
                .clicked()
            {
                self.confirm_remove = Some(server_id.to_owned());
            }
        });
    }

    fn add_ui(&mut self, ui: &mut Ui, cx: &mut Ctx<'_>, now: i64) {
        ui.heading("Add a peer");
        ui.label(
            "The peer takes part at once, no restart: the engine pins the certificate in its \
             file (the first one, when the file holds a chain), accepts that peer's connections \
             and trusts it when calling it, whoever issued the certificate, and keeps it across \
             restarts.",
        );
        let cert_before = self.new_cert.clone();
        egui::Grid::new("add-peer")
            .num_columns(2)
            .spacing([10.0, 6.0])
            .show(ui, |ui| {
                labelled_edit_hint(ui, "Peer ServerID", &mut self.new_id, "dms3.example", 260.0);
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
                ui.label("Its requests");
                ui.horizontal(|ui| {
                    for (p, text) in [
                        (Policy::Operator, "ask an operator"),
                        (Policy::Accept, "accept at once"),
                        (Policy::Decline, "decline at once"),
                    ] {
                        ui.radio_value(&mut self.new_policy, p, text);
                    }
                });
                ui.end_row();
            });
        if self.new_cert != cert_before {
            // Another file: what was read no longer applies.
            self.reading = false;
        }
        let path = PathBuf::from(self.new_cert.trim());
        ui.horizontal(|ui| {
            let can_read = !self.new_cert.trim().is_empty() && !self.reading;
            if ui
                .add_enabled(can_read, egui::Button::new("Read the certificate"))
                .clicked()
            {
                self.reading = true;
                self.cert = None;
                cx.send(UiCommand::ReadPeerCert {
                    server: cx.server,
                    path: path.clone(),
                });
            }
            if self.reading {
                ui.spinner();
                ui.label("reading…");
            }
        });
        match self.current_cert() {
            Some(Ok(c)) => {
                egui::Grid::new("add-peer-cert")
                    .num_columns(2)
                    .spacing([10.0, 4.0])
                    .show(ui, |ui| {
                        ui.label("SHA-256 fingerprint");
                        ui.monospace(&c.fingerprint);
                        ui.end_row();
                        ui.label("Certificate expires");
                        let days = (c.expires_ms - now) / 86_400_000;
                        if days < 30 {
                            ui.colored_label(
                                ui.visuals().warn_fg_color,
                                format!("{} UTC (in {days} days)", c.expires),
                            );
                        } else {
                            ui.label(format!("{} UTC (in {days} days)", c.expires));
                        }
                        ui.end_row();
                        if c.in_file > 1 {
                            ui.label("In the file");
                            ui.label(format!(
                                "{} certificates: the first is pinned, the others are not used",
                                c.in_file
                            ));
                            ui.end_row();
                        }
                    });
            }
            Some(Err(e)) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            None => {
                ui.weak("Read the certificate to see what will be pinned, then add the peer.");
            }
        }
        let ready = matches!(self.current_cert(), Some(Ok(_)))
            && !self.new_id.trim().is_empty()
            && !self.new_url.trim().is_empty()
            && !self.adding;
        ui.horizontal(|ui| {
            if ui
                .add_enabled(ready, egui::Button::new(RichText::new("Add peer").strong()))
                .on_disabled_hover_text("Give the ServerID and URL, and read the certificate first")
                .clicked()
            {
                self.adding = true;
                self.add_error = None;
                self.added = None;
                cx.send(UiCommand::AddPeer {
                    server: cx.server,
                    peer: NewPeer {
                        server_id: self.new_id.trim().to_owned(),
                        base_url: self.new_url.trim().to_owned(),
                        cert_path: path.clone(),
                        policy: self.new_policy,
                    },
                });
            }
            if self.adding {
                ui.spinner();
                ui.label("adding…");
            }
        });
        if let Some(e) = &self.add_error {
            ui.colored_label(ui.visuals().error_fg_color, format!("Not added: {e}"));
        }
        if let Some(id) = &self.added {
            ui.label(format!("{id} was added: it is listed above."));
        }
    }
}
