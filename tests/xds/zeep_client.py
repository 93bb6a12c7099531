#!/usr/bin/env python3
"""An independent SOAP client for the SOAP front's tests: zeep, driven by the IHE WSDLs.

Usage: zeep_client.py REQUEST.json

REQUEST.json:
  {"wsdl": ".../XDS-I.b_ImagingDocumentSource.wsdl", "binding": "{ns}Binding",
   "operation": "ImagingDocumentSource_RetrieveImagingDocumentSet", "url": "https://...",
   "cert": PEM or null, "key": PEM or null, "ca": PEM or null,
   "assertion": path of a signed saml2:Assertion or null, "bearer": JWT or null,
   "kind": "imaging" | "documents" | "query",
   "query": {"id": "urn:uuid:...", "slots": {"$XDSDocumentEntryPatientId": ["'...'"], ...}},
   "studies": [{"study": uid, "series": [{"series": uid, "documents": [
        {"repository": oid, "document": uid, "home": "urn:oid:..." or null}]}]}],
   "documents": [{"repository": ..., "document": ..., "home": ...}],
   "syntaxes": ["1.2.840.10008.1.2.1"], "out": directory}

zeep adds WS-Addressing itself (the WSDLs name wsaw:Action: Action, MessageID, To) and reads the MTOM/XOP answer
(xop:Include resolved by Content-ID). The assertion goes in a wsse:Security header as signed.
Prints JSON: {"status", "errors": [{"code", "location"}], "documents": [{"uid", "home",
"repository", "mime", "file"}]} (a query: {"status", "errors", "entries": [{"entryUUID",
"uniqueId", "home", "repository", "mime", "formatCode", "patientId", "referenceIds"}]}, read
from the response envelope with lxml); writes each document to OUT/<uid>.dcm, and the request and
response envelopes (after zeep) to OUT/request.xml and OUT/response.xml. A Fault is printed as
{"fault": {"code", "subcodes", "reason"}}.
"""
import json
import os
import sys

import requests
from lxml import etree
from zeep import Client, Settings
from zeep.exceptions import Fault
from zeep.plugins import HistoryPlugin
from zeep.transports import Transport

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"


def main():
    req = json.load(open(sys.argv[1]))
    session = requests.Session()
    # Only what is given here: no CA bundle or proxy from the environment.
    session.trust_env = False
    if req.get("cert"):
        session.cert = (req["cert"], req["key"])
    session.verify = req.get("ca") or True
    if req.get("bearer"):
        session.headers["Authorization"] = "Bearer " + req["bearer"]
    history = HistoryPlugin()
    client = Client(
        req["wsdl"],
        transport=Transport(session=session, timeout=60),
        plugins=[history],
        settings=Settings(strict=True, xml_huge_tree=True),
    )
    service = client.create_service(req["binding"], req["url"])
    headers = []
    if req.get("assertion"):
        security = etree.Element("{%s}Security" % WSSE, nsmap={"wsse": WSSE})
        with open(req["assertion"], "rb") as f:
            security.append(etree.fromstring(f.read()))
        headers.append(security)
    operation = getattr(service, req["operation"])
    if req["kind"] == "imaging":
        studies = []
        for st in req["studies"]:
            series = []
            for se in st["series"]:
                docs = [document(d) for d in se["documents"]]
                series.append({"seriesInstanceUID": se["series"], "DocumentRequest": docs})
            studies.append({"studyInstanceUID": st["study"], "SeriesRequest": series})
        call = lambda: operation(
            StudyRequest=studies,
            TransferSyntaxUIDList={"TransferSyntaxUID": req["syntaxes"]},
            _soapheaders=headers,
        )
    elif req["kind"] == "query":
        # rim:ValueList is a repeated group in the schema: zeep takes it as `_value_1`.
        slots = [{"name": name, "ValueList": {"_value_1": [{"Value": v} for v in values]}}
                 for name, values in req["query"]["slots"].items()]

        def call():
            # zeep 4 cannot read rim:ExtrinsicObject in rim:RegistryObjectList (a member of
            # the rim:Identifiable substitution group): the answer is read with lxml instead
            # (and validated with xmllint by the test).
            with client.settings(raw_response=True):
                return operation(
                    ResponseOption={"returnType": "LeafClass", "returnComposedObjects": True},
                    AdhocQuery={"id": req["query"]["id"], "Slot": slots},
                    _soapheaders=headers,
                )
    else:
        docs = [document(d) for d in req["documents"]]
        call = lambda: operation(DocumentRequest=docs, _soapheaders=headers)
    out = req["out"]
    os.makedirs(out, exist_ok=True)
    try:
        result = call()
    except Fault as fault:
        save(history, out)
        subcodes = [etree.QName(s).localname if isinstance(s, str) and s.startswith("{") else str(s)
                    for s in (fault.subcodes or [])]
        print(json.dumps({"fault": {"code": str(fault.code), "subcodes": subcodes,
                                    "reason": fault.message}}))
        return
    if req["kind"] == "query":
        save(history, out)
        envelope = etree.fromstring(result.content)
        with open(os.path.join(out, "response.xml"), "wb") as f:
            f.write(etree.tostring(envelope))
        fault = envelope.find(".//{http://www.w3.org/2003/05/soap-envelope}Fault")
        if fault is not None:
            print(json.dumps({"fault": {"code": "", "subcodes": [], "reason": etree.tostring(fault).decode()}}))
            return
        print(json.dumps(query_answer(envelope)))
        return
    save(history, out)
    response = result["RegistryResponse"]
    errors = []
    if response["RegistryErrorList"] is not None:
        for e in response["RegistryErrorList"]["RegistryError"]:
            errors.append({"code": e["errorCode"], "location": e["location"],
                           "context": e["codeContext"]})
    documents = []
    for d in result["DocumentResponse"] or []:
        path = os.path.join(out, d["DocumentUniqueId"] + ".dcm")
        with open(path, "wb") as f:
            f.write(d["Document"])
        documents.append({"uid": d["DocumentUniqueId"], "home": d["HomeCommunityId"],
                          "repository": d["RepositoryUniqueId"], "mime": d["mimeType"],
                          "file": path})
    print(json.dumps({"status": response["status"], "errors": errors, "documents": documents}))


RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"


def query_answer(envelope):
    """The AdhocQueryResponse as data, read from the envelope zeep received."""
    response = envelope.find(".//{%s}AdhocQueryResponse" % QUERY)
    errors = [{"code": e.get("errorCode"), "location": e.get("location"),
               "context": e.get("codeContext")}
              for e in response.iter("{%s}RegistryError" % RS)]
    entries = []
    for eo in response.iter("{%s}ExtrinsicObject" % RIM):
        def slot(name):
            s = eo.find("{%s}Slot[@name='%s']" % (RIM, name))
            return [] if s is None else [v.text for v in s.iter("{%s}Value" % RIM)]
        def ext(scheme):
            e = eo.find("{%s}ExternalIdentifier[@identificationScheme='%s']" % (RIM, scheme))
            return None if e is None else e.get("value")
        fmt = eo.find("{%s}Classification[@classificationScheme='%s']" % (RIM, FORMAT_CODE))
        entries.append({"entryUUID": eo.get("id"), "home": eo.get("home"),
                        "mime": eo.get("mimeType"), "status": eo.get("status"),
                        "uniqueId": ext(UNIQUE_ID), "patientId": ext(PATIENT_ID),
                        "repository": (slot("repositoryUniqueId") or [None])[0],
                        "referenceIds": slot("urn:ihe:iti:xds:2013:referenceIdList"),
                        "formatCode": None if fmt is None else fmt.get("nodeRepresentation")})
    return {"status": response.get("status"), "errors": errors, "entries": entries}


def document(d):
    out = {"RepositoryUniqueId": d["repository"], "DocumentUniqueId": d["document"]}
    if d.get("home"):
        out["HomeCommunityId"] = d["home"]
    return out


def save(history, out):
    for name, entry in (("request.xml", history.last_sent), ("response.xml", history.last_received)):
        if entry is not None:
            with open(os.path.join(out, name), "wb") as f:
                f.write(etree.tostring(entry["envelope"]))


if __name__ == "__main__":
    main()
