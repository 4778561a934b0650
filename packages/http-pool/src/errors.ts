// The errors this package raises, each with a stable `code`.
import { lifecycleErrorCodes, MiddyConnError } from "@middy-conn/lifecycle";
import { pkg } from "./options.ts";

export const errorCodes = {
	/** A non-idempotent request failed on the network and provably never left this process: retrying is safe. */
	notSent: "MIDDY_CONN_HTTP_REQUEST_NOT_SENT",
	/**
	 * A non-idempotent request failed on the network after its bytes were handed to the socket and before any
	 * response byte: the server may have received and processed it. Retrying is unsafe unless the request carries
	 * an idempotency key the server honours.
	 */
	mayHaveBeenSent: "MIDDY_CONN_HTTP_REQUEST_MAY_HAVE_BEEN_SENT",
	/** The invocation ended (returned, failed, timed out) while the request was open: it was aborted or discarded. */
	invocationEnded: "MIDDY_CONN_HTTP_INVOCATION_ENDED",
	/** A background task was still running at the wait deadline, and its requests were aborted. */
	deadline: lifecycleErrorCodes.taskDeadline,
	/** A request without `origin` on a dispatcher configured without one. */
	originRequired: "MIDDY_CONN_HTTP_ORIGIN_REQUIRED",
	/** A request for another origin than the one the dispatcher was configured for. */
	originMismatch: "MIDDY_CONN_HTTP_ORIGIN_MISMATCH",
} as const;

export const httpPoolError = (
	message: string,
	code: (typeof errorCodes)[keyof typeof errorCodes],
	cause?: unknown,
	details?: Record<string, unknown>,
): MiddyConnError =>
	new MiddyConnError(message, { package: pkg, code, cause, ...(details ? { details } : {}) });
