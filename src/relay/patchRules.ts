/**
 * The 2005 Relay Fork Module's text rules, as pure functions (kernel/relay_fork.c of the
 * "[RFC][PATCH 2.6.11-rc3-mm1] Relay Fork Module" posting, Guillaume Thouvenin, 7 Feb 2005).
 *
 * Nothing here touches the kernel: the registry and the signal live in ./registry.ts and
 * ./relay.ts; ./attributes.ts combines them with these rules.
 */

/**
 * What `parsePatchNumber` returns when the digits name a value beyond 2^53 - 1: greater than
 * every pid_max and every signal number, so it can never be taken for either (see below).
 */
export const PATCH_NUMBER_TOO_LARGE = Number.POSITIVE_INFINITY;

/** The patch's PAGE_SIZE: the size of the sysfs buffer `rfd_proclist_show` filled (x86, 4 KiB). */
export const PATCH_PAGE_SIZE = 4096;

/**
 * The RT signal range the patch accepted: `(rtsignal > SIGRTMIN) && (rtsignal < SIGRTMAX)` in
 * `rfd_signal_store`, with the kernel's SIGRTMIN 32 and SIGRTMAX 64 (_NSIG) on x86.
 */
export const PATCH_SIGRTMIN = 32;
export const PATCH_SIGRTMAX = 64;

/** The patch's default signal (RELAY_FORK_SIGNAL). */
export const PATCH_DEFAULT_SIGNAL = 33;

const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;
const MINUS = 0x2d;
/** Above this, one more digit could leave the range of exactly representable integers. */
const LAST_SAFE_BEFORE_DIGIT = Math.floor((Number.MAX_SAFE_INTEGER - 9) / 10);

/**
 * `rfd_strtoi`: skip ONE leading '-', then read decimal digits up to the first non-digit; no
 * digits gives 0. "123\n" -> 123, "123abc" -> 123, " 123" -> 0, "+5" -> 0, "-0" -> 0, "" -> 0.
 *
 * Overflow: the C function accumulated into an unsigned long (wrapping modulo 2^64) and
 * `rfd_proclist_store` then truncated the result to an int, so "4294967297" named pid 1 to
 * find_task_by_pid, got stored as 4294967297, and was later looked up again as pid 1: a write of
 * a huge number could register (and signal) init; "18446744073709551656" (2^64 + 40) set the
 * signal to 40. relayfork does not reproduce that aliasing: the value is exact while it stays
 * below 2^53 (15 digits always do), and a longer run of digits that could exceed that saturates
 * to PATCH_NUMBER_TOO_LARGE (+Infinity), which is above every pid_max (so "no such task") and
 * above SIGRTMAX (so "signal ignored"). Wherever the patch's wrap-around was harmless (a value
 * that truncated to 0 did nothing; one above pid_max found no task) the outcome is the same.
 */
export function parsePatchNumber(text: string): number {
  let i = text.length > 0 && text.charCodeAt(0) === MINUS ? 1 : 0;
  let value = 0;
  for (; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < DIGIT_0 || c > DIGIT_9) break;
    if (value > LAST_SAFE_BEFORE_DIGIT) return PATCH_NUMBER_TOO_LARGE;
    value = value * 10 + (c - DIGIT_0);
  }
  return value;
}

/** True when the store text starts with the '-' that asks `rfd_proclist_store` to unregister. */
export function isUnregisterRequest(text: string): boolean {
  return text.length > 0 && text.charCodeAt(0) === MINUS;
}

/** `rfd_nbdigits` for the positive ids the registry holds. */
function decimalDigits(id: number): number {
  let digits = 1;
  for (let n = id; n >= 10; n = Math.floor(n / 10)) digits++;
  return digits;
}

/**
 * `rfd_proclist_show`: the ids (newest first, the order of the patch's list_add at the head),
 * each followed by one space, then "\n". An id is printed only while
 * `char_print + rfd_nbdigits(pid) + 1 < PAGE_SIZE - 1`; the first id that does not fit ends the
 * list (the patch `break`s), so the text is at most 4095 bytes with its newline.
 */
export function renderProcessList(idsNewestFirst: readonly number[]): string {
  let text = '';
  let printed = 0;
  for (const id of idsNewestFirst) {
    const width = decimalDigits(id) + 1;
    if (printed + width >= PATCH_PAGE_SIZE - 1) break;
    text += `${id} `;
    printed += width;
  }
  return `${text}\n`;
}

/** `rfd_signal_show`: `sprintf(buf, "%lu\n", dev->signal)`. */
export function renderSignal(signal: number): string {
  return `${signal}\n`;
}

/** `rfd_signal_store`'s test: strictly between SIGRTMIN (32) and SIGRTMAX (64). */
export function isAcceptedSignal(n: number): boolean {
  return n > PATCH_SIGRTMIN && n < PATCH_SIGRTMAX;
}
