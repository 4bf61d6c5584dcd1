#!/usr/bin/python3
"""Hostile and unusual certificate chains, made by python-cryptography (not by the relay's
code), each with the verdict Go's crypto/x509 gives it. Writes the PEM files into the
directory given as the only argument and prints the case table as JSON on stdout:
[{"name", "roots", "chain", "purpose", "host", "go"}], "go" being "accept" or "refuse".

The verdicts are written down here from Go's rules (crypto/x509 Verify as node daemons,
karmor and the reference relay call it); the test suite also runs a Go program over the
same files and checks that Go agrees with this table.
"""
import datetime
import ipaddress
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

OUT = sys.argv[1]
NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
SERVER = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH
ANY = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE
UNKNOWN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.99999.1")

cases = []
serial = [1000]


def name(cn, org=None):
    attrs = ([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []) + [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    return x509.Name(attrs)


def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def make(subject, key, issuer=None, issuer_key=None, *, ca=False, path_len=None, basic=True, key_usage="default", eku=None,
         sans=None, extra=(), not_before=None, not_after=None, digest="sha256", aki=True, ski=True):
    """One certificate; issuer None = self-signed. extra: [(ExtensionType, critical)]."""
    issuer_name, signer = (issuer.subject, issuer_key) if issuer is not None else (subject, key)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(next_serial())
         .not_valid_before(not_before or NOW - HOUR).not_valid_after(not_after or NOW + 10 * DAY))
    if basic:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
    if key_usage == "default":
        key_usage = ["key_cert_sign", "crl_sign"] if ca else ["digital_signature"]
    if key_usage is not None:
        flags = {f: (f in key_usage) for f in ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                                                  "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"]}
        b = b.add_extension(x509.KeyUsage(**flags), critical=True)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if sans is not None:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if aki and issuer is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    for ext, critical in extra:
        b = b.add_extension(ext, critical=critical)
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else {"sha256": hashes.SHA256(), "sha1": hashes.SHA1(), "md5": hashes.MD5()}[digest]
    return b.sign(signer, algorithm)


def der_tlv(tag, content):
    n = len(content)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + content


def der_elements(data):
    """Splits DER content into its top-level TLVs."""
    out, i = [], 0
    while i < len(data):
        first = data[i + 1]
        if first < 0x80:
            start, n = i + 2, first
        else:
            k = first & 0x7F
            start, n = i + 2 + k, int.from_bytes(data[i + 2:i + 2 + k], "big")
        out.append(data[i:start + n])
        i = start + n
    return out


def with_raw_validity(cert, issuer_key, not_before, not_after):
    """Re-signs `cert` with its validity replaced by raw time encodings, e.g. a
    GeneralizedTime in year 0049 that no certificate builder will write."""
    tbs = der_elements(cert.tbs_certificate_bytes[2 if cert.tbs_certificate_bytes[1] < 0x80 else 2 + (cert.tbs_certificate_bytes[1] & 0x7F):])
    at = 1 if tbs[0][0] == 0xA0 else 0  # validity follows version, serial, signature, issuer
    tbs[at + 3] = der_tlv(0x30, not_before + not_after)
    new_tbs = der_tlv(0x30, b"".join(tbs))
    outer = der_elements(cert.public_bytes(serialization.Encoding.DER)[4:])
    signature = issuer_key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    der = der_tlv(0x30, new_tbs + outer[1] + der_tlv(0x03, b"\x00" + signature))
    return x509.load_der_x509_certificate(der)


def with_extension_der(cert, issuer_key, extension_der):
    """Re-signs `cert` with one more raw extension appended, e.g. a second EKU or a SAN no
    builder would write."""
    body = cert.tbs_certificate_bytes
    tbs = der_elements(body[2 if body[1] < 0x80 else 2 + (body[1] & 0x7F):])
    exts_seq = der_elements(tbs[-1][2 if tbs[-1][1] < 0x80 else 2 + (tbs[-1][1] & 0x7F):])[0]
    inner = exts_seq[2 if exts_seq[1] < 0x80 else 2 + (exts_seq[1] & 0x7F):]
    tbs[-1] = der_tlv(0xA3, der_tlv(0x30, inner + extension_der))
    new_tbs = der_tlv(0x30, b"".join(tbs))
    outer = der_elements(cert.public_bytes(serialization.Encoding.DER)[4:])
    signature = issuer_key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    return x509.load_der_x509_certificate(der_tlv(0x30, new_tbs + outer[1] + der_tlv(0x03, b"\x00" + signature)))


def extension(oid_der, value, critical=False):
    return der_tlv(0x30, der_tlv(0x06, oid_der) + (der_tlv(0x01, b"\xff") if critical else b"") + der_tlv(0x04, value))


EKU_OID = bytes([0x55, 0x1D, 0x25])
SAN_OID = bytes([0x55, 0x1D, 0x11])
CLIENT_AUTH_DER = der_tlv(0x06, bytes([0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02]))


def gentime(text):
    return der_tlv(0x18, text.encode())


def next_serial():
    serial[0] += 1
    return serial[0]


def pem(*certs):
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def case(label, roots, chain, go, purposes=("client", "server"), host="127.0.0.1"):
    """Records one case for each purpose; `go` is one verdict or {purpose: verdict}."""
    slug = "".join(ch if ch.isalnum() else "-" for ch in label)
    for f, certs in (("roots", roots), ("chain", chain)):
        with open(os.path.join(OUT, f"{slug}.{f}.pem"), "wb") as fh:
            fh.write(pem(*certs))
    for purpose in purposes:
        cases.append({
            "name": label,
            "roots": os.path.join(OUT, f"{slug}.roots.pem"),
            "chain": os.path.join(OUT, f"{slug}.chain.pem"),
            "purpose": purpose,
            "host": host if purpose == "server" else "",
            "go": go if isinstance(go, str) else go[purpose],
        })


LEAF_SANS = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("node.example")]


def leaf_of(issuer, issuer_key, **kw):
    kw.setdefault("eku", [SERVER, CLIENT])
    kw.setdefault("sans", LEAF_SANS)
    return make(name("peer"), ec_key(), issuer, issuer_key, **kw)


root_key = ec_key()
root = make(name("root-ca"), root_key, ca=True)

# --- the ordinary paths (accepted) ---
case("leaf signed by a trusted CA", [root], [leaf_of(root, root_key)], "accept")
inter_key = ec_key()
inter = make(name("intermediate-ca"), inter_key, root, root_key, ca=True)
inter_leaf = leaf_of(inter, inter_key)
case("leaf and its intermediate with only the root trusted", [root], [inter_leaf, inter], "accept")
case("leaf without the intermediate it needs", [root], [inter_leaf], "refuse")
case("leaf without EKU is good for any purpose", [root], [leaf_of(root, root_key, eku=None)], "accept")

# --- issuers that are not CAs ---
nonca_key = ec_key()
nonca = make(name("not-a-ca"), nonca_key, root, root_key, ca=False, eku=[SERVER, CLIENT])
case("intermediate with basicConstraints cA FALSE", [root], [leaf_of(nonca, nonca_key), nonca], "refuse")
nobc_key = ec_key()
nobc = make(name("no-basic-constraints"), nobc_key, root, root_key, basic=False, key_usage=["key_cert_sign"])
case("v3 intermediate without basicConstraints", [root], [leaf_of(nobc, nobc_key), nobc], "refuse")
noks_key = ec_key()
noks = make(name("ca-without-keycertsign"), noks_key, ca=True, key_usage=["digital_signature", "crl_sign"])
case("trusted CA whose key usage lacks keyCertSign", [noks], [leaf_of(noks, noks_key)], "refuse")
pinned_key = ec_key()
pinned = make(name("pinned-consumer"), pinned_key, ca=False, eku=[SERVER, CLIENT], sans=LEAF_SANS)
case("leaf placed in ca.crt used as an issuer", [pinned], [leaf_of(pinned, pinned_key)], "refuse")
op_name = name("kubearmor", "kubearmor")
op_leaf_key = ec_key()
op_leaf = make(op_name, op_leaf_key, ca=False, eku=[SERVER, CLIENT], sans=LEAF_SANS)
case("operator-named leaf in ca.crt used as an issuer", [op_leaf], [make(op_name, ec_key(), op_leaf, op_leaf_key, eku=[SERVER, CLIENT], sans=LEAF_SANS, aki=False, ski=False)], "refuse")
case("peer presenting exactly a certificate of ca.crt", [pinned], [pinned], "accept")

# --- operator and karmor shapes ---
op_ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
throwaway = rsa.generate_private_key(public_exponent=65537, key_size=2048)
op_ca = (x509.CertificateBuilder().subject_name(op_name).issuer_name(op_name).public_key(op_ca_key.public_key()).serial_number(1)
         .not_valid_before(NOW - HOUR).not_valid_after(NOW + 10 * DAY)
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
         .sign(throwaway, hashes.SHA256()))
op_node = make(op_name, rsa.generate_private_key(public_exponent=65537, key_size=2048), op_ca, op_ca_key, eku=[SERVER, CLIENT],
               sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], aki=False, ski=False)
case("operator CA with a self-signature that does not verify and a leaf named like it", [op_ca], [op_node], "accept")
impostor = make(op_name, ec_key(), op_ca, throwaway, eku=[SERVER, CLIENT], sans=LEAF_SANS, aki=False, ski=False)
case("leaf with the CA's name signed by another key", [op_ca], [impostor], "refuse")

# --- name constraints ---
def constrained(label, permitted=None, excluded=None, critical=True):
    key = ec_key()
    nc = x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded)
    return make(name(label), key, ca=True, extra=[(nc, critical)]), key


ten = x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))
loop = x509.IPAddress(ipaddress.ip_network("127.0.0.0/8"))
c, k = constrained("ca-for-10.0.0.0/8", permitted=[ten])
case("CA constrained to 10.0.0.0/8 signing 127.0.0.1", [c], [leaf_of(c, k)], "refuse")
c, k = constrained("ca-for-127.0.0.0/8", permitted=[loop])
case("CA constrained to 127.0.0.0/8 signing 127.0.0.1", [c], [leaf_of(c, k)], "accept")
c, k = constrained("ca-excluding-127.0.0.0/8", excluded=[loop])
case("CA excluding 127.0.0.0/8 signing 127.0.0.1", [c], [leaf_of(c, k)], "refuse")
c, k = constrained("ca-for-example.org", permitted=[x509.DNSName("example.org")])
case("CA constrained to example.org signing node.example", [c], [leaf_of(c, k)], "refuse")
c, k = constrained("ca-for-.example", permitted=[x509.DNSName(".example")])
case("CA constrained to .example signing node.example", [c], [leaf_of(c, k)], "accept")
c, k = constrained("ca-excluding-node.example", excluded=[x509.DNSName("node.example")])
case("CA excluding node.example signing node.example", [c], [leaf_of(c, k)], "refuse")
c, k = constrained("ca-for-dirname", permitted=[x509.DirectoryName(name("x"))], critical=True)
case("CA with a critical directoryName constraint Go does not handle", [c], [leaf_of(c, k)], "refuse")
c, k = constrained("ca-for-dirname-noncritical", permitted=[x509.DirectoryName(name("x"))], critical=False)
case("CA with a non-critical directoryName constraint", [c], [leaf_of(c, k)], "accept")
ncint_key = ec_key()
ncint = make(name("intermediate-for-10/8"), ncint_key, root, root_key, ca=True,
             extra=[(x509.NameConstraints(permitted_subtrees=[ten], excluded_subtrees=None), True)])
case("intermediate constrained to 10.0.0.0/8 signing 127.0.0.1", [root], [leaf_of(ncint, ncint_key), ncint], "refuse")

# --- critical extensions ---
unknown = x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00")
case("leaf with an unknown critical extension", [root], [leaf_of(root, root_key, extra=[(unknown, True)])], "refuse")
case("leaf with an unknown non-critical extension", [root], [leaf_of(root, root_key, extra=[(unknown, False)])], "accept")
crit_root_key = ec_key()
crit_root = make(name("root-with-critical-ext"), crit_root_key, ca=True, extra=[(unknown, True)])
case("trusted CA with an unknown critical extension", [crit_root], [leaf_of(crit_root, crit_root_key)], "refuse")
crit_int_key = ec_key()
crit_int = make(name("intermediate-with-critical-ext"), crit_int_key, root, root_key, ca=True, extra=[(unknown, True)])
case("intermediate with an unknown critical extension", [root], [leaf_of(crit_int, crit_int_key), crit_int], "refuse")

# --- signature algorithms ---
rsa_root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rsa_root = make(name("rsa-root"), rsa_root_key, ca=True)
case("leaf signed with SHA-1", [rsa_root], [leaf_of(rsa_root, rsa_root_key, digest="sha1")], "refuse")
case("leaf signed with MD5", [rsa_root], [leaf_of(rsa_root, rsa_root_key, digest="md5")], "refuse")
sha1_int_key = ec_key()
sha1_int = make(name("sha1-intermediate"), sha1_int_key, rsa_root, rsa_root_key, ca=True, digest="sha1")
case("intermediate signed with SHA-1", [rsa_root], [leaf_of(sha1_int, sha1_int_key), sha1_int], "refuse")
sha1_root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
sha1_root = make(name("sha1-self-signed-root"), sha1_root_key, ca=True, digest="sha1")
case("trusted CA whose own self-signature is SHA-1", [sha1_root], [leaf_of(sha1_root, sha1_root_key)], "accept")
ed_root_key = ed25519.Ed25519PrivateKey.generate()
ed_root = make(name("ed25519-root"), ed_root_key, ca=True)
case("Ed25519 CA signing a leaf", [ed_root], [leaf_of(ed_root, ed_root_key)], "accept")
rsa1024_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
rsa1024 = make(name("rsa-1024-root"), rsa1024_key, ca=True)
case("RSA 1024 CA signing a leaf", [rsa1024], [leaf_of(rsa1024, rsa1024_key)], "accept")

# --- time ---
def utc(y, mo=1, d=1):
    return datetime.datetime(y, mo, d, tzinfo=datetime.timezone.utc)


long_root_key = ec_key()
long_root = make(name("long-lived-root"), long_root_key, ca=True, not_before=utc(1950), not_after=utc(9999, 12, 31))
year_49 = with_raw_validity(leaf_of(long_root, long_root_key), long_root_key, gentime("00400101000000Z"), gentime("00491231235959Z"))
case("leaf whose GeneralizedTime notAfter is year 0049", [long_root], [year_49], "refuse")
case("leaf whose notAfter is year 2049 (UTCTime 49)", [long_root], [leaf_of(long_root, long_root_key, not_after=utc(2049, 12, 31))], "accept")
case("leaf whose notAfter is 1950 (UTCTime 50)", [long_root], [leaf_of(long_root, long_root_key, not_before=utc(1950), not_after=utc(1950, 6, 1))], "refuse")
case("leaf whose notAfter is year 2050 (GeneralizedTime)", [long_root], [leaf_of(long_root, long_root_key, not_after=utc(2050, 6, 1))], "accept")
case("leaf not valid before 2100", [long_root], [leaf_of(long_root, long_root_key, not_before=utc(2100), not_after=utc(2101))], "refuse")
expired_root_key = ec_key()
expired_root = make(name("renewed-ca"), expired_root_key, ca=True, not_before=NOW - 30 * DAY, not_after=NOW - DAY)
renewed_root = make(name("renewed-ca"), expired_root_key, ca=True)
renewed_leaf = leaf_of(renewed_root, expired_root_key)
case("CA renewed with the same key, expired one first in ca.crt", [expired_root, renewed_root], [renewed_leaf], "accept")
case("CA renewed with the same key, renewal first in ca.crt", [renewed_root, expired_root], [renewed_leaf], "accept")
case("only the expired CA in ca.crt", [expired_root], [renewed_leaf], "refuse")
twin_a_key, twin_b_key = ec_key(), ec_key()
twin_a = make(name("same-name-ca"), twin_a_key, ca=True, ski=False)
twin_b = make(name("same-name-ca"), twin_b_key, ca=True, ski=False)
case("two trusted CAs with the same name, leaf signed by the second", [twin_a, twin_b], [leaf_of(twin_b, twin_b_key, aki=False)], "accept")

# --- extended key usage nesting ---
def eku_root(label, eku):
    key = ec_key()
    return make(name(label), key, ca=True, eku=eku), key


c, k = eku_root("ca-eku-server-only", [SERVER])
case("CA whose EKU is serverAuth only", [c], [leaf_of(c, k)], {"client": "refuse", "server": "accept"})
c, k = eku_root("ca-eku-client-only", [CLIENT])
case("CA whose EKU is clientAuth only", [c], [leaf_of(c, k)], {"client": "accept", "server": "refuse"})
c, k = eku_root("ca-eku-any", [ANY])
case("CA whose EKU is anyExtendedKeyUsage", [c], [leaf_of(c, k)], "accept")
ekuint_key = ec_key()
ekuint = make(name("intermediate-eku-server-only"), ekuint_key, root, root_key, ca=True, eku=[SERVER])
case("intermediate whose EKU is serverAuth only", [root], [leaf_of(ekuint, ekuint_key), ekuint], {"client": "refuse", "server": "accept"})
case("leaf whose EKU is serverAuth only", [root], [leaf_of(root, root_key, eku=[SERVER])], {"client": "refuse", "server": "accept"})

# --- path length ---
pl0_key = ec_key()
pl0 = make(name("root-pathlen-0"), pl0_key, ca=True, path_len=0)
pl0_int_key = ec_key()
pl0_int = make(name("intermediate-under-pathlen-0"), pl0_int_key, pl0, pl0_key, ca=True)
case("root with pathlen 0 above an intermediate", [pl0], [leaf_of(pl0_int, pl0_int_key), pl0_int], "refuse")
case("root with pathlen 0 signing a leaf directly", [pl0], [leaf_of(pl0, pl0_key)], "accept")
pl1_key = ec_key()
pl1 = make(name("root-pathlen-1"), pl1_key, ca=True, path_len=1)
pl1_int_key = ec_key()
pl1_int = make(name("intermediate-under-pathlen-1"), pl1_int_key, pl1, pl1_key, ca=True, path_len=0)
case("root with pathlen 1 above an intermediate with pathlen 0", [pl1], [leaf_of(pl1_int, pl1_int_key), pl1_int], "accept")
pl1_int2_key = ec_key()
pl1_int2 = make(name("second-intermediate"), pl1_int2_key, pl1_int, pl1_int_key, ca=True)
case("intermediate with pathlen 0 above another intermediate", [pl1], [leaf_of(pl1_int2, pl1_int2_key), pl1_int2, pl1_int], "refuse")

# --- certificates Go cannot parse (refused at the handshake: crypto/tls fails on any) ---
dup_eku = with_extension_der(leaf_of(root, root_key, eku=[SERVER, CLIENT], sans=None), root_key, extension(EKU_OID, der_tlv(0x30, CLIENT_AUTH_DER)))
case("leaf with two extended key usage extensions", [root], [dup_eku], "refuse")
bad_eku = with_extension_der(leaf_of(root, root_key, eku=None, sans=None), root_key, extension(EKU_OID, der_tlv(0x30, der_tlv(0x04, b"x"))))
case("leaf whose extended key usage holds no OID", [root], [bad_eku], "refuse")
bad_ip = with_extension_der(leaf_of(root, root_key, sans=None), root_key, extension(SAN_OID, der_tlv(0x30, der_tlv(0x87, b"\x7f\x00\x00\x01\x00"))))
case("leaf with a 5-byte IP address SAN", [root], [bad_ip], "refuse")
dup_san_ok = with_extension_der(leaf_of(root, root_key, sans=None), root_key, extension(SAN_OID, der_tlv(0x30, der_tlv(0x87, b"\x7f\x00\x00\x01"))))
case("leaf whose SAN extension is written by hand", [root], [dup_san_ok], "accept")

# --- host names (server side only) ---
def named(*sans, **kw):
    return leaf_of(root, root_key, sans=list(sans), **kw)


case("partial wildcard n*.example for node.example", [root], [named(x509.DNSName("n*.example"))], "refuse", ("server",), "node.example")
case("wildcard *.example for node.example", [root], [named(x509.DNSName("*.example"))], "accept", ("server",), "node.example")
case("wildcard *.example for a.node.example", [root], [named(x509.DNSName("*.example"))], "refuse", ("server",), "a.node.example")
case("DNS name matched case-insensitively", [root], [named(x509.DNSName("Node.EXAMPLE"))], "accept", ("server",), "node.example")
case("certificate with the name only in its CN", [root], [make(name("node.example"), ec_key(), root, root_key, eku=[SERVER])], "refuse", ("server",), "node.example")
case("IP address dialed but only a DNS SAN", [root], [named(x509.DNSName("node.example"))], "refuse", ("server",), "127.0.0.1")
case("IPv6 loopback SAN for ::1", [root], [named(x509.IPAddress(ipaddress.ip_address("::1")))], "accept", ("server",), "::1")

json.dump(cases, sys.stdout, indent=1)
