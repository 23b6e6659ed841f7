import assert from "node:assert/strict";
import { Progress, type ProgressOutput } from "./progress.ts";

/** A terminal (or not) that records what was written, with a clock the test moves. */
function fakeOutput(isTerminal: boolean) {
  let text = "";
  let clock = 0;
  const output: ProgressOutput = { isTerminal, write: (t) => text += t, now: () => clock };
  return { output, written: (): string => text, at: (ms: number) => clock = ms };
}

Deno.test("progress appears on a terminal only after a second, redrawn in place", () => {
  const { output, written, at } = fakeOutput(true);
  const progress = new Progress("saving", output);
  at(500);
  progress.update(100 * 2 ** 20);
  assert.equal(written(), "", "a transfer shorter than a second shows nothing");
  at(2000);
  progress.update(512 * 2 ** 20);
  assert.equal(written(), "\rsaving: 512.0 MiB (256 MiB/s)  ");
  at(2100);
  progress.update(600 * 2 ** 20);
  assert.equal(written().split("\r").length, 2, "no redraw within 200 ms");
  at(2300);
  progress.update(640 * 2 ** 20);
  assert.ok(written().endsWith("\rsaving: 640.0 MiB (278 MiB/s)  "), written());
  progress.done();
  assert.ok(written().endsWith("\n"));
});

Deno.test("progress stays silent when stderr is no terminal", () => {
  const { output, written, at } = fakeOutput(false);
  const progress = new Progress("loading", output);
  at(5000);
  progress.update(2 ** 30);
  progress.done();
  assert.equal(written(), "");
});
