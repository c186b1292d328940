//! The Audit view: every operator action and delegation outcome, filtered by device, peer,
//! outcome and time; exported as CSV or JSON (the current filter) to a typed path; and a
//! chart of outcomes and step durations over time.

use std::sync::Arc;

use egui::{RichText, Ui};
use egui_extras::{Column, TableBuilder};
use egui_plot::{Bar, BarChart, Legend, Plot, Points};

use super::Ctx;
use super::backend::STEP_NAMES;
use super::common::{labelled_edit_hint, parse_when, server_color};
use super::model::*;
use crate::store::delegations::{AuditFilter, AuditRow};

/// The Audit view's state.
#[derive(Debug)]
pub struct AuditPanel {
    /// Only this device.
    pub device: String,
    /// Only this peer.
    pub peer: String,
    /// Only this outcome (Completed, Failed, Aborted).
    pub outcome: Option<String>,
    /// From (`YYYY-MM-DD [HH:MM]`, UTC).
    pub from: String,
    /// To.
    pub to: String,
    /// Where exports go.
    pub export_path: String,
    filter_error: Option<String>,
    /// The filter of the rows shown.
    pub applied: Option<(usize, AuditFilter)>,
    rows: Option<Arc<Vec<AuditRow>>>,
    chart: Option<Arc<ChartData>>,
    asked: bool,
}

impl Default for AuditPanel {
    fn default() -> Self {
        AuditPanel {
            device: String::new(),
            peer: String::new(),
            outcome: None,
            from: String::new(),
            to: String::new(),
            export_path: std::env::temp_dir()
                .join("dmdeleg-audit.csv")
                .display()
                .to_string(),
            filter_error: None,
            applied: None,
            rows: None,
            chart: None,
            asked: false,
        }
    }
}

impl AuditPanel {
    /// Forgets the results (another server).
    pub fn reset(&mut self) {
        self.applied = None;
        self.rows = None;
        self.chart = None;
        self.asked = false;
    }

    /// The audit lines shown.
    pub fn rows(&self) -> Option<&Arc<Vec<AuditRow>>> {
        self.rows.as_ref()
    }

    /// The chart shown.
    pub fn chart(&self) -> Option<&Arc<ChartData>> {
        self.chart.as_ref()
    }

    /// Lines arrived.
    pub fn on_audit(&mut self, rows: Arc<Vec<AuditRow>>, chart: Arc<ChartData>) {
        self.rows = Some(rows);
        self.chart = Some(chart);
    }

    fn filter(&self) -> Result<AuditFilter, String> {
        let opt = |s: &str| {
            let t = s.trim();
            (!t.is_empty()).then(|| t.to_owned())
        };
        let from_ms = parse_when(&self.from)?;
        let to_ms = parse_when(&self.to)?.map(|t| {
            // A date alone means the whole day.
            if self.to.trim().len() <= 10 {
                t + 86_400_000 - 1
            } else {
                t + 59_999
            }
        });
        Ok(AuditFilter {
            dev_id: opt(&self.device),
            peer: opt(&self.peer),
            outcome: self.outcome.clone(),
            from_ms,
            to_ms,
            limit: Some(100_000),
        })
    }

    fn apply(&mut self, cx: &mut Ctx<'_>) {
        match self.filter() {
            Ok(f) => {
                self.filter_error = None;
                self.applied = Some((cx.server, f.clone()));
                cx.send(UiCommand::Audit {
                    server: cx.server,
                    filter: f,
                });
            }
            Err(e) => self.filter_error = Some(e),
        }
    }

    /// Draws the view.
    pub fn ui(&mut self, ui: &mut Ui, cx: &mut Ctx<'_>) {
        if !self.asked {
            self.asked = true;
            self.apply(cx);
        }
        egui::Panel::top("audit-filters").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading("Audit log");
                if let Some(s) = cx.snap.servers.get(cx.server) {
                    ui.label(format!(
                        "every delegation and operator action on {}",
                        s.server_id
                    ));
                }
            });
            ui.horizontal_wrapped(|ui| {
                labelled_edit_hint(ui, "Device", &mut self.device, "any", 170.0);
                labelled_edit_hint(ui, "Peer", &mut self.peer, "any", 130.0);
                let l = ui.label("Outcome");
                egui::ComboBox::from_id_salt("outcome-filter")
                    .selected_text(self.outcome.as_deref().unwrap_or("any"))
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut self.outcome, None, "any");
                        for o in ["Completed", "Failed", "Aborted"] {
                            ui.selectable_value(&mut self.outcome, Some(o.to_owned()), o);
                        }
                    })
                    .response
                    .labelled_by(l.id);
                labelled_edit_hint(ui, "From", &mut self.from, "YYYY-MM-DD HH:MM", 130.0);
                labelled_edit_hint(ui, "To", &mut self.to, "YYYY-MM-DD HH:MM", 130.0);
                if ui.button(RichText::new("Apply filter").strong()).clicked() {
                    self.apply(cx);
                }
                if ui.button("Last hour").clicked() {
                    let t = crate::engine::driver::now_ms() - 3_600_000;
                    self.from = time_text(t).get(..16).unwrap_or_default().to_owned();
                    self.to.clear();
                    self.apply(cx);
                }
                if ui.button("Clear").clicked() {
                    self.device.clear();
                    self.peer.clear();
                    self.outcome = None;
                    self.from.clear();
                    self.to.clear();
                    self.apply(cx);
                }
            });
            if let Some(e) = &self.filter_error {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            ui.horizontal(|ui| {
                labelled_edit_hint(ui, "Export to", &mut self.export_path, "a file path", 360.0);
                for (label, format, ext) in [
                    ("Export CSV", ExportFormat::Csv, "csv"),
                    ("Export JSON", ExportFormat::Json, "json"),
                ] {
                    if ui
                        .button(label)
                        .on_hover_text("Write the lines of the current filter to that file")
                        .clicked()
                    {
                        match self.filter() {
                            Ok(filter) => {
                                let mut path = std::path::PathBuf::from(self.export_path.trim());
                                if path.extension().is_none() {
                                    path.set_extension(ext);
                                }
                                cx.send(UiCommand::Export {
                                    server: cx.server,
                                    filter,
                                    format,
                                    path,
                                });
                            }
                            Err(e) => self.filter_error = Some(e),
                        }
                    }
                }
            });
            ui.add_space(4.0);
        });
        egui::Panel::bottom("audit-chart")
            .resizable(true)
            .default_size(260.0)
            .show(ui, |ui| self.chart_ui(ui));
        egui::CentralPanel::default_margins().show(ui, |ui| self.table_ui(ui));
    }

    fn table_ui(&self, ui: &mut Ui) {
        let Some(rows) = self.rows.clone() else {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Reading the audit log…");
            });
            return;
        };
        ui.label(format!("{} lines, newest last", rows.len()));
        TableBuilder::new(ui)
            .id_salt("audit-table")
            .striped(true)
            .resizable(true)
            .stick_to_bottom(true)
            .cell_layout(egui::Layout::left_to_right(egui::Align::Center))
            .column(Column::initial(140.0))
            .column(Column::initial(70.0).clip(true))
            .column(Column::initial(60.0).clip(true))
            .column(Column::initial(160.0).clip(true))
            .column(Column::initial(100.0).clip(true))
            .column(Column::initial(150.0).clip(true))
            .column(Column::remainder().clip(true))
            .min_scrolled_height(0.0)
            .header(22.0, |mut h| {
                for t in [
                    "At (UTC)", "Who", "Action", "Device", "Peer", "Outcome", "Detail",
                ] {
                    h.col(|ui| {
                        ui.strong(t);
                    });
                }
            })
            .body(|body| {
                body.rows(20.0, rows.len(), |mut row| {
                    let a = &rows[row.index()];
                    row.col(|ui| {
                        ui.label(time_text(a.at_ms));
                    });
                    row.col(|ui| {
                        ui.label(&a.actor);
                    });
                    row.col(|ui| {
                        ui.label(&a.action);
                    });
                    row.col(|ui| {
                        ui.label(a.dev_id.as_deref().unwrap_or(""));
                    });
                    row.col(|ui| {
                        ui.label(a.peer.as_deref().unwrap_or(""));
                    });
                    row.col(|ui| {
                        let o = a.outcome.as_deref().unwrap_or("");
                        if o.starts_with("Failed") || o.starts_with("Aborted") {
                            ui.colored_label(ui.visuals().error_fg_color, o);
                        } else {
                            ui.label(o);
                        }
                    });
                    row.col(|ui| {
                        ui.label(&a.detail).on_hover_text(&a.detail);
                    });
                });
            });
    }

    fn chart_ui(&self, ui: &mut Ui) {
        let Some(chart) = self.chart.clone() else {
            return;
        };
        let origin = chart.origin_ms;
        let fmt_x = move |x: f64| -> String {
            let t = time_text(origin + (x * 60_000.0) as i64);
            t.get(5..16).map(str::to_owned).unwrap_or(t)
        };
        ui.columns(2, |cols| {
            cols[0].strong(format!("Outcomes per {} min", chart.bucket_minutes as i64));
            let width = (chart.bucket_minutes * 0.8).max(0.5);
            let mut charts: Vec<BarChart> = Vec::new();
            for (k, (name, pts)) in chart.outcomes.iter().enumerate() {
                let color = match name.as_str() {
                    "Completed" => super::common::state_color(
                        &cols[0],
                        crate::delegation::machine::State::Completed,
                    ),
                    "Failed" => cols[0].visuals().error_fg_color,
                    _ => server_color(&cols[0], k + 3),
                };
                let bars = pts
                    .iter()
                    .map(|(x, n)| Bar::new(x + chart.bucket_minutes / 2.0, *n).width(width))
                    .collect();
                let refs: Vec<&BarChart> = charts.iter().collect();
                let c = BarChart::new(name.clone(), bars)
                    .color(color)
                    .stack_on(&refs);
                charts.push(c);
            }
            let fx = fmt_x;
            Plot::new("outcomes-plot")
                .legend(Legend::default())
                .height(200.0)
                .x_axis_formatter(move |m, _| fx(m.value))
                .y_axis_label("delegations")
                .allow_scroll(false)
                .show(&mut cols[0], |p| {
                    for c in charts {
                        p.bar_chart(c);
                    }
                });
            cols[1].strong("Step durations by start time (log scale)");
            Plot::new("steps-plot")
                .legend(Legend::default())
                .height(200.0)
                .x_axis_formatter(move |m, _| fmt_x(m.value))
                .y_axis_formatter(|m, _| {
                    let ms = 10f64.powf(m.value);
                    if ms < 1000.0 {
                        format!("{ms:.0} ms")
                    } else {
                        format!("{:.0} s", ms / 1000.0)
                    }
                })
                .allow_scroll(false)
                .show(&mut cols[1], |p| {
                    for (s, pts) in chart.step_durations.iter() {
                        if pts.is_empty() {
                            continue;
                        }
                        let name = format!("{s} {}", STEP_NAMES[usize::from(*s - 1)]);
                        let v: Vec<[f64; 2]> =
                            pts.iter().map(|(x, y)| [*x, y.max(1.0).log10()]).collect();
                        p.points(Points::new(name, v).radius(3.0));
                    }
                });
        });
    }
}
