// `context.waitUntil(task)`: fire-and-forget that is really delivered.
//
// On Lambda, work still pending when the handler's promise settles is frozen with the process: it is lost, or it
// resumes (and fails, or lands) during some later invocation. So a background task is not left running: the
// invocation's teardown waits for it before it closes any connection (a task may use context.db as well as
// context.http), on every path, with a deadline taken from the Lambda clock. At the deadline the tasks are told
// to stop (their AbortSignal) and the invocation interrupts what they use.
//
// A task's failure is reported (logger) and counted, never rethrown: it must not turn a successful response into
// an error, and it must not become an unhandled rejection (which crashes the Node runtime). A task handed over
// after the invocation ended is refused with an error, at once: nothing could wait for it any more.
//
// One set of tasks per invocation, owned by the invocation (see invocation.ts), whichever middlewares it uses.

import { settleWithin } from "./deadline.ts";
import { lifecycleError, lifecycleErrorCodes } from "./lifecycle-errors.ts";
import type { Logger } from "./logger.ts";

/** A promise, or a function given an AbortSignal that fires at the wait deadline. */
export type BackgroundTask = PromiseLike<unknown> | ((signal: AbortSignal) => unknown);

/** `context.waitUntil`: registers a task that the invocation awaits before it returns. */
export type WaitUntil = (task: BackgroundTask) => void;

/** How the invocation's background tasks ended. */
export interface BackgroundTaskCounts {
	finished: number;
	failed: number;
	aborted: number;
}

interface Entry {
	readonly description: string;
	settled: boolean;
}

const isThenable = (value: unknown): value is PromiseLike<unknown> =>
	(typeof value === "object" || typeof value === "function") &&
	value !== null &&
	typeof (value as { then?: unknown }).then === "function";

export class BackgroundTasks {
	// Made on first use: most invocations register no function task, and an AbortController is not free.
	#abortController: AbortController | undefined;
	readonly #pending = new Map<Entry, Promise<void>>();
	readonly #counts: BackgroundTaskCounts = { finished: 0, failed: 0, aborted: 0 };
	readonly #logger: Logger;
	#refused: (() => Error) | undefined;
	#nextId = 1;

	constructor(logger: Logger) {
		this.#logger = logger;
	}

	/** Fires at the wait deadline (and when the invocation is torn down): tasks should stop. */
	get signal(): AbortSignal {
		this.#abortController ??= new AbortController();
		return this.#abortController.signal;
	}

	/** How the tasks ended so far. */
	get counts(): BackgroundTaskCounts {
		return { ...this.#counts };
	}

	get pending(): number {
		return this.#pending.size;
	}

	/** `context.waitUntil`. Bound, so that it can be passed around. */
	readonly waitUntil: WaitUntil = (task) => {
		if (typeof task !== "function" && !isThenable(task)) {
			throw new TypeError("context.waitUntil expects a promise or a function (signal) => promise", {
				cause: { package: "@middy-conn/lifecycle" },
			});
		}
		const id = this.#nextId++;
		const description = typeof task === "function" && task.name ? `${task.name} (#${id})` : `#${id}`;
		if (this.#refused) {
			// A promise leaked by an invocation that already returned: nothing can wait for it any more. Say so to
			// the caller, and in the log (the caller is often a detached promise chain).
			if (isThenable(task)) Promise.resolve(task).catch(() => {});
			const error = this.#refused();
			this.#logger.error(`${error.message}; task ${description} was not awaited`, {
				code: (error as { code?: unknown }).code,
			});
			throw error;
		}
		let promise: PromiseLike<unknown>;
		if (typeof task === "function") {
			try {
				const result = task(this.signal);
				promise = isThenable(result) ? result : Promise.resolve(result);
			} catch (error) {
				promise = Promise.reject(error);
			}
		} else {
			promise = task;
		}
		const entry: Entry = { description, settled: false };
		// Both outcomes are handled here, at once: the task's rejection can never be unhandled.
		const tracked = Promise.resolve(promise).then(
			() => this.#settle(entry, undefined),
			(error: unknown) => this.#settle(entry, { error }),
		);
		this.#pending.set(entry, tracked);
	};

	#settle(entry: Entry, failure: { error: unknown } | undefined) {
		if (entry.settled) return;
		entry.settled = true;
		this.#pending.delete(entry);
		if (!failure) {
			this.#counts.finished++;
			return;
		}
		this.#counts.failed++;
		this.#logger.error("@middy-conn: background task failed", {
			task: entry.description,
			error: failure.error,
		});
	}

	/**
	 * Waits until no task is pending (tasks that tasks add included), or until `deadline` (a `performance.now()`
	 * instant). Resolves true when every task settled, false at the deadline. Never rejects.
	 */
	async settled(deadline: number): Promise<boolean> {
		// At least 1 ms on the first pass, as a timer of 0 is: tasks that have just settled get their turn even at the
		// deadline. Only on the first: tasks that keep adding tasks must not stretch the wait 1 ms at a time.
		let floorMs = 1;
		while (this.#pending.size > 0) {
			// The tracked promises never reject.
			const all = await settleWithin(
				Promise.all(this.#pending.values()),
				Math.max(floorMs, deadline - performance.now()),
			);
			if (!all.ok) return false;
			floorMs = 0;
		}
		return true;
	}

	/** Stops every task still running: its signal fires, and it is counted (and logged) as aborted. */
	abort(reason: Error, why: string): void {
		if (this.#abortController && !this.#abortController.signal.aborted) this.#abortController.abort(reason);
		if (this.#pending.size === 0) return;
		const left = [...this.#pending.keys()];
		for (const entry of left) {
			entry.settled = true;
			this.#counts.aborted++;
		}
		this.#pending.clear();
		this.#logger.warn(`@middy-conn: ${left.length} background task(s) aborted ${why}`, {
			code: (reason as { code?: unknown }).code,
			tasks: left.map((entry) => entry.description),
			reason: reason.message,
		});
	}

	/** From now on `waitUntil` throws the error `reason()` makes. */
	refuse(reason: () => Error): void {
		this.#refused ??= reason;
	}
}

export const taskDeadlineError = (deadlineMs: number) =>
	lifecycleError(
		`Background tasks were still running at the wait deadline (${Math.round(deadlineMs)} ms: remaining time minus waitUntilReserve, at most waitUntilTimeout)`,
		lifecycleErrorCodes.taskDeadline,
	);
