//! The `handshake` target: arbitrary bytes as an upgrade request, and our responses to it.

use super::reader::Reader;
use crate::wire::handshake::{self, HEADERS_MAX};

/// Arbitrary bytes as an HTTP upgrade request, under a small header budget.
///
/// Input: `[budget, cut, request..]`; the budget is `16 + 4 * budget` bytes (16..=1036).
///
/// Checks: [`handshake::parse`] never panics and returns `Ok(None)` only while the input is
/// shorter than the budget (a request longer than the budget is never "incomplete" forever);
/// `Ok(Some((req, n)))` has `n` within the input and the budget, a key of 22 base64 characters
/// and `==` that is the request's trimmed `Sec-WebSocket-Key`, at most [`HEADERS_MAX`] headers,
/// and [`handshake::accept_response`] for it (with and without the first offered subprotocol)
/// is a well-formed 101 response, and the negotiated subprotocol is one both sides named; `Err(e)` has a 4xx status and
/// [`handshake::reject_response`] for it is a well-formed response whose Content-Length is its
/// body. And a decision is final: the prefix of the request cut at `cut` (scaled to the input)
/// either is still incomplete or gets the same decision as the whole input.
pub fn handshake(data: &[u8]) {
    let mut r = Reader::new(data);
    let budget = 16 + 4 * usize::from(r.u8());
    let cut = usize::from(r.u8());
    let input = r.rest();
    let result = handshake::parse(input, budget);
    match &result {
        Ok(None) => assert!(input.len() < budget, "incomplete past the budget"),
        Ok(Some((req, n))) => {
            assert!(
                *n <= input.len() && *n <= budget,
                "{n} bytes of {}",
                input.len()
            );
            let key = req.key();
            assert_eq!(key.len(), 24);
            assert!(key.ends_with("=="));
            assert!(
                key[..22]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
            );
            let header = req.header("Sec-WebSocket-Key").map(<[u8]>::trim_ascii);
            assert_eq!(header, Some(key.as_bytes()));
            assert!(req.headers().count() <= HEADERS_MAX);
            let _ = req.origin();
            let _ = req.path();
            check_accept(key, None);
            if let Some(protocol) = req.protocols().next() {
                check_accept(key, Some(protocol));
            }
            // Negotiation answers only a name both sides have, the first of the server's list
            // that was offered, and refuses only a client that offered something.
            let supported = ["chat", "v2", "superchat"];
            match req.select_protocol(&supported) {
                Some(chosen) => assert!(
                    supported.iter().find(|s| req.protocols().any(|p| p == **s)) == Some(&chosen),
                    "{chosen:?}"
                ),
                None => assert!(req.protocols().all(|p| !supported.contains(&p))),
            }
            assert!(req.offers_protocols() || req.protocols().next().is_none());
        }
        Err(e) => {
            let status = e.status();
            assert!((400..500).contains(&status), "{e:?} answers {status}");
            check_reject(status, &e.to_string());
        }
    }
    let cut = input.len() * cut / 255;
    let early = handshake::parse(&input[..cut], budget);
    match (early, &result) {
        (Ok(None), _) => {}
        (Err(a), Err(b)) => assert_eq!(a, *b, "the decision on a prefix changed"),
        (Ok(Some((a, an))), Ok(Some((b, bn)))) => {
            assert_eq!((an, a.key(), a.path()), (*bn, b.key(), b.path()));
        }
        (early, _) => panic!("a prefix got {early:?}, the whole input {result:?}"),
    }
}

/// Checks the 101 response for `key` parses as HTTP/1.1 with the required headers.
fn check_accept(key: &str, protocol: Option<&str>) {
    let response = handshake::accept_response(key, protocol, None);
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut parsed = httparse::Response::new(&mut headers);
    assert_eq!(
        parsed.parse(&response),
        Ok(httparse::Status::Complete(response.len())),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert_eq!((parsed.version, parsed.code), (Some(1), Some(101)));
    let value = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    assert_eq!(value("upgrade"), Some(&b"websocket"[..]));
    assert_eq!(value("connection"), Some(&b"Upgrade"[..]));
    let accept = value("sec-websocket-accept").expect("Sec-WebSocket-Accept");
    // Base64 of a 20-byte SHA-1.
    assert_eq!(accept.len(), 28);
    assert!(accept.ends_with(b"="));
    assert_eq!(value("sec-websocket-protocol"), protocol.map(str::as_bytes));
}

/// Checks an error response parses with `status` and a Content-Length equal to its body.
fn check_reject(status: u16, body: &str) {
    let response = handshake::reject_response(status, body);
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = parsed.parse(&response) else {
        panic!("malformed: {}", String::from_utf8_lossy(&response));
    };
    assert_eq!(parsed.code, Some(status));
    let length = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| h.value);
    assert_eq!(length, Some(body.len().to_string().as_bytes()));
    assert_eq!(&response[head..], body.as_bytes());
    if status == 426 {
        assert!(
            parsed
                .headers
                .iter()
                .any(|h| h.name == "Sec-WebSocket-Version" && h.value == b"13")
        );
    }
}
