#!/usr/bin/env python3
"""C-GET one instance with pynetdicom, offering one transfer syntax only for the storage
sub-operations (SCP role, PS3.4 C.4.3; PS3.7 D.3.3.4): by default Implicit VR Little Endian
(for the GET context too), so the SCP must convert an instance stored in another syntax.
DCMTK 3.6.7 getscu cannot do this (its `+xi` proposes Explicit VR storage contexts), nor
propose a syntax it does not know (HTJ2K).

Usage: c_get_one.py HOST PORT CALLING_AE CALLED_AE STUDY SERIES SOP [STORAGE_SYNTAX_UID]
Prints one JSON object: the instances received, the status of every C-GET response, the
sub-operation counts of the last and the Failed SOP Instance UID List (0008,0058) of the
final response's identifier.
"""
import json
import sys

from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

host, port, calling, called, study, series, sop = sys.argv[1:8]
storage_syntax = sys.argv[8] if len(sys.argv) > 8 else ImplicitVRLittleEndian
received = []


def on_store(event):
    received.append(
        {
            "sop": event.request.AffectedSOPInstanceUID,
            "transfer_syntax": str(event.context.transfer_syntax),
        }
    )
    return 0x0000


ae = AE(ae_title=calling)
ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet, [ImplicitVRLittleEndian])
ae.add_requested_context(CTImageStorage, [storage_syntax])
assoc = ae.associate(
    host,
    int(port),
    ae_title=called,
    ext_neg=[build_role(CTImageStorage, scp_role=True)],
    evt_handlers=[(evt.EVT_C_STORE, on_store)],
)
if not assoc.is_established:
    print(json.dumps({"error": "association not established"}))
    sys.exit(1)
query = Dataset()
query.QueryRetrieveLevel = "IMAGE"
query.StudyInstanceUID = study
query.SeriesInstanceUID = series
query.SOPInstanceUID = sop
statuses, counts, failed_sops = [], {}, []
for status, identifier in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
    if not status:
        statuses.append(None)
        continue
    statuses.append(status.Status)
    for keyword in ("Completed", "Failed", "Warning", "Remaining"):
        value = status.get(f"NumberOf{keyword}Suboperations")
        if value is not None:
            counts[keyword.lower()] = int(value)
    if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
        value = identifier.FailedSOPInstanceUIDList
        failed_sops = [value] if isinstance(value, str) else [str(v) for v in value]
established = assoc.is_established
assoc.release()
print(json.dumps({"received": received, "statuses": statuses, "counts": counts,
                  "failed_sops": failed_sops, "established_to_the_end": established}))
