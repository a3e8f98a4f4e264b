// topics-load: a load client for the topics protocol of `shardcast serve --topics` (and of its
// baselines, baselines/bun-relay.js --topics and baselines/uws/topics.cpp), in plain C: one
// thread, epoll, no dependencies. Not part of CI; baselines/topics-compare.sh drives it.
//
//   gcc -O2 -o topics-load baselines/topics-load.c
//   topics-load [-h HOST] [-p PORT] [-c CLIENTS] [-k TOPICS] [-s SUBS] [-w WINDOW]
//               [-b PAYLOAD] [-d SECONDS] [-u WARMUP] [-P SERVER_PID] [-B] [-q]
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
//   -d SECONDS  measured seconds (default 10), after the warmup
//   -u WARMUP   warmup seconds, publishing but not measured (default 1)
//   -P PID      the server's pid: sample its CPU time (/proc/PID/stat utime+stime, every
//               thread) and its VmRSS at the start and end of the measured window
//   -B          publish binary messages (default: text)
//   -q          no progress lines on stderr
//
// Client i subscribes at upgrade (`/?sub=...`) to t{(i*S + j) % K} for j < S, so each topic's
// subscriber count is known in advance. One more connection, subscribed to nothing, publishes
// `pub t{n % K} BODY` (masked client frames) for n = 0, 1, ... and keeps at most W publications
// incomplete; a publication is complete when every subscriber of its topic has received it.
// Every delivery is checked: its sequence number must be in flight, its topic one the receiving
// client subscribed to, its length and opcode the published ones, and each client must see
// increasing sequence numbers (one publisher, so every server here delivers in order); a
// violation is an error. Server pings are answered; a close from the server, an EOF or a reset
// is a failure.
//
// On stdout: `measuring` when the measured window starts, then one line at the end:
//   deliveries=N seconds=S deliveries_per_s=X publications=N publications_per_s=X
//   published=N server_cpu_s=X server_cpu_us_per_pub=X server_rss_kb=N tcp_out_segs=N
//   segs_per_delivery=X server_data_segs=N server_segs_per_delivery=X client_cpu_pct=X
//   closes=N errors=N stalled=0|1 drained=0|1 total_published=N total_deliveries=N
// where publications are those completed in the window, tcp_out_segs is the machine-wide
// TcpOutSegs delta (/proc/net/snmp, what `nstat TcpOutSegs` reads: both directions, every
// process, ACKs included), server_data_segs the data-carrying segments the subscribers' sockets
// received (TCP_INFO tcpi_data_segs_in: what the server sent them), and client_cpu_pct this
// process's CPU time over the window. After the window it stops publishing and waits (up to
// 5 s) for the publications in flight (drained=1 when all completed); the totals count every
// publication and delivery since the start, warmup and drain included, for a check against
// the server's own counters. Exits 0 only if nothing closed, nothing failed, nothing stalled
// (no publication completed for 5 s), everything drained and something was delivered; a hard
// cap (connect time + warmup + seconds + 60 s) ends it regardless.

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
} conn;

// Settings.
static const char *host = "127.0.0.1";
static int port = 9001;
static long C = 1000, K = 100, S = 1, W = 256, P = 16;
static double seconds = 10, warmup = 1;
static int server_pid = 0, binary = 0, quiet = 0;

static conn *conns;  // C subscribers, then the publisher at index C
static int ep;
static uint32_t *subscribers;  // per topic

// Publications in flight: a ring indexed by the sequence number.
#define RING (1u << 16)
static uint64_t ring_seq[RING];
static uint32_t ring_left[RING];
static uint64_t next_seq, oldest;  // oldest: the first incomplete publication (or next_seq)
static long inflight;

// Counters (reset when the measured window starts).
static uint64_t deliveries, completed, published;
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
    (void) seq;
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

// Publishes until W are in flight.
static void publish(void) {
    conn *c = &conns[C];
    if (c->state != OPEN) return;
    static char body[65536 + 32];
    static int body_ready;
    if (!body_ready) {
        memset(body, 'x', sizeof body);
        body_ready = 1;
    }
    while (inflight < W && next_seq - oldest < RING && c->wlen - c->woff < (1u << 18)) {
        uint64_t seq = next_seq;
        uint32_t topic = (uint32_t) (seq % (uint64_t) K);
        uint32_t slot = (uint32_t) (seq & (RING - 1));
        char head[64];
        int hn = snprintf(head, sizeof head, "pub t%u %llu ", topic, (unsigned long long) seq);
        size_t digits_and_space = (size_t) hn - (size_t) snprintf(NULL, 0, "pub t%u ", topic);
        size_t pad = body_len(seq) - digits_and_space;
        queue_frame(c, binary ? 2 : 1, head, (size_t) hn, body, pad);
        ring_seq[slot] = seq;
        ring_left[slot] = subscribers[topic];
        next_seq++;
        published++;
        published_total++;
        inflight++;
        if (ring_left[slot] == 0) complete(seq);
    }
    flush(c);
}

// One message delivered to subscriber i.
static void deliver(uint32_t i, int opcode, const unsigned char *p, size_t n) {
    conn *c = &conns[i];
    if (i >= (uint32_t) C) {
        fail("the publisher, subscribed to nothing, got a message");
        return;
    }
    uint64_t seq = 0;
    size_t k = 0;
    while (k < n && k < 20 && p[k] >= '0' && p[k] <= '9') seq = seq * 10 + (p[k++] - '0');
    if (k == 0 || k == n || p[k] != ' ') {
        fail("client %u: a message that is not a publication (%zu bytes)", i, n);
        return;
    }
    uint32_t slot = (uint32_t) (seq & (RING - 1));
    if (seq >= next_seq || ring_seq[slot] != seq || ring_left[slot] == 0) {
        fail("client %u: publication %llu delivered but not in flight", i, (unsigned long long) seq);
        return;
    }
    uint32_t topic = (uint32_t) (seq % (uint64_t) K);
    if ((topic + (uint32_t) K - c->base) % (uint32_t) K >= (uint32_t) S) {
        fail("client %u: publication %llu of t%u, a topic it did not subscribe to", i,
             (unsigned long long) seq, topic);
        return;
    }
    if (seq + 1 <= c->last) {
        fail("client %u: publication %llu after %llu (duplicate or out of order)", i,
             (unsigned long long) seq, (unsigned long long) (c->last - 1));
        return;
    }
    if (n != (k + 1 > (size_t) P ? k + 1 : (size_t) P) || opcode != (binary ? 2 : 1)) {
        fail("client %u: publication %llu: %zu bytes, opcode %d", i, (unsigned long long) seq, n, opcode);
        return;
    }
    c->last = seq + 1;
    deliveries++;
    deliveries_total++;
    if (--ring_left[slot] == 0) complete(seq);
}

// Parses the frames in p .. p+n for connection i; returns the bytes consumed (a partial frame
// is left).
static size_t frames(uint32_t i, unsigned char *p, size_t n) {
    conn *c = &conns[i];
    size_t at = 0;
    while (n - at >= 2 && c->state == OPEN) {
        unsigned char b0 = p[at], b1 = p[at + 1];
        int opcode = b0 & 15;
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
        at += hl + (size_t) len;
        switch (opcode) {
        case 1:
        case 2:
            deliver(i, opcode, payload, (size_t) len);  // a fragmented message counts once
            break;
        case 0:
            break;  // continuation
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
                  "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                  host, port);
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
                    "[-b PAYLOAD] [-d SECONDS] [-u WARMUP] [-P SERVER_PID] [-B] [-q]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "h:p:c:k:s:w:b:d:u:P:Bq")) != -1) {
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
            deliveries = completed = published = 0;
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
        if (!measuring) a = take(), deliveries = completed = published = 0;
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
           "closes=%llu errors=%llu stalled=%d drained=%d total_published=%llu total_deliveries=%llu\n",
           (unsigned long long) deliveries, secs, secs > 0 ? deliveries / secs : 0, (unsigned long long) completed,
           secs > 0 ? completed / secs : 0, (unsigned long long) published, server_cpu_s,
           completed ? server_cpu_s * 1e6 / (double) completed : 0, rss_end, (unsigned long long) segs,
           deliveries ? (double) segs / (double) deliveries : 0, (unsigned long long) data_segs,
           deliveries ? (double) data_segs / (double) deliveries : 0,
           secs > 0 ? 100 * (b.self_cpu - a.self_cpu) / secs : 0, (unsigned long long) closes,
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
