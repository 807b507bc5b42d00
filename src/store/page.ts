import { AttestorError } from '../errors.js';
import type { Page, PageRequest } from './store.js';

/** The largest page a list returns: enough for any screen, small enough to bound one query. */
export const MAX_PAGE = 1000;

/** The limit of a page request, checked (ERR_INPUT outside 1..MAX_PAGE). */
export function pageLimit(page: PageRequest): number {
  if (!Number.isInteger(page.limit) || page.limit < 1 || page.limit > MAX_PAGE) {
    throw new AttestorError('ERR_INPUT', `a page holds 1 to ${MAX_PAGE} items, not ${String(page.limit)}`);
  }
  return page.limit;
}

/**
 * A page from the rows of a query that asked for `limit + 1` rows: the extra row only tells
 * that there is a next page, whose cursor is the key of the page's last item.
 */
export function toPage<T>(items: readonly T[], limit: number, cursorOf: (item: T) => string): Page<T> {
  if (items.length <= limit) return { items, next: null };
  const page = items.slice(0, limit);
  return { items: page, next: cursorOf(page[limit - 1]!) };
}
