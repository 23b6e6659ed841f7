/**
 * virtio-blk's own `--metrics` families, from the request counters its
 * queue Workers keep (blk_shared_state.ts). They travel with the device
 * state, so after a LOAD they continue from the source's values.
 *
 * @module
 */

import type { MetricFamily } from "../../metrics/exposition.ts";
import type { BlkCounter } from "./blk_shared_state.ts";

const OPERATIONS: [string, BlkCounter][] = [
  ["read", "reads"],
  ["write", "writes"],
  ["flush", "flushes"],
  ["discard", "discards"],
  ["write_zeroes", "writeZeroes"],
  ["get_id", "getIds"],
];

/** The blk families for the counters `counters`. */
export function blkMetricFamilies(counters: Record<BlkCounter, bigint>): MetricFamily[] {
  return [
    {
      name: "vhostd_blk_requests_total",
      help: "virtio-blk requests handled successfully, by type",
      type: "counter",
      samples: OPERATIONS.map(([op, counter]) => ({ labels: { op }, value: counters[counter] })),
    },
    {
      name: "vhostd_blk_bytes_total",
      help: "Bytes read from (read) and written to (write) the disk by successful requests",
      type: "counter",
      samples: [
        { labels: { direction: "read" }, value: counters.bytesRead },
        { labels: { direction: "write" }, value: counters.bytesWritten },
      ],
    },
    {
      name: "vhostd_blk_errors_total",
      help: "virtio-blk requests answered VIRTIO_BLK_S_IOERR (ioerr) or VIRTIO_BLK_S_UNSUPP " +
        "(unsupported)",
      type: "counter",
      samples: [
        { labels: { status: "ioerr" }, value: counters.errors },
        { labels: { status: "unsupported" }, value: counters.unsupported },
      ],
    },
  ];
}
