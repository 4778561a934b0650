// A Lambda Managed Instances (LMI) execution environment on one machine: one child Node process that runs many
// invocations of one function at once. Same child as the standard runner (execution-environment-child.ts, which
// starts every invocation it is sent as soon as it arrives); what differs is on this side:
//
// - Invocations are sent as they come, up to `maxConcurrency` at once (LMI: up to 64 per vCPU by default); more
//   wait in a queue. They share the process's module scope (its warm pools), and nothing else: per-invocation
//   state must live on the Middy request.
// - The process is never frozen: LMI keeps the environment running between invocations and during them.
// - LMI does not enforce the function timeout: at the deadline (plus the same grace as the standard runner) the
//   invocation is reported as timed out, and its code keeps running; the process is not ended. Middy's early
//   timeout is the only one a function sees.
// - A crash (unhandled rejection, uncaught exception) ends the process and fails every invocation in flight; the
//   next invocation starts a new process (a cold start).
//
// The Node runtime on LMI may also run several worker threads per environment (AWS_LAMBDA_NODEJS_WORKER_COUNT),
// each with its own module scope: one worker is modelled here, with async concurrency inside it.
import { type ChildProcess, fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type {
	ChildMessage,
	ExecutionEnvironmentOptions,
	InvocationErrorType,
	InvocationOutcome,
	InvokeMessage,
	InvokeOptions,
	SerializedError,
} from "./execution-environment.ts";

export interface ManagedExecutionEnvironmentOptions
	extends Omit<ExecutionEnvironmentOptions, "freezeBetweenInvocations"> {
	/** Invocations running at once in the environment; more are queued. Default 16. */
	maxConcurrency?: number;
}

export interface ManagedExecutionEnvironmentStats {
	invocations: number;
	coldStarts: number;
	crashes: number;
	/** Invocations reported as timed out (their code kept running). */
	timeouts: number;
	/** The most invocations that ran at once. */
	peakConcurrency: number;
}

export interface ManagedExecutionEnvironment {
	readonly functionName: string;
	/** The current process's pid (a new one after a crash). */
	readonly pid: number | undefined;
	/** Invocations running now. */
	readonly running: number;
	readonly stats: ManagedExecutionEnvironmentStats;
	/** Starts an invocation now (or as soon as fewer than `maxConcurrency` run), alongside any others. */
	invoke<TResult = unknown>(event: unknown, options?: InvokeOptions): Promise<InvocationOutcome<TResult>>;
	/** Ends the environment (SIGKILL): invocations in flight fail. Idempotent. */
	kill(): Promise<void>;
	/** The last lines the function printed. */
	logs(): string[];
}

const CHILD_ENTRY = fileURLToPath(new URL("./execution-environment-child.ts", import.meta.url));
/** As in the standard runner: time allowed past the deadline for the result to cross IPC. */
const DEADLINE_GRACE_MS = 200;
const LOG_LINES_KEPT = 500;

interface Pending {
	proc: Proc;
	id: number;
	requestId: string;
	cold: boolean;
	started: number;
	timer: NodeJS.Timeout;
	resolve: (outcome: InvocationOutcome) => void;
}

interface Proc {
	child: ChildProcess;
	ready: Promise<void>;
	exited: Promise<void>;
	alive: boolean;
	invoked: number;
	crash?: { kind: InvocationErrorType; error: SerializedError };
}

// Every process started here, killed on the way out whatever the exit path.
const running = new Set<ChildProcess>();
let exitHookInstalled = false;
const installExitHook = () => {
	if (exitHookInstalled) return;
	exitHookInstalled = true;
	process.once("exit", () => {
		for (const child of running) child.kill("SIGKILL");
	});
};

export const startManagedExecutionEnvironment = async (
	options: ManagedExecutionEnvironmentOptions,
): Promise<ManagedExecutionEnvironment> => {
	installExitHook();
	const exportName = options.handler ?? "handler";
	const functionName =
		options.functionName ??
		(options.module
			.split("/")
			.pop()
			?.replace(/\.[^.]+$/, "") ||
			"function");
	const timeoutMs = options.timeoutMs ?? 10_000;
	const memoryLimitInMB = options.memoryLimitInMB ?? 1024;
	const maxConcurrency = Math.max(1, options.maxConcurrency ?? 16);
	const logLines: string[] = [];
	const stats: ManagedExecutionEnvironmentStats = {
		invocations: 0,
		coldStarts: 0,
		crashes: 0,
		timeouts: 0,
		peakConcurrency: 0,
	};
	const pending = new Map<number, Pending>();
	/** Invocations waiting for a free slot. */
	const waiting: Array<() => void> = [];
	/** Slots taken: invocations sent, or on their way (waiting for the process). */
	let taken = 0;
	let current: Proc | undefined;
	let killed = false;
	let nextId = 0;

	const log = (line: string, stream: "stdout" | "stderr") => {
		logLines.push(line);
		if (logLines.length > LOG_LINES_KEPT) logLines.shift();
		options.onLog?.(line, stream);
	};

	const settle = (id: number, outcome: InvocationOutcome) => {
		const entry = pending.get(id);
		if (!entry) return;
		pending.delete(id);
		clearTimeout(entry.timer);
		entry.resolve(outcome);
		release();
	};

	/** Frees a slot: hands it to the next invocation in the queue, if any. */
	const release = () => {
		const next = waiting.shift();
		if (next) next();
		else taken--;
	};

	const spawnProcess = (): Proc => {
		const env: Record<string, string> = {
			PATH: process.env.PATH ?? "/usr/bin:/bin",
			LANG: "en_US.UTF-8",
			TZ: "UTC",
			AWS_REGION: "eu-west-1",
			AWS_DEFAULT_REGION: "eu-west-1",
			AWS_EXECUTION_ENV: `AWS_Lambda_nodejs${process.versions.node.split(".")[0]}.x`,
			AWS_LAMBDA_FUNCTION_NAME: functionName,
			AWS_LAMBDA_FUNCTION_VERSION: "$LATEST",
			AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(memoryLimitInMB),
			AWS_LAMBDA_LOG_GROUP_NAME: `/aws/lambda/${functionName}`,
			AWS_LAMBDA_MAX_CONCURRENCY: String(maxConcurrency),
			AWS_LAMBDA_NODEJS_WORKER_COUNT: "1",
		};
		for (const [name, value] of Object.entries(options.env ?? {})) {
			if (value !== undefined) env[name] = value;
		}
		const child = fork(CHILD_ENTRY, [options.module, exportName], {
			execPath: process.execPath,
			execArgv: ["--no-warnings=ExperimentalWarning"],
			env,
			stdio: ["ignore", "pipe", "pipe", "ipc"],
		});
		running.add(child);
		for (const stream of ["stdout", "stderr"] as const) {
			const source = child[stream];
			if (source) createInterface({ input: source }).on("line", (line) => log(line, stream));
		}
		let markReady: () => void = () => {};
		let failReady: (error: Error) => void = () => {};
		const proc: Proc = {
			child,
			alive: true,
			invoked: 0,
			ready: new Promise<void>((resolve, reject) => {
				markReady = resolve;
				failReady = reject;
			}),
			exited: new Promise<void>((resolve) => child.once("exit", () => resolve())),
		};
		proc.ready.catch(() => {});
		child.on("message", (message: ChildMessage) => {
			if (message.type === "ready") markReady();
			else if (message.type === "crash") {
				proc.crash = { kind: message.kind as InvocationErrorType, error: message.error };
			} else if (message.type === "result") {
				const entry = pending.get(message.id);
				if (!entry) return; // reported as timed out already: its code ran on, and its answer comes too late
				settle(message.id, {
					requestId: entry.requestId,
					ok: message.ok,
					...(message.json === undefined ? {} : { result: JSON.parse(message.json) }),
					...(message.error ? { error: message.error, errorType: "Handler" as const } : {}),
					cold: message.cold,
					...(message.initMs === undefined ? {} : { initMs: message.initMs }),
					durationMs: message.durationMs,
					latencyMs: performance.now() - entry.started,
					rss: message.rss,
					activeResources: message.activeResources,
				});
			}
		});
		child.once("exit", (code, signal) => {
			proc.alive = false;
			running.delete(child);
			failReady(new Error(`execution environment exited before it was ready (code ${code}, ${signal})`));
			if (current === proc) current = undefined;
			const lost = [...pending.values()].filter((entry) => entry.proc === proc);
			if (lost.length > 0 && !killed) stats.crashes++;
			const crash = proc.crash ?? {
				kind: "Runtime.ExitError" as const,
				error: { name: "Runtime.ExitError", message: `process exited (code ${code}, signal ${signal})` },
			};
			for (const entry of lost) {
				settle(entry.id, {
					requestId: entry.requestId,
					ok: false,
					error: crash.error,
					errorType: crash.kind,
					cold: entry.cold,
					latencyMs: performance.now() - entry.started,
				});
			}
		});
		return proc;
	};

	const ensureProcess = async (): Promise<Proc> => {
		if (!current?.alive) current = spawnProcess();
		await current.ready;
		return current;
	};

	/** Takes a slot, at once or when one is released (then handed over directly: `taken` stays the same). */
	const slot = async () => {
		if (taken < maxConcurrency) {
			taken++;
			return;
		}
		await new Promise<void>((resolve) => waiting.push(resolve));
	};

	const runOne = async (event: unknown, invokeOptions: InvokeOptions): Promise<InvocationOutcome> => {
		if (killed) throw new Error(`execution environment ${functionName} was killed`);
		const started = performance.now();
		await slot();
		let proc: Proc;
		try {
			if (killed) throw new Error(`execution environment ${functionName} was killed`);
			proc = await ensureProcess();
		} catch (error) {
			release();
			throw error;
		}
		const id = ++nextId;
		const requestId = invokeOptions.requestId ?? randomUUID();
		const limit = invokeOptions.timeoutMs ?? timeoutMs;
		const cold = proc.invoked === 0;
		proc.invoked++;
		stats.invocations++;
		if (cold) stats.coldStarts++;
		return new Promise<InvocationOutcome>((resolve) => {
			pending.set(id, {
				proc,
				id,
				requestId,
				cold,
				started,
				resolve,
				// LMI marks the invocation failed at its deadline and lets its code run on.
				timer: setTimeout(() => {
					stats.timeouts++;
					settle(id, {
						requestId,
						ok: false,
						error: {
							name: "Sandbox.Timedout",
							message: `Task timed out after ${(limit / 1000).toFixed(2)} seconds`,
						},
						errorType: "Sandbox.Timedout",
						cold,
						latencyMs: performance.now() - started,
					});
				}, limit + DEADLINE_GRACE_MS),
			});
			stats.peakConcurrency = Math.max(stats.peakConcurrency, pending.size);
			const message: InvokeMessage = {
				type: "invoke",
				id,
				requestId,
				functionName,
				memoryLimitInMB,
				deadlineMs: Date.now() + limit,
				event,
			};
			proc.child.send(message);
		});
	};

	const environment: ManagedExecutionEnvironment = {
		functionName,
		get pid() {
			return current?.child.pid;
		},
		get running() {
			return pending.size;
		},
		stats,
		invoke<TResult>(event: unknown, invokeOptions: InvokeOptions = {}) {
			return runOne(event, invokeOptions) as Promise<InvocationOutcome<TResult>>;
		},
		async kill() {
			killed = true;
			for (const resume of waiting.splice(0)) resume();
			const proc = current;
			if (!proc?.alive) return;
			proc.child.kill("SIGKILL");
			await proc.exited;
		},
		logs: () => [...logLines],
	};

	await ensureProcess();
	return environment;
};
