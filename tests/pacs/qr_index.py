"""In-memory index of a folder of DICOM Part 10 files, and Query/Retrieve matching.

Used by quirky_pacs.py. Every file under the folder (recursively) that pydicom reads as a
Part 10 file with Study, Series and SOP Instance UIDs is indexed: its header (everything
before Pixel Data) stays in memory, the full data set is read from `path` when sent.

Matching (PS3.4 C.2.2.2), on any attribute of the identifier, at the entity level the
identifier's Query/Retrieve Level names:
  - universal: an empty value matches everything
  - single value: exact (Person Name: case-insensitive)
  - wildcard: `*` and `?` (Person Name: case-insensitive)
  - list: backslash-separated values, any of them (UID lists, ModalitiesInStudy = CT\\MR)
  - range: DA / TM / DT `A-B`, `A-`, `-B` (inclusive)
An attribute absent from a file has the empty value (it matches universal and `*` only).
An entity matches when one of its instances matches every key; the response takes its
values from that instance. Computed attributes (NumberOf*Related*, ModalitiesInStudy,
SOPClassesInStudy) are counted over the whole entity.
"""

from __future__ import annotations

import copy
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

LOG = logging.getLogger("quirky")

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
LEVEL_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
# Keys that are never matched nor copied from a file.
NOT_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC"}
TEXT_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "UC", "CS", "AE", "DA", "TM", "DT"}


@dataclass
class Instance:
    path: Path
    header: Dataset  # the file's data set before Pixel Data (file_meta included)

    def get(self, keyword: str) -> str:
        return str(self.header.get(keyword, "") or "").strip()

    @property
    def transfer_syntax(self):
        return self.header.file_meta.TransferSyntaxUID


def values_of(value) -> list[str]:
    """An element value as a list of strings ([""] when empty)."""
    if value is None or value == "":
        return [""]
    if isinstance(value, (list, MultiValue)):
        return [str(v).strip() for v in value] or [""]
    return [str(value).strip()]


def _wildcard(pattern: str, case_insensitive: bool) -> re.Pattern:
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(rx, re.S | (re.I if case_insensitive else 0))


def match_one(pattern: str, vr: str, value: str) -> bool:
    """Does one query value match one stored value?"""
    if pattern == "":
        return True
    if vr in ("DA", "TM", "DT") and "-" in pattern and not (vr == "DT" and pattern.count("-") > 1):
        lo, hi = pattern.split("-", 1)
        if value == "":
            return False
        if hi and len(value) > len(hi):
            hi += "9" * (len(value) - len(hi))  # -1200 includes 12:00:30
        return (not lo or lo <= value) and (not hi or value <= hi)
    if "*" in pattern or "?" in pattern:
        return _wildcard(pattern, vr == "PN").fullmatch(value) is not None
    if vr == "PN":
        return pattern.lower() == value.lower()
    return pattern == value


class Index:
    def __init__(self, root: Path):
        self.instances: list[Instance] = []
        skipped = 0
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            try:
                ds = dcmread(path, stop_before_pixels=True)
                ds.file_meta.TransferSyntaxUID  # Part 10 only
                for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                    ds[key]
                for _ in ds:  # decode every element now, not lazily in handler threads
                    pass
            except (InvalidDicomError, AttributeError, KeyError, OSError, ValueError) as e:
                skipped += 1
                LOG.debug("skip %s: %s", path, e)
                continue
            self.instances.append(Instance(path, ds))
        self.instances.sort(
            key=lambda i: (
                i.get("PatientID"),
                i.get("StudyInstanceUID"),
                int(i.header.get("SeriesNumber") or 0),
                i.get("SeriesInstanceUID"),
                int(i.header.get("InstanceNumber") or 0),
                str(i.path),
            )
        )
        self._groups = {
            level: self._group(LEVEL_KEY[level]) for level in LEVELS
        }
        LOG.info(
            "indexed %d instances in %d studies from %s (%d other files skipped)",
            len(self.instances),
            len(self._groups["STUDY"]),
            root,
            skipped,
        )

    def _group(self, keyword: str) -> dict[str, list[Instance]]:
        groups: dict[str, list[Instance]] = defaultdict(list)
        for inst in self.instances:
            groups[inst.get(keyword)].append(inst)
        return groups

    def computed(self, keyword: str, inst: Instance):
        """Value of a computed (entity-wide) attribute for the entity of `inst`, or None."""
        patient = self._groups["PATIENT"].get(inst.get("PatientID"), [])
        study = self._groups["STUDY"].get(inst.get("StudyInstanceUID"), [])
        series = self._groups["SERIES"].get(inst.get("SeriesInstanceUID"), [])

        def distinct(items, keyword):
            return sorted({i.get(keyword) for i in items} - {""})

        return {
            "NumberOfPatientRelatedStudies": lambda: len(distinct(patient, "StudyInstanceUID")),
            "NumberOfPatientRelatedSeries": lambda: len(distinct(patient, "SeriesInstanceUID")),
            "NumberOfPatientRelatedInstances": lambda: len(patient),
            "NumberOfStudyRelatedSeries": lambda: len(distinct(study, "SeriesInstanceUID")),
            "NumberOfStudyRelatedInstances": lambda: len(study),
            "NumberOfSeriesRelatedInstances": lambda: len(series),
            "ModalitiesInStudy": lambda: distinct(study, "Modality"),
            "SOPClassesInStudy": lambda: distinct(study, "SOPClassUID"),
        }.get(keyword, lambda: None)()

    def _instance_matches(self, inst: Instance, identifier: Dataset) -> bool:
        for elem in identifier:
            kw = elem.keyword
            if elem.VR == "SQ" or kw in NOT_KEYS or elem.tag.group in (0x0000, 0x0002):
                continue
            patterns = values_of(elem.value)
            if patterns == [""]:
                continue
            computed = self.computed(kw, inst)
            if computed is not None:
                stored = values_of(computed)
            else:
                stored = values_of(inst.header[elem.tag].value) if elem.tag in inst.header else [""]
            if not any(match_one(p, elem.VR, v) for p in patterns for v in stored):
                return False
        return True

    def match(self, identifier: Dataset) -> list[tuple[str, Instance]]:
        """(entity key, representative instance) of each entity matching the identifier.

        Raises ValueError on a missing or unknown Query/Retrieve Level.
        """
        level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        if level not in LEVELS:
            raise ValueError(f"bad QueryRetrieveLevel {level!r}")
        found = []
        for key, members in self._groups[level].items():
            rep = next((i for i in members if self._instance_matches(i, identifier)), None)
            if rep is not None:
                found.append((key, rep))
        return found

    def retrieve(self, identifier: Dataset) -> list[Instance]:
        """Every instance of every entity matching the identifier (C-GET / C-MOVE)."""
        level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        keys = {key for key, _ in self.match(identifier)}
        return [i for i in self.instances if i.get(LEVEL_KEY[level]) in keys]

    def find_response(self, identifier: Dataset, inst: Instance, charset: bool) -> Dataset:
        """A C-FIND response identifier: every requested key, valued from `inst`.

        charset=False: no Specific Character Set, non-ASCII text as Latin-1 bytes anyway.
        """
        rsp = Dataset()
        if charset and "SpecificCharacterSet" in inst.header:
            rsp.SpecificCharacterSet = inst.header.SpecificCharacterSet
        rsp.QueryRetrieveLevel = str(identifier.QueryRetrieveLevel).strip().upper()
        for elem in identifier:
            if elem.keyword in NOT_KEYS or elem.tag.group in (0x0000, 0x0002):
                continue
            computed = self.computed(elem.keyword, inst)
            if computed is not None:
                rsp.add_new(elem.tag, elem.VR, computed)
            elif elem.tag in inst.header:
                rsp.add(copy.deepcopy(inst.header[elem.tag]))
            else:
                rsp.add_new(elem.tag, elem.VR, [] if elem.VR == "SQ" else None)
        if not charset:
            for elem in rsp:
                if elem.VR in TEXT_VRS and elem.value not in (None, ""):
                    text = "\\".join(values_of(elem.value)) if elem.VM > 1 else str(elem.value)
                    if not text.isascii():
                        elem.value = text.encode("latin-1", errors="replace")
        return rsp
