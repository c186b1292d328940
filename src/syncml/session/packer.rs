//! Fitting a package into messages no larger than the peer's MaxMsgSize: whole commands while
//! they fit, the rest in the next message (the package continues after the peer's Alert 1222),
//! and an item too large for any message split into large-object chunks (`MoreData`, with the
//! total `Size` in the first chunk). [`Reassembler`] puts chunks back together on the other
//! side.

use std::collections::VecDeque;

use crate::syncml::message::{Command, Data, Item, Meta, SyncBody, SyncMl};
use crate::syncml::xml;

/// Smallest chunk worth sending; below it the packer waits for the next message.
const MIN_CHUNK: usize = 64;

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

/// The encoded size of `msg`.
pub fn encoded_len(msg: &SyncMl) -> usize {
    xml::encode(msg).len()
}

/// Moves commands from `queue` into `msg` while the encoded message stays within `max` bytes
/// (0 means no limit). An item that cannot fit even in an otherwise empty message is split
/// into a chunk that fills the space and a continuation left at the front of the queue, with
/// a fresh CmdID from `next_cmd_id`. Returns the tags of the commands placed, by CmdID.
/// Nothing is placed when even the first command (or a minimal chunk) does not fit.
pub fn fill<T: Clone>(
    msg: &mut SyncMl,
    queue: &mut VecDeque<Outgoing<T>>,
    max: usize,
    next_cmd_id: &mut u32,
) -> Vec<(u32, T)> {
    let mut placed = Vec::new();
    let mut size = encoded_len(msg);
    while let Some(front) = queue.front() {
        let cmd_size = command_len(msg, &front.command);
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
        let Some(mut out) = queue.pop_front() else {
            break;
        };
        match split_for(msg, &out.command, room, out.continuation) {
            Some((chunk, rest)) => {
                placed.push((chunk.cmd_id(), out.tag.clone()));
                msg.body.commands.push(chunk);
                out.command = with_cmd_id(rest, *next_cmd_id);
                *next_cmd_id += 1;
                out.continuation = true;
                queue.push_front(out);
            }
            None => queue.push_front(out),
        }
        break;
    }
    placed
}

fn is_chunk(cmd: Option<&Command>) -> bool {
    cmd.and_then(single_item).is_some_and(|i| i.more_data)
}

/// The bytes `cmd` adds to `msg` when appended.
fn command_len(msg: &SyncMl, cmd: &Command) -> usize {
    let empty = SyncMl {
        hdr: msg.hdr.clone(),
        body: SyncBody {
            commands: Vec::new(),
            is_final: false,
        },
    };
    let mut one = empty.clone();
    one.body.commands.push(cmd.clone());
    encoded_len(&one).saturating_sub(encoded_len(&empty))
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

fn with_cmd_id(mut cmd: Command, id: u32) -> Command {
    match &mut cmd {
        Command::Add(c) | Command::Replace(c) => c.cmd_id = id,
        Command::Results(r) => r.cmd_id = id,
        _ => {}
    }
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

/// Splits a single-item Add, Replace or Results into a first chunk that fits in `room` bytes
/// and the rest. `None` when the command cannot be chunked or the room is too small.
fn split_for(
    msg: &SyncMl,
    cmd: &Command,
    room: usize,
    continuation: bool,
) -> Option<(Command, Command)> {
    let item = single_item(cmd)?;
    let text = match item.data.as_ref()? {
        Data::Text(t) | Data::Xml(t) => t.clone(),
    };
    let mut probe = cmd.clone();
    {
        let it = single_item_mut(&mut probe)?;
        it.data = Some(Data::Text(String::new()));
        it.more_data = true;
        if !continuation {
            let meta = it.meta.get_or_insert_with(Meta::default);
            meta.size = Some(text.len() as u64);
        }
    }
    let overhead = command_len(msg, &probe);
    let budget = room.checked_sub(overhead)?;
    if budget < MIN_CHUNK {
        return None;
    }
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
    if cut == 0 || cut >= text.len() {
        return None;
    }
    let mut first = probe;
    single_item_mut(&mut first)?.data = Some(Data::Text(text[..cut].to_owned()));
    let mut rest = cmd.clone();
    {
        let it = single_item_mut(&mut rest)?;
        it.data = Some(Data::Text(text[cut..].to_owned()));
        if let Some(meta) = it.meta.as_mut() {
            meta.size = None;
        }
    }
    Some((first, rest))
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
