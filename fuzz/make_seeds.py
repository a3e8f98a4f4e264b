#!/usr/bin/env python3
"""Writes the hand-made seed inputs under tests/fuzz_seeds/<target>/.

Each seed is laid out as the target's body in src/fuzzing/<target>.rs reads (see the docs of each
`shardcast::fuzzing::<target>`). Run from anywhere: `python3 fuzz/make_seeds.py`.
"""

import os
import struct
import zlib

# Under tests/, not fuzz/: cargo leaves a directory with its own Cargo.toml (fuzz/) out of the
# published package, and the seeds must be in it for `cargo test` to replay them there.
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fuzz_seeds")
MASK = b"\x37\xfa\x21\x3d"


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(data))


# --- client_frames: [limits, plan_len | pause << 3, plan.., stream..] ------------------------

def cf(opcode, payload=b"", fin=True, rsv=0, masked=True, ext=None):
    """A client frame; `ext` forces a 16- or 64-bit length field."""
    out = bytearray([(0x80 if fin else 0) | rsv | opcode])
    n = len(payload)
    m = 0x80 if masked else 0
    if ext == 64 or (ext is None and n > 0xFFFF):
        out += bytes([m | 127]) + struct.pack(">Q", n)
    elif ext == 16 or (ext is None and n > 125):
        out += bytes([m | 126]) + struct.pack(">H", n)
    else:
        out += bytes([m | n])
    if masked:
        out += MASK
        out += bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    else:
        out += payload
    return bytes(out)


def client(name, stream, limits=0, plan=(), pause=False):
    write("client_frames", name, bytes([limits, len(plan) | (8 if pause else 0)]) + bytes(plan) + stream)


client("text_whole", cf(1, b"Hello"))
client("binary_300_chunked", cf(2, bytes(range(256)) + b"x" * 44), plan=(0, 2, 6))
client("fragmented_text_with_ping",
       cf(1, b"Hel", fin=False) + cf(9, b"p") + cf(0, b"lo \xc3", fin=False) + cf(0, b"\xa9", fin=True),
       plan=(4,))
client("fragmented_binary_paused",
       cf(2, b"ab", fin=False) + cf(10, b"") + cf(0, b"cd", fin=False) + cf(0, b"e") + cf(2, b"next"),
       plan=(1, 9), pause=True)
client("bad_utf8_text", cf(1, b"ok\xff\xfe"))
client("bad_utf8_fragment", cf(1, b"a\xc3", fin=False) + cf(0, b"(", fin=True), plan=(2,))
client("utf8_cut_at_end", cf(1, b"a\xe2\x82", fin=False) + cf(0, b"", fin=True))
client("close_normal_then_junk", cf(1, b"hi") + cf(8, b"\x03\xe8bye") + b"\xff\xff junk")
client("close_empty", cf(8))
client("close_code_1005", cf(8, b"\x03\xed"))
client("close_code_1012", cf(8, b"\x03\xf4again"))
client("close_code_1014", cf(8, b"\x03\xf6gw"))
client("close_code_1012_bad_reason", cf(8, b"\x03\xf4!=7\xfa!"))
client("close_bad_code_bad_reason", cf(8, b"\x00\x00\xff"))
client("close_one_byte", cf(8, b"\x03"))
client("close_bad_reason", cf(8, b"\x03\xe8\xc3"))
client("ping_pong", cf(9, b"ping") + cf(10, b"pong") + cf(9, b"x" * 125))
client("unmasked", cf(1, b"plain", masked=False))
client("reserved_bits", cf(1, b"x", rsv=0x40))
client("unknown_opcode", cf(3, b"x") + cf(11))
client("stray_continuation", cf(0, b"x"))
client("interleaved_data", cf(1, b"a", fin=False) + cf(2, b"b"))
client("fragmented_ping", cf(9, b"x", fin=False))
client("long_ping", cf(9, b"y" * 126))
client("ping_extended_length", cf(9, b"short", ext=16))
client("frame_over_limit", cf(2, b"z" * 1100)[:40])
client("message_over_limit",
       b"".join(cf(2 if i == 0 else 0, b"m" * 1000, fin=(i == 4)) for i in range(5)), plan=(255, 255))
client("single_frame_over_message_limit", cf(2, b"q" * 1500), limits=2)
client("length_top_bit", bytes([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 5]) + MASK + b"abcde")
client("extended_64_bit_length", cf(2, b"w" * 20, ext=64), plan=(3,))
client("cut_mid_header", cf(1, b"complete") + cf(2, b"x" * 200)[:3])
client("cut_mid_payload", cf(1, b"complete") + cf(1, b"\xc3\xa9t\xc3\xa9 " * 10)[:30], limits=3)

# --- server_frames: items [kind, ...] ----------------------------------------------------------
# kind 0: [0, opcode index (text, binary, ping, pong, close, continuation), body]
# kind 1: [1, code u16 le, body] (encode_close)   kind 2: [2, body] (text)   kind 3: [3, body]
# body: [mode, len.., fill_len, fill..]; mode 0: len u8; 4: 126 + (len u16 le % 1024);
#       6: 65536 + len u8; 7 | i << 3: len = [0, 1, 2, 123, 124, 125, 126, 127, 65535][i]


def body(fill, n=None, mode=None):
    fill = bytes(fill)
    if n is None:
        n = len(fill)
    if mode is None:
        mode = 0 if n < 256 else 4
    if mode == 0:
        head = bytes([0, n])
    elif mode == 4:
        head = bytes([4]) + struct.pack("<H", n - 126)
    elif mode == 6:
        head = bytes([6, n - 65536])
    else:
        head = bytes([mode])
    return head + bytes([len(fill)]) + fill


write("server_frames", "text_binary_ping",
      bytes([0, 0]) + body(b"hello") + bytes([0, 1]) + body(b"\x00\x01\x02") + bytes([0, 2]) + body(b"p"))
write("server_frames", "payload_text_and_binary",
      bytes([2]) + body("héllo wörld".encode()) + bytes([3]) + body(b"abc", 300))
write("server_frames", "binary_64_bit_length", bytes([3]) + body(b"z", 65536 + 7, mode=6))
write("server_frames", "length_boundaries",
      b"".join(bytes([3]) + body(b"ab", mode=7 | (i << 3)) for i in range(9)))
write("server_frames", "close_with_reason", bytes([1]) + struct.pack("<H", 1000) + body(b"bye"))
write("server_frames", "close_long_multibyte_reason",
      bytes([1]) + struct.pack("<H", 4000) + body("é".encode(), 200))
write("server_frames", "close_disallowed_code", bytes([1]) + struct.pack("<H", 1005) + body(b"x"))
write("server_frames", "raw_text_bad_utf8", bytes([0, 0]) + body(b"\xff"))
write("server_frames", "raw_long_ping", bytes([0, 2]) + body(b"p", 126))
write("server_frames", "raw_continuation", bytes([0, 5]) + body(b"c"))
write("server_frames", "raw_close_one_byte", bytes([0, 4]) + body(b"\x03"))

# --- batch_envelope: arbitrary bytes -----------------------------------------------------------
write("batch_envelope", "two_bodies", b"\x02\0\0\0\x02\0\0\0ab\x01\0\0\0c")
write("batch_envelope", "empty", b"\0\0\0\0")
write("batch_envelope", "empty_bodies", b"\x03\0\0\0" + b"\0\0\0\0" * 3)
write("batch_envelope", "truncated_body", b"\x01\0\0\0\x05\0\0\0ab")
write("batch_envelope", "count_too_large", b"\xff\xff\xff\xff\0\0\0\0")
write("batch_envelope", "trailing", b"\x01\0\0\0\x01\0\0\0a!")
write("batch_envelope", "huge_length", b"\x01\0\0\0\xff\xff\xff\xffabc")
write("batch_envelope", "text", b"The quick brown fox jumps over the lazy dog")

# --- handshake: [budget (16 + 4 * b), cut (of 255), request..] ---------------------------------
REQ = (b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
       b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
       b"Sec-WebSocket-Version: 13\r\n")
write("handshake", "valid", bytes([200, 128]) + REQ + b"\r\n")
write("handshake", "valid_with_protocols_and_frame",
      bytes([200, 200]) + REQ + b"Origin: https://example.com\r\nSec-WebSocket-Protocol: chat, , superchat\r\n"
      b"Sec-WebSocket-Protocol: v2\r\n\r\n" + cf(1, b"early"))
write("handshake", "incomplete", bytes([200, 100]) + REQ)
write("handshake", "over_budget", bytes([10, 50]) + REQ + b"\r\n")
write("handshake", "http_1_0", bytes([200, 10]) + REQ.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n")
write("handshake", "post", bytes([200, 10]) + REQ.replace(b"GET", b"POST") + b"\r\n")
write("handshake", "no_upgrade", bytes([200, 10]) + REQ.replace(b"Upgrade: websocket\r\n", b"") + b"\r\n")
write("handshake", "bad_key", bytes([200, 10]) + REQ.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"short==") + b"\r\n")
write("handshake", "version_8", bytes([200, 10]) + REQ.replace(b"Version: 13", b"Version: 8") + b"\r\n")
write("handshake", "malformed", bytes([200, 10]) + b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
write("handshake", "too_many_headers",
      bytes([255, 10]) + b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(70)) + b"\r\n")

# --- shard_ops: [mode, cap, timeouts, auth, copy_max, write buffer, ops..] ----------------------
# mode: policy (0 Disconnect, 1 DropNewest, 2 DropOldest) | 4 auth deadline | 8 pings
#       | 16 inbox | (capacity - 1) << 5 | 128 the shard stops at the end
# ops: 0 admit [auth]; 1 close [reason, client]; 2 auth [on, client];
#      3 deliver [audience, (client), batch?, (n), payload..]; 4 send [payload, client];
#      5 groups [audience, (client), n-2, batches..]; 6 write [k, client]; 7 stall [client];
#      8 tick [steps]; 9 sweep; 10 end [client]; 11, 12, 20 read [n-1, (kind, len)*n, client];
#      13 shutdown; 14 subscribe [topic, client]; 15 unsubscribe [topic, client];
#      16 consume [n-1]; 17 room [client]; 18 the other shards full / not; 19 queue apart
# payload byte: len (or (len & 0x7f) * 8 with the top bit); audience: 1 auth only, 2 except,
# 8 topics (mask of t0..t3 in the high nibble)
# read kinds (% 9): 0, 1 text "b..." (the handler broadcasts it), 2 "i..." (to the inbox),
#      3 "x" (the handler closes with 4100), 4 "!" (the handler panics), 5 "n..." (nothing),
#      6 ping, 7 with the high nibble: 0 pong, 1 empty close, 2 unmasked (1002), c close
#      3990 + c; 8 close 1000
ADMIT, CLOSE, AUTH, DELIVER, SEND, GROUPS, WRITE, STALL, TICK, SWEEP, END = range(11)
READ, SHUTDOWN, SUBSCRIBE, UNSUBSCRIBE, CONSUME, ROOM, FULL, APART = 11, 13, 14, 15, 16, 17, 18, 19
BCAST, INBOX, XCLOSE, PANIC, NOTHING, PING, OTHER, CLOSE1000 = 0, 2, 3, 4, 5, 6, 7, 8
PONG, EMPTY_CLOSE, UNMASKED = 0x07, 0x17, 0x27


def read(client, *frames):
    """A read of (kind, len) frames by `client`."""
    out = [READ, len(frames) - 1]
    for kind, n in frames:
        out += [kind, n]
    return out + [client]


def shard(name, header, ops):
    write("shard_ops", name, bytes(header) + bytes(ops))


shard("audiences_and_writes", [0, 250, 0x33, 0, 64, 64], [
    ADMIT, 0, ADMIT, 1, ADMIT, 1,
    DELIVER, 0, 0, 10,            # to all
    DELIVER, 1, 0, 20,            # to authenticated
    DELIVER, 2, 1, 0, 30,         # to all but client 1
    DELIVER, 3, 2, 0, 0x85,       # to authenticated but client 2, 40 bytes
    SEND, 5, 0,
    WRITE, 3, 0, WRITE, 0xff, 0, WRITE, 0xff, 1, WRITE, 0xff, 2,
    AUTH, 1, 0, AUTH, 0, 1, DELIVER, 1, 0, 7,
    CLOSE, 0, 1, CLOSE, 9, 2, WRITE, 0xff, 2, END, 2,
])
shard("topics", [0, 250, 0x33, 0, 64, 64], [
    ADMIT, 0, ADMIT, 1, ADMIT, 1,
    SUBSCRIBE, 0, 0, SUBSCRIBE, 1, 0, SUBSCRIBE, 1, 1, SUBSCRIBE, 2, 0,
    SUBSCRIBE, 3, 0,              # a fourth topic: over the limit of 3
    SUBSCRIBE, 1, 0,              # again: a no-op
    DELIVER, 0x38, 0, 10,         # to t0 or t1: client 0 once, client 1
    DELIVER, 0x29, 0, 20,         # to t1, authenticated only: client 1
    DELIVER, 0x8A, 0, 0, 30,      # to t3 but client 0: nobody
    UNSUBSCRIBE, 1, 1, UNSUBSCRIBE, 1, 1,
    DELIVER, 0x28, 1, 2, 5, 6, 7, 8,  # a batch of 4 to t1: client 0
    WRITE, 0xff, 0, WRITE, 0xff, 1,
    CLOSE, 0, 0, SUBSCRIBE, 0, 0, # closed: not registered any more
    DELIVER, 0x18, 0, 7,          # to t0: nobody left
    SUBSCRIBE, 2, 9,              # an id never admitted
])
shard("slow_consumer_disconnect", [0, 10, 0x33, 0, 8, 16], [
    ADMIT, 0, ADMIT, 0,
    DELIVER, 0, 0, 30, WRITE, 4, 0,
    DELIVER, 0, 0, 30,            # client 0 has a started frame: evicted, keeps it
    *read(1, (PING, 2)),
    WRITE, 0xff, 0, WRITE, 0xff, 1,
])
shard("drop_newest", [1, 20, 0x33, 0, 255, 255], [
    ADMIT, 0, DELIVER, 0, 0, 50, DELIVER, 0, 0, 50, DELIVER, 0, 1, 1, 10, 10, 10,
    WRITE, 0xff, 0, DELIVER, 0, 0, 50,
])
shard("drop_oldest_with_pongs", [2, 30, 0x33, 0, 0, 0], [
    ADMIT, 0, DELIVER, 0, 0, 40, DELIVER, 0, 0, 40, WRITE, 5, 0,
    *read(0, (PING, 3)), WRITE, 40, 0,  # the pong goes right after the started frame
    DELIVER, 0, 0, 60, WRITE, 3, 0, *read(0, (PING, 0)),
    DELIVER, 0, 0, 0x92,          # 148 bytes, over the cap of 136: drops everything, then itself
    WRITE, 0xff, 0,
])
shard("heartbeat_and_touch", [0, 100, 0x13, 0, 64, 64], [
    ADMIT, 0, ADMIT, 0, DELIVER, 0, 0, 5,
    TICK, 4, *read(1, (NOTHING, 0)), SWEEP, TICK, 4, SWEEP, TICK, 1, SWEEP,
    WRITE, 0xff, 0, WRITE, 0xff, 1,
])
shard("auth_deadline", [4, 100, 0xff, 0x03, 64, 64], [
    ADMIT, 0, ADMIT, 1, ADMIT, 0, AUTH, 1, 2,
    TICK, 7, SWEEP, TICK, 1, SWEEP, WRITE, 0xff, 0,
])
shard("write_deadline", [0, 100, 0x1f, 0, 64, 64], [
    ADMIT, 0, ADMIT, 0, DELIVER, 0, 0, 20, STALL, 0, STALL, 1,
    TICK, 2, WRITE, 3, 1, TICK, 2, SWEEP,
    CLOSE, 0, 1, STALL, 1, TICK, 4, SWEEP, END, 0,
])
shard("shutdown_then_admit", [0, 100, 0x33, 0, 64, 64], [
    ADMIT, 0, DELIVER, 0, 0, 9, SHUTDOWN, ADMIT, 1, SEND, 3, 1, WRITE, 0xff, 0, WRITE, 0xff, 1,
    END, 0, ADMIT, 0,
])
shard("release_and_reuse_slots", [1, 60, 0x33, 0, 16, 32], [
    ADMIT, 0, ADMIT, 0, DELIVER, 0, 0, 9, END, 0, ADMIT, 1, DELIVER, 2, 0, 0, 9,
    SEND, 4, 0, CLOSE, 4, 1, WRITE, 0xff, 2,
])
# The lifecycle: waits, lingering, the inbox's order, and the end.
shard("inbox_order_and_waits", [0x10, 250, 0x33, 0, 64, 64], [  # an inbox of 1 event
    ADMIT, 0,                     # Registered queued: the inbox is full
    ADMIT, 0,                     # Registered held: client 1 waits
    *read(1, (INBOX, 2)),         # held: it reads nothing
    *read(0, (INBOX, 3), (BCAST, 4), (NOTHING, 1)),  # held; the rest waits with it
    CONSUME, 0, ROOM, 1,          # client 1's Registered queued: it reads again
    CONSUME, 0, ROOM, 0,          # client 0's message queued; its broadcast handed over
    CONSUME, 3, WRITE, 0xff, 0, WRITE, 0xff, 1,
    CLOSE, 0, 0, WRITE, 0xff, 0, WRITE, 0xff, 0,  # removed: close frame out, Removed
    END, 0, CONSUME, 3, END, 1, CONSUME, 3,
])
shard("close_while_waiting", [0x10, 250, 0x33, 0, 64, 64], [
    ADMIT, 0, ADMIT, 0,           # client 1 waits for its Registered
    CLOSE, 0, 1,                  # removed while it waits
    WRITE, 0xff, 1, WRITE, 0xff, 1,  # close frame out: it lingers, Removed not yet told
    *read(1, (NOTHING, 0)),       # it drains
    CONSUME, 0, ROOM, 1,          # the wait is over: Removed now
    APART, CONSUME, 3, END, 1,
    END, 0, APART, CONSUME, 3, APART, CONSUME, 3,
])
shard("relays_wait_and_end_while_waiting", [0, 250, 0x33, 0, 64, 64], [
    ADMIT, 0, ADMIT, 0,
    FULL,                         # the other shard's queue is full
    *read(0, (BCAST, 3), (BCAST, 2)),  # both delivered here; the relay waits
    *read(0, (NOTHING, 1)),       # it reads nothing meanwhile
    END, 0,                       # its socket ends: it ends after the wait
    WRITE, 0xff, 1, FULL, ROOM, 0,
    *read(1, (XCLOSE, 0), (NOTHING, 2)),  # the handler closes it: the rest is dropped
    WRITE, 0xff, 1, WRITE, 0xff, 1, END, 1,
])
shard("panic_and_protocol_errors", [0, 250, 0x33, 0, 64, 64], [
    ADMIT, 0, ADMIT, 0, ADMIT, 0,
    *read(0, (NOTHING, 1), (PANIC, 0), (BCAST, 1)),  # 1011; the rest is not handled
    *read(1, (UNMASKED, 1)),      # 1002
    *read(2, (OTHER | 0xF0, 0)),  # a close 4005: answered
    WRITE, 0xff, 0, WRITE, 0xff, 1, WRITE, 0xff, 2,
    WRITE, 0xff, 0, WRITE, 0xff, 1, WRITE, 0xff, 2,
    END, 0, END, 1, END, 2,
])
shard("shard_stops_with_events_owed", [0xB0, 250, 0x33, 0, 64, 64], [  # inbox of 2
    ADMIT, 0, ADMIT, 0, ADMIT, 0,  # the third waits
    *read(0, (INBOX, 1), (INBOX, 2)),
    CLOSE, 0, 1, WRITE, 0xff, 1, WRITE, 0xff, 1,  # its Removed is owed
    CONSUME, 0,
])


# --- broker_message: [broadcasts, limit / 64, frames..] ---------------------------------------

def sf(opcode, payload=b""):
    """A server frame (unmasked, final) in the shortest length encoding."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n <= 0xFFFF:
        head = bytes([0x80 | opcode, 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x80 | opcode, 127]) + struct.pack(">Q", n)
    return head + payload


write("broker_message", "one_text", bytes([1, 16]) + sf(1, b"hello"))
write("broker_message", "batch_of_three", bytes([1, 16]) + sf(1, b"a") + sf(2, b"\x00\x01") + sf(1))
write("broker_message", "joined_broadcasts", bytes([3, 16]) + sf(1, b"x") + sf(1, b"y") + sf(1, b"z"))
write("broker_message", "too_many_frames", bytes([1, 16]) + sf(1) * 1100)
write("broker_message", "non_minimal_length", bytes([1, 16]) + b"\x81\x7e\x00\x05hello")
write("broker_message", "over_the_limit", bytes([1, 1]) + sf(2, b"\x00" * 100))
write("broker_message", "bad_utf8", bytes([1, 16]) + sf(1, b"\xff\xfe"))
write("broker_message", "a_ping", bytes([1, 16]) + sf(9))
write("broker_message", "truncated", bytes([1, 16]) + sf(1, b"hello")[:4])
write("broker_message", "count_out_of_range", bytes([65, 16]) + sf(1, b"a"))


# --- deflate_offer: Sec-WebSocket-Extensions values, one per line ------------------------------

def offer(name, *values):
    write("deflate_offer", name, b"\n".join(v if isinstance(v, bytes) else v.encode() for v in values))


offer("chrome", "permessage-deflate; client_max_window_bits")
offer("firefox", "permessage-deflate")
offer("autobahn_server_window_9", "permessage-deflate; server_no_context_takeover; server_max_window_bits=9")
offer("autobahn_windows_15", "permessage-deflate; client_no_context_takeover; client_max_window_bits=15; "
      "server_max_window_bits=15")
offer("server_window_8_quoted", 'permessage-deflate; server_max_window_bits="8"; client_max_window_bits="10"')
offer("first_fit_in_one_header",
      "x-webkit-deflate-frame, permessage-deflate; bogus, permessage-deflate; server_max_window_bits=12, "
      "permessage-deflate")
offer("first_fit_across_headers", "permessage-deflate; server_max_window_bits",
      "foo; a=\"b\"; c, , Permessage-Deflate\t;\tSERVER_MAX_WINDOW_BITS = 11", "permessage-deflate")
offer("duplicates",
      "permessage-deflate; client_no_context_takeover; client_no_context_takeover, "
      "permessage-deflate; client_max_window_bits; client_max_window_bits=10")
offer("bad_numbers", "permessage-deflate; server_max_window_bits=016",
      "permessage-deflate; server_max_window_bits=16, permessage-deflate; server_max_window_bits=7",
      "permessage-deflate; client_max_window_bits=1a, permessage-deflate; server_max_window_bits=+9")
offer("malformed", 'permessage-deflate; server_max_window_bits="1\\0"', "permessage-deflate;;",
      '"permessage-deflate"', 'permessage-deflate; server_max_window_bits="10', b"permessage-deflate; \xff",
      "permessage-deflate server_no_context_takeover")

# --- compressed_frames: [limit u16 le, plan_len | pause << 3, plan.., items..] ------------------
# items: 0 deflated, 1 raw, 2 bomb, 3 plain: [kind, flags, n, cuts[n].., pings, content] (n + 1 frames)
#          deflated content: [level | (window - 8) << 4, unit_len, unit.., total u16 le]
#          (total: plaintext bytes, at most 256 past the limit; LONG adds 64 KiB)
#          raw content: [len u16 le, body..]; bomb: none; plain: [unit_len, unit.., total u16 le]
#        4 control: [4, which (0 ping, 1 pong, 2 close) | rsv << 2 (0 RSV1, 1 RSV2, 2 RSV3, 3+ none),
#          len, payload..]
#        5 bytes: [5, len, bytes..]
TEXT, KEEP_TRAILER, FINAL_BLOCK, RAW_TEXT, LONG = 0x01, 0x02, 0x04, 0x40, 0x80
RSV1_ON_CONTINUATION, RSV1_ON_PING, RSV2_ON_FIRST = 1 << 3, 2 << 3, 3 << 3  # one at most
AFTER = 0x80  # pings: one after the message


def deflated(flags=0, cuts=(), pings=0, level=6, window=15, unit=b"", total=0):
    return (bytes([0, flags, len(cuts)]) + bytes(cuts) + bytes([pings, level | (window - 8) << 4, len(unit)])
            + unit + struct.pack("<H", total))


def raw(body, flags=0, cuts=(), pings=0):
    return bytes([1, flags, len(cuts)]) + bytes(cuts) + bytes([pings]) + struct.pack("<H", len(body)) + body


def bomb(flags=0, cuts=(), pings=0):
    return bytes([2, flags, len(cuts)]) + bytes(cuts) + bytes([pings])


def plain(flags=0, cuts=(), pings=0, unit=b"", total=0):
    return bytes([3, flags, len(cuts)]) + bytes(cuts) + bytes([pings, len(unit)]) + unit + struct.pack("<H", total)


def control(which, payload=b"", rsv=3):
    return bytes([4, which | rsv << 2, len(payload)]) + payload


def raw_deflate(data, final=False):
    """A raw deflate stream (RFC 7692 7.2.1): sync-flushed, its 4-byte trailer removed (or, with
    `final`, a final block and the 0x00 of RFC 7692 7.2.3.4). The bytes depend on the zlib Python
    was built with; any valid stream serves."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    if final:
        return c.compress(data) + c.flush(zlib.Z_FINISH) + b"\x00"
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def compressed(name, limit, *items, plan=(), pause=False):
    write("compressed_frames", name,
          struct.pack("<H", limit) + bytes([len(plan) | (8 if pause else 0)]) + bytes(plan) + b"".join(items))


compressed("text_whole", 4096, deflated(TEXT, unit=b"Hello, compressed world! ", total=250))
compressed("binary_fragmented_with_pings_in_reads", 4096,
           deflated(0, cuts=(60, 128, 200), pings=0b101 | AFTER, level=1, window=9, unit=bytes(range(40)),
                    total=3000),
           plan=(0, 6, 30))
compressed("levels_windows_trailer_and_final_block", 0xFFFF,
           deflated(TEXT, level=0, unit=b"stored ", total=700),
           deflated(KEEP_TRAILER, cuts=(1,), level=15, window=8, unit=b"\x00\x01\x02\x03", total=60000),
           deflated(TEXT | FINAL_BLOCK, cuts=(100, 100), pings=0b10, level=9, unit="ünïcödé ".encode(), total=5000),
           deflated(FINAL_BLOCK | KEEP_TRAILER, total=0),
           deflated(TEXT, total=0), plan=(4, 200), pause=True)
compressed("inflated_over_the_limit", 1000, deflated(0, unit=b"z", total=5000))
compressed("compressed_size_over_the_limit", 100, deflated(0, level=0, unit=b"abc", total=99))
compressed("bomb", 1024, deflated(0, unit=b"ok", total=10), bomb(cuts=(128,), pings=1))
compressed("rsv1_on_continuation", 4096, deflated(TEXT | RSV1_ON_CONTINUATION, cuts=(50,), unit=b"abc", total=300))
compressed("rsv1_on_ping_inside", 4096, deflated(RSV1_ON_PING, cuts=(80, 160), pings=0b11, unit=b"x", total=400))
compressed("rsv2_on_first", 4096, deflated(0, unit=b"y", total=40), plain(TEXT | RSV2_ON_FIRST, unit=b"z", total=3))
compressed("rsv_on_controls", 4096, control(0, b"ping"), control(1, b"", rsv=2), control(0, b"late"))
compressed("rsv1_on_close", 4096, plain(TEXT, unit=b"plain", total=5), control(2, rsv=0))
compressed("raw_streams", 4096,
           raw(raw_deflate(b"hello hello hello hello"), TEXT),
           raw(raw_deflate(b"\x00\x01" * 300, final=True) + b"junk after the end", cuts=(30,)),
           raw(raw_deflate(b"a truncated stream, cut before its end " * 4)[:25]))
# "ok" is valid; block type 3 is reserved.
compressed("raw_corrupt", 4096, raw(raw_deflate(b"ok")), raw(b"\xff\xff"))
compressed("invalid_utf8_compressed_text", 4096, deflated(TEXT | RAW_TEXT, unit=b"ok\xff\xfe", total=12))
compressed("plain_and_compressed_then_close", 2048,
           plain(TEXT, cuts=(3, 9), pings=0b01, unit="é, ".encode(), total=40),
           deflated(0, unit=b"binary", total=1500), control(2), deflated(0, unit=b"after the close", total=20),
           plan=(2,))
# Hand-made frames after a compressed message: RSV1 on a continuation of a plain message.
compressed("bytes_rsv1_on_plain_continuation", 4096, deflated(TEXT, unit=b"first", total=30),
           bytes([5, 16]) + bytes([0x01, 0x82, 0, 0, 0, 0]) + b"ab" + bytes([0xC0, 0x82, 0, 0, 0, 0]) + b"cd")
# The input ends inside a message's cuts: fewer frames, the last one final (an empty raw body).
compressed("cuts_cut_by_the_end", 4096, bytes([1, 0, 7]) + b"\x10\x80")
