"""Test data for tests/codecs.rs from independent encoders, and pixel checks with pydicom.

make OUT_DIR: writes, per codec, the uncompressed source (source-NAME.dcm) and the instance
encoded by an independent encoder (NAME.dcm): DCMTK dcmcjpls / dcmcjpeg / dcmcrle, pydicom with
pyjpegls (JPEG-LS) and pylibjpeg-openjpeg (JPEG 2000), pydicom (Deflate). Prints a JSON manifest.

j2k IN_DIR OUT_DIR: every Part 10 file under IN_DIR with native pixel data, encoded as JPEG 2000
lossless by pydicom with pylibjpeg-openjpeg into OUT_DIR (same relative paths, other files
copied as they are). Prints the count encoded.

compare MANIFEST.json: each entry {"source": path, "got": path, "raw": bool, "tolerance": int,
"uncompressed": bool};
"got" is a Part 10 file (pixels decoded by pydicom and its plugins: pylibjpeg-openjpeg,
pyjpegls, pydicom's own RLE and Deflate; with "expect_ts", in that syntax) or, with "raw",
native frame bytes. Prints the largest difference per entry; exits 1 on any beyond its tolerance.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGLSLossless,
    generate_uid,
)


def source(study, series, number, rows, cols, seed):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Codec^Test"
    ds.PatientID = "CODEC-13"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyID = "13"
    ds.AccessionNumber = "CODEC13"
    ds.StudyDate = "20261205"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    # A gradient with a disc and seeded noise: structure for the codecs, no constant runs.
    y, x = np.mgrid[0:rows, 0:cols]
    rng = np.random.default_rng(seed)
    pixels = (x * 40 + y * 25) % 3000
    pixels = pixels + np.where((x - cols / 2) ** 2 + (y - rows / 2) ** 2 < (rows / 3) ** 2, 900, 0)
    pixels = pixels + rng.integers(0, 64, size=(rows, cols))
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def make(out):
    study, series = generate_uid(), generate_uid()
    made = []
    codecs = ["jpegls", "jpegls-near", "jpeg-lossless", "rle", "j2k-lossless", "j2k", "deflate", "jpegls-pyjpegls"]
    for number, name in enumerate(codecs, start=1):
        ds = source(study, series, number, 96, 80, number)
        src = f"{out}/source-{name}.dcm"
        ds.save_as(src, enforce_file_format=True)
        enc = f"{out}/{name}.dcm"
        tolerance = 0
        if name == "jpegls":
            subprocess.run(["dcmcjpls", src, enc], check=True)
        elif name == "jpegls-near":
            # NEAR=2: every sample within 2 of the source (ISO 14495-1).
            subprocess.run(["dcmcjpls", "+en", src, enc], check=True)
            tolerance = 2
        elif name == "jpegls-pyjpegls":
            # A second JPEG-LS encoder (CharLS through pyjpegls), besides DCMTK's own codec.
            # The SOP Instance UID kept, as DCMTK keeps it: the source stands in for it.
            ds.compress(JPEGLSLossless, encoding_plugin="pyjpegls", generate_instance_uid=False)
            ds.save_as(enc, enforce_file_format=True)
        elif name == "jpeg-lossless":
            subprocess.run(["dcmcjpeg", "+e1", src, enc], check=True)
        elif name == "rle":
            subprocess.run(["dcmcrle", src, enc], check=True)
        elif name == "j2k-lossless":
            ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
            ds.save_as(enc, enforce_file_format=True)
        elif name == "j2k":
            ds.compress(JPEG2000, encoding_plugin="pylibjpeg", j2k_psnr=[60])
            ds.save_as(enc, enforce_file_format=True)
            tolerance = 64
        elif name == "deflate":
            ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
            ds.save_as(enc, enforce_file_format=True)
        meta = pydicom.dcmread(enc, stop_before_pixels=True)
        made.append(
            {
                "name": name,
                "source": src,
                "sent": enc,
                "sop": str(meta.SOPInstanceUID),
                "transfer_syntax": str(meta.file_meta.TransferSyntaxUID),
                "rows": 96,
                "columns": 80,
                "samples": 1,
                "tolerance": tolerance,
            }
        )
    print(json.dumps({"study": study, "series": series, "instances": made}))


def broken(out):
    """Each encoded instance of `make` with its codestream cut in half and, separately, with
    its middle overwritten: well-formed data sets (the structure check passes) whose pixel
    data no decoder can trust. Prints the paths as JSON."""
    from pydicom.encaps import encapsulate, generate_frames

    made = []
    for name in ["jpegls", "jpeg-lossless", "rle", "j2k-lossless", "j2k"]:
        ds = pydicom.dcmread(f"{out}/{name}.dcm")
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        cut = frame[: len(frame) // 2]
        middle = len(frame) // 2
        garbled = frame[:middle] + bytes((b ^ 0xA5) for b in frame[middle : middle + 64]) + frame[middle + 64 :]
        for kind, stream in (("truncated", cut), ("garbled", garbled)):
            ds.PixelData = encapsulate([stream if len(stream) % 2 == 0 else stream + b"\0"])
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            path = f"{out}/{kind}-{name}.dcm"
            ds.save_as(path, enforce_file_format=True)
            made.append({"name": f"{kind}-{name}", "sent": path, "sop": str(ds.SOPInstanceUID)})
    print(json.dumps(made))


def compare(manifest):
    failed = False
    for entry in json.load(open(manifest)):
        src = pydicom.dcmread(entry["source"]).pixel_array.astype(np.int64)
        if entry.get("raw"):
            raw = open(entry["got"], "rb").read()
            got = np.frombuffer(raw, dtype="<u2").astype(np.int64).reshape(src.shape)
            ts = "raw"
        else:
            ds = pydicom.dcmread(entry["got"])
            got = ds.pixel_array.astype(np.int64)
            ts = str(ds.file_meta.TransferSyntaxUID)
            if entry.get("uncompressed") and ts not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1"):
                print(f"{entry['got']}: {ts} is not uncompressed (FAIL)")
                failed = True
            if entry.get("expect_ts") and ts != entry["expect_ts"]:
                print(f"{entry['got']}: {ts} is not {entry['expect_ts']} (FAIL)")
                failed = True
        worst = int(np.abs(src - got).max()) if src.shape == got.shape else -1
        ok = worst >= 0 and worst <= entry.get("tolerance", 0)
        failed |= not ok
        print(f"{entry['got']}: {ts} largest difference {worst} ({'ok' if ok else 'FAIL'})")
    sys.exit(1 if failed else 0)


def bench(out, rows=512, cols=512, frames=16):
    """Larger multi-frame instances for benches/codecs.sh: one uncompressed source of
    `frames` frames of rows x cols, 16 bits (12 stored), and its encodings by DCMTK
    (dcmcjpls, dcmcjpeg +e1 / +ee, dcmcrle; +eb of an 8-bit copy), pydicom (JPEG 2000
    lossless with pylibjpeg-openjpeg, Deflate), OpenJPH (HTJ2K lossless) and libjxl (JPEG XL
    lossless, 12 bits), the last two through imagecodecs. Prints a JSON manifest."""
    rows, cols, frames = int(rows), int(cols), int(frames)
    ds = source(generate_uid(), generate_uid(), 1, rows, cols, 13)
    planes = [np.frombuffer(source(ds.StudyInstanceUID, ds.SeriesInstanceUID, 1, rows, cols, 13 + f).PixelData, dtype="<u2") for f in range(frames)]
    ds.NumberOfFrames = frames
    ds.PixelData = np.concatenate(planes).tobytes()
    src = f"{out}/bench-source.dcm"
    ds.save_as(src, enforce_file_format=True)
    made = {"source": src, "rows": rows, "columns": cols, "frames": frames, "encoded": {}}
    for name, tool in (("jpegls", ["dcmcjpls"]), ("jpeg-lossless", ["dcmcjpeg", "+e1"]), ("rle", ["dcmcrle"])):
        enc = f"{out}/bench-{name}.dcm"
        subprocess.run(tool + [src, enc], check=True)
        made["encoded"][name] = enc
    # JPEG lossy, DCMTK's other decoders: extended (12 bits, +ee) of the source, baseline
    # (8 bits, +eb) of an 8-bit copy (the 12 stored bits shifted down).
    enc = f"{out}/bench-jpeg-extended.dcm"
    subprocess.run(["dcmcjpeg", "+ee", src, enc], check=True)
    made["encoded"]["jpeg-extended"] = enc
    eight = pydicom.dcmread(src)
    eight.BitsAllocated, eight.BitsStored, eight.HighBit = 8, 8, 7
    eight.WindowCenter, eight.WindowWidth = 128, 256
    eight.PixelData = (np.frombuffer(eight.PixelData, dtype="<u2") >> 4).astype(np.uint8).tobytes()
    src8 = f"{out}/bench-source-8bit.dcm"
    eight.save_as(src8, enforce_file_format=True)
    made["source_8bit"] = src8
    enc = f"{out}/bench-jpeg-baseline.dcm"
    subprocess.run(["dcmcjpeg", "+eb", src8, enc], check=True)
    made["encoded"]["jpeg-baseline"] = enc
    j2k = pydicom.dcmread(src)
    j2k.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    made["encoded"]["j2k-lossless"] = f"{out}/bench-j2k-lossless.dcm"
    j2k.save_as(made["encoded"]["j2k-lossless"], enforce_file_format=True)
    deflated = pydicom.dcmread(src)
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    made["encoded"]["deflate"] = f"{out}/bench-deflate.dcm"
    deflated.save_as(made["encoded"]["deflate"], enforce_file_format=True)
    # HTJ2K lossless by OpenJPH and JPEG XL lossless by libjxl (both through imagecodecs),
    # one codestream per frame: encoders of neither decoder beeldbrug uses.
    import imagecodecs
    from pydicom.encaps import encapsulate

    known_jpeg_xl()
    frames_of = np.frombuffer(ds.PixelData, dtype="<u2").reshape(frames, rows, cols)
    for name, ts, encode in (
        ("htj2k-lossless", "1.2.840.10008.1.2.4.201", lambda f: imagecodecs.htj2k_encode(f, reversible=True)),
        ("jxl-lossless", "1.2.840.10008.1.2.4.110",
         lambda f: imagecodecs.jpegxl_encode(f, bitspersample=12, usecontainer=False, lossless=True)),
    ):
        enc = pydicom.dcmread(src)
        streams = [encode(f) for f in frames_of]
        enc.PixelData = encapsulate([s if len(s) % 2 == 0 else s + b"\0" for s in streams])
        enc["PixelData"].VR = "OB"
        enc.file_meta.TransferSyntaxUID = ts
        made["encoded"][name] = f"{out}/bench-{name}.dcm"
        enc.save_as(made["encoded"][name], enforce_file_format=True)
    print(json.dumps(made))


def known_jpeg_xl():
    """pydicom 3.0 does not know the JPEG XL transfer syntaxes (PS3.6 A-1, 2024): made known
    so that it writes them (encapsulated, Explicit VR LE)."""
    from pydicom._uid_dict import UID_dictionary

    for uid, title in (("110", "JPEG XL Lossless"), ("111", "JPEG XL JPEG Recompression"), ("112", "JPEG XL")):
        UID_dictionary.setdefault(f"1.2.840.10008.1.2.4.{uid}", (title, "Transfer Syntax", "", "", ""))


def variants(out):
    """The decoders we wrote ourselves (JPEG lossless, RLE) against DCMTK's encoders, in the
    shapes their code paths tell apart: every JPEG lossless selection value (1-7, `dcmcjpeg
    +el +sv N`), a point transform, 8-bit and 16-bit grey (12 and 16 bits stored), 8-bit RGB,
    multi-frame with one fragment per frame and with frames split over 1 KB fragments
    (`+fs 1`); RLE of the same sources. Prints a JSON list of {"source", "encoded", "what"};
    the sources are uncompressed (Explicit VR LE), to compare with byte for byte."""
    made = []
    sources = []
    for name, rows, cols, frames, bits, stored, rgb in (
        ("grey16", 64, 48, 1, 16, 12, False),
        ("full16", 40, 56, 1, 16, 16, False),
        ("grey8", 48, 40, 1, 8, 8, False),
        ("rgb8", 32, 40, 1, 8, 8, True),
        ("multi16", 64, 64, 3, 16, 12, False),
    ):
        ds = source(generate_uid(), generate_uid(), 1, rows, cols, rows + cols)
        rng = np.random.default_rng(rows * cols)
        shape = (frames, rows, cols, 3) if rgb else (frames, rows, cols)
        y = np.arange(rows).reshape(-1, 1) if not rgb else np.arange(rows).reshape(-1, 1, 1)
        pixels = (np.broadcast_to(y * 37, shape) + rng.integers(0, 50, size=shape)) % (1 << stored)
        if stored == 16:
            pixels = pixels | np.where(rng.integers(0, 2, size=shape) == 1, 0x8000, 0)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
        if frames > 1:
            ds.NumberOfFrames = frames
        if rgb:
            ds.SamplesPerPixel = 3
            ds.PhotometricInterpretation = "RGB"
            ds.PlanarConfiguration = 0
        del ds.WindowCenter, ds.WindowWidth
        ds.PixelData = pixels.astype(np.uint16 if bits == 16 else np.uint8).tobytes()
        src = f"{out}/variant-{name}.dcm"
        ds.save_as(src, enforce_file_format=True)
        sources.append((name, src))
    for name, src in sources:
        encodings = [(f"sv{sv}", ["dcmcjpeg", "+el", "+sv", str(sv)]) for sv in range(1, 8)]
        encodings += [("sv1-pt2", ["dcmcjpeg", "+el", "+sv", "1", "+pt", "2"])] if name == "grey16" else []
        encodings += [("sv1-fs1", ["dcmcjpeg", "+e1", "+fs", "1"])] if name == "multi16" else []
        encodings += [("rle", ["dcmcrle"])]
        for what, tool in encodings:
            enc = f"{out}/variant-{name}-{what}.dcm"
            subprocess.run(tool + [src, enc], check=True)
            made.append({"source": src, "encoded": enc, "what": f"{name} {what}"})
    print(json.dumps(made))


def lossy(out):
    """The sequential DCT JPEG decoder we wrote against encoders we did not: DCMTK `dcmcjpeg
    +ee` (JPEG Extended, 12-bit and 8-bit) and `+eb` (Baseline) of grey sources (12 bits
    stored, an odd size, 8 bits, three frames one fragment each and over 1 KB fragments),
    RGB kept RGB (`+cr`, interleaved three components) and YCbCr 4:4:4 (`+s4`, which our
    decoder leaves to jpeg-decoder); Pillow (libjpeg) grey with a restart marker every three
    blocks, wrapped by DCMTK `img2dcm`. The reference of each is DCMTK `dcmdjpeg`'s decoding
    (IJG islow IDCT). Prints a JSON list of {"reference", "encoded", "what", "ours"}."""
    from PIL import Image

    made = []
    sources = []
    for name, rows, cols, frames, bits, stored, rgb in (
        ("grey12", 64, 48, 1, 16, 12, False),
        ("odd12", 29, 37, 1, 16, 12, False),
        ("grey8", 48, 40, 1, 8, 8, False),
        ("rgb8", 32, 40, 1, 8, 8, True),
        ("multi12", 64, 64, 3, 16, 12, False),
    ):
        ds = source(generate_uid(), generate_uid(), 1, rows, cols, rows + cols)
        rng = np.random.default_rng(rows * cols)
        shape = (frames, rows, cols, 3) if rgb else (frames, rows, cols)
        y, x = np.mgrid[0:rows, 0:cols]
        if rgb:
            y, x = y[..., None], x[..., None]
        top = (1 << stored) - 1
        pixels = (x * top // cols // 2 + y * top // rows // 3 + rng.integers(0, top // 8, size=shape)) % (top + 1)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
        if frames > 1:
            ds.NumberOfFrames = frames
        if rgb:
            ds.SamplesPerPixel = 3
            ds.PhotometricInterpretation = "RGB"
            ds.PlanarConfiguration = 0
        del ds.WindowCenter, ds.WindowWidth
        ds.PixelData = pixels.astype(np.uint16 if bits == 16 else np.uint8).tobytes()
        src = f"{out}/lossy-{name}.dcm"
        ds.save_as(src, enforce_file_format=True)
        sources.append((name, src))
    encoded = []
    for name, src in sources:
        if name == "grey8":
            encodings = [("eb", ["+eb"]), ("ee", ["+ee"]), ("eb-q100", ["+eb", "+q", "100"])]
        elif name == "rgb8":
            encodings = [("eb-cr", ["+eb", "+cr"]), ("eb-s4", ["+eb", "+s4"])]
        elif name == "multi12":
            encodings = [("ee", ["+ee"]), ("ee-fs1", ["+ee", "+fs", "1"])]
        else:
            encodings = [("ee", ["+ee"]), ("ee-q100", ["+ee", "+q", "100"])]
        for what, options in encodings:
            enc = f"{out}/lossy-{name}-{what}.dcm"
            subprocess.run(["dcmcjpeg"] + options + [src, enc], check=True)
            encoded.append((f"{name} {what}", enc, what != "eb-s4"))
    # Restart intervals: Pillow's libjpeg writes them, img2dcm wraps the JPEG as it is.
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:56, 0:72]
    image = Image.fromarray(((x * 3 + y * 2 + rng.integers(0, 40, size=(56, 72))) % 256).astype(np.uint8), "L")
    jpg = f"{out}/lossy-restart.jpg"
    image.save(jpg, quality=85, restart_marker_blocks=3)
    enc = f"{out}/lossy-grey8-restart.dcm"
    subprocess.run(["img2dcm", "-i", "JPEG", jpg, enc], check=True)
    encoded.append(("grey8 restart", enc, True))
    for what, enc, ours in encoded:
        ref = enc[:-4] + "-dcmdjpeg.dcm"
        subprocess.run(["dcmdjpeg", enc, ref], check=True)
        made.append({"reference": ref, "encoded": enc, "what": what, "ours": ours})
    print(json.dumps(made))


def study(out, syntax, megabytes, distinct=8, rows=512, cols=512):
    """A CT study for benches/codecs_study.sh: `distinct` slices of rows x cols (16 bits, 12
    stored, seeded noise as in `source`), encoded once (`j2k`: JPEG 2000 lossless by pydicom
    with pylibjpeg-openjpeg; `plain`: Explicit VR LE) and written again with new SOP Instance
    UIDs until the files hold `megabytes` MB. One file per instance in `out`; prints the
    count, the bytes and the pixel bytes decoded, tab-separated."""
    megabytes, distinct, rows, cols = float(megabytes), int(distinct), int(rows), int(cols)
    study_uid, series_uid = generate_uid(), generate_uid()
    encoded = []
    for n in range(distinct):
        ds = source(study_uid, series_uid, n + 1, rows, cols, 100 + n)
        if syntax == "j2k":
            ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        encoded.append(ds)
    count, total = 0, 0
    while total < megabytes * 1e6:
        ds = encoded[count % distinct]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = count + 1
        path = f"{out}/{count:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        total += os.path.getsize(path)
        count += 1
    print(f"{count}\t{total}\t{count * rows * cols * 2}\t{study_uid}")


def j2k(in_dir, out_dir):
    """JPEG 2000 lossless copies of a tree of Part 10 files (tests/ohif_viewer.rs)."""
    count = 0
    for root, _, names in os.walk(in_dir):
        for name in sorted(names):
            src = os.path.join(root, name)
            dst = os.path.join(out_dir, os.path.relpath(src, in_dir))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            ds = pydicom.dcmread(src)
            if "PixelData" in ds and not ds.file_meta.TransferSyntaxUID.is_compressed:
                ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
                count += 1
            ds.save_as(dst, enforce_file_format=True)
    print(count)


def htj2k(out):
    """HTJ2K (ISO 15444-15) instances by OpenJPH (through imagecodecs), an encoder independent
    of the OpenJPEG family beeldbrug decodes with: lossless (.4.201), lossless RPCL with TLM
    (.4.202, as PS3.5 A.4.11 has it) and lossy (.4.203, the 9/7 transform), one 96 x 80 CT
    each, plus the same as 8-bit RGB (.4.201). Each codestream is first decoded by
    pylibjpeg-openjpeg (OpenJPEG) and checked against the source. Prints a JSON manifest as
    `make` does."""
    import imagecodecs
    import openjpeg
    from pydicom.encaps import encapsulate

    study, series = generate_uid(), generate_uid()
    made = []
    kinds = [
        ("htj2k-lossless", "1.2.840.10008.1.2.4.201", dict(reversible=True), 0, False),
        ("htj2k-rpcl", "1.2.840.10008.1.2.4.202", dict(reversible=True, tlm=True), 0, False),
        ("htj2k-lossy", "1.2.840.10008.1.2.4.203", dict(reversible=False), 4, False),
        ("htj2k-rgb", "1.2.840.10008.1.2.4.201", dict(reversible=True), 0, True),
    ]
    for number, (name, ts, options, tolerance, rgb) in enumerate(kinds, start=1):
        ds = source(study, series, number, 96, 80, 200 + number)
        if rgb:
            grey = np.frombuffer(ds.PixelData, dtype="<u2").reshape(96, 80)
            pixels = np.stack([grey >> 4, (grey >> 2) & 0xFF, 255 - (grey >> 4)], axis=-1).astype(np.uint8)
            ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
            del ds.WindowCenter, ds.WindowWidth
            ds.PixelData = pixels.tobytes()
        else:
            pixels = np.frombuffer(ds.PixelData, dtype="<u2").reshape(96, 80)
        src = f"{out}/source-{name}.dcm"
        ds.save_as(src, enforce_file_format=True)
        stream = imagecodecs.htj2k_encode(pixels, **options)
        assert b"\xff\x50" in stream[:200], "no CAP marker: not HTJ2K"
        check = openjpeg.decode(stream).astype(np.int64)
        worst = int(np.abs(check.reshape(pixels.shape) - pixels.astype(np.int64)).max())
        assert worst <= tolerance, f"{name}: OpenJPEG decodes OpenJPH's stream {worst} off"
        ds.PixelData = encapsulate([stream if len(stream) % 2 == 0 else stream + b"\0"])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = ts
        if ts.endswith("203"):
            ds.LossyImageCompression = "01"
        enc = f"{out}/{name}.dcm"
        ds.save_as(enc, enforce_file_format=True)
        made.append({"name": name, "source": src, "sent": enc, "sop": str(ds.SOPInstanceUID),
                     "transfer_syntax": ts, "rows": 96, "columns": 80, "tolerance": tolerance,
                     "samples": 3 if rgb else 1})
    print(json.dumps({"study": study, "series": series, "instances": made}))


def jpegxl(out):
    """JPEG XL (ISO 18181) instances by libjxl (through imagecodecs), an encoder independent of
    the jxl-oxide decoder beeldbrug uses: lossless (.4.110) as a 12-bit grey CT (a naked
    codestream announcing 12 bits per sample) and as 8-bit RGB, and lossy (.4.112, distance
    0.1: libjxl itself decodes it within 24 of 4096 levels, the test allows 32) as the same CT,
    one 96 x 80 image each. Each codestream is first decoded by libjxl
    and checked against the source. Prints a JSON manifest as `make` does."""
    import imagecodecs
    from pydicom.encaps import encapsulate

    known_jpeg_xl()

    study, series = generate_uid(), generate_uid()
    made = []
    kinds = [
        ("jxl-lossless", "1.2.840.10008.1.2.4.110", dict(lossless=True), 0, False),
        ("jxl-rgb", "1.2.840.10008.1.2.4.110", dict(lossless=True), 0, True),
        ("jxl-lossy", "1.2.840.10008.1.2.4.112", dict(distance=0.1), 32, False),
    ]
    for number, (name, ts, options, tolerance, rgb) in enumerate(kinds, start=1):
        ds = source(study, series, number, 96, 80, 300 + number)
        if rgb:
            grey = np.frombuffer(ds.PixelData, dtype="<u2").reshape(96, 80)
            pixels = np.stack([grey >> 4, (grey >> 2) & 0xFF, 255 - (grey >> 4)], axis=-1).astype(np.uint8)
            ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
            del ds.WindowCenter, ds.WindowWidth
            ds.PixelData = pixels.tobytes()
            bits = 8
        else:
            pixels = np.frombuffer(ds.PixelData, dtype="<u2").reshape(96, 80)
            bits = 12
        src = f"{out}/source-{name}.dcm"
        ds.save_as(src, enforce_file_format=True)
        stream = imagecodecs.jpegxl_encode(pixels, bitspersample=bits, usecontainer=False, **options)
        assert stream[:2] == b"\xff\x0a", "not a naked JPEG XL codestream"
        check = imagecodecs.jpegxl_decode(stream).astype(np.int64)
        worst = int(np.abs(check.reshape(pixels.shape) - pixels.astype(np.int64)).max())
        assert worst <= tolerance, f"{name}: libjxl decodes its own stream {worst} off"
        ds.PixelData = encapsulate([stream if len(stream) % 2 == 0 else stream + b"\0"])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = ts
        if ts.endswith("112"):
            ds.LossyImageCompression = "01"
        enc = f"{out}/{name}.dcm"
        ds.save_as(enc, enforce_file_format=True)
        made.append({"name": name, "source": src, "sent": enc, "sop": str(ds.SOPInstanceUID),
                     "transfer_syntax": ts, "rows": 96, "columns": 80, "tolerance": tolerance,
                     "samples": 3 if rgb else 1, "libjxl_difference": worst})
    print(json.dumps({"study": study, "series": series, "instances": made}))


if __name__ == "__main__":
    {"htj2k": htj2k, "jpegxl": jpegxl, "make": make, "broken": broken, "compare": compare, "bench": bench, "variants": variants, "lossy": lossy, "study": study, "j2k": j2k}[sys.argv[1]](*sys.argv[2:])
