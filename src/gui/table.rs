//! The console's two big lists, devices and delegations, with what sorting and filtering them
//! needs. The backend computes it once per snapshot, off the UI thread: each column's sorted
//! order of the devices, and a lowercased search text per row. To sort, a view picks one of
//! those orders. To filter, it runs `str::contains` once over each row's precomputed text, and
//! only when the filter or the snapshot changes. So no frame sorts strings or allocates per row,
//! even with 100,000 rows.

use std::ops::Deref;

use crate::delegation::machine::State;

use super::model::{DelegationItem, DeviceRow};

/// A device table column, for sorting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevCol {
    /// DevId.
    Id,
    /// Manufacturer.
    Man,
    /// Model.
    Model,
    /// Last seen.
    LastSeen,
    /// Managing servers.
    Managers,
}

/// The filter text as the search texts hold it: trimmed, lowercased.
pub fn needle(filter: &str) -> String {
    filter.trim().to_lowercase()
}

/// One lowercased text per row, all in one buffer: the fields of row `i` joined by `\u{1f}`
/// (the unit separator, which nobody types into a filter).
#[derive(Debug, Clone, Default)]
struct SearchText {
    text: String,
    /// Row `i` is `text[ends[i - 1]..ends[i]]` (from 0 for the first row).
    ends: Vec<usize>,
}

impl SearchText {
    fn with_capacity(rows: usize) -> SearchText {
        SearchText {
            text: String::with_capacity(rows * 64),
            ends: Vec::with_capacity(rows),
        }
    }

    /// Appends one row made of `fields`.
    fn push_row<'a>(&mut self, fields: impl IntoIterator<Item = &'a str>) {
        for (k, f) in fields.into_iter().enumerate() {
            if k > 0 {
                self.text.push('\u{1f}');
            }
            if f.is_ascii() {
                self.text
                    .extend(f.bytes().map(|b| char::from(b.to_ascii_lowercase())));
            } else {
                self.text.push_str(&f.to_lowercase());
            }
        }
        self.ends.push(self.text.len());
    }

    /// Whether row `i` contains `needle` (already lowercased; empty matches every row).
    fn matches(&self, i: usize, needle: &str) -> bool {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        let end = self.ends.get(i).copied().unwrap_or(start);
        self.text
            .get(start..end)
            .is_some_and(|row| row.contains(needle))
    }
}

/// The enrolled devices, sorted by DevId, with every column's order and the search texts.
#[derive(Clone, Default)]
pub struct DeviceTable {
    rows: Vec<DeviceRow>,
    /// Ascending row indices by [`DevCol::Man`], [`DevCol::Model`], [`DevCol::LastSeen`] and
    /// [`DevCol::Managers`]; ties keep DevId order. ([`DevCol::Id`] is the rows' own order.)
    orders: [Vec<u32>; 4],
    identity: Vec<u32>,
    search: SearchText,
}

impl std::fmt::Debug for DeviceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTable")
            .field("rows", &self.rows.len())
            .finish_non_exhaustive()
    }
}

impl Deref for DeviceTable {
    type Target = [DeviceRow];

    fn deref(&self) -> &[DeviceRow] {
        &self.rows
    }
}

impl From<Vec<DeviceRow>> for DeviceTable {
    fn from(rows: Vec<DeviceRow>) -> DeviceTable {
        DeviceTable::new(rows)
    }
}

impl DeviceTable {
    /// Sorts `rows` by DevId and computes the orders and search texts (a few tens of
    /// milliseconds for 100,000 rows: the backend's work, not a frame's).
    pub fn new(mut rows: Vec<DeviceRow>) -> DeviceTable {
        if !rows.is_sorted_by(|a, b| a.dev_id <= b.dev_id) {
            rows.sort_by(|a, b| a.dev_id.cmp(&b.dev_id));
        }
        let n = u32::try_from(rows.len()).unwrap_or(u32::MAX);
        let identity: Vec<u32> = (0..n).collect();
        // Stable sorts over DevId order: equal values stay in DevId order.
        let by_text = |key: fn(&DeviceRow) -> &str| {
            let mut idx = identity.clone();
            idx.sort_by_key(|&i| key(&rows[i as usize]));
            idx
        };
        let man = by_text(|r| &r.man);
        let model = by_text(|r| &r.model);
        let managers = by_text(|r| &r.managers);
        let mut seen = identity.clone();
        seen.sort_by_key(|&i| rows[i as usize].last_seen_ms);
        let mut search = SearchText::with_capacity(rows.len());
        for r in &rows {
            search.push_row([
                r.dev_id.as_str(),
                r.man.as_str(),
                r.model.as_str(),
                r.managers.as_str(),
            ]);
        }
        DeviceTable {
            orders: [man, model, seen, managers],
            identity,
            rows,
            search,
        }
    }

    /// The rows, in DevId order.
    pub fn rows(&self) -> &[DeviceRow] {
        &self.rows
    }

    /// Row indices in ascending order of `col` (ties in DevId order).
    pub fn order(&self, col: DevCol) -> &[u32] {
        match col {
            DevCol::Id => &self.identity,
            DevCol::Man => &self.orders[0],
            DevCol::Model => &self.orders[1],
            DevCol::LastSeen => &self.orders[2],
            DevCol::Managers => &self.orders[3],
        }
    }

    /// The index of the device `dev_id` (a binary search).
    pub fn position(&self, dev_id: &str) -> Option<usize> {
        self.rows
            .binary_search_by(|r| r.dev_id.as_str().cmp(dev_id))
            .ok()
    }

    /// The device `dev_id`.
    pub fn by_id(&self, dev_id: &str) -> Option<&DeviceRow> {
        self.position(dev_id).map(|i| &self.rows[i])
    }

    /// Whether row `i`'s id, maker, model or managers contain `needle` (see [`needle`]).
    pub fn matches(&self, i: usize, needle: &str) -> bool {
        self.search.matches(i, needle)
    }
}

/// The delegations, newest change first, with their search texts and counts by kind.
#[derive(Clone, Default)]
pub struct DelegationTable {
    rows: Vec<DelegationItem>,
    search: SearchText,
    live: usize,
    awaiting: usize,
}

impl std::fmt::Debug for DelegationTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationTable")
            .field("rows", &self.rows.len())
            .finish_non_exhaustive()
    }
}

impl Deref for DelegationTable {
    type Target = [DelegationItem];

    fn deref(&self) -> &[DelegationItem] {
        &self.rows
    }
}

impl From<Vec<DelegationItem>> for DelegationTable {
    fn from(rows: Vec<DelegationItem>) -> DelegationTable {
        DelegationTable::new(rows)
    }
}

impl DelegationTable {
    /// `rows` as given (the backend sorts them newest change first), with their search texts.
    pub fn new(rows: Vec<DelegationItem>) -> DelegationTable {
        let mut search = SearchText::with_capacity(rows.len());
        let (mut live, mut awaiting) = (0, 0);
        for d in &rows {
            search.push_row([d.dev_id.as_str(), d.peer.as_str(), d.id.as_str()]);
            live += usize::from(!d.state.is_terminal());
            awaiting += usize::from(d.state == State::AwaitingOperator);
        }
        DelegationTable {
            rows,
            search,
            live,
            awaiting,
        }
    }

    /// How many are not over yet.
    pub fn live(&self) -> usize {
        self.live
    }

    /// How many wait for an operator's decision.
    pub fn awaiting_operator(&self) -> usize {
        self.awaiting
    }

    /// Whether row `i`'s device, peer or id contain `needle` (see [`needle`]).
    pub fn matches(&self, i: usize, needle: &str) -> bool {
        self.search.matches(i, needle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, man: &str, seen: Option<i64>) -> DeviceRow {
        DeviceRow {
            dev_id: id.into(),
            man: man.into(),
            model: "M".into(),
            last_seen_ms: seen,
            managers: String::new(),
            nodes: 1,
        }
    }

    #[test]
    fn orders_keep_devid_order_among_equals_and_search_is_per_row() {
        let t = DeviceTable::new(vec![
            row("c", "Acme", Some(5)),
            row("a", "Globex", None),
            row("b", "Acme", Some(1)),
        ]);
        let ids =
            |o: &[u32]| -> Vec<&str> { o.iter().map(|&i| t[i as usize].dev_id.as_str()).collect() };
        assert_eq!(ids(t.order(DevCol::Id)), ["a", "b", "c"]);
        assert_eq!(ids(t.order(DevCol::Man)), ["b", "c", "a"]);
        assert_eq!(ids(t.order(DevCol::LastSeen)), ["a", "b", "c"]);
        assert_eq!(t.position("c"), Some(2));
        assert_eq!(t.by_id("zz"), None);
        assert!(t.matches(1, &needle(" ACME ")));
        assert!(!t.matches(0, "acme"));
        // A needle never matches across two fields.
        assert!(!t.matches(0, "aglobex"));
        assert!(t.matches(0, ""));
    }

    #[test]
    fn non_ascii_fields_are_lowercased_too() {
        let t = DeviceTable::new(vec![row("x", "ÉTÉ Phones", None)]);
        assert!(t.matches(0, &needle("été")));
    }
}
