// The one last-resort cleanup of a process that uses the harness: what must not outlive it (a MariaDB server, a
// frozen function process, a child the scripts started, a temp folder) is registered here, and undone
// synchronously, newest first, whatever ends the process: its `exit` event, or SIGINT, SIGTERM or SIGHUP.
//
// A signal either belongs to someone who stops things gracefully, or ends the process here:
// - a script's `runScript` (scripts/cleanup.ts) takes the signals with `handleSignals`: its cleanups stop the
//   servers gracefully and it exits, and the last-resort steps run then, at `exit`, for whatever is left;
// - otherwise (a test run, a worker, a process started by a benchmark) the steps run at once, and the signal keeps
//   its default outcome, the end of the process, unless another listener of the process's own handles it.
// Only one listener per signal and one `exit` listener, whatever the number of registrations: no hook re-raises a
// signal that another hook would then take for a second Ctrl-C.

export interface LastResortOptions {
	/**
	 * Run on SIGINT, SIGTERM and SIGHUP too (default true), not only at `exit`. A process that is never frozen
	 * exits by itself once its parent's IPC channel closes: registering it with `onSignal: false` leaves it that.
	 */
	onSignal?: boolean;
}

interface Step {
	run: () => void;
	onSignal: boolean;
}

const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

const steps: Step[] = [];
let signalHandler: ((signal: NodeJS.Signals) => void) | undefined;
let installed = false;

/** Runs (and forgets) the steps `which` selects, newest first; one that throws does not stop the others. */
const runSteps = (which: (step: Step) => boolean) => {
	for (let index = steps.length - 1; index >= 0; index--) {
		const step = steps[index];
		if (!step || !which(step)) continue;
		steps.splice(index, 1);
		try {
			step.run();
		} catch {
			// the process is ending: nothing else to try
		}
	}
};

const onExit = () => runSteps(() => true);

const onSignal = (signal: NodeJS.Signals) => {
	if (signalHandler) {
		signalHandler(signal);
		return;
	}
	runSteps((step) => step.onSignal);
	// The signal's default outcome, unless the process has a listener of its own for it.
	if (process.listenerCount(signal) === 1) {
		process.off(signal, onSignal);
		process.kill(process.pid, signal);
	}
};

const install = () => {
	if (installed) return;
	installed = true;
	process.on("exit", onExit);
	for (const signal of SIGNALS) process.on(signal, onSignal);
};

/**
 * Registers `run` (synchronous: the `exit` event runs nothing asynchronous) to run as this process ends, if it has
 * not been forgotten by then. Returns the function that forgets it: call it once the resource is released the
 * ordinary way.
 */
export const atLastResort = (run: () => void, options: LastResortOptions = {}): (() => void) => {
	install();
	const step: Step = { run, onSignal: options.onSignal ?? true };
	steps.push(step);
	return () => {
		const index = steps.indexOf(step);
		if (index >= 0) steps.splice(index, 1);
	};
};

/**
 * Hands SIGINT, SIGTERM and SIGHUP to `handler` (every one of them, the second Ctrl-C too), which must end the
 * process: the last-resort steps then run at its `exit`. For a script that stops what it started gracefully first.
 */
export const handleSignals = (handler: (signal: NodeJS.Signals) => void): void => {
	install();
	signalHandler = handler;
};
