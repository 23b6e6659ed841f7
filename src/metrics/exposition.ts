/**
 * Prometheus text exposition format, version 0.0.4: each metric family is a
 * `# HELP` line, a `# TYPE` line and its samples; a histogram's samples are
 * its cumulative `_bucket{le="..."}` counts ending with `le="+Inf"`, then
 * `_sum` and `_count`.
 *
 * @module
 */

/** Content-Type of the text format. */
export const EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Label names and values of one sample. */
export type Labels = Readonly<Record<string, string>>;

/** One value of a counter or gauge. */
export interface ScalarSample {
  /** Labels telling this sample apart from the family's others. */
  labels?: Labels;
  /** The value (a bigint is written exactly). */
  value: number | bigint;
}

/** One histogram (one label set) of a histogram family. */
export interface HistogramSample {
  /** Labels telling this histogram apart from the family's others. */
  labels?: Labels;
  /** Upper bounds of the buckets, increasing, without +Inf. */
  bounds: readonly number[];
  /**
   * Observations per bucket, not cumulative: `counts[i]` fell in
   * (bounds[i-1], bounds[i]], and the last entry (one more than `bounds`)
   * counts those above the last bound.
   */
  counts: ArrayLike<number>;
  /** Sum of every observation. */
  sum: number;
}

/** A counter or gauge family. */
export interface ScalarFamily {
  /** Metric name; a counter's ends in `_total`. */
  name: string;
  /** One line of help. */
  help: string;
  /** Kind. */
  type: "counter" | "gauge";
  /** Its samples. */
  samples: readonly ScalarSample[];
}

/** A histogram family. */
export interface HistogramFamily {
  /** Metric name (the `_bucket`, `_sum`, `_count` suffixes are added). */
  name: string;
  /** One line of help. */
  help: string;
  /** Kind. */
  type: "histogram";
  /** Its histograms. */
  samples: readonly HistogramSample[];
}

/** One metric family. */
export type MetricFamily = ScalarFamily | HistogramFamily;

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function escapeLabelValue(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** A sample value as the format writes it (`+Inf`, `-Inf`, `NaN` for the special ones). */
export function formatValue(value: number | bigint): string {
  if (typeof value === "bigint") return value.toString();
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

function formatLabels(labels: Labels | undefined, extra?: [string, string]): string {
  const pairs = Object.entries(labels ?? {});
  if (extra) pairs.push(extra);
  if (pairs.length === 0) return "";
  for (const [name] of pairs) {
    if (!LABEL_NAME.test(name) || name.startsWith("__")) {
      throw new Error(`invalid label name "${name}"`);
    }
  }
  return `{${pairs.map(([n, v]) => `${n}="${escapeLabelValue(v)}"`).join(",")}}`;
}

function renderHistogram(name: string, h: HistogramSample, out: string[]): void {
  if (h.counts.length !== h.bounds.length + 1) {
    throw new Error(`histogram ${name}: ${h.counts.length} counts for ${h.bounds.length} bounds`);
  }
  let cumulative = 0;
  for (let i = 0; i <= h.bounds.length; i++) {
    cumulative += h.counts[i];
    const le = i < h.bounds.length ? formatValue(h.bounds[i]) : "+Inf";
    out.push(`${name}_bucket${formatLabels(h.labels, ["le", le])} ${formatValue(cumulative)}`);
  }
  out.push(`${name}_sum${formatLabels(h.labels)} ${formatValue(h.sum)}`);
  out.push(`${name}_count${formatLabels(h.labels)} ${formatValue(cumulative)}`);
}

/**
 * The families as one exposition (each line ends with a newline). Throws
 * for a name the format does not allow or a counter not ending in `_total`:
 * those are vhostd's own mistakes, never input.
 */
export function renderExposition(families: readonly MetricFamily[]): string {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const family of families) {
    const { name } = family;
    if (!METRIC_NAME.test(name)) throw new Error(`invalid metric name "${name}"`);
    if (seen.has(name)) throw new Error(`metric ${name} appears twice`);
    seen.add(name);
    if (family.type === "counter" && !name.endsWith("_total")) {
      throw new Error(`counter ${name} does not end in _total`);
    }
    out.push(`# HELP ${name} ${escapeHelp(family.help)}`);
    out.push(`# TYPE ${name} ${family.type}`);
    if (family.type === "histogram") {
      for (const h of family.samples) renderHistogram(name, h, out);
    } else {
      for (const s of family.samples) {
        out.push(`${name}${formatLabels(s.labels)} ${formatValue(s.value)}`);
      }
    }
  }
  return out.length === 0 ? "" : out.join("\n") + "\n";
}
