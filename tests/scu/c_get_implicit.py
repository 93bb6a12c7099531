#!/usr/bin/env python3
"""C-GET one instance with pynetdicom, offering only Implicit VR Little Endian, for the GET
context and for the storage sub-operations (SCP role, PS3.4 C.4.3; PS3.7 D.3.3.4), so the
SCP must convert an instance stored in another syntax. DCMTK 3.6.7 getscu cannot do this
(its `+xi` proposes Explicit VR storage contexts).

Usage: c_get_implicit.py HOST PORT CALLING_AE CALLED_AE STUDY SERIES SOP
Prints one JSON object: the instances received, the status of every C-GET response and the
sub-operation counts of the last.
"""
import json
import sys

from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

host, port, calling, called, study, series, sop = sys.argv[1:8]
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
ae.add_requested_context(CTImageStorage, [ImplicitVRLittleEndian])
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
statuses, counts = [], {}
for status, _identifier in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
    if not status:
        statuses.append(None)
        continue
    statuses.append(status.Status)
    for keyword in ("Completed", "Failed", "Warning", "Remaining"):
        value = status.get(f"NumberOf{keyword}Suboperations")
        if value is not None:
            counts[keyword.lower()] = int(value)
established = assoc.is_established
assoc.release()
print(json.dumps({"received": received, "statuses": statuses, "counts": counts,
                  "established_to_the_end": established}))
