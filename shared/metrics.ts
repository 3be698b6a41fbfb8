/**
 * Prometheus text-format metrics: counters, gauges and histograms with labels.
 *
 * Small on purpose: a worker owns one {@linkcode Registry}, registers its series at start-up, and the ops
 * server renders it on `/metrics`. Label values are escaped as the exposition format requires.
 */

type Labels = Record<string, string | number>;

function labelKey(labels: Labels | undefined): string {
  if (!labels) return "";
  const keys = Object.keys(labels).sort();
  if (!keys.length) return "";
  const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
  return "{" + keys.map((k) => `${k}="${esc(String(labels[k]))}"`).join(",") + "}";
}

function fmt(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}

interface Metric {
  readonly name: string;
  render(): string;
}

/** A value that only goes up (events processed, bytes written). */
export class Counter implements Metric {
  readonly #values = new Map<string, number>();
  constructor(readonly name: string, readonly help: string) {}
  /** Adds `n` (default 1); negative amounts are refused because counters never go down. */
  inc(labels?: Labels, n = 1): void {
    if (n < 0) throw new RangeError(`Cannot decrease counter ${this.name}: amount is ${n}`);
    const k = labelKey(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + n);
  }
  get(labels?: Labels): number {
    return this.#values.get(labelKey(labels)) ?? 0;
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const [k, v] of this.#values) lines.push(`${this.name}${k} ${fmt(v)}`);
    return lines.join("\n");
  }
}

/** A value that goes up and down (lag, queue depth, state). */
export class Gauge implements Metric {
  readonly #values = new Map<string, number>();
  constructor(readonly name: string, readonly help: string) {}
  set(value: number, labels?: Labels): void {
    this.#values.set(labelKey(labels), value);
  }
  inc(labels?: Labels, n = 1): void {
    const k = labelKey(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + n);
  }
  get(labels?: Labels): number | undefined {
    return this.#values.get(labelKey(labels));
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`];
    for (const [k, v] of this.#values) lines.push(`${this.name}${k} ${fmt(v)}`);
    return lines.join("\n");
  }
}

/** Default buckets in seconds, from 1 ms to 10 s. */
export const DEFAULT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** A distribution of observations (durations, sizes) in cumulative buckets. */
export class Histogram implements Metric {
  readonly #series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();
  readonly buckets: number[];
  constructor(readonly name: string, readonly help: string, buckets: number[] = DEFAULT_BUCKETS) {
    this.buckets = [...buckets].sort((a, b) => a - b);
  }
  observe(value: number, labels: Labels = {}): void {
    const k = labelKey(labels);
    let s = this.#series.get(k);
    if (!s) {
      s = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.#series.set(k, s);
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]) s.counts[i]++;
    s.sum += value;
    s.count++;
  }
  /** Observations recorded for `labels` so far. */
  count(labels: Labels = {}): number {
    return this.#series.get(labelKey(labels))?.count ?? 0;
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const s of this.#series.values()) {
      this.buckets.forEach((b, i) => {
        lines.push(`${this.name}_bucket${labelKey({ ...s.labels, le: fmt(b) })} ${s.counts[i]}`);
      });
      lines.push(`${this.name}_bucket${labelKey({ ...s.labels, le: "+Inf" })} ${s.count}`);
      lines.push(`${this.name}_sum${labelKey(s.labels)} ${fmt(s.sum)}`);
      lines.push(`${this.name}_count${labelKey(s.labels)} ${s.count}`);
    }
    return lines.join("\n");
  }
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

/** A set of metrics rendered together on one `/metrics` endpoint. */
export class Registry {
  readonly #metrics = new Map<string, Metric>();

  #add<M extends Metric>(m: M): M {
    if (!NAME.test(m.name)) throw new TypeError(`Cannot register metric: name "${m.name}" is not valid`);
    const existing = this.#metrics.get(m.name);
    if (existing) {
      if (existing.constructor !== m.constructor) {
        throw new TypeError(`Cannot register metric ${m.name}: it exists with another type`);
      }
      return existing as M;
    }
    this.#metrics.set(m.name, m);
    return m;
  }
  counter(name: string, help: string): Counter {
    return this.#add(new Counter(name, help));
  }
  gauge(name: string, help: string): Gauge {
    return this.#add(new Gauge(name, help));
  }
  histogram(name: string, help: string, buckets?: number[]): Histogram {
    return this.#add(new Histogram(name, help, buckets));
  }
  /** The exposition text (`text/plain; version=0.0.4`). */
  render(): string {
    return [...this.#metrics.values()].map((m) => m.render()).join("\n") + "\n";
  }
}

/** The content type of {@linkcode Registry.render}'s output. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";
