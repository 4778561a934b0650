// Close: everything one invocation owns in this middleware (its dispatcher, context.http; its open requests; its
// counters), as a resource of the invocation (@middy-conn/lifecycle), which decides when it ends.
//
// - When Middy raises its early timeout (or the background tasks reach their deadline), what is in flight is
//   aborted at once (`interrupt`): nothing of the invocation waits behind a request the handler left running.
// - The graceful end (after the background tasks, which may still be reading): new requests are refused (a
//   leaked promise would otherwise send from a frozen, then thawed, process); what the handler left open is
//   dealt with (small unread bodies drained so their sockets go back to the pool, the rest aborted); the
//   counters are reported.
// - The synchronous end (an onError threw): everything is aborted.
import type { Request } from "@middy/core";
import {
	type Invocation,
	type InvocationEnd,
	type InvocationResource,
	type Logger,
	remainingTimeInMillis,
} from "@middy-conn/lifecycle";
import { reportStats } from "@middy-conn/lifecycle/internal";
import type { Dispatcher } from "undici";
import { errorCodes, httpPoolError } from "./errors.ts";
import { InvocationDispatcher } from "./invocation-dispatcher.ts";
import { pkg, type ResolvedOptions } from "./options.ts";
import { RequestTracker } from "./request-tracker.ts";
import { emptyStats, type HttpPoolStats } from "./telemetry.ts";

/** How long the end of an invocation lets unread bodies drain before it aborts them instead. */
export const dumpWaitMs = 1_000;

const describeEnd = (end: InvocationEnd): string =>
	end.kind === "success"
		? "returned"
		: end.kind === "early-response"
			? "answered early"
			: end.kind === "timeout"
				? "timed out (Middy's timeoutEarlyInMillis)"
				: "failed";

export class HttpInvocation implements InvocationResource {
	readonly name = pkg;
	readonly dispatcher: InvocationDispatcher;
	readonly #invocation: Invocation;
	readonly #request: Request;
	readonly #options: ResolvedOptions;
	readonly #logger: Logger;
	readonly #stats: HttpPoolStats = emptyStats();
	readonly #tracker: RequestTracker;
	#reported = false;

	constructor(
		invocation: Invocation,
		request: Request,
		shared: () => Dispatcher,
		options: ResolvedOptions,
		logger: Logger,
	) {
		this.#invocation = invocation;
		this.#request = request;
		this.#options = options;
		this.#logger = logger;
		this.#tracker = new RequestTracker(this.#stats, invocation);
		this.dispatcher = new InvocationDispatcher(shared, options.origin, this.#tracker, () => this.stats());
	}

	/** A request is waiting for its response. (A body left unread is not work in flight: it is drained.) */
	busy(): boolean {
		return this.#tracker.waiting > 0;
	}

	interrupt(reason: Error): void {
		if (this.#tracker.size === 0) return;
		// The requests fail with this package's code for an ended invocation (the deadline keeps its own).
		const code = (reason as { code?: unknown }).code;
		this.#tracker.abortAll(
			code === errorCodes.deadline
				? reason
				: httpPoolError(reason.message, errorCodes.invocationEnded, reason, { end: "timeout" }),
		);
	}

	/**
	 * The graceful end. Never rejects: nothing here may turn the invocation's outcome into another one. Returns
	 * nothing when nothing is open and no stats are wanted (the common case), so that Middy does not await.
	 */
	close(end: InvocationEnd): Promise<void> | undefined {
		// Made only if a request is refused later: an Error (with its stack) per invocation is not free.
		let error: Error | undefined;
		const ended = () => {
			error ??= httpPoolError(`The invocation ${describeEnd(end)}`, errorCodes.invocationEnded, undefined, {
				end: end.kind,
			});
			return error;
		};
		this.#tracker.close(ended);
		if (this.#tracker.size === 0) return this.#report();
		return this.#closeOpen(end, ended);
	}

	async #closeOpen(end: InvocationEnd, ended: () => Error): Promise<void> {
		try {
			if (end.kind === "timeout") {
				this.#tracker.abortAll(ended());
			} else {
				const waitMs = Math.min(dumpWaitMs, remainingTimeInMillis(this.#request.context, 10, dumpWaitMs));
				const { waiting } = await this.#tracker.cleanUp(ended(), waitMs);
				if (waiting > 0) {
					this.#logger.warn(
						`${pkg}: ${waiting} request(s) still waiting for a response when the invocation ${describeEnd(end)} were aborted; await them, or hand them to context.waitUntil`,
					);
				}
			}
		} catch (error) {
			this.#logger.error(`${pkg}: cleanup at the end of the invocation failed`, { error });
		}
		await this.#report();
	}

	destroy(reason: Error): void {
		const error = httpPoolError("The invocation was torn down", errorCodes.invocationEnded, reason, {
			end: "error",
		});
		this.#tracker.close(() => error);
		this.#tracker.abortAll(error);
		this.#report()?.catch(() => {});
	}

	/** The counters so far: this middleware's requests, and the invocation's background tasks. */
	stats(): HttpPoolStats {
		const { connectionsOpened, connectionsReused, requests, leftovers } = this.#stats;
		return {
			connectionsOpened,
			connectionsReused,
			requests,
			leftovers: { ...leftovers },
			background: this.#invocation.backgroundTasks,
		};
	}

	#report(): Promise<void> | undefined {
		if (this.#reported) return undefined;
		this.#reported = true;
		if (!this.#options.logStats && !this.#options.onStats) return undefined;
		return this.#reportNow();
	}

	#reportNow(): Promise<void> {
		const { logStats, onStats, contextKey, origin } = this.#options;
		return reportStats(pkg, { logger: this.#logger, logStats, onStats }, this.stats(), this.#request, {
			contextKey,
			origin,
		});
	}
}
