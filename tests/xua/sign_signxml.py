#!/usr/bin/env python3
"""Sign a SAML 2.0 assertion with signxml (enveloped, exclusive C14N, SHA-256).

usage: sign_signxml.py UNSIGNED.xml KEY.pem CERT.pem {rsa-sha256|ecdsa-sha256} > SIGNED.xml

The assertion may hold a <ds:Signature Id="placeholder"/> where the signature belongs
(after saml2:Issuer, as the SAML schema orders it); signxml replaces it.
"""
import sys

from lxml import etree
from signxml import XMLSigner, methods


def main():
    unsigned, key_file, cert_file, algorithm = sys.argv[1:5]
    root = etree.parse(unsigned).getroot()
    with open(key_file, "rb") as f:
        key = f.read()
    with open(cert_file, "rb") as f:
        cert = f.read()
    signer = XMLSigner(
        method=methods.enveloped,
        signature_algorithm=algorithm,
        digest_algorithm="sha256",
        c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#",
    )
    signed = signer.sign(root, key=key, cert=cert, reference_uri="#" + root.get("ID"),
                         id_attribute="ID")
    sys.stdout.buffer.write(etree.tostring(signed))


if __name__ == "__main__":
    main()
