import assert from "node:assert/strict";
import { formatValue, type MetricFamily, renderExposition } from "./exposition.ts";
import { parsePrometheusText, sampleValue } from "../../tests/support/prometheus_text.ts";

const FAMILIES: MetricFamily[] = [
  {
    name: "t_requests_total",
    help: "Requests\\done\nper queue",
    type: "counter",
    samples: [{ labels: { queue: "0" }, value: 3 }, { labels: { queue: "1" }, value: 2n ** 60n }],
  },
  {
    name: "t_info",
    help: "Info",
    type: "gauge",
    samples: [{ labels: { text: 'a "quoted"\\ line\nnext' }, value: 1 }],
  },
  { name: "t_plain", help: "No labels", type: "gauge", samples: [{ value: 0.5 }] },
  {
    name: "t_latency_seconds",
    help: "Latency",
    type: "histogram",
    samples: [
      { labels: { queue: "0" }, bounds: [0.001, 0.01, 0.1], counts: [2, 0, 5, 1], sum: 1.25 },
      { labels: { queue: "1" }, bounds: [0.001, 0.01, 0.1], counts: [0, 0, 0, 0], sum: 0 },
    ],
  },
];

Deno.test("every line of the exposition is valid: HELP and TYPE first, counters _total", () => {
  const text = renderExposition(FAMILIES);
  const families = parsePrometheusText(text);
  assert.deepEqual([...families.keys()], FAMILIES.map((f) => f.name));
  assert.equal(families.get("t_requests_total")!.help, "Requests\\done\nper queue");
  assert.equal(families.get("t_requests_total")!.type, "counter");
  assert.equal(sampleValue(families, "t_requests_total", { queue: "0" }), 3);
  assert.match(text, /^t_requests_total\{queue="1"\} 1152921504606846976$/m);
  assert.equal(
    families.get("t_info")!.samples[0].labels.text,
    'a "quoted"\\ line\nnext',
  );
  assert.equal(sampleValue(families, "t_plain"), 0.5);
});

Deno.test("histogram buckets are cumulative and end in +Inf equal to _count", () => {
  const families = parsePrometheusText(renderExposition(FAMILIES));
  const q0 = { queue: "0" };
  assert.deepEqual(
    families.get("t_latency_seconds")!.samples.filter((s) =>
      s.name === "t_latency_seconds_bucket" && s.labels.queue === "0"
    ).map((s) => [s.labels.le, s.value]),
    [["0.001", 2], ["0.01", 2], ["0.1", 7], ["+Inf", 8]],
  );
  assert.equal(sampleValue(families, "t_latency_seconds_count", q0), 8);
  assert.equal(sampleValue(families, "t_latency_seconds_sum", q0), 1.25);
  assert.equal(sampleValue(families, "t_latency_seconds_count", { queue: "1" }), 0);
});

Deno.test("vhostd's own naming mistakes are refused, not written", () => {
  const counter = (name: string): MetricFamily => ({
    name,
    help: "x",
    type: "counter",
    samples: [{ value: 1 }],
  });
  assert.throws(() => renderExposition([counter("requests")]), /does not end in _total/);
  assert.throws(() => renderExposition([counter("bad-name_total")]), /invalid metric name/);
  assert.throws(() => renderExposition([counter("a_total"), counter("a_total")]), /twice/);
  assert.throws(
    () =>
      renderExposition([{
        name: "g",
        help: "x",
        type: "gauge",
        samples: [{ labels: { "bad-label": "v" }, value: 1 }],
      }]),
    /invalid label name/,
  );
  assert.throws(
    () =>
      renderExposition([{
        name: "h",
        help: "x",
        type: "histogram",
        samples: [{ bounds: [1, 2], counts: [1, 2], sum: 0 }],
      }]),
    /2 counts for 2 bounds/,
  );
});

Deno.test("special values are written as the format spells them", () => {
  assert.equal(formatValue(Infinity), "+Inf");
  assert.equal(formatValue(-Infinity), "-Inf");
  assert.equal(formatValue(NaN), "NaN");
  assert.equal(formatValue(12n), "12");
  assert.equal(formatValue(2.5e-5), "0.000025");
  assert.equal(renderExposition([]), "");
});

Deno.test("the strict reader refuses what the format forbids (it can fail)", () => {
  const bad = [
    "x 1\n", // a sample before HELP/TYPE
    "# HELP x h\n# TYPE x gauge\nx 1\n# HELP x again\n", // HELP after samples
    "# HELP x h\n# TYPE x counter\nx 1\n", // counter without _total
    "# HELP x h\n# TYPE x gauge\nx one\n", // bad value
    '# HELP x h\n# TYPE x gauge\nx{a="1",} 1\n', // trailing comma
    "# HELP h h\n# TYPE h histogram\n" + // not cumulative
    'h_bucket{le="1"} 3\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 2\n',
    "# HELP h h\n# TYPE h histogram\n" + // no +Inf bucket
    'h_bucket{le="1"} 3\nh_sum 1\nh_count 3\n',
    "# HELP h h\n# TYPE h histogram\n" + // +Inf is not _count
    'h_bucket{le="1"} 3\nh_bucket{le="+Inf"} 3\nh_sum 1\nh_count 4\n',
    "# HELP a h\n# TYPE a gauge\n# HELP b h\n# TYPE b gauge\nb 1\na 1\n", // not together
    "# HELP x h\n# TYPE x gauge\nx 1", // no final newline
  ];
  for (const text of bad) assert.throws(() => parsePrometheusText(text), Error, text);
});
