/**
 * Test helper: the next message a Worker posts, or a rejection when the
 * Worker throws.
 *
 * @module
 */

/** Resolves with the data of `worker`'s next message. */
export function nextMessage<T>(worker: Worker): Promise<T> {
  return new Promise((resolve, reject) => {
    worker.onmessage = (event: MessageEvent<T>) => resolve(event.data);
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      reject(new Error(`worker failed: ${event.message}`));
    };
  });
}
