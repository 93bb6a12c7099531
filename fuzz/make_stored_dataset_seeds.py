#!/usr/bin/env python3
"""Write the hand-made seeds of fuzz/corpus/stored_dataset (run from fuzz/): data sets
without a file meta group, as the `stored_dataset` target takes them (it stores each in
Explicit and in Implicit VR Little Endian).

A small CT image, whole, in both encodings; and the same CT followed, after Pixel Data, by
the hostile trailing elements of issue 18: sequences nested 1,000 deep (crashed the gateway
on transcoding), 64 deep (the most that is accepted), a last OB announcing 200 MB of which
only 4 KiB arrive (a truncated data set that was acknowledged), and a sequence that is never
closed. Every byte after Pixel Data is written by hand.
"""
import os
import struct

def element(group, elem, vr, value, explicit):
    if len(value) % 2:
        value += b" " if vr in (b"CS", b"LO", b"SH", b"PN", b"DA", b"TM", b"IS", b"DS") else b"\0"
    tag = struct.pack("<HH", group, elem)
    if not explicit:
        return tag + struct.pack("<I", len(value)) + value
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR"):
        return tag + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value

def us(group, elem, v, explicit):
    return element(group, elem, b"US", struct.pack("<H", v), explicit)

def ct(explicit):
    e = lambda g, el, vr, v: element(g, el, vr, v, explicit)
    rows = cols = 8
    pixels = b"".join(struct.pack("<H", (i * 37) % 4096) for i in range(rows * cols))
    return b"".join([
        e(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0"),
        e(0x0008, 0x0018, b"UI", b"1.2.826.0.1.3680043.9.7433.18.3\0"),
        e(0x0008, 0x0060, b"CS", b"CT"),
        e(0x0010, 0x0010, b"PN", b"Fuzz^Seed"),
        e(0x0010, 0x0020, b"LO", b"FUZZ18"),
        e(0x0020, 0x000D, b"UI", b"1.2.826.0.1.3680043.9.7433.18.1\0"),
        e(0x0020, 0x000E, b"UI", b"1.2.826.0.1.3680043.9.7433.18.2\0"),
        us(0x0028, 0x0002, 1, explicit),
        e(0x0028, 0x0004, b"CS", b"MONOCHROME2"),
        us(0x0028, 0x0010, rows, explicit),
        us(0x0028, 0x0011, cols, explicit),
        us(0x0028, 0x0100, 16, explicit),
        us(0x0028, 0x0101, 12, explicit),
        us(0x0028, 0x0102, 11, explicit),
        us(0x0028, 0x0103, 0, explicit),
        e(0x7FE0, 0x0010, b"OW", pixels),
    ])

# Explicit VR Little Endian headers of undefined length (PS3.5 7.5.1).
UNDEFINED = b"\xff\xff\xff\xff"
def sequence_open(group, elem):
    return struct.pack("<HH", group, elem) + b"SQ\0\0" + UNDEFINED
ITEM_OPEN = b"\xfe\xff\x00\xe0" + UNDEFINED
ITEM_END = b"\xfe\xff\x0d\xe0\0\0\0\0"
SEQUENCE_END = b"\xfe\xff\xdd\xe0\0\0\0\0"

def nested(depth, inner):
    """`inner` inside `depth` sequences: Digital Signatures Sequence (FFFA,FFFA), the one
    standard sequence after Pixel Data, then Content Sequences (0040,A730)."""
    out = sequence_open(0xFFFA, 0xFFFA) + ITEM_OPEN
    out += (sequence_open(0x0040, 0xA730) + ITEM_OPEN) * (depth - 1)
    return out + inner + (ITEM_END + SEQUENCE_END) * depth

def truncated_ob():
    """Nested sequences whose last OB announces 200 MB; 4 KiB arrive, then the data set
    ends (no delimiters)."""
    out = sequence_open(0xFFFA, 0xFFFA) + ITEM_OPEN
    out += (sequence_open(0x0040, 0xA730) + ITEM_OPEN) * 3
    announced = 200 * 1024 * 1024
    out += struct.pack("<HH", 0x0042, 0x0011) + b"OB\0\0" + struct.pack("<I", announced)
    return out + bytes((i * 7) & 0xFF for i in range(4096))

def unclosed():
    return sequence_open(0xFFFA, 0xFFFA) + ITEM_OPEN + element(0x0008, 0x0100, b"SH", b"CODE", True)

def encapsulated():
    """The CT with its Pixel Data as fragments: an empty Basic Offset Table, one fragment."""
    whole = ct(True)
    head = whole[: whole.index(struct.pack("<HH", 0x7FE0, 0x0010))]
    fragment = bytes(range(128))
    return (head + struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + UNDEFINED
            + b"\xfe\xff\x00\xe0" + struct.pack("<I", 0)
            + b"\xfe\xff\x00\xe0" + struct.pack("<I", len(fragment)) + fragment
            + SEQUENCE_END)

seeds = {
    "seed-ct-explicit": ct(True),
    "seed-ct-implicit": ct(False),
    "seed-ct-trailing-nesting-1000": ct(True) + nested(1000, b""),
    "seed-ct-trailing-nesting-64": ct(True) + nested(64, b""),
    "seed-ct-trailing-truncated-ob": ct(True) + truncated_ob(),
    "seed-ct-trailing-unclosed-sequence": ct(True) + unclosed(),
    "seed-ct-encapsulated": encapsulated(),
}
os.makedirs("corpus/stored_dataset", exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join("corpus/stored_dataset", name), "wb") as f:
        f.write(data)
