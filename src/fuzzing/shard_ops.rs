//! The `shard_ops` target: operation sequences against a shard's connection core and a model.

use super::model::Sim;
use super::reader::Reader;

/// Sequences of operations run against a shard's connection core (`Core`, and its `State`),
/// driven as a driver drives it, and against a model.
///
/// Input: `[mode, cap, timeouts, auth deadline, copy_max, write buffer, ops..]`. `mode`: the
/// policy (`% 3`), an auth deadline (4), server pings (8), an inbox (16) of 1 to 4 events
/// (bits 5-6), and whether the run ends with the shard stopping (128). The client queue cap is
/// 16..=1036 bytes, the timeouts multiples of 250 ms on a simulated clock that ops move in
/// 125 ms steps, so every deadline is hit exactly, early and late.
///
/// Operations, as the shard's command loop applies them: admit a client (maybe authenticated;
/// the core hears it registered); close a client for any reason (`remove` for `Removed`); set
/// or clear its authentication; deliver a payload to an audience (all, authenticated, either
/// except one client, maybe one never admitted, maybe only the subscribers of some of four
/// topics); send to one client; deliver a batch, or consecutive broadcasts in one pass;
/// subscribe or unsubscribe; advance the clock; sweep; shut down. As a driver does: write k
/// bytes of a client's queue (after asking the core: a close frame out makes it linger, an end
/// ends it); stall a client's socket; read one to three frames from a client, if the core lets
/// it read (texts the handler broadcasts, forwards to the inbox, closes on, or panics on;
/// pings, pongs, closes, an unmasked frame); end a client's socket; work on a client's wait
/// (the other shards make room, its held event is queued if the inbox has room) and tell the
/// core when it is over; make the other shards' queues full or not; take events from the
/// inbox; queue the `Removed` events kept apart.
///
/// The model keeps, per client, its phase, its connection's stage, its queue as one list of
/// whole frames in write order, and the inbox events it owes, and states the rules plainly:
/// - a delivery appends the frames to every open client of the audience, unless it would take
///   the queue over the cap. Then `Disconnect` evicts the client: it loses every data frame not
///   yet started and gets a 4008 close ahead of them; `DropNewest` drops the delivery (a batch
///   whole); `DropOldest` drops data frames not yet started, oldest first, until the delivery
///   fits, or drops only the delivery if it could not fit even with all of them dropped;
/// - a pong goes after the frame being written and after the control frames already queued,
///   ahead of every data frame not started; at most 16 are queued;
/// - a close (other than an eviction) queues its close frame after the data, or aborts the
///   client (no frame) for `Disconnected` and `WriteDeadline`; a handler's panic closes with
///   1011;
/// - a sweep closes open clients blocked for the write deadline, else idle for more than the
///   heartbeat timeout (4002; a waiting client is not idle), else unauthenticated for the auth
///   deadline (4001), and aborts closing clients blocked for the write deadline;
/// - a connection reads only while it is served and open; what a read leads to that finds no
///   room (deliveries for the other shard, an event for the inbox) makes it wait, and what it
///   read after that waits with it, handed over when the wait is over; a close frame out makes
///   it linger (and wait still, if it waited); a socket that ends while it waits ends once the
///   wait is over;
/// - the inbox hears `Registered` first, then the client's messages, then `Removed` once, when
///   its close frame is out or its socket ended and nothing of it waits; a shard that stops
///   counts every event it owed and did not queue as lost, once;
/// - an aborted client is written no more.
///
/// Checks after every operation: each client's phase, stage, queue bytes, frame count, blocked
/// time and whether the inbox heard of it; what `poll_read` and `poll_write` say; the bytes
/// each write hands over are the model's next bytes for that client, and the whole of what is
/// gathered is a prefix of its queue; the bytes each read consumed; the `clients` gauge equals
/// the open clients, `queued_bytes` the sum of the queues, the connection and admission counts
/// the clients not ended; deliveries, drops, evictions by reason, protocol closes, bytes
/// written, writes, inbox events and losses match; the handler's `on_removed` calls are those
/// the model expects; every inbox event the consumer takes is the next its client owes. At the
/// end every queue that can be written is drained and every connection ends (or the shard
/// stops), the gauges are zero, and every admitted client was removed exactly once.
pub fn shard_ops(data: &[u8]) {
    let mut r = Reader::new(data);
    let mut sim = Sim::new(&mut r);
    while !r.is_empty() {
        sim.step(&mut r);
        sim.check();
    }
    sim.finish();
}
