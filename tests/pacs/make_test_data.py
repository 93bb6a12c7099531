#!/usr/bin/env python3
"""Write a tiny deterministic data set for quirky_pacs.py: `make_test_data.py OUTDIR`.

The PACS serves any folder of Part 10 files (beeldbrug's `generate` output works too); this
one is small and pins the cases the quirks need:

  patient QP001 `Müller^Zoë` (ISO_IR 192), study 1 (20240105, CT):
      series 1: 3 CT slices, Explicit VR Little Endian
  patient QP002 `Jansen^Piet` (no Specific Character Set), study 2 (20240312, CT + OT):
      series 1: 2 CT slices, one Implicit VR LE, one RLE Lossless
      series 2: 1 Secondary Capture, JPEG Baseline (written with Pillow)

UIDs are 2.25.<uuid5 of a name>, so every run writes the same UIDs; files are named
<patient>/<study>/<series>/<instance>.dcm.
"""

import io
import sys
import uuid
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
)

NAMESPACE = uuid.UUID("5f1c2d7e-1b7a-4c4e-9a53-6f7569726b79")


def uid(name: str) -> str:
    return f"2.25.{uuid.uuid5(NAMESPACE, name).int}"


def instance(patient, study, series, number, sop_class, bits):
    pid, name, charset, study_no, date = patient
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid(f"{pid}/{study}/{series}/{number}")
    ds.StudyDate = ds.SeriesDate = date
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"ACC{study_no:04d}"
    ds.Modality = "CT" if sop_class == CTImageStorage else "OT"
    ds.StudyDescription = "Thorax" if study_no == 1 else "Hersenen"
    ds.SeriesDescription = f"Series {series}"
    ds.PatientName = name
    ds.PatientID = pid
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F" if study_no == 1 else "M"
    ds.StudyInstanceUID = uid(f"{pid}/{study}")
    ds.SeriesInstanceUID = uid(f"{pid}/{study}/{series}")
    ds.StudyID = str(study_no)
    ds.SeriesNumber = series
    ds.InstanceNumber = number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated = bits
    ds.BitsStored = bits if bits == 8 else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ramp = (np.arange(256).reshape(16, 16) * (number + 1)) % (2**ds.BitsStored)
    ds.PixelData = ramp.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def save(ds, out: Path, syntax):
    if syntax == RLELossless:
        ds.compress(RLELossless, generate_instance_uid=False)
    elif syntax == JPEGBaseline8Bit:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(ds.pixel_array.astype(np.uint8), "L").save(buf, "JPEG", quality=90)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    path = out / ds.PatientID / f"study{ds.StudyID}" / f"series{ds.SeriesNumber}"
    path.mkdir(parents=True, exist_ok=True)
    ds.save_as(path / f"{ds.InstanceNumber}.dcm", enforce_file_format=True)


def main(out: Path):
    p1 = ("QP001", "Müller^Zoë", "ISO_IR 192", 1, "20240105")
    p2 = ("QP002", "Jansen^Piet", None, 2, "20240312")
    for n in (1, 2, 3):
        save(instance(p1, 1, 1, n, CTImageStorage, 16), out, ExplicitVRLittleEndian)
    save(instance(p2, 1, 1, 1, CTImageStorage, 16), out, ImplicitVRLittleEndian)
    save(instance(p2, 1, 1, 2, CTImageStorage, 16), out, RLELossless)
    save(instance(p2, 1, 2, 1, SecondaryCaptureImageStorage, 8), out, JPEGBaseline8Bit)
    print(f"wrote 6 instances in 2 studies to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
