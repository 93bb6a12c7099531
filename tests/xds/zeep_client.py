#!/usr/bin/env python3
"""An independent SOAP client for the SOAP front's tests: zeep, driven by the IHE WSDLs.

Usage: zeep_client.py REQUEST.json

REQUEST.json:
  {"wsdl": ".../XDS-I.b_ImagingDocumentSource.wsdl", "binding": "{ns}Binding",
   "operation": "ImagingDocumentSource_RetrieveImagingDocumentSet", "url": "https://...",
   "cert": PEM or null, "key": PEM or null, "ca": PEM or null,
   "assertion": path of a signed saml2:Assertion or null, "bearer": JWT or null,
   "kind": "imaging" | "documents",
   "studies": [{"study": uid, "series": [{"series": uid, "documents": [
        {"repository": oid, "document": uid, "home": "urn:oid:..." or null}]}]}],
   "documents": [{"repository": ..., "document": ..., "home": ...}],
   "syntaxes": ["1.2.840.10008.1.2.1"], "out": directory}

zeep adds WS-Addressing itself (the WSDLs name wsaw:Action: Action, MessageID, To) and reads the MTOM/XOP answer
(xop:Include resolved by Content-ID). The assertion goes in a wsse:Security header as signed.
Prints JSON: {"status", "errors": [{"code", "location"}], "documents": [{"uid", "home",
"repository", "mime", "file"}]}; writes each document to OUT/<uid>.dcm, and the request and
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
