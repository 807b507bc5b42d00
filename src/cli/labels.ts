import { InvalidArgumentError } from 'commander';
import { LABELS } from '../wire/schemas.js';
import { checkedBy } from './server-options.js';

/** commander's collector of repeated `--label name=value` options, checked as the wire takes labels. */
export function collectLabel(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError('must be NAME=VALUE');
  const name = value.slice(0, eq);
  if (Object.hasOwn(previous, name)) throw new InvalidArgumentError(`label "${name}" is given twice`);
  return checkedBy(LABELS)({ ...previous, [name]: value.slice(eq + 1) });
}
