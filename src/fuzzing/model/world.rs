//! The world around the core under test: the frames a client sends, the handler the shard
//! runs, and the other shards the core posts to.

use std::sync::{Arc, Mutex};

use crate::client::{Incoming, RemoveReason};
use crate::shard::{Context, Handler, Outbox, Post};
use crate::{Audience, ClientId, Payload};

/// The code and reason a client gets when the handler panicked handling it.
pub(super) const PANIC_CLOSE: (u16, &str) = (1011, "internal error");

/// One frame a client sends, as the simulation builds it and the model reads it.
#[derive(Clone, Debug)]
pub(super) struct Sent {
    /// Its bytes on the wire (masked, unless `Bad`).
    pub(super) bytes: Vec<u8>,
    pub(super) kind: Kind,
}

/// What a client frame is.
#[derive(Clone, Debug)]
pub(super) enum Kind {
    /// A text message; the handler acts on its first character: `b` broadcasts the rest to
    /// everyone, `x` closes the client with 4100, `!` panics, `i` goes to the inbox (if the
    /// engine has one), anything else does nothing.
    Text(String),
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>),
    /// An unmasked frame: a protocol error (1002).
    Bad,
}

/// A masked client frame, built by hand.
pub(super) fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&MASK);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

/// The handler the simulated shard runs: it acts on a text message's first character (see
/// [`Kind::Text`]) and records every `on_removed`.
pub(super) struct SimHandler {
    pub(super) removed: Arc<Mutex<Vec<(ClientId, RemoveReason)>>>,
}

impl Handler for SimHandler {
    fn forward(&self, _ctx: &Context<'_>, message: Incoming<'_>) -> bool {
        matches!(message, Incoming::Text(t) if t.starts_with('i'))
    }

    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        let Incoming::Text(text) = message else {
            return;
        };
        match text.as_bytes().first() {
            Some(b'b') => ctx.broadcast(Payload::text(&text[1..]), Audience::ALL),
            Some(b'x') => ctx.close(4100),
            // Without the panic hook's message: a planned panic is no news.
            Some(b'!') => std::panic::resume_unwind(Box::new("a planned panic")),
            _ => {}
        }
    }

    fn on_removed(&self, ctx: &mut Context<'_>, reason: RemoveReason) {
        let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        removed.push((ctx.id(), reason));
    }
}

/// The other shards, as the core posts to them: they take everything, or, while `full`, keep
/// everything (so that the connection that relayed waits).
pub(super) struct SimPost {
    pub(super) full: bool,
    pub(super) kept: bool,
}

impl Post for SimPost {
    fn post(&mut self, outbox: &mut Outbox) {
        if !outbox.is_empty() && self.full {
            self.kept = true;
        }
        outbox.clear();
    }

    fn waits(&self) -> bool {
        self.kept
    }
}
