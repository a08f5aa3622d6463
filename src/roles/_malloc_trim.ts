/**
 * Returning freed heap memory to the system. glibc keeps memory that libzmq frees (a departed
 * subscriber's queue, say) for reuse; `malloc_trim(0)` hands its free pages back.
 *
 * @module
 */

let trim: (() => void) | null | undefined;

/** Calls glibc's `malloc_trim(0)`; returns `false` where there is none (not Linux, not glibc). */
export function mallocTrim(): boolean {
  if (trim === undefined) {
    trim = null;
    if (Deno.build.os === "linux") {
      try {
        const lib = Deno.dlopen("libc.so.6", { malloc_trim: { parameters: ["usize"], result: "i32" } });
        trim = () => void lib.symbols.malloc_trim(0n);
      } catch { /* musl, or no libc.so.6 */ }
    }
  }
  if (!trim) return false;
  trim();
  return true;
}
