//! Fan-out alone: one publisher broadcasts to in-memory clients, shardcast against the usual
//! tokio designs.
//!
//! Every client is a [`NullSink`]: its reads never complete and its writes accept every byte at
//! once, counting them. So no socket, handshake or parsing is measured, only getting a frame
//! from the publisher into every client's "socket".
//!
//! One group per (clients, shards): `fanout/clients=<n>/shards=<s>`, clients in {1 000,
//! 10 000, 100 000}, shards in {1, 2}. In each, for payload bodies of 32 B, 1 KiB and 16 KiB,
//! one iteration is: the publisher broadcasts [`ROUND`] pre-encoded binary frames, then waits
//! until every client's sink has taken every byte of every frame. Throughput is deliveries
//! (`ROUND` × clients). The contenders, all with `shards` threads doing the fan-out plus the
//! benchmark thread publishing, all writing the same frame bytes into the same sinks:
//!
//! - `shardcast`: an [`Engine`] with `shards` shards, clients added with
//!   [`Engine::register_with`] as already upgraded (decided by [`Engine::decide`], as an
//!   embedder's own HTTP server would), frames sent with [`Engine::broadcast`].
//! - `tokio_broadcast`: a multi-thread runtime with `shards` workers, one task per client
//!   receiving from a `tokio::sync::broadcast` channel and writing each frame with `write_all`.
//! - `naive_mutex_map`: the same runtime, one bounded `mpsc` channel and task per client, kept
//!   in an `Arc<Mutex<HashMap<u64, Sender<Bytes>>>>` that the publisher locks to `try_send`
//!   each frame to every client.
//!
//! Engines and runtimes are built once per group and contender, outside the timing, and shut
//! down after. Each contender checks at the end that exactly the expected bytes were written
//! (and, for shardcast, that nothing was dropped or evicted).
//!
//! Topics: one group per (subscribers, shards), `topics/subscribers=<n>/shards=<s>`, n in
//! {1, 100, 10 000} of [`TOPIC_CLIENTS`] clients, each client also subscribed to a topic of its
//! own (so the index is not trivially small). One iteration publishes [`ROUND`] 32-byte frames
//! to the topic and waits until its n subscribers' sinks took them. The contenders:
//!
//! - `shardcast`: [`Engine::subscribe`] and [`Audience::topic`].
//! - `naive_topic_map`: what most servers do, a `Mutex<HashMap<topic, HashSet<client>>>` beside
//!   the locked map of per-client channels of `naive_mutex_map`; the publisher locks both and
//!   `try_send`s to each member.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_main};
use crossbeam_utils::CachePadded;
use shardcast::wire::handshake::Request;
use shardcast::{Audience, Engine, Payload, Registration};
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, broadcast, mpsc};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Frames broadcast per iteration.
const ROUND: usize = 16;

/// Client counts measured.
const CLIENTS: [usize; 3] = [1_000, 10_000, 100_000];

/// Shard (worker thread) counts measured.
const SHARDS: [usize; 2] = [1, 2];

/// Payload body sizes measured, with their labels.
const SIZES: [(usize, &str); 3] = [(32, "32B"), (1024, "1KiB"), (16 * 1024, "16KiB")];

/// Frames each baseline channel holds: at least a round, so a healthy client never lags.
const CHANNEL_CAPACITY: usize = 4 * ROUND;

/// Longest a round may take before the benchmark gives up.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

/// The upgrade request every in-memory client made, as an embedder's HTTP server saw it.
fn upgrade_request() -> Request<'static> {
    const HEADERS: [(&str, &str); 4] = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    Request::new("/", HEADERS.iter().map(|(name, value)| (*name, *value)))
        .unwrap_or_else(|e| panic!("the upgrade request is valid: {e}"))
}

/// Bytes written by every sink of one contender, and who to wake when a round is complete.
#[derive(Debug)]
struct Progress {
    /// Bytes accepted by every sink so far.
    bytes: CachePadded<AtomicU64>,
    /// `bytes` value that completes the current round; `u64::MAX` between rounds.
    target: CachePadded<AtomicU64>,
    /// Woken by the write that reaches `target`.
    done: Notify,
}

impl Progress {
    fn new() -> Arc<Progress> {
        Arc::new(Progress {
            bytes: CachePadded::new(AtomicU64::new(0)),
            target: CachePadded::new(AtomicU64::new(u64::MAX)),
            done: Notify::new(),
        })
    }

    /// Counts `n` bytes written; wakes the publisher if they complete the round.
    fn wrote(&self, n: usize) {
        let total = self.bytes.fetch_add(n as u64, Ordering::AcqRel) + n as u64;
        if total >= self.target.load(Ordering::Acquire) {
            self.done.notify_one();
        }
    }

    /// Starts a round that writes `bytes` bytes; returns the total that completes it.
    fn arm(&self, bytes: u64) -> u64 {
        let target = self.bytes.load(Ordering::Acquire) + bytes;
        self.target.store(target, Ordering::Release);
        target
    }

    /// Waits until `target` bytes were written in all.
    ///
    /// # Panics
    ///
    /// After [`ROUND_TIMEOUT`], naming `who` and the shortfall.
    async fn wait(&self, target: u64, who: &str) {
        let reached = tokio::time::timeout(ROUND_TIMEOUT, async {
            loop {
                let notified = self.done.notified();
                if self.bytes.load(Ordering::Acquire) >= target {
                    return;
                }
                notified.await;
            }
        })
        .await;
        if reached.is_err() {
            panic!(
                "{who}: only {} of {target} bytes written after {ROUND_TIMEOUT:?}; a client \
                 lagged, was evicted, or a task died",
                self.bytes.load(Ordering::Acquire),
            );
        }
        self.target.store(u64::MAX, Ordering::Release);
    }
}

/// An in-memory client: reads never complete (and never wake: nothing will arrive), writes
/// take every byte at once and only count them.
#[derive(Debug)]
struct NullSink {
    /// Shared by every sink of one contender.
    progress: Arc<Progress>,
}

impl AsyncRead for NullSink {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for NullSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.progress.wrote(buf.len());
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = bufs.iter().map(|b| b.len()).sum();
        self.progress.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// One way of fanning frames out to `clients` sinks with `shards` threads.
trait Contender: Sized {
    /// The benchmark function name.
    const NAME: &'static str;

    /// Builds the contender and connects its clients (not timed).
    fn start(clients: usize, shards: usize) -> Self;

    /// Where the publisher runs: `block_on` from the benchmark thread.
    fn runtime(&self) -> &Runtime;

    /// The contender's byte counter.
    fn progress(&self) -> &Progress;

    /// Hands each frame of the round to every client, without waiting for the writes.
    async fn publish(&self, frame: &Payload);

    /// Checks that nothing was lost, then stops everything (not timed).
    fn stop(self);
}

/// Builds a multi-thread runtime with `workers` threads for a baseline.
fn worker_runtime(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("could not build a {workers}-thread runtime: {e}"))
}

/// shardcast: the engine under test.
#[derive(Debug)]
struct Shardcast {
    /// The benchmark thread's runtime, from which the engine is driven.
    publisher: Runtime,
    /// The engine, with every client registered.
    engine: Engine,
    /// Bytes written by the engine's clients.
    progress: Arc<Progress>,
}

impl Contender for Shardcast {
    const NAME: &'static str = "shardcast";

    fn start(clients: usize, shards: usize) -> Self {
        Shardcast::with_room(clients, shards, clients)
    }

    fn runtime(&self) -> &Runtime {
        &self.publisher
    }

    fn progress(&self) -> &Progress {
        &self.progress
    }

    async fn publish(&self, frame: &Payload) {
        for _ in 0..ROUND {
            self.engine
                .broadcast(frame.clone(), Audience::ALL)
                .await
                .unwrap_or_else(|e| panic!("shardcast: broadcast failed: {e}"));
        }
    }

    fn stop(self) {
        let stats = self.engine.stats().total;
        assert_eq!(stats.frames_dropped, 0, "shardcast dropped frames");
        assert_eq!(
            stats.evicted,
            shardcast::Evictions::default(),
            "shardcast evicted clients"
        );
        eprintln!(
            "shardcast: {} deliveries in {} write calls ({:.1} frames per write)",
            stats.deliveries,
            stats.write_syscalls,
            stats.deliveries as f64 / stats.write_syscalls.max(1) as f64,
        );
        self.publisher
            .block_on(self.engine.shutdown(Duration::from_secs(10)));
    }
}

impl Shardcast {
    /// An engine with `clients` sinks registered and room for `room` clients in all.
    fn with_room(clients: usize, shards: usize, room: usize) -> Self {
        let publisher = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("could not build the publisher runtime: {e}"));
        let progress = Progress::new();
        let engine = publisher.block_on(async {
            let engine = Engine::builder()
                .shards(shards)
                .clients_max(room.max(1024))
                // The sinks never send: keep the heartbeat from closing them mid-run.
                .heartbeat_timeout(Duration::from_secs(24 * 3600))
                .sweep_interval(Duration::from_secs(3600))
                .close_timeout(Duration::from_millis(1))
                .build()
                .unwrap_or_else(|e| panic!("could not build the engine: {e}"));
            let request = upgrade_request();
            for _ in 0..clients {
                let sink = NullSink {
                    progress: progress.clone(),
                };
                let accepted = engine
                    .decide(&request, None)
                    .unwrap_or_else(|e| panic!("the engine accepts the request: {e}"));
                engine
                    .register_with(sink, Registration::upgraded(accepted))
                    .await
                    .unwrap_or_else(|e| panic!("could not register a client: {e}"));
            }
            // A client is admitted when its shard first runs its task; a broadcast before that
            // would miss it.
            let deadline = Instant::now() + ROUND_TIMEOUT;
            while engine.client_count() < clients {
                assert!(
                    Instant::now() < deadline,
                    "only {} of {clients} clients admitted after {ROUND_TIMEOUT:?}",
                    engine.client_count(),
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            engine
        });
        Shardcast {
            publisher,
            engine,
            progress,
        }
    }
}

/// Baseline: one task per client receiving from a `tokio::sync::broadcast` channel.
#[derive(Debug)]
struct TokioBroadcast {
    /// The worker threads running the client tasks; the publisher blocks on it too.
    runtime: Runtime,
    /// The relay channel; dropped at `stop`, which ends every client task.
    tx: broadcast::Sender<Bytes>,
    /// Bytes written by the client tasks.
    progress: Arc<Progress>,
}

impl Contender for TokioBroadcast {
    const NAME: &'static str = "tokio_broadcast";

    fn start(clients: usize, shards: usize) -> Self {
        let runtime = worker_runtime(shards);
        let progress = Progress::new();
        let (tx, _) = broadcast::channel::<Bytes>(CHANNEL_CAPACITY);
        for _ in 0..clients {
            let mut rx = tx.subscribe();
            let mut sink = NullSink {
                progress: progress.clone(),
            };
            runtime.spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(frame) => sink
                            .write_all(&frame)
                            .await
                            .unwrap_or_else(|e| panic!("tokio_broadcast: write failed: {e}")),
                        Err(broadcast::error::RecvError::Closed) => return,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            panic!("tokio_broadcast: a client lagged by {n} frames")
                        }
                    }
                }
            });
        }
        TokioBroadcast {
            runtime,
            tx,
            progress,
        }
    }

    fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    fn progress(&self) -> &Progress {
        &self.progress
    }

    async fn publish(&self, frame: &Payload) {
        for _ in 0..ROUND {
            self.tx
                .send(frame.frame().clone())
                .unwrap_or_else(|_| panic!("tokio_broadcast: no receivers"));
        }
    }

    fn stop(self) {
        drop(self.tx);
        self.runtime.shutdown_timeout(Duration::from_secs(10));
    }
}

/// Baseline: a locked map of bounded per-client channels, one task per client.
#[derive(Debug)]
struct NaiveMutexMap {
    /// The worker threads running the client tasks; the publisher blocks on it too.
    runtime: Runtime,
    /// Every client's channel, by id; the publisher locks it for each frame.
    clients: Arc<Mutex<HashMap<u64, mpsc::Sender<Bytes>>>>,
    /// Bytes written by the client tasks.
    progress: Arc<Progress>,
}

impl Contender for NaiveMutexMap {
    const NAME: &'static str = "naive_mutex_map";

    fn start(clients: usize, shards: usize) -> Self {
        let runtime = worker_runtime(shards);
        let progress = Progress::new();
        let mut map = HashMap::with_capacity(clients);
        for id in 0..clients as u64 {
            let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CAPACITY);
            let mut sink = NullSink {
                progress: progress.clone(),
            };
            runtime.spawn(async move {
                while let Some(frame) = rx.recv().await {
                    sink.write_all(&frame)
                        .await
                        .unwrap_or_else(|e| panic!("naive_mutex_map: write failed: {e}"));
                }
            });
            map.insert(id, tx);
        }
        NaiveMutexMap {
            runtime,
            clients: Arc::new(Mutex::new(map)),
            progress,
        }
    }

    fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    fn progress(&self) -> &Progress {
        &self.progress
    }

    async fn publish(&self, frame: &Payload) {
        for _ in 0..ROUND {
            let clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
            for (id, tx) in clients.iter() {
                if let Err(e) = tx.try_send(frame.frame().clone()) {
                    panic!("naive_mutex_map: client {id} refused a frame: {e}");
                }
            }
        }
    }

    fn stop(self) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.runtime.shutdown_timeout(Duration::from_secs(10));
    }
}

/// One round: publish, then wait until every byte of every delivery was written.
async fn round<C: Contender>(contender: &C, frame: &Payload, round_bytes: u64) {
    let target = contender.progress().arm(round_bytes);
    contender.publish(frame).await;
    contender.progress().wait(target, C::NAME).await;
}

/// Measures `C` on every payload size, in `group`, with `clients` clients and `shards` threads.
fn run<C: Contender>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    clients: usize,
    shards: usize,
) {
    let contender = C::start(clients, shards);
    let mut expected = 0u64;
    for (size, label) in SIZES {
        let frame = Payload::binary(vec![0x5A; size]);
        let round_bytes = (ROUND * clients * frame.len()) as u64;
        let mut rounds = 0u64;
        group.bench_function(BenchmarkId::new(C::NAME, label), |b| {
            b.to_async(contender.runtime()).iter(|| {
                rounds += 1;
                round(&contender, &frame, round_bytes)
            });
        });
        expected += rounds * round_bytes;
    }
    let written = contender.progress().bytes.load(Ordering::Acquire);
    assert_eq!(
        written,
        expected,
        "{}: sinks took {written} bytes, expected {expected}",
        C::NAME
    );
    contender.stop();
}

fn fanout(c: &mut Criterion) {
    for clients in CLIENTS {
        for shards in SHARDS {
            let mut group = c.benchmark_group(format!("fanout/clients={clients}/shards={shards}"));
            // A round of the naive baseline with 100 000 clients takes over a second: criterion
            // then runs its minimum (10 rounds and one of warm-up), past this time, and warns.
            let measure = if clients >= 100_000 {
                Duration::from_secs(2)
            } else {
                Duration::from_millis(1500)
            };
            group
                .sampling_mode(SamplingMode::Flat)
                .sample_size(10)
                .warm_up_time(Duration::from_millis(200))
                .measurement_time(measure)
                .throughput(Throughput::Elements((ROUND * clients) as u64));
            run::<Shardcast>(&mut group, clients, shards);
            run::<TokioBroadcast>(&mut group, clients, shards);
            run::<NaiveMutexMap>(&mut group, clients, shards);
            group.finish();
        }
    }
}

/// Every benchmark of this file, with the settings given on the command line.
///
/// Clients of every topic benchmark.
const TOPIC_CLIENTS: usize = 10_000;

/// Subscriber counts of the topic the benchmark publishes to.
const TOPIC_SUBSCRIBERS: [usize; 3] = [1, 100, 10_000];

/// The topic every subscriber is on; each client is also on `u<i>`, its own.
const HOT: &str = "hot";

/// shardcast with topics: `TOPIC_CLIENTS` sinks, the first `subscribers` of them on [`HOT`].
struct ShardcastTopic {
    inner: Shardcast,
    topic: shardcast::Topic,
}

impl ShardcastTopic {
    fn start(subscribers: usize, shards: usize) -> Self {
        let inner = Shardcast::with_room(0, shards, TOPIC_CLIENTS);
        let topic = shardcast::Topic::new(HOT);
        inner.publisher.block_on(async {
            let request = upgrade_request();
            for i in 0..TOPIC_CLIENTS {
                let sink = NullSink {
                    progress: inner.progress.clone(),
                };
                let accepted = inner
                    .engine
                    .decide(&request, None)
                    .unwrap_or_else(|e| panic!("the engine accepts the request: {e}"));
                let id = inner
                    .engine
                    .register_with(sink, Registration::upgraded(accepted))
                    .await
                    .unwrap_or_else(|e| panic!("could not register a client: {e}"));
                // `subscribe` waits for the shard, which admits the client first (its
                // `Register` command comes before in the same queue).
                if i < subscribers {
                    inner.engine.subscribe(id, &topic).await.expect("subscribe");
                }
                inner
                    .engine
                    .subscribe(id, format!("u{i}"))
                    .await
                    .expect("subscribe");
            }
        });
        ShardcastTopic { inner, topic }
    }

    async fn publish(&self, frame: &Payload) {
        for _ in 0..ROUND {
            self.inner
                .engine
                .broadcast(frame.clone(), Audience::topic(&self.topic))
                .await
                .unwrap_or_else(|e| panic!("shardcast: publish failed: {e}"));
        }
    }
}

/// The usual design: topic -> member set behind a lock, per-client channels behind another.
struct NaiveTopicMap {
    inner: NaiveMutexMap,
    topics: Arc<Mutex<HashMap<String, std::collections::HashSet<u64>>>>,
}

impl NaiveTopicMap {
    fn start(subscribers: usize, shards: usize) -> Self {
        let inner = NaiveMutexMap::start(TOPIC_CLIENTS, shards);
        let mut topics: HashMap<String, std::collections::HashSet<u64>> = HashMap::new();
        for i in 0..TOPIC_CLIENTS as u64 {
            if (i as usize) < subscribers {
                topics.entry(HOT.to_owned()).or_default().insert(i);
            }
            topics.entry(format!("u{i}")).or_default().insert(i);
        }
        NaiveTopicMap {
            inner,
            topics: Arc::new(Mutex::new(topics)),
        }
    }

    async fn publish(&self, frame: &Payload) {
        for _ in 0..ROUND {
            let topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
            let clients = self
                .inner
                .clients
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for id in topics.get(HOT).into_iter().flatten() {
                if let Some(tx) = clients.get(id)
                    && let Err(e) = tx.try_send(frame.frame().clone())
                {
                    panic!("naive_topic_map: client {id} refused a frame: {e}");
                }
            }
        }
    }
}

fn topics(c: &mut Criterion) {
    let frame = Payload::binary(vec![0x5A; 32]);
    for subscribers in TOPIC_SUBSCRIBERS {
        for shards in SHARDS {
            let mut group =
                c.benchmark_group(format!("topics/subscribers={subscribers}/shards={shards}"));
            group
                .sampling_mode(SamplingMode::Flat)
                .sample_size(10)
                .warm_up_time(Duration::from_millis(200))
                .measurement_time(Duration::from_millis(1500))
                .throughput(Throughput::Elements((ROUND * subscribers) as u64));
            let round_bytes = (ROUND * subscribers * frame.len()) as u64;

            let shardcast = ShardcastTopic::start(subscribers, shards);
            let progress = shardcast.inner.progress.clone();
            group.bench_function(BenchmarkId::new("shardcast", "32B"), |b| {
                b.to_async(&shardcast.inner.publisher).iter(|| async {
                    let target = progress.arm(round_bytes);
                    shardcast.publish(&frame).await;
                    progress.wait(target, "shardcast").await;
                });
            });
            assert_eq!(
                progress.bytes.load(Ordering::Acquire) % round_bytes,
                0,
                "shardcast: only the topic's subscribers receive whole rounds"
            );
            shardcast.inner.stop();

            let naive = NaiveTopicMap::start(subscribers, shards);
            let progress = naive.inner.progress.clone();
            group.bench_function(BenchmarkId::new("naive_topic_map", "32B"), |b| {
                b.to_async(&naive.inner.runtime).iter(|| async {
                    let target = progress.arm(round_bytes);
                    naive.publish(&frame).await;
                    progress.wait(target, "naive_topic_map").await;
                });
            });
            naive.inner.stop();
            group.finish();
        }
    }
}

/// Written out rather than with `criterion_group!`, whose `pub fn` cannot carry a doc.
fn benches() {
    // Fewer bootstrap resamples than the default 100 000: analysis time adds up on a shared
    // 2-core machine, and the intervals barely move.
    let mut criterion = Criterion::default()
        .nresamples(10_000)
        .configure_from_args();
    fanout(&mut criterion);
    topics(&mut criterion);
}

criterion_main!(benches);
