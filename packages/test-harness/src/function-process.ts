// One function's child process (execution-environment-child.ts), as both kinds of environment start it: Lambda's
// environment variables, its output logged line by line, `ready` and `exited` tracked, the cause of a crash kept
// for the exit that follows; and the outcomes its answers, its exit or a deadline make of an invocation. What an
// environment does with its processes stays with it: execution-environment.ts freezes one between invocations and
// sends it one at a time; execution-environment-managed.ts never freezes it and sends it many at once.
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
import { atLastResort } from "./last-resort.ts";

const CHILD_ENTRY = fileURLToPath(new URL("./execution-environment-child.ts", import.meta.url));
/** Time allowed past the deadline for the result to cross IPC before the invocation counts as timed out. */
const DEADLINE_GRACE_MS = 200;
const LOG_LINES_KEPT = 500;

type Stream = "stdout" | "stderr";
type ResultMessage = Extract<ChildMessage, { type: "result" }>;

/** Why an invocation failed without an answer from its handler. */
export interface Failure {
	kind: InvocationErrorType;
	error: SerializedError;
}

export interface FunctionProcess {
	child: ChildProcess;
	/** Resolves on the child's `ready` message; rejects if it exits first. */
	ready: Promise<void>;
	exited: Promise<void>;
	alive: boolean;
	/** Invocations sent to this process: the first one is the cold start. */
	invoked: number;
	/**
	 * An invocation for this process (not sent yet): the caller's request id or a new one, the caller's time limit
	 * or the function's, and whether it is the process's first (the cold start).
	 */
	newInvocation(id: number, invokeOptions: InvokeOptions, started: number): Invocation;
	/** Sends an invocation: the child starts it as soon as it arrives. */
	invoke(invocation: Invocation, event: unknown): void;
	/** SIGKILL, as Lambda reclaims an environment (no shutdown hook runs); resolves once it has exited. */
	kill(): Promise<void>;
}

export interface FunctionProcessOptions {
	module: string;
	exportName: string;
	functionName: string;
	timeoutMs: number;
	memoryLimitInMB: number;
	/** Lambda's variables for one kind of environment only (LMI's concurrency), after the common ones. */
	lambdaEnv?: Record<string, string>;
	/** The function's own variables (ExecutionEnvironmentOptions.env), over Lambda's. */
	env?: Record<string, string | undefined>;
	log: (line: string, stream: Stream) => void;
	/**
	 * Kill it too when this process ends on SIGINT, SIGTERM or SIGHUP (it is always killed on exit). A frozen child
	 * would not even notice its parent is gone (it cannot run to see the IPC channel close): it must be killed. One
	 * that is never frozen exits by itself when the channel closes.
	 */
	killOnSignal: boolean;
	/** A handler's answer, whatever invocation it belongs to (one reported as timed out already, too). */
	onResult: (message: ResultMessage) => void;
	/** The process has exited: the crash it reported, or the exit itself if it said nothing. */
	onExit: (proc: FunctionProcess, failure: Failure) => void;
}

/** The function's settings with their defaults, the same for both kinds of environment. */
export const functionSettings = (
	options: Pick<
		ExecutionEnvironmentOptions,
		"module" | "handler" | "functionName" | "timeoutMs" | "memoryLimitInMB"
	>,
) => ({
	module: options.module,
	exportName: options.handler ?? "handler",
	functionName:
		options.functionName ??
		(options.module
			.split("/")
			.pop()
			?.replace(/\.[^.]+$/, "") ||
			"function"),
	timeoutMs: options.timeoutMs ?? 10_000,
	memoryLimitInMB: options.memoryLimitInMB ?? 1024,
});

/** An environment's log, across its processes: `onLog` gets every line, `lines()` the last 500. */
export const functionLog = (onLog?: (line: string, stream: Stream) => void) => {
	const lines: string[] = [];
	return {
		log: (line: string, stream: Stream) => {
			lines.push(line);
			if (lines.length > LOG_LINES_KEPT) lines.shift();
			onLog?.(line, stream);
		},
		lines: () => [...lines],
	};
};

const floorDriversHook = (): string[] =>
	process.env.MIDDY_CONN_DRIVERS === "floor"
		? ["--import", fileURLToPath(new URL("../../../test/drivers-floor-hook.ts", import.meta.url))]
		: [];

export const startFunctionProcess = (options: FunctionProcessOptions): FunctionProcess => {
	const { functionName } = options;
	const env: Record<string, string> = {
		PATH: process.env.PATH ?? "/usr/bin:/bin",
		LANG: "en_US.UTF-8",
		TZ: "UTC",
		AWS_REGION: "eu-west-1",
		AWS_DEFAULT_REGION: "eu-west-1",
		AWS_EXECUTION_ENV: `AWS_Lambda_nodejs${process.versions.node.split(".")[0]}.x`,
		AWS_LAMBDA_FUNCTION_NAME: functionName,
		AWS_LAMBDA_FUNCTION_VERSION: "$LATEST",
		AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(options.memoryLimitInMB),
		AWS_LAMBDA_LOG_GROUP_NAME: `/aws/lambda/${functionName}`,
		...options.lambdaEnv,
		...(process.env.MIDDY_CONN_DRIVERS ? { MIDDY_CONN_DRIVERS: process.env.MIDDY_CONN_DRIVERS } : {}),
	};
	for (const [name, value] of Object.entries(options.env ?? {})) {
		if (value !== undefined) env[name] = value;
	}
	const child = fork(CHILD_ENTRY, [options.module, options.exportName], {
		execPath: process.execPath,
		// Not the parent's flags (a test runner's loaders): the function runs on plain Node, as on Lambda. Only the
		// tests' floor-drivers run (MIDDY_CONN_DRIVERS=floor, see test/drivers.ts) hands its resolve hook on, so that
		// a function loaded from source gets the same mysql2 and undici as the test.
		execArgv: ["--no-warnings=ExperimentalWarning", ...floorDriversHook()],
		env,
		stdio: ["ignore", "pipe", "pipe", "ipc"],
	});
	// None outlives this process, whatever the exit path (see `killOnSignal` for the signals).
	const forgetOnExit = atLastResort(() => child.kill("SIGKILL"), { onSignal: options.killOnSignal });
	for (const stream of ["stdout", "stderr"] as const) {
		const source = child[stream];
		if (source) createInterface({ input: source }).on("line", (line) => options.log(line, stream));
	}
	let markReady: () => void = () => {};
	let failReady: (error: Error) => void = () => {};
	/** Set by a crash message, so that the exit that follows reports the right cause. */
	let crash: Failure | undefined;
	const proc: FunctionProcess = {
		child,
		alive: true,
		invoked: 0,
		ready: new Promise<void>((resolve, reject) => {
			markReady = resolve;
			failReady = reject;
		}),
		exited: new Promise<void>((resolve) => child.once("exit", () => resolve())),
		newInvocation(id, invokeOptions, started) {
			const cold = proc.invoked === 0;
			proc.invoked++;
			return invocation(proc, {
				id,
				requestId: invokeOptions.requestId ?? randomUUID(),
				limitMs: invokeOptions.timeoutMs ?? options.timeoutMs,
				cold,
				started,
			});
		},
		invoke({ id, requestId, limitMs }, event) {
			const message: InvokeMessage = {
				type: "invoke",
				id,
				requestId,
				functionName,
				memoryLimitInMB: options.memoryLimitInMB,
				deadlineMs: Date.now() + limitMs,
				event,
			};
			child.send(message);
		},
		async kill() {
			if (!proc.alive) return;
			child.kill("SIGKILL");
			await proc.exited;
		},
	};
	proc.ready.catch(() => {});
	child.on("message", (message: ChildMessage) => {
		if (message.type === "ready") markReady();
		else if (message.type === "crash") {
			crash = { kind: message.kind as InvocationErrorType, error: message.error };
		} else if (message.type === "result") options.onResult(message);
	});
	child.once("exit", (code, signal) => {
		proc.alive = false;
		forgetOnExit();
		failReady(new Error(`execution environment exited before it was ready (code ${code}, ${signal})`));
		options.onExit(
			proc,
			crash ?? {
				kind: "Runtime.ExitError",
				error: { name: "Runtime.ExitError", message: `process exited (code ${code}, signal ${signal})` },
			},
		);
	});
	return proc;
};

/** An invocation sent to a process, and the outcomes it can end with. */
export interface Invocation {
	/** The process it was sent to: only that process's exit can end it. */
	proc: FunctionProcess;
	id: number;
	requestId: string;
	/** Its time limit: the context's deadline is this far from when it is sent. */
	limitMs: number;
	cold: boolean;
	started: number;
	/** Calls `onTimeout` once the deadline has passed, plus the time allowed for the result to cross IPC. */
	afterDeadline(onTimeout: () => void): NodeJS.Timeout;
	/** The handler's answer, as the caller gets it. */
	answered(message: ResultMessage): InvocationOutcome;
	/** No answer: its process exited. */
	failed(failure: Failure): InvocationOutcome;
	/** No answer by the deadline. */
	timedOut(): InvocationOutcome;
}

/** An invocation sent, until it is settled. */
export interface PendingInvocation extends Invocation {
	timer: NodeJS.Timeout;
	resolve: (outcome: InvocationOutcome) => void;
}

const invocation = (
	proc: FunctionProcess,
	fields: Pick<Invocation, "id" | "requestId" | "limitMs" | "cold" | "started">,
): Invocation => {
	const { requestId, limitMs, cold, started } = fields;
	const failed = (failure: Failure): InvocationOutcome => ({
		requestId,
		ok: false,
		error: failure.error,
		errorType: failure.kind,
		cold,
		latencyMs: performance.now() - started,
	});
	return {
		proc,
		...fields,
		afterDeadline: (onTimeout) => setTimeout(onTimeout, limitMs + DEADLINE_GRACE_MS),
		answered: (message) => ({
			requestId,
			ok: message.ok,
			...(message.json === undefined ? {} : { result: JSON.parse(message.json) }),
			...(message.error ? { error: message.error, errorType: "Handler" as const } : {}),
			cold: message.cold,
			...(message.initMs === undefined ? {} : { initMs: message.initMs }),
			durationMs: message.durationMs,
			latencyMs: performance.now() - started,
			rss: message.rss,
			activeResources: message.activeResources,
		}),
		failed,
		timedOut: () =>
			failed({
				kind: "Sandbox.Timedout",
				error: {
					name: "Sandbox.Timedout",
					message: `Task timed out after ${(limitMs / 1000).toFixed(2)} seconds`,
				},
			}),
	};
};
