// Everything the benchmark starts (the HTTPS peer, the MySQL server, child processes) is stopped on every exit
// path: normal end, a thrown error, Ctrl-C, SIGTERM from CI. One registry, run once, newest first.
import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process";

type Cleanup = () => Promise<void> | void;

const cleanups: Cleanup[] = [];
const children = new Set<ChildProcess>();
let running: Promise<void> | undefined;

/** Registers `fn` to run at exit (newest first). Returns `fn` so a caller may also run it early; it runs once. */
export const defer = (fn: Cleanup): (() => Promise<void>) => {
	let done: Promise<void> | undefined;
	const once = () => {
		done ??= Promise.resolve()
			.then(fn)
			.catch((error: unknown) => {
				process.stderr.write(`[bench] cleanup failed: ${String(error)}\n`);
			});
		return done;
	};
	cleanups.push(once);
	return once;
};

/** Runs every registered cleanup and kills the children still alive. Idempotent. */
export const cleanupAll = (): Promise<void> => {
	running ??= (async () => {
		for (const child of children) child.kill("SIGKILL");
		for (const fn of cleanups.reverse()) await fn();
	})();
	return running;
};

/** Ctrl-C and SIGTERM: clean up, then exit with the conventional code. */
export const installSignalHandlers = (): void => {
	const onSignal = (signal: NodeJS.Signals, code: number) => {
		process.stderr.write(`\n[bench] ${signal}: stopping servers and children\n`);
		// A second signal while cleaning up means "now".
		process.once(signal, () => process.exit(code));
		void cleanupAll().finally(() => process.exit(code));
	};
	process.once("SIGINT", () => onSignal("SIGINT", 130));
	process.once("SIGTERM", () => onSignal("SIGTERM", 143));
	// Synchronous last resort: children must not outlive us even on process.exit() from elsewhere.
	process.once("exit", () => {
		for (const child of children) child.kill("SIGKILL");
	});
};

/**
 * Spawns a child that is killed at exit and after `timeoutMs` (a benchmark child never runs unbounded).
 * The returned child is already tracked; it leaves the registry when it exits.
 */
export const spawnTracked = (
	command: string,
	args: readonly string[],
	options: SpawnOptions & { timeoutMs: number },
): ChildProcess => {
	const { timeoutMs, ...spawnOptions } = options;
	const child = spawn(command, args, spawnOptions);
	children.add(child);
	const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
	timer.unref();
	child.once("exit", () => {
		clearTimeout(timer);
		children.delete(child);
	});
	child.once("error", () => {
		clearTimeout(timer);
		children.delete(child);
	});
	return child;
};
