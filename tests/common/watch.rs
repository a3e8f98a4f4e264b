//! Healthy clients that watch a test: a publisher broadcasts steadily, and each of them must
//! receive every broadcast, in order, whatever the test does to other clients.

use super::{Client, END, Reader, WAIT, broadcast, eventually, spawn_reader, texts};
use shardcast::{Audience, Engine, Payload};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Broadcasts `n0`, `n1`, ... about once a millisecond until told to stop.
pub struct Publisher {
    sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub fn start(engine: &Engine) -> Publisher {
        let (sent, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (engine, count, halt) = (engine.clone(), sent.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(1));
            for i in 0.. {
                if halt.load(Ordering::Acquire) {
                    return;
                }
                interval.tick().await;
                engine
                    .broadcast(Payload::text(format!("n{i}")), Audience::ALL)
                    .await
                    .unwrap();
                count.store(i + 1, Ordering::Release);
            }
        });
        Publisher { sent, stop, task }
    }

    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Acquire)
    }

    /// Waits until `n` more broadcasts went out.
    pub async fn wait_for(&self, n: usize) {
        let target = self.sent() + n;
        eventually(|| self.sent() >= target).await;
    }

    /// Stops; returns how many broadcasts went out.
    pub async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Release);
        let Publisher { sent, task, .. } = self;
        tokio::time::timeout(WAIT, task)
            .await
            .expect("publisher stops")
            .expect("publisher");
        sent.load(Ordering::Acquire)
    }
}

/// Healthy clients, registered before the publisher starts, so that each must receive every
/// broadcast it issues, in order: they watch what a test does to other clients go unnoticed.
pub struct Watch {
    engine: Engine,
    readers: Vec<Reader>,
    publisher: Publisher,
}

impl Watch {
    /// Starts reading `clients` (already registered) and publishing; returns once broadcasts
    /// flow.
    pub async fn start(engine: &Engine, clients: Vec<Client>) -> Watch {
        let readers = clients.into_iter().map(spawn_reader).collect();
        let publisher = Publisher::start(engine);
        publisher.wait_for(10).await;
        Watch {
            engine: engine.clone(),
            readers,
            publisher,
        }
    }

    /// Lets a few more broadcasts go out, stops, and checks that every healthy client received
    /// every one of them in order. Returns the clients.
    pub async fn finish(self) -> Vec<Client> {
        let Watch {
            engine,
            readers,
            publisher,
        } = self;
        publisher.wait_for(10).await;
        let sent = publisher.stop().await;
        broadcast(&engine, END, Audience::ALL).await;
        let expected: Vec<String> = (0..sent).map(|i| format!("n{i}")).collect();
        let mut clients = Vec::with_capacity(readers.len());
        for (i, reader) in readers.into_iter().enumerate() {
            let (got, ws) = reader.until_end().await;
            let got = texts(&got);
            // Not assert_eq: thousands of lines would hide the one that matters.
            let first_difference = got.iter().zip(&expected).position(|(g, e)| g != e);
            assert!(
                got == expected,
                "healthy client {i} received {} of {sent} broadcasts; first difference at \
                 {first_difference:?}",
                got.len(),
            );
            clients.push(ws);
        }
        clients
    }
}
