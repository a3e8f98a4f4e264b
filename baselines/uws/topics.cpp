// Native uWebSockets baseline for the topics protocol of `shardcast serve --topics`
// (src/bin/shardcast/pubsub.rs), on uWebSockets' own pub/sub (ws->subscribe, app.publish):
//
// - ws://HOST:PORT/?sub=T1&sub=T2 subscribes at upgrade. Names are URL-encoded (%XX, and `+`
//   for a space); other parameters are ignored. A name that is empty, malformed (a `%` not
//   followed by two hex digits), not UTF-8 or with a space refuses the upgrade with 400, as
//   shardcast does.
// - A text message `sub T` or `unsub T` subscribes or unsubscribes.
// - A message, text or binary, `pub T BODY` publishes BODY (the bytes after the second space)
//   to T's subscribers with the message's opcode, the sender too if it is subscribed.
// - A topic name is not empty, has no space and is UTF-8; anything else closes that client
//   with 1008 and the error as the reason.
//
//   build/uws-topics [PORT]      (0 or nothing: any free port)
//
// Listens on 127.0.0.1 and prints `listening on PORT` on stdout. Not part of CI: a baseline for
// baselines/topics-compare.sh, built by baselines/uws/build.sh.

#include "App.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct PerSocketData {
    // The topics of the upgrade's query, subscribed in `open` and then released.
    std::vector<std::string> subs;
};

int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool utf8(std::string_view s) {
    size_t i = 0, n = s.size();
    while (i < n) {
        unsigned char c = (unsigned char) s[i];
        size_t extra;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        else if ((c & 0xE0) == 0xC0) { extra = 1; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { extra = 2; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { extra = 3; cp = c & 0x07; }
        else return false;
        if (extra >= n - i) return false;
        for (size_t k = 1; k <= extra; k++) {
            unsigned char d = (unsigned char) s[i + k];
            if ((d & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (d & 0x3F);
        }
        // Overlong forms, surrogates and code points past U+10FFFF.
        if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
            return false;
        }
        i += extra + 1;
    }
    return true;
}

// Why `topic` is not a valid name, or nullptr.
const char *invalid(std::string_view topic) {
    if (topic.empty()) return "empty topic";
    if (topic.find(' ') != std::string_view::npos) return "a topic has no space";
    if (!utf8(topic)) return "topic is not UTF-8";
    return nullptr;
}

// The decoded `sub=` values of a raw query string (without the `?`); the error, or nullptr.
const char *subscriptions(std::string_view query, std::vector<std::string> &out) {
    while (!query.empty()) {
        size_t amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        size_t eq = pair.find('=');
        if (eq == std::string_view::npos || pair.substr(0, eq) != "sub") continue;
        std::string_view value = pair.substr(eq + 1);
        std::string topic;
        topic.reserve(value.size());
        for (size_t i = 0; i < value.size(); i++) {
            char c = value[i];
            if (c == '+') {
                topic.push_back(' ');
            } else if (c == '%') {
                if (value.size() - i < 3) return "bad percent-encoding in ?sub=";
                int h = hex(value[i + 1]), l = hex(value[i + 2]);
                if (h < 0 || l < 0) return "bad percent-encoding in ?sub=";
                topic.push_back((char) (h * 16 + l));
                i += 2;
            } else {
                topic.push_back(c);
            }
        }
        if (const char *error = invalid(topic)) return error;
        out.push_back(std::move(topic));
    }
    return nullptr;
}

}  // namespace

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    uWS::App app;

    app.ws<PerSocketData>("/*", {
        .compression = uWS::DISABLED,
        .maxPayloadLength = 64 * 1024,
        .idleTimeout = 960,
        .maxBackpressure = 16 * 1024 * 1024,
        .closeOnBackpressureLimit = false,
        .resetIdleTimeoutOnSend = false,
        .sendPingsAutomatically = true,
        .upgrade = [](auto *res, auto *req, auto *context) {
            PerSocketData data;
            if (const char *error = subscriptions(req->getQuery(), data.subs)) {
                res->writeStatus("400 Bad Request")->end(error, true);
                return;
            }
            res->template upgrade<PerSocketData>(std::move(data),
                req->getHeader("sec-websocket-key"),
                req->getHeader("sec-websocket-protocol"),
                req->getHeader("sec-websocket-extensions"),
                context);
        },
        .open = [](auto *ws) {
            PerSocketData *data = ws->getUserData();
            for (const std::string &topic : data->subs) ws->subscribe(topic);
            std::vector<std::string>().swap(data->subs);
        },
        .message = [&app](auto *ws, std::string_view message, uWS::OpCode opCode) {
            bool text = opCode == uWS::OpCode::TEXT;
            size_t first = message.find(' ');
            if (first == std::string_view::npos) {
                ws->end(1008, "expected sub T, unsub T or pub T BODY");
                return;
            }
            std::string_view verb = message.substr(0, first), rest = message.substr(first + 1);
            if (verb == "pub") {
                size_t second = rest.find(' ');
                if (second == std::string_view::npos) {
                    ws->end(1008, "pub T BODY: no space after the topic");
                    return;
                }
                std::string_view topic = rest.substr(0, second);
                if (topic.empty()) {
                    ws->end(1008, "empty topic");
                    return;
                }
                if (!text && !utf8(topic)) {
                    ws->end(1008, "topic is not UTF-8");
                    return;
                }
                app.publish(topic, rest.substr(second + 1), opCode, false);
            } else if (verb == "sub" || verb == "unsub") {
                if (!text) {
                    ws->end(1008, "sub and unsub must be text messages");
                    return;
                }
                if (const char *error = invalid(rest)) {
                    ws->end(1008, error);
                    return;
                }
                if (verb == "sub") ws->subscribe(rest);
                else ws->unsubscribe(rest);
            } else {
                ws->end(1008, "expected sub T, unsub T or pub T BODY");
            }
        },
    }).listen("127.0.0.1", port, [](us_listen_socket_t *listen_socket) {
        if (!listen_socket) {
            fprintf(stderr, "uws-topics: cannot listen on 127.0.0.1\n");
            exit(1);
        }
        printf("listening on %d\n", us_socket_local_port(0, (us_socket_t *) listen_socket));
        fflush(stdout);
    });

    app.run();
    return 0;
}
