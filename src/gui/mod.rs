//! The console (DESIGN.md section 6): an eframe app over the embedded engine(s).
//!
//! The UI thread never blocks on the engine: [`backend::Backend`] runs the engines on a tokio
//! runtime in its own thread, publishes an immutable [`model::Snapshot`] (an `Arc` swapped
//! whole) and answers commands with events. Each frame the app takes the latest snapshot
//! (one `Arc` clone), drains the events, draws the current view from the snapshot and its own
//! view state, and forwards the commands the views produced with `try_send`. Lists are
//! virtualised, so 100,000 rows cost what a screenful costs.
//!
//! Views: [`devices`], [`delegations`], [`requests`], [`peers`], [`audit`]; one file each,
//! a `struct XPanel` holding filters, sort and selection keyed by stable ids.

pub mod audit;
pub mod backend;
pub mod certinfo;
pub mod common;
pub mod delegations;
pub mod devices;
pub mod model;
pub mod peers;
pub mod requests;
pub mod synthetic;
pub mod table;
pub mod tree;
pub mod xml;

use std::sync::Arc;

use egui::{Key, KeyboardShortcut, Modifiers, RichText, Ui};

use backend::{Backend, Launch};
use model::{BackendEvent, Notice, Phase, Severity, Snapshot, UiCommand};

/// The five views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Devices and their trees; delegate.
    Devices,
    /// Delegations and their timelines.
    Delegations,
    /// Incoming requests.
    Requests,
    /// Peer servers.
    Peers,
    /// The audit log.
    Audit,
}

impl View {
    /// Every view, in tab order.
    pub const ALL: [View; 5] = [
        View::Devices,
        View::Delegations,
        View::Requests,
        View::Peers,
        View::Audit,
    ];

    /// The tab's title.
    pub fn title(self) -> &'static str {
        match self {
            View::Devices => "Devices",
            View::Delegations => "Delegations",
            View::Requests => "Requests",
            View::Peers => "Peers",
            View::Audit => "Audit",
        }
    }
}

/// What a view may ask of the app besides engine commands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Nav {
    /// Nothing.
    #[default]
    None,
    /// Open a delegation's timeline.
    Delegation(String),
}

/// What views get each frame.
pub struct Ctx<'a> {
    /// The latest snapshot.
    pub snap: &'a Snapshot,
    /// The engine shown.
    pub server: usize,
    cmds: &'a mut Vec<UiCommand>,
    /// A jump to another view.
    pub nav: &'a mut Nav,
}

impl Ctx<'_> {
    /// Queues a command for the backend (sent at the end of the frame).
    pub fn send(&mut self, cmd: UiCommand) {
        self.cmds.push(cmd);
    }
}

/// The console.
pub struct ConsoleApp {
    backend: Backend,
    snap: Arc<Snapshot>,
    /// The view shown.
    pub view: View,
    /// The engine shown (DMS-1 is 0 in the lab).
    pub server: usize,
    /// Dark theme (else light).
    pub dark: bool,
    theme_applied: Option<bool>,
    notices: Vec<Notice>,
    show_notices: bool,
    /// The Devices view.
    pub devices: devices::DevicesPanel,
    /// The Delegations view.
    pub delegations: delegations::DelegationsPanel,
    /// The Requests view.
    pub requests: requests::RequestsPanel,
    /// The Peers view.
    pub peers: peers::PeersPanel,
    /// The Audit view.
    pub audit: audit::AuditPanel,
    cmds: Vec<UiCommand>,
    /// Open the timeline of delegations started from this console (not bulk ones).
    pub follow_started: bool,
}

impl std::fmt::Debug for ConsoleApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleApp")
            .field("view", &self.view)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl ConsoleApp {
    /// The console over `backend`.
    pub fn new(ctx: &egui::Context, backend: Backend) -> ConsoleApp {
        // Arrows (↑ ↓ → ←) are in Hack, not in the proportional font: fall back to it.
        let mut fonts = egui::FontDefinitions::default();
        if let Some(p) = fonts.families.get_mut(&egui::FontFamily::Proportional) {
            p.push("Hack".to_owned());
        }
        ctx.set_fonts(fonts);
        ConsoleApp {
            snap: backend.snapshot(),
            backend,
            view: View::Devices,
            server: 0,
            dark: true,
            theme_applied: None,
            notices: Vec::new(),
            show_notices: false,
            devices: Default::default(),
            delegations: Default::default(),
            requests: Default::default(),
            peers: Default::default(),
            audit: Default::default(),
            cmds: Vec::new(),
            follow_started: true,
        }
    }

    /// The console over freshly started engines.
    pub fn start(cc: &eframe::CreationContext<'_>, launch: Launch) -> ConsoleApp {
        let backend = Backend::start(launch, cc.egui_ctx.clone());
        ConsoleApp::new(&cc.egui_ctx, backend)
    }

    /// The backend (tests reach the lab through it).
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The snapshot drawn last.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snap
    }

    /// Notices so far, oldest first.
    pub fn notices(&self) -> &[Notice] {
        &self.notices
    }

    /// Shows another engine.
    pub fn set_server(&mut self, server: usize) {
        if server != self.server {
            self.server = server;
            self.devices.reset();
            self.delegations.reset();
            self.audit.reset();
            self.peers.reset();
        }
    }

    fn notice(&mut self, severity: Severity, text: String) {
        self.notices.push(Notice {
            severity,
            text,
            at_ms: crate::engine::driver::now_ms(),
        });
        if self.notices.len() > 500 {
            self.notices.drain(..100);
        }
    }

    /// Takes the latest snapshot and the backend's events (no drawing).
    fn take_updates(&mut self) {
        self.snap = self.backend.snapshot();
        while let Some(ev) = self.backend.try_event() {
            match ev {
                BackendEvent::Notice(n) => self.notices.push(n),
                BackendEvent::Started { server, id, .. } => {
                    if self.follow_started && server == self.server {
                        self.delegations.select(&id);
                        self.view = View::Delegations;
                    }
                }
                BackendEvent::Tree {
                    server,
                    dev_id,
                    tree,
                } => {
                    if server == self.server {
                        self.devices.on_tree(&dev_id, tree);
                    }
                }
                BackendEvent::Preview { key, result } => self.devices.on_preview(key, result),
                BackendEvent::Detail { server, detail } => {
                    if server == self.server {
                        self.delegations.on_detail(detail);
                    }
                }
                BackendEvent::Audit {
                    server,
                    rows,
                    chart,
                } => {
                    if server == self.server {
                        self.audit.on_audit(rows, chart);
                    }
                }
                BackendEvent::PeerCert {
                    server,
                    path,
                    result,
                } => {
                    if server == self.server {
                        self.peers.on_cert(path, result);
                    }
                }
                BackendEvent::PeerAdded { server, result } => {
                    if server == self.server {
                        self.peers.on_added(result);
                    }
                }
                BackendEvent::PeerRemoved { server, result } => {
                    if server == self.server {
                        self.peers.on_removed(result);
                    }
                }
            }
        }
    }

    fn flush_commands(&mut self) {
        for cmd in std::mem::take(&mut self.cmds) {
            if let Err(e) = self.backend.send(cmd) {
                self.notice(Severity::Error, e);
            }
        }
    }

    fn shortcuts(&mut self, ui: &Ui) {
        let keys = [Key::Num1, Key::Num2, Key::Num3, Key::Num4, Key::Num5];
        for (k, v) in keys.iter().zip(View::ALL) {
            if ui.input_mut(|i| i.consume_shortcut(&KeyboardShortcut::new(Modifiers::CTRL, *k))) {
                self.view = v;
            }
        }
    }

    fn top_bar(&mut self, ui: &mut Ui) {
        egui::Panel::top("top-bar").show(ui, |ui| {
            ui.add_space(2.0);
            ui.horizontal_wrapped(|ui| {
                ui.label(RichText::new("dmdeleg").strong().size(18.0));
                ui.separator();
                let servers: Vec<(String, String)> = self
                    .snap
                    .servers
                    .iter()
                    .map(|s| (s.label.clone(), s.server_id.clone()))
                    .collect();
                let mut pick = None;
                for (i, (label, id)) in servers.iter().enumerate() {
                    let text = if label == id {
                        label.clone()
                    } else {
                        format!("{label} {id}")
                    };
                    if ui
                        .selectable_label(self.server == i, text)
                        .on_hover_text(format!("Show the engine {id}"))
                        .clicked()
                    {
                        pick = Some(i);
                    }
                }
                if let Some(i) = pick {
                    self.set_server(i);
                }
                ui.separator();
                for v in View::ALL {
                    let title = if v == View::Requests {
                        let n = requests::RequestsPanel::count(&self.snap, self.server);
                        if n > 0 {
                            format!("Requests ({n})")
                        } else {
                            "Requests".to_owned()
                        }
                    } else {
                        v.title().to_owned()
                    };
                    let r = ui.selectable_label(self.view == v, RichText::new(title).strong());
                    let r = if v == View::Requests {
                        r.accessible_name("Requests")
                    } else {
                        r
                    };
                    if r.clicked() {
                        self.view = v;
                    }
                }
                ui.separator();
                if ui
                    .selectable_label(self.dark, "Dark")
                    .on_hover_text("Dark theme")
                    .clicked()
                {
                    self.dark = true;
                }
                if ui
                    .selectable_label(!self.dark, "Light")
                    .on_hover_text("Light theme")
                    .clicked()
                {
                    self.dark = false;
                }
                if self.snap.lab {
                    ui.separator();
                    ui.weak("lab: two engines on loopback, simulated devices");
                }
            });
            ui.add_space(2.0);
        });
    }

    fn status_bar(&mut self, ui: &mut Ui) {
        egui::Panel::bottom("status-bar").show(ui, |ui| {
            ui.horizontal(|ui| {
                if let Some(s) = self.snap.servers.get(self.server) {
                    ui.weak(format!("devices at {}", s.devices_url));
                    ui.separator();
                }
                match self.notices.last() {
                    Some(n) => {
                        let color = match n.severity {
                            Severity::Info => ui.visuals().text_color(),
                            Severity::Error => ui.visuals().error_fg_color,
                        };
                        ui.colored_label(
                            color,
                            format!("{}  {}", model::time_text(n.at_ms), n.text),
                        );
                    }
                    None => {
                        ui.weak("Ctrl+1…5 switch views; ↑ ↓ move in lists; Tab between fields");
                    }
                }
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    ui.toggle_value(
                        &mut self.show_notices,
                        format!("Notices ({})", self.notices.len()),
                    );
                });
            });
            if self.show_notices {
                egui::ScrollArea::vertical()
                    .id_salt("notices")
                    .max_height(160.0)
                    .stick_to_bottom(true)
                    .show(ui, |ui| {
                        for n in &self.notices {
                            let color = match n.severity {
                                Severity::Info => ui.visuals().text_color(),
                                Severity::Error => ui.visuals().error_fg_color,
                            };
                            ui.colored_label(
                                color,
                                format!("{}  {}", model::time_text(n.at_ms), n.text),
                            );
                        }
                    });
            }
        });
    }

    /// Draws one frame (everything but eframe's window handling): what the benchmark times.
    pub fn draw(&mut self, ui: &mut Ui) {
        if self.theme_applied != Some(self.dark) {
            self.theme_applied = Some(self.dark);
            ui.ctx().set_theme(if self.dark {
                egui::Theme::Dark
            } else {
                egui::Theme::Light
            });
        }
        self.shortcuts(ui);
        self.top_bar(ui);
        self.status_bar(ui);
        let snap = self.snap.clone();
        match &snap.phase {
            Phase::Starting => {
                egui::CentralPanel::default_margins().show(ui, |ui| {
                    ui.add_space(80.0);
                    ui.vertical_centered(|ui| {
                        ui.spinner();
                        ui.heading(if snap.lab {
                            "Starting the lab: DMS-1, DMS-2 and simulated devices, each with a first session…"
                        } else {
                            "Starting the engine…"
                        });
                    });
                });
                return;
            }
            Phase::Failed(why) => {
                let why = why.clone();
                egui::CentralPanel::default_margins().show(ui, |ui| {
                    ui.add_space(60.0);
                    ui.heading("The engine did not start");
                    ui.colored_label(ui.visuals().error_fg_color, why);
                });
                return;
            }
            Phase::Ready => {}
        }
        if self.server >= snap.servers.len() {
            self.server = 0;
        }
        let mut nav = Nav::None;
        let mut cmds = std::mem::take(&mut self.cmds);
        {
            let mut cx = Ctx {
                snap: &snap,
                server: self.server,
                cmds: &mut cmds,
                nav: &mut nav,
            };
            match self.view {
                View::Devices => self.devices.ui(ui, &mut cx),
                View::Delegations => self.delegations.ui(ui, &mut cx),
                View::Requests => self.requests.ui(ui, &mut cx),
                View::Peers => self.peers.ui(ui, &mut cx),
                View::Audit => self.audit.ui(ui, &mut cx),
            }
        }
        self.cmds = cmds;
        if let Nav::Delegation(id) = nav {
            self.delegations.select(&id);
            self.view = View::Delegations;
        }
        self.flush_commands();
    }
}

impl eframe::App for ConsoleApp {
    fn logic(&mut self, _ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.take_updates();
    }

    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.draw(ui);
    }
}

/// Opens the console window on `view`, dark or light, and runs until it is closed.
pub fn run(launch: Launch, title: &str, view: View, dark: bool) -> Result<(), String> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(title)
            .with_app_id("dmdeleg")
            .with_inner_size([1500.0, 940.0])
            .with_min_inner_size([900.0, 600.0]),
        renderer: eframe::Renderer::Glow,
        ..Default::default()
    };
    eframe::run_native(
        title,
        options,
        Box::new(move |cc| {
            close_on_signal(cc.egui_ctx.clone());
            let mut app = ConsoleApp::start(cc, launch);
            app.view = view;
            app.dark = dark;
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| format!("the console window could not open: {e}"))
}

/// SIGTERM or SIGINT (the desktop session ending, Ctrl-C in the terminal) closes the window
/// as its close button does, so the engines stop cleanly before the process ends.
fn close_on_signal(ctx: egui::Context) {
    let spawned = std::thread::Builder::new()
        .name("dmdeleg-console-signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                #[cfg(unix)]
                {
                    use tokio::signal::unix::{SignalKind, signal};
                    let (Ok(mut term), Ok(mut int)) = (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::interrupt()),
                    ) else {
                        return;
                    };
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                #[cfg(not(unix))]
                {
                    let _ = tokio::signal::ctrl_c().await;
                }
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                ctx.request_repaint();
            });
        });
    if let Err(e) = spawned {
        tracing::warn!("a signal will end the console without stopping the engines: {e}");
    }
}

/// Replaces the test and benchmark harness's per-frame update: takes the backend's latest
/// state, then draws (what `eframe` does through `App::logic` and `App::ui`).
pub fn frame(app: &mut ConsoleApp, ui: &mut Ui) {
    app.take_updates();
    app.draw(ui);
}
