// When a request may be replayed after a network error, and what error the caller sees when it may not.
//
// After a freeze, a pooled keep-alive socket may have been closed by the peer or silently forgotten by a NAT:
// undici finds out only when it writes (ECONNRESET, EPIPE, "other side closed"). undici's core does not replay
// such a request; its retry interceptor does, and we give it our own policy:
// - only network errors met before any response byte (a status code is an answer, never replayed: statusCodes
//   is empty, so a 503 reaches the caller as a response; and a body cut off midway is not resumed);
// - only idempotent methods (RFC 9110 §9.2.2), unless the request opts in with `idempotent: true` (for a POST
//   that carries an idempotency key the server honours), or opts out with `idempotent: false`;
// - a non-idempotent request is also replayed when it provably never reached the wire: no attempt of it had its
//   headers written (the connection failed first). That is known from the diagnostics channel (telemetry.ts);
//   when it cannot be known (an interceptor dropped our option), the request is treated as sent;
// - bounded (`maxRetries`), and the first replay does not wait: a stale socket is a property of that socket, and
//   the replay goes out on a fresh one at once.

import { codeOf } from "@middy-conn/lifecycle/internal";
import type { Dispatcher } from "undici";
import { interceptors } from "undici";
import { errorCodes, httpPoolError } from "./errors.ts";
import type { ResolvedRetryOptions } from "./options.ts";
import { kAttribution } from "./telemetry.ts";
import { dispatchTag, replayAfter } from "./undici-adapter.ts";

/** Methods that RFC 9110 defines as idempotent (QUERY from the safe-method draft). */
const idempotentMethods = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE", "QUERY"]);

/** Errors of the connection, not of the server's answer: the request may not have been processed. */
const networkErrorCodes = new Set([
	"ECONNRESET",
	"EPIPE",
	"UND_ERR_SOCKET",
	"ECONNREFUSED",
	"ECONNABORTED",
	"ENOTFOUND",
	"EAI_AGAIN",
	"ENETDOWN",
	"ENETUNREACH",
	"EHOSTDOWN",
	"EHOSTUNREACH",
	"ETIMEDOUT",
	"UND_ERR_CONNECT_TIMEOUT",
]);

/**
 * Network errors worth a replay. A connect timeout is not: the peer did not answer within `connectTimeout`,
 * and waiting that long again (twice) would eat the invocation's time.
 */
const replayableErrorCodes = new Set(
	[...networkErrorCodes].filter((code) => code !== "UND_ERR_CONNECT_TIMEOUT"),
);

/** What the retry policy and the error translation know about a request beyond its options. */
export interface WireState {
	/** undici created at least one attempt for it, so the diagnostics channel reports on it. */
	readonly attributed: boolean;
	/** Some attempt had its headers handed to a socket. */
	readonly headersWritten: boolean;
	/** The response has started: the caller has seen its status and maybe part of its body. */
	readonly responseStarted: boolean;
}

export const isNetworkError = (error: unknown): boolean => networkErrorCodes.has(codeOf(error) ?? "");

/** Idempotent by method, unless the request says otherwise with `idempotent`. */
export const isIdempotent = (opts: Pick<Dispatcher.DispatchOptions, "method" | "idempotent">): boolean =>
	opts.idempotent ?? idempotentMethods.has(String(opts.method).toUpperCase());

const provablyUnsent = (wire: WireState | undefined): boolean =>
	wire?.attributed === true && !wire.headersWritten;

type RetryPolicy = NonNullable<Parameters<typeof interceptors.retry>[0]>["retry"];

/** The retry policy handed to undici's retry interceptor. */
export const retryPolicy =
	(settings: ResolvedRetryOptions): NonNullable<RetryPolicy> =>
	(error, { state, opts }, callback) => {
		const code = codeOf(error);
		const wire = dispatchTag<WireState>(opts, kAttribution);
		if (
			code === undefined ||
			!replayableErrorCodes.has(code) ||
			// Once the caller has a response, a replay would splice two responses (undici resumes with a Range
			// request, which many servers ignore): the body's error is the caller's to see.
			wire?.responseStarted === true ||
			!(isIdempotent(opts) || provablyUnsent(wire)) ||
			state.counter > settings.maxRetries
		) {
			callback(error);
			return;
		}
		// counter is 1 for the first replay: it goes out at once (on the next turn of the event loop), later ones
		// back off.
		const delay =
			state.counter <= 1
				? 0
				: Math.min(settings.minTimeout * settings.timeoutFactor ** (state.counter - 2), settings.maxTimeout);
		// Returning the timer lets undici cancel the wait when the request is aborted meanwhile.
		return replayAfter(delay, callback);
	};

export const retryInterceptor = (settings: ResolvedRetryOptions): Dispatcher.DispatcherComposeInterceptor =>
	interceptors.retry({
		retry: retryPolicy(settings),
		// Status codes are answers: never replayed, passed to the caller as responses.
		statusCodes: [],
		// Decided by our policy; given here so that undici does not build its default lists for every request.
		methods: [...idempotentMethods] as Dispatcher.HttpMethod[],
		errorCodes: [...replayableErrorCodes],
	});

/**
 * The error a caller sees when its request failed on the network before any response byte. Idempotent
 * requests keep undici's error (they have been replayed already, and replaying them again is always safe).
 * A non-idempotent request gets a MiddyConnError whose code says whether replaying it is safe.
 */
export const translateNetworkError = (
	error: Error,
	opts: Pick<Dispatcher.DispatchOptions, "method" | "idempotent" | "origin" | "path">,
	wire: WireState,
): Error => {
	if (!isNetworkError(error) || isIdempotent(opts)) return error;
	// Named without its query string: queries carry API keys and tokens, and this message reaches logs.
	const target = `${opts.method} ${opts.origin ?? ""}${String(opts.path ?? "").split("?")[0]}`;
	if (provablyUnsent(wire)) {
		return httpPoolError(
			`${target} failed before it was sent (${codeOf(error)}); it was not received, retrying it is safe`,
			errorCodes.notSent,
			error,
			{ retrySafe: true },
		);
	}
	return httpPoolError(
		`${target} failed after it was sent and before any response (${codeOf(error)}); the server may have processed it, so it was not replayed. Retry only with an idempotency key the server honours (and pass idempotent: true)`,
		errorCodes.mayHaveBeenSent,
		error,
		{ retrySafe: false },
	);
};
