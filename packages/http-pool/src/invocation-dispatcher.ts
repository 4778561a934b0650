// `context.http`: a Dispatcher that lives for one invocation and forwards to the shared one.
//
// The shared dispatcher (a pool of keep-alive connections) outlives invocations; what an invocation leaves open
// on it must not. Every request goes through the invocation's RequestTracker (request-tracker.ts), which the
// invocation's end drains or aborts (invocation.ts).
import { Dispatcher } from "undici";
import { errorCodes, httpPoolError } from "./errors.ts";
import type { RequestTracker } from "./request-tracker.ts";
import { type HttpPoolStats, kAttribution } from "./telemetry.ts";
import type { TrackedRequest } from "./tracked-request.ts";
import { asCurrentHandler, forLegacyHandler, tagDispatch } from "./undici-adapter.ts";

type DispatchHandler = Dispatcher.DispatchHandler;
type DispatchController = Dispatcher.DispatchController;
type DispatchOptions = Dispatcher.DispatchOptions;

/**
 * The per-invocation dispatcher behind `context.http`. Works with `context.http.request(...)`, and with
 * `undici.request(url, { dispatcher })` and `fetch(url, { dispatcher })`. It never closes the shared pool:
 * `close()` waits for this invocation's requests, `destroy()` aborts them.
 */
export class InvocationDispatcher extends Dispatcher {
	/** The shared dispatcher, looked up at the invocation's first request (not in `before`: untouched is cheap). */
	readonly #shared: () => Dispatcher;
	#dispatcher: Dispatcher | undefined;
	readonly #origin: string | undefined;
	readonly #tracker: RequestTracker;
	readonly #statsNow: () => HttpPoolStats;

	constructor(
		shared: () => Dispatcher,
		origin: string | undefined,
		tracker: RequestTracker,
		statsNow: () => HttpPoolStats,
	) {
		super();
		this.#shared = shared;
		this.#origin = origin;
		this.#tracker = tracker;
		this.#statsNow = statsNow;
	}

	/** This invocation's counters so far (connections opened and reused, requests, background tasks). */
	get invocationStats(): HttpPoolStats {
		return this.#statsNow();
	}

	override dispatch(opts: DispatchOptions, handler: DispatchHandler): boolean {
		// Handlers written for undici ≤ 7 (`onConnect`, `onHeaders`...), such as those of Node's own fetch, wrapped.
		const { handler: current, legacy } = asCurrentHandler(handler);
		let tracked: TrackedRequest | undefined;
		try {
			const forwarded: DispatchOptions = { ...opts, origin: this.#originFor(opts) };
			// undici ≤ 7 consumers cannot read HTTP/2 responses.
			if (legacy) forLegacyHandler(forwarded);
			tracked = this.#tracker.track(current, forwarded);
			tagDispatch(forwarded, kAttribution, tracked);
			// Once per invocation: a pool closed mid-invocation (closeHttpPools() in a SIGTERM handler) fails this
			// invocation's later requests rather than being replaced by a new pool that nobody would close.
			this.#dispatcher ??= this.#shared();
			return this.#dispatcher.dispatch(forwarded, tracked);
		} catch (error) {
			if (tracked) {
				tracked.onResponseError(null, error as Error);
				return false;
			}
			if (typeof current.onResponseError !== "function") throw error;
			current.onResponseError(null as unknown as DispatchController, error as Error);
			return false;
		}
	}

	#originFor(opts: DispatchOptions): string | URL {
		const given = opts.origin;
		if (given === undefined || given === null || given === "") {
			if (this.#origin) return this.#origin;
			throw httpPoolError(
				"The request has no origin: give one (undici.request(url), { origin, path }) or set httpPool({ origin })",
				errorCodes.originRequired,
			);
		}
		if (this.#origin && String(given) !== this.#origin && new URL(String(given)).origin !== this.#origin) {
			throw httpPoolError(
				`This context.http sends to ${this.#origin} only, not ${new URL(String(given)).origin}; use another httpPool() (contextKey) for it`,
				errorCodes.originMismatch,
			);
		}
		return given;
	}

	/** Waits for this invocation's open requests to settle. The shared pool stays open. */
	override close(): Promise<void>;
	override close(callback: () => void): void;
	override close(callback?: () => void): Promise<void> | void {
		const settled = this.#tracker.settled();
		if (!callback) return settled;
		settled.then(callback, callback);
	}

	/** Aborts this invocation's open requests. The shared pool stays open. */
	override destroy(): Promise<void>;
	override destroy(err: Error | null): Promise<void>;
	override destroy(callback: () => void): void;
	override destroy(err: Error | null, callback: () => void): void;
	override destroy(errOrCallback?: Error | null | (() => void), callback?: () => void): Promise<void> | void {
		const err = typeof errOrCallback === "function" ? null : errOrCallback;
		const done = typeof errOrCallback === "function" ? errOrCallback : callback;
		this.#tracker.abortAll(
			err ??
				httpPoolError(
					"context.http.destroy() aborted this invocation's requests",
					errorCodes.invocationEnded,
				),
			false,
		);
		const settled = this.#tracker.settled();
		if (!done) return settled;
		settled.then(done, done);
	}
}
