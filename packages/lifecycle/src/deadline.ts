// Time, as an invocation has it: what Lambda says is left, and waiting for something at most that long.

/**
 * Milliseconds left for this invocation: Lambda's remaining time minus `reserveMs`, or `fallbackMs` where the
 * context has no clock (tests, local runs).
 */
export const remainingTimeInMillis = (
	context: { getRemainingTimeInMillis?: () => number } | undefined,
	reserveMs: number,
	fallbackMs: number,
): number => {
	const remaining = context?.getRemainingTimeInMillis?.();
	if (typeof remaining !== "number" || !Number.isFinite(remaining)) return fallbackMs;
	return Math.max(0, remaining - reserveMs);
};

export type Settled = { ok: true } | { ok: false; timedOut: boolean; error?: unknown };

const fulfilled: Settled = { ok: true };
const timedOut: Settled = { ok: false, timedOut: true };

/**
 * Waits for `promise` at most `ms` (Infinity: no bound) and says how it went. Never rejects; a promise left behind
 * at the deadline has its rejection handled, so it can never become an unhandled rejection.
 */
export const settleWithin = (promise: PromiseLike<unknown>, ms: number): Promise<Settled> => {
	const settled = Promise.resolve(promise).then(
		() => fulfilled,
		(error: unknown): Settled => ({ ok: false, timedOut: false, error }),
	);
	if (!Number.isFinite(ms)) return settled;
	if (ms <= 0) return Promise.resolve(timedOut);
	let timer: NodeJS.Timeout | undefined;
	const deadline = new Promise<Settled>((resolve) => {
		timer = setTimeout(resolve, ms, timedOut);
	});
	return Promise.race([settled, deadline]).finally(() => clearTimeout(timer));
};
