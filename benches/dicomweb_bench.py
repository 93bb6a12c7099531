#!/usr/bin/env python3
"""Client side of benches/dicomweb.sh: STOW-RS ingest, QIDO-RS latency, WADO-RS part count.

The same code talks to every server, so the client's own cost is the same for all of them.
Every subcommand prints one JSON object on stdout.

  stow  BASE LIST [--batch 50]      POST the files named in LIST (one path a line) to
                                    BASE/studies, BATCH instances per request, one after
                                    another on one keep-alive connection; the multipart body
                                    is streamed from the files (Content-Length known up front)
  qido  BASE INPUT_DIR [--queries 500 --warmup 25 --seed 1 --counts FILE]
                                    time QIDO-RS study searches with varied filters; INPUT_DIR
                                    is a `beeldbrug generate` tree (patient IDs are its
                                    directory names)
  parts BASE STUDY_UID [--accept A] retrieve a study with WADO-RS and count its parts
  send  HOST PORT LIST              send the files in LIST back to back over one TCP
                                    connection with sendfile(2) (the loopback reference)
"""

import argparse
import datetime
import json
import os
import random
import statistics
import sys
import time
import urllib.parse

import requests

DICOM_JSON = "application/dicom+json"
# Data elements of the STOW-RS response (PS3.18 10.5.3)
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
READ_SIZE = 1 << 20


def session():
    s = requests.Session()
    # identity: no server compresses its answers for one client and not for the other
    s.headers.update({"Accept-Encoding": "identity", "Connection": "keep-alive"})
    return s


class MultipartBody:
    """A multipart/related body streamed from files; its length is known, so requests sends
    Content-Length instead of chunked transfer coding."""

    def __init__(self, paths, boundary):
        self.boundary = boundary
        self.parts = []
        total = 0
        for p in paths:
            size = os.path.getsize(p)
            head = (
                f"--{boundary}\r\nContent-Type: application/dicom\r\n"
                f"Content-Length: {size}\r\n\r\n"
            ).encode()
            self.parts.append((head, p, size))
            total += len(head) + size + 2
        self.closing = f"--{boundary}--\r\n".encode()
        self.length = total + len(self.closing)
        self.payload = sum(size for _, _, size in self.parts)

    def __len__(self):
        return self.length

    def __iter__(self):
        for head, path, _ in self.parts:
            yield head
            with open(path, "rb") as f:
                while True:
                    block = f.read(READ_SIZE)
                    if not block:
                        break
                    yield block
            yield b"\r\n"
        yield self.closing


def seq_len(body, key):
    return len(body.get(key, {}).get("Value", []) or [])


def cmd_stow(args):
    with open(args.list) as f:
        paths = [line.strip() for line in f if line.strip()]
    s = session()
    url = args.base.rstrip("/") + "/studies"
    stored = failed = payload = requests_sent = 0
    t0 = time.perf_counter()
    for i in range(0, len(paths), args.batch):
        boundary = f"dicomweb-bench-{i:08d}-{random.getrandbits(64):016x}"
        body = MultipartBody(paths[i : i + args.batch], boundary)
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": DICOM_JSON,
        }
        r = s.post(url, data=body, headers=headers)
        requests_sent += 1
        if r.status_code != 200:
            sys.exit(f"STOW-RS request {requests_sent}: HTTP {r.status_code}: {r.text[:500]}")
        answer = r.json()
        stored += seq_len(answer, REFERENCED_SOP_SEQUENCE)
        failed += seq_len(answer, FAILED_SOP_SEQUENCE)
        payload += body.payload
    secs = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "instances": len(paths),
                "stored": stored,
                "failed": failed,
                "bytes": payload,
                "requests": requests_sent,
                "seconds": round(secs, 3),
            }
        )
    )
    if stored != len(paths) or failed:
        sys.exit(f"STOW-RS stored {stored} of {len(paths)}, {failed} failed")


# Name prefixes of the generator's patient list (src/testdata/mod.rs). ASCII without spaces
# only: Orthanc 1.10.1 with DICOMweb plugin 1.7 finds nothing for "de Vries*", "van den Berg*",
# "Müller*" or "Ørsted*" (beeldbrug does), and an empty answer is cheaper to produce.
NAME_PREFIXES = ["Jansen", "Bakker", "Smit", "Jans", "Bak", "Sm", "Ba", "J"]


def date_range(rng):
    # generated study dates run from 2024-01-01 on, one day per ~1.5 studies (5000 patients:
    # to 2068); a 30-day window anywhere in the first 40 years
    d0 = datetime.date(2024, 1, 1) + datetime.timedelta(days=rng.randrange(0, 40 * 365))
    d1 = d0 + datetime.timedelta(days=30)
    return d0.strftime("%Y%m%d") + "-" + d1.strftime("%Y%m%d")


def make_queries(patient_ids, n, seed):
    """n query strings, the four kinds in turn, all with limit=25."""
    rng = random.Random(seed)
    kinds = []
    for i in range(n):
        kind = ("patient_id", "name_prefix", "date_range", "name_and_date")[i % 4]
        if kind == "patient_id":
            q = {"PatientID": rng.choice(patient_ids)}
        elif kind == "name_prefix":
            q = {"PatientName": rng.choice(NAME_PREFIXES) + "*"}
        elif kind == "date_range":
            q = {"StudyDate": date_range(rng)}
        else:
            q = {"PatientName": rng.choice(NAME_PREFIXES) + "*", "StudyDate": date_range(rng)}
        q["limit"] = "25"
        kinds.append((kind, urllib.parse.urlencode(q, safe="*", quote_via=urllib.parse.quote)))
    return kinds


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    # nearest rank
    k = max(1, int(-(-p * len(v) // 100)))
    return v[min(k, len(v)) - 1]


def cmd_qido(args):
    patient_ids = sorted(
        d for d in os.listdir(args.input_dir) if os.path.isdir(os.path.join(args.input_dir, d))
    )
    if not patient_ids:
        sys.exit(f"no patient directories in {args.input_dir}")
    s = session()
    url = args.base.rstrip("/") + "/studies"
    headers = {"Accept": DICOM_JSON}
    warm = make_queries(patient_ids, args.warmup, args.seed + 1000)
    queries = make_queries(patient_ids, args.queries, args.seed)

    def one(qs):
        t0 = time.perf_counter()
        r = s.get(url + "?" + qs, headers=headers)
        body = r.content
        ms = (time.perf_counter() - t0) * 1000
        if r.status_code not in (200, 204):
            sys.exit(f"QIDO-RS {qs}: HTTP {r.status_code}: {body[:300]!r}")
        results = len(json.loads(body)) if body.strip() else 0
        return ms, results

    for _, qs in warm:
        one(qs)
    times, per_kind, counts = [], {}, []
    for kind, qs in queries:
        ms, results = one(qs)
        times.append(ms)
        per_kind.setdefault(kind, []).append(ms)
        counts.append((qs, results))
    if args.counts:
        with open(args.counts, "w") as f:
            for qs, results in counts:
                f.write(f"{results}\t{qs}\n")
    out = {
        "queries": len(times),
        "p50_ms": round(pct(times, 50), 2),
        "p99_ms": round(pct(times, 99), 2),
        "mean_ms": round(statistics.fmean(times), 2),
        "max_ms": round(max(times), 2),
        "results": sum(c for _, c in counts),
        "kinds": {
            k: {"p50_ms": round(pct(v, 50), 2), "p99_ms": round(pct(v, 99), 2)}
            for k, v in per_kind.items()
        },
    }
    print(json.dumps(out))


def cmd_parts(args):
    s = session()
    url = args.base.rstrip("/") + "/studies/" + args.study
    r = s.get(url, headers={"Accept": args.accept}, stream=True)
    if r.status_code != 200:
        sys.exit(f"WADO-RS: HTTP {r.status_code}: {r.text[:300]}")
    ctype = r.headers.get("Content-Type", "")
    boundary = None
    for param in ctype.split(";")[1:]:
        k, _, v = param.strip().partition("=")
        if k.lower() == "boundary":
            boundary = v.strip('"')
    if not boundary:
        sys.exit(f"WADO-RS: no boundary in Content-Type {ctype!r}")
    delim = b"\r\n--" + boundary.encode()
    count = 0
    total = 0
    tail = b"\r\n"  # the first delimiter may open the body without a leading CRLF
    for chunk in r.iter_content(1 << 20):
        total += len(chunk)
        buf = tail + chunk
        count += buf.count(delim)
        tail = buf[-(len(delim) - 1) :]
    # every part opens with a delimiter; the closing one adds one more
    print(json.dumps({"parts": count - 1, "bytes": total, "content_type": ctype}))


def cmd_send(args):
    """The loopback reference: the files, back to back, onto one TCP connection with
    sendfile(2) (no copy through user space, no pipe). Timed from connect until the
    receiver has closed the connection, i.e. has read every byte."""
    import socket

    with open(args.list) as f:
        paths = [line.strip() for line in f if line.strip()]
    total = 0
    t0 = time.perf_counter()
    with socket.create_connection((args.host, args.port)) as sock:
        for p in paths:
            with open(p, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                offset = 0
                while offset < size:
                    n = os.sendfile(sock.fileno(), f.fileno(), offset, size - offset)
                    if n == 0:
                        sys.exit(f"sendfile: {p} ended early")
                    offset += n
                total += size
        # until the receiver has read everything and closed its end
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    print(json.dumps({"bytes": total, "seconds": round(time.perf_counter() - t0, 4)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("stow")
    p.add_argument("base")
    p.add_argument("list")
    p.add_argument("--batch", type=int, default=50)
    p.set_defaults(func=cmd_stow)
    p = sub.add_parser("qido")
    p.add_argument("base")
    p.add_argument("input_dir")
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--warmup", type=int, default=25)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--counts", help="write each query's result count here")
    p.set_defaults(func=cmd_qido)
    p = sub.add_parser("parts")
    p.add_argument("base")
    p.add_argument("study")
    p.add_argument("--accept", default='multipart/related; type="application/dicom"; transfer-syntax=*')
    p.set_defaults(func=cmd_parts)
    p = sub.add_parser("send")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("list")
    p.set_defaults(func=cmd_send)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
