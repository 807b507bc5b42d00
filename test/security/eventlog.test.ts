/**
 * Measured-boot logs edited to hide what was measured, against the real verifier and a real
 * swtpm host whose PCR 8 holds what grub measures for a multiboot2 (Xen) boot: decisions rest
 * on digests, never on the unsigned event type nor on grub's "<tag>: " prefix, which grub
 * leaves out of the digest. Xen's command line is under kernel_cmdline, dom0's kernel and
 * initrd under module_cmdline: each is a command line the rules must allow.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildAttestationRequest } from '../../src/agent/evidence.js';
import { EV } from '../../src/eventlog/event-types.js';
import { TPM_ALG } from '../../src/tpm/constants.js';
import { AttestationResponse, BaselineBody } from '../../src/wire/schemas.js';
import { challenge, enrollOverApi, refused, startAttackBed, withSession, type AttackBed } from '../attack-harness.js';
import { agileLog, imageEvent, type EventSpec } from '../eventlog-fixtures.js';
import { tpm2 } from '../helpers/swtpm.js';
import { expectNothingRecorded, expectRefusedVerdictOnly, recordOf } from './harness.js';

const XEN = '/boot/xen.gz console=vga dom0_mem=2G';
const DOM0 = '/boot/vmlinuz root=/dev/sda1 ro init=/bin/sh';
const INITRD = '/boot/initrd.img';

/** What grub measures: the text after "<tag>: " is hashed, the event data carries the tag and a NUL. */
function grubEvent(tag: string, text: string, type: number = EV.IPL): EventSpec {
  const measured = Buffer.from(text);
  return {
    pcr: 8,
    type,
    data: Buffer.from(`${tag}: ${text}\0`),
    digests: [
      [TPM_ALG.SHA1, createHash('sha1').update(measured).digest()],
      [TPM_ALG.SHA256, createHash('sha256').update(measured).digest()],
    ],
  };
}

/** grub's PCR 8 events of a Xen boot: each loader command, then the command line it hands over. */
const XEN_BOOT: readonly EventSpec[] = [
  grubEvent('grub_cmd', `multiboot2 ${XEN}`),
  grubEvent('kernel_cmdline', XEN),
  grubEvent('grub_cmd', `module2 ${DOM0}`),
  grubEvent('module_cmdline', DOM0),
  grubEvent('grub_cmd', `module2 ${INITRD}`),
  grubEvent('module_cmdline', INITRD),
];

/** The boot loader's image in PCR 4: command-line rules need the boot components ruled. */
const LOADER = imageEvent('the boot loader image of this test');

let bed: AttackBed;
let agentId: string;
let tmp: string;

beforeAll(async () => {
  bed = await startAttackBed({ store: 'sqlite', config: { attestation: { quarantineOnFailure: false } } });
  tmp = mkdtempSync(join(tmpdir(), 'attestor-security-eventlog-'));
  agentId = await enrollOverApi(bed, { role: 'xen' });
  for (const e of [...XEN_BOOT, LOADER]) {
    const [sha1, sha256] = e.digests!.map(([, d]) => Buffer.from(d).toString('hex'));
    await tpm2(bed.host, ['tpm2_pcrextend', `${e.pcr}:sha1=${sha1},sha256=${sha256}`]);
  }
}, 120_000);

afterAll(async () => {
  await bed?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** Enforces event-log rules allowing `cmdlines` for the duration of `work`. */
async function withRules<T>(cmdlines: string[], work: () => Promise<T>): Promise<T> {
  const b = await bed.admin.call('POST', '/v1/baselines', BaselineBody, { name: 'xen', document: {
      version: 1,
      eventlog: { bootComponents: { match: 'any', allowed: [`sha256:${Buffer.from(LOADER.digests![1]![1]).toString('hex')}`] }, kernelCmdlines: cmdlines },
    },
  });
  await bed.admin.call('POST', `/v1/baselines/${b.id}/enforce`, BaselineBody, {});
  try {
    return await work();
  } finally {
    await bed.admin.call('POST', `/v1/baselines/${b.id}/retire`, BaselineBody, {});
  }
}

/** The host's answer to a fresh challenge with `events` as its event log. */
async function attestWith(events: readonly EventSpec[]) {
  const path = join(tmp, 'eventlog.bin');
  // The loader's PCR 4 event last: XEN_BOOT[i] stays event i + 1.
  writeFileSync(path, agileLog([...events, LOADER]));
  const c = await challenge(bed, agentId);
  const body = await withSession(bed, (session) => buildAttestationRequest({ session, key: { kind: 'tpm' }, challenge: c, logs: { eventLog: { path, ifPresent: false } } }));
  return bed.anon.call('POST', `/v1/agents/${agentId}/attestations`, AttestationResponse, body);
}

/** The reasons of a refused verdict as [code, event]. */
async function refusedWith(events: readonly EventSpec[]): Promise<Array<[string, number | undefined]>> {
  const before = await recordOf(bed.v, agentId);
  const e = await refused(attestWith(events), 'ERR_ATTESTATION_REFUSED');
  await expectRefusedVerdictOnly(bed.v, before, agentId);
  return ((e.problem.verdict as { reasons: Array<{ code: string; event?: number }> }).reasons ?? []).map((r) => [r.code, r.event]);
}

const notAllowed = (...events: number[]) => events.map((event) => ['KERNEL_CMDLINE_NOT_ALLOWED', event]);

describe('command-line rules without the boot components', () => {
  it('refused: ERR_BASELINE_INVALID, no baseline stored (which loader wrote PCR 8 is only in PCR 4)', async () => {
    const before = await recordOf(bed.v);
    const listed = await bed.v.verifier.store.baselines.list({ limit: 100 });
    const e = await refused(
      bed.admin.call('POST', '/v1/baselines', BaselineBody, { name: 'cmdline-only', document: { version: 1, eventlog: { kernelCmdlines: [XEN] } } }),
      'ERR_BASELINE_INVALID',
    );
    expect(e.status).toBe(400);
    expect(e.problem.detail).toContain('bootComponents');
    expect(await bed.v.verifier.store.baselines.list({ limit: 100 })).toEqual(listed);
    await expectNothingRecorded(bed.v, before);
  });
});

describe('grub command lines of a multiboot2 (Xen) boot', () => {
  it('every command line allowed: affirming (the rules see all three)', async () => {
    await withRules([XEN, DOM0, INITRD], async () => {
      expect((await attestWith(XEN_BOOT)).verdict.status).toBe('affirming');
    });
  });

  it("dom0's command line under module_cmdline is judged: KERNEL_CMDLINE_NOT_ALLOWED naming its events, nothing issued", async () => {
    // Event 0 is the log's Spec ID event: XEN_BOOT[i] is event i + 1.
    await withRules([XEN, INITRD], async () => {
      expect(await refusedWith(XEN_BOOT)).toEqual(notAllowed(3, 4));
    });
  });

  it('the tags rewritten (the digest does not cover them) or the event types changed: still judged', async () => {
    await withRules([XEN, INITRD], async () => {
      const retag = (i: number, tag: string) => {
        const e = XEN_BOOT[i]!;
        const text = Buffer.from(e.data).toString().replace(/^[a-z_]+: /, '').replace(/\0$/, '');
        return { ...grubEvent(tag, text, e.type), digests: e.digests! };
      };
      // dom0's command line retagged as a grub command (it starts with its path: judged); its loader command retagged as a module's command line.
      const retagged = XEN_BOOT.map((e, i) => (i === 3 ? retag(3, 'grub_cmd') : i === 2 ? retag(2, 'module_cmdline') : e));
      expect(await refusedWith(retagged)).toEqual(notAllowed(3, 4));
      // Event types are not under the digest either: an EV_IPL relabelled as an EFI action or an event tag.
      const retyped = XEN_BOOT.map((e, i) => (i === 2 ? { ...e, type: EV.EFI_ACTION } : i === 3 ? { ...e, type: EV.EVENT_TAG } : e));
      expect(await refusedWith(retyped)).toEqual(notAllowed(3, 4));
    });
  });

  it('an event made a no-action event (left out of the replay): EVENTLOG_PCR_MISMATCH, nothing issued', async () => {
    await withRules([XEN, DOM0, INITRD], async () => {
      const hidden = XEN_BOOT.map((e, i) => (i === 3 ? { ...e, type: EV.NO_ACTION } : e));
      expect((await refusedWith(hidden)).map(([code]) => code)).toContain('EVENTLOG_PCR_MISMATCH');
    });
  });
});
