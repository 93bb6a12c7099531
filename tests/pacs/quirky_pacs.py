#!/usr/bin/env python3
"""A switchable "quirky PACS" for beeldbrug's gateway tests (pynetdicom 3.0.4, pydicom 3).

A Query/Retrieve SCP (Patient Root and Study Root; C-FIND, C-GET, C-MOVE) plus Verification,
serving every DICOM Part 10 file found (recursively) under --storage. Without quirk flags it
behaves like a normal, correct PACS. Prints `READY <port>` on stdout once listening; logs
associations and sub-operations to stderr; exits cleanly on SIGTERM / SIGINT.

Switches:
  --port N                 listen port (required; the Rust harness picks a free one)
  --host ADDR              listen address (default 127.0.0.1)
  --ae-title AE            own AE title (default QUIRKY); the called AE title is not checked
  --storage DIR            folder of Part 10 files, indexed in memory at start (required)
  --destination AE=HOST:PORT
                           a C-MOVE destination (repeatable); unknown destination -> 0xA801
  --services LIST          comma list of echo,find,get,move (default all); a service left
                           out is not offered, so its abstract syntaxes are rejected
  --no-move-originator     C-MOVE's C-STORE sub-operations carry no Move Originator AE Title
                           / Message ID
  --early-final            C-MOVE: the final Success (completed = all) is sent at once; the
                           sub-operations run afterwards on their own association in a thread
  --fail-compressed        C-GET: if the association accepted any storage context with a
                           transfer syntax other than Implicit/Explicit VR Little Endian, no
                           C-STORE is attempted and the final response is 0xA702 listing every
                           instance as failed. C-MOVE: compressed syntaxes are proposed to the
                           destination too; if it accepts one, the same happens
  --max-associations N     at most N concurrent incoming associations (default 32); more are
                           rejected (A-ASSOCIATE-RJ transient, local-limit-exceeded)
  --pause SECONDS          sleep before each C-GET / C-MOVE sub-operation (float)
  --no-charset             C-FIND responses carry no Specific Character Set and non-ASCII
                           text is sent as Latin-1 (ISO_IR 100) bytes anyway
  --debug                  pynetdicom's own debug log on stderr

Normal behaviour: C-FIND at PATIENT / STUDY / SERIES / IMAGE level (see qr_index.py for the
matching), every requested key returned, Specific Character Set echoed from the file.
C-GET / C-MOVE send each instance in its stored transfer syntax when the peer accepted it,
else uncompressed (decompressing with pydicom when it can; when it cannot, that instance
fails); pending responses with counts after each sub-operation; C-CANCEL honoured between
sub-operations (final 0xFE00 with the remaining count); final 0x0000, 0xB000 (some failed)
or 0xA702 (all failed) with the Failed SOP Instance UID List. Move Originator = the C-MOVE
requestor's AE title and message ID.

Example: python3 tests/pacs/quirky_pacs.py --port 11112 --storage /tmp/pacs \
             --destination STORESCP=127.0.0.1:11113 --pause 0.5
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import socket
import sys
import threading
import time
from io import BytesIO
from pathlib import Path

import pynetdicom.association
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, acse
from pynetdicom import build_context, evt
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode, encode
from pynetdicom.service_class import QueryRetrieveServiceClass
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind as PR_FIND,
    PatientRootQueryRetrieveInformationModelGet as PR_GET,
    PatientRootQueryRetrieveInformationModelMove as PR_MOVE,
    StudyRootQueryRetrieveInformationModelFind as SR_FIND,
    StudyRootQueryRetrieveInformationModelGet as SR_GET,
    StudyRootQueryRetrieveInformationModelMove as SR_MOVE,
    Verification,
)

from qr_index import Index, Instance

LOG = logging.getLogger("quirky")
SERVICES = {
    "echo": [Verification],
    "find": [PR_FIND, SR_FIND],
    "get": [PR_GET, SR_GET],
    "move": [PR_MOVE, SR_MOVE],
}
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Offered to a C-MOVE destination under --fail-compressed, one context each per SOP class.
COMPRESSED = (RLELossless, JPEGBaseline8Bit, JPEGLosslessSV1, JPEG2000Lossless)
PENDING, CANCEL = 0xFF00, 0xFE00


class Counts:
    """Sub-operation tally of one C-GET / C-MOVE."""

    def __init__(self, total: int):
        self.remaining, self.failed, self.warning, self.completed = total, 0, 0, 0
        self.failed_uids: list[str] = []

    def fail_all(self, instances: list[Instance]):
        self.failed += self.remaining
        self.remaining = 0
        self.failed_uids += [i.get("SOPInstanceUID") for i in instances]

    def final_status(self) -> int:
        if not self.failed and not self.warning:
            return 0x0000
        return 0xA702 if not self.warning and not self.completed else 0xB000


def compressed_accepted(assoc) -> list:
    """Accepted storage contexts whose transfer syntax is not Implicit/Explicit VR LE."""
    qr = {uid for uids in SERVICES.values() for uid in uids}
    return [
        cx
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax not in qr and cx.transfer_syntax[0] not in UNCOMPRESSED
    ]


def send_instance(assoc, inst: Instance, msg_id: int, originator) -> str:
    """One C-STORE sub-operation: 'completed', 'warning' or 'failed'."""
    uid = inst.get("SOPInstanceUID")
    try:
        ds = dcmread(inst.path)
        stored = ds.file_meta.TransferSyntaxUID
        accepted = {
            cx.transfer_syntax[0]
            for cx in assoc.accepted_contexts
            if cx.abstract_syntax == ds.SOPClassUID
        }
        if stored not in accepted:
            # Uncompressed (pynetdicom converts Explicit <-> Implicit VR LE), else RLE.
            target = next((t for t in (*UNCOMPRESSED, RLELossless) if t in accepted), None)
            if target is None:
                raise ValueError(f"no accepted context for {ds.SOPClassUID} in {stored.name}")
            if stored.is_compressed:  # raises when pydicom has no decoder for it
                ds.decompress(generate_instance_uid=False)
                LOG.info("  %s: decompressed from %s", uid, stored.name)
            if target == RLELossless:
                for _ in ds:  # decode every raw element before re-encoding as explicit VR
                    pass
                ds.compress(RLELossless, generate_instance_uid=False)
                ds.set_original_encoding(False, True, ds.original_character_set)
                LOG.info("  %s: RLE-compressed (the peer accepted only that)", uid)
        aet, orig_id = originator
        status = assoc.send_c_store(ds, msg_id=msg_id, originator_aet=aet, originator_id=orig_id)
    except Exception as e:  # noqa: BLE001 - every problem is one failed sub-operation
        LOG.info("  C-STORE %s failed: %s", uid, e)
        return "failed"
    code = status.get("Status")
    LOG.info("  C-STORE %s -> %s", uid, "no response" if code is None else f"0x{code:04X}")
    if code == 0x0000:
        return "completed"
    if code is not None and (code >> 12 == 0xB or code in (0x0001, 0x0107, 0x0116)):
        return "warning"
    return "failed"


def run_suboperations(opts, assoc, instances, first_msg_id, originator, cancelled, progress):
    """Send `instances` over `assoc`; returns (Counts, cancelled?)."""
    counts = Counts(len(instances))
    for n, inst in enumerate(instances):
        if opts.pause:
            time.sleep(opts.pause)
        if cancelled():
            LOG.info("  C-CANCEL received: %d sub-operations left", counts.remaining)
            return counts, True
        msg_id = (first_msg_id + n) % 65536
        result = send_instance(assoc, inst, msg_id, originator)
        counts.remaining -= 1
        if result == "failed":
            counts.failed += 1
            counts.failed_uids.append(inst.get("SOPInstanceUID"))
        elif result == "warning":
            counts.warning += 1
        else:
            counts.completed += 1
        progress(counts)
    return counts, False


def negotiate_in_requestor_order(original):
    """pynetdicom accepts, of a proposed context's transfer syntaxes, the first one in the
    acceptor's own list; this PACS takes the requestor's first choice it supports, so a
    requestor proposing [RLE, Explicit VR LE] in one context gets RLE."""

    def negotiate(rq_contexts, ac_contexts, roles=None):
        supported = {cx.abstract_syntax: cx for cx in ac_contexts}
        results, reply_roles = [], {}
        for rq in rq_contexts:
            ac = supported.get(rq.abstract_syntax)
            if ac is not None:
                syntaxes = [ts for ts in rq.transfer_syntax if ts in ac.transfer_syntax]
                mine = build_context(ac.abstract_syntax, syntaxes or ac.transfer_syntax)
                mine.scu_role, mine.scp_role = ac.scu_role, ac.scp_role
                ac = mine
            result, rq_roles = original([rq], [ac] if ac else ac_contexts, roles)
            results += result
            reply_roles.update((r.sop_class_uid, r) for r in rq_roles)
        return sorted(results, key=lambda cx: cx.context_id), list(reply_roles.values())

    return negotiate


class QuirkyQueryRetrieve(QueryRetrieveServiceClass):
    """pynetdicom's Q/R service class with our own C-GET and C-MOVE SCP (C-FIND stays
    pynetdicom's, driven by the EVT_C_FIND handler)."""

    def __init__(self, assoc, opts=None, index=None):
        super().__init__(assoc)
        self.opts, self.index = opts, index

    # -- responses --------------------------------------------------------------------------

    def _respond(self, req, cx, status, counts=None, failed_uids=None):
        ts = cx.transfer_syntax[0]
        rsp = C_GET() if isinstance(req, C_GET) else C_MOVE()
        rsp.MessageID = req.MessageID
        rsp.MessageIDBeingRespondedTo = req.MessageID
        rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
        rsp.Status = status
        if counts is not None:
            if status in (PENDING, CANCEL):
                rsp.NumberOfRemainingSuboperations = counts.remaining
            rsp.NumberOfFailedSuboperations = counts.failed
            rsp.NumberOfWarningSuboperations = counts.warning
            rsp.NumberOfCompletedSuboperations = counts.completed
            if failed_uids is None and status not in (PENDING, 0x0000):
                failed_uids = counts.failed_uids
        if failed_uids is not None:
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = failed_uids
            enc = encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
            rsp.Identifier = BytesIO(enc)
        self.dimse.send_msg(rsp, cx.context_id)

    def _matches(self, req, cx, what):
        ts = cx.transfer_syntax[0]
        try:
            identifier = decode(req.Identifier, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
            instances = self.index.retrieve(identifier)
        except Exception as e:  # noqa: BLE001
            LOG.info("%s: bad identifier: %s", what, e)
            self._respond(req, cx, 0xA900)
            return None
        level = identifier.get("QueryRetrieveLevel", "")
        LOG.info("%s at %s level: %d instances", what, level, len(instances))
        return instances

    def _finish(self, req, cx, counts, was_cancelled):
        status = CANCEL if was_cancelled else counts.final_status()
        LOG.info("  final response 0x%04X (completed %d, failed %d, warning %d)",
                 status, counts.completed, counts.failed, counts.warning)
        self._respond(req, cx, status, counts)

    # -- C-GET -------------------------------------------------------------------------------

    def _get_scp(self, req, context):
        cx = context
        instances = self._matches(req, cx, "C-GET")
        if instances is None:
            return
        counts = Counts(len(instances))
        if self.opts.fail_compressed and instances and compressed_accepted(self.assoc):
            names = sorted({c.transfer_syntax[0].name for c in compressed_accepted(self.assoc)})
            LOG.info("  --fail-compressed: requestor accepted %s; failing all", ", ".join(names))
            counts.fail_all(instances)
            return self._finish(req, cx, counts, False)
        counts, was_cancelled = run_suboperations(
            self.opts,
            self.assoc,
            instances,
            req.MessageID + 1,
            (None, None),
            lambda: self.is_cancelled(req.MessageID),
            lambda c: self._respond(req, cx, PENDING, c),
        )
        self._finish(req, cx, counts, was_cancelled)

    # -- C-MOVE ------------------------------------------------------------------------------

    def _move_scp(self, req, context):
        cx = context
        dest_ae = (req.MoveDestination or "").strip()
        dest = self.opts.destinations.get(dest_ae)
        if dest is None:
            LOG.info("C-MOVE to unknown destination %r: 0xA801", dest_ae)
            return self._respond(req, cx, 0xA801)
        instances = self._matches(req, cx, f"C-MOVE to {dest_ae}")
        if instances is None:
            return
        originator = (None, None)
        if not self.opts.no_move_originator:
            originator = (self.assoc.requestor.ae_title, req.MessageID)
        if self.opts.early_final:
            counts = Counts(len(instances))
            counts.completed, counts.remaining = len(instances), 0
            LOG.info("  --early-final: final 0x0000 (completed %d) before any C-STORE", len(instances))
            self._respond(req, cx, 0x0000, counts)
            if instances:
                args = (self.ae, self.opts, dest_ae, dest, instances, originator)
                threading.Thread(target=move_in_background, args=args, daemon=True).start()
            return
        counts = Counts(len(instances))
        if not instances:
            return self._finish(req, cx, counts, False)
        store = open_destination(self.ae, self.opts, dest_ae, dest, instances)
        if store is None or (self.opts.fail_compressed and compressed_accepted(store)):
            if store is not None:
                LOG.info("  --fail-compressed: destination accepted a compressed syntax")
                store.release()
            counts.fail_all(instances)
            return self._finish(req, cx, counts, False)
        try:
            counts, was_cancelled = run_suboperations(
                self.opts,
                store,
                instances,
                1,
                originator,
                lambda: self.is_cancelled(req.MessageID),
                lambda c: self._respond(req, cx, PENDING, c),
            )
        finally:
            store.release()
        self._finish(req, cx, counts, was_cancelled)


def open_destination(ae, opts, dest_ae, dest, instances):
    """Associate with a C-MOVE destination, proposing what `instances` need."""
    contexts = []
    for sop_class in dict.fromkeys(i.header.SOPClassUID for i in instances):
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
        stored = {i.transfer_syntax for i in instances if i.header.SOPClassUID == sop_class}
        extra = set(COMPRESSED) if opts.fail_compressed else set()
        for ts in sorted((stored | extra) - set(UNCOMPRESSED)):
            contexts.append(build_context(sop_class, [ts]))
    host, port = dest
    LOG.info("  associating with %s at %s:%d (%d contexts)", dest_ae, host, port, len(contexts))
    assoc = ae.associate(
        host,
        port,
        contexts=contexts[:128],
        ae_title=dest_ae,
        evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)],
    )
    if not assoc.is_established:
        LOG.info("  association with %s failed", dest_ae)
        return None
    return assoc


def move_in_background(ae, opts, dest_ae, dest, instances, originator):
    """--early-final: the sub-operations after the final response, on their own."""
    store = open_destination(ae, opts, dest_ae, dest, instances)
    if store is None:
        return
    if opts.fail_compressed and compressed_accepted(store):
        LOG.info("  background move: destination accepted a compressed syntax; all fail")
    else:
        counts, _ = run_suboperations(opts, store, instances, 1, originator, lambda: False, lambda c: None)
        LOG.info("  background move done: completed %d, failed %d", counts.completed, counts.failed)
    store.release()


def handle_find(event, opts, index):
    identifier = event.identifier
    try:
        matches = index.match(identifier)
    except ValueError as e:
        LOG.info("C-FIND: %s", e)
        yield 0xA900, None
        return
    LOG.info("C-FIND at %s level: %d matches", identifier.QueryRetrieveLevel, len(matches))
    for _key, inst in matches:
        if event.is_cancelled:
            yield CANCEL, None
            return
        yield PENDING, index.find_response(identifier, inst, charset=not opts.no_charset)


def no_delay(event):
    """TCP_NODELAY on every connection: without it, a peer's delayed ACKs add ~40 ms to each
    message pynetdicom writes in two parts."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def log_event(event):
    a = event.assoc
    peer = f"{a.requestor.ae_title}@{a.requestor.address}:{a.requestor.port}"
    LOG.info("association %s: %s", event.event.name.replace("EVT_", "").lower(), peer)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--ae-title", default="QUIRKY")
    p.add_argument("--storage", type=Path, required=True)
    p.add_argument("--destination", action="append", default=[], metavar="AE=HOST:PORT")
    p.add_argument("--services", default="echo,find,get,move")
    p.add_argument("--no-move-originator", action="store_true")
    p.add_argument("--early-final", action="store_true")
    p.add_argument("--fail-compressed", action="store_true")
    p.add_argument("--max-associations", type=int, default=32)
    p.add_argument("--pause", type=float, default=0.0)
    p.add_argument("--no-charset", action="store_true")
    p.add_argument("--debug", action="store_true")
    opts = p.parse_args(argv)
    opts.destinations = {}
    for d in opts.destination:
        try:
            ae, addr = d.split("=", 1)
            host, port = addr.rsplit(":", 1)
            opts.destinations[ae.strip()] = (host, int(port))
        except ValueError:
            p.error(f"--destination {d!r}: expected AE=HOST:PORT")
    opts.services = [s.strip() for s in opts.services.split(",") if s.strip()]
    unknown = set(opts.services) - set(SERVICES)
    if unknown:
        p.error(f"--services: unknown {', '.join(sorted(unknown))} (known: echo,find,get,move)")
    if not opts.storage.is_dir():
        p.error(f"--storage {opts.storage}: not a folder")
    return opts


def main(argv=None) -> int:
    opts = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if opts.debug else logging.WARNING)
    index = Index(opts.storage)

    # pynetdicom picks the service class by SOP class UID; ours replaces Q/R's C-GET / C-MOVE.
    original = pynetdicom.association.uid_to_service_class
    qr = {uid for name in ("find", "get", "move") for uid in SERVICES[name]}

    def service_class(uid):
        if uid in qr:
            return functools.partial(QuirkyQueryRetrieve, opts=opts, index=index)
        return original(uid)

    pynetdicom.association.uid_to_service_class = service_class
    acse.negotiate_as_acceptor = negotiate_in_requestor_order(acse.negotiate_as_acceptor)

    ae = AE(ae_title=opts.ae_title)
    ae.maximum_associations = opts.max_associations
    for name in opts.services:
        for uid in SERVICES[name]:
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
    if "get" in opts.services:
        # C-GET: the requestor takes the Storage SCP role for every storage SOP class.
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(
                cx.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=False, scp_role=True
            )
    handlers = [(evt.EVT_C_FIND, handle_find, [opts, index]), (evt.EVT_CONN_OPEN, no_delay)]
    for e in (evt.EVT_ESTABLISHED, evt.EVT_REJECTED, evt.EVT_RELEASED, evt.EVT_ABORTED):
        handlers.append((e, log_event))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = ae.start_server((opts.host, opts.port), block=False, evt_handlers=handlers)
    port = server.server_address[1]
    LOG.info(
        "%s listening on %s:%d; services %s; quirks: %s",
        opts.ae_title,
        opts.host,
        port,
        ",".join(opts.services),
        " ".join(
            f for f, on in [
                ("no-move-originator", opts.no_move_originator),
                ("early-final", opts.early_final),
                ("fail-compressed", opts.fail_compressed),
                (f"pause={opts.pause}", opts.pause),
                ("no-charset", opts.no_charset),
                (f"max-associations={opts.max_associations}", True),
            ] if on
        ),
    )
    print(f"READY {port}", flush=True)
    while not stop.wait(0.2):
        pass
    LOG.info("stopping")
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
