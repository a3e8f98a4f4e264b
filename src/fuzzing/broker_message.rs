//! The `broker_message` target: what another node (or anyone who can publish on the bridge's
//! subjects) sends, as the receiving node checks it.

use super::reader::Reader;
use crate::bridge::{Channel, FRAMES_PER_MESSAGE_MAX, Received, charge, check, split};
use crate::config::FRAME_OVERHEAD_BYTES;
use crate::wire::Opcode;

/// Arbitrary bytes as a received broker message.
///
/// Input: `[broadcasts, limit, frames..]`; the node's message limit is `limit * 64` bytes.
///
/// Checks: [`check`] never panics; when it passes a message, [`split`] slices it into exactly
/// as many payloads as it counted, at least one per broadcast and at most
/// `FRAMES_PER_MESSAGE_MAX`, each a text (valid UTF-8) or binary payload within the limit, and
/// the inbound charge is the message's bytes plus the overhead of each frame; when it refuses
/// one, nothing of it reaches a client.
pub fn broker_message(data: &[u8]) {
    let mut r = Reader::new(data);
    let broadcasts = usize::from(r.u8());
    let limit = 64 * usize::from(r.u8());
    let received = Received {
        channel: Channel::Everyone,
        authenticated_only: false,
        topics: None,
        frames: bytes::Bytes::copy_from_slice(r.rest()),
        broadcasts,
    };
    let Ok(frames) = check(&received, limit) else {
        return;
    };
    assert!((broadcasts..=FRAMES_PER_MESSAGE_MAX).contains(&frames));
    assert_eq!(
        charge(&received),
        received.frames.len() + frames * FRAME_OVERHEAD_BYTES
    );
    let payloads = split(received.frames.clone()).expect("what check passes, split slices");
    assert_eq!(payloads.len(), frames);
    for payload in &payloads {
        assert!(payload.body().len() <= limit);
        match payload.opcode() {
            Opcode::Text => assert!(std::str::from_utf8(payload.body()).is_ok()),
            Opcode::Binary => {}
            other => panic!("a {other:?} frame passed"),
        }
    }
}
