//! A first end-to-end check: broadcasts reach every client over real loopback sockets.
mod common;
use common::*;
use shardcast::{Audience, Payload};
use std::time::Duration;

#[tokio::test]
async fn every_client_receives_each_broadcast_once_and_in_order() {
    let (engine, addr) = start(builder().shards(2)).await;
    let mut clients = connect_many(&engine, addr, 6).await;
    eventually(|| engine.client_count() == 6).await;
    for i in 0..100 {
        engine
            .broadcast(Payload::text(format!("m{i}")), Audience::ALL)
            .await
            .unwrap();
    }
    for c in clients.iter_mut() {
        for i in 0..100 {
            assert_eq!(next_text(c).await, format!("m{i}"));
        }
    }
    engine.shutdown(Duration::from_secs(2)).await;
    for c in clients.iter_mut() {
        assert_eq!(close_code(c).await, Some(1001));
    }
}
