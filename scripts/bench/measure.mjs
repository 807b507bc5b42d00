// Measurements for `npm run bench`: rates of a baseline and a candidate taken in one run.

/**
 * Calls per second of CPU time spent by this process: time the process is not scheduled
 * (other work on a shared machine) does not count against it.
 */
export function rate(fn, ms) {
  let n = 0;
  const cpu = () => {
    const { user, system } = process.cpuUsage();
    return user + system;
  };
  const start = cpu();
  const end = start + ms * 1000;
  let now = start;
  while (now < end) {
    for (let i = 0; i < 16; i++) fn();
    n += 16;
    now = cpu();
  }
  return (n * 1e6) / (now - start);
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/**
 * Alternates baseline and candidate in short rounds, so that load on the machine affects both
 * alike; returns both median rates and the median of the per-round ratios.
 */
export function compare(baseline, candidate, { rounds = 15, ms = 120, warmUpMs = 300 } = {}) {
  // Long enough for V8 to finish optimizing both before the first round counts.
  rate(baseline, warmUpMs);
  rate(candidate, warmUpMs);
  const b = [];
  const c = [];
  const ratios = [];
  for (let i = 0; i < rounds; i++) {
    const rb = rate(baseline, ms);
    const rc = rate(candidate, ms);
    b.push(rb);
    c.push(rc);
    ratios.push(rc / rb);
  }
  return { baseline: median(b), candidate: median(c), ratio: median(ratios) };
}

/** Wall time of one call, median of `runs`, in milliseconds. */
export function timeOnce(fn, runs = 50) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t = process.hrtime.bigint();
    fn();
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return median(times);
}

export const fmt = (x, digits = 0) => x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
