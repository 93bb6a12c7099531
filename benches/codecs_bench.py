#!/usr/bin/env python3
"""The other decoders of benches/codecs.sh, on the same files, and the results table.

usage: codecs_bench.py MANIFEST.json REPS BEELDBRUG_DECODE.tsv BEELDBRUG_ENCODE.tsv [BASE_DECODE.tsv]

BASE_DECODE.tsv: the same files through the decode path before our own decoders
(`codecs decode-dicom-rs`), shown beside.

DCMTK (`dcmdjpls`, `dcmdjpeg`, `dcmdrle`, `dcmconv +te` for Deflate) is timed as a process
writing to /dev/shm (wall clock, start-up included; the `dcmconv +te` of the uncompressed
source, which decodes nothing, is its start-up and I/O floor). pydicom (with pyjpegls,
pylibjpeg-openjpeg, Pillow, its own RLE and Deflate) is timed in process: `dcmread` +
`pixel_array`. imagecodecs, for the codecs Debian's DCMTK lacks (JPEG 2000: OpenJPEG; HTJ2K:
OpenJPH; JPEG XL: libjxl), in process: `dcmread`, then each frame's codestream decoded on one
thread. With CPU_TIME=1 the in-process figures are the process's CPU time (every thread).
Medians of REPS runs. Prints a Markdown table.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import pydicom

DCMTK = {
    "jpegls": ["dcmdjpls"],
    "jpeg-lossless": ["dcmdjpeg"],
    "jpeg-extended": ["dcmdjpeg"],
    "jpeg-baseline": ["dcmdjpeg"],
    "rle": ["dcmdrle"],
    "deflate": ["dcmconv", "+te"],
    "j2k-lossless": None,  # Debian's DCMTK has no JPEG 2000 codec
    "htj2k-lossless": None,  # nor HTJ2K
    "jxl-lossless": None,  # nor JPEG XL
}

# The independent decoder through imagecodecs where DCMTK has none: function, library.
IMAGECODECS = {
    "j2k-lossless": ("jpeg2k_decode", "OpenJPEG", {"numthreads": 1}),
    "htj2k-lossless": ("htj2k_decode", "OpenJPH", {}),
    "jxl-lossless": ("jpegxl_decode", "libjxl", {"numthreads": 1}),
}


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


CPU = os.environ.get("CPU_TIME") == "1"


def time_process(cmd, reps):
    """Median wall time of the process, or with CPU_TIME=1 its user + system CPU time."""
    out = tempfile.mktemp(dir="/dev/shm", suffix=".dcm")
    times = []
    for _ in range(reps):
        before = os.times()
        start = time.perf_counter()
        subprocess.run(cmd + [out], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        after = os.times()
        if CPU:
            times.append(after.children_user + after.children_system - before.children_user - before.children_system)
        else:
            times.append(time.perf_counter() - start)
        os.unlink(out)
    return median(times)


def time_pydicom(path, reps):
    """None when no pydicom plugin installed here decodes it (JPEG Lossless needs
    pylibjpeg-libjpeg or gdcm; JPEG XL has none). With CPU_TIME=1 the process's CPU time."""
    clock = time.process_time if CPU else time.perf_counter
    times = []
    for _ in range(reps):
        start = clock()
        try:
            pydicom.dcmread(path).pixel_array
        except (RuntimeError, NotImplementedError, ValueError):
            return None
        times.append(clock() - start)
    return median(times)


def time_imagecodecs(path, reps, name):
    """`dcmread` and every frame decoded by imagecodecs' FUNCTION (one thread), or None."""
    if name not in IMAGECODECS:
        return None
    import imagecodecs
    from pydicom.encaps import generate_frames

    function, _, options = IMAGECODECS[name]
    decode = getattr(imagecodecs, function)
    clock = time.process_time if CPU else time.perf_counter
    times = []
    for _ in range(reps):
        start = clock()
        ds = pydicom.dcmread(path)
        for frame in generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)):
            decode(frame, **options)
        times.append(clock() - start)
    return median(times)


def read_tsv(path):
    """Median seconds per file: wall time, or with CPU_TIME=1 the thread's CPU time."""
    times = {}
    for line in open(path):
        fields = line.rstrip("\n").split("\t")
        times[fields[1]] = float(fields[6] if CPU and len(fields) > 6 else fields[2]) / 1000
    return times


def main(manifest, reps, decode_tsv, encode_tsv, base_tsv=None):
    m = json.load(open(manifest))
    reps = int(reps)
    pixels = m["rows"] * m["columns"] * m["frames"] * 2
    ours = read_tsv(decode_tsv)
    base = read_tsv(base_tsv) if base_tsv else {}
    floor = time_process(["dcmconv", "+te", m["source"]], reps)
    # The 8-bit JPEG baseline file decodes to half the bytes: its own source's floor.
    floor_8bit = time_process(["dcmconv", "+te", m["source_8bit"]], reps) if "source_8bit" in m else floor
    print(f"{m['frames']} frames of {m['rows']} x {m['columns']}, 16 bits allocated "
          f"({pixels / 1e6:.1f} MB decoded); median of {reps}; MB/s of decoded pixels; "
          f"{'CPU time (user + system) of the decoding thread or process' if CPU else 'wall time'}.\n")
    print("| codec | file MB | beeldbrug ms (MB/s) | before: dicom-rs path ms (MB/s) | DCMTK ms (MB/s) | DCMTK minus start-up ms | pydicom ms (MB/s) | imagecodecs ms (MB/s) | beeldbrug vs DCMTK (minus start-up) | vs pydicom | vs imagecodecs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, path in m["encoded"].items():
        b = ours[path]
        d = time_process(DCMTK[name] + [path], reps) if DCMTK[name] else None
        p = time_pydicom(path, reps)
        i = time_imagecodecs(path, reps, name)
        d_net = d - (floor_8bit if name == "jpeg-baseline" else floor) if d else None
        decoded = pixels // 2 if name == "jpeg-baseline" else pixels
        mbps = lambda s: f"{decoded / 1e6 / s:.0f}" if s else "–"
        # Speed ratios: above 1, beeldbrug decodes faster (DCMTK's start-up removed).
        ratio = lambda other: f"{other / b:.2f}x" if other else "–"
        o = base.get(path)
        before = f"{o * 1000:.0f} ({mbps(o)})" if o else "–"
        library = f" ({IMAGECODECS[name][1]})" if name in IMAGECODECS else ""
        print(f"| {name} | {os.path.getsize(path) / 1e6:.1f} | {b * 1000:.0f} ({mbps(b)}) | {before} | "
              f"{f'{d * 1000:.0f} ({mbps(d)})' if d else 'no codec'} | "
              f"{f'{d_net * 1000:.0f}' if d_net else '–'} | {f'{p * 1000:.0f} ({mbps(p)})' if p else 'no plugin'} | "
              f"{f'{i * 1000:.0f} ({mbps(i)}){library}' if i else '–'} | "
              f"{f'**{ratio(d_net)}**' if d_net else '–'} | {ratio(p)} | {ratio(i)} |")
    print(f"\nDCMTK start-up and I/O floor (`dcmconv +te` of the uncompressed source): {floor * 1000:.0f} ms; "
          f"of the 8-bit source, for jpeg-baseline: {floor_8bit * 1000:.0f} ms.\n")
    print("| on the wire (WADO-RS `transfer-syntax=`) | bytes | of Explicit VR LE | encode ms (MB/s of input) |")
    print("|---|---|---|---|")
    names = {"1.2.840.10008.1.2.4.80": "JPEG-LS lossless", "1.2.840.10008.1.2.4.90": "JPEG 2000 lossless",
             "1.2.840.10008.1.2.5": "RLE Lossless"}
    for line in open(encode_tsv):
        what, path, ms, mb, in_bytes, out_bytes, *_ = line.rstrip("\n").split("\t")
        ts = what.partition(":")[2]
        print(f"| {names.get(ts, ts)} from {os.path.basename(path)} | {out_bytes} | "
              f"{int(out_bytes) / int(in_bytes):.2f} | {float(ms):.0f} ({float(mb):.0f}) |")
    print(f"| Explicit VR LE (as stored) | {os.path.getsize(m['source'])} | 1.00 | – |")


if __name__ == "__main__":
    main(*sys.argv[1:])
