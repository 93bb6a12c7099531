#!/usr/bin/env python3
"""Write the hand-made seed inputs of fuzz/corpus/{command_set,pdata,qido_query,multipart}
(run from fuzz/).

Files named seed-* are made here; anything else in the corpus came from the fuzzer
(crash-*: minimized findings, kept as regression inputs). qido_query runs best with its
dictionary: cargo +nightly fuzz run qido_query --sanitizer none -- -dict=qido_query.dict
"""
import os
import struct

def el(element, value):
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", 0, element, len(value)) + value

def us(element, v):
    return struct.pack("<HHI", 0, element, 2) + struct.pack("<H", v)

def command(*elements):
    body = b"".join(elements)
    return struct.pack("<HHI", 0, 0, 4) + struct.pack("<I", len(body)) + body

CT = b"1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = b"1.2.840.10008.1.1"
FIND = b"1.2.840.10008.5.1.4.1.2.2.1"

echo_rq = command(el(0x0002, VERIFICATION), us(0x0100, 0x0030), us(0x0110, 1), us(0x0800, 0x0101))
store_rq = command(el(0x0002, CT), us(0x0100, 0x0001), us(0x0110, 7), us(0x0700, 0), us(0x0800, 0),
                   el(0x1000, b"1.2.3.4.5"), el(0x1030, b"MOVER "), us(0x1031, 3))
store_rsp = command(el(0x0002, CT), us(0x0100, 0x8001), us(0x0120, 7), us(0x0800, 0x0101), us(0x0900, 0xC000),
                    el(0x0902, b"data set does not parse"), el(0x1000, b"1.2.3.4.5"))
find_rq = command(el(0x0002, FIND), us(0x0100, 0x0020), us(0x0110, 2), us(0x0700, 0), us(0x0800, 0))
move_rsp = command(el(0x0002, b"1.2.840.10008.5.1.4.1.2.2.2"), us(0x0100, 0x8021), us(0x0120, 9),
                   us(0x0800, 0x0101), us(0x0900, 0xFF00), us(0x1020, 4), us(0x1021, 1), us(0x1022, 0),
                   us(0x1023, 0), struct.pack("<HHI", 0, 0x0901, 4) + struct.pack("<HH", 0x0010, 0x0020))
move_rq = command(el(0x0002, b"1.2.840.10008.5.1.4.1.2.2.2"), us(0x0100, 0x0021), us(0x0110, 5),
                  el(0x0600, b"STORESCP"), us(0x0700, 0), us(0x0800, 0))
cancel_rq = command(us(0x0100, 0x0FFF), us(0x0120, 2), us(0x0800, 0x0101))

command_seeds = {
    "seed-echo-rq": echo_rq,
    "seed-store-rq": store_rq,
    "seed-store-rsp-failure": store_rsp,
    "seed-find-rq": find_rq,
    "seed-move-rq": move_rq,
    "seed-move-rsp-pending": move_rsp,
    "seed-cancel-rq": cancel_rq,
    "seed-empty": b"",
    "seed-truncated-header": b"\0\0\0\x01",
    "seed-huge-length": b"\0\0\0\x01\xff\xff\xff\xff",
    "seed-wrong-group": b"\x08\0\x10\0\0\0\0\0",
    "seed-unknown-field": us(0x0100, 0x1234),
    "seed-non-ascii-comment": command(us(0x0100, 0x8001), el(0x0902, "Müller\x01 ".encode())),
}

def pdv(ctx, is_command, is_last, data):
    return struct.pack(">IBB", len(data) + 2, ctx, int(is_command) | (int(is_last) << 1)) + data

def pdu(kind, body):
    return struct.pack(">BBI", kind, 0, len(body)) + body

def pdata(*pdvs):
    return pdu(0x04, b"".join(pdvs))

RELEASE_RQ = pdu(0x05, b"\0\0\0\0")
data_set = struct.pack("<HH", 0x0008, 0x0018) + b"UI" + struct.pack("<H", 10) + b"1.2.3.4.5\0"

pdata_seeds = {
    # P-DATA-TF bodies (what parse_pdata sees first).
    "seed-body-command-and-data": pdv(1, True, True, echo_rq) + pdv(3, False, False, b"data!"),
    "seed-body-empty-pdv": pdv(1, False, True, b""),
    "seed-body-overlong-item": b"\0\0\0\x09\x01\0\x01\x02",
    "seed-body-short-item": b"\0\0\0\x01\x01\0",
    # Streams after the A-ASSOCIATE-RQ (contexts 1 verification, 3 CT, 5 find).
    "seed-stream-echo-release": pdata(pdv(1, True, True, echo_rq)) + RELEASE_RQ,
    "seed-stream-store": pdata(pdv(3, True, True, store_rq)) + pdata(pdv(3, False, False, data_set[:8]))
        + pdata(pdv(3, False, True, data_set[8:])) + RELEASE_RQ,
    "seed-stream-command-in-two-pdus": pdata(pdv(1, True, False, echo_rq[:20]))
        + pdata(pdv(1, True, True, echo_rq[20:])),
    "seed-stream-command-and-data-one-pdu": pdata(pdv(5, True, True, find_rq), pdv(5, False, True, data_set)),
    "seed-stream-cancel": pdata(pdv(5, True, True, find_rq)) + pdata(pdv(5, True, True, cancel_rq)),
    "seed-stream-unknown-context": pdata(pdv(7, True, True, echo_rq)),
    "seed-stream-data-before-command": pdata(pdv(3, False, True, data_set)),
    "seed-stream-abort": pdu(0x07, b"\0\0\x02\x00"),
    "seed-stream-4gib-pdata": b"\x04\0\xff\xff\xff\xff",
    "seed-stream-4gib-associate": b"\x01\0\xff\xff\xff\xff",
    "seed-stream-truncated-pdu": pdata(pdv(3, False, True, b"x" * 100))[:50],
    "seed-stream-unknown-type": pdu(0x09, b"\0\0\0\0"),
}

def item(kind, body):
    return struct.pack(">BBH", kind, 0, len(body)) + body

def associate_rq(contexts):
    body = struct.pack(">HH", 1, 0) + b"BEELDBRUG".ljust(16) + b"FUZZ".ljust(16) + b"\0" * 32
    body += item(0x10, b"1.2.840.10008.3.1.1.1")
    for ctx, abstract in contexts:
        body += item(0x20, struct.pack(">BBBB", ctx, 0, 0, 0) + item(0x30, abstract)
                     + item(0x40, b"1.2.840.10008.1.2.1") + item(0x40, b"1.2.840.10008.1.2"))
    body += item(0x50, item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.3.4"))
    return pdu(0x01, body)

RQ = associate_rq([(1, VERIFICATION), (3, CT)])
pdata_seeds["seed-raw-associate-echo-release"] = RQ + pdata(pdv(1, True, True, echo_rq)) + RELEASE_RQ
pdata_seeds["seed-raw-associate-unknown-abstract"] = associate_rq([(1, b"1.2.3.4.5.6")])
pdata_seeds["seed-raw-associate-truncated"] = RQ[:-7]

# QIDO-RS query strings, WADO-RS frame lists and /rendered parameters (one text each).
qido_seeds = {
    "seed-keywords": b"PatientName=M%C3%BCller*&PatientID=999912345&AccessionNumber=A1?3",
    "seed-tags": b"00100010=Jansen^Jan&00100020=999912345&0020000D=1.2.3.4",
    "seed-date-range": b"StudyDate=20200101-20201231&StudyTime=080000-170000.5",
    "seed-open-ranges": b"StudyDate=-20201231&PatientBirthDate=19700101-&StudyTime=0800-",
    "seed-uid-list": b"StudyInstanceUID=1.2.3,1.2.4%5C1.2.5&SeriesInstanceUID=1.2.840.10008.1",
    "seed-includefield": b"includefield=StudyDescription,00081030&includefield=all",
    "seed-paging": b"limit=25&offset=50",
    "seed-limit-over-cap": b"limit=4294967295&offset=4294967295",
    "seed-fuzzy": b"PatientName=muller&fuzzymatching=true",
    "seed-fuzzy-wildcard": b"PatientName=M%C3%BC*l?r&fuzzymatching=true",
    "seed-modalities": b"ModalitiesInStudy=CT,MR%5CUS&StudyDescription=thorax",
    "seed-percent-plus": b"PatientName=van+der+Berg%5Ejan&StudyDescription=%2A",
    "seed-mueller-raw-utf8": "PatientName=Müller&ReferringPhysicianName=Dr%20M%C3%BCller".encode(),
    "seed-unindexed": b"PatientWeight=70&SOPClassesInStudy=1.2.840.10008.5.1.4.1.1.2",
    "seed-empty-values": b"PatientName=&StudyDate=&StudyInstanceUID=&limit=0",
    "seed-empty": b"",
    "seed-bad-date": b"StudyDate=20201301",
    "seed-bad-range-order": b"StudyDate=20201231-20200101",
    "seed-bad-time": b"StudyTime=25",
    "seed-bad-uid": b"StudyInstanceUID=1.2.abc",
    "seed-bad-limit": b"limit=-1",
    "seed-bad-fuzzy": b"fuzzymatching=yes",
    "seed-bad-keyword": b"NoSuchAttribute=1&includefield=Bogus",
    "seed-bad-tag": b"0010001G=x",
    "seed-bad-percent": b"PatientName=%ZZ%C3",
    "seed-control-char": b"PatientName=a%01b",
    "seed-frames": b"1,2,3",
    "seed-frames-bad": b"0,,x",
    "seed-rendered": b"window=40,400,linear&viewport=512,512&quality=80",
    "seed-rendered-bad": b"window=40,0&viewport=0,9000&quality=101",
}

CT_HEADER = b'multipart/related; type="application/dicom"; boundary=BOUNDARY'
DICM = b"\0" * 128 + b"DICM" + b"\2\0\1\0OB\0\0\2\0\0\0\0\1"

def body(*parts, close=True, boundary=b"BOUNDARY"):
    out = b""
    for headers, data in parts:
        out += b"--" + boundary + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + data + b"\r\n"
    if close:
        out += b"--" + boundary + b"--\r\n"
    return out

DICOM_PART = ([b"Content-Type: application/dicom"], DICM)
multipart_seeds = {
    "seed-one-part": CT_HEADER + b"\r\n" + body(DICOM_PART),
    "seed-two-parts": CT_HEADER + b"\n" + body(DICOM_PART, ([b"Content-Type: Application/DICOM",
                                                            b"Content-Location: x"], b"second")),
    "seed-quoted-boundary": b'Multipart/Related; boundary="a:b c"; type=application/dicom\n'
        + body(DICOM_PART, boundary=b"a:b c"),
    "seed-preamble-epilogue": CT_HEADER + b"\n" + b"preamble\r\n" + body(DICOM_PART) + b"epilogue",
    "seed-no-parts": CT_HEADER + b"\n" + b"--BOUNDARY--\r\n",
    "seed-empty-body": CT_HEADER + b"\n",
    "seed-no-boundary-param": b'multipart/related; type="application/dicom"\n' + body(DICOM_PART),
    "seed-wrong-boundary": CT_HEADER + b"\n" + body(DICOM_PART, boundary=b"OTHER"),
    "seed-long-boundary": b"multipart/related; boundary=" + b"b" * 71 + b"\n" + body(DICOM_PART, boundary=b"b" * 71),
    "seed-truncated-part": CT_HEADER + b"\n" + body(DICOM_PART)[:100],
    "seed-no-closing-delimiter": CT_HEADER + b"\n" + body(DICOM_PART, close=False),
    "seed-other-content-type": CT_HEADER + b"\n" + body(([b"Content-Type: application/dicom+json"], b"[{}]"),
                                                       DICOM_PART),
    "seed-part-without-headers": CT_HEADER + b"\n" + body(([], b"plain")),
    "seed-huge-header-line": CT_HEADER + b"\n" + body(([b"X-Long: " + b"x" * 9000], b"data")),
    "seed-many-headers": CT_HEADER + b"\n" + body(([b"X-H%d: v" % i for i in range(40)], b"data")),
    "seed-bad-header": CT_HEADER + b"\n" + body(([b"no colon here"], b"data")),
    "seed-form-data": b"multipart/form-data; boundary=BOUNDARY\n" + body(
        ([b'Content-Disposition: form-data; name="file"; filename="a.dcm"'], DICM)),
    "seed-type-not-dicom": b'multipart/related; type="application/dicom+xml"; boundary=BOUNDARY\n' + body(DICOM_PART),
    "seed-accept-list": b'multipart/related; type="application/dicom"; boundary=B; q=0.5, application/dicom;q=0.9, */*;q=0\n',
    "seed-bad-q": b"multipart/related; boundary=B; q=7\n--B--",
    "seed-lf-only": CT_HEADER + b"\n" + body(DICOM_PART).replace(b"\r\n", b"\n"),
}

for target, seeds in (("command_set", command_seeds), ("pdata", pdata_seeds),
                      ("qido_query", qido_seeds), ("multipart", multipart_seeds)):
    os.makedirs(os.path.join("corpus", target), exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join("corpus", target, name), "wb") as f:
            f.write(data)
