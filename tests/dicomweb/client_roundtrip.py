"""dicomweb-client (the PyPI client viewers and scripts use) against beeldbrug.

Usage: client_roundtrip.py BASE_URL GENERATED_DIR

Stores every generated file with STOW-RS, then searches at every level, retrieves every study
as stored (byte-exact against the source files) and in the default transfer syntax
(pixel-equal after decoding), and fetches metadata, bulk data, frames, rendered images and
thumbnails, checking each against the source files. Exits non-zero on the first mismatch.
"""

import io
import pathlib
import sys
from collections import defaultdict

import numpy as np
import pydicom
from dicomweb_client.api import DICOMwebClient
from PIL import Image

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
AS_STORED = (("application/dicom", "*"),)


def check(condition, message):
    if not condition:
        print("FAIL:", message, file=sys.stderr)
        sys.exit(1)


def raw_parts(client, url, accept):
    """The parts of a multipart/related response, as bytes (to compare byte for byte)."""
    response = client._session.get(url, headers={"Accept": accept})
    check(response.status_code == 200, f"GET {url}: {response.status_code} {response.text[:200]}")
    ctype = response.headers["Content-Type"]
    boundary = [p.split("=", 1)[1].strip('"') for p in ctype.split(";") if p.strip().startswith("boundary=")][0]
    delimiter = b"--" + boundary.encode()
    body = response.content
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        parts.append(data[:-2])  # the CRLF before the next delimiter
    return parts


def main(base, folder):
    client = DICOMwebClient(base)
    files = sorted(pathlib.Path(folder).rglob("*.dcm"))
    source = {}
    for f in files:
        ds = pydicom.dcmread(f)
        source[ds.SOPInstanceUID] = (f.read_bytes(), ds)
    check(len(source) == len(files), "generated SOP Instance UIDs are unique")

    # STOW-RS: everything in one request per study, as dicomweb-client sends it.
    by_study = defaultdict(list)
    for _, ds in source.values():
        by_study[ds.StudyInstanceUID].append(ds)
    for study, datasets in by_study.items():
        result = client.store_instances(datasets, study_instance_uid=study)
        stored = result.get("ReferencedSOPSequence", [])
        check(len(stored) == len(datasets), f"STOW stored {len(stored)} of {len(datasets)}")
        check("FailedSOPSequence" not in result, "no failed instances")
        for item in stored:
            check(item.RetrieveURL.startswith(base.split("//")[0]), f"RetrieveURL {item.RetrieveURL}")

    # QIDO-RS at every level.
    studies = client.search_for_studies()
    check(len(studies) == len(by_study), f"{len(studies)} studies found, {len(by_study)} stored")
    for st in studies:
        uid = st["0020000D"]["Value"][0]
        expected = by_study[uid]
        check(st["00201208"]["Value"][0] == len(expected), f"NumberOfStudyRelatedInstances of {uid}")
        modalities = sorted({ds.Modality for ds in expected})
        check(sorted(st["00080061"]["Value"]) == modalities, f"ModalitiesInStudy of {uid}")
        series = client.search_for_series(uid)
        series_uids = {ds.SeriesInstanceUID for ds in expected}
        check({s["0020000E"]["Value"][0] for s in series} == series_uids, f"series of {uid}")
        for s in series:
            suid = s["0020000E"]["Value"][0]
            instances = client.search_for_instances(uid, suid)
            want = {ds.SOPInstanceUID for ds in expected if ds.SeriesInstanceUID == suid}
            check({i["00080018"]["Value"][0] for i in instances} == want, f"instances of {suid}")
    check(len(client.search_for_series()) == len({ds.SeriesInstanceUID for _, ds in source.values()}), "/series")
    check(len(client.search_for_instances()) == len(source), "/instances")
    check(len(client.search_for_studies(limit=2)) == 2, "limit")
    check(len(client.search_for_studies(offset=len(by_study))) == 0, "offset past the end")
    names = {str(ds.PatientName) for _, ds in source.values()}
    fuzzy = client.search_for_studies(search_filters={"PatientName": "muller"}, fuzzymatching=True)
    check(len(fuzzy) == sum(1 for s in by_study.values() if "Müller" in str(s[0].PatientName)), f"fuzzy muller in {names}")
    exact = client.search_for_studies(search_filters={"PatientName": "muller"})
    check(len(exact) == 0, "without fuzzymatching, case matters")
    one = next(iter(source.values()))[1]
    by_id = client.search_for_studies(search_filters={"PatientID": one.PatientID})
    check(all(s["00100020"]["Value"][0] == one.PatientID for s in by_id) and by_id, "PatientID match")

    # WADO-RS: each study as stored, byte for byte, and in the default syntax.
    for uid, expected in by_study.items():
        url = f"{base}/studies/{uid}"
        parts = raw_parts(client, url, 'multipart/related; type="application/dicom"; transfer-syntax=*')
        check(len(parts) == len(expected), f"{len(parts)} parts for {len(expected)} instances")
        for part in parts:
            ds = pydicom.dcmread(io.BytesIO(part))
            check(part == source[ds.SOPInstanceUID][0], f"as-stored bytes of {ds.SOPInstanceUID}")
        for ds in client.retrieve_study(uid):
            src = source[ds.SOPInstanceUID][1]
            check(ds.file_meta.TransferSyntaxUID == EXPLICIT_VR_LE, "default transfer syntax")
            got, want = ds.pixel_array.astype(np.int32), src.pixel_array.astype(np.int32)
            # Lossy JPEG decoders may round differently by one; everything else is exact.
            tolerance = 1 if src.file_meta.TransferSyntaxUID == JPEG_BASELINE else 0
            check(got.shape == want.shape and np.abs(got - want).max() <= tolerance,
                  f"pixels of {ds.SOPInstanceUID} ({src.file_meta.TransferSyntaxUID})")
        # Study and series thumbnails: a representative instance, rendered small.
        series_uid = expected[0].SeriesInstanceUID
        for url in (f"{base}/studies/{uid}/thumbnail", f"{base}/studies/{uid}/series/{series_uid}/thumbnail"):
            response = client._session.get(url, headers={"Accept": "image/jpeg"})
            check(response.status_code == 200, f"{url}: {response.status_code}")
            thumb = Image.open(io.BytesIO(response.content))
            check(max(thumb.size) <= 128 and np.asarray(thumb).std() > 1, f"thumbnail {url}")
        same = client.retrieve_study(uid, media_types=AS_STORED)
        check(len(same) == len(expected), "retrieve_study as stored")

        # Metadata with BulkDataURI, and the bulk data behind it.
        for meta in client.retrieve_study_metadata(uid):
            sop = meta["00080018"]["Value"][0]
            _, src = source[sop]
            check(meta["00100020"]["Value"][0] == src.PatientID, "metadata PatientID")
            check(meta["00100010"]["Value"][0]["Alphabetic"] == str(src.PatientName), "metadata PatientName")
            pixel = meta["7FE00010"]
            check("BulkDataURI" in pixel and "InlineBinary" not in pixel, "pixel data by reference")
            if not src.file_meta.TransferSyntaxUID.is_compressed:
                bulk = client.retrieve_bulkdata(pixel["BulkDataURI"])
                check(bulk[0] == src.PixelData, f"bulk pixel data of {sop}")

    # Instance-level retrieve, frames, rendered images and thumbnails.
    for sop, (raw, src) in source.items():
        ids = (src.StudyInstanceUID, src.SeriesInstanceUID, sop)
        inst = client.retrieve_instance(*ids, media_types=AS_STORED)
        check(inst.SOPInstanceUID == sop, "retrieve_instance")
        frames = int(getattr(src, "NumberOfFrames", 1) or 1)
        numbers = sorted({1, frames, (frames + 1) // 2})
        ts = src.file_meta.TransferSyntaxUID
        if not ts.is_compressed:
            got = client.retrieve_instance_frames(*ids, frame_numbers=numbers)
            size = src.Rows * src.Columns * src.SamplesPerPixel * src.BitsAllocated // 8
            for n, frame in zip(numbers, got):
                check(frame == src.PixelData[(n - 1) * size:n * size], f"frame {n} of {sop}")
        else:
            got = client.retrieve_instance_frames(
                *ids, frame_numbers=[1], media_types=(("application/octet-stream", EXPLICIT_VR_LE),))
            want = src.pixel_array if frames == 1 else src.pixel_array[0]
            decoded = np.frombuffer(got[0], dtype=want.dtype).reshape(want.shape).astype(np.int32)
            tolerance = 1 if ts == JPEG_BASELINE else 0
            check(np.abs(decoded - want.astype(np.int32)).max() <= tolerance, f"decoded frame 1 of {sop} ({ts})")
        for rendered, media in ((client.retrieve_instance_rendered(*ids), "JPEG"),
                                (client.retrieve_instance_rendered(*ids, media_types=("image/png",)), "PNG")):
            img = Image.open(io.BytesIO(rendered))
            check(img.format == media and img.size == (src.Columns, src.Rows), f"rendered {media} of {sop}")
            check(np.asarray(img).std() > 1, f"rendered {media} of {sop} is not blank")
        # dicomweb-client has no thumbnail call: the same session, by hand (PS3.18 10.4.1.1.4).
        url = f"{base}/studies/{ids[0]}/series/{ids[1]}/instances/{sop}/thumbnail"
        response = client._session.get(url, headers={"Accept": "image/jpeg"})
        check(response.status_code == 200, f"thumbnail: {response.status_code}")
        thumb = Image.open(io.BytesIO(response.content))
        check(max(thumb.size) <= 128 and np.asarray(thumb).std() > 1, "thumbnail size and content")
        windowed = client.retrieve_instance_rendered(*ids, params={"window": "40,400", "viewport": "64,64"})
        check(Image.open(io.BytesIO(windowed)).size[0] <= 64, "viewport")
    print(f"ok: {len(source)} instances in {len(by_study)} studies round-tripped")


if __name__ == "__main__":
    main(sys.argv[1].rstrip("/"), sys.argv[2])
