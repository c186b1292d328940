//! Small pieces the views share: labelled inputs (every input has an accessible name),
//! colours for states and servers, and time parsing for filters.

use egui::{Color32, Response, RichText, TextEdit, Ui};

use crate::delegation::machine::State;

use super::model::{DelegationItem, state_words};

/// A text field with a visible label that also names it for screen readers and tests.
pub fn labelled_edit(ui: &mut Ui, label: &str, text: &mut String, width: f32) -> Response {
    let l = ui.label(label);
    ui.add(TextEdit::singleline(text).desired_width(width))
        .labelled_by(l.id)
}

/// A text field with a visible label and a hint.
pub fn labelled_edit_hint(
    ui: &mut Ui,
    label: &str,
    text: &mut String,
    hint: &str,
    width: f32,
) -> Response {
    let l = ui.label(label);
    ui.add(
        TextEdit::singleline(text)
            .hint_text(hint.to_owned())
            .desired_width(width),
    )
    .labelled_by(l.id)
}

/// The colour of a state: green done, red failed, amber rolling back or waiting.
pub fn state_color(ui: &Ui, s: State) -> Color32 {
    let dark = ui.visuals().dark_mode;
    match s {
        State::Completed => {
            if dark {
                Color32::from_rgb(110, 200, 120)
            } else {
                Color32::from_rgb(20, 130, 40)
            }
        }
        State::Failed => ui.visuals().error_fg_color,
        State::Aborted => {
            if dark {
                Color32::from_rgb(230, 140, 140)
            } else {
                Color32::from_rgb(170, 60, 60)
            }
        }
        State::RollingBack | State::AwaitingOperator => ui.visuals().warn_fg_color,
        State::Running => {
            if dark {
                Color32::from_rgb(120, 170, 255)
            } else {
                Color32::from_rgb(30, 90, 200)
            }
        }
    }
}

/// The state of a delegation in words and colour; waiting for a device is shown as waiting,
/// not as a failure.
pub fn state_text(ui: &Ui, d: &DelegationItem) -> RichText {
    let mut t = RichText::new(state_words(d.state)).color(state_color(ui, d.state));
    if matches!(d.state, State::Failed | State::Aborted) {
        t = t.strong();
    }
    t
}

/// What a running delegation is doing, in words: waiting for a device, retrying the peer.
pub fn activity(d: &DelegationItem) -> String {
    if d.state.is_terminal() {
        match &d.reason {
            Some((code, text)) => format!("{code} {text}"),
            None if d.state == State::Completed => "done".to_owned(),
            None => String::new(),
        }
    } else if d.waits_for_device() {
        format!(
            "⏳ waiting for {}",
            d.waiting_for.trim_start_matches("the ")
        )
    } else if d.peer_retrying() {
        format!("↻ retrying the peer ({} unsent)", d.unsent)
    } else {
        format!("waiting for {}", d.waiting_for)
    }
}

/// A colour per server of an authority map, readable on both themes.
pub fn server_color(ui: &Ui, i: usize) -> Color32 {
    const DARK: [Color32; 6] = [
        Color32::from_rgb(110, 170, 255),
        Color32::from_rgb(255, 170, 80),
        Color32::from_rgb(120, 210, 130),
        Color32::from_rgb(220, 130, 220),
        Color32::from_rgb(230, 210, 90),
        Color32::from_rgb(160, 160, 160),
    ];
    const LIGHT: [Color32; 6] = [
        Color32::from_rgb(20, 80, 200),
        Color32::from_rgb(190, 90, 0),
        Color32::from_rgb(20, 130, 40),
        Color32::from_rgb(150, 40, 150),
        Color32::from_rgb(130, 110, 0),
        Color32::from_rgb(90, 90, 90),
    ];
    let p = if ui.visuals().dark_mode { DARK } else { LIGHT };
    p[i % p.len()]
}

/// True when `hay` contains `needle_lower` (already lowercase), ignoring ASCII case; no
/// allocation, so filtering 100,000 rows stays within a frame.
pub fn contains_ci(hay: &str, needle_lower: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle_lower.as_bytes());
    if n.is_empty() {
        return true;
    }
    if n.len() > h.len() {
        return false;
    }
    h.windows(n.len())
        .any(|w| w.iter().zip(n).all(|(a, b)| a.to_ascii_lowercase() == *b))
}

/// Reads `YYYY-MM-DD` or `YYYY-MM-DD HH:MM` (UTC) as Unix milliseconds; empty is `None`.
pub fn parse_when(s: &str) -> Result<Option<i64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || format!("`{s}`: write YYYY-MM-DD or YYYY-MM-DD HH:MM (UTC)");
    let (date, time) = match s.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let mut num = |max: i64| -> Result<i64, String> {
        let v: i64 = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        if v < 0 || v > max {
            return Err(bad());
        }
        Ok(v)
    };
    let (y, m, d) = (num(9999)?, num(12)?, num(31)?);
    if m == 0 || d == 0 {
        return Err(bad());
    }
    let (hh, mm) = match time {
        Some(t) => {
            let (h, mi) = t.split_once(':').ok_or_else(bad)?;
            let h: i64 = h.parse().map_err(|_| bad())?;
            let mi: i64 = mi.get(..2).unwrap_or(mi).parse().map_err(|_| bad())?;
            if h > 23 || mi > 59 {
                return Err(bad());
            }
            (h, mi)
        }
        None => (0, 0),
    };
    Ok(Some(
        crate::tls::days_from_civil(y, m, d) * 86_400_000 + (hh * 3600 + mm * 60) * 1000,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_insensitive_contains() {
        assert!(contains_ci("IMEI:3500", "imei:35"));
        assert!(!contains_ci("IMEI", "imeix"));
        assert!(contains_ci("x", ""));
    }

    #[test]
    fn dates_parse_as_utc() {
        assert_eq!(parse_when(""), Ok(None));
        assert_eq!(parse_when("1970-01-02"), Ok(Some(86_400_000)));
        assert_eq!(parse_when("1970-01-01 01:30"), Ok(Some(5_400_000)));
        assert!(parse_when("yesterday").is_err());
        assert!(parse_when("2024-13-01").is_err());
    }
}
