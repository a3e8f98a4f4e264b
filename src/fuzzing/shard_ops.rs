//! The `shard_ops` target: operation sequences against the shard `State` and a model of it.

use super::model::Sim;
use super::reader::Reader;

/// Sequences of operations run against the shard's `State` and against a model.
///
/// Input: `[policy | auth << 2, cap, timeouts, auth deadline, copy_max, write buffer, ops..]`.
/// The client queue cap is 16..=1036 bytes, the timeouts multiples of 250 ms on a simulated
/// clock that ops move in 125 ms steps, so every deadline is hit exactly, early and late.
///
/// Operations: admit a client (maybe authenticated); close a client for any reason (`remove`
/// for `Removed`); set or clear its authentication; deliver a payload to an audience (all,
/// authenticated, either except one client, maybe one never admitted); send to one client;
/// deliver a batch; write k bytes of a client's queue (gathered as the connection task does,
/// through a small write buffer, then `wrote`); stall a client (its socket takes nothing: the
/// connection task marks it blocked); advance the clock; sweep; release a client; an inbound
/// frame (touch); a ping (touch and pong); subscribe or unsubscribe a client (or an id never
/// admitted) to one of four topics; shut down. An audience may be limited to the subscribers of
/// a set of topics (none: nobody).
///
/// The model keeps, per client, its phase and its queue as one list of whole frames in write
/// order, and states the rules plainly:
/// - a delivery appends the frames to every open client of the audience, unless it would take
///   the queue over the cap. Then `Disconnect` evicts the client: it loses every data frame not
///   yet started and gets a 4008 close ahead of them; `DropNewest` drops the delivery (a batch
///   whole); `DropOldest` drops data frames not yet started, oldest first, until the delivery
///   fits, or drops only the delivery if it could not fit even with all of them dropped;
/// - a pong goes after the frame being written and after the control frames already queued,
///   ahead of every data frame not started; at most 16 are queued;
/// - a close (other than an eviction) queues its close frame after the data, or aborts the
///   client (no frame) for `Disconnected` and `WriteDeadline`;
/// - a sweep closes open clients blocked for the write deadline, else idle for more than the
///   heartbeat timeout (4002), else unauthenticated for the auth deadline (4001), and aborts
///   closing clients blocked for the write deadline;
/// - an aborted client is written no more.
///
/// Checks after every operation: each client's phase, queue bytes, frame count and blocked
/// time; the bytes each write hands over are the model's next bytes for that client, and the
/// whole of what is gathered is a prefix of its queue; the `clients` gauge equals the open
/// clients, `queued_bytes` the sum of the queues; deliveries, drops, evictions by reason,
/// protocol closes, bytes written and writes match; the removed events are those the model
/// expects. At the end every queue that can be written is drained, every client released, the
/// gauges are zero, and every admitted client produced exactly one removed event.
pub fn shard_ops(data: &[u8]) {
    let mut r = Reader::new(data);
    let mut sim = Sim::new(&mut r);
    while !r.is_empty() {
        sim.step(&mut r);
        sim.check();
    }
    sim.finish();
}
