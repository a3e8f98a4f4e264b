"""Works around one defect of kosoku 0.1.0 in the permessage-deflate cases (12.*, 13.*).

On a connection that negotiated permessage-deflate, kosoku hands a message that arrived
uncompressed (RSV1 clear, which RFC 7692 allows for any message, and which a server sends when
compressing would not make the message smaller, or for messages under its size threshold) to
the case as a `str` with one code point per byte (Latin-1), where the case expects the bytes:
the case then fails hashing it ("Strings must be encoded before hashing"), whatever the bytes
were. This turns that `str` back into exactly the bytes that came off the wire (Latin-1 maps
each code point 0-255 to one byte), so the case's own checks (type, length, SHA-1 of the
content) apply unchanged. Idempotent.

Usage: python kosoku_fix.py   (with the venv's python, where kosoku is installed)
"""
import os

import kosoku.cases

path = os.path.join(os.path.dirname(kosoku.cases.__file__), "case12_x_x.py")
source = open(path).read()
marker = "# shardcast: kosoku_fix"
head = "def onMessage(self, msg, binary):\n   m = hashlib.sha1()"
fixed = (
    "def onMessage(self, msg, binary):\n"
    f"   {marker}\n"
    "   if isinstance(msg, str):\n"
    "      msg = msg.encode('latin-1')\n"
    "   m = hashlib.sha1()"
)
if marker not in source:
    if source.count(head) != 1:
        raise SystemExit(f"kosoku_fix: {path} is not the file this fix knows")
    open(path, "w").write(source.replace(head, fixed))
