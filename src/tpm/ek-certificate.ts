import { constants, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import '../reflect-metadata.js';
import * as x509 from '@peculiar/x509';
import { AttestorError, ParseError, PolicyError, VerificationError } from '../errors.js';
import { withoutTrailingNuls } from '../bytes.js';
import { hashByName, type HashInfo } from './constants.js';
import type { EkRootStore, TrustedCertificate } from './ek-roots.js';
import { publicKeyOf } from './public-key.js';
import type { TpmPublic } from './public.js';
import { TpmReader } from './reader.js';

/**
 * EK certificates, TCG EK Credential Profile for TPM Family 2.0 (§3.2 "EK Certificate"): parsing that tolerates
 * what real TPM vendors ship, and the check that a certificate chains to a configured vendor
 * root and certifies the EK the TPM reports.
 */

/** TCG OIDs (EK Credential Profile: Subject Alternative Name and Extended Key Usage fields; TCG OID registry). */
const TCG = {
  tpmManufacturer: '2.23.133.2.1',
  tpmModel: '2.23.133.2.2',
  tpmVersion: '2.23.133.2.3',
  ekCertificate: '2.23.133.8.1',
} as const;
const DEVICE_ATTRIBUTES = new Set<string>([TCG.tpmManufacturer, TCG.tpmModel, TCG.tpmVersion]);
const ANY_EXTENDED_KEY_USAGE = '2.5.29.37.0';
const SUBJECT_ALT_NAME = '2.5.29.17';

/**
 * Extensions whose meaning these checks honour or that carry no constraint (RFC 5280 §4.2: a
 * critical extension the verifier does not process makes the certificate unusable). Vendor CAs
 * mark certificatePolicies critical; EK certificates mark the SAN critical (empty subject).
 */
const UNDERSTOOD_EXTENSIONS = new Set([
  '2.5.29.9', // subjectDirectoryAttributes (the TPM specification level and revision)
  '2.5.29.14', // subjectKeyIdentifier
  '2.5.29.15', // keyUsage
  SUBJECT_ALT_NAME,
  '2.5.29.19', // basicConstraints
  '2.5.29.32', // certificatePolicies: any policy is accepted, none is required
  '2.5.29.35', // authorityKeyIdentifier
  '2.5.29.37', // extendedKeyUsage
]);

/** Larger than any EK or CA certificate seen in the field (3.7 KB); bounds the ASN.1 work. */
const MAX_CERTIFICATE_BYTES = 32 * 1024;
/** asn1js limits for untrusted input: certificates nest about 10 deep and hold a few hundred nodes. */
const BER_LIMITS = { berOptions: { maxDepth: 32, maxNodes: 4096 } };
/** Leaf, at most this many intermediates, anchor: vendor chains are 2 to 4 certificates long. */
const MAX_INTERMEDIATES = 6;
/**
 * Candidate issuers one search may examine. Real chains need a handful; without a bound, sent
 * intermediates that share a name and a key would make the search explore every ordering of them.
 */
const MAX_CANDIDATES = 64;
const MAX_EXTRA_INTERMEDIATES = 4;

interface SignatureScheme {
  readonly kind: 'pkcs1' | 'pss' | 'ecdsa';
  readonly hash: HashInfo['name'];
  readonly saltLength?: number;
}

/** An X.509 certificate parsed once, with what chain building needs from it. */
export interface ParsedCertificate {
  readonly certificate: x509.X509Certificate;
  /** Names the certificate in messages: its subject, or issuer and serial when the subject is empty (EK certificates). */
  readonly label: string;
  /** The DER of the certificate alone (NV padding and TCG NV header removed). */
  readonly der: Uint8Array;
  readonly publicKey: KeyObject;
  /** Normalized subject and issuer names, for name chaining (RFC 5280 §7.1 style matching). */
  readonly subjectKey: string;
  readonly issuerKey: string;
  /** basicConstraints says cA. */
  readonly isCa: boolean;
  /** keyUsage allows keyCertSign; undefined when the certificate has no keyUsage. */
  readonly keyCertSign?: boolean;
  /** Names a critical extension these checks do not process (RFC 5280 §4.2: then the certificate is unusable). */
  readonly unsupportedCritical?: string;
  /** Why this certificate cannot issue certificates; undefined when it can. */
  readonly caProblem?: string;
  /** basicConstraints pathLenConstraint. */
  readonly pathLength?: number;
  /** Validity (read here: asn1js turns an unreadable UTCTime into a date in 1899 instead of failing). */
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** The bytes the signature covers, as they were received (not re-encoded). */
  readonly tbs: Uint8Array;
  readonly signature: Uint8Array;
  /** Undefined when the signature algorithm is not one TPM vendors use (RSA PKCS#1 v1.5, PSS, ECDSA). */
  readonly signatureScheme?: SignatureScheme;
}

export interface EkCertificate extends ParsedCertificate {
  /** tcg-at-tpmManufacturer: the value as written ("id:53544D20") and the vendor id in ASCII ("STM "). */
  readonly manufacturer?: { readonly id: string; readonly ascii?: string };
  readonly model?: string;
  readonly version?: string;
  /** The Extended Key Usage names tcg-kp-EKCertificate (2.23.133.8.1). */
  readonly hasEkKeyPurpose: boolean;
  /** Why this certificate cannot be an EK certificate; undefined when it can. */
  readonly notEkReason?: string;
}

export interface EkVerifyOptions {
  /** Validity is checked at this instant (default: now). */
  now?: Date;
  /** The EK public area the TPM reported: the certificate must certify exactly this key. */
  ekPublic?: TpmPublic;
  /** Intermediates sent along with the EK certificate; never trusted by themselves. */
  extraIntermediates?: readonly (Uint8Array | string)[];
}

export interface EkVerification {
  /** Leaf first, trust anchor last. */
  readonly chain: readonly x509.X509Certificate[];
  /** Name of the root store entry the chain ends at. */
  readonly anchor: string;
  readonly info: EkCertificate;
}

/** Parses an EK certificate (DER, as read from NV, or PEM). */
export function parseEkCertificate(input: Uint8Array | string): EkCertificate {
  const [der, ...more] = certificatesIn(input, 'EK certificate');
  if (!der || more.length > 0) throw malformed('EK certificate', 'expected exactly one certificate');
  const parsed = parseCertificate(der, 'EK certificate');
  return guard('EK certificate', () => ekFacts(parsed));
}

/**
 * Checks that an EK certificate chains to a trust anchor of `store` (signatures, validity at
 * `now`, CA constraints, issuer/subject names) and, when `ekPublic` is given, that it certifies
 * that key. An EK certificate without the tcg-kp-EKCertificate key purpose is accepted (older
 * vendor certificates lack it; `info.hasEkKeyPurpose` reports it); a CA certificate or one
 * restricted to other key purposes is refused.
 */
export function verifyEkCertificate(
  input: EkCertificate | Uint8Array | string,
  store: EkRootStore,
  opts: EkVerifyOptions = {},
): EkVerification {
  const ek = input instanceof Uint8Array || typeof input === 'string' ? parseEkCertificate(input) : input;
  if (ek.notEkReason) throw new PolicyError('ERR_EK_CERT_NOT_EK', `${ek.label} is not an EK certificate: ${ek.notEkReason}`);
  const now = opts.now ?? new Date();
  const expired = validityProblem(ek, now);
  if (expired) throw new VerificationError('ERR_EK_CERT_EXPIRED', expired);
  const extras = (opts.extraIntermediates ?? []).flatMap((x) =>
    certificatesIn(x, 'intermediate certificate').map((der) => parseCertificate(der, 'intermediate certificate')),
  );
  // Real EK chains have one or two intermediates; more only feeds the path search.
  if (extras.length > MAX_EXTRA_INTERMEDIATES) {
    throw malformed('intermediate certificates', `${extras.length} sent, at most ${MAX_EXTRA_INTERMEDIATES}`);
  }
  const search: PathSearch = { store, extras, now, failures: [], examined: 0 };
  const path = findPath(search, ek, 0, new Set());
  if (!path) {
    if (search.expired) throw new VerificationError('ERR_EK_CERT_EXPIRED', search.expired);
    if (search.examined > MAX_CANDIDATES) search.failures.unshift(`gave up after examining ${MAX_CANDIDATES} candidate issuers`);
    const why =
      search.failures.length > 0
        ? search.failures.slice(0, 3).join('; ')
        : `no certificate in the EK root store or among the intermediates is named "${ek.certificate.issuer}"`;
    throw new VerificationError('ERR_EK_CERT_CHAIN', `${ek.label} does not chain to a trusted EK root: ${why}`);
  }
  if (opts.ekPublic && !ek.publicKey.equals(publicKeyOf(opts.ekPublic))) {
    throw new VerificationError('ERR_EK_CERT_KEY_MISMATCH', `${ek.label} certifies another key than the TPM's EK`);
  }
  const anchor = path[path.length - 1] as TrustedCertificate;
  return { chain: [ek.certificate, ...path.map((c) => c.certificate)], anchor: anchor.name, info: ek };
}

interface PathSearch {
  readonly store: EkRootStore;
  readonly extras: readonly ParsedCertificate[];
  readonly now: Date;
  /** Why candidate issuers were rejected, reported if no path is found. */
  readonly failures: string[];
  /** An issuer that verified but is outside its validity: reported in preference to the rest. */
  expired?: string;
  /** Candidate issuers examined so far (bounded by MAX_CANDIDATES). */
  examined: number;
}

/**
 * Depth-first search for issuers from `child` up to a trust anchor; `below` counts the CA
 * certificates between the leaf and `child` (for pathLenConstraint, RFC 5280 §4.2.1.9).
 * Store certificates carry their parents with signatures checked when the store was built.
 */
function findPath(
  s: PathSearch,
  child: ParsedCertificate,
  below: number,
  visited: Set<ParsedCertificate>,
): ParsedCertificate[] | undefined {
  const known = s.store.verifiedParents(child);
  const candidates: [ParsedCertificate, boolean][] = known
    ? known.map((c) => [c, true])
    : [...s.store.named(child.issuerKey), ...s.extras.filter((c) => c.subjectKey === child.issuerKey)].map((c) => [
        c,
        false,
      ]);
  for (const [issuer, signatureChecked] of candidates) {
    if (visited.has(issuer)) continue;
    if (s.examined++ >= MAX_CANDIDATES) return undefined;
    if (issuer.caProblem) {
      s.failures.push(`${issuer.label} cannot issue certificates: ${issuer.caProblem}`);
      continue;
    }
    if (!signatureChecked && !isSignedBy(child, issuer.publicKey)) {
      s.failures.push(`the signature of ${child.label} does not verify with the key of ${issuer.label}`);
      continue;
    }
    if (issuer.pathLength !== undefined && below > issuer.pathLength) {
      s.failures.push(`${issuer.label} allows ${issuer.pathLength} intermediates below it, the chain has ${below}`);
      continue;
    }
    const expired = validityProblem(issuer, s.now);
    if (expired) {
      s.expired ??= expired;
      continue;
    }
    if (s.store.isAnchor(issuer)) return [issuer];
    if (below >= MAX_INTERMEDIATES) {
      s.failures.push(`more than ${MAX_INTERMEDIATES} intermediates above ${child.label}`);
      continue;
    }
    visited.add(issuer);
    const rest = findPath(s, issuer, below + 1, visited);
    visited.delete(issuer);
    if (rest) return [issuer, ...rest];
  }
  return undefined;
}

function validityProblem(c: ParsedCertificate, now: Date): string | undefined {
  const { notBefore, notAfter } = c;
  if (now < notBefore) return `${c.label} is not valid before ${notBefore.toISOString()}`;
  if (now > notAfter) return `${c.label} expired at ${notAfter.toISOString()}`;
  return undefined;
}

/** Whether `key` verifies the signature of `c` over its tbsCertificate. */
export function isSignedBy(c: ParsedCertificate, key: KeyObject): boolean {
  const s = c.signatureScheme;
  if (!s) return false;
  const keyType = key.asymmetricKeyType;
  if (s.kind === 'ecdsa' ? keyType !== 'ec' : keyType !== 'rsa') return false;
  const padding = s.kind === 'pss' ? constants.RSA_PKCS1_PSS_PADDING : constants.RSA_PKCS1_PADDING;
  const options = s.kind === 'ecdsa' ? { key, dsaEncoding: 'der' as const } : { key, padding, saltLength: s.saltLength };
  try {
    return cryptoVerify(s.hash, c.tbs, options, c.signature);
  } catch {
    // A signature value of the wrong shape for the key (e.g. an ECDSA-Sig-Value that is not DER).
    return false;
  }
}

/**
 * The DER certificates in `input`: PEM text (one or more CERTIFICATE blocks) or binary DER.
 * Binary input may carry what TPMs put around it in NV: the TPM 1.2 era header (tag 0x1001,
 * a zero byte, UINT16 size; TCG PC Client Specific Implementation Specification for TPM 1.2,
 * "EK credential" NV storage) and padding after the certificate up to the NV index size.
 */
export function certificatesIn(input: Uint8Array | string, what: string): Uint8Array[] {
  if (input.length > MAX_CERTIFICATE_BYTES * 2) throw malformed(what, `${input.length} bytes is too large for a certificate`);
  const text = typeof input === 'string' ? input : looksLikePem(input) ? Buffer.from(input).toString('latin1') : undefined;
  if (text === undefined) return [guard(what, () => unwrapNvCertificate(input as Uint8Array))];
  const blocks = [...text.matchAll(/-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*)-----END CERTIFICATE-----/g)];
  const begins = text.split('-----BEGIN ').length - 1;
  if (blocks.length === 0 || blocks.length !== begins) throw malformed(what, 'not PEM CERTIFICATE blocks');
  return blocks.map((m) => guard(what, () => outerTlv(new TpmReader(Buffer.from(m[1] ?? '', 'base64'), what)).whole));
}

function looksLikePem(bytes: Uint8Array): boolean {
  const start = Buffer.from(bytes.subarray(0, 64)).toString('latin1').trimStart();
  return start.startsWith('-----BEGIN');
}

function unwrapNvCertificate(bytes: Uint8Array): Uint8Array {
  const r = new TpmReader(bytes, 'EK certificate NV data');
  if (bytes[0] === 0x10 && bytes[1] === 0x01 && bytes[2] === 0x00) {
    r.u16('tag');
    r.u8('fullCert');
    const inner = new TpmReader(r.bytesOf(r.u16('certSize'), 'cert'), 'EK certificate');
    return outerTlv(inner).whole;
  }
  // Trailing bytes are ignored: the certificate is self-delimiting and NV indexes are often larger.
  return outerTlv(r).whole;
}

function outerTlv(r: TpmReader): Tlv {
  const cert = readTlv(r, 'Certificate');
  if (cert.tag !== 0x30) throw malformed('certificate', 'does not start with a SEQUENCE');
  if (cert.whole.length > MAX_CERTIFICATE_BYTES) throw malformed('certificate', `${cert.whole.length} bytes is too large`);
  return cert;
}

/** Parses one DER certificate; every failure is ERR_EK_CERT_MALFORMED naming `what`. */
export function parseCertificate(der: Uint8Array, what: string): ParsedCertificate {
  return guard(what, () => {
    const { tbs, signature, notBefore, notAfter } = splitCertificate(der);
    const certificate = new x509.X509Certificate(der.slice(), BER_LIMITS);
    const { subject, issuer, serialNumber, extensions } = certificate;
    const types = extensions.map((e) => e.type);
    if (new Set(types).size !== types.length) throw malformed(what, 'repeats an extension (RFC 5280 §4.2)');
    const basic = certificate.getExtension(x509.BasicConstraintsExtension);
    const isCa = basic?.ca === true;
    const usage = certificate.getExtension(x509.KeyUsagesExtension);
    const keyCertSign = usage ? (usage.usages & x509.KeyUsageFlags.keyCertSign) !== 0 : undefined;
    const critical = extensions.find((e) => e.critical && !UNDERSTOOD_EXTENSIONS.has(e.type));
    const unsupportedCritical = critical && `critical extension ${critical.type} is not supported`;
    const caProblem =
      unsupportedCritical ??
      (!isCa ? 'basicConstraints does not say cA' : keyCertSign === false ? 'keyUsage lacks keyCertSign' : undefined);
    return {
      certificate,
      label: subject ? `"${subject}"` : `the certificate with serial ${serialNumber} from "${issuer}"`,
      der,
      publicKey: importSpki(new Uint8Array(certificate.publicKey.rawData)),
      subjectKey: nameKey(certificate.subjectName),
      issuerKey: nameKey(certificate.issuerName),
      isCa,
      keyCertSign,
      unsupportedCritical,
      caProblem,
      pathLength: isCa ? basic?.pathLength : undefined,
      notBefore,
      notAfter,
      tbs,
      signature,
      signatureScheme: signatureScheme(certificate.signatureAlgorithm as WebAlgorithm),
    };
  });
}

function ekFacts(c: ParsedCertificate): EkCertificate {
  const eku = c.certificate.getExtension(x509.ExtendedKeyUsageExtension)?.usages.map(String);
  const notEkReason = c.isCa
    ? 'it is a CA certificate (basicConstraints cA)'
    : c.keyCertSign
      ? 'its keyUsage allows keyCertSign'
      : eku && !eku.includes(TCG.ekCertificate) && !eku.includes(ANY_EXTENDED_KEY_USAGE)
        ? `its extended key usage (${eku.join(', ')}) does not include tcg-kp-EKCertificate`
        : c.unsupportedCritical;
  const attrs = tcgDeviceAttributes(c.certificate);
  const manufacturer = attrs.get(TCG.tpmManufacturer);
  return {
    ...c,
    manufacturer: manufacturer === undefined ? undefined : { id: manufacturer, ascii: vendorAscii(manufacturer) },
    model: attrs.get(TCG.tpmModel),
    version: attrs.get(TCG.tpmVersion),
    hasEkKeyPurpose: eku?.includes(TCG.ekCertificate) ?? false,
    notEkReason,
  };
}

/**
 * TPM manufacturer, model and version from the directoryName of the Subject Alternative Name
 * (EK Credential Profile, "Subject Alternative Name"). Vendors put them in one multi-valued RDN
 * or in separate RDNs.
 */
function tcgDeviceAttributes(cert: x509.X509Certificate): Map<string, string> {
  const out = new Map<string, string>();
  const san = cert.extensions.find((e) => e.type === SUBJECT_ALT_NAME);
  if (!san) return out;
  const r = new TpmReader(new Uint8Array(san.value), 'subjectAltName');
  const names = readTlv(r, 'GeneralNames');
  const items = new TpmReader(names.value, 'GeneralNames');
  while (items.remaining > 0) {
    const name = readTlv(items, 'GeneralName');
    // directoryName [4] EXPLICIT Name (RFC 5280 §4.2.1.6)
    if (name.tag !== 0xa4) continue;
    for (const rdn of new x509.Name(name.value.slice()).toJSON()) {
      for (const [type, values] of Object.entries(rdn)) {
        const value = values[0];
        if (value !== undefined && DEVICE_ATTRIBUTES.has(type) && !out.has(type)) out.set(type, value);
      }
    }
  }
  return out;
}

/** "id:53544D20" -> "STM ": the 4-byte TCG vendor id as ASCII when it is printable (NUL padding dropped). */
function vendorAscii(id: string): string | undefined {
  const m = /^id:([0-9a-f]{8})$/i.exec(id.trim());
  if (!m?.[1]) return undefined;
  const ascii = withoutTrailingNuls(Buffer.from(m[1], 'hex').toString('latin1'));
  return ascii.length > 0 && /^[\x20-\x7e]+$/.test(ascii) ? ascii : undefined;
}

/** Names compare equal when their RDNs hold the same attributes with equal values, ignoring case and spacing. */
function nameKey(name: x509.Name): string {
  const rdns = name.toJSON().map((rdn) =>
    Object.entries(rdn)
      .map(([type, values]) => `${type}=${values.map((v) => v.trim().replace(/\s+/g, ' ').toLowerCase()).join('+')}`)
      .sort(),
  );
  return JSON.stringify(rdns);
}

/** The WebCrypto-style algorithm @peculiar/x509 reports ({ name, hash: { name }, saltLength }). */
interface WebAlgorithm {
  readonly name?: unknown;
  readonly hash?: { readonly name?: unknown };
  readonly saltLength?: unknown;
}

const SCHEME_KINDS = new Map<unknown, SignatureScheme['kind']>([
  ['RSASSA-PKCS1-v1_5', 'pkcs1'],
  ['RSA-PSS', 'pss'],
  ['ECDSA', 'ecdsa'],
]);

function signatureScheme(alg: WebAlgorithm): SignatureScheme | undefined {
  const kind = SCHEME_KINDS.get(alg.name);
  const hashName = alg.hash?.name;
  if (!kind || typeof hashName !== 'string') return undefined;
  try {
    const saltLength = typeof alg.saltLength === 'number' ? alg.saltLength : undefined;
    return { kind, hash: hashByName(hashName.replace('-', '')).name, saltLength };
  } catch {
    return undefined;
  }
}

/** id-RSAES-OAEP (RFC 4055): the SPKI algorithm of TPM 1.2 era Infineon and STMicro EK certificates. */
const OID_RSAES_OAEP = Uint8Array.from([0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07]);
/** AlgorithmIdentifier { rsaEncryption, NULL }. */
const RSA_ENCRYPTION = Uint8Array.from([0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00]);

/** The node key of a SubjectPublicKeyInfo; an RSAES-OAEP one is the same RSA key, so it is relabelled. */
function importSpki(spki: Uint8Array): KeyObject {
  const r = new TpmReader(spki, 'SubjectPublicKeyInfo');
  const outer = new TpmReader(readTlv(r, 'SubjectPublicKeyInfo').value, 'SubjectPublicKeyInfo');
  const algorithm = new TpmReader(readTlv(outer, 'algorithm').value, 'AlgorithmIdentifier');
  const oid = readTlv(algorithm, 'algorithm');
  let der = spki;
  if (Buffer.compare(oid.whole, OID_RSAES_OAEP) === 0) {
    der = derSequence(Buffer.concat([RSA_ENCRYPTION, readTlv(outer, 'subjectPublicKey').whole]));
  }
  const key = createPublicKey({ key: Buffer.from(der), format: 'der', type: 'spki' });
  // Chain building verifies a signature per candidate issuer; a huge modulus or exponent
  // would make each of those cost milliseconds. No TPM vendor uses either.
  const { modulusLength, publicExponent } = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'rsa' && ((modulusLength ?? 0) > MAX_RSA_BITS || (publicExponent ?? 0n) > MAX_RSA_EXPONENT)) {
    throw new RangeError(`RSA key of ${modulusLength} bits with exponent ${publicExponent} is outside what EK PKIs use`);
  }
  return key;
}

const MAX_RSA_BITS = 8192;
/** 65537 is what TPM vendors' EK and CA keys use; larger exponents only slow verification. */
const MAX_RSA_EXPONENT = 65537n;

function derSequence(content: Uint8Array): Uint8Array {
  const n = content.length;
  const length = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Buffer.concat([Uint8Array.from([0x30, ...length]), content]);
}

/**
 * Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }
 * (RFC 5280 §4.1). Returns the tbsCertificate bytes as received, so certificates that are BER
 * rather than strict DER still verify, and checks the outer algorithm equals the signed one.
 */
function splitCertificate(der: Uint8Array): { tbs: Uint8Array; signature: Uint8Array; notBefore: Date; notAfter: Date } {
  const r = new TpmReader(outerTlv(new TpmReader(der, 'Certificate')).value, 'Certificate');
  const tbs = readTlv(r, 'tbsCertificate');
  const algorithm = readTlv(r, 'signatureAlgorithm');
  const signature = readTlv(r, 'signatureValue');
  r.end();
  const t = new TpmReader(tbs.value, 'tbsCertificate');
  let serial = readTlv(t, 'version');
  if (serial.tag === 0xa0) serial = readTlv(t, 'serialNumber');
  const signed = readTlv(t, 'signature');
  if (tbs.tag !== 0x30 || serial.tag !== 0x02 || signature.tag !== 0x03 || signature.value[0] !== 0) {
    throw malformed('certificate', 'is not an X.509 Certificate');
  }
  if (Buffer.compare(signed.whole, algorithm.whole) !== 0) {
    throw malformed('certificate', 'signatureAlgorithm differs from the algorithm inside tbsCertificate');
  }
  readTlv(t, 'issuer');
  const validity = new TpmReader(readTlv(t, 'validity').value, 'validity');
  const notBefore = readTime(readTlv(validity, 'notBefore'));
  const notAfter = readTime(readTlv(validity, 'notAfter'));
  validity.end();
  return { tbs: tbs.whole, signature: signature.value.subarray(1), notBefore, notAfter };
}

/**
 * Time ::= UTCTime "YYMMDDhhmm[ss]Z" (years 50..99 are 19xx, RFC 5280 §4.1.2.5.1) or
 * GeneralizedTime "YYYYMMDDhhmmss[.f]Z" (§4.1.2.5.2); anything else is malformed.
 */
function readTime(t: Tlv): Date {
  const text = Buffer.from(t.value).toString('latin1');
  const m =
    t.tag === 0x17
      ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?Z$/.exec(text)
      : t.tag === 0x18
        ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.\d+)?Z$/.exec(text)
        : null;
  if (!m) throw malformed('certificate', 'has a validity time that is neither UTCTime nor GeneralizedTime');
  const [year, month, day, hour, minute, second] = m.slice(1).map((x) => Number(x ?? 0)) as [number, number, number, number, number, number];
  const fullYear = t.tag === 0x17 ? year + (year >= 50 ? 1900 : 2000) : year;
  const date = new Date(Date.UTC(fullYear, month - 1, day, hour, minute, second));
  // Date.UTC rolls over (month 13, 31 February): a date that does not read back as written is invalid.
  if (date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day || hour > 23 || minute > 59 || second > 59) {
    throw malformed('certificate', `has an invalid validity time "${text}"`);
  }
  return date;
}

interface Tlv {
  readonly tag: number;
  readonly value: Uint8Array;
  /** Tag, length and value. */
  readonly whole: Uint8Array;
}

/** One DER TLV (X.690 §8.1) with a single-byte tag and a definite length of at most 4 bytes. */
function readTlv(r: TpmReader, field: string): Tlv {
  const start = r.position;
  const tag = r.u8(`${field}.tag`);
  if ((tag & 0x1f) === 0x1f) throw malformed('certificate', `${field} uses a multi-byte tag`);
  const first = r.u8(`${field}.length`);
  let length = first;
  if (first >= 0x80) {
    const count = first & 0x7f;
    if (count === 0 || count > 4) throw malformed('certificate', `${field} has an indefinite or oversized length`);
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + r.u8(`${field}.length`);
  }
  const value = r.bytesOf(length, field);
  return { tag, value, whole: r.slice(start) };
}

function malformed(what: string, why: string): ParseError {
  return new ParseError('ERR_EK_CERT_MALFORMED', `${what}: ${why}`);
}

/** Runs a parse step; anything it throws that is not already an EK certificate error becomes ERR_EK_CERT_MALFORMED. */
function guard<T>(what: string, step: () => T): T {
  try {
    return step();
  } catch (e) {
    if (e instanceof AttestorError && e.code === 'ERR_EK_CERT_MALFORMED') throw e;
    const detail = e instanceof Error ? e.message.slice(0, 200) : String(e);
    throw new ParseError('ERR_EK_CERT_MALFORMED', `${what}: not a well-formed X.509 certificate (${detail})`, { cause: e });
  }
}
