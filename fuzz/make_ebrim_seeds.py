#!/usr/bin/env python3
"""Write the hand-made seed inputs of fuzz/corpus/ebrim_query (run from fuzz/): the IHE/NIST
sample requests of tests/schemas/samples/iti-18 and iti-38 (the AdhocQueryRequest element
only), and small requests for every stored query, list syntax and error case."""
import os, re

QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
out = "corpus/ebrim_query"
os.makedirs(out, exist_ok=True)

def request(query_id, slots, return_type="LeafClass"):
    body = "".join(
        f'<rim:Slot name="{n}"><rim:ValueList>' + "".join(f"<rim:Value>{v}</rim:Value>" for v in vs)
        + "</rim:ValueList></rim:Slot>" for n, vs in slots)
    return (f'<query:AdhocQueryRequest xmlns:query="{QUERY}" xmlns:rim="{RIM}">'
            f'<query:ResponseOption returnComposedObjects="true" returnType="{return_type}"/>'
            f'<rim:AdhocQuery id="{query_id}">{body}</rim:AdhocQuery></query:AdhocQueryRequest>')

PID = "'999999990^^^&amp;2.16.840.1.113883.2.4.6.3&amp;ISO'"
APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
seeds = {
    "find-documents": request("urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d", [
        ("$XDSDocumentEntryPatientId", [PID]), ("$XDSDocumentEntryStatus", [APPROVED]),
        ("$XDSDocumentEntryEventCodeList", ["('CT^^^1.2.840.10008.2.16.4','MR^^^1.2.840.10008.2.16.4')"]),
        ("$XDSDocumentEntryEventCodeList", ["('CT^^^1.2.840.10008.2.16.4')"]),
        ("$XDSDocumentEntryCreationTimeFrom", ["20200101"]),
        ("$targetCommunityIdList", ["('urn:oid:1.2.3','urn:oid:4.5.6')"])]),
    "by-reference": request("urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492", [
        ("$XDSDocumentEntryPatientId", [PID]), ("$XDSDocumentEntryStatus", [APPROVED]),
        ("$XDSDocumentEntryReferenceIdList", ["('1.2.3^^^^urn:ihe:iti:xds:2013:studyInstanceUID')"])]),
    "get-documents": request("urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4", [
        ("$XDSDocumentEntryUniqueId", ["('1.2.3', '4.5.6')"])], "ObjectRef"),
    "get-related": request("urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6", [
        ("$XDSDocumentEntryEntryUUID", ["'urn:uuid:1'"]),
        ("$AssociationTypes", ["('urn:ihe:iti:2007:AssociationType:RPLC')"])]),
    "empty-target": request("urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155", [
        ("$uuid", ["('urn:uuid:1')"]), ("$targetCommunityIdList", ["()"])]),
    "unknown-query": request("urn:uuid:00000000-0000-0000-0000-000000000000", []),
    "missing-param": request("urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d", [
        ("$XDSDocumentEntryPatientId", [PID])]),
    "bad-list": request("urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d", [
        ("$XDSDocumentEntryPatientId", [PID]), ("$XDSDocumentEntryStatus", ["('a'"])]),
    "quotes": request("urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9", [
        ("$XDSSubmissionSetPatientId", ["'O''Brien'"]), ("$XDSSubmissionSetStatus", [APPROVED])]),
}
for name, text in seeds.items():
    with open(os.path.join(out, f"seed-{name}.xml"), "w") as f:
        f.write(text)
for sub in ("iti-18", "iti-38"):
    d = os.path.join("..", "tests", "schemas", "samples", sub)
    for name in sorted(os.listdir(d)):
        text = open(os.path.join(d, name), encoding="utf-8").read()
        m = re.search(r"<(\w+:)?AdhocQueryRequest\b.*?</(\w+:)?AdhocQueryRequest>", text, re.S)
        if not m:
            continue
        element = m.group(0)
        # Namespace declarations made on the envelope go onto the element.
        for prefix, uri in re.findall(r'xmlns:(\w+)="([^"]+)"', text[:m.start()]):
            if f"xmlns:{prefix}=" not in element:
                element = element.replace(">", f' xmlns:{prefix}="{uri}">', 1)
        with open(os.path.join(out, f"seed-sample-{name}"), "w") as f:
            f.write(element)
