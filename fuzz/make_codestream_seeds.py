#!/usr/bin/env python3
"""Write the seeds of fuzz/corpus/codestream (run from fuzz/): every instance that
tests/codecs/codecs.py makes with independent encoders (DCMTK dcmcjpls/dcmcjpeg/dcmcrle,
pydicom with pylibjpeg-openjpeg, pydicom's Deflate), whole and as `broken` cuts them
(codestream truncated at half, middle garbled), in the target's input format: syntax index,
Rows - 1, Columns - 1, Bits Allocated and frames byte, then the codestream (for Deflate the
deflated data set). See fuzz/checks/codestream.rs.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import pydicom
from pydicom.encaps import generate_frames

SYNTAXES = [
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.203",
    "1.2.840.10008.1.2.4.110",
    "1.2.840.10008.1.2.4.112",
]
DEFLATED = "1.2.840.10008.1.2.1.99"
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../tests/codecs/codecs.py")


def seed(path):
    ds = pydicom.dcmread(path)
    ts = str(ds.file_meta.TransferSyntaxUID)
    head = bytes([SYNTAXES.index(ts), ds.Rows - 1, ds.Columns - 1, 1 if ds.BitsAllocated == 16 else 0])
    if ts == DEFLATED:
        raw = open(path, "rb").read()
        group_length = struct.unpack("<I", raw[140:144])[0]
        return head + raw[144 + group_length :]
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    return head + frame


def main(out):
    with tempfile.TemporaryDirectory() as tmp:
        made = json.loads(subprocess.run([sys.executable, SCRIPT, "make", tmp], check=True, capture_output=True).stdout)
        broken = json.loads(subprocess.run([sys.executable, SCRIPT, "broken", tmp], check=True, capture_output=True).stdout)
        for entry in made["instances"] + broken:
            with open(os.path.join(out, f"seed-{entry['name']}"), "wb") as f:
                f.write(seed(entry["sent"]))
        # Lying headers: a JPEG 2000 SIZ and a JPEG-LS SOF55 announcing 65535 x 65535 on a
        # 96 x 80 image, an RLE header pointing past its fragment.
        by_name = {e["name"]: e["sent"] for e in made["instances"]}
        j2k = bytearray(seed(by_name["j2k-lossless"]))
        siz = j2k.index(b"\xff\x4f\xff\x51", 4) + 2
        j2k[siz + 6 : siz + 14] = struct.pack(">II", 65535, 65535)
        jls = bytearray(seed(by_name["jpegls"]))
        sof = jls.index(b"\xff\xf7", 4)
        jls[sof + 5 : sof + 9] = struct.pack(">HH", 65535, 65535)
        rle = bytearray(seed(by_name["rle"]))
        rle[4 + 8 : 4 + 12] = struct.pack("<I", 0x7FFFFFFF)
        for name, data in (("j2k-size", j2k), ("jpegls-size", jls), ("rle-offsets", rle)):
            with open(os.path.join(out, f"seed-lying-{name}"), "wb") as f:
                f.write(bytes(data))
        # Sequential DCT JPEG (our jpeg_dct decoder): DCMTK's 12-bit extended and 8-bit
        # baseline, Pillow's with restart markers; whole, cut at half, the entropy-coded data
        # garbled, a SOF announcing 65535 x 65535, a restart marker renumbered.
        lossy = json.loads(subprocess.run([sys.executable, SCRIPT, "lossy", tmp], check=True, capture_output=True).stdout)
        by_what = {e["what"]: e["encoded"] for e in lossy}
        for name, what in (("jpeg-extended", "odd12 ee"), ("jpeg-baseline", "grey8 eb"), ("jpeg-restart", "grey8 restart")):
            whole = bytearray(seed(by_what[what]))
            sos = whole.index(b"\xff\xda", 4)
            garbled = bytearray(whole)
            for at in range(sos + 20, len(garbled) - 2, 7):
                garbled[at] ^= 0x5A
            lying = bytearray(whole)
            sof = lying.index(b"\xff\xc0", 4) if b"\xff\xc0" in lying[4:] else lying.index(b"\xff\xc1", 4)
            lying[sof + 5 : sof + 9] = struct.pack(">HH", 65535, 65535)
            cases = [("", whole), ("truncated-", whole[: len(whole) // 2]), ("garbled-", garbled), ("lying-", lying)]
            if b"\xff\xd1" in whole:
                renumbered = bytearray(whole)
                at = renumbered.index(b"\xff\xd1")
                renumbered[at + 1] = 0xD5
                cases.append(("restart-", renumbered))
            for prefix, data in cases:
                with open(os.path.join(out, f"seed-{prefix}{name}"), "wb") as f:
                    f.write(bytes(data))
        # HTJ2K (OpenJPH) and JPEG XL (libjxl), the grey instances of `codecs.py htj2k` and
        # `jpegxl`: whole, cut at half, the middle garbled; and a JPEG XL size header
        # announcing 2^30 x 2^30 (jxl-oxide would allocate it before reading a pixel).
        for command in ("htj2k", "jpegxl"):
            sub = os.path.join(tmp, command)
            os.mkdir(sub)
            made = json.loads(subprocess.run([sys.executable, SCRIPT, command, sub], check=True, capture_output=True).stdout)
            for entry in made["instances"]:
                if entry["samples"] != 1 or entry["transfer_syntax"] not in SYNTAXES:
                    continue
                whole = bytearray(seed(entry["sent"]))
                middle = 4 + (len(whole) - 4) // 2
                garbled = bytearray(whole)
                for at in range(middle, min(middle + 64, len(garbled))):
                    garbled[at] ^= 0xA5
                cases = [("", whole), ("truncated-", whole[: middle]), ("garbled-", garbled)]
                if command == "jpegxl" and entry["name"] == "jxl-lossless":
                    # small 0, height selector 3 with 30 bits of ones, ratio 1 (square).
                    bits = [0, 1, 1] + [1] * 30 + [1, 0, 0]
                    header = bytes(sum(b << i for i, b in enumerate(bits[k : k + 8])) for k in range(0, len(bits), 8))
                    cases.append(("lying-", whole[:6] + header + whole[6 + len(header) :]))
                for prefix, data in cases:
                    with open(os.path.join(out, f"seed-{prefix}{entry['name']}"), "wb") as f:
                        f.write(bytes(data))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "corpus/codestream")
