// The one way the scripts (demo, bench, soak, fleet) undo what they started: servers, admin connections,
// execution environments, child processes, temp folders. Whatever ends the run (the end of `main`, an error, an
// unhandled rejection, Ctrl-C, SIGTERM from CI, SIGHUP), every registered cleanup runs once, newest first, each
// bounded in time, and then the process exits with the run's code (128 + the signal's number after a signal).
//
//   await runScript("demo", async () => { ...; defer(() => server.stop()); ...; return ok ? 0 : 1; });
//
// This is the graceful path. Under it lies the harness's last resort (last-resort.ts), the one registry of what
// must not outlive the process, which the harness's servers and function processes use too: runScript takes the
// signals from it (handleSignals), so a signal is this module's alone, and a second one is a second Ctrl-C; the
// tracked children and the `sync` cleanups are registered with it, and are undone at `exit` if still there.
import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process";
import { constants } from "node:os";
import { atLastResort, handleSignals } from "@middy-conn/test-harness";

/** Something to undo on the way out. */
export type Cleanup = () => unknown;

export interface DeferOptions {
	/** Named in the messages about a cleanup that failed or took too long. */
	label?: string;
	/**
	 * `fn` is synchronous (removing a temp folder, say): if the process exits before it ran (a second Ctrl-C, the
	 * cleanups' time bound, a `process.exit` elsewhere), it runs in the process's `exit` event all the same.
	 */
	sync?: boolean;
}

interface Entry {
	run: () => Promise<void>;
	label: string;
	sync: Cleanup | undefined;
	started: boolean;
}

/** A cleanup that does not finish in this time is given up on (the next one runs). */
const STEP_TIMEOUT_MS = 15_000;
/** All of them together: past this, the rest are skipped and the process exits (its exit hooks still run). */
const TOTAL_TIMEOUT_MS = 30_000;

let scriptName = "scripts";
const say = (line: string): void => {
	process.stderr.write(`[${scriptName}] ${line}\n`);
};

const registry: Entry[] = [];
const children = new Set<ChildProcess>();
let running: Promise<void> | undefined;
let exitCode: number | undefined;
let exiting = false;
let signalled = false;

const killChildren = () => {
	for (const child of children)
		if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
};

// Synchronous last resort, whatever ends the process: no child outlives it, no temp folder is left behind.
atLastResort(() => {
	killChildren();
	for (const entry of registry.splice(0).reverse()) {
		if (entry.started || !entry.sync) continue;
		try {
			entry.sync();
		} catch {
			// the process is ending: nothing else to try
		}
	}
});

/**
 * Registers `fn` to run on the way out (newest first). Returns a function that runs it now instead, once: the
 * cleanup is then done and leaves the registry.
 */
export const defer = (fn: Cleanup, options: DeferOptions = {}): (() => Promise<void>) => {
	let done: Promise<void> | undefined;
	const entry: Entry = {
		label: options.label ?? (fn.name || `cleanup #${registry.length + 1}`),
		sync: options.sync ? fn : undefined,
		started: false,
		run: () => {
			entry.started = true;
			const index = registry.indexOf(entry);
			if (index >= 0) registry.splice(index, 1);
			done ??= Promise.resolve()
				.then(fn)
				.then(
					() => {},
					(error: unknown) => {
						say(`cleanup "${entry.label}" failed: ${String(error)}`);
					},
				);
			return done;
		},
	};
	registry.push(entry);
	return entry.run;
};

/** Kills `child` (SIGKILL) on the way out if it is still running, and at exit in any case. */
export const trackChild = <T extends ChildProcess>(child: T): T => {
	children.add(child);
	const forget = () => children.delete(child);
	child.once("exit", forget);
	child.once("error", forget);
	return child;
};

/** Spawns a tracked child (see `trackChild`) that is also killed after `timeoutMs`: none runs unbounded. */
export const spawnTracked = (
	command: string,
	args: readonly string[],
	options: SpawnOptions & { timeoutMs: number },
): ChildProcess => {
	const { timeoutMs, ...spawnOptions } = options;
	const child = trackChild(spawn(command, args, spawnOptions));
	const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
	timer.unref();
	const stop = () => clearTimeout(timer);
	child.once("exit", stop);
	child.once("error", stop);
	return child;
};

/** `promise`, or false once `ms` have passed (the timer keeps the process alive meanwhile, on purpose). */
const within = (promise: Promise<void>, ms: number): Promise<boolean> => {
	let timer: NodeJS.Timeout | undefined;
	return Promise.race([
		promise.then(() => true),
		new Promise<boolean>((resolve) => {
			timer = setTimeout(() => resolve(false), ms);
		}),
	]).finally(() => clearTimeout(timer));
};

/**
 * Runs every registered cleanup, newest first (and those registered meanwhile), then kills the tracked children
 * still running. Idempotent: every caller gets the same run.
 */
export const runCleanups = (): Promise<void> => {
	running ??= (async () => {
		const deadline = Date.now() + TOTAL_TIMEOUT_MS;
		for (let entry = registry.at(-1); entry; entry = registry.at(-1)) {
			const left = deadline - Date.now();
			if (left <= 0) {
				say(
					`cleanups took over ${TOTAL_TIMEOUT_MS / 1000} s; skipped: ${registry.map((e) => e.label).join(", ")}`,
				);
				break;
			}
			const ms = Math.min(STEP_TIMEOUT_MS, left);
			if (!(await within(entry.run(), ms)))
				say(`cleanup "${entry.label}" still running after ${ms} ms; moving on`);
		}
		killChildren();
	})();
	return running;
};

/** Runs the cleanups, then exits with the first code set (a signal's, or the run's). */
const finish = async (code: number): Promise<never> => {
	exitCode ??= code;
	process.exitCode = exitCode;
	exiting = true;
	await runCleanups();
	process.exit(exitCode);
};

const onSignal = (signal: NodeJS.Signals) => {
	if (!signalled) {
		signalled = true;
		say(`${signal}: stopping everything this run started (again to quit at once)`);
		void finish(128 + (constants.signals[signal] ?? 1));
		return;
	}
	say(`${signal} again: quitting now`);
	process.exit(exitCode ?? 128 + (constants.signals[signal] ?? 1));
};

const onCrash = (error: unknown) => {
	if (exiting) return;
	say(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
	void finish(1);
};

export interface ScriptOptions {
	/** How an error thrown by `main` is reported (default: `[name] failed:` and the error, stack included). */
	onError?: (error: unknown) => void;
}

/**
 * Runs `main` (which returns the exit code) with the cleanups on every exit path, then exits: with `main`'s code,
 * 1 if it threw, or 128 + the signal's number on SIGINT, SIGTERM or SIGHUP. It never returns: the run is over, and
 * a driver's stray timer must not keep the process waiting.
 */
export const runScript = async (
	name: string,
	main: () => Promise<number>,
	options: ScriptOptions = {},
): Promise<never> => {
	scriptName = name;
	handleSignals(onSignal);
	process.on("uncaughtException", onCrash);
	process.on("unhandledRejection", onCrash);
	let code = 1;
	try {
		code = await main();
	} catch (error) {
		// After a signal, whatever failed failed because the cleanups pulled the servers from under it.
		if (!signalled) {
			if (options.onError) options.onError(error);
			else console.error(`[${name}] failed:`, error);
		}
	}
	return finish(code);
};
