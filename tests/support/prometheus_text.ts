/**
 * A strict reader of the Prometheus text exposition format (0.0.4) for
 * tests: every line must be a `# HELP`, a `# TYPE`, another comment or a
 * sample; a family's HELP and TYPE come before its samples, its samples are
 * together, counters end in `_total`, and each histogram's buckets are
 * cumulative, end with `le="+Inf"` and that bucket equals `_count`.
 * Anything else throws with the line number.
 *
 * @module
 */

/** One sample line. */
export interface ParsedSample {
  /** Sample name (with a histogram's `_bucket`/`_sum`/`_count` suffix). */
  name: string;
  /** Its labels. */
  labels: Record<string, string>;
  /** Its value. */
  value: number;
}

/** One family. */
export interface ParsedFamily {
  /** Family name. */
  name: string;
  /** HELP text (unescaped). */
  help: string;
  /** TYPE. */
  type: string;
  /** Samples in order. */
  samples: ParsedSample[];
}

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const SAMPLE = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)(?: (-?\\d+))?$`);
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

function parseValue(text: string): number {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (text === "NaN") return NaN;
  if (!/^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`bad value "${text}"`);
  return Number(text);
}

function parseLabels(text: string | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  let rest = text ?? "";
  while (rest !== "") {
    const m = LABEL.exec(rest);
    if (!m) throw new Error(`bad labels "${text}"`);
    if (m[1] in labels) throw new Error(`label ${m[1]} twice`);
    labels[m[1]] = m[2].replace(/\\(.)/g, (_, c) => c === "n" ? "\n" : c);
    rest = rest.slice(m[0].length);
    if (m[3] === "," && rest === "") throw new Error(`trailing comma in "${text}"`);
  }
  return labels;
}

function familyOf(sampleName: string, families: Map<string, ParsedFamily>): ParsedFamily {
  const direct = families.get(sampleName);
  if (direct && direct.type !== "histogram") return direct;
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!sampleName.endsWith(suffix)) continue;
    const family = families.get(sampleName.slice(0, -suffix.length));
    if (family?.type === "histogram") return family;
  }
  throw new Error(`sample ${sampleName} before its # HELP and # TYPE`);
}

function checkHistograms(family: ParsedFamily): void {
  const groups = new Map<string, ParsedSample[]>();
  for (const s of family.samples) {
    const { le: _, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    groups.set(key, [...groups.get(key) ?? [], s]);
  }
  for (const [key, samples] of groups) {
    const buckets = samples.filter((s) => s.name.endsWith("_bucket"));
    const count = samples.find((s) => s.name.endsWith("_count"));
    const sum = samples.find((s) => s.name.endsWith("_sum"));
    const where = `${family.name} ${key}`;
    if (buckets.length === 0 || !count || !sum) throw new Error(`${where}: incomplete`);
    let previousLe = -Infinity;
    let previous = 0;
    for (const b of buckets) {
      if (b.labels.le === undefined) throw new Error(`${where}: bucket without le`);
      const le = parseValue(b.labels.le);
      if (!(le > previousLe)) throw new Error(`${where}: le ${b.labels.le} out of order`);
      if (b.value < previous) throw new Error(`${where}: buckets are not cumulative`);
      previousLe = le;
      previous = b.value;
    }
    if (buckets.at(-1)!.labels.le !== "+Inf") throw new Error(`${where}: no +Inf bucket`);
    if (buckets.at(-1)!.value !== count.value) throw new Error(`${where}: +Inf != _count`);
  }
}

/** Parses and checks `text`; the families by name. */
export function parsePrometheusText(text: string): Map<string, ParsedFamily> {
  if (text !== "" && !text.endsWith("\n")) throw new Error("the text does not end in a newline");
  const families = new Map<string, ParsedFamily>();
  const done = new Set<string>();
  let current: ParsedFamily | undefined;
  const lines = text === "" ? [] : text.slice(0, -1).split("\n");
  lines.forEach((line, i) => {
    try {
      const comment = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (comment) {
        const [, what, name, rest] = comment;
        if (!new RegExp(`^${NAME}$`).test(name)) throw new Error(`bad name ${name}`);
        if (done.has(name)) throw new Error(`${name} appears again after other families`);
        if (current && current.name !== name) done.add(current.name);
        const family = families.get(name) ?? { name, help: "", type: "", samples: [] };
        if (family.samples.length > 0) throw new Error(`# ${what} of ${name} after its samples`);
        if (what === "HELP") {
          if (family.help !== "") throw new Error(`second # HELP of ${name}`);
          family.help = rest.replace(/\\(.)/g, (_, c) => c === "n" ? "\n" : c);
        } else {
          if (family.type !== "") throw new Error(`second # TYPE of ${name}`);
          if (!TYPES.has(rest)) throw new Error(`unknown type ${rest}`);
          if (rest === "counter" && !name.endsWith("_total")) {
            throw new Error(`counter ${name} does not end in _total`);
          }
          family.type = rest;
        }
        families.set(name, family);
        current = family;
        return;
      }
      if (line.startsWith("#")) return;
      const m = SAMPLE.exec(line);
      if (!m) throw new Error("not a sample");
      const family = familyOf(m[1], families);
      if (family !== current) throw new Error(`samples of ${family.name} are not together`);
      if (family.help === "" || family.type === "") {
        throw new Error(`${family.name} lacks # HELP or # TYPE before its samples`);
      }
      family.samples.push({ name: m[1], labels: parseLabels(m[2]), value: parseValue(m[3]) });
    } catch (e) {
      throw new Error(`line ${i + 1} "${line}": ${e instanceof Error ? e.message : e}`);
    }
  });
  for (const family of families.values()) {
    if (family.type === "histogram") checkHistograms(family);
  }
  return families;
}

/**
 * The value of the sample `name` whose labels include `labels`; throws
 * unless exactly one matches.
 */
export function sampleValue(
  families: Map<string, ParsedFamily>,
  name: string,
  labels: Record<string, string> = {},
): number {
  const matches = [...families.values()].flatMap((f) => f.samples).filter((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  );
  if (matches.length !== 1) {
    throw new Error(`${matches.length} samples ${name} ${JSON.stringify(labels)}`);
  }
  return matches[0].value;
}
