// Everything one invocation owns: its dispatcher (context.http), its open requests, its counters, and its end.
//
// The end, on every path Middy can take (after, onError, or the lifecycle scope on an early response):
// 1. wait for the background tasks, up to the deadline (remaining Lambda time minus the reserve). At the
//    deadline, abort them and every request still in flight;
// 2. only then deal with what the handler left open (bodies it did not read, requests it did not await): a
//    background task may still have been reading one of those;
// 3. refuse new requests (a leaked promise would otherwise send from a frozen, then thawed, process);
// 4. report the counters.
// On Middy's early timeout nothing waits: the handler is still running and Lambda is about to stop the process,
// so its requests are aborted at once and their sockets closed.
import type { Request } from "@middy/core";
import { type InvocationEnd, type Logger, remainingTimeInMillis } from "@middy-conn/lifecycle";
import type { Dispatcher } from "undici";
import { BackgroundTasks } from "./background-tasks.ts";
import { errorCodes, httpPoolError } from "./errors.ts";
import { InvocationDispatcher, RequestTracker } from "./invocation-dispatcher.ts";
import { packageName, type ResolvedOptions } from "./options.ts";
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

export class Invocation {
	readonly dispatcher: InvocationDispatcher;
	readonly tasks: BackgroundTasks;
	readonly #request: Request;
	readonly #options: ResolvedOptions;
	readonly #logger: Logger;
	readonly #stats: HttpPoolStats = emptyStats();
	readonly #tracker: RequestTracker;
	#reported = false;

	constructor(request: Request, shared: Dispatcher, options: ResolvedOptions, logger: Logger) {
		this.#request = request;
		this.#options = options;
		this.#logger = logger;
		this.#tracker = new RequestTracker(this.#stats);
		this.tasks = BackgroundTasks.of(request, logger);
		this.dispatcher = new InvocationDispatcher(shared, options.origin, this.#tracker, () => this.stats());
		this.tasks.onDeadline((reason) => this.#tracker.abortAll(reason));
	}

	/** Milliseconds the background tasks may still take: Lambda's remaining time minus the reserve, capped. */
	#deadlineMs(): number {
		const { waitUntilReserve, waitUntilTimeout } = this.#options;
		return Math.min(
			remainingTimeInMillis(this.#request.context, waitUntilReserve, waitUntilTimeout),
			waitUntilTimeout,
		);
	}

	/** The graceful end. Never rejects: nothing here may turn the invocation's outcome into another one. */
	async end(end: InvocationEnd): Promise<void> {
		try {
			// Made only if a request is still open or refused: an Error (with its stack) per invocation is not free.
			let error: Error | undefined;
			const ended = () => {
				error ??= httpPoolError(`The invocation ${describeEnd(end)}`, errorCodes.invocationEnded, undefined, {
					end: end.kind,
				});
				return error;
			};
			if (end.kind === "timeout") {
				this.#tracker.close(ended);
				if (this.#tracker.size > 0) this.#tracker.abortAll(ended());
				if (this.tasks.pending > 0) this.tasks.destroy(ended());
				else this.tasks.destroy(undefined);
			} else {
				const started = Date.now();
				const deadlineMs = this.#deadlineMs();
				await this.tasks.drain(deadlineMs, () =>
					httpPoolError(
						`Background tasks were still running at the wait deadline (${deadlineMs} ms: remaining time minus waitUntilReserve, at most waitUntilTimeout)`,
						errorCodes.deadline,
					),
				);
				this.#tracker.close(ended);
				if (this.#tracker.size > 0) {
					const left = Math.max(0, deadlineMs - (Date.now() - started));
					const { waiting } = await this.#tracker.cleanUp(ended(), Math.min(dumpWaitMs, left));
					if (waiting > 0) {
						this.#logger.warn(
							`${packageName}: ${waiting} request(s) still waiting for a response when the invocation ${describeEnd(end)} were aborted; await them, or hand them to context.waitUntil`,
						);
					}
				}
			}
		} catch (error) {
			this.#logger.error(`${packageName}: cleanup at the end of the invocation failed`, { error });
		}
		await this.#report();
	}

	/** The synchronous end, when an onError threw and Middy rethrows at once: abort everything. */
	destroy(reason: unknown): void {
		const error = httpPoolError("The invocation was torn down", errorCodes.invocationEnded, reason, {
			end: "error",
		});
		this.#tracker.close(() => error);
		this.#tracker.abortAll(error);
		this.tasks.destroy(error);
		this.#report().catch(() => {});
	}

	/** The counters so far: this middleware's requests, and the invocation's background tasks. */
	stats(): HttpPoolStats {
		const { connectionsOpened, connectionsReused, requests, leftovers } = this.#stats;
		return {
			connectionsOpened,
			connectionsReused,
			requests,
			leftovers: { ...leftovers },
			background: this.tasks.counts,
		};
	}

	async #report(): Promise<void> {
		if (this.#reported) return;
		this.#reported = true;
		if (!this.#options.logStats && !this.#options.onStats) return;
		const stats = this.stats();
		if (this.#options.logStats) {
			this.#logger.info(`${packageName}: invocation stats`, {
				contextKey: this.#options.contextKey,
				origin: this.#options.origin,
				...stats,
			});
		}
		if (!this.#options.onStats) return;
		try {
			await this.#options.onStats(stats, this.#request);
		} catch (error) {
			this.#logger.warn(`${packageName}: onStats threw`, { error });
		}
	}
}
