// Connect under pressure. Lambda scales a function out to many execution environments at once, and a burst can
// open more connections than the server allows: it refuses the connect with ER_CON_COUNT_ERROR (max_connections),
// or ER_TOO_MANY_USER_CONNECTIONS / ER_USER_LIMIT_REACHED (a per-user limit). A short wait usually serves such an
// invocation, since scoped connections of other environments close as their invocations end. So a refused
// connect is tried again after a jittered, growing wait ("full jitter": a random wait up to a cap that doubles),
// which spreads the retries of many environments instead of sending them back in step.
//
// Only the connect is retried, never a statement: the server refused the session before any statement was sent.
// Bounded by the number of attempts, by the invocation's remaining time (no wait that would end past it), and by
// the invocation itself: a timeout or teardown ends the wait at once, with the last refusal.
import { setTimeout as sleep } from "node:timers/promises";
import { remainingTimeInMillis } from "@middy-conn/lifecycle";

export interface ConnectRetryOptions {
	/** Connects at most, the first included. Default 10. */
	attempts?: number;
	/** The cap of the first wait, in ms; it doubles on each retry. Default 25. */
	baseDelay?: number;
	/** The largest cap of a wait, in ms. Default 1000. */
	maxDelay?: number;
}

export type ConnectRetry = Required<ConnectRetryOptions>;

export const connectRetryDefaults: ConnectRetry = { attempts: 10, baseDelay: 25, maxDelay: 1000 };

/** The server's answers that mean "full now, try again later". */
export const serverFullCodes: readonly string[] = [
	"ER_CON_COUNT_ERROR",
	"ER_TOO_MANY_USER_CONNECTIONS",
	"ER_USER_LIMIT_REACHED",
];

export const isServerFull = (error: unknown): boolean =>
	serverFullCodes.includes((error as { code?: unknown } | null | undefined)?.code as string);

/** The wait before retry number `retry` (0 for the first retry): uniform in [0, min(maxDelay, base × 2^retry)). */
export const retryDelay = (policy: ConnectRetry, retry: number): number =>
	Math.random() * Math.min(policy.maxDelay, policy.baseDelay * 2 ** retry);

export interface RetryScope {
	/** Aborted when the invocation gives up (timeout, teardown): the wait ends, and the last refusal is thrown. */
	readonly signal: AbortSignal;
	/** The Lambda context, for its remaining time. */
	readonly context: { getRemainingTimeInMillis?: () => number } | undefined;
	/** Called before each wait: the retry is counted in the invocation's stats. */
	onRetry(): void;
}

/**
 * Runs `connect` until it succeeds, fails with anything but a full server, or the policy's bounds are reached; the
 * error thrown is then the last one `connect` threw.
 */
export const withConnectRetry = async <T>(
	policy: ConnectRetry | false,
	scope: RetryScope,
	connect: () => Promise<T>,
): Promise<T> => {
	for (let attempt = 1; ; attempt += 1) {
		try {
			return await connect();
		} catch (error) {
			if (!policy || !isServerFull(error) || attempt >= policy.attempts || scope.signal.aborted) throw error;
			const delay = retryDelay(policy, attempt - 1);
			if (delay >= remainingTimeInMillis(scope.context, 0, Number.POSITIVE_INFINITY)) throw error;
			scope.onRetry();
			try {
				await sleep(delay, undefined, { signal: scope.signal });
			} catch {
				throw error;
			}
		}
	}
};
