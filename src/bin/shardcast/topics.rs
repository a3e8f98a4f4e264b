//! `shardcast serve --topics`: a pub/sub relay that any WebSocket client can speak (the
//! protocol is in [`crate::pubsub`]). A subscription past the server's limits, or a topic that is
//! not UTF-8, is closed with 1008 like any other protocol error; no other client notices.

use crate::pubsub::{self, Request};
use shardcast::wire::handshake::Request as Upgrade;
use shardcast::{Audience, Context, Decision, Handler, Incoming, Payload, Topic, close_code};
use std::net::SocketAddr;

/// The pub/sub relay of `serve --topics`.
#[derive(Debug)]
pub(crate) struct TopicRelay {
    /// Leave the publisher out of the audience.
    pub(crate) exclude_sender: bool,
}

/// A topic name from the wire, if it is UTF-8.
fn topic(bytes: &[u8]) -> Result<&str, &'static str> {
    std::str::from_utf8(bytes).map_err(|_| "topic is not UTF-8")
}

impl Handler for TopicRelay {
    fn on_upgrade(&self, request: &Upgrade<'_>, _peer: Option<SocketAddr>) -> Decision {
        let topics = pubsub::subscriptions(request.path()).and_then(|names| {
            names
                .iter()
                .map(|name| topic(name).map(Topic::new))
                .collect::<Result<Vec<Topic>, _>>()
        });
        match topics {
            // The engine refuses topics past its limits with 400.
            Ok(topics) => topics
                .into_iter()
                .fold(Decision::accept(), Decision::subscribe),
            Err(reason) => Decision::reject(400, reason),
        }
    }

    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        let (bytes, text) = match message {
            Incoming::Text(text) => (text.as_bytes(), true),
            Incoming::Binary(bytes) => (bytes, false),
        };
        let outcome = pubsub::parse(bytes, text).and_then(|request| match request {
            Request::Subscribe(name) => Ok(ctx.subscribe(topic(name)?).map_err(|e| e.to_string())),
            Request::Unsubscribe(name) => {
                ctx.unsubscribe(topic(name)?);
                Ok(Ok(()))
            }
            Request::Publish {
                topic: name,
                body_at,
            } => {
                let body = &bytes[body_at..];
                // The body of a text message is UTF-8: it was cut after an ASCII space.
                let payload = if text {
                    Payload::text(std::str::from_utf8(body).unwrap_or_default())
                } else {
                    Payload::binary(body)
                };
                let name = topic(name)?;
                // Refused by the engine anyway: answered, as a refused subscription is.
                if let Err(e) = ctx.check_topic(name) {
                    return Ok(Err(e.to_string()));
                }
                let mut audience = Audience::topic(name);
                if self.exclude_sender {
                    audience = audience.except(ctx.id());
                }
                ctx.broadcast(payload, audience);
                Ok(Ok(()))
            }
        });
        // A protocol error, or a subscription refused (its error names the limit).
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => ctx.close_with_reason(close_code::POLICY, &refused),
            Err(reason) => ctx.close_with_reason(close_code::POLICY, reason),
        }
    }
}
