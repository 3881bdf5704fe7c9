/**
 * Preloaded into every process the end-to-end suite starts (`bun --preload bench/tools/pdeathsig.ts …`):
 * asks Linux to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG), so not even a
 * SIGKILLed suite leaves proxies behind. Touches nothing in src/. A no-op off Linux or without libc.
 */

import { dlopen, FFIType } from "bun:ffi";

const PR_SET_PDEATHSIG = 1;
const SIGKILL = 9;

if (process.platform === "linux") {
  try {
    const libc = dlopen("libc.so.6", {
      prctl: { args: [FFIType.i32, FFIType.u64, FFIType.u64, FFIType.u64, FFIType.u64], returns: FFIType.i32 },
      getppid: { args: [], returns: FFIType.i32 },
    });
    libc.symbols.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    // The parent may have died before prctl took effect: then we were re-parented already.
    const expected = Number(process.env.BENCH_PARENT_PID ?? 0);
    if (expected > 0 && libc.symbols.getppid() !== expected) process.exit(1);
  } catch {
    // Best effort: the suite also kills its children on exit and on signals.
  }
}
