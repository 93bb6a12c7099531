#!/usr/bin/env python3
"""Write the seed-* inputs of fuzz/corpus/pacs_answer (run from fuzz/): C-FIND match identifiers, encoded
with pydicom as a PACS would send them (data set only, no meta header)."""
import os
import struct
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom import config

config.settings.writing_validation_mode = config.IGNORE

def enc(ds, implicit=False):
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    return fp.getvalue()

def without_first_element(raw, implicit=False):
    """Drop the first (short) element: the Specific Character Set."""
    if implicit:
        n = struct.unpack_from("<I", raw, 4)[0]
        return raw[8 + n:]
    n = struct.unpack_from("<H", raw, 6)[0]
    return raw[8 + n:]

def study(charset=None, name="Jansen^Piet", ref="", desc="CT thorax"):
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = "STUDY"
    ds.RetrieveAETitle = "PACS"
    ds.StudyDate = "20240131"
    ds.StudyTime = "101500.123"
    ds.AccessionNumber = "A12345"
    ds.ModalitiesInStudy = ["CT", "MR"]
    ds.ReferringPhysicianName = ref
    ds.StudyDescription = desc
    ds.PatientName = name
    ds.PatientID = "999912345"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.1.1"
    ds.StudyID = "1"
    ds.NumberOfStudyRelatedSeries = "2"
    ds.NumberOfStudyRelatedInstances = "57"
    return ds

seeds = {}

# Latin-1 bytes and no Specific Character Set (the usual PACS, default_charset decides).
latin1 = study("ISO_IR 100", "Müller^Zoë", "Dr. Ångström^Søren", "Schädel nativ")
seeds["seed-latin1-no-charset-explicit"] = without_first_element(enc(latin1))
seeds["seed-latin1-no-charset-implicit"] = without_first_element(enc(latin1, True), True)
# ISO_IR 192 (UTF-8), named.
seeds["seed-utf8-iso-ir-192-explicit"] = enc(study("ISO_IR 192", "Müller^Zoë=ミュラー^ゾエ", "Ярослав^Ольга"))
seeds["seed-utf8-iso-ir-192-implicit"] = enc(study("ISO_IR 192", "Müller^Zoë", "Łukasz^Żaneta"), True)
# Latin-1, named.
seeds["seed-iso-ir-100-named"] = enc(study("ISO_IR 100", "Müller^Zoë"))
# ISO 2022 with code extensions (Japanese, PS3.5 H.3.1).
jp = study(["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう")
seeds["seed-iso-2022-ir-87"] = enc(jp)
# Greek and Cyrillic single-byte sets.
seeds["seed-iso-ir-126"] = enc(study("ISO_IR 126", "Διονυσιος"))
seeds["seed-iso-ir-144"] = enc(study("ISO_IR 144", "Люкceмбypг^Гyнтep"))
# Series level with padding in every value, multi-valued with empty values.
series = Dataset()
series.QueryRetrieveLevel = "SERIES"
series.Modality = "CT"
series.SeriesDescription = " Thorax  "
series.SeriesNumber = " 3 "
series.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.1.1"
series.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.1.1.2"
series.BodyPartExamined = "CHEST"
series.NumberOfSeriesRelatedInstances = "  120"
series.ModalitiesInStudy = ["CT", "", "MR "]
seeds["seed-series-padding"] = enc(series)
# Image level: US, IS, UI with NUL padding.
image = Dataset()
image.QueryRetrieveLevel = "IMAGE"
image.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
image.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.1.1.2.3"
image.InstanceNumber = "17"
image.Rows = 512
image.Columns = 512
image.BitsAllocated = 16
image.NumberOfFrames = "1"
seeds["seed-image-level-implicit"] = enc(image, True)
# A sequence (Other Patient IDs, and an empty Referenced Study), undefined and defined lengths.
seq = study("ISO_IR 192", "Müller^Zoë")
item = Dataset()
item.PatientID = "OTHER-1"
item.IssuerOfPatientID = "HOSP-B"
item.PatientName = "Müller-Schmidt^Zoë"
seq.OtherPatientIDsSequence = [item, Dataset()]
seq.ReferencedStudySequence = []
raw = enc(seq)
seeds["seed-sequence-defined"] = raw
seq_ud = seq.copy()
seq_ud["OtherPatientIDsSequence"].is_undefined_length = True
for i in seq_ud.OtherPatientIDsSequence:
    i.is_undefined_length_sequence_item = True
seeds["seed-sequence-undefined"] = enc(seq_ud)
# A person name sent as a sequence (a broken PACS): left out.
bad = Dataset()
bad.add_new(0x00100010, "SQ", [item])
bad.PatientID = "1"
seeds["seed-name-as-sequence"] = enc(bad)
# Truncated answers: in an element's value, in a header, and in a sequence.
full = enc(study("ISO_IR 100", "Müller^Zoë"))
seeds["seed-truncated-value"] = full[:len(full) * 2 // 3]
seeds["seed-truncated-header"] = full[:61]
seeds["seed-truncated-sequence"] = raw[:len(raw) - 20]
# Counts: huge, negative, blank, non-numeric.
counts = study(None, "Jansen^Piet")
# (IS allows 12 characters; some PACS do not care. Sent as LO to keep the text as is.)
for tag, text in ((0x00201208, "18446744073709551615"), (0x00201206, "-1"), (0x00201200, "  "),
                  (0x00201204, "12a"), (0x00201209, "+7")):
    counts.add_new(tag, "LO", text)
seeds["seed-counts-overflow"] = enc(counts)
# Patient level, PN with three component groups and trailing empty components.
patient = Dataset()
patient.SpecificCharacterSet = "ISO_IR 192"
patient.QueryRetrieveLevel = "PATIENT"
patient.PatientName = "Doe^John^^^=^^^^=^^^^"
patient.PatientID = "X"
patient.IssuerOfPatientID = "\0"
patient.NumberOfPatientRelatedStudies = "3"
seeds["seed-patient-level"] = enc(patient)
# Unknown charset named by the PACS, and a bare status-only answer.
seeds["seed-unknown-charset"] = enc(study("ISO_IR 999", "Müller^Zoë"))
seeds["seed-empty"] = b""
only = Dataset()
only.QueryRetrieveLevel = "STUDY"
seeds["seed-only-level"] = enc(only)

os.makedirs(os.path.join("corpus", "pacs_answer"), exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join("corpus", "pacs_answer", name), "wb") as f:
        f.write(data)
print(len(seeds), "seeds")
