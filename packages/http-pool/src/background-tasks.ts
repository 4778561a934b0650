// `context.waitUntil(task)`: fire-and-forget that is really delivered.
//
// On Lambda, work still pending when the handler's promise settles is frozen with the process: it is lost, or it
// resumes (and fails, or lands) during some later invocation. So a background task is not left running: it is
// awaited at the end of the invocation, on every path (after, onError, and the early response that skips both),
// with a deadline taken from the Lambda clock. At the deadline the tasks are told to stop (their AbortSignal)
// and the requests they started are aborted, so that the invocation returns in time.
//
// A task's failure is reported (logger) and counted, never rethrown: it must not turn a successful response into
// an error, it must not become an unhandled rejection (which crashes the Node runtime), and a task that settles
// after its invocation ended is ignored rather than surfacing in the invocation that happens to be running then.
//
// One set of tasks per invocation, shared by every httpPool middleware of the chain (a second one with another
// `contextKey` must not wait on its own and abort requests the first one's tasks are still using). It lives on
// the Middy request, never in module scope.
import type { Request } from "@middy/core";
import type { Logger } from "@middy-conn/lifecycle";
import { packageName } from "./options.ts";
import type { HttpPoolStats } from "./telemetry.ts";

/** A promise, or a function given an AbortSignal that fires at the wait deadline. */
export type BackgroundTask = PromiseLike<unknown> | ((signal: AbortSignal) => unknown);

/** `context.waitUntil`: registers a task that the invocation awaits before it returns. */
export type WaitUntil = (task: BackgroundTask) => void;

interface Entry {
	readonly id: number;
	readonly description: string;
	settled: boolean;
}

const kTasks = Symbol.for("@middy-conn/http-pool/background-tasks@1");

type State = "open" | "draining" | "ended";

const isThenable = (value: unknown): value is PromiseLike<unknown> =>
	(typeof value === "object" || typeof value === "function") &&
	value !== null &&
	typeof (value as { then?: unknown }).then === "function";

export class BackgroundTasks {
	// Made on first use: most invocations register no function task, and an AbortController is not free.
	#abortController: AbortController | undefined;
	readonly #pending = new Map<Entry, Promise<void>>();
	readonly #counts: HttpPoolStats["background"] = { finished: 0, failed: 0, aborted: 0 };
	readonly #logger: Logger;
	readonly #onDeadline = new Set<(reason: Error) => void>();
	#state: State = "open";
	#draining: Promise<void> | undefined;
	#nextId = 1;

	constructor(logger: Logger) {
		this.#logger = logger;
	}

	/** The tasks of this invocation, created by the first httpPool middleware that asks. */
	static of(request: Request, logger: Logger): BackgroundTasks {
		const holder = request as Request & { [kTasks]?: BackgroundTasks };
		holder[kTasks] ??= new BackgroundTasks(logger);
		return holder[kTasks];
	}

	get #abort(): AbortController {
		this.#abortController ??= new AbortController();
		return this.#abortController;
	}

	/** Fires at the wait deadline (and on destroy): tasks should stop. */
	get signal(): AbortSignal {
		return this.#abort.signal;
	}

	/** How the tasks ended so far. */
	get counts(): HttpPoolStats["background"] {
		return { ...this.#counts };
	}

	get pending(): number {
		return this.#pending.size;
	}

	/** Called when the deadline passes with tasks still running, to abort what they use (their requests). */
	onDeadline(listener: (reason: Error) => void): void {
		this.#onDeadline.add(listener);
	}

	/** `context.waitUntil`. Bound, so that it can be passed around. */
	readonly waitUntil: WaitUntil = (task) => {
		if (typeof task !== "function" && !isThenable(task)) {
			throw new TypeError("context.waitUntil expects a promise or a function (signal) => promise", {
				cause: { package: packageName },
			});
		}
		const id = this.#nextId++;
		const description = typeof task === "function" && task.name ? `${task.name} (#${id})` : `#${id}`;
		if (this.#state === "ended") {
			// A leaked promise of an invocation that already returned: nothing can wait for it any more.
			this.#logger.warn(
				`${packageName}: context.waitUntil was called after the invocation ended; not awaited`,
				{
					task: description,
				},
			);
			if (isThenable(task)) Promise.resolve(task).catch(() => {});
			return;
		}
		let promise: PromiseLike<unknown>;
		if (typeof task === "function") {
			try {
				const result = task(this.#abort.signal);
				promise = isThenable(result) ? result : Promise.resolve(result);
			} catch (error) {
				promise = Promise.reject(error);
			}
		} else {
			promise = task;
		}
		const entry: Entry = { id, description, settled: false };
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
		if (this.#state === "ended") return;
		if (!failure) {
			this.#counts.finished++;
			return;
		}
		this.#counts.failed++;
		this.#logger.error(`${packageName}: background task failed`, {
			task: entry.description,
			error: failure.error,
		});
	}

	#abortPending(reason: Error, why: string) {
		const left = [...this.#pending.keys()];
		if (this.#abortController && !this.#abortController.signal.aborted) this.#abortController.abort(reason);
		for (const listener of this.#onDeadline) {
			try {
				listener(reason);
			} catch {
				// one listener failing must not keep the others from aborting their requests
			}
		}
		for (const entry of left) {
			entry.settled = true;
			this.#pending.delete(entry);
			this.#counts.aborted++;
		}
		if (left.length > 0) {
			this.#logger.warn(`${packageName}: ${left.length} background task(s) aborted ${why}`, {
				tasks: left.map((entry) => entry.description),
				reason: reason.message,
			});
		}
	}

	/**
	 * Waits for every task, including tasks that tasks add, for at most `deadlineMs`. Then aborts what is left
	 * and refuses new tasks. Shared by every middleware of the invocation: the first call does the waiting.
	 */
	drain(deadlineMs: number, deadlineError: () => Error): Promise<void> {
		if (this.#state === "ended") return Promise.resolve();
		if (this.#pending.size === 0 && !this.#draining) {
			// Nothing to wait for (the common case): no timer, no race.
			this.#state = "ended";
			return Promise.resolve();
		}
		this.#draining ??= this.#drain(deadlineMs, deadlineError);
		return this.#draining;
	}

	async #drain(deadlineMs: number, deadlineError: () => Error): Promise<void> {
		this.#state = "draining";
		let timer: NodeJS.Timeout | undefined;
		const deadline = new Promise<"deadline">((resolve) => {
			timer = setTimeout(() => resolve("deadline"), Math.max(0, deadlineMs));
		});
		try {
			while (this.#pending.size > 0) {
				const outcome = await Promise.race([Promise.all(this.#pending.values()), deadline]);
				if (outcome === "deadline") {
					this.#abortPending(deadlineError(), "at the wait deadline");
					break;
				}
			}
		} finally {
			clearTimeout(timer);
			this.#state = "ended";
		}
	}

	/**
	 * Synchronous end, when Middy leaves no time to wait: every task still running is aborted. Without a reason
	 * (nothing is running) it only refuses new tasks.
	 */
	destroy(reason: Error | undefined): void {
		if (this.#state === "ended") return;
		if (reason) this.#abortPending(reason, "because the invocation was torn down");
		this.#state = "ended";
	}
}
