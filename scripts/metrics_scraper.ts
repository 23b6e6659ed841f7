/**
 * A Prometheus stand-in for the benchmark (`deno task bench --scrape-hz N`):
 * GETs vhostd's `--metrics` endpoint N times a second until SIGTERM, then
 * prints one line: how many scrapes, how many failed, their mean and
 * longest time and the size of an answer.
 *
 * Usage: deno run -A scripts/metrics_scraper.ts ADDRESS HZ
 * (ADDRESS as vhostd's --metrics takes it: unix:/path or 127.0.0.1:PORT)
 *
 * @module
 */

const [address, hzText] = Deno.args;
const hz = Number(hzText);
if (address === undefined || !(hz > 0)) {
  console.error("usage: metrics_scraper.ts ADDRESS HZ");
  Deno.exit(2);
}
const unix = address.startsWith("unix:");
const client = unix
  ? Deno.createHttpClient({ proxy: { transport: "unix", path: address.slice(5) } })
  : undefined;
const url = unix ? "http://localhost/metrics" : `http://${address}/metrics`;

let scrapes = 0;
let failed = 0;
let totalMs = 0;
let maxMs = 0;
let bytes = 0;
let stop = false;
const stopped = Promise.withResolvers<void>();
Deno.addSignalListener("SIGTERM", () => {
  stop = true;
  stopped.resolve();
});

const period = 1000 / hz;
let next = performance.now();
while (!stop) {
  const t0 = performance.now();
  try {
    const response = await fetch(url, { client });
    const text = await response.text();
    if (response.status !== 200) throw new Error(`status ${response.status}`);
    bytes = text.length;
  } catch {
    failed++;
  }
  const ms = performance.now() - t0;
  scrapes++;
  totalMs += ms;
  maxMs = Math.max(maxMs, ms);
  next += period;
  const wait = next - performance.now();
  if (wait > 0) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([new Promise((r) => timer = setTimeout(r, wait)), stopped.promise]);
    clearTimeout(timer);
  } else {
    next = performance.now();
  }
}
console.log(
  `${scrapes} scrapes at ${hz} Hz (${failed} failed), mean ${(totalMs / scrapes).toFixed(2)} ms, ` +
    `max ${maxMs.toFixed(1)} ms, ${bytes} bytes each`,
);
client?.close();
