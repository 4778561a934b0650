// Drain: the requests an invocation has open, and what its end does with them.
import { settleWithin } from "@middy-conn/lifecycle";
import type { Dispatcher } from "undici";
import type { HttpPoolStats } from "./telemetry.ts";
import { TrackedRequest } from "./tracked-request.ts";

type DispatchHandler = Dispatcher.DispatchHandler;
type DispatchOptions = Dispatcher.DispatchOptions;

/** The requests an invocation has open, and its counters. */
export class RequestTracker {
	readonly #open = new Set<TrackedRequest>();
	readonly #stats: HttpPoolStats;
	/** The invocation, told before a request is sent (see Invocation.inUse). */
	readonly #invocation: { inUse(): void };
	/** Why new requests are refused, once the invocation has ended. */
	#closedBecause: (() => Error) | undefined;

	constructor(stats: HttpPoolStats, invocation: { inUse(): void }) {
		this.#stats = stats;
		this.#invocation = invocation;
	}

	get size(): number {
		return this.#open.size;
	}

	/** Requests with no response yet. */
	get waiting(): number {
		let waiting = 0;
		for (const tracked of this.#open) if (tracked.phase === "waiting") waiting++;
		return waiting;
	}

	track(handler: DispatchHandler, opts: DispatchOptions): TrackedRequest {
		if (this.#closedBecause) throw this.#closedBecause();
		this.#invocation.inUse();
		const tracked = new TrackedRequest(handler, opts, this);
		this.#open.add(tracked);
		return tracked;
	}

	untrack(tracked: TrackedRequest) {
		this.#open.delete(tracked);
	}

	countSent(newConnection: boolean) {
		this.#stats.requests++;
		if (newConnection) this.#stats.connectionsOpened++;
		else this.#stats.connectionsReused++;
	}

	/** Refuses requests from now on (a leaked promise of this invocation, running in a later one). */
	close(reason: () => Error) {
		this.#closedBecause ??= reason;
	}

	/** Waits until every request open now has settled. */
	async settled(): Promise<void> {
		await Promise.all([...this.#open].map((tracked) => tracked.settled));
	}

	/**
	 * Aborts every open request at once (early timeout, deadline, teardown; counted as leftovers), or on the
	 * handler's own `context.http.destroy()` (not counted).
	 */
	abortAll(reason: Error, leftovers = true): number {
		let aborted = 0;
		for (const tracked of [...this.#open]) {
			if (tracked.phase === "done") continue;
			tracked.abort(reason);
			aborted++;
		}
		if (leftovers) this.#stats.leftovers.aborted += aborted;
		return aborted;
	}

	/**
	 * Deals with what the invocation left open: small unread bodies are drained so their connections go back to
	 * the pool, everything else is aborted. Waits at most `waitMs` for the drains, then aborts what is left.
	 * Returns how many requests were still waiting for a response (the caller logs them).
	 */
	async cleanUp(reason: Error, waitMs: number): Promise<{ waiting: number }> {
		const open = [...this.#open];
		if (open.length === 0) return { waiting: 0 };
		let waiting = 0;
		for (const tracked of open) {
			if (tracked.phase === "waiting") waiting++;
			const outcome = tracked.cleanUp(reason);
			if (outcome) this.#stats.leftovers[outcome]++;
		}
		const drains = open.map((tracked) => tracked.settled);
		if (waitMs > 0) await settleWithin(Promise.all(drains), waitMs);
		// A drain that could not finish in time closes its socket instead: nothing may outlive the invocation.
		for (const tracked of open) {
			if (tracked.phase === "done") continue;
			tracked.abort(reason);
			if (tracked.leftover === "dumped") {
				this.#stats.leftovers.dumped--;
				this.#stats.leftovers.aborted++;
			}
		}
		return { waiting };
	}
}
