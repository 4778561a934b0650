// The end of a Lambda invocation, seen from a middleware, on every path Middy 7 can take.
//
// A middleware that opens something in `before` usually closes it in `after`/`onError`. Middy skips those in
// three situations, and Lambda freezes the process as soon as the response is posted, so whatever was not closed
// by then leaks (or lands in a later invocation):
//
// 1. Early response. A later `before` (or an `after`/`onError` further out) returns a value: Middy sets
//    `request.earlyResponse`, copies it to `request.response`, stops the chain and returns `request.response`.
//    Every `after` — including those of middlewares whose `before` already ran — is skipped, and so is `onError`.
// 2. An `onError` throws: the remaining `onError`s are skipped and the error propagates.
// 3. Nothing else: Middy has no end-of-request hook that a middleware can register (plugin hooks are the
//    caller's, passed to `middy()`).
//
// The mechanism here works with a plain `.use()`: the first middleware that asks for the scope turns
// `request.response` and `request.error` into accessors.
// - Case 1: Middy assigns `request.response = request.earlyResponse` right before it returns
//   `request.response`. The setter recognises that assignment; the getter then hands Middy a promise that first
//   closes every resource still open and then resolves to the real response. An async function that returns a
//   promise adopts it, so the invocation returns only after the cleanup has finished.
// - Case 2: Middy assigns the new error to `request.error` and immediately throws it. There is no way to make a
//   `throw` wait, so the setter destroys what is still open synchronously (sockets are closed at once, which
//   the server treats as a rollback).
// Resources are still closed by their middleware's own `after`/`onError` on the ordinary paths, in Middy's onion
// order; the scope only runs what those left open. Closing is idempotent.
import type { Request } from "@middy/core";

export type InvocationEnd =
	/** The handler and the after chain succeeded. */
	| { kind: "success" }
	/** Middy's early timeout fired while the handler was still running. */
	| { kind: "timeout"; error: unknown }
	/** The handler, a before or an after threw. */
	| { kind: "error"; error: unknown }
	/** A middleware returned early: after (and onError) middlewares were skipped. */
	| { kind: "early-response" };

export interface InvocationResource {
	/** For reports: which middleware owns it. */
	readonly name: string;
	/** Graceful end: commit or roll back, release, wait for background work. Called at most once. */
	close(end: InvocationEnd): Promise<void> | void;
	/**
	 * Immediate, synchronous teardown (destroy sockets, abort requests), for when Middy leaves no chance to wait.
	 * Called at most once, and never after `close` has started.
	 */
	destroy(reason: unknown): void;
}

interface TrackedResource {
	resource: InvocationResource;
	state: "open" | "closing" | "closed";
	closing?: Promise<void>;
}

// Versioned and global (Symbol.for), so that two copies of this package in one bundle share one scope per
// request instead of each trapping `request.response` on its own.
const SCOPE = Symbol.for("@middy-conn/lifecycle/scope@1");

type RequestWithScope = Request & { [SCOPE]?: InvocationScope };

/** True for the TimeoutError that Middy's `timeoutEarlyInMillis` throws into `onError`. */
export const isMiddyTimeout = (error: unknown): boolean =>
	error instanceof Error &&
	error.name === "TimeoutError" &&
	(error.cause as { package?: string } | undefined)?.package === "@middy/core";

/** How an invocation ended, from the error Middy handed to `onError` (undefined: success). */
export const invocationEndFromError = (error: unknown): InvocationEnd =>
	error === undefined || error === null
		? { kind: "success" }
		: isMiddyTimeout(error)
			? { kind: "timeout", error }
			: { kind: "error", error };

export class InvocationScope {
	readonly #resources: TrackedResource[] = [];
	readonly #request: Request;
	// Created on first use: most invocations never ask for the signal, and an AbortController is not free.
	#abort: AbortController | undefined;
	#ended: InvocationEnd | undefined;

	// State behind the request's `response` and `error` accessors (see the top of this file).
	#response: unknown;
	#settling: Promise<unknown> | undefined;
	#error: unknown;
	#errorAssignments: number;

	// One pair of accessor functions for every request, reading their state from the request's scope: defining
	// fresh closures per request costs about twice as much, on every invocation.
	static readonly #accessors: PropertyDescriptorMap = {
		response: {
			configurable: true,
			enumerable: true,
			get(this: RequestWithScope) {
				const scope = this[SCOPE] as InvocationScope;
				return scope.#settling ?? scope.#response;
			},
			set(this: RequestWithScope, next: unknown) {
				(this[SCOPE] as InvocationScope).#onResponseAssigned(next);
			},
		},
		error: {
			configurable: true,
			enumerable: true,
			get(this: RequestWithScope) {
				return (this[SCOPE] as InvocationScope).#error;
			},
			set(this: RequestWithScope, next: unknown) {
				(this[SCOPE] as InvocationScope).#onErrorAssigned(next);
			},
		},
	};

	constructor(request: Request) {
		this.#request = request;
		this.#response = request.response;
		this.#error = request.error;
		// A scope created during the onError phase has already seen Middy's first assignment.
		this.#errorAssignments = request.error === undefined || request.error === null ? 0 : 1;
		(request as RequestWithScope)[SCOPE] = this;
		Object.defineProperties(request, InvocationScope.#accessors);
	}

	/** Aborted when the invocation ends (on any path), so work it started does not outlive it. */
	get signal(): AbortSignal {
		if (!this.#abort) {
			this.#abort = new AbortController();
			if (this.#ended) this.#abort.abort(this.#ended.kind);
		}
		return this.#abort.signal;
	}

	/** How the invocation ended, once it has (undefined while it runs). */
	get ended(): InvocationEnd | undefined {
		return this.#ended;
	}

	/** Registers a resource. Returns a function that closes it (idempotent), for the middleware's after/onError. */
	add(resource: InvocationResource): (end: InvocationEnd) => Promise<void> {
		const tracked: TrackedResource = { resource, state: "open" };
		this.#resources.push(tracked);
		return (end) => this.#close(tracked, end);
	}

	/** Closes every resource still open, newest first (onion order). Never rejects; errors are collected. */
	async closeAll(end: InvocationEnd): Promise<unknown[]> {
		this.#markEnded(end);
		const errors: unknown[] = [];
		for (const tracked of [...this.#resources].reverse()) {
			try {
				await this.#close(tracked, end);
			} catch (error) {
				errors.push(error);
			}
		}
		return errors;
	}

	/** Synchronously destroys every resource not yet closing. */
	destroyAll(reason: unknown): void {
		this.#markEnded({ kind: "error", error: reason });
		for (const tracked of [...this.#resources].reverse()) {
			if (tracked.state !== "open") continue;
			tracked.state = "closed";
			try {
				tracked.resource.destroy(reason);
			} catch {
				// destroy is best effort by contract; one failing must not keep the others open
			}
		}
	}

	#markEnded(end: InvocationEnd) {
		this.#ended ??= end;
		if (this.#abort && !this.#abort.signal.aborted) this.#abort.abort(end.kind);
	}

	#close(tracked: TrackedResource, end: InvocationEnd): Promise<void> {
		if (tracked.state === "closed") return Promise.resolve();
		if (tracked.closing) return tracked.closing;
		tracked.state = "closing";
		tracked.closing = (async () => {
			try {
				await tracked.resource.close(end);
			} finally {
				tracked.state = "closed";
			}
		})();
		return tracked.closing;
	}

	#hasOpenResources() {
		return this.#resources.some((tracked) => tracked.state !== "closed");
	}

	#onResponseAssigned(next: unknown) {
		this.#response = next;
		const request = this.#request as Request & { earlyResponse?: unknown };
		// Middy's short circuit: `request.response = request.earlyResponse`, then `return request.response`.
		if (this.#settling || !("earlyResponse" in request) || request.earlyResponse !== next) return;
		if (!this.#hasOpenResources()) return;
		const error = this.#error;
		const inErrorPhase = error !== undefined && error !== null;
		// An onError that answers (say 500 or 504) ends an invocation that failed: keep the failure's kind, so that a
		// timeout still destroys a busy connection instead of waiting for it.
		const end: InvocationEnd = inErrorPhase ? invocationEndFromError(error) : { kind: "early-response" };
		this.#settling = this.closeAll(end).then(() => {
			this.#settling = undefined;
			// In the onError phase Middy throws the error when the early response is undefined; keep that.
			if (inErrorPhase && this.#response === undefined) throw this.#error;
			return this.#response;
		});
	}

	#onErrorAssigned(next: unknown) {
		const previous = this.#error;
		this.#error = next;
		this.#errorAssignments += 1;
		// Middy assigns request.error once when the onError chain starts, and again only when an onError threw: it
		// rethrows at once and the remaining onErrors (maybe ours) never run. We cannot make a throw wait, so
		// whatever is still open is destroyed now. Middy's own reassignment is recognisable: the thrown error is the
		// same one (rethrown), or Middy has just set its `originalError` to the previous error (Middy 7), or it is
		// not an object at all. A middleware that replaces request.error with an error of its own (a mapping, say)
		// is none of these, and the chain goes on to our onError, which closes gracefully.
		if (this.#errorAssignments < 2 || !this.#hasOpenResources()) return;
		const rethrown =
			next === previous ||
			next === null ||
			typeof next !== "object" ||
			(next as { originalError?: unknown }).originalError === previous;
		if (rethrown) this.destroyAll(next);
	}
}

/** The scope of this invocation, created by the first middleware that asks. Lives on the request, never in module scope. */
export const invocationScope = (request: Request): InvocationScope => {
	return (request as RequestWithScope)[SCOPE] ?? new InvocationScope(request);
};

/**
 * Milliseconds until `deadline` for this invocation: Lambda's remaining time minus `reserveMs`, or
 * `fallbackMs` where the context has no clock (tests, local runs).
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
