// The errors the invocation lifecycle itself raises, each with a stable `code`.
import { MiddyConnError } from "./errors.ts";

export const lifecycleErrorCodes = {
	/** Something of the invocation was used after its teardown had closed it (a leaked promise, a late task). */
	invocationEnded: "MIDDY_CONN_INVOCATION_ENDED",
	/** Middy's early timeout fired: what the handler left running was stopped, background tasks aborted. */
	timedOut: "MIDDY_CONN_TIMED_OUT",
	/** A background task was still running at the wait deadline: it was aborted, and what it used interrupted. */
	taskDeadline: "MIDDY_CONN_WAIT_UNTIL_DEADLINE",
	/** An onError middleware threw, and Middy rethrew at once: what was still open was destroyed, unfinished. */
	tornDown: "MIDDY_CONN_TORN_DOWN",
} as const;

export type LifecycleErrorCode = (typeof lifecycleErrorCodes)[keyof typeof lifecycleErrorCodes];

export const lifecycleError = (message: string, code: LifecycleErrorCode, cause?: unknown): MiddyConnError =>
	new MiddyConnError(message, { package: "@middy-conn/lifecycle", code, cause });
