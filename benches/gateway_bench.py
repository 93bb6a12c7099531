#!/usr/bin/env python3
"""Client side of benches/gateway.sh: timed WADO-RS retrieves and DCMTK getscu runs, with the
PACS's DIMSE messages time-stamped on the loopback interface.

Every subcommand prints one JSON object on stdout; times are seconds from the start of the
request (the HTTP request written, or getscu started).

  wado URL [--accept A] [--pacs-port P --bb-port B]
        GET URL (one connection, Accept-Encoding: identity), the body read as it comes and
        counted: bytes, multipart parts; `headers` = response head received, `first_byte` =
        first body byte, `total` = body complete. With --pacs-port, also `sniff`: when the
        first C-FIND-RQ and C-GET-RQ / C-MOVE-RQ went to the PACS and when the PACS's first
        C-STORE-RQ sub-operation went out (from port P for C-GET, to our port B for C-MOVE).
  get [--tool getscu|movescu] [--pacs-port P [--bb-port S]] OUTDIR -- ARGS...
        run /usr/bin/getscu (or movescu) with ARGS, timed from its start to its exit; count
        the files it wrote into OUTDIR; `sniff` as above (S: movescu's +P port).
  evict DIR...
        drop the (synced, clean) page-cache pages of every file under DIR
        (posix_fadvise DONTNEED), so that earlier runs' files do not fill the memory.
  serve-copy DIR --port P
        the loopback baseline of a cache hit: a minimal HTTP/1.1 server on 127.0.0.1:P that
        answers each GET with every file under DIR (sorted by path) as one
        multipart/related body in chunked transfer coding, like beeldbrug's WADO-RS
        response: each file read with one readinto() of a reused buffer and written with
        one writev(). Read it with `wado`. Runs until killed.
  wait-cached INDEX_DB STUDY_UID [--timeout 120]
        wait until beeldbrug's SQLite index records the study as cached and complete (the
        fetch has ended and its files are synced); prints the seconds waited.

The sniffer is a raw AF_PACKET socket on `lo` (needs root or CAP_NET_RAW) with kernel
receive time stamps (SO_TIMESTAMPNS, CLOCK_REALTIME like time.time()). It looks for the
DIMSE Command Field element (0000,0100) in the TCP payloads of the PACS's association(s) and
stops at the first C-STORE-RQ, so it costs next to nothing during the bulk transfer.
A BPF filter in the kernel passes only data-carrying TCP segments, once each, cut to their
first 512 bytes. With --timeline the sniffer goes on to the end and adds `phases`: per sub-operation, C-STORE-RQ to the last
data packet (transfer), that to our C-STORE-RSP (the receiver's turn) and the C-STORE-RSP to
the next C-STORE-RQ (the PACS's turn), as medians and sums; GATEWAY_BENCH_DUMP=FILE writes
the three lists to FILE as JSON.
"""

import argparse
import ctypes
import http.client
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

READ_SIZE = 1 << 20
ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35  # Linux; SCM_TIMESTAMPNS has the same value
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
SNAP = 512  # bytes of each packet kept


def _bpf(*insns):
    return b"".join(struct.pack("HBBI", code, jt, jf, k) for code, jt, jf, k in insns)


# Classic BPF, run in the kernel on every packet of `lo`: keep the first SNAP bytes of the
# receiving side's copy of IPv4 TCP segments that carry data; drop the sending side's copy,
# pure ACKs and everything else, so that the sniffer sees a quarter of the packets.
BPF_PROGRAM = _bpf(
    (0x20, 0, 0, 0xFFFFF004),  # 0  A = packet type (SKF_AD_OFF + SKF_AD_PKTTYPE)
    (0x15, 14, 0, 4),  #          1  PACKET_OUTGOING -> drop
    (0x28, 0, 0, 12),  #          2  A = ethertype
    (0x15, 0, 12, 0x0800),  #     3  not IPv4 -> drop
    (0x30, 0, 0, 23),  #          4  A = IP protocol
    (0x15, 0, 10, 6),  #          5  not TCP -> drop
    (0xB1, 0, 0, 14),  #          6  X = IP header length
    (0x50, 0, 0, 26),  #          7  A = TCP data offset byte
    (0x74, 0, 0, 4),  #           8  A >>= 4
    (0x64, 0, 0, 2),  #           9  A <<= 2: TCP header length
    (0x0C, 0, 0, 0),  #           10 A += X
    (0x07, 0, 0, 0),  #           11 X = A: both headers
    (0x28, 0, 0, 16),  #          12 A = IP total length
    (0x1C, 0, 0, 0),  #           13 A -= X: payload length
    (0x15, 1, 0, 0),  #           14 no payload -> drop
    (0x06, 0, 0, SNAP),  #        15 keep SNAP bytes
    (0x06, 0, 0, 0),  #           16 drop
)


def command_field(value):
    """(0000,0100) US, implicit VR little endian, as it appears in a command set."""
    return b"\x00\x00\x00\x01\x02\x00\x00\x00" + struct.pack("<H", value)


C_STORE_RQ = command_field(0x0001)
C_STORE_RSP = command_field(0x8001)
C_GET_RQ = command_field(0x0010)
C_FIND_RQ = command_field(0x0020)
C_MOVE_RQ = command_field(0x0021)


class Sniffer:
    """Kernel time stamps of the first C-FIND-RQ / C-GET-RQ / C-MOVE-RQ sent to the PACS and
    of the first C-STORE-RQ the PACS sends (on our C-GET association, or to our C-MOVE
    destination port); with client_port, also of the first C-STORE-RQ on a connection to or
    from that port (`client_c_store_rq`: the first sub-operation beeldbrug as a DIMSE proxy
    passes on to getscu, or to movescu's storescp)."""

    def __init__(self, pacs_port, bb_port=None, timeline=False, client_port=None):
        self.pacs_port = pacs_port
        self.bb_port = bb_port
        self.client_port = client_port
        self.seen = {}
        # timeline: every packet of the PACS's associations, (stamp, from_pacs, payload
        # length, start of payload), until closed
        self.timeline = [] if timeline else None
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._prog = ctypes.create_string_buffer(BPF_PROGRAM)
        fprog = struct.pack("HL", len(BPF_PROGRAM) // 8, ctypes.addressof(self._prog))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        def done():
            return "c_store_rq" in self.seen and (not self.client_port or "client_c_store_rq" in self.seen)

        while not self.stop.is_set() and (not done() or self.timeline is not None):
            try:
                data, anc, _, addr = self.sock.recvmsg(70000, 64)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(data) < 14 + 20 + 20 or data[12:14] != b"\x08\x00":
                continue
            ip = data[14:]
            if ip[9] != 6:
                continue
            tcp = ip[(ip[0] & 0x0F) * 4 :]
            sport, dport = struct.unpack("!HH", tcp[:4])
            payload = tcp[(tcp[12] >> 4) * 4 :]
            # the real length (the capture may be cut at SNAP bytes)
            length = struct.unpack("!H", ip[2:4])[0] - (ip[0] & 0x0F) * 4 - (tcp[12] >> 4) * 4
            if length <= 0 or addr[2] == socket.PACKET_OUTGOING:
                continue  # on lo every packet shows twice: count the receiving side
            stamp = None
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", raw[:16])
                    stamp = sec + nsec / 1e9
            if stamp is None:
                stamp = time.time()
            if dport == self.pacs_port:
                for name, pattern in (("c_find_rq", C_FIND_RQ), ("c_get_rq", C_GET_RQ), ("c_move_rq", C_MOVE_RQ)):
                    if name not in self.seen and pattern in payload:
                        self.seen[name] = stamp
            if (
                self.client_port
                and self.client_port in (sport, dport)
                and "client_c_store_rq" not in self.seen
                and C_STORE_RQ in payload
            ):
                self.seen["client_c_store_rq"] = stamp
            from_pacs = sport == self.pacs_port or (self.bb_port and dport == self.bb_port)
            if from_pacs and "c_store_rq" not in self.seen and C_STORE_RQ in payload:
                self.seen["c_store_rq"] = stamp
            if self.timeline is not None and (from_pacs or dport == self.pacs_port or (self.bb_port and sport == self.bb_port)):
                self.timeline.append((stamp, bool(from_pacs), length, payload[:SNAP]))

    def close(self, t0):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()
        return {k: round(v - t0, 4) for k, v in sorted(self.seen.items(), key=lambda kv: kv[1])}

    def phases(self):
        """Per sub-operation, from the timeline: `transfer` = C-STORE-RQ to the PACS's last
        data packet before our C-STORE-RSP, `receiver` = that last packet to the C-STORE-RSP
        (what the receiver does before it answers), `pacs` = C-STORE-RSP to the next
        C-STORE-RQ (the PACS's turn-around: C-GET-RSP pending, next file). Medians and sums in
        ms, over all sub-operations."""
        transfer, receiver, pacs = [], [], []
        rq = last_data = last_rsp = first_rq = None
        for stamp, from_pacs, length, head in self.timeline:
            if from_pacs:
                if C_STORE_RQ in head:
                    if last_rsp is not None:
                        pacs.append(stamp - last_rsp)
                    rq, last_rsp = stamp, None
                    first_rq = first_rq or stamp
                last_data = stamp
            elif C_STORE_RSP in head and rq is not None:
                # each answered sub-operation counts once; one whose C-STORE-RQ was not
                # seen (cut off by SNAP) is left out
                transfer.append(last_data - rq)
                receiver.append(stamp - last_data)
                rq, last_rsp = None, stamp
        n = len(receiver)
        if n < 2:
            return {"sub_operations": n}
        if os.environ.get("GATEWAY_BENCH_DUMP"):
            with open(os.environ["GATEWAY_BENCH_DUMP"], "w") as f:
                json.dump({"transfer": transfer, "receiver": receiver, "pacs": pacs}, f)

        def stats(v):
            return {"median_ms": round(statistics.median(v) * 1e3, 3), "sum_s": round(sum(v), 3)}

        return {
            "sub_operations": n,
            "transfer": stats(transfer),
            "receiver": stats(receiver),
            "pacs": stats(pacs),
            "first_rq_to_last_rsp_s": round(self.timeline[-1][0] - first_rq, 3),
        }


def boundary_of(content_type):
    for param in content_type.split(";")[1:]:
        k, _, v = param.strip().partition("=")
        if k.lower() == "boundary":
            return v.strip('"')
    return None


def cmd_wado(args):
    url = urllib.parse.urlsplit(args.url)
    conn = http.client.HTTPConnection(url.hostname, url.port or 80)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sniffer = Sniffer(args.pacs_port, args.bb_port, args.timeline) if args.pacs_port else None
    path = url.path + ("?" + url.query if url.query else "")
    cpu0 = time.process_time()
    t0 = time.time()
    conn.request("GET", path, headers={"Accept": args.accept, "Accept-Encoding": "identity"})
    r = conn.getresponse()
    t_head = time.time()
    if r.status != 200:
        sys.exit(f"WADO-RS {args.url}: HTTP {r.status}: {r.read(300)!r}")
    ctype = r.getheader("Content-Type", "")
    boundary = boundary_of(ctype)
    if not boundary:
        sys.exit(f"WADO-RS: no boundary in Content-Type {ctype!r}")
    delim = b"\r\n--" + boundary.encode()
    keep = len(delim) - 1
    # One buffer for the whole body, read into in place: a fresh bytes object per read (and
    # its page faults) would make the client's CPU depend on how the server's writes happen
    # to split the stream. The last `keep` bytes of each read move to the front, so a
    # delimiter cut by a read boundary is still counted once (the tail alone cannot hold one).
    buf = bytearray(keep + READ_SIZE)
    view = memoryview(buf)
    buf[:2] = b"\r\n"  # the first delimiter may open the body without a leading CRLF
    start = 2
    count = total = 0
    # the first read returns as soon as anything arrives (the first-byte time); the rest
    # fill the buffer
    first = r.read1(READ_SIZE)
    t_first = time.time() if first else None
    got = len(first)
    buf[start : start + got] = first
    while got:
        total += got
        end = start + got
        count += buf.count(delim, 0, end)
        if end > keep:
            buf[:keep] = buf[end - keep : end]
            start = keep
        else:
            start = end
        got = r.readinto(view[start : start + READ_SIZE])
    t_end = time.time()
    cpu = time.process_time() - cpu0
    conn.close()
    out = {
        # this process's CPU seconds while it read the response (the sniffer's included)
        "cpu": round(cpu, 3),
        "headers": round(t_head - t0, 4),
        "first_byte": round((t_first or t_end) - t0, 4),
        "total": round(t_end - t0, 4),
        "bytes": total,
        # every part opens with a delimiter; the closing one adds one more
        "parts": count - 1,
    }
    if sniffer:
        out["sniff"] = sniffer.close(t0)
        if args.timeline:
            out["phases"] = sniffer.phases()
    print(json.dumps(out))


def cmd_get(args):
    argv = ["/usr/bin/" + args.tool] + [a for a in args.tool_args if a != "--"]
    sniffer = Sniffer(args.pacs_port, args.bb_port, args.timeline, args.client_port) if args.pacs_port else None
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t_end = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if p.returncode != 0 or b"E:" in p.stdout or b"F:" in p.stdout:
        sys.exit(f"{args.tool} failed ({p.returncode}): {p.stdout[-2000:].decode(errors='replace')}")
    files = total = 0
    for entry in os.scandir(args.outdir):
        if entry.is_file():
            files += 1
            total += entry.stat().st_size
    out = {"total": round(t_end - t0, 4), "files": files, "bytes": total, "cpu": round(cpu, 3)}
    if sniffer:
        out["sniff"] = sniffer.close(t0)
        if args.timeline:
            out["phases"] = sniffer.phases()
    print(json.dumps(out))


def cmd_evict(args):
    files = 0
    for top in args.dirs:
        for root, _, names in os.walk(top):
            for name in names:
                try:
                    fd = os.open(os.path.join(root, name), os.O_WRONLY if args.truncate else os.O_RDONLY)
                except OSError:
                    continue
                try:
                    if args.truncate:
                        # frees the blocks but keeps the inode: no ext4 recently_deleted()
                        # slowdown for the next run, as deleting would bring
                        os.ftruncate(fd, 0)
                    else:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    files += 1
                finally:
                    os.close(fd)
    print(json.dumps({"files": files}))


def cmd_serve_copy(args):
    files = sorted(os.path.join(root, n) for root, _, names in os.walk(args.dir) for n in names)
    boundary = "copy-baseline-boundary"
    head = (
        "HTTP/1.1 200 OK\r\n"
        f'Content-Type: multipart/related; type="application/dicom"; boundary={boundary}\r\n'
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    part_head = f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    closing = f"\r\n--{boundary}--\r\n".encode()
    buf = bytearray(1 << 20)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(4)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                got = conn.recv(65536)
                if not got:
                    break
                request += got
            if not request:
                continue
            conn.sendall(head)
            for path in files:
                # each file read into one reused buffer (no allocation and page faults per
                # file), then written with its chunk and part framing in one call
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size > len(buf):
                        buf = bytearray(size)
                    data = memoryview(buf)[: f.readinto(memoryview(buf)[:size])]
                pieces = [b"%x\r\n" % (len(part_head) + len(data)), part_head, data, b"\r\n"]
                sent = conn.sendmsg(pieces)
                if sent < sum(map(len, pieces)):
                    conn.sendall(b"".join(pieces)[sent:])
            conn.sendall(b"%x\r\n" % len(closing) + closing + b"\r\n0\r\n\r\n")


def cmd_wait_cached(args):
    import sqlite3

    t0 = time.time()
    while True:
        try:
            db = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True, timeout=1)
            row = db.execute(
                "SELECT complete FROM cached_study WHERE study_instance_uid = ?", (args.study,)
            ).fetchone()
            db.close()
            if row and row[0]:
                break
        except sqlite3.Error:
            pass
        if time.time() - t0 > args.timeout:
            sys.exit(f"study {args.study} not recorded complete in {args.db} after {args.timeout} s")
        time.sleep(0.05)
    print(json.dumps({"waited": round(time.time() - t0, 3)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("wado")
    p.add_argument("url")
    p.add_argument("--accept", default='multipart/related; type="application/dicom"; transfer-syntax=*')
    p.add_argument("--pacs-port", type=int)
    p.add_argument("--bb-port", type=int, help="our DIMSE port: C-MOVE sub-operations arrive there")
    p.add_argument("--timeline", action="store_true", help="time-stamp every packet: `phases`")
    p.set_defaults(func=cmd_wado)
    p = sub.add_parser("get")
    p.add_argument("--tool", choices=["getscu", "movescu"], default="getscu")
    p.add_argument("--pacs-port", type=int)
    p.add_argument("--bb-port", type=int, help="movescu's +P port (its storage SCP)")
    p.add_argument("--client-port", type=int, help="time-stamp the first C-STORE-RQ to or from this port too")
    p.add_argument("--timeline", action="store_true", help="time-stamp every packet: `phases`")
    p.add_argument("outdir")
    p.add_argument("tool_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_get)
    p = sub.add_parser("evict")
    p.add_argument("--truncate", action="store_true", help="truncate the files to zero length instead")
    p.add_argument("dirs", nargs="+")
    p.set_defaults(func=cmd_evict)
    p = sub.add_parser("serve-copy")
    p.add_argument("dir")
    p.add_argument("--port", type=int, required=True)
    p.set_defaults(func=cmd_serve_copy)
    p = sub.add_parser("wait-cached")
    p.add_argument("db")
    p.add_argument("study")
    p.add_argument("--timeout", type=float, default=120)
    p.set_defaults(func=cmd_wait_cached)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
