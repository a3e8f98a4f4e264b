#!/usr/bin/env bash
# Builds the native uWebSockets baseline of the topics protocol, baselines/uws/topics.cpp, into
# baselines/uws/build/uws-topics, with gcc/g++ alone (no SSL, no zlib, no make). Not part of CI.
#
#   baselines/uws/build.sh
#
# Sources: UWS_SRC and USOCKETS_SRC, checked-out trees of uNetworking/uWebSockets and
# uNetworking/uSockets, if set; else shallow clones of both into build/ (USOCKETS_SRC defaults to
# the uSockets/ submodule of UWS_SRC when that is populated). Extra flags: CFLAGS_EXTRA (both
# compilers), e.g. CFLAGS_EXTRA=-march=native as uWebSockets' own build.c does.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=$here/build
mkdir -p "$build"

if [[ -z ${UWS_SRC:-} ]]; then
    UWS_SRC=$build/uWebSockets
    [[ -f $UWS_SRC/src/App.h ]] ||
        git clone --depth 1 https://github.com/uNetworking/uWebSockets "$UWS_SRC"
fi
if [[ -z ${USOCKETS_SRC:-} ]]; then
    if [[ -f $UWS_SRC/uSockets/src/libusockets.h ]]; then
        USOCKETS_SRC=$UWS_SRC/uSockets
    else
        USOCKETS_SRC=$build/uSockets
        [[ -f $USOCKETS_SRC/src/libusockets.h ]] ||
            git clone --depth 1 https://github.com/uNetworking/uSockets "$USOCKETS_SRC"
    fi
fi
[[ -f $UWS_SRC/src/App.h ]] || { echo "build.sh: no src/App.h in UWS_SRC=$UWS_SRC" >&2; exit 1; }
[[ -f $USOCKETS_SRC/src/libusockets.h ]] ||
    { echo "build.sh: no src/libusockets.h in USOCKETS_SRC=$USOCKETS_SRC" >&2; exit 1; }

echo "uWebSockets: $UWS_SRC ($(git -C "$UWS_SRC" rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "uSockets:    $USOCKETS_SRC ($(git -C "$USOCKETS_SRC" rev-parse --short HEAD 2>/dev/null || echo '?'))"

opt="-O3 -flto=auto -DLIBUS_NO_SSL -DUWS_NO_ZLIB ${CFLAGS_EXTRA:-}"
objs=$build/usockets-obj
rm -rf "$objs"
mkdir -p "$objs"
# uSockets: the C sources only (src/crypto/*.cpp is TLS-only; io_uring, QUIC and the other
# event loops are off without their flags), epoll as the event loop.
for src in "$USOCKETS_SRC"/src/*.c "$USOCKETS_SRC"/src/eventing/*.c "$USOCKETS_SRC"/src/crypto/*.c; do
    gcc $opt -std=c11 -I"$USOCKETS_SRC/src" -c "$src" -o "$objs/$(basename "${src%.c}").o"
done
g++ $opt -std=c++20 -I"$UWS_SRC/src" -I"$USOCKETS_SRC/src" \
    "$here/topics.cpp" "$objs"/*.o -o "$build/uws-topics"
echo "built $build/uws-topics"
