// topics-load: a load client for the topics protocol of `shardcast serve --topics` (and of its
// baselines, baselines/bun-relay.js --topics and baselines/uws/topics.cpp), in plain C: one
// thread, epoll, no dependency but zlib (for -z). Not part of CI; baselines/topics-compare.sh
// drives it.
//
//   gcc -O2 -o topics-load baselines/topics-load.c -lz
//   topics-load [-h HOST] [-p PORT] [-c CLIENTS] [-k TOPICS] [-s SUBS] [-w WINDOW]
//               [-b PAYLOAD] [-d SECONDS] [-u WARMUP] [-P SERVER_PID] [-B] [-J] [-z] [-q]
//
//   -h HOST     server address, an IPv4 literal (default 127.0.0.1)
//   -p PORT     server port (default 9001)
//   -c CLIENTS  subscriber connections C (default 1000)
//   -k TOPICS   topics K, named t0 .. t{K-1} (default 100)
//   -s SUBS     subscriptions per client S, at most K (default 1)
//   -w WINDOW   publications in flight W: published, not yet delivered to every subscriber
//               (default 256)
//   -b PAYLOAD  bytes of each publication's BODY (default 16); BODY is the publication's
//               sequence number in decimal, a space, then `x` up to PAYLOAD bytes (longer than
//               PAYLOAD when the number needs it)
//   -J          BODY is instead a JSON document of about PAYLOAD bytes (at most PAYLOAD from 256
//               on; below that, one level a side and no trade, ~180): an order book and trades,
//               `{"seq":N,"type":"book","symbol":"ETH-USD","ts":...,"bids":[{"px":2345.67,
//               "qty":1.2345,"orders":3},...],"asks":[...],"trades":[{"id":...,"px":...,"qty":...,
//               "side":"buy","ts":...},...]}`, its numbers drawn from a PRNG seeded by N, so
//               that it compresses as real JSON does (about 3x with zlib), not as `x` padding
//   -d SECONDS  measured seconds (default 10), after the warmup
//   -u WARMUP   warmup seconds, publishing but not measured (default 1)
//   -P PID      the server's pid: sample its CPU time (/proc/PID/stat utime+stime, every
//               thread) and its VmRSS at the start and end of the measured window
//   -B          publish binary messages (default: text)
//   -z          permessage-deflate (RFC 7692): every connection offers it as Chrome does,
//               `Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits`; the
//               101 must accept it with server_no_context_takeover (an answer without it, one
//               that declines, or one with an extension or parameter that is unknown,
//               duplicated or malformed is an error); RSV1 messages are inflated (raw
//               inflate, windowBits -15, 00 00 ff ff appended, inflateReset per message) and
//               checked as plain ones are. The publisher's own frames stay uncompressed (RFC
//               7692 allows it).
//   -q          no progress lines on stderr
//
// Client i subscribes at upgrade (`/?sub=...`) to t{(i*S + j) % K} for j < S, so each topic's
// subscriber count is known in advance. One more connection, subscribed to nothing, publishes
// `pub t{n % K} BODY` (masked client frames) for n = 0, 1, ... and keeps at most W publications
// incomplete; a publication is complete when every subscriber of its topic has received it.
// Every delivery is checked: its sequence number must be in flight, its topic one the receiving
// client subscribed to, its opcode the published one and its content exactly the published
// BODY (kept per publication in flight), and each client must see increasing sequence numbers
// (one publisher, so every server here delivers in order); a violation is an error. So is RSV1
// without -z, on a control frame or on a continuation, RSV2 or RSV3, a compressed message that
// does not inflate, or a fragmented message interleaved with another (fragments are
// reassembled). Server pings are answered; a close from the server, an EOF or a reset is a
// failure.
//
// With -z the client inflates each distinct compressed message once, so that it measures the
// server and not zlib: per publication in flight it keeps the compressed bytes of the first copy
// that inflated to exactly the published BODY; a later compressed copy is compared with them
// (memcmp) at the publication the receiving client must get next (its next sequence number on
// its topics), and an identical copy is that BODY without inflating (sound because the server
// keeps no context: the same bytes inflate to the same message). Any other copy is inflated
// and checked in full.
//
// On stdout: `measuring` when the measured window starts, then one line at the end:
//   deliveries=N seconds=S deliveries_per_s=X publications=N publications_per_s=X
//   published=N server_cpu_s=X server_cpu_us_per_pub=X server_rss_kb=N tcp_out_segs=N
//   segs_per_delivery=X server_data_segs=N server_segs_per_delivery=X client_cpu_pct=X
//   compressed=N plain=N inflates=N wire_bytes_per_delivery=X body_bytes_per_delivery=X
//   closes=N errors=N stalled=0|1 drained=0|1 total_published=N total_deliveries=N
// where publications are those completed in the window, tcp_out_segs is the machine-wide
// TcpOutSegs delta (/proc/net/snmp, what `nstat TcpOutSegs` reads: both directions, every
// process, ACKs included), server_data_segs the data-carrying segments the subscribers' sockets
// received (TCP_INFO tcpi_data_segs_in: what the server sent them), client_cpu_pct this
// process's CPU time over the window, compressed and plain the deliveries in the window that
// came with RSV1 and without, inflates the messages the client inflated in the window (about
// one per publication when every copy of a publication is the same bytes),
// wire_bytes_per_delivery the bytes of the frames that carried the window's deliveries
// (headers included) per delivery, and body_bytes_per_delivery the BODY bytes (uncompressed)
// per delivery. After the window it stops publishing and waits (up to 5 s) for the
// publications in flight (drained=1 when all completed); the totals count every publication
// and delivery since the start, warmup and drain included, for a check against the server's
// own counters. Exits 0 only if nothing closed, nothing failed, nothing stalled (no
// publication completed for 5 s), everything drained and something was delivered; a hard cap
// (connect time + warmup + seconds + 60 s) ends it regardless.

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

enum { CONNECTING = 1, HANDSHAKING, OPEN, DEAD };

typedef struct {
    int fd;
    uint8_t state;
    uint8_t want_out;  // EPOLLOUT registered
    char *rb;          // leftover: handshake bytes, or a partial frame
    uint32_t rlen, rcap;
    char *wb;          // output not yet written
    uint32_t wlen, woff, wcap;
    uint64_t last;     // last sequence number delivered + 1 (0: none)
    uint32_t base;     // (i * S) % K: this client's first topic
    uint8_t deflate;   // permessage-deflate negotiated
    uint8_t in_msg;    // a fragmented message is open: its first frames are in mb
    uint8_t mop, mz;   // its opcode, and whether it is compressed (RSV1 on its first frame)
    unsigned char *mb; // the fragments so far
    uint32_t mlen, mcap;
    uint64_t mwire;    // their frames' bytes, headers included
} conn;

// Settings.
static const char *host = "127.0.0.1";
static int port = 9001;
static long C = 1000, K = 100, S = 1, W = 256, P = 16;
static double seconds = 10, warmup = 1;
static int server_pid = 0, binary = 0, quiet = 0, json = 0, use_deflate = 0;

static conn *conns;  // C subscribers, then the publisher at index C
static int ep;
static uint32_t *subscribers;  // per topic

// Publications in flight: a ring indexed by the sequence number.
#define RING (1u << 16)
static uint64_t ring_seq[RING];
static uint32_t ring_left[RING];
static unsigned char *ring_body[RING];  // the BODY published (freed when complete)
static uint32_t ring_len[RING];
static unsigned char *ring_z[RING];  // -z: a compressed copy that inflated to exactly the BODY
static uint32_t ring_zlen[RING];
static uint64_t next_seq, oldest;  // oldest: the first incomplete publication (or next_seq)
static long inflight;

// Counters (reset when the measured window starts).
static uint64_t deliveries, completed, published;
static uint64_t compressed_n, plain_n, inflates, wire_bytes, body_bytes;
static uint64_t closes, errors;
static int measuring, failed_at_set;
static double failed_at, last_progress;

static uint32_t rng = 0x9e3779b9u;
static inline uint32_t xorshift(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fail(const char *fmt, ...) {
    errors++;
    if (errors <= 10) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "topics-load: error: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
    }
    if (!failed_at_set) failed_at_set = 1, failed_at = now();
}

static void on_alarm(int sig) {
    (void) sig;
    static const char msg[] = "topics-load: hard time cap hit, giving up\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void) r;
    _exit(3);
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n);
    if (!p) {
        fprintf(stderr, "topics-load: out of memory\n");
        exit(2);
    }
    return p;
}

static void set_events(conn *c, int out) {
    if (c->want_out == out) return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.u32 = (uint32_t) (c - conns)};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = (uint8_t) out;
}

static void kill_conn(conn *c) {
    if (c->state == DEAD) return;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = DEAD;
}

// Writes what c has queued; keeps the rest, with EPOLLOUT, for later.
static void flush(conn *c) {
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wb + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            fail("connection %ld: write: %s", (long) (c - conns), strerror(errno));
            kill_conn(c);
            return;
        }
        c->woff += (uint32_t) n;
    }
    if (c->woff == c->wlen) c->woff = c->wlen = 0;
    if (c->state == OPEN || c->state == HANDSHAKING) set_events(c, c->wlen > 0);
}

static char *reserve(conn *c, uint32_t n) {
    if (c->woff && c->wlen + n > c->wcap) {
        memmove(c->wb, c->wb + c->woff, c->wlen - c->woff);
        c->wlen -= c->woff;
        c->woff = 0;
    }
    if (c->wlen + n > c->wcap) {
        c->wcap = (c->wlen + n) * 2;
        c->wb = xrealloc(c->wb, c->wcap);
    }
    return c->wb + c->wlen;
}

// Queues a masked frame: opcode, then the payload a .. a+na followed by b .. b+nb.
static void queue_frame(conn *c, int opcode, const char *a, size_t na, const char *b, size_t nb) {
    size_t len = na + nb;
    char *f = reserve(c, (uint32_t) (len + 14));
    size_t h = 0;
    f[h++] = (char) (0x80 | opcode);
    if (len < 126) {
        f[h++] = (char) (0x80 | len);
    } else if (len < 65536) {
        f[h++] = (char) (0x80 | 126);
        f[h++] = (char) (len >> 8);
        f[h++] = (char) len;
    } else {
        f[h++] = (char) (0x80 | 127);
        for (int i = 7; i >= 0; i--) f[h++] = (char) ((uint64_t) len >> (8 * i));
    }
    uint32_t key = xorshift();
    unsigned char m[4];
    memcpy(m, &key, 4);
    memcpy(f + h, m, 4);
    h += 4;
    for (size_t i = 0; i < na; i++) f[h + i] = (char) (a[i] ^ m[i & 3]);
    for (size_t i = 0; i < nb; i++) f[h + na + i] = (char) (b[i] ^ m[(na + i) & 3]);
    c->wlen += (uint32_t) (h + len);
}

// The publication is complete: take it out of the window.
static uint64_t completed_total, deliveries_total, published_total;
static void complete(uint64_t seq) {
    uint32_t slot = (uint32_t) (seq & (RING - 1));
    free(ring_body[slot]);
    free(ring_z[slot]);
    ring_body[slot] = ring_z[slot] = NULL;
    completed++;
    completed_total++;
    inflight--;
    while (oldest < next_seq && ring_left[oldest & (RING - 1)] == 0) oldest++;
}

static size_t body_len(uint64_t seq) {
    char digits[24];
    size_t d = (size_t) snprintf(digits, sizeof digits, "%llu", (unsigned long long) seq);
    return d + 1 > (size_t) P ? d + 1 : (size_t) P;
}

// splitmix64, seeded by the sequence number: the numbers of a -J document.
static uint64_t sm;
static inline uint64_t sm_next(void) {
    uint64_t z = (sm += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline uint64_t below(uint64_t n) { return sm_next() % n; }

static const char *const symbols[] = {"BTC-USD", "ETH-USD", "SOL-USD", "BTC-EUR",
                                      "ETH-BTC", "XRP-USD", "ADA-USD", "DOGE-USD"};

// A quantity with 4 decimals: mostly under 2, now and then up to 100.
static uint64_t qty(void) { return 1 + below(below(4) == 0 ? 1000000 : 20000); }

// Room a BODY needs: PAYLOAD and then some (a -J document's first levels, a long number).
#define BODY_ROOM ((size_t) P + 1024)

// Writes the BODY of publication seq into out (BODY_ROOM bytes); returns its length.
static size_t make_body(uint64_t seq, char *out) {
    if (!json) {
        size_t len = body_len(seq);
        int d = sprintf(out, "%llu ", (unsigned long long) seq);
        memset(out + d, 'x', len - (size_t) d);
        return len;
    }
    sm = seq * 0x2545f4914f6cdd1dull ^ 0x5851f42d4c957f2dull;
    uint64_t ts = 1733600000000ull + seq * 7 + below(1000);
    uint64_t mid = 100000 + below(6000000);  // cents
    size_t n = (size_t) sprintf(out, "{\"seq\":%llu,\"type\":\"book\",\"symbol\":\"%s\",\"ts\":%llu,\"bids\":[",
                                (unsigned long long) seq, symbols[below(8)], (unsigned long long) ts);
    // Bids down from the middle to 35 % of PAYLOAD, asks up from it to 70 %, then trades while
    // they fit, leaving room for the closing `]}`.
    uint64_t px = mid - 1 - below(20);
    for (int level = 0; level == 0 || n < (size_t) P * 35 / 100; level++) {
        uint64_t q = qty();
        n += (size_t) sprintf(out + n, "%s{\"px\":%llu.%02llu,\"qty\":%llu.%04llu,\"orders\":%llu}", level ? "," : "",
                              (unsigned long long) (px / 100), (unsigned long long) (px % 100),
                              (unsigned long long) (q / 10000), (unsigned long long) (q % 10000),
                              (unsigned long long) (1 + below(40)));
        px -= 1 + below(50);
    }
    n += (size_t) sprintf(out + n, "],\"asks\":[");
    px = mid + 1 + below(20);
    for (int level = 0; level == 0 || n < (size_t) P * 70 / 100; level++) {
        uint64_t q = qty();
        n += (size_t) sprintf(out + n, "%s{\"px\":%llu.%02llu,\"qty\":%llu.%04llu,\"orders\":%llu}", level ? "," : "",
                              (unsigned long long) (px / 100), (unsigned long long) (px % 100),
                              (unsigned long long) (q / 10000), (unsigned long long) (q % 10000),
                              (unsigned long long) (1 + below(40)));
        px += 1 + below(50);
    }
    n += (size_t) sprintf(out + n, "],\"trades\":[");
    uint64_t id = 1000000000ull + seq * 13 + below(1000);
    for (int k = 0;; k++) {
        char t[160];
        uint64_t q = qty(), tpx = mid - 100 + below(200);
        int tn = sprintf(t, "%s{\"id\":%llu,\"px\":%llu.%02llu,\"qty\":%llu.%04llu,\"side\":\"%s\",\"ts\":%llu}",
                         k ? "," : "", (unsigned long long) id, (unsigned long long) (tpx / 100),
                         (unsigned long long) (tpx % 100), (unsigned long long) (q / 10000),
                         (unsigned long long) (q % 10000), below(2) ? "buy" : "sell",
                         (unsigned long long) (ts - below(5000)));
        if (n + (size_t) tn + 2 > (size_t) P) break;
        memcpy(out + n, t, (size_t) tn);
        n += (size_t) tn;
        id += 1 + below(3);
    }
    memcpy(out + n, "]}", 2);
    return n + 2;
}

// Publishes until W are in flight.
static void publish(void) {
    conn *c = &conns[C];
    if (c->state != OPEN) return;
    while (inflight < W && next_seq - oldest < RING && c->wlen - c->woff < (1u << 18)) {
        uint64_t seq = next_seq;
        uint32_t topic = (uint32_t) (seq % (uint64_t) K);
        uint32_t slot = (uint32_t) (seq & (RING - 1));
        char head[32];
        int hn = snprintf(head, sizeof head, "pub t%u ", topic);
        unsigned char *body = xrealloc(NULL, BODY_ROOM);
        size_t bn = make_body(seq, (char *) body);
        queue_frame(c, binary ? 2 : 1, head, (size_t) hn, (const char *) body, bn);
        ring_seq[slot] = seq;
        ring_left[slot] = subscribers[topic];
        ring_body[slot] = body;
        ring_len[slot] = (uint32_t) bn;
        ring_z[slot] = NULL;
        next_seq++;
        published++;
        published_total++;
        inflight++;
        if (ring_left[slot] == 0) complete(seq);
    }
    flush(c);
}

#define NO_SEQ UINT64_MAX

// One message delivered to subscriber i, in a frame (or frames) of `wire` bytes, compressed or
// not (z): p .. p+n its content, or p NULL when it is known to be the BODY of publication
// `known` (a compressed copy identical to one that inflated to it). Returns whether it passed
// every check, with its sequence number in *got.
static int deliver(uint32_t i, int opcode, const unsigned char *p, size_t n, uint64_t known, int z, uint64_t wire,
                   uint64_t *got) {
    conn *c = &conns[i];
    if (i >= (uint32_t) C) {
        fail("the publisher, subscribed to nothing, got a message");
        return 0;
    }
    const char *how = z ? " (inflated)" : "";
    uint64_t seq = known;
    if (p) {
        size_t k = 0;
        if (json) {
            if (n < 7 || memcmp(p, "{\"seq\":", 7) != 0) {
                fail("client %u: a message that is not a publication (%zu bytes%s)", i, n, how);
                return 0;
            }
            k = 7;
        }
        size_t k0 = k;
        seq = 0;
        while (k < n && k - k0 < 20 && p[k] >= '0' && p[k] <= '9') seq = seq * 10 + (p[k++] - '0');
        if (k == k0 || k == n || p[k] != (json ? ',' : ' ')) {
            fail("client %u: a message that is not a publication (%zu bytes%s)", i, n, how);
            return 0;
        }
    }
    uint32_t slot = (uint32_t) (seq & (RING - 1));
    if (seq >= next_seq || ring_seq[slot] != seq || ring_left[slot] == 0) {
        fail("client %u: publication %llu delivered but not in flight", i, (unsigned long long) seq);
        return 0;
    }
    uint32_t topic = (uint32_t) (seq % (uint64_t) K);
    if ((topic + (uint32_t) K - c->base) % (uint32_t) K >= (uint32_t) S) {
        fail("client %u: publication %llu of t%u, a topic it did not subscribe to", i,
             (unsigned long long) seq, topic);
        return 0;
    }
    if (seq + 1 <= c->last) {
        fail("client %u: publication %llu after %llu (duplicate or out of order)", i,
             (unsigned long long) seq, (unsigned long long) (c->last - 1));
        return 0;
    }
    if (opcode != (binary ? 2 : 1)) {
        fail("client %u: publication %llu: opcode %d", i, (unsigned long long) seq, opcode);
        return 0;
    }
    if (p && (n != ring_len[slot] || memcmp(p, ring_body[slot], n) != 0)) {
        size_t d = 0;
        while (d < n && d < ring_len[slot] && p[d] == ring_body[slot][d]) d++;
        fail("client %u: publication %llu: %zu bytes%s, not the %u published (first difference at byte %zu)", i,
             (unsigned long long) seq, n, how, ring_len[slot], d);
        return 0;
    }
    c->last = seq + 1;
    deliveries++;
    deliveries_total++;
    if (z)
        compressed_n++;
    else
        plain_n++;
    wire_bytes += wire;
    body_bytes += ring_len[slot];
    *got = seq;
    if (--ring_left[slot] == 0) complete(seq);
    return 1;
}

static z_stream zs;
static unsigned char zout[(1u << 17) + 1];

// Inflates one compressed message, p .. p+n, into zout (RFC 7692 §7.2.2: 00 00 ff ff appended,
// a fresh window since the server keeps no context); returns its length, or -1 with *why set.
static long inflate_message(const unsigned char *p, size_t n, const char **why) {
    static unsigned char tail[4] = {0, 0, 0xff, 0xff};
    inflateReset(&zs);
    zs.next_out = zout;
    zs.avail_out = sizeof zout;
    zs.next_in = (unsigned char *) p;
    zs.avail_in = (uInt) n;
    int r = inflate(&zs, Z_SYNC_FLUSH);
    if (r == Z_STREAM_END && zs.avail_in > 0) return *why = "bytes after the final block", -1;
    if (r == Z_OK || r == Z_BUF_ERROR) {
        if (zs.avail_in > 0 || zs.avail_out == 0) return *why = "inflates beyond 128 KiB", -1;
        zs.next_in = tail;
        zs.avail_in = 4;
        r = inflate(&zs, Z_SYNC_FLUSH);
    }
    if (r != Z_OK && r != Z_STREAM_END) return *why = zs.msg ? zs.msg : "inflate failed", -1;
    if (zs.avail_out == 0) return *why = "inflates beyond 128 KiB", -1;
    return (long) (sizeof zout - zs.avail_out);
}

// The publication client c must get next: the first after its last on one of its topics.
static uint64_t next_for(const conn *c) {
    uint64_t x = c->last > oldest ? c->last : oldest;
    uint64_t r = (x % (uint64_t) K + (uint64_t) K - c->base) % (uint64_t) K;
    return r < (uint64_t) S ? x : x + ((uint64_t) K - r);
}

// A whole message for subscriber i.
static void message(uint32_t i, int opcode, int z, const unsigned char *p, size_t n, uint64_t wire) {
    uint64_t seq;
    if (!z) {
        deliver(i, opcode, p, n, NO_SEQ, 0, wire, &seq);
        return;
    }
    // The copy this client must get next, if it is the bytes already inflated once.
    uint64_t g = next_for(&conns[i]);
    uint32_t slot = (uint32_t) (g & (RING - 1));
    if (g < next_seq && ring_seq[slot] == g && ring_left[slot] > 0 && ring_z[slot] && ring_zlen[slot] == n &&
        memcmp(ring_z[slot], p, n) == 0) {
        deliver(i, opcode, NULL, n, g, 1, wire, &seq);
        return;
    }
    const char *why = NULL;
    long m = inflate_message(p, n, &why);
    inflates++;
    if (m < 0) {
        fail("client %u: a compressed message of %zu bytes does not inflate: %s", i, n, why);
        return;
    }
    if (!deliver(i, opcode, zout, (size_t) m, NO_SEQ, 1, wire, &seq)) return;
    slot = (uint32_t) (seq & (RING - 1));
    if (ring_seq[slot] == seq && ring_left[slot] > 0 && !ring_z[slot]) {
        ring_z[slot] = xrealloc(NULL, n ? n : 1);
        memcpy(ring_z[slot], p, n);
        ring_zlen[slot] = (uint32_t) n;
    }
}

static void append(conn *c, const unsigned char *p, size_t n) {
    if (c->mlen + n > c->mcap) {
        c->mcap = (uint32_t) ((c->mlen + n) * 2);
        c->mb = xrealloc(c->mb, c->mcap);
    }
    memcpy(c->mb + c->mlen, p, n);
    c->mlen += (uint32_t) n;
}

// Parses the frames in p .. p+n for connection i; returns the bytes consumed (a partial frame
// is left).
static size_t frames(uint32_t i, unsigned char *p, size_t n) {
    conn *c = &conns[i];
    size_t at = 0;
    while (n - at >= 2 && c->state == OPEN) {
        unsigned char b0 = p[at], b1 = p[at + 1];
        int opcode = b0 & 15, fin = (b0 & 0x80) != 0, z = (b0 & 0x40) != 0;
        size_t hl = 2;
        uint64_t len = b1 & 127;
        if (b1 & 0x80) {
            fail("connection %u: a masked frame from the server", i);
            kill_conn(c);
            break;
        }
        if (len == 126) {
            if (n - at < 4) break;
            len = ((uint64_t) p[at + 2] << 8) | p[at + 3];
            hl = 4;
        } else if (len == 127) {
            if (n - at < 10) break;
            len = 0;
            for (int k = 0; k < 8; k++) len = (len << 8) | p[at + 2 + k];
            hl = 10;
        }
        if (len > (1u << 17)) {
            fail("connection %u: a frame of %llu bytes", i, (unsigned long long) len);
            kill_conn(c);
            break;
        }
        if (n - at < hl + len) break;
        unsigned char *payload = p + at + hl;
        uint64_t wire = hl + len;
        at += hl + (size_t) len;
        if (b0 & 0x30) {
            fail("connection %u: RSV2 or RSV3 set (first byte 0x%02x)", i, b0);
            kill_conn(c);
            break;
        }
        if (z && (!c->deflate || opcode == 0 || opcode >= 8)) {
            fail("connection %u: RSV1 on %s (first byte 0x%02x)", i,
                 !c->deflate ? "a frame, permessage-deflate not negotiated"
                 : opcode   ? "a control frame"
                            : "a continuation frame",
                 b0);
            kill_conn(c);
            break;
        }
        if (opcode >= 8 && (!fin || len > 125)) {
            fail("connection %u: a control frame (opcode %d) fragmented or of %llu bytes", i, opcode,
                 (unsigned long long) len);
            kill_conn(c);
            break;
        }
        switch (opcode) {
        case 1:
        case 2:
            if (c->in_msg) {
                fail("connection %u: a new message (opcode %d) inside a fragmented one", i, opcode);
                kill_conn(c);
                break;
            }
            if (fin) {
                message(i, opcode, z, payload, (size_t) len, wire);
            } else {
                c->in_msg = 1, c->mop = (uint8_t) opcode, c->mz = (uint8_t) z, c->mlen = 0, c->mwire = wire;
                append(c, payload, (size_t) len);
            }
            break;
        case 0:
            if (!c->in_msg) {
                fail("connection %u: a continuation frame outside a message", i);
                kill_conn(c);
                break;
            }
            if (c->mlen + len > (1u << 17)) {
                fail("connection %u: a fragmented message beyond 128 KiB", i);
                kill_conn(c);
                break;
            }
            append(c, payload, (size_t) len);
            c->mwire += wire;
            if (fin) {
                c->in_msg = 0;
                message(i, c->mop, c->mz, c->mb, c->mlen, c->mwire);
            }
            break;
        case 9:
            queue_frame(c, 10, (const char *) payload, (size_t) len, NULL, 0);
            flush(c);
            break;
        case 10:
            break;
        case 8: {
            closes++;
            if (closes <= 10) {
                int code = len >= 2 ? (payload[0] << 8 | payload[1]) : 1005;
                fprintf(stderr, "topics-load: connection %u closed by the server: %d %.*s\n", i, code,
                        len > 2 ? (int) len - 2 : 0, (const char *) payload + 2);
            }
            if (!failed_at_set) failed_at_set = 1, failed_at = now();
            kill_conn(c);
            break;
        }
        default:
            fail("connection %u: opcode %d", i, opcode);
            kill_conn(c);
        }
    }
    return at;
}

static void keep(conn *c, const char *p, size_t n) {
    if (n > c->rcap) {
        c->rcap = (uint32_t) (n < 256 ? 256 : n * 2);
        c->rb = xrealloc(c->rb, c->rcap);
    }
    memmove(c->rb, p, n);
    c->rlen = (uint32_t) n;
}

static size_t handshakes_done;
static char first_answer[512];  // -z: the first Sec-WebSocket-Extensions answer, for stderr

static const char *trim(char *t) {
    while (*t == ' ' || *t == '\t') t++;
    char *e = t + strlen(t);
    while (e > t && (e[-1] == ' ' || e[-1] == '\t')) *--e = 0;
    return t;
}

// -z: the 101's Sec-WebSocket-Extensions (every such line, comma-joined), from the header lines
// after the status line, h .. end (end: the blank line's \r\n). Returns whether it accepts the
// offer as this client needs: permessage-deflate alone, server_no_context_takeover, known
// parameters once each with valid values.
static int negotiate(uint32_t i, const unsigned char *h, const unsigned char *end) {
    char ext[2048];
    size_t el = 0;
    for (const unsigned char *l = h; l <= end;) {
        const unsigned char *eol = memmem(l, (size_t) (end + 2 - l), "\r\n", 2);
        const unsigned char *colon = memchr(l, ':', (size_t) (eol - l));
        if (colon && colon - l == 24 && strncasecmp((const char *) l, "sec-websocket-extensions", 24) == 0) {
            size_t vn = (size_t) (eol - colon - 1);
            if (el + vn + 2 >= sizeof ext) {
                fail("connection %u: -z: a Sec-WebSocket-Extensions answer of more than 2 KiB", i);
                return 0;
            }
            if (el) ext[el++] = ',';
            memcpy(ext + el, colon + 1, vn);
            el += vn;
        }
        l = eol + 2;
    }
    ext[el] = 0;
    if (!first_answer[0]) snprintf(first_answer, sizeof first_answer, "%s", el ? trim(ext) : "(none)");
    if (el == 0) {
        fail("connection %u: -z: the server declined permessage-deflate (no Sec-WebSocket-Extensions in its 101)",
             i);
        return 0;
    }
    char shown[2048];
    snprintf(shown, sizeof shown, "%s", trim(ext));
    if (strchr(ext, ',')) {
        fail("connection %u: -z: the server answered more than one extension (one offered): %s", i, shown);
        return 0;
    }
    char *save, *tok = strtok_r(ext, ";", &save);
    if (!tok || strcmp(trim(tok), "permessage-deflate") != 0) {
        fail("connection %u: -z: the server answered an extension not offered: %s", i, shown);
        return 0;
    }
    int seen = 0;  // 1 server_no_context_takeover, 2 client_no_context_takeover, 4 server_max_window_bits,
                   // 8 client_max_window_bits
    while ((tok = strtok_r(NULL, ";", &save))) {
        char *eq = strchr(tok, '=');
        if (eq) *eq = 0;
        const char *name = trim(tok), *value = eq ? trim(eq + 1) : NULL;
        char unq[16];
        if (value && value[0] == '"') {  // a quoted-string value (RFC 7692 §7.1)
            size_t vn = strlen(value);
            if (vn < 2 || vn - 2 >= sizeof unq || value[vn - 1] != '"') value = "";
            else memcpy(unq, value + 1, vn - 2), unq[vn - 2] = 0, value = unq;
        }
        int bit = strcmp(name, "server_no_context_takeover") == 0 ? 1
                  : strcmp(name, "client_no_context_takeover") == 0 ? 2
                  : strcmp(name, "server_max_window_bits") == 0     ? 4
                  : strcmp(name, "client_max_window_bits") == 0     ? 8
                                                                    : 0;
        if (!bit) {
            fail("connection %u: -z: an unknown parameter %s in the answer: %s", i, name, shown);
            return 0;
        }
        if (seen & bit) {
            fail("connection %u: -z: %s twice in the answer: %s", i, name, shown);
            return 0;
        }
        seen |= bit;
        if (bit <= 2 && value) {
            fail("connection %u: -z: %s with a value in the answer: %s", i, name, shown);
            return 0;
        }
        if (bit >= 4) {  // a value 8..15 is required in an answer (RFC 7692 §7.1.2)
            char *e;
            long v = value ? strtol(value, &e, 10) : 0;
            if (!value || !*value || *e || v < 8 || v > 15 || value[0] == '0' || value[0] == '+') {
                fail("connection %u: -z: %s without a value 8..15 in the answer: %s", i, name, shown);
                return 0;
            }
        }
    }
    if (!(seen & 1)) {
        fail("connection %u: -z: an answer without server_no_context_takeover (this client inflates each message "
             "on its own): %s",
             i, shown);
        return 0;
    }
    conns[i].deflate = 1;
    return 1;
}

// Bytes of a handshake response in p .. p+n: returns how many it took, or 0 if incomplete.
static size_t handshake(uint32_t i, unsigned char *p, size_t n) {
    conn *c = &conns[i];
    unsigned char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) {
        if (n > 16384) {
            fail("connection %u: no end to the handshake response", i);
            kill_conn(c);
        }
        return 0;
    }
    if (n < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0) {
        char shown[512];
        size_t m = 0;
        for (size_t k = 0; k < n && m < sizeof shown - 1; k++)
            shown[m++] = p[k] == '\r' ? ' ' : p[k] == '\n' ? '|' : (char) p[k];
        shown[m] = 0;
        fail("connection %u: upgrade refused: %s", i, shown);
        kill_conn(c);
        return 0;
    }
    if (use_deflate) {
        const unsigned char *eol = memmem(p, (size_t) (end + 2 - p), "\r\n", 2);
        if (!negotiate(i, eol + 2, end)) {
            kill_conn(c);
            return 0;
        }
    }
    c->state = OPEN;
    handshakes_done++;
    return (size_t) (end + 4 - p);
}

static unsigned char rbuf[1 << 18];

static void readable(uint32_t i) {
    conn *c = &conns[i];
    for (;;) {
        size_t off = c->rlen;
        if (off) memcpy(rbuf, c->rb, off);
        ssize_t n = recv(c->fd, rbuf + off, sizeof rbuf - off, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;  // the leftover is still in c->rb
            fail("connection %u: read: %s", i, strerror(errno));
            kill_conn(c);
            return;
        }
        if (n == 0) {
            fail("connection %u: EOF from the server without a close frame", i);
            kill_conn(c);
            return;
        }
        size_t total = off + (size_t) n, used = 0;
        if (c->state == HANDSHAKING) {
            used = handshake(i, rbuf, total);
            if (c->state == DEAD) return;
        }
        if (c->state == OPEN) used += frames(i, rbuf + used, total - used);
        if (c->state == DEAD) return;
        keep(c, (const char *) rbuf + used, total - used);
        if ((size_t) n < sizeof rbuf - off) return;
    }
}

static struct sockaddr_in addr;
static long started;  // connections started

static void start_conn(long i) {
    conn *c = &conns[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        fprintf(stderr, "topics-load: socket: %s\n", strerror(errno));
        exit(2);
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *) &addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        fprintf(stderr, "topics-load: connect: %s\n", strerror(errno));
        exit(2);
    }
    c->state = CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t) i};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->want_out = 1;
}

static void connected(uint32_t i) {
    conn *c = &conns[i];
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        fprintf(stderr, "topics-load: connect to %s:%d: %s\n", host, port, strerror(err));
        exit(2);
    }
    char req[8192];
    int n = snprintf(req, sizeof req, "GET /");
    if (i < (uint32_t) C) {
        for (long j = 0; j < S; j++)
            n += snprintf(req + n, sizeof req - (size_t) n, "%ssub=t%ld", j ? "&" : "?", ((long) c->base + j) % K);
    }
    n += snprintf(req + n, sizeof req - (size_t) n,
                  " HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                  host, port,
                  // Chrome's offer, byte for byte.
                  use_deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "");
    c->state = HANDSHAKING;
    memcpy(reserve(c, (uint32_t) n), req, (size_t) n);
    c->wlen += (uint32_t) n;
    flush(c);
}

static void event(struct epoll_event *e) {
    uint32_t i = e->data.u32;
    conn *c = &conns[i];
    if (c->state == DEAD) return;
    if (c->state == CONNECTING) {
        if (e->events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) connected(i);
        return;
    }
    if (e->events & (EPOLLIN | EPOLLERR | EPOLLHUP)) readable(i);
    if (c->state != DEAD && (e->events & EPOLLOUT)) flush(c);
}

typedef struct {
    double wall, self_cpu, server_cpu;
    long server_rss_kb;
    uint64_t out_segs, data_segs_in;
} sample;

static double server_cpu(void) {
    if (!server_pid) return 0;
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", server_pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    // After the command: state (3), ... utime (14), stime (15).
    unsigned long long ut = 0, st = 0;
    int field = 2;
    for (char *t = strtok(p + 1, " "); t; t = strtok(NULL, " ")) {
        field++;
        if (field == 14) ut = strtoull(t, NULL, 10);
        if (field == 15) {
            st = strtoull(t, NULL, 10);
            break;
        }
    }
    return (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
}

static long server_rss(void) {
    if (!server_pid) return 0;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", server_pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1) break;
    fclose(f);
    return kb;
}

static uint64_t out_segs(void) {
    FILE *f = fopen("/proc/net/snmp", "r");
    if (!f) return 0;
    char names[2048], values[2048];
    uint64_t v = 0;
    while (fgets(names, sizeof names, f)) {
        if (strncmp(names, "Tcp:", 4) != 0) continue;
        if (!fgets(values, sizeof values, f)) break;
        char *sn, *sv;
        char *n = strtok_r(names, " \n", &sn), *x = strtok_r(values, " \n", &sv);
        while (n && x) {
            if (strcmp(n, "OutSegs") == 0) v = strtoull(x, NULL, 10);
            n = strtok_r(NULL, " \n", &sn);
            x = strtok_r(NULL, " \n", &sv);
        }
        break;
    }
    fclose(f);
    return v;
}

static sample take(void) {
    sample s = {0};
    for (long i = 0; i < C; i++) {
        if (conns[i].state != OPEN) continue;
        struct tcp_info ti;
        socklen_t len = sizeof ti;
        memset(&ti, 0, sizeof ti);
        if (getsockopt(conns[i].fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0) s.data_segs_in += ti.tcpi_data_segs_in;
    }
    s.out_segs = out_segs();
    s.server_cpu = server_cpu();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    s.self_cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    s.wall = now();
    return s;
}

static void usage(void) {
    fprintf(stderr, "usage: topics-load [-h HOST] [-p PORT] [-c CLIENTS] [-k TOPICS] [-s SUBS] [-w WINDOW] "
                    "[-b PAYLOAD] [-d SECONDS] [-u WARMUP] [-P SERVER_PID] [-B] [-J] [-z] [-q]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "h:p:c:k:s:w:b:d:u:P:BJzq")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': C = atol(optarg); break;
        case 'k': K = atol(optarg); break;
        case 's': S = atol(optarg); break;
        case 'w': W = atol(optarg); break;
        case 'b': P = atol(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'u': warmup = atof(optarg); break;
        case 'P': server_pid = atoi(optarg); break;
        case 'B': binary = 1; break;
        case 'J': json = 1; break;
        case 'z': use_deflate = 1; break;
        case 'q': quiet = 1; break;
        default: usage();
        }
    }
    if (optind != argc || C < 1 || K < 1 || S < 1 || S > K || W < 1 || W > (long) RING / 2 || P < 0 ||
        P > 60000 || seconds <= 0 || warmup < 0 || C > 1000000)
        usage();
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t) port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "topics-load: -h takes an IPv4 address\n");
        return 2;
    }

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t) C + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t) C + 64) {
            fprintf(stderr, "topics-load: %ld clients need %ld descriptors; the limit is %llu\n", C, C + 64,
                    (unsigned long long) rl.rlim_cur);
            return 2;
        }
    }
    if (use_deflate && inflateInit2(&zs, -15) != Z_OK) {
        fprintf(stderr, "topics-load: inflateInit2 failed\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm(120);  // connecting; re-armed once connected

    conns = calloc((size_t) C + 1, sizeof *conns);
    subscribers = calloc((size_t) K, sizeof *subscribers);
    if (!conns || !subscribers) return 2;
    for (long i = 0; i < C; i++) {
        conns[i].base = (uint32_t) (((uint64_t) i * (uint64_t) S) % (uint64_t) K);
        for (long j = 0; j < S; j++) subscribers[(conns[i].base + j) % K]++;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);

    // Connect: at most 500 handshakes pending at once.
    static struct epoll_event evs[1024];
    double t0 = now();
    long want = C + 1;
    while ((long) handshakes_done < want) {
        while (started < want && started - (long) handshakes_done < 500) start_conn(started++);
        int n = epoll_wait(ep, evs, 1024, 1000);
        for (int k = 0; k < n; k++) event(&evs[k]);
        if (errors || closes) break;
        if (now() - t0 > 100) {
            fprintf(stderr, "topics-load: %zu of %ld connected after 100 s\n", handshakes_done, want);
            return 1;
        }
    }
    if (errors || closes) {
        printf("deliveries=0 seconds=0 deliveries_per_s=0 publications=0 closes=%llu errors=%llu stalled=0\n",
               (unsigned long long) closes, (unsigned long long) errors);
        return 1;
    }
    if (!quiet) fprintf(stderr, "topics-load: %ld clients + 1 publisher connected in %.2f s\n", C, now() - t0);
    if (use_deflate) fprintf(stderr, "topics-load: -z: the server answered: %s\n", first_answer);
    alarm((unsigned) (warmup + seconds + 60));

    // Publish: warmup, then the measured window.
    double start = now(), measure_at = start + warmup, end_at = measure_at + seconds;
    last_progress = start;
    uint64_t progress_seen = 0;
    sample a = {0}, b = {0};
    long rss_end = 0;
    int stalled = 0;
    publish();
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, 10);
        for (int k = 0; k < n; k++) event(&evs[k]);
        publish();
        double t = now();
        if (completed_total != progress_seen) progress_seen = completed_total, last_progress = t;
        if (!measuring && t >= measure_at) {
            a = take();
            deliveries = completed = published = compressed_n = plain_n = inflates = wire_bytes = body_bytes = 0;
            measuring = 1;
            printf("measuring\n");
            fflush(stdout);
        }
        if (measuring && t >= end_at) {
            b = take();
            rss_end = server_rss();
            break;
        }
        if (failed_at_set && t - failed_at > 1) break;  // gather the burst, then stop
        if (t - last_progress > 5) {
            fprintf(stderr, "topics-load: stalled: no publication completed for 5 s; %ld in flight, "
                            "oldest %llu awaits %u deliveries\n",
                    inflight, (unsigned long long) oldest, ring_left[oldest & (RING - 1)]);
            stalled = 1;
            break;
        }
    }
    if (!b.wall) {  // stopped early: report what the window holds so far
        if (!measuring)
            a = take(), deliveries = completed = published = compressed_n = plain_n = inflates = wire_bytes = body_bytes = 0;
        b = take();
        rss_end = server_rss();
    }
    // Drain: no more publications; wait (up to 5 s) for those in flight, so that the totals
    // can be checked against the server's own counters.
    int drained = 0;
    if (!failed_at_set && !stalled) {
        double until = now() + 5;
        while (inflight > 0 && now() < until && !failed_at_set) {
            int n = epoll_wait(ep, evs, 1024, 10);
            for (int k = 0; k < n; k++) event(&evs[k]);
        }
        drained = inflight == 0;
    }
    double secs = b.wall - a.wall;
    double server_cpu_s = b.server_cpu - a.server_cpu;
    uint64_t segs = b.out_segs - a.out_segs, data_segs = b.data_segs_in - a.data_segs_in;
    printf("deliveries=%llu seconds=%.3f deliveries_per_s=%.0f publications=%llu publications_per_s=%.0f "
           "published=%llu server_cpu_s=%.3f server_cpu_us_per_pub=%.3f server_rss_kb=%ld tcp_out_segs=%llu "
           "segs_per_delivery=%.4f server_data_segs=%llu server_segs_per_delivery=%.4f client_cpu_pct=%.1f "
           "compressed=%llu plain=%llu inflates=%llu wire_bytes_per_delivery=%.1f body_bytes_per_delivery=%.1f "
           "closes=%llu errors=%llu stalled=%d drained=%d total_published=%llu total_deliveries=%llu\n",
           (unsigned long long) deliveries, secs, secs > 0 ? deliveries / secs : 0, (unsigned long long) completed,
           secs > 0 ? completed / secs : 0, (unsigned long long) published, server_cpu_s,
           completed ? server_cpu_s * 1e6 / (double) completed : 0, rss_end, (unsigned long long) segs,
           deliveries ? (double) segs / (double) deliveries : 0, (unsigned long long) data_segs,
           deliveries ? (double) data_segs / (double) deliveries : 0,
           secs > 0 ? 100 * (b.self_cpu - a.self_cpu) / secs : 0, (unsigned long long) compressed_n,
           (unsigned long long) plain_n, (unsigned long long) inflates,
           deliveries ? (double) wire_bytes / (double) deliveries : 0,
           deliveries ? (double) body_bytes / (double) deliveries : 0, (unsigned long long) closes,
           (unsigned long long) errors, stalled, drained, (unsigned long long) published_total,
           (unsigned long long) deliveries_total);
    fflush(stdout);
    // Close with a reset: no TIME_WAIT left behind for the next run's 10,000 connections.
    struct linger lg = {1, 0};
    for (long i = 0; i <= C; i++)
        if (conns[i].state != DEAD && conns[i].fd > 0) {
            setsockopt(conns[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(conns[i].fd);
        }
    return (closes || errors || stalled || !drained || deliveries == 0) ? 1 : 0;
}
