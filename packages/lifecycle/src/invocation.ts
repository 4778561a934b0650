// One Lambda invocation, as the middlewares of middy-conn share it: its resources (a database connection, the
// requests of an HTTP pool), its background tasks (`context.waitUntil`), and its end.
//
// An invocation is open, then ending, then ended:
//
//   open ──(teardown begins)──> ending ──(every resource closed)──> ended
//
// Teardown begins on whichever comes first of: one of our middlewares' `after` or `onError`; Middy returning an
// early response (which skips them); the end of a streamed response body (streaming mode runs the `after`s
// before the body is written). An `onError` that throws leaves no time: everything still open is destroyed at
// once (see middy-request.ts for how each of these is seen).
//
// The rules it keeps, on every path:
// - Background tasks first, connections after. Before a resource is closed the background tasks are awaited
//   (within their deadline): a task may use every resource of the invocation. Resources close in the reverse of
//   the order their middlewares' `before`s ran (Middy's onion order), each in its own middleware's `after` or
//   `onError` when Middy runs it, the rest together when Middy skips them.
// - Nothing opened late is left open. A resource is registered in its middleware's `before`, before anything can
//   use it, so that teardown closes it even when it was first used during teardown (by a background task). Once
//   closed, it refuses to be used; once the invocation has ended, `waitUntil` refuses new tasks.
// - Unfinished work is never committed. If work of the invocation (a statement, a request) was in flight when
//   teardown began and is not a background task's, the handler did not finish (Middy's timeoutEarlyResponse can
//   answer while it still runs): the end says `unfinished`, and a resource rolls back rather than commit.
// - A timeout is acted on when Middy raises it, before any `onError`: what the handler left running is stopped
//   (`interrupt`) and the background tasks are aborted; nothing of the invocation waits behind it any more.
//
// All of it lives on the Middy request, under a symbol: Lambda Managed Instances run many invocations at once in
// one process, and nothing of one invocation may sit in module scope.
import { Readable } from "node:stream";
import type { ReadableStream } from "node:stream/web";
import type { Request } from "@middy/core";
import {
	type BackgroundTaskCounts,
	BackgroundTasks,
	taskDeadlineError,
	type WaitUntil,
} from "./background-tasks.ts";
import { remainingTimeInMillis } from "./deadline.ts";
import { lifecycleError, lifecycleErrorCodes } from "./lifecycle-errors.ts";
import type { Logger } from "./logger.ts";
import { isMiddyTimeout, type MiddyRequestObserver, observeMiddyRequest } from "./middy-request.ts";
import { type BodyEnd, guardBody, streamedBody } from "./response-body.ts";

export type EndKind =
	/** The handler returned and the `after`s ran. */
	| "success"
	/** The handler, a `before`, an `after` or the response body failed. */
	| "error"
	/** Middy's early timeout fired while the handler was still running. */
	| "timeout"
	/** A middleware answered early: the handler (or the `after`s) did not run to their end. */
	| "early-response";

export interface InvocationEnd {
	readonly kind: EndKind;
	/** The invocation's error, for "error" and "timeout". */
	readonly error?: unknown;
	/**
	 * Work of the invocation was still in flight when teardown began (or the invocation timed out): the handler
	 * did not finish. Roll back, never commit.
	 */
	readonly unfinished: boolean;
}

/** Something a middleware opens for one invocation and must close before Lambda freezes the process. */
export interface InvocationResource {
	/** For logs: which middleware owns it. */
	readonly name: string;
	/** True while work is in flight on it: a statement running or queued, a request waiting for its response. */
	busy(): boolean;
	/**
	 * Stops the work in flight, now (Middy's timeout, the background tasks' deadline): abort requests, destroy a
	 * busy connection (and stop its statement on the server). Synchronous; what it starts, `close` awaits.
	 */
	interrupt(reason: Error): void;
	/** The graceful end: commit (only for a finished success) or roll back, release or close. Called once. */
	close(end: InvocationEnd): Promise<void> | void;
	/** Immediate, synchronous teardown, when Middy leaves no time to wait. Called once, instead of `close`. */
	destroy(reason: Error): void;
}

/** What a middleware holds for its resource: `end()` from its `after` and `onError`. */
export interface ResourceHandle {
	/**
	 * Ends the invocation's use of this resource (after the background tasks). Idempotent. Returns nothing when
	 * there is nothing to wait for, so that Middy does not await. Rejects only on success, when the resource
	 * could not keep the invocation's work (a failed COMMIT): the invocation must fail.
	 */
	end(): Promise<void> | undefined;
}

export interface InvocationOptions {
	logger: Logger;
	/** At most this long (ms) for the background tasks. */
	waitUntilTimeout: number;
	/** Leave this much (ms) of Lambda's remaining time when waiting for background tasks. */
	waitUntilReserve: number;
}

export type InvocationPhase = "open" | "ending" | "ended";

interface Entry {
	readonly resource: InvocationResource;
	state: "open" | "closing" | "closed";
	closing: Promise<void> | undefined;
}

const isBusy = (entry: Entry): boolean => entry.state === "open" && entry.resource.busy();

const taskAfterEnd = () =>
	lifecycleError(
		"context.waitUntil was called after the invocation ended",
		lifecycleErrorCodes.invocationEnded,
	);

const kInvocation = Symbol.for("@middy-conn/lifecycle/invocation@2");

type WithInvocation = Request & { [kInvocation]?: Invocation };

export class Invocation implements MiddyRequestObserver {
	readonly #request: Request;
	readonly #entries: Entry[] = [];
	#phase: InvocationPhase = "open";
	#logger: Logger;
	#waitUntilTimeout: number;
	#waitUntilReserve: number;
	#tasks: BackgroundTasks | undefined;
	/** performance.now() instant after which background tasks are aborted (set when teardown begins). */
	#tasksDeadline: number | undefined;
	/** How long the tasks were given, for the deadline's error message. */
	#tasksWaitMs = 0;
	#inErrorPhase = false;
	/** Middy's request is observed (middy-request.ts) from the first use of anything of the invocation on. */
	#observing = false;
	/** Middy's TimeoutError, from the moment Middy raised it. */
	#timeout: unknown;
	/** Decided once, when teardown begins (see the top of this file). */
	#unfinished: boolean | undefined;
	/** Background tasks were aborted at their deadline: their work did not finish either. */
	#tasksAborted = false;
	/** The response streams a body, and teardown waits for its end (streaming mode). */
	#bodyPending = false;
	/** How the invocation ends when the body ends with its last byte ("success" or "early-response"). */
	#bodyEndKind: EndKind = "success";
	/** The teardown a body's end started, shared by every guarded body. */
	#bodyTeardown: Promise<void> | undefined;
	/** The body streams handed to Middy in place of the response's own. */
	readonly #guarded: unknown[] = [];

	private constructor(request: Request, options: InvocationOptions) {
		this.#request = request;
		this.#logger = options.logger;
		this.#waitUntilTimeout = options.waitUntilTimeout;
		this.#waitUntilReserve = options.waitUntilReserve;
	}

	/**
	 * Something of the invocation is about to be used (a connection opened, a request sent, a task handed over),
	 * or a middleware wants to hear about every path (its stats): from now on Middy's control flow is observed.
	 * Until then nothing can be left open, and an invocation that uses nothing does not pay for the observation
	 * (accessors defined on the request: most of what an untouched middleware costs).
	 */
	inUse(): void {
		if (this.#observing) return;
		this.#observing = true;
		const error = this.#request.error;
		observeMiddyRequest(this.#request, this);
		// First used in the onError chain: Middy's first assignment of request.error has already happened.
		if (error !== undefined && error !== null) this.errorPhase(error);
	}

	/**
	 * The invocation of this Middy request, created by the first middleware that asks (in its `before`). Later
	 * middlewares can only tighten the background tasks' limits.
	 */
	static of(request: Request, options: InvocationOptions): Invocation {
		const holder = request as WithInvocation;
		const existing = holder[kInvocation];
		if (!existing) {
			const created = new Invocation(request, options);
			holder[kInvocation] = created;
			return created;
		}
		existing.limitBackgroundTasks(options);
		return existing;
	}

	/**
	 * Tightens the background tasks' limits (a later middleware's options). Public, like everything `of` uses on an
	 * existing invocation: it may come from another copy of this package in the same bundle.
	 */
	limitBackgroundTasks(options: Pick<InvocationOptions, "waitUntilTimeout" | "waitUntilReserve">): void {
		this.#waitUntilTimeout = Math.min(this.#waitUntilTimeout, options.waitUntilTimeout);
		this.#waitUntilReserve = Math.max(this.#waitUntilReserve, options.waitUntilReserve);
	}

	get phase(): InvocationPhase {
		return this.#phase;
	}

	/** `context.waitUntil`: bound, so that it can be handed around. */
	readonly waitUntil: WaitUntil = (task) => {
		this.inUse();
		const tasks = this.#backgroundTasks();
		if (this.#phase === "ended") tasks.refuse(taskAfterEnd);
		tasks.waitUntil(task);
	};

	/** How the background tasks have ended so far. */
	get backgroundTasks(): BackgroundTaskCounts {
		return this.#tasks?.counts ?? { finished: 0, failed: 0, aborted: 0 };
	}

	#backgroundTasks(): BackgroundTasks {
		this.#tasks ??= new BackgroundTasks(this.#logger);
		return this.#tasks;
	}

	/** Registers a resource, in its middleware's `before`. */
	register(resource: InvocationResource): ResourceHandle {
		const entry: Entry = { resource, state: "open", closing: undefined };
		this.#entries.push(entry);
		return { end: () => this.#endFromMiddleware(entry) };
	}

	// --- The moments Middy tells us about (middy-request.ts) ---

	errorPhase(error: unknown): void {
		this.#inErrorPhase = true;
		if (!isMiddyTimeout(error)) return;
		// Middy's early timeout: the handler is still running and the deadline is a few ms away.
		this.#timeout = error;
		const reason = lifecycleError(
			"The invocation timed out (Middy's timeoutEarlyInMillis)",
			lifecycleErrorCodes.timedOut,
			error,
		);
		this.#tasks?.abort(reason, "because the invocation timed out");
		this.#interruptAll(reason);
	}

	rethrow(error: unknown): void {
		this.#destroyAll(
			lifecycleError(
				"An onError middleware threw: the invocation was torn down at once",
				lifecycleErrorCodes.tornDown,
				error,
			),
			"because an onError middleware threw (no time was left to wait for them)",
		);
	}

	/** Middy leaves no time to wait: background tasks aborted, every resource destroyed, now. */
	#destroyAll(reason: Error, why: string): void {
		this.#tasks?.abort(reason, why);
		for (const entry of this.#entries) {
			if (entry.state !== "open") continue;
			entry.state = "closed";
			try {
				entry.resource.destroy(reason);
			} catch (destroyError) {
				this.#logger.error(`${entry.resource.name}: destroy failed`, { error: destroyError });
			}
		}
		this.#finished();
	}

	earlyResponse(): Promise<void> | undefined {
		if (!this.#entries.some((entry) => entry.state === "open")) return undefined;
		const kind: EndKind = this.#timeout ? "timeout" : this.#inErrorPhase ? "error" : "early-response";
		if (this.#deferToBody(kind)) return undefined;
		// An early response keeps the invocation's work (a COMMIT): if that fails, so does the invocation.
		return this.#closeAll(kind).then((errors) => {
			if (kind === "early-response" && errors.length > 0) throw errors[0];
		});
	}

	// --- Teardown ---

	#endFromMiddleware(entry: Entry): Promise<void> | undefined {
		if (entry.state === "closed") return undefined;
		if (entry.closing) return entry.closing;
		// Unobserved (nothing was used): Middy's error, if any, is read from the request now.
		if (!this.#observing && !this.#inErrorPhase) {
			const error = this.#request.error;
			if (error !== undefined && error !== null) this.errorPhase(error);
		}
		const kind: EndKind = this.#timeout ? "timeout" : this.#inErrorPhase ? "error" : "success";
		if (this.#deferToBody(kind)) return undefined;
		if (this.#phase === "open") {
			if ((this.#tasks?.pending ?? 0) > 0 || this.#entries.some(isBusy)) {
				return this.#begin().then(() => this.#closeAfterTasks(entry, kind));
			}
			// Nothing in flight and no background task (the common case): nothing to decide, nothing to wait for.
			this.#phase = "ending";
			this.#unfinished = this.#timeout !== undefined;
		}
		if ((this.#tasks?.pending ?? 0) > 0) return this.#closeAfterTasks(entry, kind);
		const closed = this.#close(entry, kind);
		if (!closed) return this.#maybeFinished();
		return closed.finally(() => this.#maybeFinished());
	}

	/**
	 * Streaming mode: while the response streams a body, every resource stays open until that body ends. Called at
	 * each trigger: the response may have changed since (an `after` wrapped the body, or replaced the response).
	 */
	#deferToBody(kind: EndKind): boolean {
		if (kind !== "success" && kind !== "early-response") {
			this.#bodyPending = false;
			return false;
		}
		const body = streamedBody(this.#request.response);
		if (!body) {
			// No body to wait for (any more: a response that streamed one may have been replaced).
			this.#bodyPending = false;
			return false;
		}
		if (!this.#bodyPending) this.#bodyEndKind = kind;
		this.#bodyPending = true;
		const stream = body.get();
		if (this.#guarded.includes(stream)) return true;
		this.#request.response = body.set(this.#guard(stream));
		return true;
	}

	/** A body of its own, or one that wraps the body guarded before: whichever ends first ends the invocation. */
	#guard(stream: Readable | ReadableStream): Readable {
		const guarded = guardBody(stream, (end) => this.#onBodyEnd(end));
		this.#guarded.push(guarded);
		return guarded;
	}

	responseReplaced(next: unknown): unknown {
		// Only while a streamed body holds the teardown: a middleware further out (whose `after` runs after ours)
		// replaced the response. Whatever body Middy now writes must end the invocation. (`undefined` is Middy
		// entering its onError chain, where our onError ends it.)
		if (!this.#bodyPending || next === undefined) return next;
		const body = streamedBody(next);
		if (body) {
			const stream = body.get();
			return this.#guarded.includes(stream) ? next : body.set(this.#guard(stream));
		}
		// A response without a stream: its string body is written through a stream of ours.
		if (typeof next === "string") return this.#guard(Readable.from([next]));
		const http = next as { statusCode?: unknown; body?: unknown } | null;
		const bytes = http?.statusCode ? (http.body ?? "") : undefined;
		if (typeof bytes === "string" || Buffer.isBuffer(bytes)) {
			(http as { body: unknown }).body = this.#guard(Readable.from([bytes]));
			return next;
		}
		// Nothing Middy can stream (it will fail the invocation): nothing would ever end it, so end it now.
		this.#bodyPending = false;
		this.#destroyAll(
			lifecycleError(
				"A middleware replaced the streamed response with one that cannot be streamed: the invocation was torn down at once",
				lifecycleErrorCodes.tornDown,
			),
			"because the streamed response was replaced with one that cannot be streamed",
		);
		return next;
	}

	/**
	 * A guarded body ended. One teardown for all of them: a body replaced after its (short) source had ended may
	 * have started it, and the body Middy does write must not end before that teardown has.
	 */
	#onBodyEnd(end: BodyEnd): Promise<void> {
		if (this.#bodyTeardown) return this.#bodyTeardown;
		if (!this.#bodyPending) return Promise.resolve();
		this.#bodyPending = false;
		this.#bodyTeardown = this.#closeAll(
			end.ok ? this.#bodyEndKind : "error",
			end.ok ? undefined : end.error,
		).then((errors) => {
			if (errors.length > 0) throw errors[0];
		});
		return this.#bodyTeardown;
	}

	/** Teardown begins: decide whether the handler finished, then wait for the background tasks. */
	async #begin(): Promise<void> {
		if (this.#phase === "open") {
			this.#phase = "ending";
			const busyAtStart = this.#entries.some(isBusy);
			const tasksAtStart = (this.#tasks?.pending ?? 0) > 0;
			await this.#drainTasks();
			// Work in flight when teardown began belongs to the handler unless background tasks were running too;
			// then, what is still in flight once they have all settled is the handler's.
			this.#unfinished =
				this.#timeout !== undefined ||
				this.#tasksAborted ||
				(busyAtStart && (!tasksAtStart || this.#entries.some(isBusy)));
			return;
		}
		await this.#drainTasks();
	}

	async #drainTasks(): Promise<void> {
		const tasks = this.#tasks;
		if (!tasks || tasks.pending === 0) return;
		if (this.#tasksDeadline === undefined) {
			const waitMs = Math.min(
				remainingTimeInMillis(this.#request.context, this.#waitUntilReserve, this.#waitUntilTimeout),
				this.#waitUntilTimeout,
			);
			this.#tasksDeadline = performance.now() + waitMs;
			this.#tasksWaitMs = waitMs;
		}
		if (await tasks.settled(this.#tasksDeadline)) return;
		const reason = taskDeadlineError(this.#tasksWaitMs);
		this.#tasksAborted = true;
		tasks.abort(reason, "at the wait deadline");
		this.#interruptAll(reason);
	}

	#interruptAll(reason: Error) {
		for (const entry of this.#entries) {
			if (entry.state === "closed") continue;
			try {
				entry.resource.interrupt(reason);
			} catch (error) {
				this.#logger.error(`${entry.resource.name}: interrupt failed`, { error });
			}
		}
	}

	async #closeAfterTasks(entry: Entry, kind: EndKind): Promise<void> {
		await this.#drainTasks();
		try {
			await this.#close(entry, kind);
		} finally {
			await this.#maybeFinished();
		}
	}

	#close(entry: Entry, kind: EndKind, error: unknown = this.#request.error): Promise<void> | undefined {
		if (entry.state === "closed") return undefined;
		if (entry.closing) return entry.closing;
		entry.state = "closing";
		const end: InvocationEnd = {
			kind,
			error: kind === "success" || kind === "early-response" ? undefined : error,
			unfinished: (this.#unfinished ?? this.#timeout !== undefined) || this.#tasksAborted,
		};
		let closed: Promise<void> | void;
		try {
			closed = entry.resource.close(end);
		} catch (closeError) {
			closed = Promise.reject(closeError);
		}
		if (!closed) {
			entry.state = "closed";
			return undefined;
		}
		entry.closing = closed.finally(() => {
			entry.state = "closed";
		});
		return entry.closing;
	}

	/** Closes every resource still open, newest first, each after the background tasks. Collects errors. */
	async #closeAll(kind: EndKind, error?: unknown): Promise<unknown[]> {
		const errors: unknown[] = [];
		try {
			await this.#begin();
			for (let i = this.#entries.length - 1; i >= 0; i--) {
				const entry = this.#entries[i] as Entry;
				if (entry.state === "closed") continue;
				await this.#drainTasks();
				try {
					await this.#close(entry, kind, error ?? this.#request.error);
				} catch (closeError) {
					errors.push(closeError);
				}
			}
		} finally {
			await this.#maybeFinished();
		}
		// An answer (success, early response) fails with its close errors; a failure keeps its own error.
		if (kind === "error" || kind === "timeout") {
			for (const closeError of errors)
				this.#logger.warn("@middy-conn: cleanup failed", { error: closeError });
		}
		return errors;
	}

	#maybeFinished(): Promise<void> | undefined {
		if (this.#phase === "ended" || this.#bodyPending) return undefined;
		if (this.#entries.some((entry) => entry.state !== "closed")) return undefined;
		// Tasks handed over while the last resources closed are waited for too (within the same deadline).
		if ((this.#tasks?.pending ?? 0) > 0) return this.#drainTasks().then(() => this.#maybeFinished());
		this.#finished();
		return undefined;
	}

	#finished() {
		this.#phase = "ended";
		this.#bodyPending = false;
		this.#tasks?.refuse(taskAfterEnd);
	}
}
