import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The verifier's Prometheus metrics, in a registry of the app's own (no process-wide default registry). */
export interface Metrics {
  readonly registry: Registry;
  readonly httpDuration: Histogram<'method' | 'route' | 'status'>;
  readonly enrollments: Counter<'result'>;
  readonly attestations: Counter<'result'>;
  readonly credentials: Counter<'kind'>;
  readonly staleAgents: Counter;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'attestor_' });
  return {
    registry,
    httpDuration: new Histogram({
      name: 'attestor_http_request_duration_seconds',
      help: 'HTTP requests by route and status',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    enrollments: new Counter({
      name: 'attestor_enrollments_total',
      help: 'Enrollment steps by result (enrolled, activated, refused)',
      labelNames: ['result'],
      registers: [registry],
    }),
    attestations: new Counter({
      name: 'attestor_attestations_total',
      help: 'Attestations by result (affirming, warning, contraindicated, rejected)',
      labelNames: ['result'],
      registers: [registry],
    }),
    credentials: new Counter({
      name: 'attestor_credentials_issued_total',
      help: 'Credentials issued by kind',
      labelNames: ['kind'],
      registers: [registry],
    }),
    staleAgents: new Counter({
      name: 'attestor_agents_stale_total',
      help: 'Agents the freshness watchdog marked stale',
      registers: [registry],
    }),
  };
}

/** A gauge in `registry` whose value is read when the metrics are scraped. */
export function watchedGauge(registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}
