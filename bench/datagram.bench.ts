/**
 * Datagram pipe framing: encodeMessage + MessageDecoder round trip, message sizes swept.
 *
 * One iteration encodes one message (a new buffer: 4-byte length prefix + copy) and pushes it whole
 * into a decoder, whose sink gets a zero-copy view. Messages are consecutive views of a 512 KiB receive
 * chunk. The copy lands 4 bytes past its source mod 4096 for page-aligned buffers (≥ 16 KiB here): the
 * slow copy case of /work/shared/notes/bun-sockets.md. DatagramPipe.send only uses encodeMessage below
 * COALESCE_BELOW and sends prefix and message separately above it; the larger sizes show why.
 */

import { ptr } from "bun:ffi";
import { do_not_optimize } from "mitata";
import { COALESCE_BELOW, encodeMessage, LENGTH_PREFIX_SIZE, MessageDecoder } from "../src/pipe/datagram.ts";
import { fmtSize, receiveChunk, slices, type Case, type Steady, registerSummary, runStandalone } from "./micro.ts";

function roundTrip(size: number): Steady {
  const msgs = slices(receiveChunk(), size);
  const last = msgs.length - 1;
  let received = 0;
  const decoder = new MessageDecoder((m) => {
    received += m.byteLength;
  });
  let i = 0;
  const op = () => {
    decoder.push(encodeMessage(msgs[i]!));
    i = i === last ? 0 : i + 1;
    do_not_optimize(received);
  };
  const probe = encodeMessage(msgs[0]!);
  const delta = (ptr(probe) + LENGTH_PREFIX_SIZE - ptr(msgs[0]!)) & 4095;
  op();
  if (received !== size || !decoder.atBoundary) throw new Error("datagram bench did not round-trip");
  const path = size < COALESCE_BELOW ? "send() path" : `send() avoids it ≥ ${fmtSize(COALESCE_BELOW)}`;
  return { bytes: size, unit: "message", note: `copy dst−src mod 4096 = ${delta}; ${path}`, op };
}

const datagramCase: Case = {
  name: "datagram encode+decode $size",
  arg: "size",
  values: [64, 1024, 16 * 1024, 64 * 1024],
  setup: roundTrip,
};
export const cases: Case[] = [datagramCase];

registerSummary(cases);
if (import.meta.main) await runStandalone(cases);
