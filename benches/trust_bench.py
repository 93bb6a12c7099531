#!/usr/bin/env python3
"""Client side of benches/trust.sh: the same DICOMweb requests against beeldbrug with the
trust path off and on, interleaved, so that the machine's drift hits every mode alike.

Subcommands (each prints one JSON object on stdout, `report` prints Markdown):

  jwks KEY_PEM KID OUT          write the JWKS (RFC 7517) of an EC P-256 private key
  run  CONFIG_JSON              the measurements; CONFIG_JSON names the modes (base URL,
                                server PID, TLS files, whether to send a token), the token
                                claims, the study, the patient IDs and the sizes
  report RESULTS_JSON           the Markdown tables of a `run`

The client is Python's http.client (one persistent connection per mode, like a gateway's
connection pool; HTTPS with the client certificate and the test CA). Tokens are ES256 JWTs
minted with PyJWT, one per request (every `jti` is single-use), all minted before the timed
part they are used in: minting is never timed.

Timed: request written to last body byte read. Server CPU: user + system time of the
server process (/proc/PID/stat, clock ticks) read just before and after each request
(outside the timed span), summed per mode. Client CPU: this process's CPU time
(time.process_time) over the same span, summed per mode.
"""

import argparse
import base64
import http.client
import json
import os
import random
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid

READ = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
DICOM_JSON = "application/dicom+json"


# --- tokens -----------------------------------------------------------------------------------
def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def cmd_jwks(args):
    from cryptography.hazmat.primitives import serialization

    with open(args.key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    nums = key.public_key().public_numbers()
    jwk = {
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": args.kid,
        "x": b64u(nums.x.to_bytes(32, "big")), "y": b64u(nums.y.to_bytes(32, "big")),
    }
    with open(args.out, "w") as f:
        json.dump({"keys": [jwk]}, f)
    print(json.dumps({"jwks": args.out, "kid": args.kid}))


class Minter:
    def __init__(self, cfg):
        import jwt  # PyJWT

        self.jwt = jwt
        with open(cfg["key_file"], "rb") as f:
            self.key = f.read()
        self.cfg = cfg
        self.run = uuid.uuid4().hex[:12]
        self.next = 0

    def mint(self, n):
        """n fresh bearer tokens (new jti each), valid for 15 minutes from now."""
        now = int(time.time())
        c = self.cfg
        out = []
        for _ in range(n):
            self.next += 1
            claims = {
                "iss": c["issuer"], "aud": c["audience"], "sub": "bench",
                "iat": now, "nbf": now, "exp": now + 900,
                "jti": f"bench-{self.run}-{self.next}",
                "ura": c["ura"], "uzi": c["uzi"], "role": c["role"],
                "purpose_of_use": c["purpose_of_use"],
            }
            tok = self.jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": c["kid"]})
            out.append("Bearer " + tok)
        return out


# --- one mode: a server and how to talk to it -------------------------------------------------
def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])  # utime, stime (fields 14, 15)


class Mode:
    def __init__(self, name, m, minter):
        self.name = name
        self.label = m["label"]
        u = urllib.parse.urlsplit(m["base"])
        self.https = u.scheme == "https"
        self.host, self.port, self.root = u.hostname, u.port, u.path.rstrip("/")
        self.pid = m["pid"]
        self.token = m.get("token", False)
        self.minter = minter
        self.ctx = None
        if self.https:
            self.ctx = ssl.create_default_context(cafile=m["ca"])
            self.ctx.load_cert_chain(m["cert"], m["key"])
            self.ctx_files = (m["ca"], m["cert"], m["key"])
        self.conn = None
        self.tokens = []
        self.server_ticks = 0
        self.client_cpu = 0.0
        self.requests = 0

    def connect(self):
        if self.https:
            c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=120)
        else:
            c = http.client.HTTPConnection(self.host, self.port, timeout=120)
        c.connect()
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c

    def mint(self, n):
        if self.token:
            self.tokens.extend(self.minter.mint(n))

    def request(self, path, accept, fresh=False, buf=None):
        """One GET; returns (seconds, first_byte_seconds, status, body_or_size). Untimed
        around it: the token taken from the pre-minted list, the CPU readings."""
        headers = {"Accept": accept, "Accept-Encoding": "identity"}
        if self.token:
            if not self.tokens:
                self.mint(50)
            headers["Authorization"] = self.tokens.pop()
        if fresh:
            conn = None
        else:
            if self.conn is None:
                self.conn = self.connect()
            conn = self.conn
        s0 = cpu_ticks(self.pid)
        c0 = time.process_time()
        t0 = time.perf_counter()
        if conn is None:  # a new TCP connection (and TLS handshake) inside the timed span
            conn = self.connect()
        conn.request("GET", self.root + path, headers=headers)
        resp = conn.getresponse()
        t1 = time.perf_counter()
        if buf is None:
            body = resp.read()
            size = len(body)
        else:
            size = 0
            while True:
                n = resp.readinto(buf)
                if not n:
                    break
                size += n
            body = size
        t2 = time.perf_counter()
        self.client_cpu += time.process_time() - c0
        self.server_ticks += cpu_ticks(self.pid) - s0
        self.requests += 1
        if fresh:
            conn.close()
        elif resp.will_close:
            self.conn.close()
            self.conn = None
        return t2 - t0, t1 - t0, resp.status, body

    def cpu_reset(self):
        self.server_ticks, self.client_cpu, self.requests = 0, 0.0, 0

    def cpu(self):
        n = max(self.requests, 1)
        return {
            "server_cpu_ms_per_request": round(self.server_ticks / CLK_TCK * 1000 / n, 3),
            "client_cpu_ms_per_request": round(self.client_cpu * 1000 / n, 3),
            "requests": self.requests,
        }


def pct(values, p):
    v = sorted(values)
    k = max(1, int(-(-p * len(v) // 100)))  # nearest rank
    return v[min(k, len(v)) - 1]


def med(values):
    return statistics.median(values)


def count_parts(body_iter, boundary):
    delim = b"\r\n--" + boundary.encode()
    count, tail = 0, b"\r\n"
    for chunk in body_iter:
        buf = tail + chunk
        count += buf.count(delim)
        tail = buf[-(len(delim) - 1):]
    return count - 1


def mitz_queries(url):
    if not url:
        return None
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("GET", "/stats")
    return json.loads(c.getresponse().read())["queries"]


def check_parts(mode, study, accept, expected):
    """One untimed retrieve: 200 and one part per instance (this also warms the consent
    cache for the study's patient)."""
    if mode.token:
        mode.mint(1)
    conn = mode.connect()
    headers = {"Accept": accept, "Accept-Encoding": "identity"}
    if mode.token:
        headers["Authorization"] = mode.tokens.pop()
    conn.request("GET", f"{mode.root}/studies/{study}", headers=headers)
    r = conn.getresponse()
    if r.status != 200:
        sys.exit(f"{mode.name}: WADO-RS HTTP {r.status}: {r.read()[:300]!r}")
    ctype = r.getheader("Content-Type", "")
    boundary = next(
        (v.strip().partition("=")[2].strip('"') for v in ctype.split(";")[1:]
         if v.strip().lower().startswith("boundary=")), None)
    if not boundary:
        sys.exit(f"{mode.name}: no boundary in {ctype!r}")
    parts = count_parts(iter(lambda: r.read(READ), b""), boundary)
    conn.close()
    if parts != expected:
        sys.exit(f"{mode.name}: WADO-RS gave {parts} parts, expected {expected}")
    return parts


# --- the run ----------------------------------------------------------------------------------
def cmd_run(args):
    with open(args.config) as f:
        cfg = json.load(f)
    minter = Minter(cfg["jwt"])
    modes = [Mode(name, m, minter) for name, m in cfg["modes"].items()]
    names = [m.name for m in modes]
    rng = random.Random(cfg.get("seed", 1))
    out = {"modes": {m.name: {"label": m.label} for m in modes}, "order": names}
    mitz = cfg.get("mitz_url")

    def log(msg):
        print(f"== {msg}", file=sys.stderr, flush=True)

    def orders(i):
        # ABC, CBA, ABC, ...: each mode goes first and last equally often
        return modes if i % 2 == 0 else modes[::-1]

    # untimed checks: every mode answers the study in full, and the same QIDO results
    accept = cfg["accept"]
    study, parts = cfg["study"], cfg["parts"]
    for m in modes:
        check_parts(m, study, accept, parts)
    patients = cfg["patients"]
    keyless = "/studies?limit=25"
    pid_queries = [rng.choice(patients) for _ in range(cfg["qido_queries"])]
    warm_ids = sorted(set(pid_queries))
    log(f"warming: {len(warm_ids)} PatientID searches and 5 searches without keys per mode (untimed)")
    for m in modes:
        m.mint(len(warm_ids) + 10)
        for pid in warm_ids:
            _, _, st, body = m.request(f"/studies?PatientID={pid}", DICOM_JSON)
            if st != 200:
                sys.exit(f"{m.name}: QIDO PatientID={pid}: HTTP {st}: {body[:300]!r}")
        for _ in range(5):
            _, _, st, body = m.request(keyless, DICOM_JSON)
            if st != 200:
                sys.exit(f"{m.name}: QIDO {keyless}: HTTP {st}: {body[:300]!r}")
    consent_before = mitz_queries(mitz)

    # (1) WADO-RS, cached study, interleaved
    buf = bytearray(READ)
    wado = {m.name: {"total": [], "ttfb": [], "bytes": 0} for m in modes}
    for m in modes:
        m.cpu_reset()
    for i in range(cfg["wado_reps"]):
        for m in orders(i):
            m.mint(1)
            secs, ttfb, st, size = m.request(f"/studies/{study}", accept, buf=buf)
            if st != 200:
                sys.exit(f"{m.name}: WADO-RS HTTP {st}")
            wado[m.name]["total"].append(secs)
            wado[m.name]["ttfb"].append(ttfb)
            wado[m.name]["bytes"] = size
        log("retrieve %d: %s" % (i + 1, ", ".join(f"{m.name} {wado[m.name]['total'][-1]:.3f} s" for m in modes)))
    for m in modes:
        if not wado[m.name]["total"]:
            continue
        w = wado[m.name]
        w.update(median_s=round(med(w["total"]), 4), ttfb_median_ms=round(med(w["ttfb"]) * 1000, 2),
                 total=[round(x, 4) for x in w["total"]], ttfb=None, **m.cpu())
        w["mb_s"] = round(w["bytes"] / 1e6 / w["median_s"], 1)
        out["modes"][m.name]["wado"] = w

    # (1b) the same retrieve with curl (C, OpenSSL), a new connection (and TLS handshake) per
    # retrieve, into /dev/null: the client's own cost is not Python's
    if cfg.get("curl_reps", 0) > 0:
        cw = {m.name: [] for m in modes}
        for i in range(cfg["curl_reps"]):
            for m in orders(i):
                cmd = ["curl", "-sS", "-o", "/dev/null", "-H", f"Accept: {accept}",
                       "-w", "%{http_code} %{time_total} %{size_download}"]
                if m.token:
                    m.mint(1)
                    cmd += ["-H", "Authorization: " + m.tokens.pop()]
                if m.https:
                    cmd += ["--cacert", m.ctx_files[0], "--cert", m.ctx_files[1], "--key", m.ctx_files[2]]
                scheme = "https" if m.https else "http"
                cmd.append(f"{scheme}://{m.host}:{m.port}{m.root}/studies/{study}")
                res = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
                if res[0] != "200":
                    sys.exit(f"{m.name}: curl WADO-RS HTTP {res[0]}")
                cw[m.name].append(float(res[1]))
        for m in modes:
            out["modes"][m.name]["wado_curl"] = {
                "median_s": round(med(cw[m.name]), 4), "total": [round(x, 4) for x in cw[m.name]]}
        log("curl retrieves: " + ", ".join(f"{m.name} median {med(cw[m.name]):.3f} s" for m in modes))

    # (2) QIDO-RS, interleaved per query: the same query goes to every mode in turn
    def qido_block(kind, paths, fresh=False):
        lat = {m.name: [] for m in modes}
        results = {m.name: 0 for m in modes}
        same = 0
        for m in modes:
            m.cpu_reset()
            m.mint(len(paths))
        for i, path in enumerate(paths):
            counts = set()
            for m in orders(i):
                secs, _, st, body = m.request(path, DICOM_JSON, fresh=fresh)
                if st not in (200, 204):
                    sys.exit(f"{m.name}: QIDO {path}: HTTP {st}: {body[:300]!r}")
                n = len(json.loads(body)) if body.strip() else 0
                results[m.name] += n
                counts.add(n)
                lat[m.name].append(secs * 1000)
            same += len(counts) == 1
        res = {}
        for m in modes:
            v = lat[m.name]
            res[m.name] = {
                "queries": len(v), "p50_ms": round(pct(v, 50), 3), "p99_ms": round(pct(v, 99), 3),
                "mean_ms": round(statistics.fmean(v), 3), "max_ms": round(max(v), 3),
                "results": results[m.name], **m.cpu(),
            }
        log(f"QIDO {kind}: " + ", ".join(f"{k} p50 {v['p50_ms']} ms p99 {v['p99_ms']} ms" for k, v in res.items()))
        return {"modes": res, "same_results": same, "queries": len(paths)}

    out["qido"] = {}
    out["qido"]["patient_id"] = qido_block("PatientID", [f"/studies?PatientID={p}" for p in pid_queries])
    out["qido"]["no_keys"] = qido_block("no keys, limit=25", [keyless] * cfg["qido_queries"])
    consent_after = mitz_queries(mitz)
    if cfg.get("fresh_queries", 0) > 0:
        fresh_ids = [rng.choice(warm_ids) for _ in range(cfg["fresh_queries"])]
        out["qido"]["patient_id_fresh"] = qido_block(
            "PatientID, new connection per request",
            [f"/studies?PatientID={p}" for p in fresh_ids], fresh=True)
    out["consent_queries_timed"] = None if consent_before is None else consent_after - consent_before
    out["consent_queries_total"] = mitz_queries(mitz)
    out["ssl"] = ssl.OPENSSL_VERSION
    out["cipher"] = next((m.conn.sock.cipher() for m in modes if m.https and m.conn), None)
    print(json.dumps(out))


# --- report -----------------------------------------------------------------------------------
def cmd_report(args):
    with open(args.results) as f:
        r = json.load(f)
    names = r["order"]
    base = names[0]
    label = {n: r["modes"][n]["label"] for n in names}
    p = print

    p("### WADO-RS retrieve of the cached study (Python http.client, keep-alive)")
    p()
    p("| mode | median time | ratio to off | first byte (median) | MB/s | server CPU / retrieve | client CPU / retrieve | runs (s) |")
    p("|---|---:|---:|---:|---:|---:|---:|---|")
    w0 = r["modes"][base]["wado"]
    for n in names:
        w = r["modes"][n]["wado"]
        ratio = w["median_s"] / w0["median_s"]
        p(f"| {label[n]} | {w['median_s']:.4f} s | **{ratio:.3f}** ({(ratio - 1) * 100:+.1f} %) "
          f"| {w['ttfb_median_ms']:.1f} ms | {w['mb_s']} | {w['server_cpu_ms_per_request']:.0f} ms "
          f"| {w['client_cpu_ms_per_request']:.0f} ms | {' '.join(f'{x:.3f}' for x in w['total'])} |")
    # per-pair ratios: each rep's on/off, median of those (drift between reps cancels)
    for n in names[1:]:
        pairs = [a / b for a, b in zip(r["modes"][n]["wado"]["total"], w0["total"])]
        p()
        p(f"Per-rep ratio {label[n]} / {label[base]}: median **{med(pairs):.3f}**, "
          f"range {min(pairs):.3f}-{max(pairs):.3f} ({len(pairs)} pairs).")
    if "wado_curl" in r["modes"][base]:
        c0 = r["modes"][base]["wado_curl"]
        p()
        p("Same retrieve with `curl -o /dev/null` (C client, OpenSSL), a NEW connection (TCP + TLS handshake) per retrieve:")
        p()
        p("| mode | median time | ratio to off | per-rep ratio (median) | runs (s) |")
        p("|---|---:|---:|---:|---|")
        for n in names:
            c = r["modes"][n]["wado_curl"]
            pairs = [a / b for a, b in zip(c["total"], c0["total"])]
            p(f"| {label[n]} | {c['median_s']:.4f} s | **{c['median_s'] / c0['median_s']:.3f}** "
              f"| {med(pairs):.3f} | {' '.join(f'{x:.3f}' for x in c['total'])} |")
    p()
    titles = {
        "patient_id": "QIDO-RS `/studies?PatientID=<one patient>` (keep-alive)",
        "no_keys": "QIDO-RS `/studies?limit=25` without keys (keep-alive)",
        "patient_id_fresh": "QIDO-RS `/studies?PatientID=<one patient>`, a NEW connection per request (TCP + TLS handshake timed)",
    }
    for kind, block in r["qido"].items():
        p(f"### {titles.get(kind, kind)}")
        p()
        p("| mode | p50 | p99 | mean | max | added at p50 | server CPU / query | client CPU / query | results |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        q0 = block["modes"][base]
        for n in names:
            q = block["modes"][n]
            add = q["p50_ms"] - q0["p50_ms"]
            p(f"| {label[n]} | {q['p50_ms']:.2f} ms | {q['p99_ms']:.2f} ms | {q['mean_ms']:.2f} ms "
              f"| {q['max_ms']:.1f} ms | {'' if n == base else f'**{add:+.2f} ms**'} "
              f"| {q['server_cpu_ms_per_request']:.2f} ms | {q['client_cpu_ms_per_request']:.2f} ms | {q['results']} |")
        p()
        p(f"{block['queries']} queries per mode; {block['same_results']} of {block['queries']} gave every mode the same number of results.")
        p()
    if r.get("consent_queries_timed") is not None:
        p(f"Consent queries the simulator answered during the timed WADO-RS and keep-alive QIDO-RS parts: "
          f"**{r['consent_queries_timed']}** ({r['consent_queries_total']} in the whole run: the warm-up).")
    p(f"TLS: {r.get('cipher')}; client {r.get('ssl')}.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("jwks")
    p.add_argument("key")
    p.add_argument("kid")
    p.add_argument("out")
    p = sub.add_parser("run")
    p.add_argument("config")
    p = sub.add_parser("report")
    p.add_argument("results")
    args = ap.parse_args()
    {"jwks": cmd_jwks, "run": cmd_run, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
