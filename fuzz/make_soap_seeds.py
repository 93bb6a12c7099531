#!/usr/bin/env python3
"""Write the hand-made seed inputs of fuzz/corpus/soap_envelope (run from fuzz/): the first
line of each is the Content-Type, the rest the body, as `fuzz/checks/soap_envelope.rs` reads
them. Files named seed-* are made here; anything else in the corpus came from the fuzzer."""
import os

SOAP = b"application/soap+xml; charset=utf-8"
ENV = b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing">'
WSSE = b"http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"


def envelope(header, body):
    return ENV + b"<s:Header>" + header + b"</s:Header><s:Body>" + body + b"</s:Body></s:Envelope>"


def addressing(action=b"urn:ihe:rad:2009:RetrieveImagingDocumentSet"):
    return (b'<a:Action s:mustUnderstand="1">' + action + b"</a:Action><a:MessageID>urn:uuid:1</a:MessageID>"
            b"<a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></a:ReplyTo>"
            b"<a:To>https://gateway/xds/repository</a:To>")


def doc(uid, home=b""):
    h = b"<b:HomeCommunityId>" + home + b"</b:HomeCommunityId>" if home else b""
    return (b"<b:DocumentRequest>" + h + b"<b:RepositoryUniqueId>1.2.3.4.5.14.1</b:RepositoryUniqueId>"
            b"<b:DocumentUniqueId>" + uid + b"</b:DocumentUniqueId></b:DocumentRequest>")


RAD69 = (b'<i:RetrieveImagingDocumentSetRequest xmlns:i="urn:ihe:rad:xdsi-b:2009" xmlns:b="urn:ihe:iti:xds-b:2007">'
         b'<i:StudyRequest studyInstanceUID="1.2.3"><i:SeriesRequest seriesInstanceUID="1.2.3.4">'
         + doc(b"1.2.3.4.5") + doc(b"1.2.3.4.6", b"urn:oid:1.2.3.4.5.14") +
         b"</i:SeriesRequest></i:StudyRequest><i:TransferSyntaxUIDList>"
         b"<i:TransferSyntaxUID>1.2.840.10008.1.2.1</i:TransferSyntaxUID></i:TransferSyntaxUIDList>"
         b"</i:RetrieveImagingDocumentSetRequest>")
ITI43 = (b'<b:RetrieveDocumentSetRequest xmlns:b="urn:ihe:iti:xds-b:2007">' + doc(b"1.2.3.4.5")
         + b"</b:RetrieveDocumentSetRequest>")
ASSERTION = (b'<saml2:Assertion xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a1" Version="2.0" '
             b'IssueInstant="2026-12-05T09:00:00Z"><saml2:Issuer>https://xua.test</saml2:Issuer>'
             b'<saml2:Conditions NotBefore="2026-12-05T09:00:00Z" NotOnOrAfter="2026-12-05T09:05:00Z"/>'
             b"</saml2:Assertion>")


def mtom(envelope_bytes, boundary=b"MIMEBoundary", declared=None, attachment=True, attachment_id=True):
    declared = declared or boundary
    parts = (b"--" + boundary + b'\r\nContent-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"\r\n'
             b"Content-Transfer-Encoding: binary\r\nContent-ID: <root.message@test>\r\n\r\n" + envelope_bytes + b"\r\n")
    if attachment:
        parts += b"--" + boundary + b"\r\nContent-Type: application/octet-stream\r\n"
        if attachment_id:
            parts += b"Content-ID: <part1@test>\r\n"
        parts += b"\r\n\x00\x01DATA\r\n"
    parts += b"--" + boundary + b"--\r\n"
    ct = (b'multipart/related; type="application/xop+xml"; boundary=' + declared
          + b'; start="<root.message@test>"; start-info="application/soap+xml"')
    return ct + b"\n" + parts


with_include = envelope(addressing(b"urn:ihe:iti:2007:RetrieveDocumentSet"),
                        b'<x><i:Include xmlns:i="http://www.w3.org/2004/08/xop/include" href="cid:part1%40test"/></x>')
seeds = {
    "seed-rad69": SOAP + b"\n" + envelope(addressing(), RAD69),
    "seed-iti43": SOAP + b"\n" + envelope(addressing(b"urn:ihe:iti:2007:RetrieveDocumentSet"), ITI43),
    "seed-assertion": SOAP + b"\n" + envelope(addressing() + b'<w:Security xmlns:w="' + WSSE + b'">' + ASSERTION
                                              + b"</w:Security>", RAD69),
    "seed-two-securities": SOAP + b"\n" + envelope(addressing() + (b'<w:Security xmlns:w="' + WSSE + b'"/>') * 2, RAD69),
    "seed-no-action": SOAP + b"\n" + envelope(b"<a:MessageID>m</a:MessageID>", RAD69),
    "seed-soap11": b"text/xml\n" + b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>',
    "seed-doctype": SOAP + b'\n<!DOCTYPE s [<!ENTITY a "aaaa">]>' + envelope(addressing(), b"<x>&a;</x>"),
    "seed-mtom": mtom(envelope(addressing(), RAD69)),
    "seed-mtom-include": mtom(with_include),
    "seed-mtom-wrong-boundary": mtom(envelope(addressing(), RAD69), declared=b"Other"),
    "seed-mtom-no-content-id": mtom(with_include, attachment_id=False),
    "seed-must-understand": SOAP + b"\n" + envelope(addressing() + b'<q:X xmlns:q="urn:q" s:mustUnderstand="true"/>', RAD69),
}
os.makedirs("corpus/soap_envelope", exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join("corpus/soap_envelope", name), "wb") as f:
        f.write(data)
