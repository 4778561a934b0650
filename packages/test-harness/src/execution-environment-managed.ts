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
import type {
	ExecutionEnvironmentOptions,
	InvocationOutcome,
	InvokeOptions,
} from "./execution-environment.ts";
import type { FunctionProcess, PendingInvocation } from "./function-process.ts";
import { functionLog, functionSettings, startFunctionProcess } from "./function-process.ts";

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

export const startManagedExecutionEnvironment = async (
	options: ManagedExecutionEnvironmentOptions,
): Promise<ManagedExecutionEnvironment> => {
	const settings = functionSettings(options);
	const { functionName } = settings;
	const maxConcurrency = Math.max(1, options.maxConcurrency ?? 16);
	const { log, lines } = functionLog(options.onLog);
	const stats: ManagedExecutionEnvironmentStats = {
		invocations: 0,
		coldStarts: 0,
		crashes: 0,
		timeouts: 0,
		peakConcurrency: 0,
	};
	const pending = new Map<number, PendingInvocation>();
	/** Invocations waiting for a free slot. */
	const waiting: Array<() => void> = [];
	/** Slots taken: invocations sent, or on their way (waiting for the process). */
	let taken = 0;
	let current: FunctionProcess | undefined;
	let killed = false;
	let nextId = 0;

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

	const spawnProcess = (): FunctionProcess =>
		startFunctionProcess({
			...settings,
			lambdaEnv: {
				AWS_LAMBDA_MAX_CONCURRENCY: String(maxConcurrency),
				AWS_LAMBDA_NODEJS_WORKER_COUNT: "1",
			},
			env: options.env,
			log,
			// Never frozen: it exits by itself once this process is gone.
			killOnSignal: false,
			onResult: (message) => {
				const entry = pending.get(message.id);
				if (!entry) return; // reported as timed out already: its code ran on, and its answer comes too late
				settle(message.id, entry.answered(message));
			},
			onExit: (proc, failure) => {
				if (current === proc) current = undefined;
				const lost = [...pending.values()].filter((entry) => entry.proc === proc);
				if (lost.length > 0 && !killed) stats.crashes++;
				for (const entry of lost) settle(entry.id, entry.failed(failure));
			},
		});

	const ensureProcess = async (): Promise<FunctionProcess> => {
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
		let proc: FunctionProcess;
		try {
			if (killed) throw new Error(`execution environment ${functionName} was killed`);
			proc = await ensureProcess();
		} catch (error) {
			release();
			throw error;
		}
		const invocation = proc.newInvocation(++nextId, invokeOptions, started);
		stats.invocations++;
		if (invocation.cold) stats.coldStarts++;
		return new Promise<InvocationOutcome>((resolve) => {
			pending.set(invocation.id, {
				...invocation,
				resolve,
				// LMI marks the invocation failed at its deadline and lets its code run on.
				timer: invocation.afterDeadline(() => {
					stats.timeouts++;
					settle(invocation.id, invocation.timedOut());
				}),
			});
			stats.peakConcurrency = Math.max(stats.peakConcurrency, pending.size);
			proc.invoke(invocation, event);
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
			await current?.kill();
		},
		logs: lines,
	};

	await ensureProcess();
	return environment;
};
