// A Lambda Managed Instances (LMI) execution environment as the Node runtime runs it: several worker threads in
// one process (AWS_LAMBDA_NODEJS_WORKER_COUNT), each importing the function's module into its own module scope
// (execution-environment-worker.ts), each running many invocations at once. Unlike
// execution-environment-managed.ts (one worker in a child process), this one has the workers, in this process.
//
// What it shows about a middleware: module-level state (a warm pool) exists once per worker, not once per
// environment; so a connection budget is instances × workers × the pool's size. The environment is never frozen.
// Invocations go to the worker the caller names (the runtime's own routing is not modelled): tests decide how
// the load spreads.
import { randomUUID } from "node:crypto";
import { isAbsolute } from "node:path";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import type { SerializedError } from "./execution-environment.ts";
import type { FromWorker, ToWorker, WorkerSettings } from "./execution-environment-worker.ts";

const WORKER_ENTRY = new URL("./execution-environment-worker.ts", import.meta.url);

export interface WorkerThreadsEnvironmentOptions {
	/** The function's module: a path or file URL of a .ts file (outside node_modules) or a bundle. */
	module: string | URL;
	/** The handler's export name. Default "handler". */
	handler?: string;
	/** Worker threads (AWS_LAMBDA_NODEJS_WORKER_COUNT). Default 2. */
	workers?: number;
	/** The function's environment variables; a function of the worker's index gives each worker its own. */
	env?: Record<string, string> | ((worker: number) => Record<string, string>);
	functionName?: string;
	/** Each invocation's deadline, from the moment it is sent (the context's `getRemainingTimeInMillis`). */
	timeoutMs?: number;
	memoryLimitInMB?: number;
	/** How long a worker may take to import the module. Default 20 s. */
	initTimeoutMs?: number;
}

/** What a worker reported when it was shut down. */
export interface WorkerShutdown {
	/** What the module's `report` export returned (undefined without one). */
	report: unknown;
	/** The module's `shutdown` or `report` threw this. */
	error?: SerializedError;
	/** `process.getActiveResourcesInfo()` in the worker after its shutdown, once what was still closing has closed (up to 3 s; its message port left out). */
	activeResources: string[];
	/** The thread ended by itself once it had nothing left to do; false if it had to be terminated. */
	exitedByItself: boolean;
}

export interface WorkerThread {
	/** 0 to workers - 1. */
	readonly index: number;
	readonly threadId: number;
	/** Invocations sent and not answered yet. */
	readonly running: number;
	/** Runs the handler in this worker, alongside whatever it runs already; rejects with the handler's error. */
	invoke<TResult = unknown>(event?: unknown): Promise<TResult>;
	/**
	 * Calls the module's `shutdown` export (if any), then its `report`, then lets the thread end: it must exit by
	 * itself within `timeoutMs` (default 5 s), or it is terminated.
	 */
	shutdown(timeoutMs?: number): Promise<WorkerShutdown>;
	/** Ends the thread now. Idempotent. */
	terminate(): Promise<void>;
}

export interface WorkerThreadsEnvironment {
	readonly workers: readonly WorkerThread[];
	/** Shuts every worker down (see WorkerThread.shutdown), all at once. */
	shutdown(timeoutMs?: number): Promise<WorkerShutdown[]>;
	/** Ends every thread now. Idempotent; for `afterEach`/`finally`. */
	terminate(): Promise<void>;
}

/** The error a handler threw, as it came back from its worker. */
export class WorkerInvocationError extends Error {
	readonly code: string | undefined;
	constructor(error: SerializedError) {
		super(error.message);
		this.name = error.name;
		this.code = error.code;
	}
}

export const startWorkerThreadsEnvironment = async (
	options: WorkerThreadsEnvironmentOptions,
): Promise<WorkerThreadsEnvironment> => {
	const count = Math.max(1, options.workers ?? 2);
	const moduleUrl =
		options.module instanceof URL
			? options.module.href
			: isAbsolute(options.module)
				? pathToFileURL(options.module).href
				: options.module;
	const settings: WorkerSettings = {
		moduleUrl,
		exportName: options.handler ?? "handler",
		functionName: options.functionName ?? "worker-threads-function",
		memoryLimitInMB: options.memoryLimitInMB ?? 2048,
	};
	const timeoutMs = options.timeoutMs ?? 10_000;
	const initTimeoutMs = options.initTimeoutMs ?? 20_000;
	const lambdaEnv = {
		AWS_REGION: "eu-west-1",
		AWS_LAMBDA_FUNCTION_NAME: settings.functionName,
		AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(settings.memoryLimitInMB),
		AWS_LAMBDA_NODEJS_WORKER_COUNT: String(count),
	};
	const started = Array.from({ length: count }, (_, index) =>
		startWorker(index, settings, timeoutMs, {
			...lambdaEnv,
			...(typeof options.env === "function" ? options.env(index) : options.env),
		}),
	);
	const workers: WorkerThread[] = [];
	const outcomes = await Promise.allSettled(
		started.map((worker) => worker.ready(initTimeoutMs).then((ready) => workers.push(ready))),
	);
	const failed = outcomes.find((outcome) => outcome.status === "rejected");
	if (failed) {
		await Promise.all(started.map((worker) => worker.terminate()));
		throw failed.reason;
	}
	workers.sort((a, b) => a.index - b.index);
	return {
		workers,
		shutdown: (ms) => Promise.all(workers.map((worker) => worker.shutdown(ms))),
		terminate: async () => {
			await Promise.all(started.map((worker) => worker.terminate()));
		},
	};
};

const startWorker = (
	index: number,
	settings: WorkerSettings,
	timeoutMs: number,
	env: Record<string, string>,
) => {
	const thread = new Worker(WORKER_ENTRY, { workerData: settings, env, stdout: false, stderr: false });
	const pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
	let nextId = 0;
	let exited = false;
	let failure: Error | undefined;
	const exit = new Promise<number>((resolve) => {
		thread.once("exit", (code) => {
			exited = true;
			failure ??= new Error(`worker ${index} exited (code ${code})`);
			for (const entry of pending.values()) entry.reject(failure);
			pending.clear();
			resolve(code);
		});
	});
	thread.on("error", (error) => {
		failure = error;
	});
	let onShutdown: ((message: Extract<FromWorker, { type: "shutdown-done" }>) => void) | undefined;
	let onReady: ((error?: SerializedError) => void) | undefined;
	thread.on("message", (message: FromWorker) => {
		if (message.type === "ready") onReady?.();
		else if (message.type === "init-error") onReady?.(message.error);
		else if (message.type === "shutdown-done") onShutdown?.(message);
		else if (message.type === "result") {
			const entry = pending.get(message.id);
			if (!entry) return;
			pending.delete(message.id);
			if (message.ok) entry.resolve(message.value);
			else entry.reject(new WorkerInvocationError(message.error));
		}
	});
	const post = (message: ToWorker) => thread.postMessage(message);
	const terminate = async () => {
		if (!exited) await thread.terminate();
		await exit;
	};

	const worker: WorkerThread = {
		index,
		threadId: thread.threadId,
		get running() {
			return pending.size;
		},
		invoke<TResult>(event: unknown = {}) {
			if (exited) return Promise.reject(failure ?? new Error(`worker ${index} has exited`));
			const id = ++nextId;
			return new Promise<TResult>((resolve, reject) => {
				pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
				post({ type: "invoke", id, requestId: randomUUID(), deadlineMs: Date.now() + timeoutMs, event });
			});
		},
		async shutdown(ms = 10_000) {
			if (exited) throw failure ?? new Error(`worker ${index} has exited`);
			const done = await bounded(
				new Promise<Extract<FromWorker, { type: "shutdown-done" }>>((resolve) => {
					onShutdown = resolve;
					post({ type: "shutdown" });
				}),
				ms,
				`worker ${index} did not finish its shutdown within ${ms} ms`,
			).catch(async (error: Error) => {
				await terminate();
				throw error;
			});
			const exitedByItself = await bounded(exit, ms, "").then(
				() => true,
				() => false,
			);
			if (!exitedByItself) await terminate();
			return {
				report: done.report,
				activeResources: done.activeResources,
				exitedByItself,
				...(done.error ? { error: done.error } : {}),
			};
		},
		terminate,
	};

	return {
		terminate,
		/** Resolves once the worker has imported the module (its cold start). */
		ready: (initMs: number) =>
			bounded(
				new Promise<WorkerThread>((resolve, reject) => {
					onReady = (error) => (error ? reject(new WorkerInvocationError(error)) : resolve(worker));
					void exit.then(() => reject(failure));
				}),
				initMs,
				`worker ${index} did not load its module within ${initMs} ms`,
			),
	};
};

/** The promise's outcome, or a rejection with `message` after `ms`. */
const bounded = <T>(promise: Promise<T>, ms: number, message: string): Promise<T> => {
	let timer: NodeJS.Timeout | undefined;
	return Promise.race([
		promise,
		new Promise<never>((_, reject) => {
			timer = setTimeout(() => reject(new Error(message)), ms);
		}),
	]).finally(() => clearTimeout(timer));
};

/** One invocation's outcome in a worker: its event and result, or the error it failed with. */
export interface WorkerOutcome<TEvent, TResult> {
	worker: number;
	event: TEvent;
	result?: TResult;
	error?: unknown;
}

/**
 * `rounds` times, `concurrency` invocations at once in every given worker, all of them at the same time (as Lambda
 * Managed Instances run them). `eventOf` makes each invocation's event. Never rejects: failures are outcomes.
 */
export const invokeInRounds = async <TEvent, TResult>(
	workers: readonly WorkerThread[],
	rounds: number,
	concurrency: number,
	eventOf: (worker: number, round: number, index: number) => TEvent,
): Promise<WorkerOutcome<TEvent, TResult>[]> => {
	const outcomes: WorkerOutcome<TEvent, TResult>[] = [];
	for (let round = 0; round < rounds; round++) {
		const batch = workers.flatMap((worker) =>
			Array.from({ length: concurrency }, (_, index): Promise<WorkerOutcome<TEvent, TResult>> => {
				const event = eventOf(worker.index, round, index);
				return worker.invoke<TResult>(event).then(
					(result) => ({ worker: worker.index, event, result }),
					(error: unknown) => ({ worker: worker.index, event, error }),
				);
			}),
		);
		outcomes.push(...(await Promise.all(batch)));
	}
	return outcomes;
};
