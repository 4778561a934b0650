// What the invocation lifecycle needs from Middy and Middy has no public hook for. Everything here relies on
// @middy/core 7's `runRequest` (index.js) and on nothing else of Middy's internals; tests pin each point against
// the lowest and the latest 7.x (packages/lifecycle/test/middy-request.test.ts).
//
// A middleware registered with `.use()` is called by Middy in before/after/onError, and that is all. Three moments
// of an invocation happen outside those calls, and a middleware that holds connections must act on each:
//
// 1. An early response. A `before`, `after` or `onError` returned a value (or set `request.earlyResponse`): Middy
//    runs `request.response = request.earlyResponse`, stops the chain and returns `request.response`. The
//    `after`s still to come (and the `onError`s) are skipped. We recognise that assignment in a setter on
//    `request.response`; the getter then hands Middy a promise that tears the invocation down first and then
//    resolves to the response. An async function that returns a promise adopts it, so the invocation returns only
//    after its teardown.
// 2. The error phase begins. Middy catches the error and assigns `request.error` (the first assignment) before
//    the first `onError` runs. Middy's early timeout arrives this way, as a TimeoutError: whatever the handler left
//    running must be stopped now, not when our own `onError` comes (another `onError` before it may wait on it).
// 3. An `onError` throws. Middy assigns the thrown error to `request.error` (with `originalError` set to the
//    previous error when they differ, Middy 7) and rethrows it at once: the remaining `onError`s are skipped, and
//    a `throw` cannot be made to wait. Teardown has to happen synchronously, inside the setter.
//    A middleware that maps `request.error` to another error also assigns it; it is told apart because Middy's own
//    assignment is the same error again, a value that is not an object, or an error whose `originalError` is the
//    previous one.
//
// The accessor functions are defined once and read their state from the request (a closure per request costs
// about twice as much, on every invocation).
import type { Request } from "@middy/core";

/** What the lifecycle is told about, from inside Middy's control flow. */
export interface MiddyRequestObserver {
	/** Middy entered the onError chain with this error (moment 2). */
	errorPhase(error: unknown): void;
	/** An onError threw and Middy is rethrowing synchronously (moment 3). */
	rethrow(error: unknown): void;
	/** Middy is about to return an early response (moment 1); a promise delays the return until it settles. */
	earlyResponse(): Promise<void> | undefined;
	/**
	 * Any other assignment of `request.response` (an `after` replacing the response, say). Returns what to store
	 * instead: the lifecycle may wrap a response's body (see response-body.ts).
	 */
	responseReplaced(next: unknown): unknown;
}

const kHooks = Symbol.for("@middy-conn/lifecycle/middy-request@2");

interface Hooks {
	readonly observer: MiddyRequestObserver;
	response: unknown;
	error: unknown;
	/** The early response's promise, handed to Middy instead of the response until teardown is over. */
	settling: Promise<unknown> | undefined;
	inErrorPhase: boolean;
}

type HookedRequest = Request & { [kHooks]: Hooks; earlyResponse?: unknown };

const onResponseAssigned = (request: HookedRequest, hooks: Hooks, next: unknown) => {
	// Moment 1: `request.response = request.earlyResponse`, then `return request.response`.
	if (hooks.settling || !("earlyResponse" in request) || request.earlyResponse !== next) {
		hooks.response = hooks.observer.responseReplaced(next);
		return;
	}
	hooks.response = next;
	const teardown = hooks.observer.earlyResponse();
	if (!teardown) return;
	const inErrorPhase = hooks.inErrorPhase;
	hooks.settling = teardown.then(() => {
		hooks.settling = undefined;
		// In the onError chain Middy throws the error when the early response is undefined; keep that.
		if (inErrorPhase && hooks.response === undefined) throw hooks.error;
		return hooks.response;
	});
};

const onErrorAssigned = (hooks: Hooks, next: unknown) => {
	const previous = hooks.error;
	hooks.error = next;
	if (!hooks.inErrorPhase) {
		// Moment 2. (Middy assigns nothing else to request.error before the onError chain.)
		hooks.inErrorPhase = true;
		hooks.observer.errorPhase(next);
		return;
	}
	// Moment 3, or a middleware mapping the error to another one.
	const rethrown =
		next === previous ||
		next === null ||
		typeof next !== "object" ||
		(next as { originalError?: unknown }).originalError === previous;
	if (rethrown) hooks.observer.rethrow(next);
};

// Two descriptors defined one by one: a third cheaper than Object.defineProperties with a map (measured on Node 24).
const accessors = {
	response: {
		configurable: true,
		enumerable: true,
		get(this: HookedRequest) {
			const hooks = this[kHooks];
			return hooks.settling ?? hooks.response;
		},
		set(this: HookedRequest, next: unknown) {
			onResponseAssigned(this, this[kHooks], next);
		},
	},
	error: {
		configurable: true,
		enumerable: true,
		get(this: HookedRequest) {
			return this[kHooks].error;
		},
		set(this: HookedRequest, next: unknown) {
			onErrorAssigned(this[kHooks], next);
		},
	},
} satisfies PropertyDescriptorMap;

/** Starts observing this request's control flow. Once per request (the invocation calls it when it is created). */
export const observeMiddyRequest = (request: Request, observer: MiddyRequestObserver): void => {
	const hooks: Hooks = {
		observer,
		response: request.response,
		error: request.error,
		settling: undefined,
		inErrorPhase: request.error !== undefined && request.error !== null,
	};
	(request as HookedRequest)[kHooks] = hooks;
	Object.defineProperty(request, "response", accessors.response);
	Object.defineProperty(request, "error", accessors.error);
};

/** True for the TimeoutError that Middy's `timeoutEarlyInMillis` throws into `onError`. */
export const isMiddyTimeout = (error: unknown): boolean =>
	error instanceof Error &&
	error.name === "TimeoutError" &&
	(error.cause as { package?: string } | undefined)?.package === "@middy/core";
