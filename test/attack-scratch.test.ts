import { it } from 'vitest';
import { BaselineCreateRequest } from '../src/wire/schemas.js';
import { parseBaselineDocument } from '../src/baseline/document.js';
it('proto', () => {
  const body = JSON.parse('{"name":"x","document":{"__proto__":{"version":1,"pcrs":{"sha256":{"0":["' + '00'.repeat(32) + '"]}}}}}');
  const r = BaselineCreateRequest.safeParse(body);
  console.log('zod ok', r.success, r.success && Object.getPrototypeOf(r.data.document) === Object.prototype, r.success && JSON.stringify(r.data.document));
  try { parseBaselineDocument(r.success && r.data.document); console.log('doc parse OK'); } catch (e) { console.log('doc refused', (e as Error).message); }
});
