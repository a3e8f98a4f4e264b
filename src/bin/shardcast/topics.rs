//! `shardcast serve --topics`: a pub/sub relay that any WebSocket client can speak.
//!
//! - `ws://HOST:PORT/?sub=T1&sub=T2` subscribes at upgrade (topic names URL-encoded: `%XX`,
//!   and `+` for a space, as a browser's `URLSearchParams` writes them).
//! - A text message `sub T` or `unsub T` subscribes or unsubscribes (`T`: the rest of the
//!   message, spaces included).
//! - A text or binary message `pub T BODY` publishes `BODY` (every byte after the second
//!   space) to the subscribers of `T` (no spaces in `T`) with the message's opcode, the sender
//!   included if it is subscribed, unless `--exclude-sender`.
//! - Anything else, and a subscription past the server's limits, closes the client with 1008
//!   and a reason; no other client notices.

use shardcast::wire::handshake::Request;
use shardcast::{Audience, Context, Decision, Handler, Incoming, Payload, Topic, close_code};
use std::borrow::Cow;
use std::net::SocketAddr;

/// The pub/sub relay of `serve --topics`.
#[derive(Debug)]
pub(crate) struct TopicRelay {
    /// Leave the publisher out of the audience.
    pub(crate) exclude_sender: bool,
}

/// What a client asked for in one message.
#[derive(Debug, PartialEq, Eq)]
enum Command<'a> {
    Subscribe(&'a str),
    Unsubscribe(&'a str),
    Publish { topic: &'a str, body: &'a [u8] },
}

/// Reads one message of the protocol; the error is the close reason.
fn parse(message: Incoming<'_>) -> Result<Command<'_>, &'static str> {
    let (bytes, text) = match message {
        Incoming::Text(text) => (text.as_bytes(), true),
        Incoming::Binary(bytes) => (bytes, false),
    };
    let (verb, rest) = split_space(bytes).ok_or("expected `sub T`, `unsub T` or `pub T BODY`")?;
    match verb {
        b"pub" => {
            let (topic, body) = split_space(rest).ok_or("expected `pub TOPIC BODY`")?;
            let topic = std::str::from_utf8(topic).map_err(|_| "topic is not UTF-8")?;
            Ok(Command::Publish { topic, body })
        }
        // `rest` of a text message is UTF-8: it was cut after an ASCII space.
        b"sub" if text => Ok(Command::Subscribe(utf8(rest))),
        b"unsub" if text => Ok(Command::Unsubscribe(utf8(rest))),
        b"sub" | b"unsub" => Err("`sub` and `unsub` must be text messages"),
        _ => Err("unknown command: expected `sub`, `unsub` or `pub`"),
    }
}

/// The bytes before and after the first space.
fn split_space(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == b' ')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// Bytes known to be UTF-8 (the tail of a text message cut at an ASCII byte).
fn utf8(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// The `sub` parameters of a request target's query, decoded; `Err` names one that is not
/// UTF-8 once decoded.
fn subscriptions(path: &str) -> Result<Vec<Topic>, String> {
    let Some((_, query)) = path.split_once('?') else {
        return Ok(Vec::new());
    };
    let mut topics = Vec::new();
    for pair in query.split('&') {
        let Some(value) = pair.strip_prefix("sub=") else {
            continue;
        };
        let plus_as_space: Cow<'_, str> = if value.contains('+') {
            value.replace('+', " ").into()
        } else {
            value.into()
        };
        let name = percent_encoding::percent_decode_str(&plus_as_space)
            .decode_utf8()
            .map_err(|_| format!("topic {value:?} is not UTF-8 once decoded"))?;
        topics.push(Topic::new(&*name));
    }
    Ok(topics)
}

impl Handler for TopicRelay {
    fn on_upgrade(&self, request: &Request<'_>, _peer: Option<SocketAddr>) -> Decision {
        match subscriptions(request.path()) {
            // The engine refuses topics past its limits with 400.
            Ok(topics) => topics
                .into_iter()
                .fold(Decision::accept(), Decision::subscribe),
            Err(reason) => Decision::reject(400, reason),
        }
    }

    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        let binary = matches!(message, Incoming::Binary(_));
        match parse(message) {
            Ok(Command::Subscribe(topic)) => {
                if let Err(e) = ctx.subscribe(topic) {
                    ctx.close_with_reason(close_code::POLICY, &e.to_string());
                }
            }
            Ok(Command::Unsubscribe(topic)) => {
                ctx.unsubscribe(topic);
            }
            Ok(Command::Publish { topic, body }) => {
                let payload = if binary {
                    Payload::binary(body)
                } else {
                    Payload::text(utf8(body))
                };
                let mut audience = Audience::topic(topic);
                if self.exclude_sender {
                    audience = audience.except(ctx.id());
                }
                ctx.broadcast(payload, audience);
            }
            Err(reason) => ctx.close_with_reason(close_code::POLICY, reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_into_commands_or_a_close_reason() {
        let text = |s| parse(Incoming::Text(s));
        assert_eq!(text("sub a b"), Ok(Command::Subscribe("a b")));
        assert_eq!(text("unsub news"), Ok(Command::Unsubscribe("news")));
        assert_eq!(
            text("pub news hello world"),
            Ok(Command::Publish {
                topic: "news",
                body: b"hello world"
            })
        );
        assert_eq!(
            text("pub news "),
            Ok(Command::Publish {
                topic: "news",
                body: b""
            })
        );
        assert!(text("pub news").is_err(), "no body separator");
        assert!(text("hello").is_err());
        assert!(text("subscribe x").is_err());
        assert!(parse(Incoming::Binary(b"sub x")).is_err());
        assert!(parse(Incoming::Binary(b"pub \xff x")).is_err());
        assert_eq!(
            parse(Incoming::Binary(b"pub t \x00\xff")),
            Ok(Command::Publish {
                topic: "t",
                body: b"\x00\xff"
            })
        );
    }

    #[test]
    fn sub_parameters_are_url_decoded() {
        let topics = subscriptions("/?x=1&sub=a%2Fb&sub=c+d&sub=%C3%A9").unwrap();
        let names: Vec<&str> = topics.iter().map(Topic::as_str).collect();
        assert_eq!(names, ["a/b", "c d", "é"]);
        assert!(subscriptions("/").unwrap().is_empty());
        assert!(subscriptions("/?sub=%FF").is_err());
    }
}
