//! Fitting a package into messages no larger than the peer's MaxMsgSize: whole commands while
//! they fit, the rest in the next message (the package continues after the peer's Alert 1222),
//! and an item too large for any message split into large-object chunks (`MoreData`, with the
//! total `Size` in the first chunk). [`Reassembler`] puts chunks back together on the other
//! side.

use std::collections::VecDeque;

use crate::syncml::message::{Command, Data, Item, Meta, SyncMl};
use crate::syncml::xml;

/// Smallest chunk worth sending; below it the packer waits for the next message.
const MIN_CHUNK: usize = 64;

/// What writing a chunk as one CDATA section adds (`<![CDATA[` and `]]>`): the encoder may
/// choose CDATA over escaping for long text with markup, so a chunk's budget keeps room for it.
const CDATA_OVERHEAD: usize = "<![CDATA[]]>".len();

/// The room [`fill`] may use in a message of at most `max` bytes (0: no limit) when
/// `trailer` more bytes are added after it (`<Final/>`, a client's Alert 1222).
pub fn room(max: usize, trailer: usize) -> usize {
    if max == 0 {
        0
    } else {
        // Never 0, which would mean no limit: nothing fits instead.
        max.saturating_sub(trailer).max(1)
    }
}

/// The bytes `<Final/>` adds to a message.
pub fn final_len() -> usize {
    let mut msg = SyncMl::default();
    let open = encoded_len(&msg);
    msg.body.is_final = true;
    encoded_len(&msg).saturating_sub(open)
}

/// A command waiting to be sent, with the caller's tag (what it answers to).
#[derive(Debug, Clone)]
pub struct Outgoing<T> {
    /// The command, with its CmdID.
    pub command: Command,
    /// Who asked for it.
    pub tag: T,
    /// True for a later chunk of a large object (no Size in its Meta).
    pub continuation: bool,
}

/// The encoded size of `msg` (compact XML), counted without encoding it.
pub fn encoded_len(msg: &SyncMl) -> usize {
    xml::encoded_len(msg)
}

/// Moves commands from `queue` into `msg` while the encoded message stays within `max` bytes
/// (0 means no limit; see [`room`] for what is added after filling). An item that cannot fit even in an otherwise empty message is split
/// into a chunk that fills the space and a continuation left at the front of the queue, with
/// a fresh CmdID from `next_cmd_id`. Returns the tags of the commands placed, by CmdID.
/// Nothing is placed when even the first command (or a minimal chunk) does not fit.
///
/// Sizes are counted, not encoded: the message once, then each command on its own (a
/// command adds the same bytes wherever it stands in compact XML).
pub fn fill<T: Clone>(
    msg: &mut SyncMl,
    queue: &mut VecDeque<Outgoing<T>>,
    max: usize,
    next_cmd_id: &mut u32,
) -> Vec<(u32, T)> {
    let mut placed = Vec::new();
    let mut size = encoded_len(msg);
    while let Some(front) = queue.front() {
        let cmd_size = xml::command_len(&front.command);
        if max == 0 || size + cmd_size <= max {
            if let Some(out) = queue.pop_front() {
                size += cmd_size;
                placed.push((out.command.cmd_id(), out.tag));
                msg.body.commands.push(out.command);
                if is_chunk(msg.body.commands.last()) {
                    // A chunk ends its message: the peer must acknowledge it (213) first.
                    break;
                }
            }
            continue;
        }
        let room = max.saturating_sub(size);
        let Some(out) = queue.front_mut() else {
            break;
        };
        if let Some(chunk) = split_for(&mut out.command, room, out.continuation) {
            placed.push((chunk.cmd_id(), out.tag.clone()));
            msg.body.commands.push(chunk);
            set_cmd_id(&mut out.command, *next_cmd_id);
            *next_cmd_id += 1;
            out.continuation = true;
        }
        break;
    }
    placed
}

/// Whether `cmd` is a large object's chunk with more to follow (`MoreData`).
pub fn is_chunk(cmd: Option<&Command>) -> bool {
    cmd.and_then(single_item).is_some_and(|i| i.more_data)
}

fn single_item(cmd: &Command) -> Option<&Item> {
    match cmd {
        Command::Add(c) | Command::Replace(c) if c.items.len() == 1 => c.items.first(),
        Command::Results(r) if r.items.len() == 1 => r.items.first(),
        _ => None,
    }
}

fn single_item_mut(cmd: &mut Command) -> Option<&mut Item> {
    match cmd {
        Command::Add(c) | Command::Replace(c) if c.items.len() == 1 => c.items.first_mut(),
        Command::Results(r) if r.items.len() == 1 => r.items.first_mut(),
        _ => None,
    }
}

fn set_cmd_id(cmd: &mut Command, id: u32) {
    match cmd {
        Command::Add(c) | Command::Replace(c) => c.cmd_id = id,
        Command::Results(r) => r.cmd_id = id,
        _ => {}
    }
}

fn with_cmd_id(mut cmd: Command, id: u32) -> Command {
    set_cmd_id(&mut cmd, id);
    cmd
}

/// Escaped length of one character in XML text.
fn escaped_len(c: char) -> usize {
    match c {
        '&' => 5,
        '<' | '>' => 4,
        c if c.is_control() => 8,
        c => c.len_utf8(),
    }
}

/// The length of the longest prefix of `text` whose escaped length fits in `budget` bytes.
fn cut_for(text: &str, budget: usize) -> usize {
    let mut used = 0;
    let mut cut = 0;
    for (i, c) in text.char_indices() {
        let n = escaped_len(c);
        if used + n > budget {
            break;
        }
        used += n;
        cut = i + c.len_utf8();
    }
    cut
}

/// Splits a single-item Add, Replace or Results into a first chunk that fits in `room` bytes,
/// which is returned, and the rest, which `cmd` becomes. `None`, with `cmd` as it was, when
/// the command cannot be chunked or the room is too small.
///
/// The item's data is moved, not copied, while the chunk's overhead is measured: the first
/// chunk is the command with `MoreData` (and, unless `continuation`, the total `Size`) and a
/// prefix of the data; the rest is the command as it was, with the remaining data and no
/// `Size`.
fn split_for(cmd: &mut Command, room: usize, continuation: bool) -> Option<Command> {
    let item = single_item_mut(cmd)?;
    let data = item.data.take()?;
    let more_data = item.more_data;
    let had_meta = item.meta.is_some();
    let old_size = item.meta.as_ref().and_then(|m| m.size);
    let total = data.as_text().len();
    item.data = Some(Data::Text(String::new()));
    item.more_data = true;
    if !continuation {
        item.meta.get_or_insert_with(Meta::default).size = Some(total as u64);
    }
    let overhead = xml::command_len(cmd);
    let cut = room
        .checked_sub(overhead)
        .filter(|&budget| budget >= MIN_CHUNK)
        .map(|budget| cut_for(data.as_text(), budget.saturating_sub(CDATA_OVERHEAD)))
        .filter(|&cut| cut != 0 && cut < total);
    let Some(cut) = cut else {
        // Put the command back as it was (`single_item_mut` found the item above).
        if let Some(item) = single_item_mut(cmd) {
            item.data = Some(data);
            item.more_data = more_data;
            if !continuation {
                match item.meta.as_mut() {
                    Some(meta) if had_meta => meta.size = old_size,
                    _ => item.meta = None,
                }
            }
        }
        return None;
    };
    let mut head = match data {
        Data::Text(t) | Data::Xml(t) => t,
    };
    let tail = head.split_off(cut);
    // The command holds no data now: cloning it is cheap.
    let mut rest = cmd.clone();
    if let Some(it) = single_item_mut(&mut rest) {
        it.data = Some(Data::Text(tail));
        it.more_data = more_data;
        match it.meta.as_mut() {
            Some(meta) if had_meta => meta.size = None,
            _ => it.meta = None,
        }
    }
    if let Some(it) = single_item_mut(cmd) {
        it.data = Some(Data::Text(head));
    }
    Some(std::mem::replace(cmd, rest))
}

/// A large object being received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Partial {
    /// The item's target (or source) URI: later chunks must name the same.
    key: String,
    declared: Option<u64>,
    data: String,
    first: Command,
}

/// What the receiver does with an incoming item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunked {
    /// Not part of a large object: process the command as it is.
    Whole(Command),
    /// A chunk was buffered: answer 213.
    Buffered,
    /// The last chunk arrived: process this command, which holds the whole data (and the
    /// last chunk's CmdID, which the status answers).
    Complete(Command),
    /// The reassembled size differs from the declared Size, or exceeds MaxObjSize: answer 424.
    SizeMismatch,
}

/// Reassembles large objects from chunks.
#[derive(Debug, Clone, Default)]
pub struct Reassembler {
    partial: Option<Partial>,
    max_obj_size: usize,
}

fn item_key(item: &Item) -> String {
    item.target_uri()
        .or_else(|| item.source_uri())
        .unwrap_or_default()
        .to_owned()
}

fn item_text(item: &Item) -> String {
    match item.data.as_ref() {
        Some(Data::Text(t)) | Some(Data::Xml(t)) => t.clone(),
        None => String::new(),
    }
}

impl Reassembler {
    /// A reassembler refusing objects larger than `max_obj_size` bytes (0: no limit).
    pub fn new(max_obj_size: usize) -> Reassembler {
        Reassembler {
            partial: None,
            max_obj_size,
        }
    }

    /// True while a large object is incomplete.
    pub fn is_pending(&self) -> bool {
        self.partial.is_some()
    }

    /// Drops an incomplete object (the session ended or the package closed without it).
    pub fn abandon(&mut self) -> bool {
        self.partial.take().is_some()
    }

    /// Feeds one incoming command. The flag is true when an incomplete object was dropped
    /// because another command arrived first: the sender is told with Alert 1225.
    pub fn feed(&mut self, cmd: Command) -> (bool, Chunked) {
        let item = single_item(&cmd);
        let key = item.map(item_key);
        let interrupted = match (&self.partial, &key) {
            (Some(p), Some(k)) => &p.key != k,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if interrupted {
            self.partial = None;
        }
        let Some(item) = item else {
            return (interrupted, Chunked::Whole(cmd));
        };
        let more = item.more_data;
        let text = item_text(item);
        let key = key.unwrap_or_default();
        let Some(mut p) = self.partial.take() else {
            if !more {
                return (interrupted, Chunked::Whole(cmd));
            }
            let declared = item.meta.as_ref().and_then(|m| m.size);
            if self.max_obj_size != 0 && declared.is_some_and(|d| d > self.max_obj_size as u64) {
                return (interrupted, Chunked::SizeMismatch);
            }
            self.partial = Some(Partial {
                key,
                declared,
                data: text,
                first: cmd,
            });
            return (interrupted, Chunked::Buffered);
        };
        p.data.push_str(&text);
        if self.max_obj_size != 0 && p.data.len() > self.max_obj_size {
            return (interrupted, Chunked::SizeMismatch);
        }
        if more {
            self.partial = Some(p);
            return (interrupted, Chunked::Buffered);
        }
        if p.declared.is_some_and(|d| d != p.data.len() as u64) {
            return (interrupted, Chunked::SizeMismatch);
        }
        let mut whole = p.first;
        if let Some(it) = single_item_mut(&mut whole) {
            it.more_data = false;
            it.data = Some(Data::Text(p.data));
            if let Some(m) = it.meta.as_mut() {
                m.size = None;
            }
        }
        (
            interrupted,
            Chunked::Complete(with_cmd_id(whole, cmd.cmd_id())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syncml::StatusCode;
    use crate::syncml::message::{Container, ItemCmd, LocRef, Results, Status};

    fn message() -> SyncMl {
        let mut msg = SyncMl::default();
        msg.hdr.session_id = "1".into();
        msg.hdr.target = LocRef::new("IMEI:1");
        msg.hdr.source = LocRef::new("http://srv/dm");
        msg.body.commands.push(Command::Status(Status::new(
            1,
            1,
            0,
            "SyncHdr",
            StatusCode::OK,
        )));
        msg
    }

    fn add(id: u32, data: Data) -> Command {
        Command::Add(ItemCmd {
            cmd_id: id,
            meta: Some(Meta::format_type(
                "xml",
                "application/vnd.syncml.dmtnds+xml",
            )),
            items: vec![Item {
                target: Some(LocRef::new("./Vendor/Enterprise")),
                data: Some(data),
                ..Item::default()
            }],
            ..ItemCmd::default()
        })
    }

    fn tnds(nodes: usize) -> String {
        let mut s = String::from("<MgmtTree xmlns=\"syncml:dmddf1.2\"><VerDTD>1.2</VerDTD>");
        for i in 0..nodes {
            s.push_str(&format!(
                "<Node><NodeName>n{i}</NodeName><RTProperties><Format><chr/></Format>\
                 </RTProperties><Value>v &amp; {i}</Value></Node>"
            ));
        }
        s.push_str("</MgmtTree>");
        s
    }

    #[test]
    fn counted_lengths_are_the_encoded_lengths() {
        let commands = [
            add(2, Data::Xml(tnds(5))),
            add(3, Data::Text(tnds(5))),
            add(4, Data::Text("a & b <c> \r\u{1} é".into())),
            Command::Results(Results {
                cmd_id: 5,
                cmd_ref: 2,
                items: vec![Item::with_source("./a"), Item::default()],
                ..Results::default()
            }),
            Command::Atomic(Container {
                cmd_id: 6,
                commands: vec![add(7, Data::Text("x".into()))],
                ..Container::default()
            }),
        ];
        let mut msg = message();
        assert_eq!(encoded_len(&msg), xml::encode(&msg).len());
        for cmd in commands {
            let before = xml::encode(&msg).len();
            msg.body.commands.push(cmd.clone());
            assert_eq!(
                xml::encode(&msg).len() - before,
                xml::command_len(&cmd),
                "{cmd:?}"
            );
            assert_eq!(encoded_len(&msg), xml::encode(&msg).len());
        }
        msg.body.is_final = true;
        assert_eq!(encoded_len(&msg), xml::encode(&msg).len());
    }

    /// Sends `queue` in messages of at most `max` bytes, `<Final/>` on the last, as the
    /// sessions do; checks each message and returns the commands the other side puts back
    /// together, with the number of messages.
    fn deliver(
        queue: &mut VecDeque<Outgoing<u32>>,
        max: usize,
        next: &mut u32,
    ) -> (Vec<Command>, usize) {
        let mut rx = Reassembler::new(0);
        let mut whole = Vec::new();
        for sent in 1..=100 {
            let mut msg = message();
            let placed = fill(&mut msg, queue, room(max, final_len()), next);
            assert!(!placed.is_empty(), "nothing placed at {max}");
            msg.body.is_final = queue.is_empty();
            let encoded = xml::encode(&msg);
            assert!(encoded.len() <= max, "{} > {max}", encoded.len());
            for cmd in msg.body.commands.drain(1..) {
                if let (_, Chunked::Complete(c) | Chunked::Whole(c)) = rx.feed(cmd) {
                    whole.push(c);
                }
            }
            if queue.is_empty() {
                return (whole, sent);
            }
        }
        panic!("the queue was not sent in 100 messages at {max}");
    }

    #[test]
    fn a_large_item_goes_in_chunks_that_fit_and_reassemble() {
        let text = tnds(60);
        let mut queue = VecDeque::from([
            Outgoing {
                command: add(2, Data::Text("small".into())),
                tag: 2,
                continuation: false,
            },
            Outgoing {
                command: add(3, Data::Xml(text.clone())),
                tag: 3,
                continuation: false,
            },
        ]);
        let mut next = 100;
        let (whole, _) = deliver(&mut queue, 1_500, &mut next);
        let Some(Command::Add(c)) = whole.into_iter().find(|c| c.cmd_id() != 2) else {
            panic!("the large Add was not completed")
        };
        assert_eq!(c.items[0].data, Some(Data::Text(text)));
        assert!(next > 103, "several chunks");
    }

    #[test]
    fn chunks_with_sparse_markup_and_the_final_tag_stay_within_max() {
        // Long text with a `<` now and then: the encoder writes such chunks as CDATA, which
        // costs more than escaping the few `<` would.
        let text: String = (0..6_000)
            .map(|i| if i % 500 == 0 { '<' } else { 'a' })
            .collect();
        for max in [1_000, 1_333, 2_048, 4_096] {
            let mut queue = VecDeque::from([Outgoing {
                command: add(2, Data::Text(text.clone())),
                tag: 2,
                continuation: false,
            }]);
            let mut next = 100;
            let (whole, sent) = deliver(&mut queue, max, &mut next);
            assert!(sent > 1, "chunked at {max}");
            let [Command::Add(c)] = whole.as_slice() else {
                panic!("the large Add was not completed at {max}")
            };
            assert_eq!(c.items[0].data, Some(Data::Text(text.clone())));
        }
        assert_eq!(final_len(), "<Final/>".len());
        assert_eq!(room(0, 8), 0);
        assert_eq!(room(5, 8), 1);
    }

    #[test]
    fn the_last_message_keeps_room_for_its_final_tag() {
        let cmd = add(2, Data::Text("x".repeat(300)));
        // A message this command fills to the byte, before `<Final/>`.
        let max = encoded_len(&message()) + xml::command_len(&cmd);
        let mut queue = VecDeque::from([Outgoing {
            command: cmd,
            tag: 2,
            continuation: false,
        }]);
        let mut next = 100;
        let (whole, _) = deliver(&mut queue, max, &mut next);
        assert_eq!(whole.len(), 1, "the command was sent");
    }

    #[test]
    fn a_command_that_cannot_be_split_stays_as_it_was() {
        for (data, continuation) in [(Data::Xml(tnds(20)), false), (Data::Text(tnds(20)), true)] {
            let mut cmd = add(2, data);
            if let Some(item) = single_item_mut(&mut cmd) {
                item.meta = Some(Meta {
                    size: Some(9),
                    ..Meta::default()
                });
            }
            let mut queue = VecDeque::from([Outgoing {
                command: cmd.clone(),
                tag: 2,
                continuation,
            }]);
            let mut msg = message();
            let room = encoded_len(&msg) + 100;
            let mut next = 100;
            assert!(fill(&mut msg, &mut queue, room, &mut next).is_empty());
            assert_eq!(msg, message());
            assert_eq!(queue.front().map(|o| &o.command), Some(&cmd));
            assert_eq!(next, 100);
        }
    }
}
