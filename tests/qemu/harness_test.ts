import assert from "node:assert/strict";
import { buildNewcArchive, requireGuestEnvironment, runGuest } from "./harness.ts";

const MiB = 1024 * 1024;

interface ParsedEntry {
  name: string;
  mode: number;
  nlink: number;
  data: Uint8Array;
}

/** Reads a newc archive back, checking magic and alignment independently of the writer. */
function parseNewc(archive: Uint8Array): ParsedEntry[] {
  const text = new TextDecoder();
  const entries: ParsedEntry[] = [];
  let offset = 0;
  while (true) {
    assert.equal(offset % 4, 0, "entry must start on a 4-byte boundary");
    const header = text.decode(archive.subarray(offset, offset + 110));
    assert.equal(header.slice(0, 6), "070701");
    const field = (index: number) => parseInt(header.slice(6 + index * 8, 14 + index * 8), 16);
    const nameSize = field(11);
    const fileSize = field(6);
    const nameStart = offset + 110;
    const name = text.decode(archive.subarray(nameStart, nameStart + nameSize - 1));
    assert.equal(archive[nameStart + nameSize - 1], 0, "name must end with NUL");
    const dataStart = Math.ceil((nameStart + nameSize) / 4) * 4;
    const data = archive.slice(dataStart, dataStart + fileSize);
    entries.push({ name, mode: field(1), nlink: field(4), data });
    offset = Math.ceil((dataStart + fileSize) / 4) * 4;
    if (name === "TRAILER!!!") break;
  }
  assert.equal(offset, archive.length, "nothing may follow the trailer");
  return entries;
}

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

Deno.test("buildNewcArchive writes entries that read back with their names, modes and data", () => {
  const script = new TextEncoder().encode("echo hi\n");
  const odd = new Uint8Array([1, 2, 3, 4, 5]);
  const archive = buildNewcArchive([
    { path: "/etc", data: new Uint8Array(0), mode: 0o040755 },
    { path: "etc/a.bin", data: odd, mode: 0o644 },
    { path: "test.sh", data: script, mode: 0o755 },
  ]);
  const entries = parseNewc(archive);
  assert.deepEqual(entries.map((entry) => entry.name), [
    "etc",
    "etc/a.bin",
    "test.sh",
    "TRAILER!!!",
  ]);
  assert.equal(entries[0].mode, 0o040755);
  assert.equal(entries[0].nlink, 2);
  assert.equal(entries[1].mode, 0o100644, "a mode without type bits is a regular file");
  assert.deepEqual(entries[1].data, odd);
  assert.deepEqual(entries[2].data, script);
  assert.equal(entries[2].mode, 0o100755);
});

Deno.test("buildNewcArchive header of a single file is byte-exact", () => {
  const archive = buildNewcArchive([{ path: "x", data: new Uint8Array([0x41]), mode: 0o600 }]);
  const header = new TextDecoder().decode(archive.subarray(0, 110));
  assert.equal(
    header,
    "070701" + "00000001" + "00008180" + "00000000" + "00000000" + "00000001" + "00000000" +
      "00000001" + "00000000" + "00000000" + "00000000" + "00000000" + "00000002" + "00000000",
  );
  // 110-byte header + "x\0" = 112: already aligned, so the data byte follows at once.
  assert.equal(archive[112], 0x41);
  assert.deepEqual(Array.from(archive.subarray(113, 116)), [0, 0, 0]);
});

Deno.test("buildNewcArchive refuses bad paths, modes and directory data", () => {
  const empty = new Uint8Array(0);
  assert.throws(() => buildNewcArchive([{ path: "", data: empty, mode: 0o644 }]), TypeError);
  assert.throws(() => buildNewcArchive([{ path: "/", data: empty, mode: 0o644 }]), TypeError);
  assert.throws(() => buildNewcArchive([{ path: "a/../b", data: empty, mode: 0o644 }]), TypeError);
  assert.throws(() => buildNewcArchive([{ path: "a\0b", data: empty, mode: 0o644 }]), TypeError);
  assert.throws(() => buildNewcArchive([{ path: "a", data: empty, mode: -1 }]), RangeError);
  assert.throws(() => buildNewcArchive([{ path: "a", data: empty, mode: 0o1000000 }]), RangeError);
  assert.throws(
    () => buildNewcArchive([{ path: "d", data: new Uint8Array(1), mode: 0o040755 }]),
    RangeError,
  );
});

Deno.test("guest writes and reads a virtio-blk disk that the host then checks", async () => {
  requireGuestEnvironment();
  const dir = await Deno.makeTempDir({ prefix: "vhostd-harness-test-" });
  try {
    const image = `${dir}/disk.img`;
    const hostRegion = crypto.getRandomValues(new Uint8Array(64 * 1024));
    const disk = new Uint8Array(8 * MiB);
    disk.set(hostRegion, 0);
    await Deno.writeFile(image, disk);

    const result = await runGuest({
      script: [
        "set -e",
        'echo "host-region $(dd if=/dev/vda bs=4096 count=16 2>/dev/null | sha256sum | cut -d" " -f1)"',
        "yes vhostd-guest-pattern | head -c 1048576 > /tmp/pattern",
        "dd if=/tmp/pattern of=/dev/vda bs=65536 seek=16 conv=fsync 2>/dev/null",
        "blockdev --flushbufs /dev/vda",
        "echo 3 > /proc/sys/vm/drop_caches",
        "dd if=/dev/vda of=/tmp/readback bs=65536 skip=16 count=16 2>/dev/null",
        "cmp /tmp/pattern /tmp/readback",
        "echo readback-ok",
      ].join("\n"),
      extraArgs: [
        "-drive",
        `file=${image},if=none,format=raw,id=d0`,
        "-device",
        "virtio-blk-pci,drive=d0",
      ],
    });
    console.log(
      `guest boot to BEGIN marker: ${result.bootMs} ms; whole run: ${result.durationMs} ms`,
    );
    const context = `serial log:\n${result.output}\nqemu stderr:\n${result.qemuStderr}`;
    assert.equal(result.timedOut, false, context);
    assert.equal(result.exitCode, 0, context);
    assert.equal(result.qemuExitCode, 0, context);
    assert.match(result.scriptOutput, new RegExp(`host-region ${await sha256Hex(hostRegion)}\n`));
    assert.match(result.scriptOutput, /readback-ok\n/);

    const after = await Deno.readFile(image);
    assert.equal(after.length, 8 * MiB);
    assert.deepEqual(after.subarray(0, hostRegion.length), hostRegion, "host region changed");
    const line = new TextEncoder().encode("vhostd-guest-pattern\n");
    const expected = new Uint8Array(MiB);
    for (let offset = 0; offset < MiB; offset += line.length) {
      expected.set(line.subarray(0, Math.min(line.length, MiB - offset)), offset);
    }
    assert.deepEqual(after.subarray(MiB, 2 * MiB), expected, "guest pattern not on the image");
    assert.ok(after.subarray(2 * MiB).every((byte) => byte === 0), "guest wrote past its range");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("guest script's exit status and output come back; echoed markers do not confuse it", async () => {
  requireGuestEnvironment();
  const result = await runGuest({
    script: "echo first line\necho 'VHOSTD-TEST: EXIT 0'\necho last line\nexit 7\n",
  });
  assert.equal(result.timedOut, false, result.output);
  assert.equal(result.exitCode, 7, result.output);
  assert.equal(result.scriptOutput, "first line\nVHOSTD-TEST: EXIT 0\nlast line\n");
  // init prints dmesg after a failing script, outside the script's output.
  assert.match(result.output, /VHOSTD-GUEST: dmesg follows/);
});

Deno.test("a guest that overruns its timeout is killed and reported", async () => {
  requireGuestEnvironment();
  const result = await runGuest({ script: "sleep 600\n", timeoutMs: 1500 });
  assert.equal(result.timedOut, true);
  assert.equal(result.exitCode, null);
  assert.equal(result.qemuExitCode, null);
  assert.ok(result.durationMs < 10_000, `killed after ${result.durationMs} ms`);
});
