#!/usr/bin/env python3
"""A responding gateway that is not beeldbrug, for tests/xca_initiating.rs (issue 15).

XCA-I Responding Imaging Gateway for one study, written from the IHE schemas in
/work/shared/schemas (ebRS 3.0 query/rim/rs, XDS.b_DocumentRepository.xsd,
XDSI.b_ImagingDocumentSource.xsd) and the transactions' text:

- ITI-38 Cross Gateway Query (ITI TF-2b 3.38): FindDocuments by patient id, answered with one
  DocumentEntry, the study's KOS manifest (RAD TF-3 4.68.4.1.2.3), `home` set (3.38.4.1.3).
- ITI-39 Cross Gateway Retrieve (ITI TF-2b 3.39): the manifest, MTOM/XOP; and the study's
  reports, each published as a document of its own (REFERENCE §3, Twiin BB "Metadata
  radiologisch verslag"), not referenced by the manifest: a PDF (--report-pdf; mimeType
  application/pdf, formatCode urn:ihe:rad:PDF) and a DICOM SR (--report-sr; application/dicom,
  formatCode its SOP Class), each with typeCode 722124004 and the study in referenceIdList.
- RAD-75 Cross Gateway Retrieve Imaging Document Set (RAD TF-3 4.75): the requested
  instances, MTOM/XOP, each part as its file holds it (one of the requested syntaxes).

Every call is mutual TLS (a client certificate of --client-ca required) and carries a signed
XUA assertion (ITI TF-2b 3.40) in wsse:Security, verified with signxml against --xua-cert;
without one the answer is a SOAP Fault. lxml builds and reads the XML; pydicom writes the
KOS. The study's instances are Part 10 files made by other tools (pydicom's test data,
modified with DCMTK dcmodify), given with --study-dir; nothing here comes from beeldbrug.

The behaviour for the next request is read from --mode-file (one word; absent: `good`):

  good           answer correctly
  hang           accept the request and never answer (a peer that hangs)
  truncated      RAD-75: the envelope, then half of the first instance, then the connection
                 closes (no closing boundary)
  unknown-part   RAD-75: the first part's Content-ID is not in the envelope
  not-dicom      RAD-75: the first part holds an HTML page instead of the instance
  huge-envelope  RAD-75: an envelope of 4 MiB (a comment padding the XML)
  no-boundary    RAD-75: multipart/related without a boundary parameter
  endless        RAD-75: the first part is the instance followed by zeros without end (until
                 the client hangs up, at most ENDLESS_CAP bytes, so that a client without a
                 limit makes the test fail rather than hang)
  report-html    ITI-39 of a PDF report: an HTML page instead of the PDF

Deliberate misconfigurations, for the qualification self-test (tests/selftest.rs, issue 17):

  --no-client-cert-check      TLS without a client certificate required (CERT_NONE)
  --accept-expired-assertions the assertion's NotOnOrAfter is not checked
  --accept-unsigned           the assertion's signature is not verified (unsigned or badly
                              signed assertions pass; a missing one is still refused)
  --weak-tls                  TLS 1.0 and up, every cipher suite OpenSSL has (NULL included)

Prints `READY <port>` on stdout once listening; logs to stderr; GET /stats answers
{"requests": {"ITI-38": n, "ITI-39": n, "RAD-75": n}} (plain text over the same TLS).
"""
import argparse
import datetime
import http.server
import json
import os
import socketserver
import ssl
import sys
import threading
import time
import uuid

import pydicom
from lxml import etree
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from signxml import XMLVerifier

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SAML2 = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
XDSI = "urn:ihe:rad:xdsi-b:2009"
XOP = "http://www.w3.org/2004/08/xop/include"

# ITI TF-2b 3.38.4.1.2, 3.39.4.1.2; RAD TF-3 4.75.4.1.2: wsa:Action values.
ACTION_ITI38 = "urn:ihe:iti:2007:CrossGatewayQuery"
ACTION_ITI39 = "urn:ihe:iti:2007:CrossGatewayRetrieve"
ACTION_RAD75 = "urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSet"
REPLY = {
    ACTION_ITI38: "urn:ihe:iti:2007:CrossGatewayQueryResponse",
    ACTION_ITI39: "urn:ihe:iti:2007:CrossGatewayRetrieveResponse",
    ACTION_RAD75: "urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSetResponse",
}
NAMES = {ACTION_ITI38: "ITI-38", ACTION_ITI39: "ITI-39", ACTION_RAD75: "RAD-75"}

# ITI TF-3 4.2.5: stored query id, object types, classification and identification schemes.
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
STABLE_DOCUMENT = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
CONFIDENTIALITY_CODE = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
EVENT_CODE = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
FACILITY_CODE = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
PRACTICE_CODE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
# ITI TF-3 4.2.3.2.28 referenceIdList and its Study Instance UID identifier type.
REFERENCE_ID_LIST = "urn:ihe:iti:xds:2013:referenceIdList"
REF_STUDY_UID = "urn:ihe:iti:xds:2016:studyInstanceUID"
BSN_OID = "2.16.840.1.113883.2.4.6.3"
KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
KOS_FORMAT_SCHEME = "1.2.840.10008.2.6.1"
DCM_SCHEME = "1.2.840.10008.2.16.4"
# XACML resource-id: the patient the assertion is bound to (ITI TF-2b 3.40.4.1.2.4).
RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"

BOUNDARY = "MIMEBoundary_xcai_peer_0"


def log(*args):
    print("xca-peer:", *args, file=sys.stderr, flush=True)


class Study:
    """The study served: its instances (files) and the KOS manifest made for them."""

    def __init__(self, study_dir, kos_dir):
        self.instances = {}  # SOP Instance UID -> (path, series, class, syntax)
        for root, _, names in os.walk(study_dir):
            for name in sorted(names):
                path = os.path.join(root, name)
                try:
                    ds = pydicom.dcmread(path, stop_before_pixels=True)
                except Exception:
                    continue
                self.instances[str(ds.SOPInstanceUID)] = (
                    path,
                    str(ds.SeriesInstanceUID),
                    str(ds.SOPClassUID),
                    str(ds.file_meta.TransferSyntaxUID),
                )
                self.patient_id = str(ds.PatientID)
                self.study_uid = str(ds.StudyInstanceUID)
                self.modalities = sorted(set(getattr(self, "modalities", []))
                                         | {str(getattr(ds, "Modality", "OT"))})
                self.study_date = str(getattr(ds, "StudyDate", "") or "")
        if not self.instances:
            raise SystemExit(f"no DICOM files under {study_dir}")
        self.kos_uid, self.kos_path = self.make_kos(kos_dir)
        # Reports published as documents of their own: uniqueId -> (path, mimeType,
        # (formatCode, scheme, display), title).
        self.reports = {}

    def add_pdf_report(self, path):
        self.reports[str(generate_uid())] = (
            path, "application/pdf", ("urn:ihe:rad:PDF", "1.3.6.1.4.1.19376.1.2.3", "PDF"),
            "Verslag")

    def add_sr_report(self, path):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if str(ds.StudyInstanceUID) != self.study_uid or str(ds.PatientID) != self.patient_id:
            raise SystemExit("the SR report is not of the study")
        sop_class = str(ds.SOPClassUID)
        self.reports[str(ds.SOPInstanceUID)] = (
            path, "application/dicom", (sop_class, KOS_FORMAT_SCHEME, "DICOM SR"), "Verslag (SR)")

    def make_kos(self, kos_dir):
        """A Key Object Selection document (PS3.3 A.35.4) naming every instance, as the
        manifest of XDS-I.b (RAD TF-3 4.68.4.1.2.1)."""
        ds = Dataset()
        ds.SOPClassUID = KOS_CLASS
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = self.study_uid
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientID = self.patient_id
        ds.PatientName = "PEER^PYTHON"
        ds.Modality = "KO"
        ds.SeriesNumber = 999
        ds.InstanceNumber = 1
        now = datetime.datetime.now(datetime.timezone.utc)
        ds.ContentDate = now.strftime("%Y%m%d")
        ds.ContentTime = now.strftime("%H%M%S")
        ds.StudyDate = self.study_date
        ds.ValueType = "CONTAINER"
        title = Dataset()
        title.CodeValue, title.CodingSchemeDesignator = "113030", "DCM"
        title.CodeMeaning = "Manifest"
        ds.ConceptNameCodeSequence = [title]
        ds.ContinuityOfContent = "SEPARATE"
        series = {}
        for sop, (_, series_uid, sop_class, _) in self.instances.items():
            ref = Dataset()
            ref.ReferencedSOPClassUID = sop_class
            ref.ReferencedSOPInstanceUID = sop
            series.setdefault(series_uid, []).append(ref)
        study = Dataset()
        study.StudyInstanceUID = self.study_uid
        study.ReferencedSeriesSequence = []
        for series_uid, refs in series.items():
            item = Dataset()
            item.SeriesInstanceUID = series_uid
            item.ReferencedSOPSequence = refs
            study.ReferencedSeriesSequence.append(item)
        ds.CurrentRequestedProcedureEvidenceSequence = [study]
        content = []
        for sop, (_, _, sop_class, _) in self.instances.items():
            item = Dataset()
            item.RelationshipType = "CONTAINS"
            item.ValueType = "IMAGE"
            ref = Dataset()
            ref.ReferencedSOPClassUID = sop_class
            ref.ReferencedSOPInstanceUID = sop
            item.ReferencedSOPSequence = [ref]
            content.append(item)
        ds.ContentSequence = content
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = KOS_CLASS
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = os.path.join(kos_dir, "kos.dcm")
        ds.save_as(path, enforce_file_format=True)
        return str(ds.SOPInstanceUID), path


def el(tag, attrib=None, text=None, children=()):
    e = etree.Element(tag, attrib or {})
    if text is not None:
        e.text = text
    for c in children:
        e.append(c)
    return e


def q(ns, name):
    return "{%s}%s" % (ns, name)


def slot(name, *values):
    return el(q(RIM, "Slot"), {"name": name}, children=[
        el(q(RIM, "ValueList"), children=[el(q(RIM, "Value"), text=v) for v in values])])


def name(value):
    return el(q(RIM, "Name"), children=[el(q(RIM, "LocalizedString"), {"value": value})])


def classification(scheme, entry, code, coding_scheme, display):
    return el(q(RIM, "Classification"), {
        "id": "urn:uuid:%s" % uuid.uuid4(), "classificationScheme": scheme,
        "classifiedObject": entry, "nodeRepresentation": code,
    }, children=[slot("codingScheme", coding_scheme), name(display)])


def external_id(scheme, entry, value, label):
    return el(q(RIM, "ExternalIdentifier"), {
        "id": "urn:uuid:%s" % uuid.uuid4(), "identificationScheme": scheme,
        "registryObject": entry, "value": value,
    }, children=[name(label)])


class Gateway:
    def __init__(self, args, study):
        self.args = args
        self.study = study
        self.counts = {"ITI-38": 0, "ITI-39": 0, "RAD-75": 0}
        self.lock = threading.Lock()
        with open(args.xua_cert, "rb") as f:
            self.xua_cert = f.read()

    def mode(self):
        try:
            with open(self.args.mode_file) as f:
                return f.read().strip() or "good"
        except (OSError, TypeError):
            return "good"

    def check_assertion(self, header, bsn=None):
        """ITI TF-2b 3.40.4.1.3: a signed assertion of the trusted issuer; bound to `bsn`
        when it names a patient."""
        security = header.find(q(WSSE, "Security")) if header is not None else None
        assertion = security.find(q(SAML2, "Assertion")) if security is not None else None
        if assertion is None:
            raise ValueError("no XUA assertion in wsse:Security")
        if self.args.accept_unsigned:
            signed = assertion  # misconfigured: the signature is never looked at
        else:
            verified = XMLVerifier().verify(
                etree.tostring(assertion), x509_cert=self.xua_cert, id_attribute="ID")
            signed = verified.signed_xml
        conditions = signed.find(q(SAML2, "Conditions"))
        not_after = conditions.get("NotOnOrAfter") if conditions is not None else None
        if not not_after:
            raise ValueError("assertion without NotOnOrAfter")
        end = datetime.datetime.fromisoformat(not_after.replace("Z", "+00:00"))
        if end <= datetime.datetime.now(datetime.timezone.utc) and not self.args.accept_expired_assertions:
            raise ValueError("assertion expired")
        if bsn is not None:
            for attribute in signed.iter(q(SAML2, "Attribute")):
                if attribute.get("Name") == RESOURCE_ID:
                    values = "".join(attribute.itertext())
                    if bsn not in values:
                        raise ValueError("assertion bound to another patient")

    def envelope(self, action, relates_to, body):
        env = el(q(SOAP12, "Envelope"), children=[
            el(q(SOAP12, "Header"), children=[
                el(q(WSA, "Action"), {q(SOAP12, "mustUnderstand"): "1"}, text=REPLY[action]),
                el(q(WSA, "RelatesTo"), text=relates_to or ""),
            ]),
            el(q(SOAP12, "Body"), children=[body]),
        ])
        return etree.tostring(env, xml_declaration=True, encoding="UTF-8")

    @staticmethod
    def fault(reason):
        env = el(q(SOAP12, "Envelope"), children=[el(q(SOAP12, "Body"), children=[
            el(q(SOAP12, "Fault"), children=[
                el(q(SOAP12, "Code"), children=[el(q(SOAP12, "Value"), text="env:Sender")]),
                el(q(SOAP12, "Reason"), children=[
                    el(q(SOAP12, "Text"), {"{http://www.w3.org/XML/1998/namespace}lang": "en"},
                       text=reason)]),
            ])])])
        return etree.tostring(env, xml_declaration=True, encoding="UTF-8")

    def find_documents(self, request):
        """ITI-38: the KOS DocumentEntry when the patient id names our patient."""
        params = {}
        adhoc = request.find(q(RIM, "AdhocQuery"))
        if adhoc is None or adhoc.get("id") != FIND_DOCUMENTS:
            return self.query_failure("XDSUnknownStoredQuery", "only FindDocuments")
        for s in adhoc.findall(q(RIM, "Slot")):
            params[s.get("name")] = [v.text or "" for v in s.iter(q(RIM, "Value"))]
        patient = "".join(params.get("$XDSDocumentEntryPatientId", [""])).strip("'() ")
        bsn = patient.split("^", 1)[0]
        response = el(q(QUERY, "AdhocQueryResponse"), {"status": SUCCESS})
        objects = el(q(RIM, "RegistryObjectList"))
        response.append(objects)
        if bsn != self.study.patient_id or not patient.endswith("&%s&ISO" % BSN_OID):
            return response, bsn
        entry = "urn:uuid:%s" % uuid.uuid4()
        st = self.study
        when = (st.study_date or "19700101") + "120000"
        eo = el(q(RIM, "ExtrinsicObject"), {
            "id": entry, "mimeType": "application/dicom", "objectType": STABLE_DOCUMENT,
            "status": APPROVED, "home": self.args.home,
        }, children=[
            slot("creationTime", datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S")),
            slot("languageCode", "nl-NL"),
            slot("repositoryUniqueId", self.args.repository),
            slot("serviceStartTime", when),
            slot("sourcePatientId", "%s^^^&%s&ISO" % (st.patient_id, BSN_OID)),
            slot(REFERENCE_ID_LIST, "%s^^^^%s" % (st.study_uid, REF_STUDY_UID)),
            name("Python peer study"),
            classification(CLASS_CODE, entry, "IMAGES", "2.16.840.1.113883.6.1", "Images"),
            classification(CONFIDENTIALITY_CODE, entry, "N", "2.16.840.1.113883.5.25", "Normal"),
        ])
        for modality in st.modalities:
            eo.append(classification(EVENT_CODE, entry, modality, DCM_SCHEME, modality))
        eo.append(classification(FORMAT_CODE, entry, KOS_CLASS, KOS_FORMAT_SCHEME, "KOS"))
        eo.append(classification(FACILITY_CODE, entry, "Z3", "2.16.840.1.113883.2.4.15.1060",
                                 "Ziekenhuis"))
        eo.append(classification(PRACTICE_CODE, entry, "0362", "2.16.840.1.113883.2.4.6.7",
                                 "Radiologie"))
        eo.append(classification(TYPE_CODE, entry, "18748-4", "2.16.840.1.113883.6.1",
                                 "Diagnostic imaging study"))
        eo.append(external_id(DE_PATIENT_ID, entry, "%s^^^&%s&ISO" % (st.patient_id, BSN_OID),
                              "XDSDocumentEntry.patientId"))
        eo.append(external_id(DE_UNIQUE_ID, entry, st.kos_uid, "XDSDocumentEntry.uniqueId"))
        objects.append(eo)
        for uid, (_, mime, (code, scheme, display), title) in st.reports.items():
            entry = "urn:uuid:%s" % uuid.uuid4()
            ro = el(q(RIM, "ExtrinsicObject"), {
                "id": entry, "mimeType": mime, "objectType": STABLE_DOCUMENT,
                "status": APPROVED, "home": self.args.home,
            }, children=[
                slot("creationTime",
                     datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S")),
                slot("languageCode", "nl-NL"),
                slot("repositoryUniqueId", self.args.repository),
                slot("serviceStartTime", when),
                slot("sourcePatientId", "%s^^^&%s&ISO" % (st.patient_id, BSN_OID)),
                slot(REFERENCE_ID_LIST, "%s^^^^%s" % (st.study_uid, REF_STUDY_UID)),
                name(title),
                classification(CLASS_CODE, entry, "9491000146107", "2.16.840.1.113883.6.96",
                               "Imaging Documentation"),
                classification(CONFIDENTIALITY_CODE, entry, "N", "2.16.840.1.113883.5.25",
                               "Normal"),
                classification(FORMAT_CODE, entry, code, scheme, display),
                classification(FACILITY_CODE, entry, "Z3", "2.16.840.1.113883.2.4.15.1060",
                               "Ziekenhuis"),
                classification(PRACTICE_CODE, entry, "0362", "2.16.840.1.113883.2.4.6.7",
                               "Radiologie"),
                classification(TYPE_CODE, entry, "722124004", "2.16.840.1.113883.6.96",
                               "Radiology report"),
                external_id(DE_PATIENT_ID, entry, "%s^^^&%s&ISO" % (st.patient_id, BSN_OID),
                            "XDSDocumentEntry.patientId"),
                external_id(DE_UNIQUE_ID, entry, uid, "XDSDocumentEntry.uniqueId"),
            ])
            objects.append(ro)
        return response, bsn

    @staticmethod
    def query_failure(code, context):
        response = el(q(QUERY, "AdhocQueryResponse"), {"status": FAILURE})
        response.append(el(q(RS, "RegistryErrorList"), children=[el(q(RS, "RegistryError"), {
            "errorCode": code, "codeContext": context,
            "severity": "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"})]))
        return response

    def documents_requested(self, request, action):
        """(home, repository, document) of every DocumentRequest, and the syntaxes asked."""
        docs = []
        for d in request.iter(q(XDSB, "DocumentRequest")):
            text = lambda n: (d.findtext(q(XDSB, n)) or "").strip()
            docs.append((text("HomeCommunityId"), text("RepositoryUniqueId"),
                         text("DocumentUniqueId")))
        syntaxes = [(t.text or "").strip() for t in request.iter(q(XDSI, "TransferSyntaxUID"))]
        return docs, syntaxes

    def retrieve_parts(self, docs, syntaxes, action):
        """The DocumentResponses and their parts: (cid, bytes) per document we hold in an
        acceptable syntax; the others as RegistryErrors (RAD TF-3 4.75.4.2.2)."""
        responses, parts, errors = [], [], []
        for n, (home, repository, document) in enumerate(docs):
            mime = "application/dicom"
            if document == self.study.kos_uid and action == ACTION_ITI39:
                path, syntax = self.study.kos_path, ExplicitVRLittleEndian
            elif document in self.study.reports and action == ACTION_ITI39:
                path, mime, _, _ = self.study.reports[document]
            elif document in self.study.instances and action == ACTION_RAD75:
                path, _, _, syntax = self.study.instances[document]
                if syntaxes and syntax not in syntaxes:
                    errors.append(("XDSRepositoryError", document,
                                   "stored as %s, not among the syntaxes asked" % syntax))
                    continue
            else:
                errors.append(("XDSDocumentUniqueIdError", document, "unknown document"))
                continue
            cid = "doc%d@xca-peer.test" % n
            with open(path, "rb") as f:
                parts.append((cid, f.read(), mime))
            responses.append(el(q(XDSB, "DocumentResponse"), children=[
                el(q(XDSB, "HomeCommunityId"), text=self.args.home),
                el(q(XDSB, "RepositoryUniqueId"), text=self.args.repository),
                el(q(XDSB, "DocumentUniqueId"), text=document),
                el(q(XDSB, "mimeType"), text=mime),
                el(q(XDSB, "Document"), children=[el(q(XOP, "Include"), {"href": "cid:" + cid})]),
            ]))
        status = SUCCESS if not errors else (
            "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess" if responses else FAILURE)
        registry = el(q(RS, "RegistryResponse"), {"status": status})
        if errors:
            registry.append(el(q(RS, "RegistryErrorList"), children=[
                el(q(RS, "RegistryError"), {
                    "errorCode": code, "location": where, "codeContext": why,
                    "severity": "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"})
                for code, where, why in errors]))
        body = el(q(XDSB, "RetrieveDocumentSetResponse"), children=[registry] + responses)
        return body, parts


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    gateway = None

    def log_message(self, fmt, *args):
        log(self.address_string(), fmt % args)

    def do_GET(self):
        if self.path != "/stats":
            self.send_error(404)
            return
        body = json.dumps({"requests": self.gateway.counts}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def plain(self, status, xml):
        self.send_response(status)
        self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(xml)))
        self.end_headers()
        self.wfile.write(xml)

    def do_POST(self):
        gw = self.gateway
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            root = etree.fromstring(raw, etree.XMLParser(resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError as e:
            self.plain(400, gw.fault("not XML: %s" % e))
            return
        header = root.find(q(SOAP12, "Header"))
        body = root.find(q(SOAP12, "Body"))
        action = (header.findtext(q(WSA, "Action")) if header is not None else "") or ""
        action = action.strip()
        message_id = (header.findtext(q(WSA, "MessageID")) if header is not None else "") or ""
        if action not in NAMES or body is None or len(body) == 0:
            self.plain(400, gw.fault("unknown action %r" % action))
            return
        with gw.lock:
            gw.counts[NAMES[action]] += 1
        mode = gw.mode()
        log(NAMES[action], "mode", mode)
        if mode == "hang":
            time.sleep(3600)
            return
        request = body[0]
        try:
            if action == ACTION_ITI38:
                gw.check_assertion(header)
                response, bsn = gw.find_documents(request)
                gw.check_assertion(header, bsn)
                self.plain(200, gw.envelope(action, message_id, response))
                return
            gw.check_assertion(header, gw.study.patient_id)
        except Exception as e:  # a refused assertion is a Fault (ITI TF-2b 3.40.4.1.3)
            log("refused:", e)
            self.plain(400, gw.fault("XUA: %s" % e))
            return
        docs, syntaxes = gw.documents_requested(request, action)
        response, parts = gw.retrieve_parts(docs, syntaxes, action)
        envelope = gw.envelope(action, message_id, response)
        if action == ACTION_ITI39:
            mode = mode if mode.startswith("report-") else "good"
        elif action != ACTION_RAD75 or mode.startswith("report-"):
            mode = "good"
        self.mtom(action, envelope, parts, mode)

    def mtom(self, action, envelope, parts, mode):
        """The answer as MTOM/XOP (SOAP 1.2 MTOM; ITI TF-2x V.3.7): the envelope as the
        start part, each document a binary part; the body streamed in HTTP/1.1 chunks
        (RFC 9112 7.1), the connection closed at its end."""
        if mode == "huge-envelope":
            pad = b"<!--" + b"x" * (4 << 20) + b"-->"
            envelope = envelope.replace(b"?>", b"?>" + pad, 1)
        start = "root@xca-peer.test"
        content_type = (
            'multipart/related; type="application/xop+xml"; boundary="%s"; start="<%s>"; '
            'start-info="application/soap+xml; action=\\"%s\\""' % (BOUNDARY, start, REPLY[action]))
        if mode == "no-boundary":
            content_type = 'multipart/related; type="application/xop+xml"'
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        w = Chunked(self.wfile)
        w.write(("--%s\r\nContent-Type: application/xop+xml; charset=UTF-8; "
                 "type=\"application/soap+xml\"\r\nContent-Transfer-Encoding: binary\r\n"
                 "Content-ID: <%s>\r\n\r\n" % (BOUNDARY, start)).encode())
        w.write(envelope)
        for n, (cid, data, mime) in enumerate(parts):
            if mime == "application/pdf" and mode == "report-html":
                data = b"<html><body>502 Bad Gateway</body></html>\r\n"
            if n == 0 and mode == "unknown-part":
                cid = "stranger@xca-peer.test"
            if n == 0 and mode == "not-dicom":
                data = b"<html><body>502 Bad Gateway</body></html>\r\n"
            w.write(("\r\n--%s\r\nContent-Type: %s\r\n"
                     "Content-Transfer-Encoding: binary\r\nContent-ID: <%s>\r\n\r\n"
                     % (BOUNDARY, mime, cid)).encode())
            if n == 0 and mode == "endless":
                w.write(data)
                zeros = b"\0" * (1 << 20)
                try:
                    for _ in range(ENDLESS_CAP >> 20):
                        w.write(zeros)
                except OSError as e:  # the client hung up: what is wanted
                    log("endless part: the client hung up:", e)
                self.close_connection = True
                return
            if n == 0 and mode == "truncated":
                # Half the instance, then the connection ends: no last chunk, no boundary.
                w.write(data[: len(data) // 2])
                self.close_connection = True
                self.connection.shutdown(2)
                return
            w.write(data)
        w.write(("\r\n--%s--\r\n" % BOUNDARY).encode())
        w.finish()
        self.close_connection = True


# The most an `endless` part sends before giving up (the client should have hung up long before).
ENDLESS_CAP = 1 << 30


class Chunked:
    """HTTP/1.1 chunked transfer coding (RFC 9112 7.1) over a socket file."""

    def __init__(self, out):
        self.out = out

    def write(self, data):
        if data:
            self.out.write(b"%x\r\n" % len(data) + data + b"\r\n")
            self.out.flush()

    def finish(self):
        self.out.write(b"0\r\n\r\n")
        self.out.flush()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--client-ca", required=True)
    p.add_argument("--xua-cert", required=True, help="the trusted XUA issuer's certificate")
    p.add_argument("--study-dir", required=True)
    p.add_argument("--work-dir", required=True, help="where the KOS manifest is written")
    p.add_argument("--home", required=True, help="our homeCommunityId (urn:oid:...)")
    p.add_argument("--repository", required=True, help="our repositoryUniqueId")
    p.add_argument("--mode-file")
    p.add_argument("--report-pdf", help="a PDF published as the study's report")
    p.add_argument("--report-sr", help="a DICOM SR of the study published as its report")
    p.add_argument("--no-client-cert-check", action="store_true")
    p.add_argument("--accept-expired-assertions", action="store_true")
    p.add_argument("--accept-unsigned", action="store_true")
    p.add_argument("--weak-tls", action="store_true")
    args = p.parse_args()

    study = Study(args.study_dir, args.work_dir)
    if args.report_pdf:
        study.add_pdf_report(args.report_pdf)
    if args.report_sr:
        study.add_sr_report(args.report_sr)
    Handler.gateway = Gateway(args, study)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if args.weak_tls:
        # Misconfigured: old versions and every suite, CBC and static RSA included.
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")  # NULL suites too
    context.load_cert_chain(args.cert, args.key)
    context.load_verify_locations(args.client_ca)
    context.verify_mode = ssl.CERT_NONE if args.no_client_cert_check else ssl.CERT_REQUIRED
    server = Server(("127.0.0.1", args.port), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    log("serving study", study.study_uid, "of", len(study.instances), "instances; KOS",
        study.kos_uid)
    print("READY %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
