//! `InboxPartition`: the [`Inbox`] split by client over `n` streams, so that `n` tasks can await
//! at once while each client's events stay in order.
//!
//! There is no router task: a partition whose buffer is empty pulls from the inbox itself and
//! routes what it pulls for the others into their buffers, so the split works on any runtime,
//! as the `Inbox` does. All of it sits behind one `std::sync::Mutex` (`State`), held for short
//! synchronous steps only: never across an await, never while an embedder's code runs.
//!
//! # Invariants
//!
//! - Every event of a client goes to partition `partition_of(client, n)`, a fixed function of
//!   its id.
//! - Each buffer holds at most `buffer_max` events, and at most one event is held outside them
//!   (`State::held`), for a partition whose buffer was full; while one is held, nobody pulls.
//!   So at most `n x buffer_max + 1` events wait here, beyond the shards' own queues.
//! - `held` names a partition whose buffer is full: it is set only then, and the partition puts
//!   it at the back of its buffer in the same step in which it takes an event out.
//! - An event taken from a shard's queue is yielded, or in a buffer, or held, or counted lost
//!   in that shard's tally (its partition was dropped): never dropped uncounted.
//!
//! # Wake-ups
//!
//! The inbox's queues keep one waker each, so the partitions cannot each register there.
//! Instead the inbox holds one waker of our own, `Waiting`, which wakes every partition that
//! waits; a partition that pulls routes what it pulls and wakes the partition it was for.
//!
//! ```text
//! // INVARIANT: a partition that returns `Pending` is woken when it can progress.
//! // Premises:
//! // 1. It returns `Pending` only with an empty buffer, after putting its waker in `Waiting`
//! //    with the lock held, and only because an event is held, or the inbox is pending (then
//! //    the inbox has registered `Waiting`'s waker with every open queue), or its pull budget
//! //    ran out (then it woke itself).
//! // 2. Each change that lets it progress is made with the lock held, and is followed by a
//! //    wake of the partitions in `Waiting`: an event routed to it wakes it; the held event
//! //    placed, or dropped with its partition, and the end of the inbox wake all.
//! // 3. A new event in a shard's queue, or its end, wakes `Waiting`'s waker, which wakes all.
//! // 4. A waker leaves `Waiting` only to be woken, replaced by its partition's newer one, or
//! //    cleared when its partition returns `Ready` or is dropped.
//! // Conclusion: its waker is still in `Waiting` when the change comes (1, 4), and the change
//! // wakes it (2, 3). A partition busy in its own code needs no wake: it pulls the next time
//! // it polls, and finds in its buffer what others routed to it meanwhile.
//! ```
//!
//! Lock order: `State`, then `Waiting`. `Waiting`'s waker takes only its own lock, so the inbox
//! may call it from inside a poll made with `State` locked (tokio's queues do, when the task's
//! budget is spent).

use super::stream::{Event, Inbox};
use crate::ClientId;
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Events one poll may pull before it lets its task go (waking it to come back): bounds how long
/// it holds the lock when the events keep coming for other partitions or for dropped ones.
const PULL_BUDGET: usize = 128;

impl Inbox {
    /// Splits the inbox by client into `n` streams that separate tasks can read at once: every
    /// event of a client goes to the same [`InboxPartition`], in order, so one task can await
    /// (a database write, say) for one client while the others go on with theirs.
    ///
    /// `n` of 0 is taken as 1. Each partition buffers at most
    /// [`Config::inbox_capacity`](crate::Config::inbox_capacity) events; see
    /// [`InboxPartition`] for ordering, back-pressure and loss.
    ///
    /// ```
    /// use shardcast::{Engine, EventKind, Payload};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = Engine::builder().shards(2).inbox(true).build()?;
    /// let inbox = engine.inbox().expect("turned on, and taken once");
    /// let mut consumers = Vec::new();
    /// for mut partition in inbox.partition(4) {
    ///     let replies = engine.clone();
    ///     consumers.push(tokio::spawn(async move {
    ///         // A client's events all come here, in order; the other tasks await meanwhile.
    ///         while let Some(event) = partition.recv().await {
    ///             if let EventKind::Text(text) = event.kind {
    ///                 let _ = replies.send(event.client, Payload::text(text.to_uppercase())).await;
    ///             }
    ///         }
    ///     }));
    /// }
    /// let addr = engine.listen("127.0.0.1:0").await?;
    /// // ... clients connect to ws://{addr}/ ...
    /// # let _ = addr;
    /// engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// for consumer in consumers {
    ///     consumer.await?; // each stream ends once the engine has stopped
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn partition(self, n: usize) -> Vec<InboxPartition> {
        let buffer_max = self.capacity();
        split(self, n, buffer_max)
    }
}

/// [`Inbox::partition`], with `buffer_max` events per buffer (at least 1).
fn split(inbox: Inbox, n: usize, buffer_max: usize) -> Vec<InboxPartition> {
    let n = n.max(1);
    let waiting = Arc::new(Waiting {
        wakers: Mutex::new(vec![None; n]),
    });
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            inbox,
            ended: false,
            slots: (0..n)
                .map(|_| Slot {
                    events: VecDeque::new(),
                    open: true,
                })
                .collect(),
            held: None,
            buffer_max: buffer_max.max(1),
        }),
        inbox_waker: Waker::from(waiting.clone()),
        waiting,
    });
    (0..n)
        .map(|index| InboxPartition {
            shared: shared.clone(),
            index,
            of: n,
        })
        .collect()
}

/// The partition of `client`'s events among `n`.
fn partition_of(client: ClientId, n: usize) -> usize {
    // The finaliser of MurmurHash3 (`fmix64`): each bit of the id moves every bit of the
    // result, so clients spread evenly over any `n` although the id's low 16 bits are its
    // shard's index (a plain `% n` would put all of a shard's clients together) and its high
    // bits a sequence.
    let mut x = client.as_u64();
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    // Below `n`, so it fits a `usize`.
    (x % n as u64) as usize
}

/// One of the streams [`Inbox::partition`] splits the inbox into: the events of the clients it
/// was given, read with [`InboxPartition::recv`] or as a [`Stream`](futures_core::Stream).
///
/// Give each partition its own task: while one awaits for a client, the others go on with the
/// clients of their partitions (see [`Inbox::partition`] for an example). Within one partition,
/// events are handled one at a time, as with the [`Inbox`].
///
/// # Ordering
///
/// Every event of a client goes to the same partition (a fixed mix of its [`ClientId`]; which
/// one is not specified), in the order the [`Inbox`] gives them: [`Registered`], its messages
/// in the order it sent them, then [`Removed`]. There is no order across clients, nor across
/// partitions.
///
/// # Back-pressure
///
/// A partition whose buffer is empty pulls from the inbox for every partition, putting each
/// event in its partition's buffer, of at most
/// [`Config::inbox_capacity`](crate::Config::inbox_capacity) events. When an event finds its
/// partition's buffer full, it is held, and nobody pulls until that partition takes an event:
/// the shards' queues fill, and clients are paused exactly as the [`Inbox`] describes. So a
/// partition whose task is slow slows the others once its buffer is full: they serve what
/// their buffers hold, then wait for it (head-of-line blocking across partitions). The buffer
/// lets them run ahead of it by that many of its events; size `inbox_capacity` for the longest
/// stall you expect, or read every partition promptly.
///
/// At most `n x inbox_capacity + 1` events wait in the partitions, beyond the shards' queues.
/// They have left those queues, so [`ShardStats::inbox_depth`](crate::ShardStats::inbox_depth)
/// does not count them.
///
/// # Shutdown and loss
///
/// A partition's stream ends (`None`) once the inbox has ended (see [`Inbox`]) and its buffer
/// is empty: keep reading every partition during [`Engine::shutdown`](crate::Engine::shutdown).
/// Dropping a partition drops the events in its buffer and every later event of its clients;
/// they are counted in [`ShardStats::inbox_lost`](crate::ShardStats::inbox_lost) and pause
/// nobody. Once every partition is dropped, the inbox is dropped, as [`Inbox`] describes.
///
/// [`Registered`]: crate::EventKind::Registered
/// [`Removed`]: crate::EventKind::Removed
pub struct InboxPartition {
    /// What the partitions of one inbox share.
    shared: Arc<Shared>,
    /// This partition's index: `0..of`.
    index: usize,
    /// How many partitions the inbox was split into.
    of: usize,
}

/// What the partitions of one inbox share.
struct Shared {
    /// The inbox and the buffers. Locked for short synchronous steps only, never across an
    /// await, never while an embedder's code runs.
    state: Mutex<State>,
    /// The partitions waiting for an event.
    waiting: Arc<Waiting>,
    /// `waiting` as a waker: the one the inbox's queues hold. It points to `Waiting`, not to
    /// `Shared`, or the inbox would keep itself alive.
    inbox_waker: Waker,
}

/// The inbox and what was pulled from it, behind [`Shared::state`].
struct State {
    /// The inbox; dropped (and what is left in it counted) with the last partition.
    inbox: Inbox,
    /// Whether the inbox has ended (every shard stopped and every event was pulled).
    ended: bool,
    /// One per partition, by index.
    slots: Vec<Slot>,
    /// An event pulled for a partition whose buffer was full; nobody pulls while it is held.
    held: Option<Held>,
    /// Events each buffer holds at most; at least 1.
    buffer_max: usize,
}

/// One partition's share of [`State`].
struct Slot {
    /// Events other partitions pulled for this one, oldest first, each with the index of the
    /// shard whose queue gave it (where to count it if it is lost); at most `buffer_max`.
    events: VecDeque<(usize, Event)>,
    /// Whether its `InboxPartition` still exists: the events for a dropped one are lost.
    open: bool,
}

/// An event that found its partition's buffer full.
struct Held {
    /// Its partition, whose buffer is full.
    slot: usize,
    /// The shard whose queue gave it.
    lane: usize,
    /// The event.
    event: Event,
}

/// The wakers of the partitions waiting for an event; as a [`Waker`], wakes them all.
struct Waiting {
    /// By partition index; `None` when that partition does not wait (or was woken).
    wakers: Mutex<Vec<Option<Waker>>>,
}

/// Locks `mutex`. A panic while it was held cannot leave the data half-changed in a way that
/// matters more than the panic itself, so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Waiting {
    /// Partition `i` waits, to be woken with `waker`.
    fn set(&self, i: usize, waker: &Waker) {
        let mut wakers = lock(&self.wakers);
        match &mut wakers[i] {
            Some(old) if old.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
    }

    /// Partition `i` does not wait any more.
    fn clear(&self, i: usize) {
        lock(&self.wakers)[i] = None;
    }

    /// Partition `i`'s waker, if it waits; it is not waiting any more.
    fn take(&self, i: usize) -> Option<Waker> {
        lock(&self.wakers)[i].take()
    }

    /// Wakes every waiting partition, each outside the lock: a woken task may run at once on
    /// another thread, and would only wait for it.
    fn wake_all(&self) {
        let mut from = 0;
        loop {
            let next = {
                let mut wakers = lock(&self.wakers);
                (wakers.iter_mut().enumerate().skip(from))
                    .find_map(|(i, waker)| waker.take().map(|waker| (i, waker)))
            };
            let Some((i, waker)) = next else {
                return;
            };
            waker.wake();
            from = i + 1;
        }
    }
}

impl Wake for Waiting {
    /// An event (or the end) reached one of the shards' queues: every waiting partition may
    /// pull it. Called by whichever thread queued it, a shard's most often.
    fn wake(self: Arc<Self>) {
        self.wake_all();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all();
    }
}

impl InboxPartition {
    /// The next event of this partition's clients; `None` once the inbox has ended and this
    /// partition's buffer is empty.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is taken only when this returns it. What it pulled for other
    /// partitions meanwhile waits in their buffers.
    pub async fn recv(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next event of this partition's clients: from its buffer, or else pulled
    /// from the inbox (routing what belongs to the other partitions into their buffers).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let shared = &*self.shared;
        let me = self.index;
        // Wakers to call once the lock is released: a woken task may run at once on another
        // thread, and would only wait for the lock.
        let mut woken: Vec<Waker> = Vec::new();
        let mut wake_all = false;
        let mut wake_me = false;
        let poll = {
            let mut guard = lock(&shared.state);
            let state = &mut *guard;
            let mut pulled = 0;
            let mut waits = false;
            let poll = loop {
                if let Some((_, event)) = state.slots[me].events.pop_front() {
                    // There is room now for the event held for this partition; place it at the
                    // back, where order puts it, and let every partition pull again.
                    if let Some(held) = state.held.take_if(|held| held.slot == me) {
                        state.slots[me].events.push_back((held.lane, held.event));
                        wake_all = true;
                    }
                    break Poll::Ready(Some(event));
                }
                if state.ended {
                    break Poll::Ready(None);
                }
                if !waits {
                    // Before looking, so that a wake after the look finds it (the invariant's
                    // premise 1).
                    shared.waiting.set(me, cx.waker());
                    waits = true;
                }
                if state.held.is_some() {
                    break Poll::Pending;
                }
                if pulled == PULL_BUDGET {
                    wake_me = true;
                    break Poll::Pending;
                }
                let mut inbox_cx = Context::from_waker(&shared.inbox_waker);
                match state.inbox.poll_lane(&mut inbox_cx) {
                    Poll::Ready(Some((lane, event))) => {
                        pulled += 1;
                        let to = partition_of(event.client, state.slots.len());
                        if to == me {
                            // Its buffer is empty and nothing is held for it: nothing of its
                            // clients comes before this.
                            break Poll::Ready(Some(event));
                        }
                        let slot = &mut state.slots[to];
                        if !slot.open {
                            state.inbox.lose(lane);
                        } else if slot.events.len() < state.buffer_max {
                            slot.events.push_back((lane, event));
                            woken.extend(shared.waiting.take(to));
                        } else {
                            state.held = Some(Held {
                                slot: to,
                                lane,
                                event,
                            });
                        }
                    }
                    Poll::Ready(None) => {
                        state.ended = true;
                        wake_all = true;
                        break Poll::Ready(None);
                    }
                    Poll::Pending => break Poll::Pending,
                }
            };
            if waits && poll.is_ready() {
                shared.waiting.clear(me);
            }
            poll
        };
        if wake_all {
            shared.waiting.wake_all();
        }
        for waker in woken {
            waker.wake();
        }
        if wake_me {
            cx.waker().wake_by_ref();
        }
        poll
    }

    /// This partition's index, `0..n` for `n` partitions: for logs and metrics.
    ///
    /// ```
    /// let engine = shardcast::Engine::builder().inbox(true).build()?;
    /// let partitions = engine.inbox().expect("an inbox").partition(3);
    /// let indices: Vec<usize> = partitions.iter().map(|p| p.index()).collect();
    /// assert_eq!(indices, [0, 1, 2]);
    /// # Ok::<(), shardcast::BuildError>(())
    /// ```
    pub fn index(&self) -> usize {
        self.index
    }
}

impl fmt::Debug for InboxPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboxPartition")
            .field("index", &self.index)
            .field("of", &self.of)
            .finish_non_exhaustive()
    }
}

impl futures_core::Stream for InboxPartition {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_recv(cx)
    }
}

impl Drop for InboxPartition {
    /// Counts the events in this partition's buffer (and the one held for it) as lost; later
    /// events of its clients are counted as they are pulled. The last partition dropped drops
    /// the inbox.
    fn drop(&mut self) {
        let shared = &*self.shared;
        let released = {
            let mut guard = lock(&shared.state);
            let State {
                inbox, slots, held, ..
            } = &mut *guard;
            let slot = &mut slots[self.index];
            slot.open = false;
            for (lane, _) in slot.events.drain(..) {
                inbox.lose(lane);
            }
            match held.take_if(|held| held.slot == self.index) {
                Some(held) => {
                    inbox.lose(held.lane);
                    true
                }
                None => false,
            }
        };
        shared.waiting.clear(self.index);
        if released {
            // Nothing is held now: the others may pull again.
            shared.waiting.wake_all();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The partitions over plain `mpsc` queues, polled by hand: every step is deterministic.

    use super::*;
    use crate::ShardId;
    use crate::client::RemoveReason;
    use crate::inbox::EventKind;
    use crate::stats::InboxTally;
    use crossbeam_utils::CachePadded;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use tokio::sync::mpsc;

    /// The shards' side of an inbox: their queues and tallies.
    struct Shards {
        /// One queue per shard; dropping one ends it, as a stopping shard does.
        senders: Vec<mpsc::Sender<Event>>,
        /// What the inbox counted, per shard.
        tallies: Vec<Arc<CachePadded<InboxTally>>>,
    }

    impl Shards {
        /// An inbox over `shards` queues of `capacity` events each, and its shards' side.
        fn new(shards: usize, capacity: usize) -> (Shards, Inbox) {
            let (senders, queues) = (0..shards).map(|_| mpsc::channel(capacity)).unzip();
            let tallies: Vec<_> = (0..shards).map(|_| Arc::default()).collect();
            let inbox = Inbox::new(queues, &tallies);
            (Shards { senders, tallies }, inbox)
        }

        /// Queues `event` on its client's shard.
        fn send(&self, event: Event) {
            self.senders[event.client.shard().index()]
                .try_send(event)
                .expect("room in the queue");
        }

        /// Ends every queue, as stopping shards do.
        fn stop(&mut self) {
            self.senders.clear();
        }

        /// Events taken out of the queues, over every shard.
        fn taken(&self) -> u64 {
            (self.tallies.iter()).map(|t| t.taken.load(Relaxed)).sum()
        }

        /// Events counted as lost, over every shard.
        fn lost(&self) -> u64 {
            (self.tallies.iter()).map(|t| t.dropped.load(Relaxed)).sum()
        }
    }

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    /// A counting waker and its count.
    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (count.clone(), Waker::from(count))
    }

    /// Polls `partition` once with `waker`.
    fn poll(partition: &mut InboxPartition, waker: &Waker) -> Poll<Option<Event>> {
        partition.poll_recv(&mut Context::from_waker(waker))
    }

    /// Polls `partition` once, with a waker that does nothing.
    fn poll_once(partition: &mut InboxPartition) -> Poll<Option<Event>> {
        poll(partition, Waker::noop())
    }

    /// The `skip`th client of shard `shard` whose events go to partition `k` of `n`.
    fn client_in(k: usize, n: usize, shard: u16, skip: usize) -> ClientId {
        (1..)
            .map(|sequence| ClientId::new(sequence, ShardId(shard)))
            .filter(|&client| partition_of(client, n) == k)
            .nth(skip)
            .expect("a client")
    }

    /// `client`'s text message `i`.
    fn text(client: ClientId, i: usize) -> Event {
        Event {
            client,
            kind: EventKind::Text(i.to_string()),
        }
    }

    /// What `client` does in the tests: registers, says `0` to `messages - 1`, leaves.
    fn life(client: ClientId, messages: usize) -> Vec<Event> {
        let mut events = vec![Event::registered(client)];
        events.extend((0..messages).map(|i| text(client, i)));
        events.push(Event::removed(client, RemoveReason::Disconnected));
        events
    }

    /// `clients`' lives, interleaved one event of each in turn.
    fn interleaved(clients: &[ClientId], messages: usize) -> Vec<Event> {
        let lives: Vec<_> = clients.iter().map(|&c| life(c, messages)).collect();
        (0..messages + 2)
            .flat_map(|i| lives.iter().map(move |life| life[i].clone()))
            .collect()
    }

    /// Reads every partition to its end, choosing which to poll next with a little generator
    /// seeded with `seed`; returns what each read, in order.
    fn read_all(mut partitions: Vec<InboxPartition>, seed: u64) -> Vec<Vec<Event>> {
        let mut read = vec![Vec::new(); partitions.len()];
        let mut ended = vec![false; partitions.len()];
        let mut x = seed;
        let mut idle = 0;
        while ended.contains(&false) {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let i = (x >> 33) as usize % partitions.len();
            match poll_once(&mut partitions[i]) {
                Poll::Ready(Some(event)) => read[i].push(event),
                Poll::Ready(None) => ended[i] = true,
                Poll::Pending => {
                    idle += 1;
                    assert!(idle < 100_000, "the partitions make no progress");
                }
            }
        }
        read
    }

    #[test]
    fn each_client_s_events_go_to_one_partition_in_the_order_the_shard_queued_them() {
        const N: usize = 3;
        for seed in 0..20 {
            let (mut shards, inbox) = Shards::new(2, 256);
            let clients: Vec<_> = (1..=12)
                .map(|s| ClientId::new(s, ShardId((s % 2) as u16)))
                .collect();
            for event in interleaved(&clients, 5) {
                shards.send(event);
            }
            shards.stop();
            let read = read_all(split(inbox, N, 4), seed);
            for &client in &clients {
                let (mut holders, mut got) = (Vec::new(), Vec::new());
                for (k, events) in read.iter().enumerate() {
                    let mine: Vec<_> = events.iter().filter(|e| e.client == client).collect();
                    if !mine.is_empty() {
                        holders.push(k);
                        got.extend(mine.into_iter().cloned());
                    }
                }
                assert_eq!(
                    holders,
                    [partition_of(client, N)],
                    "{client}: one partition"
                );
                assert_eq!(got, life(client, 5), "{client}: in order, seed {seed}");
            }
            let used = read.iter().filter(|events| !events.is_empty()).count();
            assert!(used >= 2, "12 clients spread over {used} partition(s)");
            assert_eq!(shards.taken(), 12 * 7);
            assert_eq!(shards.lost(), 0);
        }
    }

    #[test]
    fn one_partition_yields_exactly_what_the_inbox_yields() {
        let clients: Vec<_> = (1..=6)
            .map(|s| ClientId::new(s, ShardId((s % 3) as u16)))
            .collect();
        let events = interleaved(&clients, 4);
        let (mut shards, mut inbox) = Shards::new(3, 64);
        for event in events.clone() {
            shards.send(event);
        }
        shards.stop();
        let mut plain = Vec::new();
        while let Poll::Ready(Some(event)) =
            inbox.poll_recv(&mut Context::from_waker(Waker::noop()))
        {
            plain.push(event);
        }
        let (mut shards, inbox) = Shards::new(3, 64);
        for event in events {
            shards.send(event);
        }
        shards.stop();
        let mut partitions = inbox.partition(1);
        assert_eq!(partitions.len(), 1);
        let mut split = Vec::new();
        while let Poll::Ready(Some(event)) = poll_once(&mut partitions[0]) {
            split.push(event);
        }
        assert_eq!(split, plain);
        assert_eq!(poll_once(&mut partitions[0]), Poll::Ready(None));
    }

    #[test]
    fn zero_partitions_are_taken_as_one() {
        let (_shards, inbox) = Shards::new(1, 4);
        let partitions = inbox.partition(0);
        assert_eq!(partitions.len(), 1);
        assert_eq!(partitions[0].index(), 0);
    }

    #[test]
    fn a_stuck_partition_holds_the_others_back_only_once_its_buffer_is_full_and_nothing_is_lost() {
        const N: usize = 3;
        const BUFFER: usize = 2;
        let (mut shards, inbox) = Shards::new(1, 64);
        let mut partitions = split(inbox, N, BUFFER);
        // Partition 0's task never reads, until it does.
        let (s, a, b) = (
            client_in(0, N, 0, 0),
            client_in(1, N, 0, 0),
            client_in(2, N, 0, 0),
        );
        for event in [
            text(s, 0),
            text(a, 0),
            text(b, 0),
            text(s, 1),
            text(a, 1),
            text(s, 2),
            text(b, 1),
            text(a, 2),
        ] {
            shards.send(event);
        }
        let (woken_a, waker_a) = counter();
        let (woken_b, waker_b) = counter();
        let [stuck, for_a, for_b] = &mut partitions[..] else {
            unreachable!("three partitions")
        };
        // Until `s`'s buffer is full (`s 0`, `s 1`), the others get their events.
        assert_eq!(poll(for_a, &waker_a), Poll::Ready(Some(text(a, 0))));
        assert_eq!(poll(for_b, &waker_b), Poll::Ready(Some(text(b, 0))));
        assert_eq!(poll(for_a, &waker_a), Poll::Ready(Some(text(a, 1))));
        // `s 2` finds it full and is held: nobody pulls past it, though `b 1` is next.
        assert_eq!(poll(for_a, &waker_a), Poll::Pending);
        assert_eq!(poll(for_b, &waker_b), Poll::Pending);
        assert_eq!(
            shards.taken(),
            6,
            "`b 1` and `a 2` still in the shard's queue"
        );
        assert_eq!((woken_a.0.load(Relaxed), woken_b.0.load(Relaxed)), (0, 0));
        // Its task reads one: `s 2` takes the room, and the others are woken to pull again.
        assert_eq!(poll_once(stuck), Poll::Ready(Some(text(s, 0))));
        assert_eq!((woken_a.0.load(Relaxed), woken_b.0.load(Relaxed)), (1, 1));
        assert_eq!(poll(for_a, &waker_a), Poll::Ready(Some(text(a, 2))));
        assert_eq!(poll(for_b, &waker_b), Poll::Ready(Some(text(b, 1))));
        assert_eq!(poll_once(stuck), Poll::Ready(Some(text(s, 1))));
        assert_eq!(poll_once(stuck), Poll::Ready(Some(text(s, 2))));
        shards.stop();
        for partition in &mut partitions {
            assert_eq!(poll_once(partition), Poll::Ready(None));
        }
        assert_eq!((shards.taken(), shards.lost()), (8, 0));
    }

    #[test]
    fn every_partition_ends_once_the_inbox_has_ended_and_its_buffer_is_drained() {
        const N: usize = 3;
        let (mut shards, inbox) = Shards::new(2, 64);
        let mut partitions = split(inbox, N, 8);
        let clients: Vec<_> = (0..N).map(|k| client_in(k, N, (k % 2) as u16, 0)).collect();
        let (woken, waker) = counter();
        // Partition 2 waits on an empty inbox.
        assert_eq!(poll(&mut partitions[2], &waker), Poll::Pending);
        for &client in &clients {
            shards.send(text(client, 0));
            shards.send(text(client, 1));
        }
        assert!(woken.0.load(Relaxed) >= 1, "an event in a queue wakes it");
        shards.stop();
        // Partition 0 pulls everything, routes the rest, and ends.
        assert_eq!(
            poll_once(&mut partitions[0]),
            Poll::Ready(Some(text(clients[0], 0)))
        );
        assert_eq!(
            poll_once(&mut partitions[0]),
            Poll::Ready(Some(text(clients[0], 1)))
        );
        assert_eq!(poll_once(&mut partitions[0]), Poll::Ready(None));
        assert_eq!(
            poll_once(&mut partitions[0]),
            Poll::Ready(None),
            "and stays ended"
        );
        // The others still have their buffers to read first.
        for k in 1..N {
            let partition = &mut partitions[k];
            assert_eq!(poll_once(partition), Poll::Ready(Some(text(clients[k], 0))));
            assert_eq!(poll_once(partition), Poll::Ready(Some(text(clients[k], 1))));
            assert_eq!(poll_once(partition), Poll::Ready(None));
        }
    }

    #[test]
    fn the_end_of_the_inbox_wakes_every_waiting_partition() {
        let (mut shards, inbox) = Shards::new(1, 4);
        let mut partitions = split(inbox, 2, 4);
        let (woken, waker) = counter();
        assert_eq!(poll(&mut partitions[0], &waker), Poll::Pending);
        assert_eq!(poll(&mut partitions[1], &waker), Poll::Pending);
        shards.stop();
        assert!(woken.0.load(Relaxed) >= 2, "both woken");
        for partition in &mut partitions {
            assert_eq!(poll_once(partition), Poll::Ready(None));
        }
    }

    #[test]
    fn dropping_a_partition_counts_its_buffered_and_later_events_as_lost() {
        const N: usize = 2;
        let (mut shards, inbox) = Shards::new(1, 64);
        let mut partitions = split(inbox, N, 4);
        let (gone, kept) = (client_in(0, N, 0, 0), client_in(1, N, 0, 0));
        for i in 0..2 {
            shards.send(text(gone, i));
            shards.send(text(kept, i));
        }
        let mut kept_partition = partitions.pop().expect("partition 1");
        assert_eq!(
            poll_once(&mut kept_partition),
            Poll::Ready(Some(text(kept, 0)))
        );
        assert_eq!(
            poll_once(&mut kept_partition),
            Poll::Ready(Some(text(kept, 1)))
        );
        // `gone 0` and `gone 1` wait in partition 0's buffer.
        drop(partitions);
        assert_eq!(shards.lost(), 2);
        shards.send(text(gone, 2));
        shards.send(text(kept, 2));
        assert_eq!(
            poll_once(&mut kept_partition),
            Poll::Ready(Some(text(kept, 2)))
        );
        assert_eq!(shards.lost(), 3, "`gone 2` is lost as it is pulled");
        assert_eq!(shards.taken(), 6);
        // The last partition drops the inbox, which counts what is still queued.
        shards.send(text(kept, 3));
        drop(kept_partition);
        assert_eq!(shards.lost(), 4);
        assert!(
            shards.senders[0].try_send(text(kept, 4)).is_err(),
            "the queue is closed"
        );
        shards.stop();
    }

    #[test]
    fn dropping_a_stuck_partition_lets_the_others_pull_again() {
        const N: usize = 2;
        let (shards, inbox) = Shards::new(1, 64);
        let mut partitions = split(inbox, N, 1);
        let (stuck, other) = (client_in(0, N, 0, 0), client_in(1, N, 0, 0));
        for event in [text(stuck, 0), text(stuck, 1), text(other, 0)] {
            shards.send(event);
        }
        let mut other_partition = partitions.pop().expect("partition 1");
        let (woken, waker) = counter();
        // `stuck 0` fills its buffer, `stuck 1` is held.
        assert_eq!(poll(&mut other_partition, &waker), Poll::Pending);
        drop(partitions);
        assert_eq!(woken.0.load(Relaxed), 1, "woken: nothing is held now");
        assert_eq!(shards.lost(), 2, "the buffered and the held event");
        assert_eq!(
            poll_once(&mut other_partition),
            Poll::Ready(Some(text(other, 0)))
        );
    }

    #[test]
    fn a_poll_that_pulls_only_for_others_yields_after_its_budget() {
        const N: usize = 2;
        let (shards, inbox) = Shards::new(1, 2 * PULL_BUDGET);
        let mut partitions = split(inbox, N, 1);
        let gone = client_in(0, N, 0, 0);
        drop(partitions.remove(0));
        for i in 0..PULL_BUDGET + 1 {
            shards.send(text(gone, i));
        }
        let (woken, waker) = counter();
        assert_eq!(poll(&mut partitions[0], &waker), Poll::Pending);
        assert_eq!(woken.0.load(Relaxed), 1, "it wakes itself to come back");
        assert_eq!(shards.lost(), PULL_BUDGET as u64);
        assert_eq!(poll(&mut partitions[0], &waker), Poll::Pending);
        assert_eq!(shards.lost(), PULL_BUDGET as u64 + 1);
    }

    /// Shards on threads of their own, partitions on a multi-thread runtime, buffers of two:
    /// the partitions pull, route and hold for each other all the time, and every event is
    /// still read once, by its client's partition, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partitions_on_several_threads_read_everything_in_order_and_none_is_left_asleep() {
        const N: usize = 4;
        const CLIENTS: u64 = 16;
        const MESSAGES: usize = 2_000;
        let (mut shards, inbox) = Shards::new(2, 8);
        let partitions = split(inbox, N, 2);
        let readers: Vec<_> = (partitions.into_iter())
            .map(|mut partition| {
                tokio::spawn(async move {
                    let mut next: HashMap<ClientId, usize> = HashMap::new();
                    let mut read = 0;
                    while let Some(event) = partition.recv().await {
                        let EventKind::Text(text) = &event.kind else {
                            unreachable!("texts only")
                        };
                        let i = next.entry(event.client).or_default();
                        assert_eq!(*text, i.to_string(), "{}: in order", event.client);
                        assert_eq!(partition_of(event.client, N), partition.index());
                        *i += 1;
                        read += 1;
                        if read % 7 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    read
                })
            })
            .collect();
        let producers: Vec<_> = (std::mem::take(&mut shards.senders).into_iter())
            .enumerate()
            .map(|(shard, tx)| {
                std::thread::spawn(move || {
                    let clients: Vec<_> = (0..CLIENTS)
                        .map(|s| ClientId::new(s, ShardId(shard as u16)))
                        .collect();
                    for i in 0..MESSAGES {
                        for &client in &clients {
                            tx.blocking_send(text(client, i)).expect("the inbox reads");
                        }
                    }
                })
            })
            .collect();
        let mut read = 0;
        for reader in readers {
            read += tokio::time::timeout(std::time::Duration::from_secs(30), reader)
                .await
                .expect("every partition reads to its end")
                .expect("reader");
        }
        for producer in producers {
            producer.join().expect("producer");
        }
        let sent = 2 * CLIENTS as usize * MESSAGES;
        assert_eq!(read, sent);
        assert_eq!((shards.taken(), shards.lost()), (sent as u64, 0));
    }

    /// One event at a time, each read before the next is sent: every partition waits on an
    /// empty inbox when its event comes, so a wake-up lost in the race between a
    /// partition's last look and its sleep leaves the event unread, and the sender times
    /// out. With one partition nobody else can pull the event and pass it on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_waiting_on_an_idle_inbox_is_woken_by_the_next_event_every_time() {
        for n in [1, 3] {
            ping_pong(n, 5_000).await;
        }
    }

    /// Sends `rounds` events to `n` partitions read on the runtime, one at a time from a thread
    /// of its own, each read before the next is sent.
    async fn ping_pong(n: usize, rounds: usize) {
        let (mut shards, inbox) = Shards::new(1, 4);
        let (ack, acked) = std::sync::mpsc::sync_channel::<()>(rounds);
        let readers: Vec<_> = (split(inbox, n, 2).into_iter())
            .map(|mut partition| {
                let ack = ack.clone();
                tokio::spawn(async move {
                    while partition.recv().await.is_some() {
                        ack.send(()).expect("the sender waits for it");
                    }
                })
            })
            .collect();
        let clients: Vec<_> = (0..n).map(|k| client_in(k, n, 0, 0)).collect();
        let tx = shards.senders.pop().expect("a queue");
        let sender = std::thread::spawn(move || {
            for i in 0..rounds {
                tx.try_send(text(clients[i % n], i)).expect("room");
                acked
                    .recv_timeout(std::time::Duration::from_secs(10))
                    .unwrap_or_else(|_| panic!("{n} partitions: event {i} not read in 10 s"));
            }
        });
        tokio::task::spawn_blocking(move || sender.join())
            .await
            .expect("join")
            .expect("every event read");
        for reader in readers {
            reader.await.expect("reader");
        }
        assert_eq!((shards.taken(), shards.lost()), (rounds as u64, 0));
    }

    #[test]
    fn clients_spread_evenly_over_the_partitions_whatever_their_shard() {
        for n in [2, 3, 4, 8] {
            for shards in [1u16, 4] {
                let mut counts = HashMap::new();
                for sequence in 1..=1000 {
                    let client =
                        ClientId::new(sequence, ShardId((sequence % u64::from(shards)) as u16));
                    *counts.entry(partition_of(client, n)).or_insert(0usize) += 1;
                }
                let fair = 1000 / n;
                for k in 0..n {
                    let got = counts.get(&k).copied().unwrap_or(0);
                    assert!(
                        got > fair * 3 / 4 && got < fair * 5 / 4,
                        "{n} partitions, {shards} shard(s): partition {k} has {got} clients"
                    );
                }
            }
        }
    }
}
