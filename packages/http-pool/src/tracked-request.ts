// Use: one request of the invocation, between the caller's handler and the shared dispatcher.
//
// Each request dispatched through `context.http` is wrapped in a TrackedRequest, so that when the invocation ends
// its leftovers can be dealt with before Lambda freezes the process:
// - a response whose body was left unread holds its connection (a pool of one stalls). A small remainder is read
//   and discarded, so that the socket goes back to the pool; a large one is aborted (the socket is closed);
// - a request still waiting for its response is aborted, or it would hang across the freeze and be answered
//   (or fail) in some later invocation;
// - in both cases the caller's side (the body stream, the pending promise) fails with a clear error instead of
//   hanging.
// The caller never gets undici's controller itself: it gets a guard that forwards to it until the request is
// taken over, so that destroying the caller's body stream (which aborts the controller) cannot turn a dump
// into a closed socket.
import type { Duplex } from "node:stream";
import type { Dispatcher } from "undici";
import { errorCodes, httpPoolError } from "./errors.ts";
import type { RequestTracker } from "./request-tracker.ts";
import { translateNetworkError, type WireState } from "./retry.ts";
import type { RequestAttribution } from "./telemetry.ts";

type DispatchHandler = Dispatcher.DispatchHandler;
type DispatchController = Dispatcher.DispatchController;
type DispatchOptions = Dispatcher.DispatchOptions;
type IncomingHttpHeaders = Parameters<NonNullable<DispatchHandler["onResponseStart"]>>[2];

/** Bodies with at most this much left to read are drained at the end of the invocation; larger ones are aborted. */
export const dumpMaxBytes = 256 * 1024;

/** The controller the caller's handler sees: undici's, until the request is taken over at the invocation's end. */
class GuardedController implements DispatchController {
	inner: DispatchController;
	detached = false;

	constructor(inner: DispatchController) {
		this.inner = inner;
	}

	get aborted() {
		return this.inner.aborted;
	}
	get paused() {
		return this.inner.paused;
	}
	get reason() {
		return this.inner.reason;
	}
	get rawHeaders(): DispatchController["rawHeaders"] {
		return this.inner.rawHeaders;
	}
	set rawHeaders(value: DispatchController["rawHeaders"]) {
		this.inner.rawHeaders = value;
	}
	get rawTrailers(): DispatchController["rawTrailers"] {
		return this.inner.rawTrailers;
	}
	set rawTrailers(value: DispatchController["rawTrailers"]) {
		this.inner.rawTrailers = value;
	}
	abort(reason: Error) {
		if (!this.detached) this.inner.abort(reason);
	}
	pause() {
		if (!this.detached) this.inner.pause();
	}
	resume() {
		if (!this.detached) this.inner.resume();
	}
}

export type Phase = "waiting" | "streaming" | "done";

/** One request of the invocation, between the caller's handler and the shared dispatcher. */
export class TrackedRequest implements DispatchHandler, RequestAttribution, WireState {
	readonly #handler: DispatchHandler;
	readonly #opts: DispatchOptions;
	readonly #tracker: RequestTracker;
	#guard: GuardedController | undefined;
	#phase: Phase = "waiting";
	/** Set when the request was aborted before undici handed it a controller: abort it as soon as it does. */
	#pendingAbort: Error | undefined;
	/** The caller's handler has had its final callback (from us); what undici sends from now on is ours. */
	#detached = false;
	/** Bytes discarded since the end of the invocation took the body over. */
	#dumped: number | undefined;
	#contentLength: number | undefined;
	#received = 0;
	#responseStarted = false;
	/** Made when someone waits for the request (end of the invocation, close()); most requests end unobserved. */
	#settled: Promise<void> | undefined;
	#resolveSettled: (() => void) | undefined;
	attributed = false;
	headersWritten = false;
	/** What the end of the invocation did with it, if it was still open then. */
	leftover: "dumped" | "aborted" | undefined;

	constructor(handler: DispatchHandler, opts: DispatchOptions, tracker: RequestTracker) {
		this.#handler = handler;
		this.#opts = opts;
		this.#tracker = tracker;
	}

	/** Resolves when undici is done with the request (completed, failed or aborted). */
	get settled(): Promise<void> {
		if (this.#phase === "done") return Promise.resolve();
		this.#settled ??= new Promise((resolve) => {
			this.#resolveSettled = resolve;
		});
		return this.#settled;
	}

	get phase(): Phase {
		return this.#phase;
	}

	get responseStarted(): boolean {
		return this.#responseStarted;
	}

	// RequestAttribution (telemetry.ts)
	onAttempt() {
		this.attributed = true;
	}
	onSent(newConnection: boolean) {
		this.headersWritten = true;
		this.#tracker.countSent(newConnection);
	}

	#controllerFor(controller: DispatchController): GuardedController {
		if (this.#guard) this.#guard.inner = controller;
		else this.#guard = new GuardedController(controller);
		return this.#guard;
	}

	#finish() {
		if (this.#phase === "done") return;
		this.#phase = "done";
		this.#tracker.untrack(this);
		this.#resolveSettled?.();
	}

	// DispatchHandler: called by undici (through the retry interceptor), forwarded to the caller's handler.
	onRequestStart(controller: DispatchController, context: unknown) {
		const guard = this.#controllerFor(controller);
		if (this.#pendingAbort) {
			controller.abort(this.#pendingAbort);
			return;
		}
		if (!this.#detached) this.#handler.onRequestStart?.(guard, context);
	}

	onRequestUpgrade(
		controller: DispatchController,
		statusCode: number,
		headers: IncomingHttpHeaders,
		socket: Duplex,
	) {
		// The socket now belongs to the caller, outside the pool.
		const detached = this.#detached;
		this.#finish();
		if (!detached)
			this.#handler.onRequestUpgrade?.(this.#controllerFor(controller), statusCode, headers, socket);
	}

	onResponseStarted() {
		if (!this.#detached) this.#handler.onResponseStarted?.();
	}

	onResponseStart(
		controller: DispatchController,
		statusCode: number,
		headers: IncomingHttpHeaders,
		statusMessage?: string,
	) {
		const guard = this.#controllerFor(controller);
		if (statusCode >= 200) this.#responseStarted = true;
		if (statusCode >= 200 && this.#phase !== "done") {
			this.#phase = "streaming";
			const length = Number(headers["content-length"]);
			this.#contentLength = Number.isFinite(length) && length >= 0 ? length : undefined;
		}
		if (!this.#detached) this.#handler.onResponseStart?.(guard, statusCode, headers, statusMessage);
	}

	onResponseData(controller: DispatchController, chunk: Buffer) {
		this.#received += chunk.length;
		if (this.#dumped !== undefined) {
			this.#dumped += chunk.length;
			if (this.#dumped > dumpMaxBytes) {
				controller.abort(this.#endError("its unread body was larger than could be discarded"));
			}
			return;
		}
		if (!this.#detached) this.#handler.onResponseData?.(this.#controllerFor(controller), chunk);
	}

	onResponseEnd(controller: DispatchController, trailers: IncomingHttpHeaders) {
		const detached = this.#detached;
		this.#finish();
		if (!detached) this.#handler.onResponseEnd?.(this.#controllerFor(controller), trailers);
	}

	onResponseError(controller: DispatchController | null, error: Error) {
		const detached = this.#detached;
		const responseStarted = this.#phase === "streaming";
		this.#detached = true;
		this.#finish();
		if (detached) return;
		// After the first response byte an error is the body's; before it, a network error may need a clearer
		// message about whether the request reached the server.
		const translated = responseStarted ? error : translateNetworkError(error, this.#opts, this);
		this.#handler.onResponseError?.(
			controller ? this.#controllerFor(controller) : (null as unknown as DispatchController),
			translated,
		);
	}

	onBodySent(chunk: Buffer) {
		if (!this.#detached) (this.#handler as { onBodySent?: (chunk: Buffer) => void }).onBodySent?.(chunk);
	}

	onRequestSent() {
		if (!this.#detached) this.#handler.onRequestSent?.();
	}

	/** Fails the caller's side now, and lets what undici sends later come to us only. */
	#detach(reason: Error) {
		if (this.#detached) return;
		this.#detached = true;
		if (this.#guard) this.#guard.detached = true;
		try {
			this.#handler.onResponseError?.(this.#guard as DispatchController, reason);
		} catch {
			// the caller's handler failing on its own error is not ours to report
		}
	}

	#endError(why: string, code: (typeof errorCodes)[keyof typeof errorCodes] = errorCodes.invocationEnded) {
		return httpPoolError(
			`${this.#opts.method} ${this.#opts.origin ?? ""}${this.#opts.path} was ${why}, when the invocation ended`,
			code,
		);
	}

	/** Aborts the request: its socket is closed, and the caller's promise or body stream fails with `reason`. */
	abort(reason: Error): void {
		if (this.#phase === "done") return;
		const guard = this.#guard;
		this.#detach(reason);
		// Still queued in the pool, undici has not handed out a controller yet: it is aborted as soon as it does.
		if (guard) guard.inner.abort(reason);
		else this.#pendingAbort = reason;
		// For the invocation the request is over now, whatever undici still reports (to us only: detached).
		this.#finish();
	}

	/**
	 * At the end of the invocation: a body being received is drained (if small) so that the connection is
	 * reused, or aborted; a request with no response yet is aborted. `settled` tells when a drain is over.
	 */
	cleanUp(reason: Error): "dumped" | "aborted" | undefined {
		if (this.#phase === "done") return undefined;
		const remaining = this.#contentLength === undefined ? undefined : this.#contentLength - this.#received;
		if (
			this.#phase === "streaming" &&
			this.#guard &&
			(remaining === undefined || remaining <= dumpMaxBytes)
		) {
			this.#dumped = 0;
			this.#detach(reason);
			// The caller's stream may have paused the connection (backpressure): it has no reader any more.
			this.#guard.inner.resume();
			this.leftover = "dumped";
		} else {
			this.abort(reason);
			this.leftover = "aborted";
		}
		return this.leftover;
	}
}
