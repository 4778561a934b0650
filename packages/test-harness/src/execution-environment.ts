// Lambda execution environments on one machine: one child Node process per environment, which hosts one
// function's module (see execution-environment-child.ts). Used by the demo, the example tests and the soak.
//
// What it mirrors, and why it matters to these middlewares:
// - The first invocation of an environment is a cold start (the module is imported); later ones are warm and
//   share module scope: a warm pool survives, and so does anything a handler forgot to close.
// - An invocation is over when the handler's promise settles. The result is handed back at once; nothing else is
//   waited for. With `freezeBetweenInvocations` (the default) the process is then stopped with SIGSTOP, as Lambda
//   freezes it, and continued with SIGCONT for the next invocation: timers, sockets and promises still pending do
//   not progress in between, and peers may close idle connections meanwhile.
// - One invocation at a time per environment; a Lambda-like context with a deadline
//   (`getRemainingTimeInMillis`); a clean environment with the function's variables.
// - A timeout, an unhandled rejection or an uncaught exception ends the environment; the next invocation starts a
//   new one (another cold start).
import { readFileSync } from "node:fs";
import type { FunctionProcess, PendingInvocation } from "./function-process.ts";
import { functionLog, functionSettings, startFunctionProcess } from "./function-process.ts";

/** An error as it crosses the process boundary. */
export interface SerializedError {
	name: string;
	message: string;
	code?: string;
	statusCode?: number;
	stack?: string;
}

/** Parent to child. */
export interface InvokeMessage {
	type: "invoke";
	id: number;
	requestId: string;
	functionName: string;
	memoryLimitInMB: number;
	/** Absolute deadline, ms since the epoch: the child's `getRemainingTimeInMillis()` counts down to it. */
	deadlineMs: number;
	event: unknown;
}

/** Child to parent. */
export type ChildMessage =
	| { type: "ready" }
	| {
			type: "result";
			id: number;
			ok: boolean;
			/** The handler's result as the runtime sends it (JSON); absent for undefined. */
			json?: string;
			error?: SerializedError;
			cold: boolean;
			initMs?: number;
			durationMs: number;
			rss: number;
			activeResources: number;
	  }
	| { type: "crash"; kind: string; error: SerializedError };

export interface ExecutionEnvironmentOptions {
	/** The function's module: a bundle (.mjs), or any module Node can import (.ts outside node_modules on Node 24). */
	module: string;
	/** The exported handler, the part after the dot in Lambda's `Handler` setting. Default "handler". */
	handler?: string;
	/** Default: the module's file name. */
	functionName?: string;
	/** The function's timeout. Default 10 s (Lambda's own default is 3 s). */
	timeoutMs?: number;
	/** Default 1024. */
	memoryLimitInMB?: number;
	/**
	 * The function's environment variables. The process does not inherit this one's environment: like Lambda, it
	 * gets a small AWS_* set plus these (use NODE_EXTRA_CA_CERTS to trust a private CA, as on Lambda).
	 */
	env?: Record<string, string | undefined>;
	/** Stop the process (SIGSTOP) as soon as each invocation has returned, and continue it for the next. Default true. */
	freezeBetweenInvocations?: boolean;
	/** Every line the function prints, as it arrives (otherwise kept in `logs()`, the last 500 lines). */
	onLog?: (line: string, stream: "stdout" | "stderr") => void;
}

export interface InvokeOptions {
	/** Overrides the function's timeout for this invocation. */
	timeoutMs?: number;
	requestId?: string;
}

export type InvocationErrorType =
	/** The handler threw or its promise rejected: the function's own error. */
	| "Handler"
	/** No answer by the deadline: Lambda ends the environment. */
	| "Sandbox.Timedout"
	| "Runtime.ImportModuleError"
	| "Runtime.UnhandledPromiseRejection"
	| "Runtime.UncaughtException"
	/** The process died without a word (killed from outside, out of memory...). */
	| "Runtime.ExitError";

export interface InvocationOutcome<TResult = unknown> {
	requestId: string;
	ok: boolean;
	/** The handler's result after the runtime's JSON round trip (undefined when it returned nothing). */
	result?: TResult;
	error?: SerializedError;
	errorType?: InvocationErrorType;
	/** The first invocation of this environment: the module was imported for it. */
	cold: boolean;
	/** Module import time, on a cold start. */
	initMs?: number;
	/** The handler's own time, measured inside the environment. */
	durationMs?: number;
	/** As the caller saw it: thaw, IPC, the import on a cold start, the handler. */
	latencyMs: number;
	/** The environment's resident set size and active handle count when the handler had settled. */
	rss?: number;
	activeResources?: number;
}

export interface ExecutionEnvironment {
	readonly functionName: string;
	/** The current process's pid (a new one after a crash or a timeout). */
	readonly pid: number | undefined;
	readonly frozen: boolean;
	/** Invocations run, cold starts among them, and environments that ended abnormally. */
	readonly stats: { invocations: number; coldStarts: number; crashes: number; timeouts: number };
	/** Runs one invocation; invocations are queued, one at a time, as Lambda sends them to one environment. */
	invoke<TResult = unknown>(event: unknown, options?: InvokeOptions): Promise<InvocationOutcome<TResult>>;
	/** SIGSTOP: resolves once the kernel shows the process stopped. No-op if frozen or not running. */
	freeze(): Promise<void>;
	/** SIGCONT. No-op if not frozen. */
	thaw(): void;
	/** Ends the environment (SIGKILL, as Lambda reclaims one: no shutdown hook runs). Idempotent. */
	kill(): Promise<void>;
	/** The last lines the function printed. */
	logs(): string[];
}

const isStopped = (pid: number): boolean => {
	try {
		// /proc/<pid>/stat: "pid (comm) STATE ..."; comm may hold spaces, so read past the last ')'.
		const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
		return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "T";
	} catch {
		return true; // no procfs (not Linux) or the process is gone: nothing more to wait for
	}
};

export const startExecutionEnvironment = async (
	options: ExecutionEnvironmentOptions,
): Promise<ExecutionEnvironment> => {
	const settings = functionSettings(options);
	const { functionName } = settings;
	const freezeBetween = options.freezeBetweenInvocations ?? true;
	const { log, lines } = functionLog(options.onLog);
	const stats = { invocations: 0, coldStarts: 0, crashes: 0, timeouts: 0 };

	let current: FunctionProcess | undefined;
	let frozen = false;
	let killed = false;
	let nextId = 0;
	let pending: PendingInvocation | undefined;
	let queue: Promise<unknown> = Promise.resolve();

	const settle = (outcome: InvocationOutcome) => {
		if (!pending) return;
		clearTimeout(pending.timer);
		const { resolve } = pending;
		pending = undefined;
		resolve(outcome);
	};

	const spawnProcess = (): FunctionProcess =>
		startFunctionProcess({
			...settings,
			env: options.env,
			log,
			// A frozen child would not notice that this process is gone: it is killed on a signal too.
			killOnSignal: true,
			onResult: (message) => {
				if (pending && message.id === pending.id) settle(pending.answered(message));
			},
			onExit: (proc, failure) => {
				if (current === proc) {
					current = undefined;
					frozen = false;
				}
				if (pending?.proc !== proc) return;
				if (!killed) stats.crashes++;
				settle(pending.failed(failure));
			},
		});

	const ensureProcess = async (): Promise<FunctionProcess> => {
		if (!current?.alive) current = spawnProcess();
		await current.ready;
		return current;
	};

	const freeze = async () => {
		const proc = current;
		if (!proc?.alive || frozen || proc.child.pid === undefined) return;
		proc.child.kill("SIGSTOP");
		frozen = true;
		const deadline = Date.now() + 500;
		while (!isStopped(proc.child.pid) && Date.now() < deadline) {
			await new Promise((resolve) => setTimeout(resolve, 2));
		}
	};

	const thaw = () => {
		if (!frozen) return;
		frozen = false;
		if (current?.alive) current.child.kill("SIGCONT");
	};

	const runOne = async (event: unknown, invokeOptions: InvokeOptions): Promise<InvocationOutcome> => {
		if (killed) throw new Error(`execution environment ${functionName} was killed`);
		const started = performance.now();
		thaw();
		const proc = await ensureProcess();
		const invocation = proc.newInvocation(++nextId, invokeOptions, started);
		stats.invocations++;
		if (invocation.cold) stats.coldStarts++;
		const outcome = await new Promise<InvocationOutcome>((resolve) => {
			pending = {
				...invocation,
				resolve,
				timer: invocation.afterDeadline(() => {
					stats.timeouts++;
					settle(invocation.timedOut());
					// Lambda resets the environment after a timeout: whatever was running is gone, and the next
					// invocation gets a new environment.
					proc.alive = false;
					if (current === proc) current = undefined;
					proc.child.kill("SIGKILL");
				}),
			};
			proc.invoke(invocation, event);
		});
		if (freezeBetween && proc.alive && !killed) await freeze();
		return outcome;
	};

	const environment: ExecutionEnvironment = {
		functionName,
		get pid() {
			return current?.child.pid;
		},
		get frozen() {
			return frozen;
		},
		stats,
		invoke<TResult>(event: unknown, invokeOptions: InvokeOptions = {}) {
			const run = queue.then(() => runOne(event, invokeOptions));
			queue = run.catch(() => {});
			return run as Promise<InvocationOutcome<TResult>>;
		},
		freeze,
		thaw,
		async kill() {
			killed = true;
			await current?.kill();
		},
		logs: lines,
	};

	// Start the process now (not the function: its module is imported by the first invocation, the cold start).
	await ensureProcess();
	return environment;
};
